"""Rewrites of the imported layers before they are written as text.

- A per-channel affine step (`Mul`/`Add` by constants, as Caffe2 writes after a
  `BatchNormalization`) is folded into the conv, dense or batchnorm before it when
  nothing else reads that layer; what is left becomes a batchnorm.
- A concat whose first inputs are those of an earlier concat reads that concat
  instead (DenseNet as torchvision writes it concatenates all earlier features at
  every layer), so the graph nests as `concat { identity | ... }`.
"""

from __future__ import annotations

import math

import numpy as np

from .layer import EPS, Layer


def _consumers(layers: dict[str, Layer], output: str) -> dict[str, int]:
    uses = {output: 1}
    for layer in layers.values():
        for i in layer.inputs:
            uses[i] = uses.get(i, 0) + 1
    return uses


def _fold_into(prev: Layer, scale: np.ndarray, shift: np.ndarray) -> None:
    if prev.kind == "batchnorm":
        p = prev.params
        p["weight"] = (p["weight"] * scale).astype(np.float32)
        p["bias"] = (p["bias"] * scale + shift).astype(np.float32)
        return
    w = prev.params["weight"]
    prev.params["weight"] = (w * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
    bias = prev.params.get("bias", np.zeros(w.shape[0], np.float32))
    prev.params["bias"] = (bias * scale + shift).astype(np.float32)
    prev.attrs["bias"] = True


def _as_batchnorm(layer: Layer) -> None:
    scale, shift = layer.params["scale"], layer.params["shift"]
    layer.kind, layer.attrs = "batchnorm", {"eps": EPS}
    c = scale.shape[0]
    layer.params = {"weight": (scale * math.sqrt(1 + EPS)).astype(np.float32),
                    "bias": shift.astype(np.float32),
                    "running_mean": np.zeros(c, np.float32),
                    "running_var": np.ones(c, np.float32)}


def fold_affine(layers: dict[str, Layer], output: str) -> dict[str, Layer]:
    uses = _consumers(layers, output)
    rename: dict[str, str] = {}
    kept: dict[str, Layer] = {}
    for layer in layers.values():
        layer.inputs = [rename.get(i, i) for i in layer.inputs]
        if layer.kind == "_affine":
            prev = kept.get(layer.inputs[0])
            if prev is not None and uses.get(prev.id) == 1 and \
                    prev.kind in ("conv", "dwconv", "dense", "batchnorm", "_affine"):
                if prev.kind == "_affine":
                    p = prev.params
                    p["shift"] = p["shift"] * layer.params["scale"] + layer.params["shift"]
                    p["scale"] = p["scale"] * layer.params["scale"]
                else:
                    _fold_into(prev, layer.params["scale"], layer.params["shift"])
                rename[layer.id] = prev.id
                uses[prev.id] = uses.get(layer.id, 0)
                continue
        kept[layer.id] = layer
    for layer in kept.values():
        if layer.kind == "_affine":
            _as_batchnorm(layer)
    return kept, rename.get(output, output)


def share_concat_prefixes(layers: dict[str, Layer]) -> None:
    concats: list[tuple[Layer, list[str]]] = []  # with their inputs as imported
    for layer in layers.values():
        if layer.kind != "concat":
            continue
        original, best = list(layer.inputs), None
        for earlier, inputs in concats:
            n = len(inputs)
            if n < len(original) and original[:n] == inputs and \
                    (best is None or n > len(best[1])):
                best = earlier, inputs
        if best is not None:
            layer.inputs = [best[0].id] + original[len(best[1]):]
        concats.append((layer, original))


def tidy(layers: dict[str, Layer], output: str) -> tuple[dict[str, Layer], str]:
    layers, output = fold_affine(layers, output)
    share_concat_prefixes(layers)
    return layers, output
