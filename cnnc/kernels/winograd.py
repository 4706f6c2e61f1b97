"""Winograd convolution F(m x m, 3 x 3) for 3x3 stride-1 convs (Lavin & Gray, 2016).

Same maths, tensor convention and epilogue as :func:`cnnc.kernels.fastconv.conv2d_packed`
for a 3x3 conv with stride 1, dilation 1 and one group; which convs run it is decided per
layer by ``cnnc.backend.winograd_tile`` (the optimiser's ``winograd`` pass marks them).

The output is cut into ``m x m`` tiles, each computed from an ``(m+2) x (m+2)`` input tile
``d`` as ``Y = A^T [ (G g G^T) * (B^T d B) ] A`` (element-wise product in the middle):
``(m+2)^2`` multiplies per tile and channel pair instead of ``9 m^2`` -- 2.25x fewer for
F(2x2, 3x3), 4x for F(4x4, 3x3). Per channel pair and transform position ``a`` that product
summed over the input channels is a GEMM, so a conv is ``(m+2)^2`` independent GEMMs
``[K x C] x [C x tiles]``, which run on fastconv's register-blocked micro-kernel.

1. Weights are transformed once, at compile time (:func:`pack_winograd_weights`):
   ``U[a] = G g G^T`` for every (k, c), packed ``[a][k_block][c][KT]`` as the micro-kernel
   reads them (K zero-padded to a multiple of ``KT``).
2. Work items are blocks of ``TW`` consecutive tiles (a micro-kernel tile's width; the
   tiles of all images numbered in a row) and, when blocks are few, a share of the output
   channels, so both threads have work. Per item, the input transform: each tile's input
   cells are gathered (zero outside the image: the padding) and transformed with vector
   code across the ``TW`` tiles (``_lincomb``: LLVM vector IR, as the micro-kernel, since
   Numba's own loops over a few lanes do not vectorise) into ``V[a][c][tile]``.
   Channel ``c+1`` is gathered before channel ``c`` is transformed: the transform's vector
   loads of scalar stores just made would stall on store forwarding.
3. ``M[a][k][tile] = sum_c U[a][k][c] V[a][c][tile]``: per ``a`` and k block, one
   micro-kernel call with the channels as its taps.
4. Output transform per output channel, then the store: bias, the residual (fuse-residual)
   and relu in the order conv2d_packed applies them, and the tile's cells inside the
   output written to ``out``. Only no activation and relu: every activation of
   ``bias_activate_inplace`` inlined here cost a third of the kernel's compile time (38 ->
   27 s CPU, cold); the winograd pass leaves convs with other activations on the packed
   kernel.

F(4x4, 3x3)'s transforms have entries up to 8 (A) and 1/24 (G): its float32 error is a few
times that of a direct conv (~4e-6 relative on a 64-channel layer here, against ~1e-7);
F(2x2, 3x3) stays close to direct. docs/kernel-notes.md has the measurements.
"""

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .elementwise import ACT_RELU
from .fastconv import _I64, _VEC, KT, TW, VL, _splat, _uk_full
from .jit import cached_njit

# Lavin & Gray's matrices: B^T (input), G (weights), A^T (output), for m = 4 and m = 2
BT4 = np.array([[4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1]], np.float64)  # fmt: skip
G4 = np.array([[1 / 4, 0, 0],
               [-1 / 6, -1 / 6, -1 / 6],
               [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6],
               [0, 0, 1]], np.float64)  # fmt: skip
AT4 = np.array([[1, 1, 1, 1, 1, 0],
                [0, 1, -1, 2, -2, 0],
                [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], np.float64)  # fmt: skip
BT2 = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G2 = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
AT2 = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)

#: the tile sizes m of F(m x m, 3 x 3) this kernel runs
TILES = (2, 4)
NCHUNK = 8  # static work chunks per call, shared out over the threads by prange


