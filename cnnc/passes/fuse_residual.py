"""fuse-residual: a residual add runs inside the conv that produces one of its operands."""

from __future__ import annotations

import networkx as nx

from ..backend import conv_kernel
from ..ops import CONV_OPS, epilogue_of
from .rewrite import replace_uses, sole_consumer


def runs_packed(graph: nx.DiGraph, conv: str) -> bool:
    """Whether the runtime gives `conv` the packed kernel (the one that adds a residual)."""
    data = graph.nodes[conv]
    in_channels = graph.nodes[data["inputs"][0]]["shape"][0]
    return conv_kernel(data["shape"][0], data["attrs"]["groups"], in_channels) == "packed"


class FuseResidual:
    """Rewrite: `add(a, b)` where `a` (else `b`) is a conv becomes that conv with the
    other operand as its residual: the conv's inputs become `[x, skip]`,
    `attrs['residual']` is true, and the add's activation (fuse-epilogue put it on
    the add) becomes the conv's. The add is removed and its readers read the conv.
    The kernel adds the residual to each output value as it stores it, after the
    bias and before the activation -- a ResNet block's `add -> relu` costs no pass
    over memory of its own.

    Valid when the add has exactly two operands of the same shape (a broadcast one,
    §11's Cx1x1 over HxW, stays an add); the conv's only reader is the
    add, once, and it is not the output; the conv has no activation of its own
    (`act(conv) + skip` is not `conv + skip`) and no residual yet; and it runs on
    the packed kernel (at least 4 output channels per group).

    Preserves: the output exactly (the same float32 additions in the same order,
    then the same activation), the conv's name, shapes. The add's name is gone:
    `cnnc bench --profile` counts its time in the conv's.
    """

    name = "fuse-residual"

    def apply(self, graph: nx.DiGraph) -> None:
        for node in list(graph.nodes):
            data = graph.nodes[node]
            if data["op"] != "add" or len(data["inputs"]) != 2:
                continue
            if len({tuple(graph.nodes[i]["shape"]) for i in data["inputs"]}) != 1:
                continue  # a broadcast operand: the conv's store adds same-shape residuals
            for i, conv in enumerate(data["inputs"]):
                if self._fusable(graph, conv, node):
                    self._fuse(graph, node, conv, data["inputs"][1 - i])
                    break

    @staticmethod
    def _fusable(graph: nx.DiGraph, conv: str, add: str) -> bool:
        data = graph.nodes[conv]
        return (data["op"] in CONV_OPS
                and data["attrs"].get("activation", "none") == "none"
                and not data["attrs"].get("residual")
                and sole_consumer(graph, conv) == add
                and runs_packed(graph, conv))

    @staticmethod
    def _fuse(graph: nx.DiGraph, add: str, conv: str, skip: str) -> None:
        data = graph.nodes[conv]
        add_attrs = graph.nodes[add]["attrs"]
        data["attrs"]["residual"] = True
        data["attrs"].update(epilogue_of(add_attrs))
        graph.remove_edge(conv, add)
        replace_uses(graph, add, conv)
        graph.remove_node(add)
        data["inputs"] = [data["inputs"][0], skip]
        graph.add_edge(skip, conv)
