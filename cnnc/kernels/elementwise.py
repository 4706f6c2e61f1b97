"""Element-wise kernels: activations, the sum and product of branches, channel softmax.

All tensors follow the runtime convention of docs/DESIGN.md: a 4-D C-contiguous float32
buffer ``(N, Cbuf, H, W)`` and a channel offset; a kernel touches only its own channels.
"""

import numba
import numpy as np

from .jit import cached_njit

#: Work (multiply-adds, or window cells a pool reads) below which a parallel kernel runs on
#: the calling thread alone: starting a parallel region and waking the other threads costs
#: more than splitting such work saves (an empty prange took 4.4 us at 2 threads against
#: 0.6 us for the loop; LeNet-5's layers at batch 1 ran faster serial).
SERIAL_WORK = 1 << 18

ACT_NONE = 0
ACT_RELU = 1
ACT_LEAKY = 2  # slope ``alpha``
ACT_SIGMOID = 3
ACT_TANH = 4
ACT_RELU6 = 5  # min(max(x, 0), 6)
ACT_HARDSIGMOID = 6  # relu6(x + 3) / 6, as torch.nn.Hardsigmoid
ACT_HARDSWISH = 7  # x * relu6(x + 3) / 6, as torch.nn.Hardswish
ACT_CLIP = 8  # min(max(x, alpha), beta), as torch.clamp

#: Activation codes by the names the graph uses in ``attrs["activation"]``.
ACT_CODES = {
    "none": ACT_NONE,
    "relu": ACT_RELU,
    "leaky_relu": ACT_LEAKY,
    "sigmoid": ACT_SIGMOID,
    "tanh": ACT_TANH,
    "relu6": ACT_RELU6,
    "hardsigmoid": ACT_HARDSIGMOID,
    "hardswish": ACT_HARDSWISH,
    "clip": ACT_CLIP,
}


# fast_tanh's clamp and coefficients, highest power of x*x first: tanh(x) = x*P(x*x)/Q(x*x)
TANH_CLAMP = 7.90531110763549805
TANH_P = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
          5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
          4.89352455891786e-03)  # fmt: skip
TANH_Q = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
          4.89352518554385e-03)  # fmt: skip


@numba.njit(fastmath=True, inline="always", error_model="numpy")
def fast_tanh(x):
    """tanh for float32 as a rational function (odd degree-13 over even degree-6 minimax fit).

    Within 3e-7 of tanh everywhere (it saturates past |x| = 7.9053), and it is made of
    multiplies, adds and one divide, so loops over it vectorise -- libm's tanhf is a scalar
    call of ~12 ns per element here. The coefficients are the widely published ones used by
    Eigen's and XLA's fast float tanh (``TANH_*``, which fastconv's vector tanh uses too).
    """
    c = np.float32(TANH_CLAMP)
    x = min(max(x, -c), c)
    x2 = x * x
    p = x2 * np.float32(TANH_P[0]) + np.float32(TANH_P[1])
    p = x2 * p + np.float32(TANH_P[2])
    p = x2 * p + np.float32(TANH_P[3])
    p = x2 * p + np.float32(TANH_P[4])
    p = x2 * p + np.float32(TANH_P[5])
    p = x2 * p + np.float32(TANH_P[6])
    q = x2 * np.float32(TANH_Q[0]) + np.float32(TANH_Q[1])
    q = x2 * q + np.float32(TANH_Q[2])
    q = x2 * q + np.float32(TANH_Q[3])
    return x * p / q


@cached_njit(fastmath=True, error_model="numpy")
def activate_into(src, dst, act, alpha, beta):
    """``dst[i] = act(src[i])`` for 1-D contiguous float32 arrays of equal size.

    ``alpha`` and ``beta`` are the activation's arguments: the leaky-relu slope, clip's
    minimum and maximum (ignored by the others).

    ``dst`` may be ``src`` (in place). The switch on ``act`` sits outside the loops so each
    loop is branch-free and vectorises. Sigmoid is computed as ``0.5*tanh(x/2) + 0.5``, which
    never overflows.
    """
    if src.ctypes.data == dst.ctypes.data:  # in place: see bias_activate_inplace
        bias_activate_inplace(dst, 0.0, act, alpha, beta)
        return
    a = np.float32(alpha)
    b = np.float32(beta)
    half = np.float32(0.5)
    zero = np.float32(0.0)
    three = np.float32(3.0)
    six = np.float32(6.0)
    if act == ACT_RELU:
        for i in range(src.size):
            dst[i] = max(src[i], zero)
    elif act == ACT_LEAKY:
        for i in range(src.size):
            v = src[i]
            dst[i] = v if v > zero else a * v
    elif act == ACT_SIGMOID:
        for i in range(src.size):
            dst[i] = half * fast_tanh(half * src[i]) + half
    elif act == ACT_TANH:
        for i in range(src.size):
            dst[i] = fast_tanh(src[i])
    elif act == ACT_RELU6:
        for i in range(src.size):
            dst[i] = min(max(src[i], zero), six)
    elif act == ACT_HARDSIGMOID:
        for i in range(src.size):
            dst[i] = min(max(src[i] + three, zero), six) / six
    elif act == ACT_HARDSWISH:
        for i in range(src.size):
            v = src[i]
            dst[i] = v * min(max(v + three, zero), six) / six
    elif act == ACT_CLIP:
        for i in range(src.size):
            dst[i] = min(max(src[i], a), b)
    else:
        for i in range(src.size):
            dst[i] = src[i]


