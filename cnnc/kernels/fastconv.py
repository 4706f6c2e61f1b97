"""Fast 2-D convolution: a register-blocked direct kernel with weights packed once.

Same maths and tensor convention as :func:`cnnc.kernels.conv.conv2d` (cross-correlation,
operands passed as ``(buffer, channel offset)``, docs/DESIGN.md). Which of the two a conv
node runs is decided by ``cnnc.backend.conv_kernel``: this one for every conv but
depthwise and thin grouped ones, except those that ``cnnc.backend.lanes_runs`` gives to
its sibling with output channels in the lanes (``lanesconv.py``). The tile shape comes
from the CPU target (``cnnc.backend.Target``): ``KT`` output channels x ``VN`` vectors of
``VL`` floats.
docs/kernel-notes.md keeps the measurements behind these choices.

Design of ``conv2d_packed`` ("flat shifted GEMM")
================================================
The convolution ``out[k, oh, ow] = sum_{c,i,j} w[k,c,i,j] * xpad[c, oh*sh + i*dh, ow*sw + j*dw]``
is a GEMM whose reduction index is the *tap* ``t = (c, i, j)``; its B matrix is never built.

1. Input preparation (one parallel pass over the input, O(Cin*H*W), see ``_split_phases``):
   the zero-padded input is split into its ``sh*sw`` stride *phases* and written to a flat
   buffer ``xq``. A block of ``nb`` images (``_images_per_block``: enough for rows of
   ``XQ_ROW_FLOATS``, within ``XQ_BLOCK_BYTES``) shares each ``(phase, channel)`` plane:
   ``Hq`` rows, each the ``nb`` images' rows side by side, ``Wq`` columns an image
   (``_image_width``). In this layout the input that flat
   output position ``p = oh*(nb*Wq) + m*Wq + ow`` (image ``m`` of the block) needs for tap
   ``t`` is ``xq[p + off[t]]`` with a per-tap constant ``off[t]``: for a fixed tap, ``VL``
   consecutive output positions read ``VL`` consecutive floats -- one vector load, whatever
   the stride, dilation or padding. Columns ``ow`` in ``[OW, Wq)`` are junk (computed, never
   stored). Neighbouring images share their zero padding columns (reads past an image's
   right end land on the next one's left padding); putting the batch side by side also
   fills the tiles that one small plane alone would leave half empty.
   A 1x1, stride 1, unpadded conv reads the input buffer as it is (``Wq = W``, no copy).

2. Micro-kernel (``_make_microkernel``, LLVM vector IR emitted through
   ``numba.extending.intrinsic``): a tile of ``KT`` output channels x ``TW = VN*VL`` flat
   positions is held in ``KT x VN`` vector accumulators for the whole tap loop. Per tap:
   ``VN`` unaligned vector loads of ``xq``, ``KT`` weights broadcast, ``KT*VN`` FMAs. The
   target's tile keeps accumulators, loads and the broadcast within its vector registers
   (8 x 3 of 16 lanes with AVX-512's 32 registers; 6 x 2 of 8 lanes with AVX2's 16), so
   nothing spills. Numba's own loops do not get there: Numba turns LLVM's SLP vectoriser
   off, and LLVM fully unrolls small fixed-size loops into scalar code before the loop
   vectoriser runs.

3. Weights are packed once, at compile time (:func:`pack_conv_weights`), to
   ``[group][k_block][tap][KT]`` with each group's K zero-padded to a multiple of ``KT``, so
   the ``KT`` weights of one tap are contiguous and a k block stays in L1.

4. Epilogue: a full tile with no residual and no activation, or relu, tanh or sigmoid, is
   finished in registers (``_uk_direct``); each of its vectors whose ``VL`` outputs are
   contiguous in ``out`` is stored straight, one whose outputs are two runs of cells (a
   row's end, junk columns, the next row's start) with two masked stores (but on AVX2),
   the others go to a per-thread scratch and are copied cell by cell.
   Any other tile goes to the scratch whole (L1); bias, the residual (a ResNet
   block's skip tensor, when the fuse-residual pass gave the conv one) and the activation
   (the shared ``bias_activate_inplace`` of ``elementwise.py``) are applied, then its valid
   columns are copied row by row into ``out[n, oc0+k]``. Only channels ``[oc0, oc0+K)`` are
   written; the residual is read once, at the store, never in a pass of its own.

Parallelism: the work items ``(image block, group, k-block group, spatial tile, k_block)``
-- k blocks in groups of about ``WEIGHT_GROUP_BYTES`` of weights, which stay in L2 while the
tiles sweep the input, and each tile's input read by the group's k blocks one after the
other -- are cut into ``NCHUNK`` chunks, which the threads take one at a time as they
finish the last (``sched.take_chunk``; their scratch is allocated once per call). Two
parallel regions
per call (input preparation, compute; one for an unpadded stride-1 1x1 conv, which reads
its input as it is). A conv of fewer than ``SERIAL_WORK`` multiply-adds runs both on the
calling thread alone, in one chunk: starting the regions would cost more than sharing the
work saves (LeNet-5 at batch 1: 1.19x faster).

The last, partial spatial tile of a 1x1 unpadded conv read as it is is computed as the
whole vectors that end at its plane's end, overlapping the tile before. On a plane shorter
than a tile it reads past the end of its input planes; where that would pass the end of the
buffer (the last image's last channels) its taps are first copied into a small panel, once
per call. The runtime calls no BLAS (docs/kernel-notes.md
says why).
"""

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..backend import current_target
from .elementwise import (
    ACT_NONE,
    ACT_RELU,
    ACT_SIGMOID,
    ACT_TANH,
    SERIAL_WORK,
    TANH_CLAMP,
    TANH_P,
    TANH_Q,
    bias_activate_inplace,
    copy_into,
)
from .jit import cached_njit, call_linked, linked_njit
from .sched import emit_prefetch, prefetch_for_write, take_chunk, zeroed

# The micro-kernel's tile, from the CPU target (cnnc/backend.py): every accumulator, the
# input vectors and a broadcast weight fit the vector registers. Numba compiles these
# module constants into the kernels; the disk cache is keyed by the target.
TARGET = current_target()
VL = TARGET.lanes  # floats per vector
KT = TARGET.tile_channels  # output channels per micro-tile
VN = TARGET.tile_vectors  # vectors per micro-tile row
TW = VN * VL  # flat output positions per micro-tile
NCHUNK = 64  # work chunks per call, handed out to the threads as they ask (sched.py)
# A chunk has at least CHUNK_WORK multiply-adds (and a conv at least 4 chunks): each claim
# is two atomic adds on a line both threads use. SqueezeNet's small 1x1s at 13x13 had 96
# items in 64 chunks; in 6-12 now, their time 1.08-1.22x (2^17). Interleaved, AVX-512, 2
# threads, 2^18 against 64 chunks (near / far vCPUs, benchmarks/experiments/placement.py):
# SqueezeNet 1.010 / 1.009x, CIFAR inception 1.010 / 0.996x, ResNet-18 1.006 / 0.998x (b8
# 1.006 / 0.999x), GoogLeNet 1.002 / 1.003x, LeNet-5 b64 1.003x; 2^19: SqueezeNet and CIFAR
# inception 0.985x against 2^18
CHUNK_WORK = 1 << 18
SPLIT = -2  # a vector _uk_direct stores as two runs of cells (_vector_positions)
# Split vectors take two masked stores: AVX-512's (a mask register) and 128-bit targets'
# (LLVM stores the lanes one by one) are cheap; AVX2's vmaskmovps store is microcoded on the
# AMD CPUs measured (docs/kernel-notes.md), so AVX2 keeps the scratch copy until measured
SPLIT_STORES = VL != 8
#: Images laid side by side in one block of phase-split input: at most XQ_BLOCK_BYTES of
#: it, and no more than rows of XQ_ROW_FLOATS take (_images_per_block). Against blocks of
#: up to 1 MB (as many images as fit), AVX2, 2 threads, each way round in one process:
#: LeNet-5 b64 1.14x (its 5x5 on 28x28 images 1.13-1.22x: blocks of 4 images, not 64),
#: 1x1/2 128->256 at 28x28 b8 1.14-1.19x (1 image, not 2), GoogLeNet b8 1.03x, CIFAR
#: inception b16 1.01x, ResNet-18 b8 1.01x; LeNet-5's 5x5 6->16 at 14x14 b64 even
XQ_BLOCK_BYTES = 1 << 16
XQ_ROW_FLOATS = 4 * TW
# Work items run k blocks in groups of about this many bytes of packed weights, each tile of
# positions through the group's k blocks one after the other, then the next tile: the
# group's weights stay in L2 while the tiles sweep the input, and a tile's input stays in
# L1/L2 for the group's k blocks. With one k block at a time (every tile of a k block, then
# the next k block) a layer whose input outgrows L2 read it from L3 once per k block: 2
# threads, AVX2, L2 evicted between calls, interleaved in one process: 1x1 256->128 at
# 28x28 92 -> 124 GFLOP/s, 128->16 at 55x55 38 -> 54, 3x3/2 128->256 at 28x28 86 -> 101
# (docs/kernel-notes.md). Convs of at most THIN_TAPS taps (3 or 1 input channels) keep one
# k block a group: their tiles read little input, and a tile writing all its output
# channels at once lost (3x3/2 3->64 at 224x224: 32 -> 25 GFLOP/s; LeNet's 5x5 1->6 10%).
WEIGHT_GROUP_BYTES = 192 << 10
THIN_TAPS = 32
AS_IS_CHANNELS = 256  # a 1x1 conv of fewer output channels reads a misaligned input as is
# Planes of a multiple of this many floats (4 KiB) put every tap of a tile in one L1 set (and
# few L2 sets): a 1x1 conv of at least ALIAS_CHANNELS output channels, whose k blocks read
# each tile again, copies such an input to planes an odd number of lines apart instead.
# CIFAR inception's 32x32 1x1s, interleaved, copied against as is: 64->72 1.48x on one
# thread, 1.21x on two; 112->104 1.52x, 1.18x. With 16-24 output channels the copy's pass
# cost more than it saved on two threads (0.77-0.79x), and so did planes of 16x16 (four
# sets; 160->124 0.98x, 160->32 0.77x).
ALIAS_PLANE_FLOATS = 1024
ALIAS_CHANNELS = 64

