"""Reports above the optimiser that need no Numba, for `cnnc check` and `cnnc summary`."""

from __future__ import annotations

import math

import networkx as nx

from .graph import parameter_shapes
from .memory import PARAMETER_COPIES, format_bytes, plan_buffers
from .passes import optimize
from .passes.rewrite import ordered

__all__ = ["memory_report"]


def memory_report(graph: nx.DiGraph, level: int = 2, disabled=()) -> list[str]:
    """Lines for `cnnc check` and `summary`: peak activation memory per image before and
    after planning, and the memory the parameters take.

    Optimises `graph` (parsed or bound) without parameters, so it is cheap, and
    places its tensors with `memory.plan_buffers` twice: every buffer its own
    storage (before planning), then with liveness-based reuse (after).
    """
    optimized = optimize(_structure_only(graph), level=level, disabled=disabled)
    order = ordered(optimized)
    before = plan_buffers(optimized, order, reuse=False).peak_floats() * 4
    after = plan_buffers(optimized, order, reuse=True).peak_floats() * 4
    values = sum(math.prod(shape) for shape in parameter_shapes(graph).values())
    return [f"peak activation memory per image (-O{level}): {_bytes(before)} before planning, "
            f"{_bytes(after)} after ({after / before:.0%})",
            f"parameter memory: {format_bytes(4 * values)} ({values:,} values; about "
            f"{PARAMETER_COPIES}x that while compiled)"]


def _structure_only(graph: nx.DiGraph) -> nx.DiGraph:
    bare = graph.copy()
    for _, data in bare.nodes(data=True):
        data.pop("params", None)
    return bare


def _bytes(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"
