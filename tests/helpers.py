"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib

import numba
import numpy as np

from cnnc.graph import build_graph, load_source


@contextlib.contextmanager
def on_threads(threads: int):
    """numba.set_num_threads(threads) for the block, then the count from before it."""
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


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


def same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) along one axis (LANGUAGE.md section 5)."""
    out = -(-size // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def resolve_pads(padding, h, w, kh, kw, sh, sw, dh=1, dw=1) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) for 'valid', 'same', (ph, pw) or an explicit 4-tuple."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        return same_pads(h, kh, sh, dh) + same_pads(w, kw, sw, dw)
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    return tuple(padding)