def pack_winograd_weights(w: np.ndarray, m: int) -> np.ndarray:
    """Transform and pack ``(K, C, 3, 3)`` weights for :func:`conv2d_winograd` with tile
    ``m`` (once, at compile time; in float64, rounded once to float32).

    Returns a 1-D float32 array laid out ``[a][k_block][c][KT]``, ``a = i*(m+2) + j`` the
    position in the transformed ``(m+2) x (m+2)`` tile, K zero-padded to a multiple of KT.
    """
    if m not in TILES:
        raise ValueError(f"Winograd tile {m}: the kernel runs m in {TILES}")
    g = G4 if m == 4 else G2
    al = m + 2
    K, C = w.shape[:2]
    u = np.einsum("ai,kcij,bj->abkc", g, np.asarray(w, np.float64), g).reshape(al * al, K, C)
    nkb = -(-K // KT)
    packed = np.zeros((al * al, nkb * KT, C), np.float32)
    packed[:, :K] = u
    packed = packed.reshape(al * al, nkb, KT, C).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(packed).reshape(-1)


# ---------------------------------------------------------------- vector transforms


def _make_lincomb(matrix):
    """An intrinsic ``lc(src, soff, sstride, dst, doff, dstride)``: one vector of ``VL``
    lanes of ``dst[doff + i*dstride + l] = sum_k matrix[i, k] * src[soff + k*sstride + l]``.

    The constant matrix is folded into the code: zeros skipped, ones and minus ones as
    additions and subtractions. ``src`` and ``dst`` are 1-D float32 arrays; no bounds
    checks.
    """
    rows = [[float(v) for v in row] for row in np.asarray(matrix)]

    @intrinsic
    def lc(typingctx, src, soff, sstride, dst, doff, dstride):
        sig = types.void(src, soff, sstride, dst, doff, dstride)

        def codegen(context, builder, sig, args):
            sa = context.make_array(sig.args[0])(context, builder, args[0])
            da = context.make_array(sig.args[3])(context, builder, args[3])
            soff_, sstride_, doff_, dstride_ = args[1], args[2], args[4], args[5]

            def vector_at(data, offset, stride, k):
                index = builder.add(offset, builder.mul(stride, ir.Constant(_I64, k)))
                return builder.bitcast(builder.gep(data, [index]), _VEC.as_pointer())

            loads = [builder.load(vector_at(sa.data, soff_, sstride_, k), align=4)
                     for k in range(len(rows[0]))]  # fmt: skip
            for i, row in enumerate(rows):
                acc = None
                for k, c in enumerate(row):
                    if c == 0.0:
                        continue
                    if c == -1.0 and acc is not None:
                        acc = builder.fsub(acc, loads[k])
                        continue
                    v = loads[k]
                    if c != 1.0:
                        v = builder.fmul(v, _splat(builder, ir.Constant(ir.FloatType(), c)))
                    acc = v if acc is None else builder.fadd(acc, v)
                builder.store(acc, vector_at(da.data, doff_, dstride_, i), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return lc


_bt4 = _make_lincomb(BT4)
_bt2 = _make_lincomb(BT2)
_at4 = _make_lincomb(AT4)
_at2 = _make_lincomb(AT2)


@numba.njit(error_model="numpy")
def _input_transform(m, src, soff, sstride, dst, doff, dstride, lanes):
    """``dst_i = sum_k B^T[i, k] src_k`` (rows ``soff + k*sstride``, ``doff + i*dstride``)
    over ``lanes`` lanes (a multiple of VL)."""
    for q in range(0, lanes, VL):
        if m == 4:
            _bt4(src, soff + q, sstride, dst, doff + q, dstride)
        else:
            _bt2(src, soff + q, sstride, dst, doff + q, dstride)


@numba.njit(error_model="numpy")
def _output_transform(m, src, soff, sstride, dst, doff, dstride, lanes):
    """``dst_i = sum_k A^T[i, k] src_k``, as ``_input_transform``."""
    for q in range(0, lanes, VL):
        if m == 4:
            _at4(src, soff + q, sstride, dst, doff + q, dstride)
        else:
            _at2(src, soff + q, sstride, dst, doff + q, dstride)


@numba.njit(error_model="numpy")
def _gather(xf, cbase, d, ntl, tn, tr, tc, inner, al, H, W, CHW):
    """``d[i*al + j, p] = x[tn[p], c, tr[p] + i, tc[p] + j]`` (0 outside the image) for the
    ``ntl`` tiles of a block; ``xf`` is ``x`` flat, ``cbase`` channel ``c``'s offset in an
    image of ``CHW`` floats, ``inner[p]`` whether tile ``p`` lies inside the image."""
    for p in range(ntl):
        base = tn[p] * CHW + cbase
        r0 = tr[p]
        c0 = tc[p]
        if inner[p]:
            for i in range(al):
                s = base + (r0 + i) * W + c0
                for j in range(al):
                    d[i * al + j, p] = xf[s + j]
        else:
            for i in range(al):
                row = r0 + i
                for j in range(al):
                    col = c0 + j
                    if 0 <= row < H and 0 <= col < W:
                        d[i * al + j, p] = xf[base + row * W + col]
                    else:
                        d[i * al + j, p] = 0.0


# ---------------------------------------------------------------- conv2d_winograd


# LLVM at -O2: the kernel's inner loops are explicit vector IR (the micro-kernel and the
# transforms), which -O3's further passes do not speed up (two 64-channel layers at 56x56:
# 9.5-11.5 ms at -O3, 11.1-11.7 at -O2, batch 1; 35.5 and 33-37 ms at batch 8, noisy),
# while they cost its cold compile 19.8 -> 12.2 s.
@cached_njit(llvm_opt=2, parallel=True, error_model="numpy")
def conv2d_winograd(x, xc0, cin, out, oc0, K, upk, bias, m, pt, pl, act, alpha, res, rc0):
    """``out[:, oc0:oc0+K] = act(conv3x3(x[:, xc0:xc0+cin], w) + bias [+ res[:, rc0:rc0+K]])``
    by Winograd F(m x m, 3 x 3), stride 1.

    As :func:`cnnc.kernels.fastconv.conv2d_packed` (arguments, padding ``pt, pl`` with the
    bottom/right padding what ``out``'s shape implies, the residual when ``rc0 >= 0``), with
    ``upk = pack_winograd_weights(w, m)``, ``m`` 2 or 4, and ``act`` ``ACT_NONE`` or
    ``ACT_RELU`` only (``alpha`` unused).
    See the module docstring for the algorithm.
    """
    N, Cx, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    al = m + 2
    a2 = al * al
    th = (OH + m - 1) // m
    tw = (OW + m - 1) // m
    per_image = th * tw
    ntiles = N * per_image
    nblocks = (ntiles + TW - 1) // TW
    nkb = (K + KT - 1) // KT
    kpad = nkb * KT
    # few blocks (a small plane): each is split over k blocks too, so that every thread
    # has work (each share transforms the block's input again)
    nks = min(nkb, max(1, (8 + nblocks - 1) // nblocks))
    nitems = nblocks * nks
    # a chunk's scratch holds a block's whole transformed input and output (L2-sized), so
    # there are few chunks, allocated once per call (numba.get_num_threads() would make
    # the kernel uncacheable: a ctypes pointer)
    nchunks = min(nitems, NCHUNK)
    offs = np.empty(cin, np.int64)  # the micro-kernel's taps: the input channels of V[a]
    for c in range(cin):
        offs[c] = c * TW
    xf = x.reshape(x.size)
    # every scratch array is allocated here, none in the parallel loop: array expressions
    # there become nested parallel loops, which doubled the kernel's compile time
    vbuf = np.empty((nchunks, a2 * cin * TW), np.float32)
    mbuf = np.empty((nchunks, a2 * kpad * TW), np.float32)
    gbuf = np.empty((nchunks, 2, a2, TW), np.float32)  # gathered input cells, two channels
    ebuf = np.empty((nchunks, a2 * TW), np.float32)
    ybuf = np.empty((nchunks, m * m * TW), np.float32)
    tbuf = np.empty((nchunks, 3, TW), np.int64)  # each tile's image, top row, left column
    ibuf = np.empty((nchunks, TW), np.bool_)  # whether the tile lies inside the image
    for chunk in numba.prange(nchunks):
        _winograd_chunk(nitems * chunk // nchunks, nitems * (chunk + 1) // nchunks,
                        vbuf[chunk], mbuf[chunk], gbuf[chunk], ebuf[chunk], ybuf[chunk],
                        tbuf[chunk], ibuf[chunk], xf, xc0, cin, Cx, H, W, out, oc0, K, upk,
                        bias, m, pt, pl, act, res, rc0, offs, per_image, tw, ntiles, nks,
                        nkb, kpad, OH, OW)


# Not inlined: the prange loop above only calls this, so Numba's parallel passes (which
# copy and analyse the loop body several times) see one call (as fastconv._conv_chunk).
@numba.njit(error_model="numpy")
def _winograd_chunk(first, last, V, M, gathered, e, y, tiles, inner, xf, xc0, cin, Cx, H, W,
                    out, oc0, K, upk, bias, m, pt, pl, act, res, rc0, offs, per_image, tw,
                    ntiles, nks, nkb, kpad, OH, OW):  # fmt: skip
    """Work items ``[first, last)`` of conv2d_winograd (one chunk)."""
    al = m + 2
    a2 = al * al
    HW = H * W
    tn = tiles[0]
    tr = tiles[1]
    tc = tiles[2]
    for q in range(TW):  # lanes past a block's tiles must hold zeros (finite junk)
        for a in range(a2):
            gathered[0, a, q] = 0.0
            gathered[1, a, q] = 0.0
    for item in range(first, last):
        blk = item // nks
        share = item - blk * nks
        kb0 = nkb * share // nks
        kb1 = nkb * (share + 1) // nks
        p0 = blk * TW
        ntl = min(TW, ntiles - p0)
        lanes = (ntl + VL - 1) // VL * VL
        for p in range(ntl):
            t = p0 + p
            n = t // per_image
            ty = (t - n * per_image) // tw
            tn[p] = n
            tr[p] = ty * m - pt
            tc[p] = (t - n * per_image - ty * tw) * m - pl
            inner[p] = tr[p] >= 0 and tc[p] >= 0 and tr[p] + al <= H and tc[p] + al <= W
        for p in range(ntl, TW):  # a partial block: the lanes past it
            for a in range(a2):
                gathered[0, a, p] = 0.0
                gathered[1, a, p] = 0.0
        # input transform: V[a, c, p]
        _gather(xf, xc0 * HW, gathered[0], ntl, tn, tr, tc, inner, al, H, W, Cx * HW)
        for c in range(cin):
            if c + 1 < cin:
                _gather(xf, (xc0 + c + 1) * HW, gathered[(c + 1) & 1], ntl, tn, tr, tc,
                        inner, al, H, W, Cx * HW)  # fmt: skip
            d = gathered[c & 1].reshape(a2 * TW)
            for j in range(al):  # columns: e[i*al + j] = sum_k BT[i, k] d[k*al + j]
                _input_transform(m, d, j * TW, al * TW, e, j * TW, al * TW, lanes)
            for i in range(al):  # rows: V[i*al + l, c] = sum_j BT[l, j] e[i*al + j]
                _input_transform(m, e, i * al * TW, TW, V, (i * al * cin + c) * TW,
                                 cin * TW, lanes)  # fmt: skip
        # the GEMMs: M[a, k, p] = sum_c U[a, k, c] V[a, c, p]
        for a in range(a2):
            for kb in range(kb0, kb1):
                _uk_full(V, a * cin * TW, offs, cin, upk, (a * nkb + kb) * cin * KT,
                         M[(a * kpad + kb * KT) * TW :])
        # output transform, epilogue and store, channel by channel
        for k in range(kb0 * KT, min(kb1 * KT, K)):
            for i in range(al):  # e[i*m + j] = sum_l AT[j, l] M[i*al + l, k]
                _output_transform(m, M, (i * al * kpad + k) * TW, kpad * TW, e, i * m * TW,
                                  TW, lanes)  # fmt: skip
            for j in range(m):  # y[i*m + j] = sum_l AT[i, l] e[l*m + j]
                _output_transform(m, e, j * TW, m * TW, y, j * TW, m * TW, lanes)
            b = bias[k]
            if rc0 >= 0:  # (conv + bias) + skip, then the activation (below)
                for p in range(ntl):
                    for i in range(m):
                        oh = tr[p] + pt + i
                        for j in range(m):
                            ow = tc[p] + pl + j
                            if oh < OH and ow < OW:
                                q = (i * m + j) * TW + p
                                y[q] = (y[q] + b) + res[tn[p], rc0 + k, oh, ow]
                b = np.float32(0.0)
            if act == ACT_RELU:  # as bias_activate_inplace, for the two it may get
                for q in range(y.size):
                    y[q] = max(y[q] + b, np.float32(0.0))
            else:
                for q in range(y.size):
                    y[q] += b
            for p in range(ntl):
                for i in range(m):
                    oh = tr[p] + pt + i
                    if oh < OH:
                        row = out[tn[p], oc0 + k, oh]
                        for j in range(m):
                            ow = tc[p] + pl + j
                            if ow < OW:
                                row[ow] = y[(i * m + j) * TW + p]