@numba.njit(fastmath=True, error_model="numpy")
def bias_activate_inplace(row, b, act, alpha, beta):
    """``row[i] = act(row[i] + b)`` in place (``alpha``, ``beta``: as ``activate_into``).

    One array read and written at the same index, so LLVM vectorises the loop; through
    ``activate_into(row, row, ...)`` its run-time overlap check fails (the arrays are the
    same) and it falls back to the scalar loop.
    """
    a = np.float32(alpha)
    hi = np.float32(beta)
    half = np.float32(0.5)
    zero = np.float32(0.0)
    three = np.float32(3.0)
    six = np.float32(6.0)
    bias = np.float32(b)
    if act == ACT_RELU:
        for i in range(row.size):
            row[i] = max(row[i] + bias, zero)
    elif act == ACT_LEAKY:
        for i in range(row.size):
            v = row[i] + bias
            row[i] = v if v > zero else a * v
    elif act == ACT_SIGMOID:
        for i in range(row.size):
            row[i] = half * fast_tanh(half * (row[i] + bias)) + half
    elif act == ACT_TANH:
        for i in range(row.size):
            row[i] = fast_tanh(row[i] + bias)
    elif act == ACT_RELU6:
        for i in range(row.size):
            row[i] = min(max(row[i] + bias, zero), six)
    elif act == ACT_HARDSIGMOID:
        for i in range(row.size):
            row[i] = min(max(row[i] + bias + three, zero), six) / six
    elif act == ACT_HARDSWISH:
        for i in range(row.size):
            v = row[i] + bias
            row[i] = v * min(max(v + three, zero), six) / six
    elif act == ACT_CLIP:
        for i in range(row.size):
            row[i] = min(max(row[i] + bias, a), hi)
    else:
        for i in range(row.size):
            row[i] += bias


@cached_njit(inline="always", error_model="numpy")
def copy_into(dst, src):
    """``dst[t] = src[t]`` for ``t < dst.size`` (``src`` at least as long). Kernels copy
    with this loop, not ``dst[:] = src``: Numba's slice assignment between arrays compiles
    a generic broadcasting copy, ~4 s of a cold compile (once per process), this loop a
    fraction of a second."""
    for t in range(dst.size):
        dst[t] = src[t]


@cached_njit(fastmath=True, error_model="numpy")
def channel_segment(buf, n, c0, C):
    """The channels ``c0 .. c0+C-1`` of image ``n`` of ``buf`` as one contiguous 1-D view."""
    plane = buf.shape[2] * buf.shape[3]
    flat = buf.reshape(buf.shape[0], buf.shape[1] * plane)
    return flat[n, c0 * plane : (c0 + C) * plane]


@cached_njit(fastmath=True, error_model="numpy")
def activation(x, xc0, C, out, oc0, act, alpha, beta):
    """``out[:, oc0:oc0+C] = act(x[:, xc0:xc0+C])``; ``act`` is an ``ACT_*`` code.

    ``alpha``, ``beta``: the activation's arguments (``activate_into``). ``out`` may be
    ``x`` (in place, normally with ``oc0 == xc0``); x and out must have the same spatial
    size.
    """
    for n in range(x.shape[0]):
        activate_into(channel_segment(x, n, xc0, C), channel_segment(out, n, oc0, C), act,
                      alpha, beta)


ADD_CHUNKS = 8  # pieces of each image's channel range, shared out over the threads


