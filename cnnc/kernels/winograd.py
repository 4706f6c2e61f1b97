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
2. The input is split into its ``m`` column phases (``_split_columns_task``, zero padding
   written in): in that layout the input cell ``(i, j)`` of ``SV`` tiles side by side in a
   tile row is ``SV`` consecutive floats, one vector load. Each thread splits the rows of
   the blocks it takes into a buffer of its own (``_split_for_block``); a plane of fewer
   F(4x4) blocks than threads, and any plane on more than two threads, is split once for
   all, the first phase of the kernel's parallel region.
3. Tiles are numbered in *slots*: each tile row takes ``twp`` slots, its ``tw`` tiles
   rounded up to whole vectors, so a vector of ``SV`` slots never spans two rows (the
   spare slots compute junk that is never stored) -- but rows of at most ``SV/2`` tiles
   take half a vector each, two rows a vector (a 7x7 plane with F(2x2), a 14x14 one with
   F(4x4): 16 slots, not 32). Work items are blocks of ``TW`` consecutive slots (a
   micro-kernel tile's width; the GEMMs multiply only the vectors of a block that hold
   tiles) and, when blocks are few, a share of the output channels, so every thread has work
   (``ITEMS_PER_THREAD``).
4. Per item, the input transform ``V[a][c][slot]``: ``d B`` along the rows straight from
   the phase-split input, then ``B^T (.)`` down the columns, in registers, a vector of
   ``SV`` slots at a time (``_make_transform_2d``: LLVM vector IR, as the micro-kernel,
   since Numba's own loops over a few lanes do not vectorise; the transforms as programs
   that share sums between rows, ``BT4_STEPS``). A thread transforms a block once for all
   its items of it (k shares); a plane split once for all is transformed once for all too,
   in a phase of its own before the items (``_transform_chunk``).
5. ``M[k][a][slot] = sum_c U[a][k][c] V[a][c][slot]``: per ``a`` and k block, one
   micro-kernel call with the channels as its taps (``_uk_rows``), its rows stored so that
   one output channel's ``(m+2)^2`` rows are contiguous for the output transform.
6. Output transform per output channel (``A^T M A`` in registers, into a small scratch of
   ``m*m`` vectors), then the epilogue and store (``_make_store``): for
   the ``SV`` tiles of a vector, each output row they cover is one run of ``SV*m`` cells,
   interleaved from the tiles' columns with vector shuffles and written with one store (a
   row's last run: only its cells, ``store_prefix``), with bias, the residual
   (fuse-residual) and relu applied in the order conv2d_packed applies them. Only no
   activation and relu: every activation of ``bias_activate_inplace`` inlined here cost a
   third of the kernel's compile time (38 -> 27 s CPU, cold); the winograd pass leaves convs
   with other activations on the packed kernel.

