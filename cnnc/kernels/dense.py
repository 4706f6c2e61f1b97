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
UNIT_BLOCK = 4  # units whose dot products with four images share one pass over the inputs


@linked_njit(fastmath=True, error_model="numpy")
def _dense_units(first, last, flat, start, D, w, b, out, oc0):
    """Units ``[first, last)`` of dense, for every image: four units against four images
    in one loop (sixteen sums, each input vector loaded once for four FMAs and each weight
    vector for four: 0.5 loads an FMA; against two images, 0.75, the loop bound by its
    loads: LeNet-5 at batch 64, 400->120 1.20x, 120->84 1.08x, AVX-512, 2 threads), the
    units left over one dot product at a time. A short last group of images runs the same
    loop with its last image repeated, so an image's outputs never depend on the batch it
    came in (``cnnc predict`` splits data sets into batches, and must give what one call
    gives)."""
    N = flat.shape[0]
    u = first
    while u + UNIT_BLOCK <= last:
        r0, r1, r2, r3 = w[u], w[u + 1], w[u + 2], w[u + 3]
        for n in range(0, N, 4):
            n1, n2, n3 = min(n + 1, N - 1), min(n + 2, N - 1), min(n + 3, N - 1)
            xa = flat[n, start : start + D]
            xb = flat[n1, start : start + D]
            xc = flat[n2, start : start + D]
            xd = flat[n3, start : start + D]
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = np.float32(0.0)
            c0 = c1 = c2 = c3 = e0 = e1 = e2 = e3 = np.float32(0.0)
            for d in range(D):
                p, q, s, t = xa[d], xb[d], xc[d], xd[d]
                w0, w1, w2, w3 = r0[d], r1[d], r2[d], r3[d]
                a0 += w0 * p
                a1 += w1 * p
                a2 += w2 * p
                a3 += w3 * p
                b0 += w0 * q
                b1 += w1 * q
                b2 += w2 * q
                b3 += w3 * q
                c0 += w0 * s
                c1 += w1 * s
                c2 += w2 * s
                c3 += w3 * s
                e0 += w0 * t
                e1 += w1 * t
                e2 += w2 * t
                e3 += w3 * t
            # the duplicates of a short last group first, so the image's own stores win
            for m, v0, v1, v2, v3 in ((n3, e0, e1, e2, e3), (n2, c0, c1, c2, c3),
                                      (n1, b0, b1, b2, b3), (n, a0, a1, a2, a3)):
                out[m, oc0 + u, 0, 0] = v0 + b[u]
                out[m, oc0 + u + 1, 0, 0] = v1 + b[u + 1]
                out[m, oc0 + u + 2, 0, 0] = v2 + b[u + 2]
                out[m, oc0 + u + 3, 0, 0] = v3 + b[u + 3]
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
