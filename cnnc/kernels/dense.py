"""Fully connected layer (like ``torch.nn.Linear`` on the (C, H, W)-flattened input)."""

import numba
import numpy as np

from .elementwise import SERIAL_WORK, activation
from .jit import cached_njit


@cached_njit(fastmath=True, parallel=True, error_model="numpy")
def dense(x, xc0, cin, w, b, out, oc0, act, alpha, beta):
    """``out[n, oc0+u, 0, 0] = act(b[u] + w[u] . flat(x[n, xc0:xc0+cin]))``.

    ``flat`` takes the ``cin*H*W`` floats of channels ``xc0 .. xc0+cin-1`` of image ``n`` in
    (C, H, W) order, so a 3-D input needs no flatten copy. ``w`` is ``(units, cin*H*W)``,
    ``b`` is ``(units,)`` (zeros for no bias), ``out`` is ``(N, Cout, 1, 1)``.

    Parallel over the units (on this thread alone for a small layer); each weight row is
    read once and used for every image.
    """
    N = x.shape[0]
    units = w.shape[0]
    D = cin * x.shape[2] * x.shape[3]  # == w.shape[1]
    start = xc0 * x.shape[2] * x.shape[3]
    flat = x.reshape(N, x.shape[1] * x.shape[2] * x.shape[3])
    if N * units * D < SERIAL_WORK:  # a small layer: on this thread alone (np.int64(0):
        # a literal 0 would compile _dense_units a second time)
        _dense_units(np.int64(0), units, flat, start, D, w, b, out, oc0)
    else:
        for chunk in numba.prange(DENSE_CHUNKS):
            _dense_units(units * chunk // DENSE_CHUNKS, units * (chunk + 1) // DENSE_CHUNKS,
                         flat, start, D, w, b, out, oc0)  # fmt: skip
    activation(out, oc0, units, out, oc0, act, alpha, beta)


DENSE_CHUNKS = 64  # static work chunks of units, shared out over the threads by prange


@numba.njit(fastmath=True, error_model="numpy")
def _dense_units(first, last, flat, start, D, w, b, out, oc0):
    """Units ``[first, last)`` of dense, for every image."""
    for u in range(first, last):
        row = w[u]
        for n in range(flat.shape[0]):
            xs = flat[n, start : start + D]
            total = np.float32(0.0)
            for d in range(D):
                total += row[d] * xs[d]
            out[n, oc0 + u, 0, 0] = total + b[u]