@cached_njit(fastmath=True, parallel=True, error_model="numpy")
def combine(a, ac0, b, bc0, C, out, oc0, product, act, alpha, beta):
    """``out[:, oc0:oc0+C] = act(a[:, ac0:ac0+C] + b[:, bc0:bc0+C])``, or ``*`` with
    ``product != 0``: the element-wise step of ``add`` and ``mul``.

    ``a`` and ``out`` have the same spatial size; so has ``b``, or it is ``1 x 1`` and its
    one value per channel is broadcast over the plane (§11's squeeze-and-excitation).
    ``out`` may alias ``a`` or ``b`` (same channels). Parallel over pieces of every image,
    so batch 1 uses every thread too.
    """
    N = out.shape[0]
    plane = out.shape[2] * out.shape[3]
    size = C * plane
    spread = plane > 1 and b.shape[2] * b.shape[3] == 1
    for task in numba.prange(N * ADD_CHUNKS):
        n = task // ADD_CHUNKS
        j = task - n * ADD_CHUNKS
        lo = size * j // ADD_CHUNKS
        hi = size * (j + 1) // ADD_CHUNKS
        sa = channel_segment(a, n, ac0, C)
        so = channel_segment(out, n, oc0, C)
        if spread:
            per_channel = channel_segment(b, n, bc0, C)
            start = lo
            while start < hi:  # the piece's stretch of each channel it touches
                c = start // plane
                end = min((c + 1) * plane, hi)
                _combine_scalar(sa[start:end], per_channel[c], so[start:end], product)
                start = end
        else:
            _combine_rows(sa[lo:hi], channel_segment(b, n, bc0, C)[lo:hi], so[lo:hi], product)
        bias_activate_inplace(so[lo:hi], 0.0, act, alpha, beta)


@numba.njit(fastmath=True, inline="always", error_model="numpy")
def _combine_rows(sa, sb, so, product):
    if product:
        for i in range(so.size):
            so[i] = sa[i] * sb[i]
    else:
        for i in range(so.size):
            so[i] = sa[i] + sb[i]


@numba.njit(fastmath=True, inline="always", error_model="numpy")
def _combine_scalar(sa, v, so, product):
    if product:
        for i in range(so.size):
            so[i] = sa[i] * v
    else:
        for i in range(so.size):
            so[i] = sa[i] + v


@cached_njit(fastmath=True, error_model="numpy")
def softmax(x, xc0, C, out, oc0):
    """Softmax over the channels ``xc0 .. xc0+C-1`` at every ``(n, h, w)``, into ``out``.

    Numerically stable: the per-position maximum is subtracted before ``exp``. ``out`` may be
    ``x`` (in place); for a feature vector the buffers are ``(N, Cbuf, 1, 1)``.
    """
    H, W = x.shape[2], x.shape[3]
    plane = H * W
    if plane == 1:  # feature vectors (a classifier's output): no scratch planes an image
        _softmax_vectors(x.reshape(x.size), x.shape[1], xc0, C, out.reshape(out.size),
                         out.shape[1], oc0)  # fmt: skip
        return
    for n in range(x.shape[0]):
        src = channel_segment(x, n, xc0, C)
        dst = channel_segment(out, n, oc0, C)
        # Work on whole planes at a time so the loops over positions vectorise.
        peak = src[:plane].copy()
        for c in range(1, C):
            for p in range(plane):
                peak[p] = max(peak[p], src[c * plane + p])
        total = np.zeros(plane, np.float32)
        for c in range(C):
            for p in range(plane):
                e = np.exp(src[c * plane + p] - peak[p])
                dst[c * plane + p] = e
                total[p] += e
        for p in range(plane):
            total[p] = np.float32(1.0) / total[p]
        for c in range(C):
            for p in range(plane):
                dst[c * plane + p] *= total[p]


@cached_njit(fastmath=True, error_model="numpy")
def _softmax_vectors(x, Cx, xc0, C, out, Cout, oc0):
    """softmax's feature vectors: image ``n``'s ``x[n*Cx + xc0 : +C]`` into ``out[n*Cout +
    oc0 : +C]``, one loop over the channels a pass. The planes' path ran five loops over a
    plane of one position a channel, and two arrays an image: LeNet-5's softmax at batch 64
    took 11 us, 1.7% of its run (4.4 us so; with the planes' arrays allocated once, 9.6)."""
    for n in range(x.size // Cx):
        src = x[n * Cx + xc0 : n * Cx + xc0 + C]
        dst = out[n * Cout + oc0 : n * Cout + oc0 + C]
        peak = src[0]
        for c in range(1, C):
            peak = max(peak, src[c])
        total = np.float32(0.0)
        for c in range(C):
            e = np.exp(src[c] - peak)
            dst[c] = e
            total += e
        inv = np.float32(1.0) / total
        for c in range(C):
            dst[c] *= inv
