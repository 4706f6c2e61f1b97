"""How ``run_plan`` reads one encoded argument of a kernel call (``interpreter.ARG_KINDS``).

Each helper takes a step's int row ``r`` and the argument's first position ``i`` in it;
they are inlined into the generated interpreter, so a decode costs no call.
"""

import numba


@numba.njit(inline="always", error_model="numpy")
def view(arena, n, r, i):
    """A tensor ``(start, channels, h, w)``: the 4-D array ``arena[n*start : n*(start +
    channels*h*w)]`` seen as ``(n, channels, h, w)``."""
    start, channels, h, w = r[i], r[i + 1], r[i + 2], r[i + 3]
    return arena[n * start : n * (start + channels * h * w)].reshape((n, channels, h, w))


@numba.njit(inline="always", error_model="numpy")
def vector(params, r, i):
    """A parameter vector ``(offset, size)`` in ``params``."""
    return params[r[i] : r[i] + r[i + 1]]


@numba.njit(inline="always", error_model="numpy")
def matrix(params, r, i):
    """A parameter matrix ``(offset, rows, columns)`` in ``params``."""
    return params[r[i] : r[i] + r[i + 1] * r[i + 2]].reshape((r[i + 1], r[i + 2]))


@numba.njit(inline="always", error_model="numpy")
def tensor4(params, r, i):
    """A 4-D parameter tensor ``(offset, d0, d1, d2, d3)`` in ``params``."""
    size = r[i + 1] * r[i + 2] * r[i + 3] * r[i + 4]
    return params[r[i] : r[i] + size].reshape((r[i + 1], r[i + 2], r[i + 3], r[i + 4]))
