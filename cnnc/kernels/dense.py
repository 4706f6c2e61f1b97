"""Fully connected layer (like ``torch.nn.Linear`` on the (C, H, W)-flattened input)."""

import numba
import numpy as np

from .elementwise import SERIAL_WORK, activation
from .jit import cached_njit, call_linked, linked_njit


@cached_njit(fastmath=True, parallel=True, error_model="numpy")
def dense(x, xc0, cin, w, b, out, oc0, act, alpha, beta):
    """``out[n, oc0+u, 0, 0] = act(b[u] + w[u] . flat(x[n, xc0:xc0+cin]))``.

    ``flat`` takes the ``cin*H*W`` floats of channels ``xc0 .. xc0+cin-1`` of image ``n`` in
    (C, H, W) order, so a 3-D input needs no flatten copy. ``w`` is ``(units, cin*H*W)``,
    ``b`` is ``(units,)`` (zeros for no bias), ``out`` is ``(N, Cout, 1, 1)``.

    Parallel over blocks of ``UNIT_BLOCK`` units (on this thread alone for a small layer);
    each weight row is read once and used for every image.
    """
    N = x.shape[0]
    units = w.shape[0]
    D = cin * x.shape[2] * x.shape[3]  # == w.shape[1]
    start = xc0 * x.shape[2] * x.shape[3]
    flat = x.reshape(N, x.shape[1] * x.shape[2] * x.shape[3])
    if N * units * D < SERIAL_WORK:  # a small layer: on this thread alone
        call_linked(_dense_units, 0, units, flat, start, D, w, b, out, oc0)
    else:
        blocks = (units + UNIT_BLOCK - 1) // UNIT_BLOCK
        chunks = min(blocks, DENSE_CHUNKS)
        for chunk in numba.prange(chunks):
            call_linked(_dense_units, UNIT_BLOCK * (blocks * chunk // chunks),
                        min(units, UNIT_BLOCK * (blocks * (chunk + 1) // chunks)),
                        flat, start, D, w, b, out, oc0)  # fmt: skip
    activation(out, oc0, units, out, oc0, act, alpha, beta)


DENSE_CHUNKS = 64  # static work chunks of unit blocks, shared out over the threads by prange
UNIT_BLOCK = 4  # units whose dot products with two images share one pass over the inputs


@linked_njit(fastmath=True, error_model="numpy")
def _dense_units(first, last, flat, start, D, w, b, out, oc0):
    """Units ``[first, last)`` of dense, for every image: four units against two images
    in one loop (eight sums, each input vector loaded once for four FMAs: 0.75 loads an
    FMA, against 2 for one dot product at a time, which bounded the loop by its loads),
    the units left over one dot product at a time. An odd last image runs the same loop
    paired with itself, so an image's outputs never depend on the batch it came in
    (``cnnc predict`` splits data sets into batches, and must give what one call gives)."""
    N = flat.shape[0]
    u = first
    while u + UNIT_BLOCK <= last:
        r0, r1, r2, r3 = w[u], w[u + 1], w[u + 2], w[u + 3]
        for n in range(0, N, 2):
            n2 = min(n + 1, N - 1)
            xa = flat[n, start : start + D]
            xb = flat[n2, start : start + D]
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = np.float32(0.0)
            for d in range(D):
                p, q = xa[d], xb[d]
                a0 += r0[d] * p
                a1 += r1[d] * p
                a2 += r2[d] * p
                a3 += r3[d] * p
                b0 += r0[d] * q
                b1 += r1[d] * q
                b2 += r2[d] * q
                b3 += r3[d] * q
            out[n2, oc0 + u, 0, 0] = b0 + b[u]
            out[n2, oc0 + u + 1, 0, 0] = b1 + b[u + 1]
            out[n2, oc0 + u + 2, 0, 0] = b2 + b[u + 2]
            out[n2, oc0 + u + 3, 0, 0] = b3 + b[u + 3]
            out[n, oc0 + u, 0, 0] = a0 + b[u]
            out[n, oc0 + u + 1, 0, 0] = a1 + b[u + 1]
            out[n, oc0 + u + 2, 0, 0] = a2 + b[u + 2]
            out[n, oc0 + u + 3, 0, 0] = a3 + b[u + 3]
        u += UNIT_BLOCK
    for n in range(N):  # the units short of a block, in every image
        _dot_units(u, last, n, flat, start, D, w, b, out, oc0)


@numba.njit(fastmath=True, error_model="numpy")
def _dot_units(first, last, n, flat, start, D, w, b, out, oc0):
    """Units ``[first, last)`` of image ``n``, one dot product at a time."""
    xs = flat[n, start : start + D]
    for u in range(first, last):
        row = w[u]
        total = np.float32(0.0)
        for d in range(D):
            total += row[d] * xs[d]
        out[n, oc0 + u, 0, 0] = total + b[u]
