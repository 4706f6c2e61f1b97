"""Direct 2-D convolution with output channels in the vector lanes ("lanes" kernel).

Same maths, tensor convention, arguments and epilogue as
:func:`cnnc.kernels.fastconv.conv2d_packed` (one group only); which of the two a conv
runs is decided by ``cnnc.backend.lanes_runs``. docs/kernel-notes.md keeps the
measurements behind the choice.

The packed kernel puts flat output positions in the lanes: a tap's input for ``VL``
positions is one vector load, which needs a phase-split copy of the input for a stride and
computes junk columns between rows (a valid 5x5 conv on 14x14 planes computes 14 columns
a row for 10 outputs). This one puts output channels in the lanes, as ONNX Runtime's NCHWc
kernels do, but reads and writes plain NCHW tensors:

1. The input is read as it is, or (with padding) copied once into a zero-padded buffer
   (``_pad_task``). Output position ``p = (oh, ow)`` of an image reads tap ``t = (c, i, j)``
   at ``base[p] + off[t]`` of that buffer, with ``base[p] = oh*sh*Wp + ow*sw`` and
   ``off[t] = (c*Hp + i*dh)*Wp + j*dw``: a stride or a dilation costs nothing, and there
   are no junk columns, as a tile's positions are any ``NP`` consecutive flat positions
   (across rows too).
2. Micro-kernel (``_lanes_tile``, vector IR as fastconv's): a tile of ``KB = KV*VL``
   output channels x ``NP`` positions in ``KV x NP`` accumulators; per tap ``KV`` vector
   loads of packed weights (``[k_block][tap][KB]``), ``NP`` broadcast input floats and
   ``KV*NP`` FMAs (AVX2: 2 x 6, 12 of 16 registers, the tile 16 channels x 6 positions).
3. Store: the tile (positions x channels) goes to a scratch, and each channel's ``NP``
   values, contiguous in its output plane, get bias, residual and activation and are
   written to ``out`` (no residual and no activation or relu: straight from the scratch).

Work items ``(image, k block, group of tiles)`` in that order -- a k block's weights stay
in L2 while its tiles sweep the image; in an item, each block of taps (its weights in L1)
runs over the group's tiles, their partial sums kept in the scratch -- are cut into
chunks handed out as the threads ask (``sched.next_chunk``); a conv of fewer than
``SERIAL_WORK`` multiply-adds runs on the calling thread alone.
"""

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..backend import current_target
from .elementwise import ACT_NONE, ACT_RELU, SERIAL_WORK, bias_activate_inplace
from .fastconv import _I64, _VEC, NCHUNK, _splat, emit_tap_loop, vector_fma
from .jit import cached_njit, call_linked, linked_njit
from .sched import next_chunk, zeroed

