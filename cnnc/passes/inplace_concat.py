"""inplace-concat: each branch of a concat writes straight into its channel range."""

from __future__ import annotations

import networkx as nx
import numpy as np

from ..ops import ALIAS_OPS
from .rewrite import fresh_id, insert_node, ordered, set_inputs


class InplaceConcat:
    """Rewrite: sets `attrs['inplace']` on every concat, one flag per input; a true
    flag makes the runtime place that producer's output inside the concat's
    buffer at its channel offset, so the concat copies nothing for it.

    An input may be placed when its producer is not the graph input, not an alias
    (identity, dropout, flatten, slice: they have no buffer of their own to
    place), appears once in the concat's inputs, and is not placed in another
    concat already (concats are visited in schedule order; the first one wins).

    Slices (the output of fuse-1x1-siblings) are made placeable when they come
    first or last: a run of inputs at the start of concat `X` that are slices of
    one wide conv `w`, reading its channels lo..hi-1 in order, is replaced by `w`
    itself, with `w`'s output channels rotated so lo..hi-1 come last; the other
    channels of `w` then lie in extra channels before `X`'s range. Likewise at
    the end (lo..hi-1 rotated to the front, extra channels after). `X` becomes
    `X.wide` (all of `w` plus the other inputs) and `X` itself a slice of
    `X.wide`, so readers of `X` see exactly what they saw. Rotating permutes `w`'s
    weight rows and bias and updates the starts of its slices. Conditions: `w` is
    a conv or dense read only by slices, none straddling lo or hi, with no
    `act_from` (its activated channels stay last); `w` is not the graph output,
    not an input of `X` and not placed elsewhere; `X` is not read by another
    concat (it could not be placed there once it is a slice).

    Valid: every channel range of a concat buffer is written by exactly one
    producer, once, and read only after that write; the extra channels of
    `X.wide` are written by `w` alone.

    Preserves: the output exactly, every existing node name (`X.wide` is new),
    shapes of existing nodes.
    """

    name = "inplace-concat"

    def apply(self, graph: nx.DiGraph) -> None:
        placed: set[str] = set()
        for node in ordered(graph):
            if graph.nodes[node]["op"] != "concat":
                continue
            node = self._absorb_slices(graph, node, placed)
            data = graph.nodes[node]
            flags = []
            for src in data["inputs"]:
                ok = (src != graph.graph["input"] and graph.nodes[src]["op"] not in ALIAS_OPS
                      and data["inputs"].count(src) == 1 and src not in placed)
                if ok:
                    placed.add(src)
                flags.append(ok)
            data["attrs"]["inplace"] = flags

    def _absorb_slices(self, graph: nx.DiGraph, concat: str, placed: set[str]) -> str:
        """Replace slice runs at either end of `concat` by their whole wide conv (see above)."""
        data = graph.nodes[concat]
        inputs = list(data["inputs"])
        if any(graph.nodes[u]["op"] == "concat" for u in graph.successors(concat)):
            return concat
        lead = trail = 0
        front = _slice_run(graph, inputs, placed, from_end=False)
        if front is not None:
            wide, count, block = front
            _rotate(graph, wide, block, to_end=True)
            lead = graph.nodes[wide]["shape"][0] - (block[1] - block[0])
            inputs = [wide] + inputs[count:]
        rest = inputs[1:] if front is not None else inputs
        back = _slice_run(graph, rest, placed, from_end=True) if rest else None
        if back is not None and back[0] not in inputs:
            wide, count, block = back
            _rotate(graph, wide, block, to_end=False)
            trail = graph.nodes[wide]["shape"][0] - (block[1] - block[0])
            inputs = inputs[:len(inputs) - count] + [wide]
        if inputs == data["inputs"]:
            return concat
        outer = fresh_id(graph, f"{concat}.wide")
        shape = (data["shape"][0] + lead + trail, *data["shape"][1:])
        insert_node(graph, outer, {"op": "concat", "name": outer, "inputs": inputs,
                                   "shape": shape, "pos": data["pos"], "attrs": {}},
                    before=concat)
        graph.nodes[concat].update(op="slice",
                                  attrs={"start": lead, "count": data["shape"][0]})
        set_inputs(graph, concat, [outer])
        return outer


def _span(graph: nx.DiGraph, node: str) -> tuple[int, int]:
    start = graph.nodes[node]["attrs"]["start"]
    return start, start + graph.nodes[node]["shape"][0]


def _slice_run(graph: nx.DiGraph, inputs: list[str], placed: set[str], from_end: bool):
    """(wide, count, (lo, hi)) if the first (last) `count` inputs are slices of one wide conv
    that together read its channels lo..hi-1 in order and the conv can be placed; else None."""
    seq = inputs[::-1] if from_end else inputs
    if not seq or graph.nodes[seq[0]]["op"] != "slice":
        return None
    wide = graph.nodes[seq[0]]["inputs"][0]
    data = graph.nodes[wide]
    if (data["op"] not in ("conv", "dense") or wide in placed or wide in inputs
            or wide == graph.graph["output"] or data["attrs"].get("act_from")):
        return None  # (act_from: its activated channels must stay last)
    run = [seq[0]]
    for node in seq[1:]:
        if graph.nodes[node]["op"] != "slice" or graph.nodes[node]["inputs"] != [wide]:
            break
        before, after = (node, run[-1]) if from_end else (run[-1], node)
        if _span(graph, before)[1] != _span(graph, after)[0]:
            break
        run.append(node)
    members = run[::-1] if from_end else run
    lo, hi = _span(graph, members[0])[0], _span(graph, members[-1])[1]
    for user in graph.successors(wide):
        if graph.nodes[user]["op"] != "slice" or graph.nodes[user]["inputs"] != [wide]:
            return None
        start, end = _span(graph, user)
        if start < hi and end > lo and not (lo <= start and end <= hi):
            return None  # straddles the block that moves
    return wide, len(run), (lo, hi)


def _rotate(graph: nx.DiGraph, wide: str, block: tuple[int, int], to_end: bool) -> None:
    """Permute `wide`'s output channels so channels block[0]..block[1]-1 come last (first)."""
    total = graph.nodes[wide]["shape"][0]
    lo, hi = block
    rest = [c for c in range(total) if not lo <= c < hi]
    perm = rest + list(range(lo, hi)) if to_end else list(range(lo, hi)) + rest
    if perm == list(range(total)):
        return
    new_index = np.argsort(perm)  # old channel -> new channel
    for user in graph.successors(wide):
        attrs = graph.nodes[user]["attrs"]
        attrs["start"] = int(new_index[attrs["start"]])
    data = graph.nodes[wide]
    if "params" in data:
        data["params"] = {k: v[perm] for k, v in data["params"].items()}
