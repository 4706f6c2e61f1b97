"""The model as the client holds it: the Network (for shapes and a warm kernel cache)
and the bytes of its .cnnc artifact, which are what the workers receive."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass

from ..errors import CnncError


@dataclass(frozen=True)
class Model:
    net: object          # cnnc.compiler.Network
    blob: bytes          # the .cnnc artifact
    digest: str          # of the network's content (see content_digest)

    @property
    def input_shape(self) -> tuple:
        return tuple(self.net.input_shape)

    @property
    def output_shape(self) -> tuple:
        return tuple(self.net.output_shape)

    @property
    def is_softmax(self) -> bool:
        graph = self.net.graph
        return graph.nodes[graph.graph["output"]]["op"] == "softmax" and \
            len(self.output_shape) == 1


def content_digest(net) -> str:
    """SHA-256 of what decides the network's outputs: its source, the network chosen,
    the optimisation settings and every parameter. (A saved artifact's bytes would not
    do: its zip records the time of writing.)"""
    h = hashlib.sha256()
    h.update(json.dumps([net.source_hash, net.name, net.opt_level,
                         list(net.disabled_passes), list(net.input_shape)]).encode())
    for name, value in net.parameters().items():
        h.update(json.dumps([name, list(value.shape), str(value.dtype)]).encode())
        h.update(value.tobytes())
    return h.hexdigest()


def artifact_bytes(net) -> bytes:
    fd, path = tempfile.mkstemp(suffix=".cnnc")
    os.close(fd)
    try:
        net.save(path)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


def open_model(model, *, network: str | None = None, weights=None, seed: int = 0) -> Model:
    """A Model from a .cnnc or .cnn path (compiled here, which also warms the kernel
    cache the local workers share) or from a compiled Network."""
    from ..compiler import Network, compile_file, load
    if isinstance(model, Network):
        net = model
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if path.endswith(".cnnc"):
            net = load(path)
            if weights is not None:
                net.load_weights(weights)
        else:
            net = compile_file(path, network=network, weights=weights, seed=seed)
    else:
        raise CnncError(f"the model must be a .cnnc or .cnn path or a cnnc.Network, "
                        f"not {type(model).__name__}")
    return Model(net, artifact_bytes(net), content_digest(net))
