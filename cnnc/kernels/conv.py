"""2-D convolution (cross-correlation, like ``torch.nn.functional.conv2d``)."""

import numba
import numpy as np

from .elementwise import activate_into
from .jit import cached_njit
from .window import axpy, output_range


@cached_njit(fastmath=True, parallel=True, error_model="numpy")
def conv2d(x, xc0, cin, w, b, out, oc0, sh, sw, pt, pl, dh, dw, groups, act, alpha, beta):
    """Grouped, dilated, padded 2-D convolution with a bias and an activation epilogue.

    Reads channels ``xc0 .. xc0+cin-1`` of ``x`` ``(N, Cx, H, W)`` and writes channels
    ``oc0 .. oc0+K-1`` of ``out`` ``(N, Cout, OH, OW)``, nothing else:

        out[n, oc0+k] = act(b[k] + sum_{ci, i, j} w[k, ci, i, j] * xpad[n, g*cin_g + ci,
                                                          oh*sh + i*dh, ow*sw + j*dw])

    where ``w`` is ``(K, cin_g, kh, kw)`` with ``cin_g = cin // groups``, ``g`` is the group of
    output channel ``k`` (``k // (K // groups)``), and ``xpad`` is the input with ``pt`` zero
    rows on top and ``pl`` zero columns on the left. The padding at the bottom and right is
    whatever ``OH, OW`` (taken from ``out``) imply. ``b`` is ``(K,)`` (zeros for no bias);
    ``act`` is an ``ACT_*`` code, ``alpha`` and ``beta`` its arguments. ``out`` must not overlap
    the input channels (each output plane is written while other planes are still being read).

    Parallel over ``(n, k)`` pairs. For each input channel and tap the valid output rows and
    columns are computed up front, so the innermost loop runs over a contiguous stretch of an
    output row with no bounds test.
    """
    N, H, W = x.shape[0], x.shape[2], x.shape[3]
    K, cin_g, KH, KW = w.shape
    OH, OW = out.shape[2], out.shape[3]
    k_per_group = K // groups
    for task in numba.prange(N * K):
        n = task // K
        k = task - n * K
        c_first = xc0 + (k // k_per_group) * cin_g
        acc = np.full((OH, OW), b[k], np.float32)
        acc_flat = acc.reshape(OH * OW)
        for ci in range(cin_g):
            plane = x[n, c_first + ci]
            for i in range(KH):
                oh_lo, oh_hi = output_range(pt - i * dh, sh, H, OH)
                for j in range(KW):
                    ow_lo, ow_hi = output_range(pl - j * dw, sw, W, OW)
                    weight = w[k, ci, i, j]
                    width = ow_hi - ow_lo
                    col = ow_lo * sw + j * dw - pl  # input column of output column ow_lo
                    if sh == 1 and sw == 1 and width == W and W == OW:
                        # The tap reads whole rows that lie back to back in x and in acc: one
                        # long loop (every tap of a 1x1 conv, the middle column of a 3x3).
                        start = (oh_lo + i * dh - pt) * W
                        count = (oh_hi - oh_lo) * W
                        axpy(
                            acc_flat[oh_lo * W : oh_lo * W + count],
                            weight,
                            plane.reshape(H * W)[start : start + count],
                        )
                        continue
                    for oh in range(oh_lo, oh_hi):
                        acc_row = acc[oh, ow_lo:ow_hi]
                        x_row = plane[oh * sh + i * dh - pt]
                        if sw == 1:
                            axpy(acc_row, weight, x_row[col : col + width])
                        else:
                            axpy(acc_row, weight, x_row[col::sw])
        activate_into(acc_flat, out[n, oc0 + k].reshape(OH * OW), act, alpha, beta)
