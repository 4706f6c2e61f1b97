"""Pooling kernels: windowed max/average and global max/average.

Windowed pools take the top/left padding ``pt, pl``; the bottom/right padding is implied by
the output size. Pools are parallel over the ``(n, c)`` planes.
"""

import numba
import numpy as np

from .window import axpy, output_range


# fastmath stays off for the max pools: it lets LLVM assume no infinities, and -inf is the
# value that padded cells (and empty windows) stand for.
@numba.njit(cache=True, parallel=True)
def maxpool2d(x, xc0, C, out, oc0, kh, kw, sh, sw, pt, pl):
    """Max pooling of channels ``xc0 .. xc0+C-1`` of ``x`` into ``oc0 .. oc0+C-1`` of ``out``.

    ``out[n, oc0+c, oh, ow]`` is the maximum of ``x[n, xc0+c]`` over the ``kh x kw`` window
    whose top-left corner is ``(oh*sh - pt, ow*sw - pl)``; padded cells count as -inf and so
    never win (a window wholly in padding would give -inf).
    """
    N, H, W = x.shape[0], x.shape[2], x.shape[3]
    OH, OW = out.shape[2], out.shape[3]
    for task in numba.prange(N * C):
        n = task // C
        c = task - n * C
        src = x[n, xc0 + c]
        dst = out[n, oc0 + c]
        dst[:] = -np.inf
        for oh in range(OH):
            dst_row = dst[oh]
            for i in range(max(0, pt - oh * sh), min(kh, H + pt - oh * sh)):
                row = src[oh * sh + i - pt]
                for j in range(kw):
                    ow_lo, ow_hi = output_range(pl - j, sw, W, OW)
                    # Slices, so that the loop indices are plainly non-negative (see axpy).
                    dst_seg = dst_row[ow_lo:ow_hi]
                    x_seg = row[ow_lo * sw + j - pl :: sw]
                    for t in range(dst_seg.size):
                        dst_seg[t] = max(dst_seg[t], x_seg[t])


@numba.njit(cache=True, fastmath=True, parallel=True)
def avgpool2d(x, xc0, C, out, oc0, kh, kw, sh, sw, pt, pl):
    """Average pooling that never counts padding (``count_include_pad=False``).

    ``out[n, oc0+c, oh, ow]`` is the mean of ``x[n, xc0+c]`` over the cells of the ``kh x kw``
    window at ``(oh*sh - pt, ow*sw - pl)`` that lie inside the input.
    """
    N, H, W = x.shape[0], x.shape[2], x.shape[3]
    OH, OW = out.shape[2], out.shape[3]
    # The number of cells inside the input is (rows inside) * (columns inside).
    cols_inside = np.empty(OW, np.float32)
    for ow in range(OW):
        left = ow * sw - pl
        cols_inside[ow] = min(kw, W - left) - max(0, -left)
    for task in numba.prange(N * C):
        n = task // C
        c = task - n * C
        src = x[n, xc0 + c]
        dst = out[n, oc0 + c]
        dst[:] = 0.0
        for oh in range(OH):
            dst_row = dst[oh]
            i_lo = max(0, pt - oh * sh)
            i_hi = min(kh, H + pt - oh * sh)
            for i in range(i_lo, i_hi):
                row = src[oh * sh + i - pt]
                for j in range(kw):
                    ow_lo, ow_hi = output_range(pl - j, sw, W, OW)
                    axpy(dst_row[ow_lo:ow_hi], np.float32(1.0), row[ow_lo * sw + j - pl :: sw])
            rows_inside = np.float32(i_hi - i_lo)
            for ow in range(OW):
                dst_row[ow] /= rows_inside * cols_inside[ow]


@numba.njit(cache=True, fastmath=True, parallel=True)
def global_avgpool(x, xc0, C, out, oc0):
    """``out[n, oc0+c, 0, 0]`` = mean of ``x[n, xc0+c]`` over all of H x W (out is 1 x 1)."""
    N = x.shape[0]
    for task in numba.prange(N * C):
        n = task // C
        c = task - n * C
        src = x[n, xc0 + c]
        total = np.float32(0.0)
        for h in range(src.shape[0]):
            for v in src[h]:
                total += v
        out[n, oc0 + c, 0, 0] = total / np.float32(src.size)


@numba.njit(cache=True, parallel=True)
def global_maxpool(x, xc0, C, out, oc0):
    """``out[n, oc0+c, 0, 0]`` = maximum of ``x[n, xc0+c]`` over all of H x W (out is 1 x 1)."""
    N = x.shape[0]
    for task in numba.prange(N * C):
        n = task // C
        c = task - n * C
        src = x[n, xc0 + c]
        peak = src[0, 0]
        for h in range(src.shape[0]):
            for v in src[h]:
                peak = max(peak, v)
        out[n, oc0 + c, 0, 0] = peak