TARGET = current_target()
VL = TARGET.lanes
KV = TARGET.lanes_vectors  # vectors of output channels a tile
NP = TARGET.lanes_positions  # output positions a tile
KB = KV * VL  # output channels a tile (a k block)
# A conv of more than 2 * TAP_BLOCK taps runs them in blocks of TAP_BLOCK (8 KB of weights,
# in L1) over a group of TILE_GROUP tiles (their partial sums, 6 KB, in the scratch),
# rather than every tap of one tile after the other (each tile streaming all its k
# block's weights from L2). Interleaved in one process, 2 threads, AVX2, batch 1, against
# that: 3x3 512->512 at 7x7 1.03-1.16x, 1x1 832->448 at 7x7 1.13-1.20x, 3x3/2 64->128 at
# 56x56 1.03-1.11x, 256->512 at 14x14 1.05x, 128->256 at 28x28 0.97-1.02x (in a scratch
# copy: blocks of 64 taps x 16 tiles, 128 x 8 and 256 x 16 alike). Fewer taps stay one
# block, a tile at a time: LeNet-5's 150 in groups measured 0.84-0.88x at batch 64 (but
# this small layer moves by 10-15% between two copies of one code in one process).
TAP_BLOCK = 2048 // KB
TILE_GROUP = max(1, 1536 // (NP * KB))


def pack_lanes_weights(w: np.ndarray) -> np.ndarray:
    """Pack ``(K, Cin, KH, KW)`` weights for :func:`conv2d_lanes` (once, at compile time):
    1-D float32, ``[k_block][tap][KB]`` with ``tap = (c, i, j)`` in C order and ``K``
    zero-padded to a multiple of ``KB``."""
    w = np.asarray(w, dtype=np.float32)
    K = w.shape[0]
    ntap = w[0].size
    nkb = -(-K // KB)
    packed = np.zeros((nkb * KB, ntap), np.float32)
    packed[:K] = w.reshape(K, ntap)
    return np.ascontiguousarray(packed.reshape(nkb, KB, ntap).transpose(0, 2, 1)).reshape(-1)


@intrinsic
def _lanes_tile(typingctx, x, xoff, bases, boff, offs, ntap, w, woff, scr, fresh):
    """One tile: ``scr[j*KB + k] (+)= sum_t w[woff + t*KB + k] * x[xoff + bases[boff+j] +
    offs[t]]`` for ``t < ntap``, ``j < NP``, ``k < KB``: ``=`` when ``fresh`` (an integer,
    not 0: the first block of taps), else ``+=``. No bounds checks: the caller keeps every
    read inside ``x``. (Transposing the tile in registers, so that each channel's positions
    were contiguous in the scratch, measured 0.88-1.03x against this.)"""
    sig = types.void(x, xoff, bases, boff, offs, ntap, w, woff, scr, fresh)

    def codegen(context, builder, sig, args):
        xa, ba, oa, wa, sa = [context.make_array(sig.args[i])(context, builder, args[i])
                              for i in (0, 2, 4, 6, 8)]  # fmt: skip
        xoff_, boff_, ntap_, woff_ = args[1], args[3], args[5], args[7]
        fma = vector_fma(builder)
        rows = []  # each position's input pointer, before the tap's offset
        for j in range(NP):
            b = builder.load(builder.gep(ba.data, [builder.add(boff_, ir.Constant(_I64, j))]))
            rows.append(builder.gep(xa.data, [builder.add(xoff_, b)]))
        wbase = builder.gep(wa.data, [woff_])
        # the accumulators start from zero, or from the scratch's partial sums (earlier
        # tap blocks): a branch, not a select, so a fresh tile reads nothing
        zero = ir.Constant(_VEC, None)
        top = builder.basic_block
        partial = builder.append_basic_block("lanes_partial")
        entry = builder.append_basic_block("lanes_entry")
        builder.cbranch(builder.icmp_signed("!=", args[9], ir.Constant(args[9].type, 0)),
                        entry, partial)
        builder.position_at_end(partial)
        loaded = {}
        for k in range(KV):
            for j in range(NP):
                p = builder.gep(sa.data, [ir.Constant(_I64, j * KB + k * VL)])
                loaded[k, j] = builder.load(builder.bitcast(p, _VEC.as_pointer()), align=4)
        builder.branch(entry)
        builder.position_at_end(entry)
        start = {}
        for key, value in loaded.items():
            start[key] = builder.phi(_VEC)
            start[key].add_incoming(zero, top)
            start[key].add_incoming(value, partial)

        def tap(t, acc):
            off = builder.load(builder.gep(oa.data, [t]))
            wp = builder.gep(wbase, [builder.mul(t, ir.Constant(_I64, KB))])
            wv = [builder.load(builder.bitcast(builder.gep(wp, [ir.Constant(_I64, VL * k)]),
                                               _VEC.as_pointer()), align=4)
                  for k in range(KV)]  # fmt: skip
            new = list(acc)
            for j in range(NP):
                xb = _splat(builder, builder.load(builder.gep(rows[j], [off]), align=4))
                for k in range(KV):
                    new[k * NP + j] = builder.call(fma, [wv[k], xb, acc[k * NP + j]])
            return new

        keys = [(k, j) for k in range(KV) for j in range(NP)]
        finals = dict(zip(keys, emit_tap_loop(builder, ntap_, [start[key] for key in keys],
                                              tap), strict=True))
        for (k, j), fin in finals.items():
            p = builder.gep(sa.data, [ir.Constant(_I64, j * KB + k * VL)])
            builder.store(fin, builder.bitcast(p, _VEC.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@linked_njit(error_model="numpy")
def _pad_task(q, x, xc0, cin, xp, Hp, Wp, pt, pl):
    """Plane ``q = (n, c)`` of the zero-padded input: ``xp[q]`` (``Hp x Wp``) is channel
    ``xc0 + c`` of image ``n`` with ``pt`` zero rows above and ``pl`` zero columns left,
    zeros below and right."""
    H, W = x.shape[2], x.shape[3]
    n = q // cin
    c = q % cin
    dst = q * Hp * Wp
    # loops, not slice assignments: an array assigned to a slice compiles shape checks
    # whose error messages format strings (~5 s of this kernel's cold compile)
    for i in range(Hp):
        row = dst + i * Wp
        if pt <= i < pt + H:
            for j in range(pl):
                xp[row + j] = 0.0
            for j in range(W):
                xp[row + pl + j] = x[n, xc0 + c, i - pt, j]
            for j in range(pl + W, Wp):
                xp[row + j] = 0.0
        else:
            for j in range(Wp):
                xp[row + j] = 0.0


@cached_njit(parallel=True, error_model="numpy")
def conv2d_lanes(x, xc0, cin, out, oc0, K, wpk, bias, KH, KW, pt, pl, sh, sw, dh, dw, groups,
                 act, alpha, beta, res, rc0, act_from):  # fmt: skip
    """As :func:`cnnc.kernels.fastconv.conv2d_packed` (the same arguments; ``groups`` must
    be 1), with weights ``wpk = pack_lanes_weights(w)``. See the module docstring."""
    N, Cx, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    Hp = max(H + pt, (OH - 1) * sh + (KH - 1) * dh + 1)
    Wp = max(W + pl, (OW - 1) * sw + (KW - 1) * dw + 1)
    ntap = cin * KH * KW
    serial = N * K * OH * OW * ntap < SERIAL_WORK
    if pt == 0 and pl == 0 and Hp == H and Wp == W:  # read as it is
        xp = x.reshape(x.size)
        image = Cx * H * W
        start = xc0 * H * W
    else:
        # in parallel, plane by plane: on one thread the copy kept the second core idle
        # (AVX-512 host, 2 threads, interleaved: 3x3/2 128->256 at 28x28 and 64->128 at
        # 56x56 1.10x, 3x3 512->512 at 7x7 1.09x, ResNet-18 b1 1.03-1.05x, b8 1.01x)
        xp = np.empty(N * cin * Hp * Wp, np.float32)
        if serial:
            for q in range(N * cin):
                call_linked(_pad_task, q, x, xc0, cin, xp, Hp, Wp, pt, pl)
        else:
            for q in numba.prange(N * cin):
                call_linked(_pad_task, np.int64(q), x, xc0, cin, xp, Hp, Wp, pt, pl)
        image = cin * Hp * Wp
        start = 0
    # nested loops, not divisions a tap or a position (fastconv's offsets say why)
    offs = np.empty(ntap, np.int64)
    for i in range(KH):
        for j in range(KW):
            offs[i * KW + j] = i * dh * Wp + j * dw
    for t in range(KH * KW, ntap):
        offs[t] = offs[t - KH * KW] + Hp * Wp
    P = OH * OW
    ntiles = (P + NP - 1) // NP
    bases = np.empty(ntiles * NP, np.int64)
    for oh in range(OH):
        for ow in range(OW):
            bases[oh * OW + ow] = oh * sh * Wp + ow * sw
    for q in range(P, bases.size):  # a last tile's missing positions read the last one's input
        bases[q] = bases[P - 1]
    nkb = (K + KB - 1) // KB
    # taps in blocks over groups of tiles when a k block's weights pass 16 KB, else
    # every tap of a tile at once (LeNet-5's 150 taps in groups: 0.84-0.88x at batch 64)
    block, group = (TAP_BLOCK, TILE_GROUP) if ntap > 2 * TAP_BLOCK else (ntap, 1)
    nitems = N * nkb * ((ntiles + group - 1) // group)
    nchunks = 1 if serial else min(nitems, NCHUNK)
    scratch = np.empty((nchunks, group * NP * KB), np.float32)  # the group's partial sums
    rows = np.empty((nchunks, NP), np.float32)
    out_flat = out.reshape(out.size)
    res_flat = res.reshape(res.size)
    if serial:
        call_linked(_lanes_chunk, 0, nitems, scratch[0], rows[0], xp, image, start, offs, ntap,
                    wpk, bases, ntiles, nkb, K, P, out_flat, out.shape[1], oc0, bias, act,
                    alpha, beta, res_flat, res.shape[1], rc0, act_from, block,
                    group)  # fmt: skip
        return
    counter = zeroed(1)  # chunks handed out as threads ask (sched.py)
    for _worker in numba.prange(nchunks):
        chunk = next_chunk(counter)
        while chunk < nchunks:
            call_linked(_lanes_chunk, nitems * chunk // nchunks, nitems * (chunk + 1) // nchunks,
                        scratch[chunk], rows[chunk], xp, image, start, offs, ntap, wpk, bases,
                        ntiles, nkb, K, P, out_flat, out.shape[1], oc0, bias, act, alpha,
                        beta, res_flat, res.shape[1], rc0, act_from, block,
                        group)  # fmt: skip
            chunk = next_chunk(counter)


# Called through a symbol, as fastconv's _conv_chunk (jit.call_linked)
@linked_njit(fastmath=True, error_model="numpy")
def _lanes_chunk(first, last, scr, row, xp, image, start, offs, ntap, wpk, bases, ntiles, nkb,
                 K, P, out_flat, Cout, oc0, bias, act, alpha, beta, res_flat, Cres, rc0,
                 act_from, block, group):  # fmt: skip
    """Work items ``[first, last)`` of conv2d_lanes, in the order (image, k block, group of
    ``group`` tiles): each block of ``block`` taps runs over the group's tiles, whose
    partial sums wait in the scratch, then each tile is stored."""
    ngroups = (ntiles + group - 1) // group
    for item in range(first, last):
        gi = item % ngroups
        r = item // ngroups
        kb = r % nkb
        n = r // nkb
        t_lo = gi * group
        t_hi = min(ntiles, t_lo + group)
        for t0 in range(0, ntap, block):
            for tile in range(t_lo, t_hi):
                _lanes_tile(xp, n * image + start, bases, tile * NP, offs[t0:],
                            min(block, ntap - t0), wpk, (kb * ntap + t0) * KB,
                            scr[(tile - t_lo) * NP * KB :], t0 == 0)  # fmt: skip
        for tile in range(t_lo, t_hi):
            _lanes_store(scr[(tile - t_lo) * NP * KB :], row, n, kb, tile, K, P, out_flat,
                         Cout, oc0, bias, act, alpha, beta, res_flat, Cres, rc0, act_from)


@numba.njit(fastmath=True, error_model="numpy")
def _lanes_store(scr, row, n, kb, tile, K, P, out_flat, Cout, oc0, bias, act, alpha, beta,
                 res_flat, Cres, rc0, act_from):  # fmt: skip
    """Store one tile (``scr[j*KB + k]``): bias, residual and activation applied."""
    zero = np.float32(0.0)
    k0 = kb * KB
    p0 = tile * NP
    npos = min(NP, P - p0)
    kval = min(KB, K - k0)
    o = (n * Cout + oc0 + k0) * P + p0
    if rc0 < 0 and (act == ACT_NONE or act == ACT_RELU or k0 + kval <= act_from):
        # bias and relu (or nothing) on the way out
        for k in range(kval):
            relu = act == ACT_RELU and k0 + k >= act_from
            b = bias[k0 + k]
            for j in range(npos):
                v = scr[j * KB + k] + b
                if relu and v < zero:  # a NaN stays NaN, as in PyTorch
                    v = zero
                out_flat[o + k * P + j] = v
        return
    if rc0 >= 0:
        rr = (n * Cres + rc0 + k0) * P + p0
        for k in range(kval):
            for j in range(npos):
                scr[j * KB + k] += res_flat[rr + k * P + j]
    for j in range(npos):
        for k in range(kval):
            scr[j * KB + k] += bias[k0 + k]
    # the activation over the whole tile at once (its channels in a row), or over each
    # channel from act_from on: one call site, as each is a large function of every
    # activation's loop
    whole = k0 >= act_from
    for k in range(0 if whole else act_from - k0, 1 if whole else kval):
        if whole:
            seg = scr[: npos * KB]
        else:
            for j in range(npos):
                row[j] = scr[j * KB + k]
            seg = row[:npos]
        bias_activate_inplace(seg, 0.0, act, alpha, beta)
        if not whole:
            for j in range(npos):
                scr[j * KB + k] = row[j]
    for k in range(kval):
        for j in range(npos):
            out_flat[o + k * P + j] = scr[j * KB + k]
