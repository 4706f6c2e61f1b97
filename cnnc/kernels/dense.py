"""Fully connected layer (like ``torch.nn.Linear`` on the (C, H, W)-flattened input)."""

import numba
import numpy as np

from .elementwise import activation
from .jit import cached_njit


@cached_njit(fastmath=True, parallel=True, error_model="numpy")
def dense(x, xc0, cin, w, b, out, oc0, act, alpha, beta):
    """``out[n, oc0+u, 0, 0] = act(b[u] + w[u] . flat(x[n, xc0:xc0+cin]))``.

    ``flat`` takes the ``cin*H*W`` floats of channels ``xc0 .. xc0+cin-1`` of image ``n`` in
    (C, H, W) order, so a 3-D input needs no flatten copy. ``w`` is ``(units, cin*H*W)``,
    ``b`` is ``(units,)`` (zeros for no bias), ``out`` is ``(N, Cout, 1, 1)``.

    Parallel over the units; each weight row is read once and used for every image.
    """
    N = x.shape[0]
    units = w.shape[0]
    D = cin * x.shape[2] * x.shape[3]  # == w.shape[1]
    start = xc0 * x.shape[2] * x.shape[3]
    flat = x.reshape(N, x.shape[1] * x.shape[2] * x.shape[3])
    for u in numba.prange(units):
        row = w[u]
        for n in range(N):
            xs = flat[n, start : start + D]
            total = np.float32(0.0)
            for d in range(D):
                total += row[d] * xs[d]
            out[n, oc0 + u, 0, 0] = total + b[u]
    activation(out, oc0, units, out, oc0, act, alpha, beta)

