"""Index arithmetic and inner loops shared by the sliding-window kernels (conv and pools)."""

from .jit import cached_njit


@cached_njit(error_model="numpy")
def output_range(offset: int, stride: int, size_in: int, size_out: int) -> tuple[int, int]:
    """Return ``(lo, hi)``: the output positions ``o`` in ``[lo, hi)`` that read inside the input.

    Output position ``o`` of one kernel tap reads input position ``o*stride - offset``, where
    ``offset = pad - tap*dilation``. The result is the set of ``o`` in ``[0, size_out)`` with
    ``0 <= o*stride - offset < size_in``; it may be empty (``lo == hi``). Computing it once per
    tap lets the inner loops run over a plain range with no bounds test per element.
    """
    lo = -(-offset // stride)  # ceil(offset / stride); // floors, also for negatives
    hi = (size_in - 1 + offset) // stride + 1
    lo = max(lo, 0)
    hi = min(hi, size_out)
    return lo, max(lo, hi)


@cached_njit(fastmath=True, inline="always", error_model="numpy")
def axpy(acc, weight, x):
    """``acc[t] += weight * x[t]`` for ``t < acc.size`` (x may be longer).

    The counter runs from 0 so the compiler sees non-negative indices: an index that might be
    negative makes Numba emit a wraparound test per element, which stops vectorisation.
    """
    for t in range(acc.size):
        acc[t] += weight * x[t]