F(4x4, 3x3)'s transforms have entries up to 8 (A) and 1/24 (G): its float32 error is a few
times that of a direct conv (~4e-6 relative on a 64-channel layer here, against ~1e-7);
F(2x2, 3x3) stays close to direct. docs/kernel-notes.md has the measurements.
"""

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .elementwise import ACT_RELU
from .fastconv import (
    _I32,
    _I64,
    KT,
    VL,
    VN,
    _emit_tile,
    _splat,
    _store_rows,
    masked_load,
    store_prefix,
)
from .jit import cached_njit, call_linked, linked_njit
from .sched import (
    count_done,
    next_chunk,
    num_threads,
    prefetch_for_write,
    take_chunk,
    wait_done,
    zeroed,
)

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
NCHUNK = 8  # scratch sets (prange iterations) per call; the items go to threads as they ask
#: A plane of few blocks of slots is split over k blocks too, into about this many work
#: items per thread (measured when each share transformed the block's input again; with
#: the transform shared, 4 against 2 was even: 0.97-1.03x, AVX2). Against 8 items
#: whatever the threads, one conv at batch 1, AVX-512 (1 / 2 threads): 3x3 128->128 at
#: 28x28 1.15 / 1.16x, 256->256 at 14x14 1.12 / 1.11x, 48->192 at 13x13 1.09 / 1.05x,
#: 512->512 at 7x7 1.19 / 1.16x; one item per thread gained more on one thread (1.12-1.28x)
#: but lost balance on two (28x28: 2 blocks of 32 and 24 slots, 1.30 ms on 2 threads
#: against 1.39 on one).
ITEMS_PER_THREAD = 2
#: input channels a work item of the shared input transform takes (conv2d_winograd)
TRANSFORM_CHANNELS = 16
#: Slots a transform and a store handle at once (a vector of them), and so the multiple
#: each tile row's slots are rounded up to: at most 8, not AVX-512's 16. Common planes
#: have rows of 7 tiles (28x28 with F(4x4), 14x14 with F(2x2)), which filled 7 slots of
#: 16; in 8-float vectors (ymm, which AVX-512 CPUs have too) they fill 7 of 8. AVX-512
#: host, 2 threads, batch 1, 8 against 16 (separate processes, twice): 3x3 128->128 at
#: 28x28 1.7-1.9x, 256->256 at 14x14 1.1-1.4x, 96->208 at 14x14 1.7x, 64->64 at 56x56
#: 1.3-1.8x, 64->192 at 56x56 0.95-1.02x.
SV = min(VL, 8)
#: The GEMMs' micro-kernel tile: fastconv's ``KT`` channels, but at most 32 slots wide
#: (``WVN`` vectors), so that batch 1's few blocks of slots waste little: a 28x28 F(4x4)
#: layer has 56 slots, 2 blocks of 32 or 2 of 48 (40 junk). AVX-512 host, 2 threads,
#: batch 1, 32 against 48 (separate processes, twice; the machine swung 1.5x): GoogLeNet
#: 18.2 vs 20.0 ms, ResNet-18 19.0 vs 23.4, SqueezeNet 5.5 vs 6.7 (fastest medians).
WVN = min(VN, max(1, 32 // VL))
TW = WVN * VL  # slots a block (a work item)
#: The GEMMs' taps prefetch the weights this many floats (4 KiB) ahead in layers of at
#: least PREFETCH_MIN_CHANNELS input channels: those stream megabytes of transformed
#: weights through each call. One conv against no prefetch, 1 / 2 threads: AVX-512, 3x3
#: 512->512 at 7x7 1.34 / 1.25x at batch 1, 1.16 / 1.18x at batch 8, at 14x14 1.19 /
#: 1.22x; AVX2 (CNNC_TARGET=avx2, same host) at 7x7 1.31 / 1.27x, 1.27 / 1.32x. With 256
#: input channels or fewer it was even on both (0.94-1.08x), and so was prefetching in
#: fastconv's packed kernel (1x1 512->1000 at 13x13, the 7x7/2 stem: 0.98-1.02x). But a
#: lone conv's weights stay in L3 from call to call, a network's do not (ResNet-18's
#: transformed weights are ~80 MB): from 64 input channels rather than 512, whole networks,
#: 2 threads, interleaved, near / far vCPUs: ResNet-18 1.043 / 1.034x (its 14x14 F(4x4)
#: layers, 9.4 MB of weights each, were waiting on memory), GoogLeNet 1.028 / 1.025x,
#: SqueezeNet 0.998 / 1.005x, CIFAR inception 0.993 / 1.000x; from 128 ResNet-18 1.034 /
#: 1.024x; 8 KiB ahead no better than 4
WEIGHT_AHEAD = 1024
PREFETCH_MIN_CHANNELS = 64
_SVEC = ir.VectorType(ir.FloatType(), SV)


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


# The transforms as programs of a few steps, each ``name = sum of coef * operand`` over the
# inputs ``a0, a1, ...``, earlier steps and the outputs ``r0, r1, ...`` (one a row of the
# matrix): F(4x4)'s matrices share sums between their rows, so B^T takes 12 vector
# operations this way, not 28 row by row, and A^T 10, not 20 (coefficients other than
# +-1 are multiply-adds). tests/test_winograd.py checks each program against its matrix.
BT4_STEPS = (
    ("t1", ((1, "a4"), (-4, "a2"))),
    ("t2", ((1, "a3"), (-4, "a1"))),
    ("t3", ((1, "a4"), (-1, "a2"))),
    ("t4", ((1, "a3"), (-1, "a1"))),
    ("r0", ((1, "a4"), (4, "a0"), (-5, "a2"))),
    ("r1", ((1, "t1"), (1, "t2"))),
    ("r2", ((1, "t1"), (-1, "t2"))),
    ("r3", ((1, "t3"), (2, "t4"))),
    ("r4", ((1, "t3"), (-2, "t4"))),
    ("r5", ((1, "a5"), (4, "a1"), (-5, "a3"))),
)
AT4_STEPS = (
    ("s1", ((1, "a1"), (1, "a2"))),
    ("d1", ((1, "a1"), (-1, "a2"))),
    ("s2", ((1, "a3"), (1, "a4"))),
    ("d2", ((1, "a3"), (-1, "a4"))),
    ("r0", ((1, "a0"), (1, "s1"), (1, "s2"))),
    ("r1", ((1, "d1"), (2, "d2"))),
    ("r2", ((1, "s1"), (4, "s2"))),
    ("r3", ((1, "a5"), (1, "d1"), (8, "d2"))),
)


def matrix_steps(matrix):
    """The program of ``matrix`` row by row: ``r_i = sum_k matrix[i, k] a_k`` (nonzeros
    only, a +1 coefficient first where the row has one)."""
    steps = []
    for i, row in enumerate(np.asarray(matrix)):
        terms = [(float(c), f"a{k}") for k, c in enumerate(row) if c != 0]
        terms.sort(key=lambda t: t[0] != 1.0)
        steps.append((f"r{i}", tuple(terms)))
    return tuple(steps)


def _outputs(steps):
    """How many outputs (``r0, r1, ...``) a transform program has."""
    return sum(1 for name, _ in steps if name.startswith("r"))


def run_steps(steps, inputs):
    """The outputs ``[r0, r1, ...]`` of a transform program on ``inputs`` (a list of
    arrays or numbers): the reference the tests check programs with."""
    env = {f"a{k}": v for k, v in enumerate(inputs)}
    for name, terms in steps:
        env[name] = sum(c * env[src] for c, src in terms)
    return [env[f"r{i}"] for i in range(_outputs(steps))]


def _emit_steps(builder, steps, inputs):
    """The IR of a transform program (above) on the ``_SVEC`` values ``inputs``: its
    outputs ``[r0, r1, ...]``. Coefficients +-1 are additions and subtractions, others
    ``llvm.fmuladd`` (one fused instruction where the CPU has FMA)."""
    fmuladd = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_SVEC, [_SVEC] * 3), f"llvm.fmuladd.v{SV}f32")
    def coef(c):
        return _splat(builder, ir.Constant(ir.FloatType(), c), SV)

    env = {f"a{k}": v for k, v in enumerate(inputs)}
    for name, terms in steps:
        acc = None
        for c, src in terms:
            v = env[src]
            if acc is None:
                acc = v if c == 1 else builder.fmul(v, coef(c))
            elif c == 1:
                acc = builder.fadd(acc, v)
            elif c == -1:
                acc = builder.fsub(acc, v)
            else:
                acc = builder.call(fmuladd, [v, coef(c), acc])
        env[name] = acc
    return [env[f"r{i}"] for i in range(_outputs(steps))]


def _make_transform_2d(steps, n, split=False, halves=False):
    """An intrinsic computing one vector of ``SV`` lanes of the two-sided transform ``Y =
    P X P^T`` of an ``n x n`` block, ``P`` the matrix of the program ``steps`` (``m``
    outputs), along the rows, then down the columns, in registers (the output transform's
    two passes through a scratch took ~60 of 316 us of a 16->64 F(4x4) layer at 55x55,
    docs/kernel-notes.md, twenty-fifth session); ``Y[i][j]`` is stored at
    ``dst[doff + (i*m + j) * dstride]``. No bounds checks. The block ``X``:

    * ``t2(src, soff, sstride, dst, doff, dstride)``: ``X[i][l] = src[soff + (i*n + l) *
      sstride]`` (the output transform, of the GEMMs' rows);
    * with ``split``, ``t2(src, soff, rstride, plane, dst, doff, dstride)``: ``X[k][j] =
      src[soff + k*rstride + (j % p) * plane + j // p]``, ``p = n - 2`` (the input
      transform, of the input split into the tile's ``p`` column phases); with ``halves``
      also, ``t2(src, soff, soff2, rstride, plane, dst, doff, dstride)``: lanes ``SV/2``
      and up from ``soff2`` (two tile rows in one vector).
    """
    half = ir.VectorType(ir.FloatType(), SV // 2)
    both = ir.Constant(ir.VectorType(_I32, SV), list(range(SV)))
    phases = n - 2

    def emit(context, builder, sig, args):
        na = len(args)
        sa = context.make_array(sig.args[0])(context, builder, args[0])
        da = context.make_array(sig.args[na - 3])(context, builder, args[na - 3])
        soff_, doff_, dstride_ = args[1], args[na - 2], args[na - 1]

        def ptr(data, index, vtype=_SVEC):
            return builder.bitcast(builder.gep(data, [index]), vtype.as_pointer())

        def const(v):
            return ir.Constant(_I64, v)

        def load(i, j):
            if not split:
                return builder.load(ptr(sa.data, builder.add(soff_, builder.mul(
                    args[2], const(i * n + j)))), align=4)  # fmt: skip
            rstride, plane = args[na - 5], args[na - 4]
            rel = builder.add(builder.add(builder.mul(rstride, const(i)),
                                          builder.mul(plane, const(j % phases))),
                              const(j // phases))  # fmt: skip
            if not halves:
                return builder.load(ptr(sa.data, builder.add(soff_, rel)), align=4)
            lo = builder.load(ptr(sa.data, builder.add(soff_, rel), half), align=4)
            hi = builder.load(ptr(sa.data, builder.add(args[2], rel), half), align=4)
            return builder.shuffle_vector(lo, hi, both)

        rows = [_emit_steps(builder, steps, [load(i, j) for j in range(n)]) for i in range(n)]
        m = len(rows[0])
        for j in range(m):
            for i, v in enumerate(_emit_steps(builder, steps, [row[j] for row in rows])):
                builder.store(v, ptr(da.data, builder.add(doff_, builder.mul(
                    dstride_, const(i * m + j)))), align=4)  # fmt: skip
        return context.get_dummy_value()

    if halves:
        @intrinsic
        def t2_halves(typingctx, src, soff, soff2, rstride, plane, dst, doff, dstride):
            return types.void(src, soff, soff2, rstride, plane, dst, doff, dstride), emit

        return t2_halves
    if split:
        @intrinsic
        def t2_phases(typingctx, src, soff, rstride, plane, dst, doff, dstride):
            return types.void(src, soff, rstride, plane, dst, doff, dstride), emit

        return t2_phases

    @intrinsic
    def t2(typingctx, src, soff, sstride, dst, doff, dstride):
        return types.void(src, soff, sstride, dst, doff, dstride), emit

    return t2


_bt4_2d = _make_transform_2d(BT4_STEPS, 6, split=True)
_bt2_2d = _make_transform_2d(matrix_steps(BT2), 4, split=True)
_bt4_2d_halves = _make_transform_2d(BT4_STEPS, 6, split=True, halves=True)
_bt2_2d_halves = _make_transform_2d(matrix_steps(BT2), 4, split=True, halves=True)
_at4_2d = _make_transform_2d(AT4_STEPS, 6)
_at2_2d = _make_transform_2d(matrix_steps(AT2), 4)


def _make_uk_rows(vn):
    """An intrinsic ``uk(x, xoff, offs, ntap, w, woff, dst, doff, dstride, ahead)``:
    fastconv's micro-kernel, a ``KT x VL*vn`` tile, its ``KT`` rows stored ``dstride``
    apart: ``dst[doff + k*dstride + VL*v : +VL] = acc[k][v]`` (``_emit_tile``), each tap
    prefetching the weights ``ahead`` floats on. No bounds checks."""

    @intrinsic
    def uk(typingctx, x, xoff, offs, ntap, w, woff, dst, doff, dstride, ahead):
        sig = types.void(x, xoff, offs, ntap, w, woff, dst, doff, dstride, ahead)

        def codegen(context, builder, sig, args):
            xa, oa, wa, da = [context.make_array(sig.args[i])(context, builder, args[i])
                              for i in (0, 2, 4, 6)]  # fmt: skip
            acc = _emit_tile(context, builder, xa, args[1], oa, args[3], wa, args[5], vn,
                             args[9])
            _store_rows(builder, acc, da.data, args[7], args[8])
            return context.get_dummy_value()

        return sig, codegen

    return uk


# A block's GEMMs use only the vectors of slots that hold tiles: a small plane at batch 1
# (7x7 with F(2x2): 16 slots) fills one of AVX-512's two. Tiles of 1..WVN vectors (WVN is
# at most 3 on every target; the names past WVN repeat the widest).
_UK_ROWS = [_make_uk_rows(v) for v in range(1, WVN + 1)]
_uk_rows_1, _uk_rows_2, _uk_rows_3 = (_UK_ROWS[min(v, WVN) - 1] for v in (1, 2, 3))


def _make_store(m, sv=SV):
    """An intrinsic ``st(y, yoff, ystride, out, ooff, b, res, roff, relu, ncols)``: the
    Winograd epilogue of ``sv`` tiles side by side in a tile row. The ``m`` vectors
    ``y_j = y[yoff + j*ystride : +sv]`` (column ``j`` of each tile's output row) are
    interleaved into the ``sv*m`` consecutive cells of the output row they cover:

        out[ooff + t*m + j] = act((y_j[t] + b) [+ res[roff + t*m + j]])   (t*m + j < ncols)

    the residual added when ``roff >= 0``, relu when ``relu != 0`` (``v if v > 0 else 0``,
    as conv2d_packed's store), only the first ``ncols`` cells read and written (a masked
    load and ``store_prefix``: a row's last tiles may pass its end; a plain store when all
    ``sv*m`` cells are in). No bounds checks.
    """
    width = sv * m
    wide = ir.VectorType(ir.FloatType(), width)
    wptr = wide.as_pointer()
    svec = ir.VectorType(ir.FloatType(), sv)
    # y_0 .. y_{m-1} concatenated is w[j*sv + t]; the cells want t*m + j
    order = ir.Constant(ir.VectorType(_I32, width), [j * sv + t for t in range(sv)
                                                      for j in range(m)])  # fmt: skip

    @intrinsic
    def st(typingctx, y, yoff, ystride, out, ooff, b, res, roff, relu, ncols):
        sig = types.void(y, yoff, ystride, out, ooff, b, res, roff, relu, ncols)

        def codegen(context, builder, sig, args):
            ya, oa, ra = [context.make_array(sig.args[i])(context, builder, args[i])
                          for i in (0, 3, 6)]  # fmt: skip
            yoff_, ystride_, ooff_, b_, roff_, relu_, ncols_ = args[1:3] + args[4:6] + args[7:]
            lanes = ir.Constant(ir.VectorType(_I64, width), list(range(width)))
            mask = builder.icmp_signed("<", lanes, _splat(builder, ncols_, width))
            vs = []
            for j in range(m):
                index = builder.add(yoff_, builder.mul(ystride_, ir.Constant(_I64, j)))
                vs.append(builder.load(builder.bitcast(builder.gep(ya.data, [index]),
                                                       svec.as_pointer()), align=4))  # fmt: skip
            while len(vs) > 1:  # concatenate pairwise
                n = 2 * vs[0].type.count
                both = ir.Constant(ir.VectorType(_I32, n), list(range(n)))
                vs = [builder.shuffle_vector(vs[i], vs[i + 1], both)
                      for i in range(0, len(vs), 2)]  # fmt: skip
            val = builder.shuffle_vector(vs[0], vs[0], order)
            val = builder.fadd(val, _splat(builder, b_, width))
            # the residual: its load behind a branch (with roff < 0, res may be any array)
            before = builder.basic_block
            with builder.if_then(builder.icmp_signed(">=", roff_, ir.Constant(_I64, 0))):
                skip = masked_load(builder, builder.gep(ra.data, [roff_]), mask,
                                   ir.Constant(wide, None))  # fmt: skip
                added = builder.fadd(val, skip)
                with_res = builder.basic_block
            phi = builder.phi(wide)
            phi.add_incoming(val, before)
            phi.add_incoming(added, with_res)
            zero = ir.Constant(wide, None)
            use_relu = builder.icmp_signed("!=", relu_, ir.Constant(relu_.type, 0))
            relued = builder.select(builder.fcmp_ordered(">", phi, zero), phi, zero)
            val = builder.select(use_relu, relued, phi)
            optr = builder.bitcast(builder.gep(oa.data, [ooff_]), wptr)
            # a whole run takes a plain store: AMD's masked stores are slow (a segment copy
            # through them took 2.5x a loop's time); F(4x4) layers 1.5-10% faster so
            whole = builder.icmp_signed(">=", ncols_, ir.Constant(ncols_.type, width))
            with builder.if_else(whole) as (run, part):
                with run:
                    builder.store(val, optr, align=4)
                with part:
                    if width <= 8:
                        store_prefix(builder, val, builder.gep(oa.data, [ooff_]), ncols_)
                    else:  # the whole 8-lane pieces plain, the one the row ends in by prefix
                        # (2 threads, interleaved: F(4x4) at 14x14 1.02x, 13x13 1.07x,
                        # 55x55 1.03x)
                        piece = ir.VectorType(ir.FloatType(), 8)
                        for c in range(0, width, 8):
                            sub = builder.shuffle_vector(val, val, ir.Constant(
                                ir.VectorType(_I32, 8), list(range(c, c + 8))))
                            cell = builder.gep(oa.data, [builder.add(ooff_, ir.Constant(_I64, c))])
                            pptr = builder.bitcast(cell, piece.as_pointer())
                            full = builder.icmp_signed(">=", ncols_,
                                                       ir.Constant(ncols_.type, c + 8))
                            some = builder.icmp_signed(">", ncols_, ir.Constant(ncols_.type, c))
                            with builder.if_else(full) as (p_run, p_part):
                                with p_run:
                                    builder.store(sub, pptr, align=4)
                                with p_part:
                                    with builder.if_then(some):
                                        store_prefix(builder, sub, cell, builder.sub(
                                            ncols_, ir.Constant(ncols_.type, c)))
            return context.get_dummy_value()

        return sig, codegen

    return st


_store4 = _make_store(4)
_store2 = _make_store(2)
# the tile rows of a plane at most SV/2 tiles wide
_store2_half = _make_store(2, SV // 2)
_store4_half = _make_store(4, SV // 2)


def _make_deinterleave(m):
    """An intrinsic ``di(xf, s, c0, cend, xq, d, plane)``: ``xq[d + ph*plane + u] = xf[s + c0
    + m*u + ph]`` for ``u < SV`` and every phase ``ph < m``, 0 where the column ``c0 + m*u +
    ph`` is outside ``[0, cend)`` -- ``m`` vector loads of an image row (masked at its
    ends) taken apart into its ``m`` column phases with shuffles, one vector store each.
    No bounds checks."""
    width = m * SV
    iota = ir.Constant(ir.VectorType(_I32, SV), list(range(SV)))

    def emit(context, builder, sig, args):
        xa = context.make_array(sig.args[0])(context, builder, args[0])
        qa = context.make_array(sig.args[4])(context, builder, args[4])
        s, c0, cend, d, plane = args[1], args[2], args[3], args[5], args[6]
        start = builder.add(s, c0)
        size = xa.nitems  # floats in xf

        def at(data, index):
            return builder.bitcast(builder.gep(data, [index]), _SVEC.as_pointer())

        def split(parts):
            while len(parts) > 2:  # whole vectors of 2*SV lanes, the shuffles pick from two
                n = 2 * parts[0].type.count
                pick = ir.Constant(ir.VectorType(_I32, n), list(range(n)))
                parts = [builder.shuffle_vector(parts[k], parts[k + 1], pick)
                         for k in range(0, len(parts), 2)]  # fmt: skip
            assert 2 * parts[0].type.count == width
            for ph in range(m):
                pick = ir.Constant(ir.VectorType(_I32, SV), [ph + m * i for i in range(SV)])
                vec = builder.shuffle_vector(parts[0], parts[1], pick)
                dst = builder.add(d, builder.mul(plane, ir.Constant(_I64, ph)))
                builder.store(vec, at(qa.data, dst), align=4)

        def ptr(k):  # the float pointer of load k
            return builder.gep(xa.data, [builder.add(start, ir.Constant(_I64, k * SV))])

        def load(k):
            return builder.load(builder.bitcast(ptr(k), _SVEC.as_pointer()), align=4)

        def keep(k):  # the lanes of load k inside the row's columns [0, cend)
            col = builder.add(_splat(builder, builder.trunc(builder.add(
                c0, ir.Constant(_I64, k * SV)), _I32), SV), iota)  # fmt: skip
            return builder.and_(
                builder.icmp_signed(">=", col, _splat(builder, ir.Constant(_I32, 0), SV)),
                builder.icmp_signed("<", col, _splat(builder, builder.trunc(cend, _I32), SV)))

        zero = ir.Constant(_I64, 0)
        zeros = ir.Constant(_SVEC, None)
        end = builder.add(c0, ir.Constant(_I64, width))
        inside = builder.and_(builder.icmp_signed(">=", c0, zero),
                              builder.icmp_signed("<=", end, cend))
        # a row's end: plain loads where they stay inside the array, the lanes outside the
        # row then zeroed (a select); masked loads at the array's two ends only
        in_array = builder.and_(builder.icmp_signed(">=", start, zero), builder.icmp_signed(
            "<=", builder.add(start, ir.Constant(_I64, width)), size))  # fmt: skip
        with builder.if_else(inside) as (plain, edge):
            with plain:
                split([load(k) for k in range(m)])
            with edge:
                with builder.if_else(in_array) as (selected, masked):
                    with selected:
                        split([builder.select(keep(k), load(k), zeros) for k in range(m)])
                    with masked:
                        split([masked_load(builder, ptr(k), keep(k), zeros) for k in range(m)])
        return context.get_dummy_value()

    @intrinsic
    def di(typingctx, xf, s, c0, cend, xq, d, plane):
        return types.void(xf, s, c0, cend, xq, d, plane), emit

    return di


_deinterleave4 = _make_deinterleave(4)
_deinterleave2 = _make_deinterleave(2)
#: column-split tasks a thread, each a run of planes (``_split_columns_task``)
SPLIT_TASKS_PER_THREAD = 4


# Called through a symbol (jit.call_linked): ~1 s less of conv2d_winograd's cold compile
@linked_njit(llvm_opt=2, error_model="numpy")
def _split_columns_task(q0, q1, r0, r1, xf, Cx, H, W, xc0, cin, xq, m, Hr, U, pt, pl):
    """``xq[n, c, ph, r, u] = xpad[n, xc0+c, r, m*u + ph]`` (0 in the padding) for the planes
    ``q = (n, c)`` in ``[q0, q1)``: the zero-padded input (``pt`` rows on top, ``pl``
    columns on the left) split into its ``m`` column phases, each ``Hr`` rows of ``U``
    columns (``_phase_plane`` floats apart). Tile ``(ty, tx)``'s input cell ``(i, j)`` is
    then ``xq[n, c, j % m, m*ty + i, tx + j // m]``: for ``SV`` tiles side by side in a tile
    row, ``SV`` consecutive floats -- one vector load, no gather. Each image row's ``SV``
    columns of every phase at a time taken apart in vector code (``_make_deinterleave``),
    straight from the image. Before, each row was copied into a padded row first, whose
    loads then spanned two of the copy's stores (a store-forwarding stall each), and its
    phases split a cell at a time, and each plane was a task of its own, with a row
    buffer allocated: this function was 4.6% of SqueezeNet's CPU samples (perf, 2
    threads), 1.6% now; interleaved, SqueezeNet 1.02x, GoogLeNet 1.01x, ResNet-18 b1
    1.02x, b8 1.05x (AVX2). Every index is unsigned (``_u``): Numba's wraparound of
    signed indices kept such loops scalar."""
    plane = _phase_plane(Hr, U)
    cend = min(W, m * U - pl)  # image columns inside the padded row: [0, cend)
    for q in range(q0, q1):
        n = q // cin
        c = q - n * cin
        image = (n * Cx + xc0 + c) * H  # the plane's first row in xf
        base = q * m * plane
        for r in range(r0, r1):
            d = base + r * U
            if not pt <= r < pt + H:  # a padding row
                for ph in range(m):
                    for u in range(U):
                        xq[_u(d + ph * plane + u)] = 0.0
                continue
            s = (image + r - pt) * W  # the image row in xf
            # whole vectors: the last one spills into the next row (written after this
            # one) or, from the last row, into the phase's spare floats
            for u in range(0, U, SV):
                if m == 4:
                    _deinterleave4(xf, s, m * u - pl, cend, xq, d + u, plane)
                else:
                    _deinterleave2(xf, s, m * u - pl, cend, xq, d + u, plane)


@numba.njit(inline="always", error_model="numpy")
def _phase_plane(Hr, U):
    """Floats from one column phase of ``_split_columns_task``'s ``xq`` to the next: its ``Hr``
    rows of ``U`` columns, then ``SV`` spare floats, which a row's last vector, written
    whole, may spill into."""
    return Hr * U + SV


@numba.njit(inline="always", error_model="numpy")
def _u(i):
    """``i`` (never negative) as an unsigned index: no wraparound check."""
    return np.uint64(i)


@numba.njit(error_model="numpy")
def _split_for_block(s0, s1, rows, keep, xf, Cx, H, W, xc0, cin, xq, m, Hr, U, pt, pl,
                     per_image, twp):  # fmt: skip
    """Make sure the thread's own split input ``xq`` holds the padded rows that the tiles of
    slots ``[s0, s1)`` read: ``rows[n] = (lo, hi)`` are the rows of image ``n`` split so far
    (``lo == hi``: none), extended here to cover them -- downwards before ``lo`` (the
    split's spill past its last row into row ``lo`` undone from ``keep``) or upwards from
    ``hi``."""
    plane = _phase_plane(Hr, U)
    n0 = s0 // per_image
    n1 = (s1 - 1) // per_image
    for n in range(n0, n1 + 1):
        t0 = (max(s0, n * per_image) - n * per_image) // twp
        t1 = (min(s1, (n + 1) * per_image) - 1 - n * per_image) // twp
        a = m * t0
        b = min(Hr, m * t1 + m + 2)
        lo = rows[n, 0]
        hi = rows[n, 1]
        if lo == hi:  # nothing yet
            call_linked(_split_columns_task, n * cin, (n + 1) * cin, a, b, xf, Cx, H, W, xc0,
                        cin, xq, m, Hr, U, pt, pl)  # fmt: skip
            rows[n, 0] = a
            rows[n, 1] = b
            continue
        if a < lo:
            for q in range(cin):
                for ph in range(m):
                    d = ((n * cin + q) * m + ph) * plane + lo * U
                    keep[(q * m + ph) * SV : (q * m + ph + 1) * SV] = xq[d : d + SV]
            call_linked(_split_columns_task, n * cin, (n + 1) * cin, a, lo, xf, Cx, H, W, xc0,
                        cin, xq, m, Hr, U, pt, pl)  # fmt: skip
            for q in range(cin):
                for ph in range(m):
                    d = ((n * cin + q) * m + ph) * plane + lo * U
                    xq[d : d + SV] = keep[(q * m + ph) * SV : (q * m + ph + 1) * SV]
            rows[n, 0] = a
        if b > hi:
            call_linked(_split_columns_task, n * cin, (n + 1) * cin, hi, b, xf, Cx, H, W, xc0,
                        cin, xq, m, Hr, U, pt, pl)  # fmt: skip
            rows[n, 1] = b


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
    # tile slots a tile row: whole vectors, never two rows -- but rows of at most SV/2
    # tiles take SV/2 slots, two rows a vector (7x7 with F(2x2), 14x14 with F(4x4): 16
    # slots, not 32)
    tv = SV // 2 if tw <= SV // 2 else SV
    twp = (tw + tv - 1) // tv * tv
    per_image = th * twp
    nslots = N * per_image
    nblocks = (nslots + TW - 1) // TW
    nkb = (K + KT - 1) // KT
    kpad = nkb * KT
    # few blocks (a small plane): each is split over k blocks too, so that every thread
    # has work
    nthr = num_threads()
    want = ITEMS_PER_THREAD * nthr
    nks = min(nkb, max(1, (want + nblocks - 1) // nblocks))
    nitems = nblocks * nks
    # Shared: the input split and transformed once for all, before the GEMMs (below), when
    # there are fewer F(4x4) blocks than threads (each thread's items would transform the
    # same block; F(2x2): below), and on more than two threads: the items go from both
    # ends, so a third thread's blocks lie between others' and its rows would span most of
    # the plane -- the input split up to nthr times over, into nthr copies of it (64
    # threads: 512 MB a call for ResNet-18 at batch 8). Else each thread splits and
    # transforms the blocks it takes itself, once for its items of a block (their k
    # shares): a plane of two blocks on two threads (28x28 with F(4x4)) had its split and
    # transform shared, half of what each thread's GEMMs read then written by the other.
    # Against that, 2 threads, interleaved, near / far vCPUs: ResNet-18 1.003-1.005 / 1.021x
    # (res3b's convs far 1.32-1.37x), GoogLeNet 0.999-1.004 / 1.016x (its 28x28 3x3s far
    # 1.10x), SqueezeNet 1.006 / 1.023x.
    # A plane of one F(2x2) block (7x7) is not shared either: each thread transforms the
    # whole block itself, twice the transform's work against the GEMMs of 200+ k channels.
    # One-layer chains, 2 threads, near / far: three 3x3 256->256 at 7x7 1.05 / 1.76x, one
    # 512->512 1.03 / 1.52x, 192->384 between 1x1s 1.00 / 1.13x; ResNet-18 0.996 / 1.029x,
    # GoogLeNet 0.998 / 0.984x. One F(4x4) block (14x14; 36 rows of V a channel, a
    # transform twice F(2x2)'s per element) lost near: 160->320 0.95 / 1.02x, GoogLeNet
    # 0.96x near
    shared = nthr > 2 or (nblocks < nthr and m == 4)
    # a chunk's scratch holds a block's whole transformed input and output (L2-sized), so
    # there are few chunks, allocated once per call
    nchunks = min(nitems, NCHUNK)
    offs = np.empty(cin, np.int64)  # the micro-kernel's taps: the input channels of V[a]
    for c in range(cin):
        offs[c] = c * TW
    Hr = m * th + 2
    U = twp + 1
    xqsize = N * cin * m * _phase_plane(Hr, U)
    xqa = np.empty((1 if shared else nthr) * xqsize, np.float32)
    rows = zeroed(nthr * N * 2).reshape((nthr, N, 2))
    keep = np.empty((nthr, 0 if shared else cin * m * SV), np.float32)
    xf = x.reshape(x.size)
    planes = N * cin
    nsplit = min(planes, SPLIT_TASKS_PER_THREAD * nthr)
    # every scratch array is allocated here, none in the parallel loop: array expressions
    # there become nested parallel loops, which doubled the kernel's compile time
    # V[a] blocks an odd number of lines (a channel's TW slots are one line) apart: with
    # cin*TW floats (4 KiB for 64 channels) a channel's a2 rows all fell in one L1 set
    # (interleaved: 3x3 64->64 at 56x56 1.06x on one thread, 256->256 at 14x14 1.07x on
    # both; ResNet-18 1.03-1.06x, SqueezeNet 1.01-1.04x, GoogLeNet 0.99-1.01x)
    vsize = _v_floats(m, cin)
    vbuf = np.empty((nchunks, 0 if shared else vsize), np.float32)
    vall = np.empty(nblocks * vsize if shared else 0, np.float32)
    mbuf = np.empty((nchunks, a2 * kpad * TW), np.float32)
    ybuf = np.empty((nchunks, m * m * TW), np.float32)
    tbuf = np.empty((nchunks, 3, TW), np.int64)  # each slot's image, top row, left column
    # when shared: the blocks' input transform, in items of a block's channel group, before
    # the GEMMs: each share of a block split over k blocks transformed the block's whole
    # input itself, 2-4 times over. Interleaved, 2 threads, batch 1, AVX2: 3x3 256->256
    # at 14x14 1.15x, 96->208 1.12x, 64->256 at 13x13 1.08x, 48->192 1.04x, 512->512
    # at 7x7 1.05x; SqueezeNet's 13x13 expands 1.04-1.07x, GoogLeNet 1.02x
    ncg = (cin + TRANSFORM_CHANNELS - 1) // TRANSFORM_CHANNELS
    ntitems = nblocks * ncg if shared else 0
    # The phases -- column split, shared input transform, GEMM items -- run in one parallel
    # region (sched.py: each phase's tasks claimed as threads ask, counted done, and a
    # thread held at a phase's end only for tasks in flight), not a region each: a thread
    # that arrives late finds the earlier phases done. Items of the last phase go to the
    # threads as they ask, each into the scratch of the loop iteration it runs (a thread's
    # first iteration takes items until none are left). Against static chunks of items,
    # interleaved in one process, twice: GoogLeNet b1 1.065-1.068x, ResNet-18 b1
    # 1.03-1.04x, b8 1.05x, SqueezeNet 1.05-1.07x. The items go from both ends
    # (sched.take_chunk): with two threads each keeps to its end of the plane's blocks, as
    # the packed kernel's threads keep to theirs, so the next layer finds more of its input
    # in its own core's caches. Against first-come, AVX-512, 2 threads, with the two vCPUs
    # near / far apart (a cache line's round trip 66 / 340 ns, kernel-notes): SqueezeNet
    # 1.010 / 1.046x, ResNet-18 b1 1.011 / 1.032x, b8 1.012 / 1.101x, GoogLeNet 0.996 /
    # 1.008x, CIFAR inception 1.028x (near). Each counter row has a cache line: the split
    # tasks' (claimed, done), the transform's (claimed, done), the items' (take_chunk's 3)
    state = zeroed(5 * 8).reshape((5, 8))
    for w in numba.prange(nchunks):
        tid = numba.get_thread_id()  # in [0, num_threads())
        if not shared:
            # Each thread splits the rows of the blocks it takes into its own buffer, as it
            # takes them (_split_for_block), instead of all threads splitting the input by
            # planes into one buffer that the blocks then read by rows: with the two vCPUs
            # on different core complexes (kernel-notes), each block read lines the other
            # thread had split, and the next call's split wrote lines the other had read.
            # AVX-512, 2 threads, near / far apart: 3x3 16->64 at 55x55 alone 1.02 / 1.31x
            # (far 305 -> 232 us); in the network (whole calls) ResNet-18 b1 far 1.046x,
            # b8 0.986 / 1.076x, SqueezeNet 1.002 / 1.018x, GoogLeNet 0.991x near; per layer,
            # far, ResNet-18's res2 layers 1.04-1.49x. Splitting the whole input on each
            # thread instead: ResNet-18 near 0.975x, far 1.039x (its first layer 0.83x far).
            xq = xqa[tid * xqsize : (tid + 1) * xqsize]
        else:
            xq = xqa
            task = next_chunk(state[0])
            while task < nsplit:
                q0 = planes * task // nsplit
                q1 = planes * (task + 1) // nsplit
                # as fastconv._split_task: lines the GEMM items of the last call read, on
                # both threads
                prefetch_for_write(xq, q0 * m * _phase_plane(Hr, U),
                                   q1 * m * _phase_plane(Hr, U))  # fmt: skip
                call_linked(_split_columns_task, q0, q1, 0, Hr, xf, Cx, H, W, xc0, cin, xq, m,
                            Hr, U, pt, pl)  # fmt: skip
                count_done(state[1])
                task = next_chunk(state[0])
            wait_done(state[1], nsplit)
        item = next_chunk(state[2])
        while item < ntitems:
            call_linked(_transform_chunk, item, ncg, vall, tbuf[w], xq, cin, Hr, U, m,
                        per_image, twp, tw, nslots, tv)  # fmt: skip
            count_done(state[3])
            item = next_chunk(state[2])
        wait_done(state[3], ntitems)
        from_back = 2 * w >= nchunks
        item = take_chunk(state[4], nitems, from_back)
        held = -1  # the block whose V this iteration's scratch holds
        while item >= 0:
            blk = item // nks
            fresh = not shared and blk != held
            if fresh:
                s0 = blk * TW
                _split_for_block(s0, min(nslots, s0 + TW), rows[tid], keep[tid], xf, Cx, H, W,
                                 xc0, cin, xq, m, Hr, U, pt, pl, per_image, twp)  # fmt: skip
                held = blk
            call_linked(_winograd_chunk, item, item + 1, vbuf[w], vall, mbuf[w], ybuf[w],
                        tbuf[w], xq, cin, Hr, U, out, oc0, K, upk, bias, m, act, res, rc0,
                        offs, per_image, twp, tw, nslots, nks, nkb, kpad, OH, OW, tv, shared,
                        fresh)  # fmt: skip
            item = take_chunk(state[4], nitems, from_back)


@numba.njit(inline="always", error_model="numpy")
def _v_floats(m, cin):
    """Floats of one block's transformed input V: ``(m+2)^2`` rows of ``cin | 1`` channels
    of ``TW`` slots (rows an odd number of lines apart, conv2d_winograd's ``vbuf``)."""
    return (m + 2) * (m + 2) * (cin | 1) * TW


@numba.njit(inline="always", error_model="numpy")
def _tile_vectors(s0, nslots):
    """How many ``VL`` vectors of the block of ``TW`` slots from ``s0`` hold a tile: the
    GEMMs multiply these only, and the input transform writes these only."""
    return (min(TW, nslots - s0) + VL - 1) // VL


@numba.njit(error_model="numpy")
def _slot_tiles(s0, tiles, m, per_image, twp, tw, nslots):
    """``tiles[:, p]`` for the ``TW`` slots from ``s0``: each slot's image, its tile's first
    output row (-1 for a slot holding no tile) and first output column."""
    for p in range(TW):
        s = s0 + p
        n = s // per_image
        ty = (s - n * per_image) // twp
        tx = s - n * per_image - ty * twp
        tiles[0, p] = n
        tiles[1, p] = ty * m if s < nslots and tx < tw else -1
        tiles[2, p] = tx * m


@numba.njit(error_model="numpy")
def _transform_input(c0, c1, s0, V, vbase, tiles, xq, cin, Hr, U, m, nslots, tv):
    """The input transform of input channels ``[c0, c1)`` for the block of ``TW`` slots
    from ``s0`` (``tiles`` from ``_slot_tiles``): ``V[vbase + (a * (cin | 1) + c) * TW + p]``,
    a vector of ``SV`` slots (one tile row, or two) at a time, up to the last ``VL``
    vector that holds a tile (the GEMMs read no further)."""
    a2 = (m + 2) * (m + 2)
    plane = _phase_plane(Hr, U)
    vstride = cin | 1
    tn = tiles[0]
    th0 = tiles[1]
    tw0 = tiles[2]
    # AVX-512: a block of 16 slots (batch 1's 14x14 with F(4x4), 7x7 with F(2x2)) wrote V's
    # other 16, zeros no GEMM reads, as often as its tiles: half of V's lines
    reach = _tile_vectors(s0, nslots) * VL
    for c in range(c0, c1):
        for q in range(0, reach, SV):
            s = s0 + q
            voff = vbase + c * TW + q
            if s >= nslots:  # past the last tile: finite junk
                for a in range(a2):
                    V[voff + a * vstride * TW : voff + a * vstride * TW + SV] = 0.0
                continue
            # a vector's first slot always holds a tile (twp < tw + SV), and so does
            # the first of its second half when it holds two tile rows (tv < SV)
            base = (tn[q] * cin + c) * m * plane + th0[q] * U + tw0[q] // m
            if tv == SV:
                if m == 4:
                    _bt4_2d(xq, base, U, plane, V, voff, vstride * TW)
                else:
                    _bt2_2d(xq, base, U, plane, V, voff, vstride * TW)
            else:
                half2 = base
                if s + tv < nslots:
                    half2 = (tn[q + tv] * cin + c) * m * plane + th0[q + tv] * U
                if m == 4:
                    _bt4_2d_halves(xq, base, half2, U, plane, V, voff, vstride * TW)
                else:
                    _bt2_2d_halves(xq, base, half2, U, plane, V, voff, vstride * TW)


# Called through a symbol, as _winograd_chunk; at -O2 as the kernel
@linked_njit(llvm_opt=2, error_model="numpy")
def _transform_chunk(item, ncg, Vall, tiles, xq, cin, Hr, U, m, per_image, twp, tw, nslots,
                     tv):  # fmt: skip
    """Work item ``item`` of conv2d_winograd's shared input transform: channel group
    ``item % ncg`` (of ``ncg``) of block ``item // ncg``, into that block's V in ``Vall``."""
    blk = item // ncg
    cg = item - blk * ncg
    s0 = blk * TW
    _slot_tiles(s0, tiles, m, per_image, twp, tw, nslots)
    _transform_input(cin * cg // ncg, cin * (cg + 1) // ncg, s0, Vall, blk * _v_floats(m, cin),
                     tiles, xq, cin, Hr, U, m, nslots, tv)  # fmt: skip


# Called through a symbol, as fastconv._conv_chunk (jit.call_linked); at -O2 as the kernel
@linked_njit(llvm_opt=2, error_model="numpy")
def _winograd_chunk(first, last, vscr, vall, M, y, tiles, xq, cin, Hr, U, out, oc0, K,
                    upk, bias, m, act, res, rc0, offs, per_image, twp, tw, nslots, nks, nkb,
                    kpad, OH, OW, tv, shared, fresh):  # fmt: skip
    """Work items ``[first, last)`` of conv2d_winograd (one chunk). With ``shared``, every
    block's transformed input is in ``vall`` already, else an item transforms its block's
    input itself, into the chunk's scratch ``vscr``, when ``fresh`` (the scratch does not
    hold that block's already: the thread's item before it was another k share of it)."""
    al = m + 2
    a2 = al * al
    tn = tiles[0]
    th0 = tiles[1]  # the tile's first output row, -1 for a slot holding no tile
    tw0 = tiles[2]  # its first output column
    out_flat = out.reshape(out.size)
    res_flat = res.reshape(res.size)
    vstride = cin | 1  # V[a]'s rows apart, in channels (conv2d_winograd's vbuf)
    # the GEMMs' weights: prefetched ahead in wide layers (else 0: the line the tap loads
    # anyway, one instruction for one code path)
    ahead = WEIGHT_AHEAD if cin >= PREFETCH_MIN_CHANNELS else 0
    relu = act == ACT_RELU
    for item in range(first, last):
        blk = item // nks
        share = item - blk * nks
        kb0 = nkb * share // nks
        kb1 = nkb * (share + 1) // nks
        s0 = blk * TW
        nv = _tile_vectors(s0, nslots)
        _slot_tiles(s0, tiles, m, per_image, twp, tw, nslots)
        V = vscr
        vbase = 0
        if shared:  # the block's V, transformed before (conv2d_winograd)
            V = vall
            vbase = blk * _v_floats(m, cin)
        elif fresh:
            _transform_input(0, cin, s0, V, vbase, tiles, xq, cin, Hr, U, m, nslots, tv)
        # the GEMMs: M[k, a, p] = sum_c U[a, k, c] V[a, c, p]
        for a in range(a2):
            for kb in range(kb0, kb1):
                voff = vbase + a * vstride * TW
                woff = (a * nkb + kb) * cin * KT
                moff = (kb * KT * a2 + a) * TW
                if nv == 1:
                    _uk_rows_1(V, voff, offs, cin, upk, woff, M, moff, a2 * TW, ahead)
                elif nv == 2:
                    _uk_rows_2(V, voff, offs, cin, upk, woff, M, moff, a2 * TW, ahead)
                else:
                    _uk_rows_3(V, voff, offs, cin, upk, woff, M, moff, a2 * TW, ahead)
        if nv < WVN:  # the slots left out: finite junk for the output transform
            for r in range(kb0 * KT * a2, kb1 * KT * a2):
                M[r * TW + nv * VL : (r + 1) * TW] = 0.0
        # output transform, epilogue and store, channel by channel (the loops over whole
        # blocks of TW slots: constant trip counts, a few % faster than over nv vectors)
        for k in range(kb0 * KT, min(kb1 * KT, K)):
            for q in range(0, TW, SV):  # y[i*m + j] = (A^T M[k] A)[i, j]
                if m == 4:
                    _at4_2d(M, k * a2 * TW + q, TW, y, q, TW)
                else:
                    _at2_2d(M, k * a2 * TW + q, TW, y, q, TW)
            # the epilogue as conv2d_packed's store: (y + bias) [+ skip], then relu; the
            # tv tiles of a vector (or half) lie side by side in one tile row, so each
            # output row they cover is one run of tv*m cells
            b = bias[k]
            for q in range(0, TW, tv):
                if th0[q] < 0:
                    continue
                ow0 = tw0[q]
                ncols = min(tv * m, OW - ow0)
                # the row's offsets, one row further each time (not computed again a row)
                ooff = ((tn[q] * out.shape[1] + oc0 + k) * OH + th0[q]) * OW + ow0
                roff = ((tn[q] * res.shape[1] + rc0 + k) * OH + th0[q]) * OW + ow0
                rstep = OW
                if rc0 < 0:
                    roff = -1
                    rstep = 0
                yoff = q
                for _ in range(min(m, OH - th0[q])):
                    if m == 4 and tv < SV:
                        _store4_half(y, yoff, TW, out_flat, ooff, b, res_flat, roff, relu, ncols)
                    elif m == 4:
                        _store4(y, yoff, TW, out_flat, ooff, b, res_flat, roff, relu, ncols)
                    elif tv < SV:
                        _store2_half(y, yoff, TW, out_flat, ooff, b, res_flat, roff, relu, ncols)
                    else:
                        _store2(y, yoff, TW, out_flat, ooff, b, res_flat, roff, relu, ncols)
                    yoff += m * TW
                    ooff += OW
                    roff += rstep
