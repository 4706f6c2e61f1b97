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

import math
import os
import re
from dataclasses import dataclass, field

import networkx as nx

from .errors import CnncError, CnncMemoryError, CnncValueError
from .frontend import Pos
from .ops import ALIAS_OPS, format_shape


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
        for src, place in zip(data["inputs"], data["attrs"]["inplace"], strict=True):
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


# ---------------------------------------------------------------- the memory guard
#: Parameters live about three times over: the arrays of `parameters()`, the optimised
#: graph's (folded, packed for the conv kernel) and the interpreter's one flat block.
PARAMETER_COPIES = 3


def available_memory() -> int | None:
    """Bytes this process can still allocate: the kernel's MemAvailable, capped by a cgroup
    (container) limit; the free physical memory where /proc is missing; None if unknown."""
    candidates = []
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as fh:
                text = fh.read().strip()
            if text.isdigit():
                candidates.append(int(text))
        except OSError:
            pass
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(candidates)


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
          "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40,
          "tib": 2**40}


def parse_size(text: str) -> int:
    """Bytes of a size such as `512M`, `8G`, `1.5GiB` or `1000000` (units are powers of
    1024, as `free -h` shows them)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match and match.group(2).lower()
    if not match or unit not in _UNITS or len(match.group(1)) > 20:
        raise CnncValueError(f"not a memory size: {text!r} (write e.g. 512M, 8G or 1.5GiB)")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise CnncValueError(f"the memory limit must be positive, got {text!r}")
    return value


def format_bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def check_memory(need: int, max_memory: int | None, what: str, pos=None,
                 error: type[CnncError] | None = None) -> None:
    """Refuse `what` if it needs more than `max_memory` bytes (None: what is available)."""
    limit = available_memory() if max_memory is None else max_memory
    if limit is None or need <= limit:
        return
    source = ("the memory available now; max_memory= or --max-memory sets another limit"
              if max_memory is None else "the limit given by max_memory= or --max-memory")
    raise (error or CnncMemoryError)(
        f"{what} needs {format_bytes(need)}, more than {format_bytes(limit)} ({source})"
    ).at(pos)


def check_parameter_memory(graph: nx.DiGraph, shapes: dict[str, tuple],
                           max_memory: int | None) -> None:
    """Refuse a network whose parameters cannot be held, before any is allocated; the
    error points at the layer with the most parameters."""
    per_layer: dict[str, int] = {}
    for key, shape in shapes.items():
        layer = key.rsplit(".", 1)[0]
        per_layer[layer] = per_layer.get(layer, 0) + math.prod(shape)
    if not per_layer:
        return
    total = sum(per_layer.values()) * 4 * PARAMETER_COPIES
    largest = max(per_layer, key=per_layer.get)
    pos = next((Pos(*d["pos"]) for _, d in graph.nodes(data=True)
                if d["name"] == largest and d.get("pos")), None)
    check_memory(total, max_memory,
                 f"network '{graph.graph['name']}' has {sum(per_layer.values()):,} parameters "
                 f"(the most in '{largest}': {per_layer[largest]:,}); holding them", pos)


def activation_bytes(buffers: BufferPlan, n: int) -> int:
    """Bytes of the activation arena at batch size n."""
    return 4 * n * buffers.peak_floats()


def check_activation_memory(graph: nx.DiGraph, buffers: BufferPlan, n: int,
                            max_memory: int | None, error: type[CnncError] | None = None
                            ) -> None:
    """Refuse a batch of n images whose activations cannot be held; the error names the
    largest tensor (at its layer's position when the batch is the compile-time 1)."""
    need = activation_bytes(buffers, n)
    largest = max(graph.nodes, key=lambda v: math.prod(graph.nodes[v]["shape"]))
    data = graph.nodes[largest]
    shape = format_shape(data["shape"])
    pos = Pos(*data["pos"]) if n == 1 and data.get("pos") else None
    check_memory(need, max_memory,
                 f"the activations of network '{graph.graph['name']}' at batch size {n:,} "
                 f"(largest tensor: '{largest}', {shape} per image)", pos, error)
