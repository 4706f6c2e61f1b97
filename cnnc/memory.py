"""Buffer planning and the memory guard; no Numba here, so `cnnc check` and `summary` can
plan without compiling anything.

`plan_buffers` places every tensor as a view (buffer group, first channel) as
docs/DESIGN.md describes: alias ops (identity, dropout, flatten, slice) are views of their
input, the branches of an in-place concat are views of the concat, and with memory reuse
on, groups whose lifetimes do not overlap share storage (a slot).

The memory guard refuses work that would need more memory than the limit, before
anything is allocated: parameters at compile time, activations per batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

ALIAS_OPS = ("identity", "dropout", "flatten", "slice")


def _spatial(shape: tuple) -> tuple[int, int, int]:
    """(C, H, W) of a tensor shape; a feature vector (F,) is (F, 1, 1)."""
    return tuple(shape) if len(shape) == 3 else (shape[0], 1, 1)


@dataclass
class Group:
    """A 4-D buffer (N, channels, h, w) holding one or more tensors."""

    channels: int
    hw: tuple[int, int]
    first: int = 0  # step that first writes it
    last: int = 0  # step that last reads it
    slot: int = -1

    @property
    def per_image(self) -> int:
        return self.channels * self.hw[0] * self.hw[1]


@dataclass(frozen=True)
class View:
    """Where a tensor lives: channels c0..c0+channels-1 of a group seen as (.., h, w)."""

    group: int
    c0: int
    channels: int
    hw: tuple[int, int]


@dataclass
class BufferPlan:
    groups: list[Group]
    views: dict[str, View]
    slot_sizes: list[int] = field(default_factory=list)  # floats per image

    def peak_floats(self) -> int:
        return sum(self.slot_sizes)


def plan_buffers(graph: nx.DiGraph, order: list[str], reuse: bool) -> BufferPlan:
    """Place every node's output tensor; see the module docstring."""
    groups: list[Group] = []
    views: dict[str, View] = {}
    parent: dict[str, tuple[str, int]] = {}  # node -> (in-place concat, channel offset)
    for node_id in reversed(order):
        data = graph.nodes[node_id]
        if data["op"] != "concat" or not data["attrs"].get("inplace"):
            continue
        offset = 0
        for src, place in zip(data["inputs"], data["attrs"]["inplace"]):
            if place and src not in parent:
                parent[src] = (node_id, offset)
            offset += _spatial(graph.nodes[src]["shape"])[0]

    def view_of(node_id: str) -> View:
        if node_id in views:
            return views[node_id]
        data = graph.nodes[node_id]
        c, h, w = _spatial(data["shape"])
        if data["op"] in ALIAS_OPS:
            src = view_of(data["inputs"][0])
            if data["op"] == "flatten":
                sh, sw = src.hw
                view = View(src.group, src.c0 * sh * sw, c, (1, 1))
            elif data["op"] == "slice":
                view = View(src.group, src.c0 + data["attrs"]["start"], c, src.hw)
            else:
                view = src
        elif node_id in parent:
            concat, offset = parent[node_id]
            outer = view_of(concat)
            view = View(outer.group, outer.c0 + offset, c, outer.hw)
        else:
            groups.append(Group(c, (h, w)))
            view = View(len(groups) - 1, 0, c, (h, w))
        views[node_id] = view
        return view

    for node_id in order:
        view_of(node_id)
    # lifetimes: a group lives from its first write to its last read
    for g in groups:
        g.first, g.last = len(order), -1
    for step, node_id in enumerate(order):
        data = graph.nodes[node_id]
        if data["op"] not in ALIAS_OPS:
            g = groups[views[node_id].group]
            g.first = min(g.first, step)
            g.last = max(g.last, step)
        for src in data["inputs"]:
            g = groups[views[src].group]
            g.last = max(g.last, step)
    groups[views[graph.graph["output"]].group].last = len(order)
    groups[views[graph.graph["input"]].group].first = -1
    slot_sizes: list[int] = []
    if not reuse:
        for g in groups:
            g.slot = len(slot_sizes)
            slot_sizes.append(g.per_image)
    else:
        slot_free_after: list[int] = []
        for gi in sorted(range(len(groups)), key=lambda i: groups[i].first):
            g = groups[gi]
            free = [s for s in range(len(slot_sizes)) if slot_free_after[s] < g.first]
            fits = [s for s in free if slot_sizes[s] >= g.per_image]
            if fits:
                slot = min(fits, key=lambda s: slot_sizes[s])
            elif free:
                slot = max(free, key=lambda s: slot_sizes[s])
                slot_sizes[slot] = g.per_image
            else:
                slot = len(slot_sizes)
                slot_sizes.append(g.per_image)
                slot_free_after.append(-2)
            g.slot = slot
            slot_free_after[slot] = g.last
    return BufferPlan(groups, views, slot_sizes)