_VEC = ir.VectorType(ir.FloatType(), VL)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


# ---------------------------------------------------------------- micro-kernel


def _splat(builder, value, width=VL):
    """A vector of ``width`` lanes, each the scalar ``value`` (a ``_VEC`` for a float and
    the default width)."""
    undef = ir.Constant(ir.VectorType(value.type, width), ir.Undefined)
    one = builder.insert_element(undef, value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(_I32, width),
                                                          [0] * width))  # fmt: skip


def vector_fma(builder):
    """The ``_VEC`` multiply-add ``a*b + c`` the micro-kernels call: ``llvm.fmuladd``, one
    fused instruction where the CPU has FMA (AVX2, AVX-512, NEON) and a multiply and an add
    where it has not (SSE: the generic target). ``llvm.fma`` would be exact there too, by
    a call of libm's ``fmaf`` for every lane."""
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_VEC, [_VEC] * 3), f"llvm.fmuladd.v{VL}f32")


def masked_load(builder, ptr, mask, passthru):
    """``llvm.masked.load`` of a float vector (``passthru``'s type) at the float pointer
    ``ptr``: the lanes where ``mask`` is set are read, the others are ``passthru``'s (and
    never touched in memory)."""
    vec = passthru.type
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vec, [vec.as_pointer(), _I32, mask.type, vec]),
        f"llvm.masked.load.v{vec.count}f32.p0")  # fmt: skip
    return builder.call(fn, [builder.bitcast(ptr, vec.as_pointer()), ir.Constant(_I32, 4),
                             mask, passthru])  # fmt: skip


def masked_store(builder, value, ptr, mask):
    """``llvm.masked.store`` of the float vector ``value`` at the float pointer ``ptr``: only
    the lanes where ``mask`` is set are written."""
    vec = value.type
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [vec, vec.as_pointer(), _I32,
                                                        mask.type]),
        f"llvm.masked.store.v{vec.count}f32.p0")  # fmt: skip
    builder.call(fn, [value, builder.bitcast(ptr, vec.as_pointer()), ir.Constant(_I32, 4), mask])


# A store of a vector's first lanes takes one scalar store a lane, each behind a branch on
# the count, rather than a masked store, on AVX2 and 128-bit targets: AMD's AVX2 cores run
# masked stores (vmaskmovps) slowly (pool.py and winograd.py measure it). AVX-512 keeps
# its masked stores (its masks are native; not measured).
SCALAR_PREFIX_STORES = VL < 16


def store_prefix(builder, value, ptr, count):
    """Store lanes ``i < count`` of the float vector ``value`` at ``ptr[i]`` (``ptr`` a float
    pointer, ``count`` an integer value; the other lanes' cells are not written)."""
    lanes = value.type.count
    if not SCALAR_PREFIX_STORES:
        index = ir.Constant(ir.VectorType(count.type, lanes), list(range(lanes)))
        masked_store(builder, value, ptr, builder.icmp_signed("<", index,
                                                              _splat(builder, count, lanes)))
        return
    for i in range(lanes):
        with builder.if_then(builder.icmp_signed(">", count, ir.Constant(count.type, i))):
            builder.store(builder.extract_element(value, ir.Constant(_I32, i)),
                          builder.gep(ptr, [ir.Constant(_I64, i)]))


def _store_rows(builder, acc, data, offset, stride):
    """Store a tile's accumulators ``acc[k][v]`` (``_emit_tile``) at ``data[offset +
    k*stride + VL*v : +VL]`` (``offset`` and ``stride`` i64 values)."""
    for k, row in enumerate(acc):
        start = builder.add(offset, builder.mul(stride, ir.Constant(_I64, k)))
        for v, value in enumerate(row):
            p = builder.gep(data, [builder.add(start, ir.Constant(_I64, VL * v))])
            builder.store(value, builder.bitcast(p, _VEC.as_pointer()), align=4)


def emit_tap_loop(builder, ntap, starts, step):
    """Emit ``for t in range(ntap): acc = step(t, acc)`` over a list of vector accumulators
    held in phi nodes, so they stay in registers, starting from ``starts``; ``step(t,
    acc)`` emits one tap's code and returns the new accumulators. Returns the final ones
    (``starts`` when ``ntap <= 0``); the builder is left after the loop."""
    entry = builder.basic_block
    loop = builder.append_basic_block("taps")
    done = builder.append_basic_block("taps_done")
    builder.cbranch(builder.icmp_signed(">", ntap, ir.Constant(_I64, 0)), loop, done)
    builder.position_at_end(loop)
    t = builder.phi(_I64)
    t.add_incoming(ir.Constant(_I64, 0), entry)
    acc = []
    for value in starts:
        acc.append(builder.phi(_VEC))
        acc[-1].add_incoming(value, entry)
    new = step(t, acc)
    t1 = builder.add(t, ir.Constant(_I64, 1))
    loop_end = builder.basic_block
    t.add_incoming(t1, loop_end)
    for a, value in zip(acc, new, strict=True):
        a.add_incoming(value, loop_end)
    builder.cbranch(builder.icmp_signed("<", t1, ntap), loop, done)
    builder.position_at_end(done)
    finals = []
    for value, last in zip(starts, new, strict=True):
        finals.append(builder.phi(_VEC))
        finals[-1].add_incoming(value, entry)
        finals[-1].add_incoming(last, loop_end)
    return finals


