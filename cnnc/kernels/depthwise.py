"""Depthwise convolution: every group reads one input channel (`dwconv` of LANGUAGE.md §11,
and any `conv` whose groups equal its input depth). ``cnnc.backend.conv_kernel`` picks it.

Same maths and tensor convention as :func:`cnnc.kernels.conv.conv2d`. The generic kernel
runs a depthwise conv one output row segment per tap (short loops, a strided read per
element at stride 2); the packed one pads each one-channel group to a tile of output
channels. Here each task takes one output channel of one image and:

1. copies the zero-padded input plane into a per-chunk scratch (once for the
   ``multiplier`` outputs of one input channel), split into its
   ``sh x sw`` stride phases, each phase ``Hq`` rows of ``Wq = OW + ((KW-1)*dw)//sw``
   columns. In that layout the input that flat output position ``p = oh*Wq + ow`` needs
   for tap ``(i, j)`` is ``xq[p + off(i, j)]``: every tap is one contiguous, vectorised
   multiply-add over all output rows at once (``Wq - OW`` junk columns a row, never stored),
   whatever the stride, dilation or padding;
2. sums the taps over blocks of ``BLOCK`` positions (a block and its inputs stay in
   L1), applies bias and activation to the block while it is there
   (``bias_activate_inplace``, as every conv epilogue), and copies the valid columns out
   (or, with no junk columns, sums straight into ``out``).
"""

import numba
import numpy as np

from .elementwise import bias_activate_inplace, copy_into
from .jit import cached_njit, call_linked, linked_njit
from .window import axpy, output_range

CHUNKS = 64  # static pieces of the (image, output channel) tasks, shared out over the threads
BLOCK = 2048  # flat output positions summed tap by tap while they stay in L1 (8 KB)


