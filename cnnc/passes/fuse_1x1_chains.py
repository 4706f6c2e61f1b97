"""fuse-1x1-chains: two 1x1 convs in a row become one when that saves work."""

from __future__ import annotations

import networkx as nx
import numpy as np

from ..ops import epilogue_of
from .rewrite import set_inputs, sole_consumer


def is_pointwise(attrs: dict) -> bool:
    """A 1x1, ungrouped conv (dilation does not matter for a 1x1 kernel)."""
    return tuple(attrs["kernel"]) == (1, 1) and attrs["groups"] == 1


class Fuse1x1Chains:
    """Rewrite: `a: conv(Cmid, 1x1) -> b: conv(Cout, 1x1)` reading an input of Cin
    channels becomes one conv named `b`: weight W_b W_a (Cout x Cin), bias
    W_b bias_a + bias_b, the stride and padding of `a`, the activation of `b`.
    `a` is removed. Repeats until no chain is left (three in a row fold up).

    Valid when both convs are 1x1 with groups 1; `a` has no activation (the
    composition of two linear maps is linear, with one in between it is not);
    `a`'s only reader is `b` and `a` is not the output; `b` has stride 1 and no
    padding (padding `b` would pad `a`'s output with zeros where the merged conv
    would produce its bias). And only when it lowers the multiply-accumulates
    per output pixel: Cin*Cout < Cmid*(Cin + Cout); a chain that would grow stays.

    Preserves: the output up to float32 rounding (the product is formed in
    float64), the name of `b`, shapes.
    """

    name = "fuse-1x1-chains"

    def apply(self, graph: nx.DiGraph) -> None:
        changed = True
        while changed:
            changed = False
            for b in list(graph.nodes):
                if b in graph and graph.nodes[b]["op"] == "conv" and self._fuse(graph, b):
                    changed = True

    def _fuse(self, graph: nx.DiGraph, b: str) -> bool:
        second = graph.nodes[b]
        a = second["inputs"][0]
        first = graph.nodes[a]
        if first["op"] != "conv" or not is_pointwise(first["attrs"]):
            return False
        if not is_pointwise(second["attrs"]) or tuple(second["attrs"]["stride"]) != (1, 1):
            return False
        if any(second["attrs"]["pads"]) or first["attrs"]["activation"] != "none":
            return False
        if sole_consumer(graph, a) != b:
            return False
        c_in = graph.nodes[first["inputs"][0]]["shape"][0]
        c_mid, c_out = first["shape"][0], second["shape"][0]
        if not c_in * c_out < c_mid * (c_in + c_out):
            return False
        attrs = dict(first["attrs"])
        attrs.update(depth=c_out, bias=first["attrs"]["bias"] or second["attrs"]["bias"],
                     **epilogue_of(second["attrs"]))
        if "params" in first and "params" in second:
            second["params"] = compose(first["params"], second["params"])
            if not attrs["bias"]:
                del second["params"]["bias"]  # both without bias: the sum is zero
        second["attrs"] = attrs
        set_inputs(graph, b, first["inputs"])
        graph.remove_node(a)
        return True


def compose(first: dict, second: dict) -> dict:
    """Weight and bias of conv 1x1 `second` after conv 1x1 `first`."""
    w1 = first["weight"][:, :, 0, 0].astype(np.float64)
    w2 = second["weight"][:, :, 0, 0].astype(np.float64)
    b1 = first["bias"].astype(np.float64) if "bias" in first else np.zeros(w1.shape[0])
    b2 = second["bias"].astype(np.float64) if "bias" in second else np.zeros(w2.shape[0])
    return {"weight": (w2 @ w1)[:, :, None, None].astype(np.float32),
            "bias": (w2 @ b1 + b2).astype(np.float32)}