def _emit_tile(context, builder, x, xoff, offs, ntap, w, woff, vn, prefetch=None):
    """Emit the tap loop of a ``KT x VL*vn`` tile; returns ``acc[k][v]`` (``VL`` floats):

        acc[k][v] = sum_{t < ntap} w[woff + t*KT + k] * x[xoff + offs[t] + VL*v : +VL]

    ``x``, ``offs`` and ``w`` are Numba array structs (1-D float32, int64, float32). With
    ``prefetch`` (an i64 value), each tap also prefetches ``w[woff + t*KT + prefetch]``
    into the caches (a hint: never faults, wherever it points).
    """
    fma = vector_fma(builder)
    xbase = builder.gep(x.data, [xoff])
    wbase = builder.gep(w.data, [woff])

    def tap(t, acc):
        xp = builder.gep(xbase, [builder.load(builder.gep(offs.data, [t]))])
        xv = []
        for v in range(vn):
            p = builder.gep(xp, [ir.Constant(_I64, VL * v)])
            xv.append(builder.load(builder.bitcast(p, _VEC.as_pointer()), align=4))
        wp = builder.gep(wbase, [builder.mul(t, ir.Constant(_I64, KT))])
        if prefetch is not None:
            emit_prefetch(builder, builder.gep(wp, [prefetch]), False)
        new = []
        for k in range(KT):
            wb = _splat(builder, builder.load(builder.gep(wp, [ir.Constant(_I64, k)]), align=4))
            new += [builder.call(fma, [xv[v], wb, acc[k * vn + v]]) for v in range(vn)]
        return new

    finals = emit_tap_loop(builder, ntap, [ir.Constant(_VEC, None)] * (KT * vn), tap)
    return [finals[k * vn : (k + 1) * vn] for k in range(KT)]


def _make_microkernel(vn):
    """An intrinsic ``uk(x, xoff, offs, ntap, w, woff, scr)`` for a ``KT x VL*vn`` tile:
    the tile of ``_emit_tile`` stored as ``scr[k*TW + VL*v : +VL] = acc[k][v]``.

    ``x`` and ``w`` are 1-D float32 arrays, ``offs`` 1-D int64, ``scr`` 1-D float32 with at
    least ``KT*TW`` elements. No bounds checks: the caller guarantees every read is inside.
    """

    @intrinsic
    def uk(typingctx, x, xoff, offs, ntap, w, woff, scr):
        sig = types.void(x, xoff, offs, ntap, w, woff, scr)

        def codegen(context, builder, sig, args):
            arrays = [context.make_array(sig.args[i])(context, builder, args[i])
                      for i in (0, 2, 4, 6)]  # fmt: skip
            xa, oa, wa, sa = arrays
            acc = _emit_tile(context, builder, xa, args[1], oa, args[3], wa, args[5], vn)
            _store_rows(builder, acc, sa.data, ir.Constant(_I64, 0), ir.Constant(_I64, TW))
            return context.get_dummy_value()

        return sig, codegen

    return uk


def _vconst(value):
    """A ``_VEC`` of ``VL`` lanes, each the float32 nearest ``value``."""
    return ir.Constant(_VEC, [float(np.float32(value))] * VL)


def _emit_tanh(builder, x):
    """``fast_tanh`` of each lane of the vector ``x``: the same clamp and rational function,
    its Horner steps as fused multiply-adds (as fastmath compiles ``fast_tanh``)."""
    fma = vector_fma(builder)
    hi, lo = _vconst(TANH_CLAMP), _vconst(-TANH_CLAMP)
    x = builder.select(builder.fcmp_ordered(">", x, hi), hi, x)  # a NaN stays NaN
    x = builder.select(builder.fcmp_ordered("<", x, lo), lo, x)
    x2 = builder.fmul(x, x)
    p = _vconst(TANH_P[0])
    for c in TANH_P[1:]:
        p = builder.call(fma, [x2, p, _vconst(c)])
    q = _vconst(TANH_Q[0])
    for c in TANH_Q[1:]:
        q = builder.call(fma, [x2, q, _vconst(c)])
    return builder.fdiv(builder.fmul(x, p), q)


@intrinsic
def _uk_direct(typingctx, x, xoff, offs, ntap, w, woff, out, voff, ostride, bias, boff, act,
               scr, kvalid):  # fmt: skip
    """A full ``KT x TW`` tile (``_emit_tile``) with its epilogue, stored vector by vector:

        value[k][p] = act(acc[k][p] + bias[boff + k])   (p < TW, k < KT)

    with ``act`` an ``ACT_*`` code: none, relu (``0 if v < 0 else v``: a NaN stays NaN),
    tanh or sigmoid (as ``fast_tanh`` and ``bias_activate_inplace``; ``_direct_act``).
    Vector ``v`` (positions ``VL*v`` to ``VL*v + VL``) of row ``k`` goes to
    ``out[voff[v] + k*ostride : +VL]`` when ``voff[v] >= 0`` -- its ``VL`` outputs are
    contiguous in ``out`` (1-D float32) --; when ``voff[v] == SPLIT``, with ``(d1, a, d2,
    b, e) = voff[VN + 5*v : VN + 5*v + 5]``, its lanes ``j < a`` to ``out[d1 + k*ostride +
    j]`` and its lanes ``b <= j < e`` to ``out[d2 + k*ostride + j]`` (two masked stores: a
    row's last cells and the next row's first, junk columns between them); otherwise to
    ``scr[k*TW + VL*v : +VL]``, which the caller copies cell by cell. Rows ``k >= kvalid``
    (a conv's last channels short of a tile) go to ``scr`` too, never read (a split
    vector's are not stored).
    """
    sig = types.void(x, xoff, offs, ntap, w, woff, out, voff, ostride, bias, boff, act, scr,
                     kvalid)  # fmt: skip

    def codegen(context, builder, sig, args):
        xa, oa, wa, outa, va, ba, sa = [context.make_array(sig.args[i])(context, builder,
                                                                        args[i])
                                        for i in (0, 2, 4, 6, 7, 9, 12)]  # fmt: skip
        acc = _emit_tile(context, builder, xa, args[1], oa, args[3], wa, args[5], VN)
        ostride_, boff_, act_ = args[8], args[10], args[11]

        def is_act(code):
            return builder.icmp_signed("==", act_, ir.Constant(act_.type, code))

        zero, half = ir.Constant(_VEC, None), _vconst(0.5)
        bases, strides = [], []
        for v in range(VN):
            off = builder.load(builder.gep(va.data, [ir.Constant(_I64, v)]))
            to_out = builder.icmp_signed(">=", off, ir.Constant(_I64, 0))
            bases.append(builder.select(to_out, builder.gep(outa.data, [off]),
                                        builder.gep(sa.data, [ir.Constant(_I64, VL * v)])))
            strides.append(builder.select(to_out, ostride_, ir.Constant(_I64, TW)))
        last = builder.sub(args[13], ir.Constant(_I64, 1))  # rows past it read its bias
        biases = [_splat(builder, builder.load(builder.gep(ba.data, [builder.add(
            boff_, builder.select(builder.icmp_signed("<", ir.Constant(_I64, k), args[13]),
                                  ir.Constant(_I64, k), last))]), align=4))
                  for k in range(KT)]  # fmt: skip

        vptr = _VEC.as_pointer()
        lanes = ir.Constant(ir.VectorType(_I64, VL), list(range(VL)))

        def store(finish, skip=False):
            in_conv = [builder.icmp_signed("<", ir.Constant(_I64, k), args[13])
                       for k in range(KT)]  # fmt: skip
            vals = []
            for k in range(KT):
                sums = [builder.fadd(acc[k][v], biases[k]) for v in range(VN)]
                if not skip or k == 0:  # row 0 is always in the conv
                    vals.append([finish(value) for value in sums])
                    continue
                # a row past the conv's channels is never read: no tanh for it (LeNet-5's
                # 6-channel conv1 spent 2.4 of its 7.3 us on tanh, a quarter of it there)
                top = builder.basic_block
                with builder.if_then(in_conv[k]):
                    done = [finish(value) for value in sums]
                    inside = builder.basic_block
                row = []
                for value, fin in zip(sums, done, strict=True):
                    phi = builder.phi(_VEC)
                    phi.add_incoming(fin, inside)
                    phi.add_incoming(value, top)
                    row.append(phi)
                vals.append(row)
            for v in range(VN):
                off = builder.load(builder.gep(va.data, [ir.Constant(_I64, v)]))
                split = builder.icmp_signed("==", off, ir.Constant(_I64, SPLIT))
                with builder.if_else(split) as (two_runs, whole):
                    with two_runs:  # lanes [0, a) from cell d1 on, [b, e) from d2 + b on
                        d1, a, d2, b, e = [builder.load(builder.gep(
                            va.data, [ir.Constant(_I64, VN + 5 * v + j)])) for j in range(5)]
                        first = builder.icmp_signed("<", lanes, _splat(builder, a))
                        second = builder.and_(
                            builder.icmp_signed(">=", lanes, _splat(builder, b)),
                            builder.icmp_signed("<", lanes, _splat(builder, e)))  # fmt: skip
                        for k in range(KT):
                            row = builder.mul(ostride_, ir.Constant(_I64, k))
                            keep = _splat(builder, in_conv[k])
                            for d, mask in ((d1, first), (d2, second)):
                                p = builder.gep(outa.data, [builder.add(d, row)])
                                masked_store(builder, vals[k][v], p, builder.and_(mask, keep))
                    with whole:
                        for k in range(KT):
                            kk = ir.Constant(_I64, k)
                            p = builder.select(
                                in_conv[k], builder.gep(bases[v], [builder.mul(strides[v], kk)]),
                                builder.gep(sa.data, [ir.Constant(_I64, k * TW + VL * v)]))
                            builder.store(vals[k][v], builder.bitcast(p, vptr), align=4)

        use_relu, sigmoid = is_act(ACT_RELU), is_act(ACT_SIGMOID)
        with builder.if_else(builder.or_(is_act(ACT_TANH), sigmoid)) as (smooth, plain):
            with smooth:  # tanh, or sigmoid as 0.5*tanh(v/2) + 0.5
                store(lambda v: _smooth(builder, v, sigmoid, half), skip=True)
            with plain:
                store(lambda v: builder.select(  # relu: a NaN stays NaN, as in PyTorch
                    use_relu, builder.select(builder.fcmp_ordered("<", v, zero), zero, v), v))
        return context.get_dummy_value()

    return sig, codegen