@cached_njit(fastmath=True, parallel=True, error_model="numpy")
def conv2d_depthwise(x, xc0, cin, w, b, out, oc0, sh, sw, pt, pl, dh, dw, act, alpha, beta):
    """``out[n, oc0+k] = act(b[k] + sum_{i,j} w[k, 0, i, j] * xpad[n, xc0 + k // m,
    oh*sh + i*dh, ow*sw + j*dw])`` for the ``K = m * cin`` output channels (``m`` the
    multiplier, ``K // cin``).

    ``x`` is ``(N, Cx, H, W)``, ``w`` ``(K, 1, KH, KW)``, ``b`` ``(K,)`` (zeros for no bias),
    ``out`` ``(N, Cout, OH, OW)``; ``pt, pl`` are the top and left zero padding, the bottom
    and right padding whatever ``OH, OW`` imply. ``act`` is an ``ACT_*`` code, ``alpha``
    and ``beta`` its arguments. Reads channels ``[xc0, xc0+cin)`` of ``x`` and writes
    channels ``[oc0, oc0+K)`` of ``out`` only. Parallel over (image, output channel); the
    outputs of one input channel that fall in one chunk share its split plane.
    """
    N = x.shape[0]
    K, _, KH, KW = w.shape
    OH, OW = out.shape[2], out.shape[3]
    Hq = OH + ((KH - 1) * dh) // sh  # rows of a phase that some tap reads
    Wq = OW + ((KW - 1) * dw) // sw  # columns of a phase that some tap reads
    PQ = Hq * Wq
    L = (OH - 1) * Wq + OW  # flat positions up to the last valid one
    offs = np.empty(KH * KW, np.int64)
    for i in range(KH):
        for j in range(KW):
            phase = ((i * dh) % sh) * sw + (j * dw) % sw
            offs[i * KW + j] = phase * PQ + ((i * dh) // sh) * Wq + (j * dw) // sw
    ntasks = N * K
    nchunks = min(ntasks, CHUNKS)
    # per-chunk scratch, allocated once per call
    planes = np.empty((nchunks, sh * sw * PQ), np.float32)
    sums = np.empty((nchunks, OH * Wq), np.float32)
    for chunk in numba.prange(nchunks):
        call_linked(_depthwise_chunk, ntasks * chunk // nchunks,
                    ntasks * (chunk + 1) // nchunks, planes[chunk], sums[chunk], x, xc0, cin,
                    w, b, out, oc0, sh, sw, pt, pl, act, alpha, beta, offs, Hq, Wq,
                    L)  # fmt: skip


# Called through a symbol (jit.call_linked): conv2d_depthwise's cold compile 9.0 -> 5.3 s
@linked_njit(fastmath=True, error_model="numpy")
def _depthwise_chunk(first, last, xq, acc_buf, x, xc0, cin, w, b, out, oc0, sh, sw, pt, pl,
                     act, alpha, beta, offs, Hq, Wq, L):  # fmt: skip
    """Tasks ``[first, last)`` (``n*K + k``) of conv2d_depthwise (one chunk), with the
    chunk's scratch ``xq`` (the split plane) and ``acc_buf`` (the sums, junk columns and
    all)."""
    K, _, KH, KW = w.shape
    OH, OW = out.shape[2], out.shape[3]
    mult = K // cin
    split_of = -1  # the (image, input channel) whose plane xq holds
    for task in range(first, last):
        n = task // K
        k = task - n * K
        if split_of != n * cin + k // mult:  # a multiplier's outputs share one split
            split_of = n * cin + k // mult
            _split_plane(x[n, xc0 + k // mult], xq, sh, sw, Hq, Wq, pt, pl)
        plane = out[n, oc0 + k].reshape(OH * OW)
        acc = plane if Wq == OW else acc_buf
        _sum_taps(xq, offs, w[k, 0].reshape(KH * KW), acc, L, np.float32(b[k]), act,
                  alpha, beta)
        if Wq != OW:
            for oh in range(OH):
                copy_into(plane[oh * OW : (oh + 1) * OW], acc[oh * Wq :])


@numba.njit(fastmath=True, inline="always", error_model="numpy")
def _split_plane(src, xq, sh, sw, Hq, Wq, pt, pl):
    """Write the zero-padded ``src`` (H, W) into ``xq`` as ``sh*sw`` phase planes of ``Hq``
    x ``Wq``: cell ``(r, q)`` of phase ``(ph, pw)`` is padded cell ``(r*sh+ph, q*sw+pw)``."""
    H, W = src.shape
    PQ = Hq * Wq
    for ph in range(sh):
        r_lo, r_hi = output_range(pt - ph, sh, H, Hq)
        for pw in range(sw):
            base = (ph * sw + pw) * PQ
            q_lo, q_hi = output_range(pl - pw, sw, W, Wq)
            xq[base : base + r_lo * Wq] = 0.0
            xq[base + r_hi * Wq : base + PQ] = 0.0
            for r in range(r_lo, r_hi):
                row = xq[base + r * Wq : base + (r + 1) * Wq]
                line = src[r * sh + ph - pt]
                row[:q_lo] = 0.0
                row[q_hi:] = 0.0
                first = q_lo * sw + pw - pl  # input column of phase column q_lo
                if sw == 1:
                    copy_into(row[q_lo:q_hi], line[first:])
                else:
                    for q in range(q_hi - q_lo):
                        row[q_lo + q] = line[first + q * sw]


@numba.njit(fastmath=True, inline="always", error_model="numpy")
def _sum_taps(xq, offs, wk, acc, L, bias, act, alpha, beta):
    """``acc[p] = act(bias + sum_t wk[t] * xq[p + offs[t]])`` for ``p < L``, in blocks of
    ``BLOCK`` positions (each tap one vectorised pass over a block in L1)."""
    for p0 in range(0, L, BLOCK):
        p1 = min(p0 + BLOCK, L)
        block = acc[p0:p1]
        first = xq[offs[0] + p0 : offs[0] + p1]
        w0 = wk[0]
        for p in range(p1 - p0):
            block[p] = w0 * first[p]
        for t in range(1, offs.size):
            axpy(block, wk[t], xq[offs[t] + p0 : offs[t] + p1])
        bias_activate_inplace(block, bias, act, alpha, beta)
