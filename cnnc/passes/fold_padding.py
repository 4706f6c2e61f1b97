"""fold-padding: a zero `pad` becomes the padding of the conv or pool that reads it."""

from __future__ import annotations

import networkx as nx

from ..ops import ALWAYS, CONV_OPS, IF_INPUTS, OPS, WINDOW_OPS
from .rewrite import bypass, set_inputs, sole_consumer


class FoldPadding:
    """Rewrite: `pad(t, b, l, r)` read only by a windowed conv or pool is removed
    and its amounts are added to the consumer's own `pads`. A pad of zero on all
    four sides is removed whatever reads it. Finally every conv and windowed
    pool gets its padding as explicit four-sided amounts: `attrs['padding']`
    becomes the `(top, bottom, left, right)` tuple that `pads` already holds (so
    `same` is spelt out).

    Valid when the pad has no other reader (and is not the output), and:
    - conv, dwconv: always; conv padding is zero padding too;
    - maxpool: its padded cells count as -inf rather than 0, so either the pad's
      input is known to be non-negative (`non_negative` in the op registry: after
      relu, relu6, sigmoid, hardsigmoid, softmax, a conv, dense or add with such
      an epilogue, and pools, pads, concats, adds and views of such) and every
      window of the pool still covers at least one cell of the input, or no
      window touches a cell of the pad at all;
    - avgpool: its padded cells are left out of the mean (the divisor changes),
      so only when no window touches a cell of the pad (e.g. a bottom row that
      the stride skips). The zeros of a pad would otherwise be counted.
    Global pools are never folded into.

    Preserves: the output exactly, node names, output shapes.
    """

    name = "fold-padding"

    def apply(self, graph: nx.DiGraph) -> None:
        changed = True
        while changed:  # pad -> pad -> conv folds from the conv upwards
            changed = False
            for node in list(graph.nodes):
                if graph.nodes[node]["op"] == "pad" and self._fold(graph, node):
                    changed = True
        for _, data in graph.nodes(data=True):
            if data["op"] in WINDOW_OPS and not data["attrs"].get("global"):
                data["attrs"]["padding"] = tuple(data["attrs"]["pads"])

    def _fold(self, graph: nx.DiGraph, pad: str) -> bool:
        pads = graph.nodes[pad]["attrs"]["pads"]
        if not any(pads):
            bypass(graph, pad)
            return True
        user = sole_consumer(graph, pad)
        if user is None:
            return False
        data = graph.nodes[user]
        op, attrs = data["op"], data["attrs"]
        if op not in WINDOW_OPS or attrs.get("global"):
            return False
        source = graph.nodes[pad]["inputs"][0]
        _, h, w = graph.nodes[source]["shape"]
        total = tuple(a + b for a, b in zip(attrs["pads"], pads, strict=True))
        if op not in CONV_OPS:
            untouched = windows_avoid_pad(attrs, data["shape"], (h, w), attrs["pads"], pads)
            if op == "avgpool" and not untouched:
                return False
            if op == "maxpool" and not untouched and not (
                    non_negative(graph, source) and windows_reach_input(attrs, data["shape"],
                                                                        (h, w), total)):
                return False
        attrs["pads"] = total
        set_inputs(graph, user, [source])
        graph.remove_node(pad)
        return True


def _windows(size_out: int, kernel: int, stride: int, before: int):
    """(first, last) input index of each window along one axis (padding before: `before`)."""
    for o in range(size_out):
        start = o * stride - before
        yield start, start + kernel - 1


def windows_reach_input(attrs: dict, shape_out: tuple, size_in: tuple, pads: tuple) -> bool:
    """Every window of the pool, with `pads` around an input of `size_in`, covers an input cell."""
    for axis in range(2):
        size = size_in[axis]
        for first, last in _windows(shape_out[1 + axis], attrs["kernel"][axis],
                                    attrs["stride"][axis], pads[2 * axis]):
            if last < 0 or first > size - 1:
                return False
    return True


def windows_avoid_pad(attrs: dict, shape_out: tuple, size_in: tuple, own: tuple,
                      pad: tuple) -> bool:
    """No window of the pool touches a cell added by the pad node.

    In the coordinates of the pad's input (size `size_in`), the pad covers the
    rectangle [-pad_before, size + pad_after) on each axis minus the input itself;
    the pool adds its own padding `own` outside that. A window touches a pad cell
    when it meets the rectangle on both axes and leaves the input on one of them.
    """
    meets, leaves = [], []
    for axis in range(2):
        size, before, after = size_in[axis], pad[2 * axis], pad[2 * axis + 1]
        axis_meets, axis_leaves = [], []
        for first, last in _windows(shape_out[1 + axis], attrs["kernel"][axis],
                                    attrs["stride"][axis], own[2 * axis] + before):
            lo, hi = max(first, -before), min(last, size + after - 1)
            axis_meets.append(lo <= hi)
            axis_leaves.append(lo <= hi and (lo < 0 or hi > size - 1))
        meets.append(any(axis_meets))
        leaves.append(any(m and x for m, x in zip(axis_meets, axis_leaves, strict=True)))
    return not ((leaves[0] and meets[1]) or (leaves[1] and meets[0]))


def non_negative(graph: nx.DiGraph, node: str, memo: dict | None = None) -> bool:
    """Whether every value of `node`'s output is known to be >= 0, from the ops alone."""
    memo = {} if memo is None else memo
    if node in memo:
        return memo[node]
    memo[node] = False  # no cycles in a DAG, but keep the recursion finite anyway
    data = graph.nodes[node]
    spec = OPS[data["op"]]
    epilogue = data["attrs"].get("activation", "none")
    if spec.non_negative == ALWAYS or (epilogue != "none"
                                       and OPS[epilogue].non_negative == ALWAYS):
        result = True
    elif spec.non_negative == IF_INPUTS:
        result = all(non_negative(graph, src, memo) for src in data["inputs"])
    else:
        result = False
    memo[node] = result
    return result