def _smooth(builder, v, sigmoid, half):
    """tanh of ``v``, or the sigmoid ``0.5*tanh(v/2) + 0.5`` where ``sigmoid`` (an i1)."""
    t = _emit_tanh(builder, builder.select(sigmoid, builder.fmul(half, v), v))
    return builder.select(sigmoid, builder.fadd(builder.fmul(half, t), half), t)


@intrinsic
def _smooth_row(typingctx, scr, off, b, act):
    """``scr[off : off+TW] = tanh(scr[...] + b)``, or the sigmoid for ``act ==
    ACT_SIGMOID``: ``_uk_direct``'s vector code (``_smooth``), so that a tile stored through
    the scratch gets the bits it would have had stored by the micro-kernel. Which tiles
    are full depends on the batch (images side by side in a block), and an image's outputs
    may not: LeNet-5's tanh convs at batch 1 and 64 differed by an ulp in 2-6 cells an
    image, ``fast_tanh``'s scalar code rounding otherwise. ``b`` is a float32."""
    sig = types.void(scr, off, b, act)

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        bias = _splat(builder, args[2])
        sigmoid = builder.icmp_signed("==", args[3], ir.Constant(args[3].type, ACT_SIGMOID))
        for v in range(VN):
            start = builder.add(args[1], ir.Constant(_I64, VL * v))
            p = builder.bitcast(builder.gep(data, [start]), _VEC.as_pointer())
            value = builder.fadd(builder.load(p, align=4), bias)
            builder.store(_smooth(builder, value, sigmoid, _vconst(0.5)), p, align=4)
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(error_model="numpy")
def _direct_act(act):
    """Whether _uk_direct applies activation ``act`` itself (any other goes through the
    scratch)."""
    return act == ACT_NONE or act == ACT_RELU or act == ACT_TANH or act == ACT_SIGMOID


_uk_full = _make_microkernel(VN)  # a full tile
_uk_2 = _make_microkernel(min(2, VN))  # spatial tails of VL+1 .. 2*VL positions
_uk_1 = _make_microkernel(1)  # spatial tails of 1 .. VL positions


@numba.njit(error_model="numpy")
def _microkernel(rem, x, xoff, offs, ntap, w, woff, scr):
    """The micro-kernel just wide enough for the ``rem >= 1`` flat positions left
    (tiles have at most three vectors; the branches a target's VN cannot take fold away)."""
    if rem > (VN - 1) * VL:
        _uk_full(x, xoff, offs, ntap, w, woff, scr)
    elif rem > VL:
        _uk_2(x, xoff, offs, ntap, w, woff, scr)
    else:
        _uk_1(x, xoff, offs, ntap, w, woff, scr)


@intrinsic
def _address(typingctx, a):
    """The address of ``a``'s first element, as an integer."""

    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.ptrtoint(arr.data, _I64)

    return types.int64(a), codegen


@numba.njit(error_model="numpy")
def _empty_aligned(n):
    """An uninitialised float32 array of ``n`` elements starting on a 64-byte cache line."""
    raw = np.empty(n + 16, np.float32)
    shift = (-_address(raw) % 64) // 4
    return raw[shift : shift + n]


# ---------------------------------------------------------------- weights


