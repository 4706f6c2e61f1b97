"""Normalisation kernels: inference batch norm and local response norm."""

import numba
import numpy as np

from .elementwise import channel_segment
from .jit import cached_njit


def batchnorm_coefficients(weight, bias, mean, var, eps):
    """Fold inference batch norm into a per-channel affine map; returns float32 (scale, shift).

    ``scale = weight / sqrt(var + eps)`` and ``shift = bias - mean * scale``, computed in
    float64 so that ``batchnorm(x, ...) == (x - mean) / sqrt(var + eps) * weight + bias``.
    """
    scale = np.asarray(weight, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    shift = np.asarray(bias, np.float64) - np.asarray(mean, np.float64) * scale
    return scale.astype(np.float32), shift.astype(np.float32)


@cached_njit(fastmath=True, error_model="numpy")
def batchnorm(x, xc0, C, out, oc0, scale, shift):
    """``out[:, oc0+c] = x[:, xc0+c] * scale[c] + shift[c]`` for ``c < C`` (out may be x).

    ``scale`` and ``shift`` are float32 ``(C,)``, from :func:`batchnorm_coefficients`.
    """
    for n in range(x.shape[0]):
        for c in range(C):
            src = channel_segment(x, n, xc0 + c, 1)
            dst = channel_segment(out, n, oc0 + c, 1)
            a = scale[c]
            s = shift[c]
            for p in range(src.size):
                dst[p] = src[p] * a + s


@cached_njit(fastmath=True, parallel=True, error_model="numpy")
def lrn(x, xc0, C, out, oc0, size, alpha, beta, k):
    """Local response norm across channels, exactly like ``torch.nn.LocalResponseNorm``.

        out_c = x_c / (k + alpha/size * sum_{c'} x_{c'}^2) ** beta

    with ``c'`` running over ``c - size//2 .. c + (size-1)//2`` clipped to ``0 .. C-1`` (the
    division is always by ``size``, as torch pads with zeros). ``out`` must not be ``x``:
    every output channel reads its neighbours. Parallel over the ``(n, c)`` planes.
    """
    N = x.shape[0]
    a = np.float32(alpha / size)
    kk = np.float32(k)
    minus_beta = np.float32(-beta)
    for task in numba.prange(N * C):
        n = task // C
        c = task - n * C
        lo = max(0, c - size // 2)
        hi = min(C, c + (size - 1) // 2 + 1)
        window = channel_segment(x, n, xc0 + lo, hi - lo)
        src = channel_segment(x, n, xc0 + c, 1)
        dst = channel_segment(out, n, oc0 + c, 1)
        plane = src.size
        sumsq = np.zeros(plane, np.float32)
        for cc in range(hi - lo):
            for p in range(plane):
                v = window[cc * plane + p]
                sumsq[p] += v * v
        for p in range(plane):
            dst[p] = src[p] * (kk + a * sumsq[p]) ** minus_beta
