"""fold-batchnorm: an inference batch norm becomes part of the conv or dense before it."""

from __future__ import annotations

import networkx as nx
import numpy as np

from ..ops import CONV_OPS
from .rewrite import bypass, sole_consumer


class FoldBatchnorm:
    """Rewrite: `conv -> batchnorm` (or `dwconv`, `dense -> batchnorm`) becomes one conv with

        scale = gamma / sqrt(running_var + eps)
        weight' = weight * scale   (per output channel)
        bias'   = (bias - running_mean) * scale + beta   (bias = 0 if it had none)

    and `attrs['bias'] = True`; the batchnorm node is removed and its readers
    read the conv.

    Valid when the batchnorm's input is a conv or dense whose only reader is the
    batchnorm (another reader would need the unnormalised values), that is not
    the graph output, and that has no activation epilogue yet (the norm comes
    after the activation then; this pass runs before fuse-epilogue).

    Preserves: the output up to float32 rounding (the products are formed in
    float64), node names (the conv keeps its own), shapes.
    """

    name = "fold-batchnorm"

    def apply(self, graph: nx.DiGraph) -> None:
        for bn in list(graph.nodes):
            if graph.nodes[bn]["op"] != "batchnorm":
                continue
            producer = graph.nodes[bn]["inputs"][0]
            data = graph.nodes[producer]
            if (data["op"] not in (*CONV_OPS, "dense") or data["attrs"]["activation"] != "none"
                    or sole_consumer(graph, producer) != bn):
                continue
            if "params" in data and "params" in graph.nodes[bn]:
                data["params"] = fold(data["params"], graph.nodes[bn]["params"],
                                      graph.nodes[bn]["attrs"]["eps"])
            data["attrs"]["bias"] = True
            bypass(graph, bn)


def fold(params: dict, norm: dict, eps: float) -> dict:
    """New weight and bias of a layer followed by a batch norm with parameters `norm`."""
    weight = params["weight"].astype(np.float64)
    bias = params.get("bias")
    bias = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
    scale = norm["weight"].astype(np.float64) / np.sqrt(norm["running_var"].astype(np.float64)
                                                         + eps)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    return {"weight": (weight * scale.reshape(shape)).astype(np.float32),
            "bias": ((bias - norm["running_mean"]) * scale + norm["bias"]).astype(np.float32)}
