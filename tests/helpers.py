"""Small helpers shared by the tests."""

from __future__ import annotations

import numpy as np

from cnnc.graph import build_graph, load_source


def graph_of(text: str, network: str | None = None, file: str = "m.cnn"):
    return build_graph(load_source(text, file), network)


def net_src(body: str, shape: str = "3x8x8") -> str:
    """A network named n around a body."""
    return f"network n(input: {shape}) {{\n{body}\n}}\n"


def ops(graph) -> list[str]:
    return [d["op"] for _, d in graph.nodes(data=True)]


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| relative to the largest reference magnitude (at least 1)."""
    return float(np.max(np.abs(got - ref)) / max(1.0, float(np.max(np.abs(ref)))))