def pack_conv_weights(w: np.ndarray, groups: int) -> np.ndarray:
    """Pack ``(K, Cin/groups, KH, KW)`` weights for :func:`conv2d_packed` (once, at compile time).

    Returns a 1-D float32 array laid out ``[group][k_block][tap][KT]`` with
    ``tap = (c, i, j)`` in C order and each group's ``K/groups`` output channels zero-padded
    to a multiple of ``KT``.
    """
    w = np.asarray(w, dtype=np.float32)
    K, cin_g, KH, KW = w.shape
    k_g = K // groups
    nkb = -(-k_g // KT)
    ntap = cin_g * KH * KW
    packed = np.zeros((groups, nkb * KT, ntap), np.float32)
    packed[:, :k_g] = w.reshape(groups, k_g, ntap)
    # (g, kb, KT, tap) -> (g, kb, tap, KT)
    packed = packed.reshape(groups, nkb, KT, ntap).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(packed).reshape(-1)


# ---------------------------------------------------------------- conv2d_packed


@numba.njit(error_model="numpy")
def _phase_used(phase, k, d, s):
    """Whether some tap ``i < k`` (dilation ``d``) reads stride phase ``phase``."""
    for i in range(k):
        if (i * d) % s == phase:
            return True
    return False


@numba.njit(error_model="numpy")
def _image_width(W, OW, pl, sw, KW, dw):
    """``Wq``: the columns one image takes in a row of the phase-split input.

    The smallest width that holds every phase's data columns and every output column, and
    whose reads past the right end land in the next image's (or the next row's) leading
    zero columns of the same phase -- so one zero column serves as both the right padding
    of an image and the left padding of its neighbour (``W + 1`` for a 3x3 "same" conv).
    """
    Wq = OW
    for pw in range(sw):
        if not _phase_used(pw, KW, dw, sw):
            continue
        zeros = (pl - pw + sw - 1) // sw if pl > pw else 0  # leading zero columns
        last_data = (pl + W - 1 - pw) // sw  # last column holding image data
        reach = 0  # furthest column shift of a tap in this phase
        for j in range(KW):
            if (j * dw) % sw == pw:
                reach = max(reach, (j * dw) // sw)
        Wq = max(Wq, last_data + 1, OW + reach - zeros)
    return Wq


@numba.njit(error_model="numpy")
def _images_per_block(N, image_bytes, Wq):
    """Images laid side by side in one flat block: the smallest divisor of ``N`` whose rows
    of ``Wq``-column images reach ``XQ_ROW_FLOATS``, or else the largest, within
    ``XQ_BLOCK_BYTES`` of phase-split input (at least 1)."""
    best = 1
    for nb in range(2, N + 1):
        if best * Wq < XQ_ROW_FLOATS and N % nb == 0 and nb * image_bytes <= XQ_BLOCK_BYTES:
            best = nb
    return best


@numba.njit(error_model="numpy")
def _phase_columns(pw, pl, sw, W, Wq):
    """``(j_lo, j_hi)``: the columns ``j`` of phase ``pw`` whose source column
    ``j*sw + pw - pl`` lies inside the image (``W`` wide)."""
    col0 = pw - pl
    j_lo = min(max(-(col0 // sw), 0), Wq)
    j_hi = max(min((W - 1 - col0) // sw + 1, Wq), j_lo)
    return j_lo, j_hi


@linked_njit(parallel=True, error_model="numpy")
def _split_phases(x, xc0, cin, xq, nb, Hq, Wq, plane, pt, pl, sh, sw, KH, KW, dh, dw):
    """``xq[b, ph, pw, c, i, m, j] = xpad[b*nb + m, xc0+c, i*sh + ph, j*sw + pw]`` (0 in the
    padding).

    ``xq`` is flat; each ``(b, ph, pw, c)`` plane is ``Hq`` rows of ``nb`` images of ``Wq``
    columns side by side, then zeros up to ``plane`` floats. ``xpad`` is the input with
    ``pt`` zero rows on top and ``pl`` zero columns on the left (and as many as needed at the
    bottom/right). Phases that no kernel tap reads (three of the four of a 1x1 stride-2
    conv) are skipped. One task per ``(b, ph, c)`` writes all the column phases of its
    rows.
    """
    for q in numba.prange((x.shape[0] // nb) * sh * cin):
        call_linked(_split_task, np.int64(q), x, xc0, cin, xq, nb, Hq, Wq, plane, pt, pl, sh,
                    sw, KH, KW, dh, dw)  # fmt: skip


@linked_njit(error_model="numpy")
def _split_task(q, x, xc0, cin, xq, nb, Hq, Wq, plane, pt, pl, sh, sw, KH, KW, dh, dw):
    """Task ``q`` of ``_split_phases``: the planes of one ``(b, ph, c)``."""
    H, W = x.shape[2], x.shape[3]
    Wrow = nb * Wq
    c = q % cin
    r = q // cin
    ph = r % sh
    b = r // sh
    if not _phase_used(ph, KH, dh, sh):
        return
    first = ((b * sh + ph) * sw) * cin + c  # plane of column phase 0; phase pw: + pw*cin
    # the split planes' lines asked for to be written first, all at once: the tiles of the
    # last call read them on both threads, and with the two vCPUs on different core
    # complexes a store to a line the other one holds waited ~0.13 us, one line at a time
    # (kernel-notes, twenty-first session). With Winograd's split the same: interleaved, 2
    # threads, near / far vCPUs: ResNet-18 1.001 / 1.012x, CIFAR inception 1.015 /
    # 1.034x, SqueezeNet 1.001 / 1.005x, GoogLeNet 0.991-0.996 / 1.005x
    for pw in range(sw):
        if _phase_used(pw, KW, dw, sw):
            prefetch_for_write(xq, (first + pw * cin) * plane, (first + pw * cin + 1) * plane)
    if sh == 1 and sw == 1 and nb == 1 and pl == 0 and Wq == W:
        # whole rows on both sides (a 1x1 conv on a plane not a multiple of 16 floats, say):
        # one copy a plane and zeros around it, not a copy a row into a zeroed plane (1x1
        # 480->304 at 14x14, one thread: the split 0.08-0.10 -> 0.04-0.07 ms)
        dst = xq[first * plane : (first + 1) * plane]
        i0 = min(pt, Hq)
        i1 = min(pt + H, Hq)
        dst[: i0 * W] = 0.0
        copy_into(dst[i0 * W : i1 * W], x[b, xc0 + c].reshape(H * W))
        dst[i1 * W :] = 0.0
        return
    for pw in range(sw):
        if _phase_used(pw, KW, dw, sw):
            xq[(first + pw * cin) * plane : (first + pw * cin + 1) * plane] = 0.0
    if sw == 1:  # one phase: slice copies, vectorised (3x faster than the loop)
        dst = xq[first * plane : (first + 1) * plane]
        j_lo, j_hi = _phase_columns(np.int64(0), pl, np.int64(1), W, Wq)
        for i in range(Hq):
            row = i * sh + ph - pt
            if 0 <= row < H:
                for m in range(nb):
                    o = i * Wrow + m * Wq
                    copy_into(dst[o + j_lo : o + j_hi],
                              x[b * nb + m, xc0 + c, row, j_lo - pl : j_hi - pl])
        return
    # np.int64: literal arguments would compile these helpers once more per literal
    if sw == 2 and _phase_used(np.int64(0), KW, dw, sw) and _phase_used(np.int64(1), KW, dw,
                                                                          sw):  # fmt: skip
        # both column phases: one pass over each source row splits it into even and odd
        # columns (2.5x faster than a strided pass per phase)
        lo0, hi0 = _phase_columns(np.int64(0), pl, np.int64(2), W, Wq)
        lo1, hi1 = _phase_columns(np.int64(1), pl, np.int64(2), W, Wq)
        lo = max(lo0, lo1)
        hi = max(min(hi0, hi1), lo)
        for i in range(Hq):
            row = i * sh + ph - pt
            if not 0 <= row < H:
                continue
            for m in range(nb):
                src = x[b * nb + m, xc0 + c, row]
                o = i * Wrow + m * Wq
                d0 = xq[first * plane + o : first * plane + o + Wq]
                d1 = xq[(first + cin) * plane + o : (first + cin) * plane + o + Wq]
                for j in range(lo0, lo):  # the edges that only one phase has
                    d0[j] = src[2 * j - pl]
                for j in range(lo1, lo):
                    d1[j] = src[2 * j + 1 - pl]
                for j in range(hi, hi0):
                    d0[j] = src[2 * j - pl]
                for j in range(hi, hi1):
                    d1[j] = src[2 * j + 1 - pl]
                s = src[2 * lo - pl :]
                e0 = d0[lo:hi]
                e1 = d1[lo:hi]
                for j in range(hi - lo):
                    e0[j] = s[2 * j]
                    e1[j] = s[2 * j + 1]
        return
    for pw in range(sw):  # any other stride: a strided pass per phase
        if not _phase_used(pw, KW, dw, sw):
            continue
        dst = xq[(first + pw * cin) * plane : (first + pw * cin + 1) * plane]
        j_lo, j_hi = _phase_columns(pw, pl, sw, W, Wq)
        col0 = pw - pl
        for i in range(Hq):
            row = i * sh + ph - pt
            if 0 <= row < H:
                for m in range(nb):
                    src = x[b * nb + m, xc0 + c, row]
                    o = i * Wrow + m * Wq
                    if sw == 2:  # one phase of stride 2 (a 1x1 stride-2 conv): a
                        # constant stride vectorises (64->128 channels at 56x56, one
                        # thread: 1.47x the time of the same conv on an input already
                        # subsampled with the loop below, 1.24x so)
                        d = dst[o + j_lo : o + j_hi]
                        e = src[j_lo * 2 + col0 :]
                        for j in range(j_hi - j_lo):
                            d[j] = e[2 * j]
                    else:
                        for j in range(j_lo, j_hi):
                            dst[o + j] = src[j * sw + col0]


@numba.njit(error_model="numpy")
def _tile_segments(scr, buf, c0, n0, kvalid, p0, pa, pb, Wrow, Wq, OW, OH, mode, res, rc0,
                   bias, bk):  # fmt: skip
    """Walk the output cells of flat positions ``[pa, pb)`` of the tile at ``p0`` (``TW``
    positions from ``p0``), rows ``k < kvalid`` of ``scr`` going to channels ``c0 + k`` of
    ``buf``.

    Flat position ``p`` is output row ``p // Wrow`` of image ``n0 + (p % Wrow) // Wq``,
    column ``p % Wrow % Wq``; only the columns ``ow < OW`` of rows ``oh < OH`` are cells.
    ``mode`` 0: copy the tile into ``buf``; 1: add ``buf``'s cells into the tile; 2 and 3:
    store ``(tile + bias[bk + k]) + res[.., rc0 + k, ..]`` into ``buf``, 3 through relu.
    """
    p = pa
    p1 = pb
    zero = np.float32(0.0)
    while p < p1:
        oh = p // Wrow
        if oh >= OH:
            break
        col = p - oh * Wrow
        m = col // Wq
        ow = col - m * Wq
        end = min(p1, p + Wq - ow)  # end of this image's part of the row
        cnt = min(end, p + OW - ow) - p
        for k in range(kvalid):
            seg = scr[k * TW + p - p0 : k * TW + p - p0 + cnt]
            cells = buf[n0 + m, c0 + k, oh, ow : ow + cnt]
            if mode == 0:
                for t in range(cnt):
                    cells[t] = seg[t]
            elif mode == 1:
                for t in range(cnt):
                    seg[t] += cells[t]
            else:
                skip = res[n0 + m, rc0 + k, oh, ow : ow + cnt]
                b = np.float32(bias[bk + k])
                if mode == 2:
                    for t in range(cnt):
                        cells[t] = (seg[t] + b) + skip[t]
                else:
                    for t in range(cnt):
                        cells[t] = max((seg[t] + b) + skip[t], zero)
        p = end


@numba.njit(error_model="numpy")
def _store_tile(scr, out, n0, ochan, kvalid, bias, bk, res, rc0, p0, Wrow, Wq, OW, OH, act,
                alpha, beta, act_from):  # fmt: skip
    """Write ``scr`` (``kvalid`` rows of ``TW`` flat positions from ``p0``) to ``out``.

    Row ``k`` goes to channel ``ochan + k`` with ``bias[bk + k]`` added, then (if ``rc0 >=
    0``) channel ``rc0 + k`` of ``res`` at the same cell, then the activation applied (to
    rows with ``bk + k >= act_from`` only): the same float32 operations, in the same order,
    as conv, add and activation apart.
    """
    tile_act = act if bk >= act_from else ACT_NONE  # the whole tile's, where it has one
    uniform = bk >= act_from or bk + kvalid <= act_from
    if rc0 >= 0 and uniform and (tile_act == ACT_NONE or tile_act == ACT_RELU):
        # one pass: bias, skip, relu
        _tile_segments(scr, out, ochan, n0, kvalid, p0, p0, p0 + TW, Wrow, Wq, OW, OH,
                       2 if tile_act == ACT_NONE else 3, res, rc0, bias, bk)  # fmt: skip
        return
    if rc0 >= 0:  # bias, then the residual, then (below) the activation
        for k in range(kvalid):
            b = np.float32(bias[bk + k])
            for t in range(k * TW, (k + 1) * TW):
                scr[t] += b
        _tile_segments(scr, res, rc0, n0, kvalid, p0, p0, p0 + TW, Wrow, Wq, OW, OH, np.int64(1),
                       res, rc0, bias, bk)  # fmt: skip
    for k in range(kvalid):
        # the whole row at once (junk columns too, never stored): one vectorised pass
        # rather than one short one per output row segment (a call, not inlined: the
        # activations are much of the kernel's compile time)
        b = np.float32(0.0) if rc0 >= 0 else bias[bk + k]
        row_act = act if bk + k >= act_from else ACT_NONE
        if row_act == ACT_TANH or row_act == ACT_SIGMOID:
            _smooth_row(scr, np.int64(k * TW), b, row_act)
        else:
            bias_activate_inplace(scr[k * TW : (k + 1) * TW], b, row_act, alpha, beta)
    _tile_segments(scr, out, ochan, n0, kvalid, p0, p0, p0 + TW, Wrow, Wq, OW, OH, np.int64(0),
                   res, rc0, bias, bk)  # fmt: skip


@numba.njit(error_model="numpy")
def _vector_positions(P, ntiles, Wrow, Wq, OW, OH, one_image, image_stride):
    """Where each vector of the first ``ntiles`` tiles lands in ``out``, as ``vpos`` and
    ``vsplit``. For vector ``i`` (``v`` of tile ``t``: flat positions ``TW*t + VL*v`` on):

    * ``vpos[i] = m*image_stride + oh*OW + ow`` -- image ``m`` of the block, its row and
      column -- when its ``VL`` outputs are contiguous cells of one output plane (no junk
      column or row's end among them, or, with ``one_image`` and ``Wq == OW``, rows that
      run on into the next);
    * ``vpos[i] = SPLIT`` when its outputs are at most two runs of cells, a row's (or an
      image's) last ones and the next one's first, with junk columns between or after
      them: ``vsplit[5*i : 5*i+5] = (d1, a, d2, b, e)``, lanes ``j < a`` going to cell
      ``d1 + j`` and lanes ``b <= j < e`` to cell ``d2 + j``;
    * else -1 (three runs, when a vector is wider than an image's row; and every vector of
      a last tile short of ``TW`` positions -- which conv2d_packed overrides for the last
      tile it shifts to the plane's end).
    """
    vpos = np.empty(ntiles * VN, np.int64)
    vsplit = np.empty(ntiles * VN * 5 if SPLIT_STORES else 0, np.int64)  # read where SPLIT
    flat_rows = one_image and Wq == OW
    oh = 0
    col = 0  # p - oh*Wrow, with p = VL*i the vector's first position
    m = 0  # col = m*Wq + ow, counted on rather than divided out (a division a vector was
    ow = 0  # most of this loop's time: LeNet-5's first conv at batch 64, 0.039 -> 0.020 ms)
    for i in range(ntiles * VN):
        vpos[i] = -1
        if i // VN * TW + TW <= P and oh < OH:
            if flat_rows or ow + VL <= OW:
                vpos[i] = m * image_stride + oh * OW + ow
            else:
                a = max(0, min(VL, OW - ow))  # the run this image's row still has
                b = min(VL, Wq - ow)  # the lane where the next image's (or row's) part starts
                e = b
                d2 = 0
                if b < VL:
                    col2 = col + b
                    oh2 = oh
                    if col2 >= Wrow:
                        col2 -= Wrow
                        oh2 += 1
                    if oh2 < OH:
                        e = min(VL, b + OW)
                        d2 = (col2 // Wq) * image_stride + oh2 * OW - b
                if SPLIT_STORES and (b + Wq >= VL or e == b):  # no third run
                    vpos[i] = SPLIT
                    vsplit[5 * i] = m * image_stride + oh * OW + ow
                    vsplit[5 * i + 1] = a
                    vsplit[5 * i + 2] = d2
                    vsplit[5 * i + 3] = b
                    vsplit[5 * i + 4] = e
        col += VL
        ow += VL
        while ow >= Wq:
            ow -= Wq
            m += 1
        while col >= Wrow:  # Wrow = nb*Wq
            col -= Wrow
            m -= Wrow // Wq
            oh += 1
    return vpos, vsplit


@cached_njit(parallel=True, error_model="numpy")
def conv2d_packed(x, xc0, cin, out, oc0, K, wpk, bias, KH, KW, pt, pl, sh, sw, dh, dw, groups,
                  act, alpha, beta, res, rc0, act_from):  # fmt: skip
    """``out[:, oc0:oc0+K] = act(conv(x[:, xc0:xc0+cin], w) + bias [+ res[:, rc0:rc0+K]])``
    with packed weights.

    ``x`` is ``(N, Cx, H, W)``, ``out`` ``(N, Cout, OH, OW)`` (float32, C-contiguous);
    ``wpk = pack_conv_weights(w, groups)`` for ``w`` of shape ``(K, cin/groups, KH, KW)``;
    ``bias`` is ``(K,)`` (zeros for none). ``pt, pl`` are the top and left zero padding; the
    bottom/right padding is whatever ``OH, OW`` imply. ``act`` is an ``ACT_*`` code,
    ``alpha`` and ``beta`` its arguments. ``res`` (same shape as ``out``) is the residual added
    before the activation when ``rc0 >= 0``; with ``rc0 < 0`` it is not read (pass ``out``).
    The activation applies to output channels ``act_from`` up only (0: all of them; the
    wide conv of sibling 1x1 convs whose first members have none, fuse-1x1-siblings).
    Reads channels ``[xc0, xc0+cin)`` of ``x`` only and writes channels ``[oc0, oc0+K)`` of
    ``out`` only; ``out`` may not overlap those inputs.
    See the module docstring for the algorithm.
    """
    N, Cx, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    cin_g = cin // groups
    k_g = K // groups
    nkb = (k_g + KT - 1) // KT
    ntap = cin_g * KH * KW
    offs = np.empty(ntap, np.int64)
    work = N * K * OH * OW * ntap  # multiply-adds
    serial = work < SERIAL_WORK  # on this thread alone: a small conv
    # As is: a 1x1 stride-1 unpadded conv reads the input buffer itself (rows of width W)
    # when its planes keep the micro-kernel's vector loads on whole cache lines, or when
    # too few output channels share the cost of the copy that would align them (a load
    # straddling two lines costs two), or when it has at most THIN_TAPS input channels,
    # whose few loads a tile cost less than the copy's pass. Interleaved A/B, copied ->
    # as is: 512->1000 at 13x13 0.81x at batch 1 (1.00x at batch 8); 832->128 at 7x7
    # 1.21x (batch 8 1.15x), 480->192 at 14x14 1.02x (1.17x), 384->64 at 13x13 1.12x,
    # 48->192 1.08x, 16->64 at 55x55 1.14x (1.68x). (An earlier measurement: 832->624 at
    # 7x7 64 GFLOP/s as is, 75 copied.)
    as_is = (KH == 1 and KW == 1 and sh == 1 and sw == 1 and pt == 0 and pl == 0
             and OH == H and OW == W
             and (ntap <= THIN_TAPS
                  or (((H * W) % 16 == 0 or K < AS_IS_CHANNELS)
                      and ((H * W) % ALIAS_PLANE_FLOATS != 0 or K < ALIAS_CHANNELS))))  # fmt: skip
    if as_is:
        nb = 1
        Wq = Wrow = W
        P = H * W  # flat positions per block of images
        xq = x.reshape(N * Cx * P)
        blk_stride = Cx * P
        x_start = xc0 * P
        g_stride = cin_g * P
        for t in range(ntap):
            offs[t] = t * P
    else:
        Wq = _image_width(W, OW, pl, sw, KW, dw)
        Hq = OH + ((KH - 1) * dh) // sh + 1  # +1: junk columns of the last row spill over
        nb = _images_per_block(N, sh * sw * cin * Hq * Wq * 4, Wq)
        Wrow = nb * Wq
        # planes start on a cache line and are an odd number of lines apart, so that a
        # tile's taps (one line a plane) spread over all of L1's sets: 1x1 512->1000 at
        # 13x13 had planes of 12 lines, its 512 taps in 16 sets of 64 (interleaved, 2
        # threads: 1.01x; SqueezeNet 1.02x, GoogLeNet 1.01x, the 7x7/2 stem 1.02x)
        lines = (Hq * Wrow + 15) // 16
        lines += 1 - lines % 2
        plane = lines * 16
        P = OH * Wrow
        blk_stride = sh * sw * cin * plane
        # the tail lets the last tile of the last plane read (junk) past the end: a tile
        # and a vector past it, plus the widest column shift of a tap (a wide dilation)
        xq = _empty_aligned((N // nb) * blk_stride + TW + VL + ((KW - 1) * dw) // sw)
        for i in range((N // nb) * blk_stride, xq.size):  # a loop: an array expression
            xq[i] = 0.0                                   # here would be one more parfor
        # called through a symbol (jit.call_linked), as _conv_chunk is below
        if serial:  # _split_phases on this thread alone
            for q in range((N // nb) * sh * cin):
                call_linked(_split_task, q, x, xc0, cin, xq, nb, Hq, Wq, plane, pt, pl, sh, sw,
                            KH, KW, dh, dw)  # fmt: skip
        else:
            call_linked(_split_phases, x, xc0, cin, xq, nb, Hq, Wq, plane, pt, pl, sh, sw, KH,
                        KW, dh, dw)  # fmt: skip
        x_start = 0
        g_stride = cin_g * plane
        # a window's offsets first, then each channel's: no division a tap (the loop over
        # taps dividing t out took ~0.55 us a channel of a 5x5 conv, LeNet-5's conv2 40%)
        for i in range(KH):
            for j in range(KW):
                phase = ((i * dh) % sh) * sw + (j * dw) % sw
                offs[i * KW + j] = (phase * cin * plane + ((i * dh) // sh) * Wrow
                                    + (j * dw) // sw)  # fmt: skip
        for t in range(KH * KW, ntap):
            offs[t] = offs[t - KH * KW] + plane
    ntiles = (P + TW - 1) // TW
    wblock = ntap * KT
    # k blocks in groups whose weights stay in L2 while the group's tiles sweep the input,
    # each tile's input panel read by the group's k blocks one after the other. A conv of
    # at most THIN_TAPS taps keeps one k block a group (SqueezeNet's 3x3/2 conv1 lost 25%
    # with all its channels a tile), except a 1x1 read as is: its items then run tile by
    # tile, so each thread (taking chunks from its end) writes every channel of its own
    # positions -- the positions the layers before and after it handle on that thread --
    # not half the channels at every position. SqueezeNet's 16->64 at 55x55 1.30-1.37x,
    # 32->128 at 27x27 1.13-1.15x, the network 1.021x; with the two vCPUs far apart
    # (benchmarks/experiments/placement.py) 2.2-2.5x and 1.5-1.6x, the network 1.064x;
    # MobileNet-v2 1.005x / 1.057x (AVX-512, 2 threads, interleaved)
    ngrp = max(1, (nkb * wblock * 4 + WEIGHT_GROUP_BYTES - 1) // WEIGHT_GROUP_BYTES)
    kgrp = (nkb + ngrp - 1) // ngrp if ntap > THIN_TAPS or as_is else 1
    ngrp = (nkb + kgrp - 1) // kgrp
    nitems = (N // nb) * groups * ngrp * ntiles * kgrp
    nchunks = 1 if serial else min(nitems, NCHUNK, max(4, work // CHUNK_WORK))
    # per-chunk scratch, allocated once per call rather than once per chunk
    scratch = np.empty((nchunks, KT * TW), np.float32)
    # where _uk_direct stores a tile's vectors: VN offsets, then VN split descriptors
    voffs = np.empty((nchunks, 6 * VN), np.int64)
    # As is, a last, partial tile is computed as the positions up to the plane's end
    # instead, overlapping the tile before it (the same sums, stored again): the full tile
    # (TW positions, stored straight from the micro-kernel) when it has more than (VN-1)*VL
    # positions, else its whole vectors. It reads nothing past its plane (2 threads,
    # interleaved: SqueezeNet's 1x1s at 13x13 and 27x27 0.99-1.11x, 48->192 1.11x, 32->128
    # 1.06x, full tiles). Only a plane shorter than a tile still has its taps copied to a
    # panel here, once per call, where its reads would pass the end of the buffer (the
    # last (image block, group), or a few more on planes of fewer than VL floats). The
    # panels had served every partial tile: a scalar copy of its taps on this thread, while
    # the others wait -- shifting the whole vectors instead made SqueezeNet's squeezes at
    # 13x13 (256..512 channels in, 25 floats a tap) 1.5-1.65x faster, the network 1.026x
    # (AVX-512, 2 threads, interleaved).
    tail = P % TW
    shift = as_is and tail > (VN - 1) * VL and P >= TW
    pstride = VL * ((tail + VL - 1) // VL) if as_is and P < TW else 0
    npairs = (N // nb) * groups
    first_over = npairs  # the first (image block, group) whose last tile reads past the end
    if pstride:
        last_xoff = x_start + (ntiles - 1) * TW + offs[ntap - 1] + pstride
        while first_over > 0 and ((first_over - 1) // groups * blk_stride
                                  + (first_over - 1) % groups * g_stride
                                  + last_xoff > xq.size):  # fmt: skip
            first_over -= 1
    panels = np.empty((npairs - first_over, ntap * pstride), np.float32)
    for i in range(npairs - first_over):
        pair = first_over + i
        xoff = (pair // groups) * blk_stride + x_start + (pair % groups) * g_stride
        for t in range(ntap):
            src = xoff + (ntiles - 1) * TW + offs[t]
            for j in range(tail):  # loops: an array expression here would be a parfor
                panels[i, t * pstride + j] = xq[src + j]
    panel_offs = np.empty(ntap if pstride else 0, np.int64)
    for t in range(panel_offs.size):
        panel_offs[t] = t * pstride
    # A full tile with no residual and no activation, relu, tanh or sigmoid (_direct_act):
    # the micro-kernel applies the epilogue and stores each vector whose outputs are
    # contiguous in an output plane itself -- all of them with no junk columns and one image
    # a block (as is, or a copied 1x1), else those inside one row of one image -- and the
    # rest to the scratch, copied cell by cell (1x1 convs up to 25% faster than through the
    # scratch; storing the vectors of tiles that cross a row's end so, rather than the
    # whole tile through the scratch: 3x3 3->64 at 32x32 1.25-1.3x, 3x3/2 3->64 at 224x224
    # 1.14-1.19x, stride-2 3x3 and 5x5 layers 2-12%; on the AVX2 host masked stores of
    # whole tiles measured no faster than the scratch). A vector of two runs of cells takes
    # two masked stores where SPLIT_STORES (AVX-512, 128-bit targets)
    direct = rc0 < 0 and _direct_act(act)
    vpos, vsplit = _vector_positions(P, ntiles if direct else 0, Wrow, Wq, OW, OH, nb == 1,
                                     out.shape[1] * OH * OW)  # fmt: skip
    if shift and direct:  # as is: one image a block, flat positions
        for v in range(VN):
            vpos[(ntiles - 1) * VN + v] = P - TW + VL * v
    out_flat = out.reshape(out.size)
    if serial:
        call_linked(_conv_chunk, 0, nitems, scratch[0], voffs[0], panels, first_over, xq, offs,
                    ntap, wpk, out, out_flat, oc0, bias, act, alpha, beta, res, rc0, act_from,
                    ntiles, nkb, kgrp, ngrp, groups, k_g, wblock, P, Wrow, Wq, OW, OH, nb,
                    blk_stride, x_start, g_stride, as_is, pstride, panel_offs, direct,
                    vpos, vsplit)  # fmt: skip
        return
    # chunks handed out as threads ask (sched.take_chunk): the first half of the prange's
    # iterations from the front, the second half from the back, each thread's first
    # iteration taking chunks until none are left. On the AVX2 host plain first-come
    # chunks beat static halves (GoogLeNet 1.01x, ResNet-18 1.02x: a core slowed by other
    # load no longer holds up the other); on this AVX-512 host static halves beat them
    # (SqueezeNet 1.03-1.09x, GoogLeNet 1.00-1.06x, LeNet-5 b64 1.08x), each thread keeping
    # to contiguous tiles and k blocks; from both ends matched static (0.99-1.04x) and
    # kept the hand-out
    counters = zeroed(3)
    for worker in numba.prange(nchunks):
        from_back = 2 * worker >= nchunks
        chunk = take_chunk(counters, nchunks, from_back)
        while chunk >= 0:
            call_linked(_conv_chunk, nitems * chunk // nchunks, nitems * (chunk + 1) // nchunks,
                        scratch[chunk], voffs[chunk], panels, first_over, xq, offs, ntap, wpk,
                        out, out_flat, oc0, bias, act, alpha, beta, res, rc0, act_from, ntiles,
                        nkb, kgrp, ngrp, groups, k_g, wblock, P, Wrow, Wq, OW, OH, nb,
                        blk_stride, x_start, g_stride, as_is, pstride, panel_offs, direct,
                        vpos, vsplit)  # fmt: skip
            chunk = take_chunk(counters, nchunks, from_back)


# Not inlined, and neither are the helpers it calls: the prange loop of conv2d_packed only
# calls this, so Numba's parallel passes (which copy and analyse the loop body several
# times) see one call, and no helper's IR is copied into its callers. conv2d_packed's
# cold compile, on a loaded machine: 47.8 CPU s with every helper inlined into the loop
# body, 46.6 with the body a call but its helpers inlined, 29-33 with nothing inlined;
# GoogLeNet at one thread ran as fast as before (83-104 against 89-100 ms CPU, noisy).
# Called through a symbol (jit.call_linked), not linked into conv2d_packed and its loop
# body, whose code LLVM then optimised and generated again: 30 -> 16 s (this chunk ~6 s,
# the phase split ~4 s); GoogLeNet's outputs bit for bit the same, its speed too.
@linked_njit(error_model="numpy")
def _conv_chunk(first, last, scr, voff, panels, first_over, xq, offs, ntap, wpk, out, out_flat,
                oc0, bias, act, alpha, beta, res, rc0, act_from, ntiles, nkb, kgrp, ngrp, groups,
                k_g, wblock, P, Wrow, Wq, OW, OH, nb, blk_stride, x_start, g_stride, as_is,
                pstride, panel_offs, direct, vpos, vsplit):  # fmt: skip
    """Work items ``[first, last)`` of conv2d_packed (one chunk): one micro-tile each, in
    the order (image block, group, k-block group, tile, k block of the group)."""
    # the item's indices, counted on from the first item's rather than divided out of each
    # (a thin conv's item is ~100 cycles of arithmetic; six divisions were as many again)
    n_kbi = first % kgrp
    r = first // kgrp
    n_tile = r % ntiles
    r //= ntiles
    n_kgi = r % ngrp
    r //= ngrp
    n_g = r % groups
    n_blk = r // groups
    for _ in range(first, last):
        kbi, tile, kgi, g, blk = n_kbi, n_tile, n_kgi, n_g, n_blk
        n_kbi += 1
        if n_kbi == kgrp:
            n_kbi = 0
            n_tile += 1
            if n_tile == ntiles:
                n_tile = 0
                n_kgi += 1
                if n_kgi == ngrp:
                    n_kgi = 0
                    n_g += 1
                    if n_g == groups:
                        n_g = 0
                        n_blk += 1
        kb = kgi * kgrp + kbi
        if kb >= nkb:
            continue  # the last group's missing k blocks
        p0 = tile * TW
        rem = P - p0
        if rem < TW and pstride == 0 and as_is:  # conv2d_packed's shift: no panel
            rem = TW if rem > (VN - 1) * VL else VL * ((rem + VL - 1) // VL)
            p0 = P - rem
        xoff = blk * blk_stride + x_start + g * g_stride + p0
        woff = (g * nkb + kb) * wblock
        k0 = g * k_g + kb * KT
        kvalid = min(KT, k_g - kb * KT)
        if direct and rem >= TW and (k0 >= act_from or k0 + KT <= act_from):
            # vectors whose VL outputs are contiguous in out, or two runs of cells there,
            # are stored there by the micro-kernel, the others (three runs) to scr and
            # copied cell by cell below
            stored = 0
            base = (blk * nb * out.shape[1] + oc0 + k0) * OH * OW
            for v in range(VN):
                i = tile * VN + v
                voff[v] = -1
                if vpos[i] >= 0:
                    voff[v] = base + vpos[i]
                    stored += 1
                elif vpos[i] == SPLIT:
                    voff[v] = SPLIT
                    voff[VN + 5 * v] = base + vsplit[5 * i]
                    voff[VN + 5 * v + 2] = base + vsplit[5 * i + 2]
                    for j in (1, 3, 4):
                        voff[VN + 5 * v + j] = vsplit[5 * i + j]
                    stored += 1
            if stored > 0:
                _uk_direct(xq, xoff, offs, ntap, wpk, woff, out_flat, voff, OH * OW, bias, k0,
                           act if k0 >= act_from else ACT_NONE, scr, kvalid)  # fmt: skip
                if stored < VN:
                    for v in range(VN):
                        if voff[v] == -1:
                            # np.int64: literal arguments would compile another
                            # _tile_segments (one signature for every call, ~1-2 s each)
                            _tile_segments(scr, out, oc0 + k0, blk * nb, kvalid, p0,
                                           p0 + VL * v, p0 + VL * (v + 1), Wrow, Wq, OW, OH,
                                           np.int64(0), out, np.int64(0), bias,
                                           np.int64(0))  # fmt: skip
                continue
        if as_is and rem < TW and blk * groups + g >= first_over:
            _microkernel(rem, panels[blk * groups + g - first_over], np.int64(0), panel_offs,
                         ntap, wpk, woff, scr)  # fmt: skip
        else:
            _microkernel(rem, xq, xoff, offs, ntap, wpk, woff, scr)
        _store_tile(scr, out, blk * nb, oc0 + k0, kvalid, bias, k0, res,
                    rc0 + k0 if rc0 >= 0 else -1, p0, Wrow, Wq, OW, OH, act, alpha, beta,
                    act_from)  # fmt: skip
