"""Pooling kernels: windowed max/average and global max/average.

Windowed pools take the top/left padding ``pt, pl``; the bottom/right padding is implied by
the output size. Pools are parallel over the ``(n, c)`` planes.
"""

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .elementwise import SERIAL_WORK, copy_into
from .fastconv import _I32, _I64, _VEC, VL, _splat, masked_load, store_prefix
from .jit import cached_njit, call_linked, linked_njit

# Windowed pools work on one (n, c) plane at a time, in one of two ways:
#
# * stride 1 (the 3x3/1 pool branches of inception modules): the plane is copied into a
#   small padded scratch plane (in L1) and reduced in separable passes over the whole
#   flattened plane: first along rows (``t[p] = op_j xp[p + j]``), then along columns
#   (``u[p] = op_i t[p + i*Wp]``), each tap one long contiguous loop that vectorises.
#   Per-row loops of a 7..28-wide plane were dominated by their setup (measured: a 3x3/1
#   maxpool of 16x256x16x16 took 2.4 ms that way, ~0.3 ms this way);
# * strided (the 3x3/2 pools between stages): one output row at a time, the window's input
#   rows reduced straight from the input into a padded row, then the row's windows read off
#   with the stride a compile-time constant for stride 2 (so the loads vectorise). Only the
#   rows a window covers are touched, once per window: 8x64x112x112 3x3/2 max pool 5.7 ->
#   2.8 ms on one thread; on a 7x7 stride-1 plane this way is 1.5x slower than the passes.
#   A 2x2 stride-2 pool wholly inside the input (no padding) takes a loop of its own
#   (``_pool2x2``), one pass per pair of input rows; a 3x3 stride-2 max pool (the stem's
#   and the stages') takes vector code (``_maxpool3x3s2``): Numba's loops cost ~25-40 ns
#   each to set up, two per output row, and SqueezeNet's 64x111x111 pool spent most of
#   its 0.16-0.23 ms (one thread) there; in vector blocks, 0.10 ms (1.3-2.3x on the
#   pools of SqueezeNet, ResNet-18 and GoogLeNet, one and two threads).


@cached_njit(inline="always", error_model="numpy")
def _max_into(acc, x):
    """``acc[t] = max(acc[t], x[t])`` for ``t < acc.size``."""
    for t in range(acc.size):
        v = x[t]
        acc[t] = v if v > acc[t] else acc[t]


@cached_njit(inline="always", error_model="numpy")
def _add_into(acc, x):
    """``acc[t] += x[t]`` for ``t < acc.size``."""
    for t in range(acc.size):
        acc[t] += x[t]


@cached_njit(inline="always", error_model="numpy")
def _reduce_into(acc, x, is_max):
    """``acc = max(acc, x)`` (``is_max``) or ``acc += x``, element by element."""
    if is_max:
        _max_into(acc, x)
    else:
        _add_into(acc, x)


@cached_njit(inline="always", error_model="numpy")
def _load_padded(xp, src, Hp, Wp, pt, pl, fill):
    """Copy plane ``src`` (H x W) into flat ``xp`` seen as Hp x Wp, shifted by (pt, pl).

    Cells of ``xp`` outside the input get ``fill``; input cells beyond ``Hp x Wp`` are not
    needed by any window and are skipped.
    """
    H, W = src.shape
    xp[: Hp * Wp] = fill
    c_lo = max(0, -pl)  # first input column inside the padded area
    c_hi = min(W, Wp - pl)
    for r in range(max(0, pt), min(Hp, H + pt)):
        row = src[r - pt]
        dst = xp[r * Wp + pl + c_lo : r * Wp + pl + c_hi]
        for t in range(dst.size):
            dst[t] = row[c_lo + t]


@cached_njit(inline="always", error_model="numpy")
def _window_reduce(xp, t, Hp, Wp, kh, kw, is_max):
    """Leave in ``xp[p]`` the max (or sum) of the kh x kw window whose top-left is cell p."""
    m = Hp * Wp - kw + 1  # cells with a whole row of kw to their right
    copy_into(t[:m], xp)
    for j in range(1, kw):
        _reduce_into(t[:m], xp[j : j + m], is_max)
    length = m - (kh - 1) * Wp  # cells with kh rows below them
    copy_into(xp[:length], t)
    for i in range(1, kh):
        _reduce_into(xp[:length], t[i * Wp : i * Wp + length], is_max)


@cached_njit(inline="always", error_model="numpy")
def _reduce_windows(dst, vp, kw, sw, is_max):
    """``dst[ow] = op_{j < kw} vp[ow*sw + j]`` (max or sum) for ``ow < dst.size``.

    Stride 1 reduces in one contiguous pass per window column; the common stride-2
    windows (2 and 3 wide) in one pass of loads 2 apart, which LLVM vectorises as
    interleaved loads (a 3x3/2 max pool of 64x111x111 on one thread: 1.3 ms with a pass per
    window column, 0.2 ms so). Other strides take a scalar loop: a loop over loads a
    run-time stride apart cost ~4.5 s of cold compile for the loop versions LLVM made."""
    OW = dst.size
    if sw == 1:
        copy_into(dst, vp)
        for j in range(1, kw):
            _reduce_into(dst, vp[j : j + OW], is_max)
    elif sw == 2 and kw == 3 and is_max:
        for ow in range(OW):
            a, b, c = vp[2 * ow], vp[2 * ow + 1], vp[2 * ow + 2]
            m = a if a > b else b
            dst[ow] = m if m > c else c
    elif sw == 2 and kw == 3:
        for ow in range(OW):
            dst[ow] = vp[2 * ow] + vp[2 * ow + 1] + vp[2 * ow + 2]
    elif sw == 2 and kw == 2 and is_max:
        for ow in range(OW):
            a, b = vp[2 * ow], vp[2 * ow + 1]
            dst[ow] = a if a > b else b
    elif sw == 2 and kw == 2:
        for ow in range(OW):
            dst[ow] = vp[2 * ow] + vp[2 * ow + 1]
    else:
        for ow in range(OW):
            acc = vp[ow * sw]
            for j in range(1, kw):
                v = vp[ow * sw + j]
                if is_max:
                    acc = v if v > acc else acc
                else:
                    acc += v
            dst[ow] = acc


@cached_njit(inline="always", error_model="numpy")
def _max3(a, b, c, out):
    """``out = max(a, b, c)`` element by element (slices of one length)."""
    for q in range(out.size):
        u, v, w = a[q], b[q], c[q]
        m = u if u > v else v
        out[q] = m if m > w else w


@cached_njit(inline="always", error_model="numpy")
def _reduce3(a, b, c, out, is_max):
    """``out = op(a, b, c)`` (max or sum) element by element (slices of one length)."""
    if is_max:
        _max3(a, b, c, out)
    else:
        for q in range(out.size):
            out[q] = a[q] + b[q] + c[q]


@numba.njit(error_model="numpy")
def _pool_rows(src, dst, vp, kh, kw, sh, sw, pt, pl, is_max):
    """One plane, one output row at a time (strided pools; see the note at the top).

    ``vp`` is the padded row (``(OW-1)*sw + kw`` cells), its padding cells already holding
    the fill; only its data cells are written here. A window of 2 or 3 rows wholly inside
    the input is reduced in one pass over its rows (and `_reduce_windows` reads its
    windows off the row). A function of its own, called by `_pool_chunk` (inlined or not,
    pool2d's cold compile measured alike).
    """
    H, W = src.shape
    OH = dst.shape[0]
    c_lo = max(0, -pl)  # input columns inside the padded row
    c_hi = min(W, vp.size - pl)
    data = vp[pl + c_lo : pl + c_hi]
    for oh in range(OH):
        top = oh * sh - pt
        r0 = max(top, 0)
        if kh == 3 and top >= 0 and top + 3 <= H:
            _reduce3(src[top, c_lo:c_hi], src[top + 1, c_lo:c_hi], src[top + 2, c_lo:c_hi],
                     data, is_max)  # fmt: skip
        else:
            copy_into(data, src[r0, c_lo:c_hi])
            for r in range(r0 + 1, min(top + kh, H)):
                _reduce_into(data, src[r, c_lo:c_hi], is_max)
        _reduce_windows(dst[oh], vp, kw, sw, is_max)


@cached_njit(inline="always", error_model="numpy")
def _maxpool3x3_same(src, dst, t, H, W):
    """A 3x3 stride-1 max pool with one cell of padding on every side (``padding=same``)
    of the flat plane ``src`` into the flat plane ``dst`` (``H*W`` each, ``t`` scratch of
    as many), in two passes over the whole plane: columns of 3 (``t[p] = max(src[p-W],
    src[p], src[p+W])``; the first and last row repeat their own row for the missing one),
    then rows of 3 (``dst[p] = max(t[p-1], t[p], t[p+1])``), whose cells at each row's two
    ends, which took a neighbour row's cell, are then redone. No padded copy, and the long
    loops run over slices from 0, which LLVM vectorises (indices computed from an offset
    kept them scalar, ~3 ns a cell, for Numba's wrap-around of negative indices): the
    pool branches of inception modules, 28x28 to 7x7 planes, 2-7x faster than through
    ``_load_padded``/``_window_reduce``, whose per-plane set-up dominated. Max only (a
    repeated cell changes no max): the average pool keeps the general path, and the cold
    compile this one loop nest. Needs ``H, W >= 2``."""
    n = H * W
    last = n - W
    _max3(src[0:W], src[0:W], src[W : 2 * W], t[0:W])
    _max3(src[0 : last - W], src[W:last], src[2 * W : n], t[W:last])
    _max3(src[last - W : last], src[last:n], src[last:n], t[last:n])
    _max3(t[0 : n - 2], t[1 : n - 1], t[2:n], dst[1 : n - 1])
    for r in range(0, n, W):  # each row's two ends: 2 cells of the row, not 3
        u, v = t[r], t[r + 1]
        dst[r] = u if u > v else v
        u, v = t[r + W - 2], t[r + W - 1]
        dst[r + W - 1] = u if u > v else v


@numba.njit(error_model="numpy")
def _pool2x2(x, out, first, last, C, Cx, xc0, Cout, oc0, H, W, OH, OW, is_max):
    """A 2x2 stride-2 pool with no padding of planes ``[first, last)`` (``n*C + c``) of the
    flat ``x`` (``Cx`` channels of ``H x W``) into the flat ``out`` (``Cout`` of ``OH x OW``),
    one output row per pass over its two input rows: the general path's several slices and
    passes cost ~50 ns an output row, which on small planes was most of the pool (LeNet-5's
    16x10x10 -> 5x5 at batch 64: 0.26 ms on one thread). An average sums as that path does,
    ``(a + c) + (b + d)`` with ``c, d`` the row below, times 0.25: the same float32 result."""
    quarter = np.float32(0.25)
    for task in range(first, last):
        n = task // C
        c = task - n * C
        src = ((n * Cx + xc0 + c) * H) * W
        dst = ((n * Cout + oc0 + c) * OH) * OW
        for oh in range(OH):
            r = src + 2 * oh * W
            # slices from 0: an index computed from an offset keeps Numba's wrap-around of
            # negative indices in the loop, which then stays scalar (~3 ns a cell)
            a = x[r : r + 2 * OW]
            b = x[r + W : r + W + 2 * OW]
            o = out[dst + oh * OW : dst + (oh + 1) * OW]
            if is_max:
                for ow in range(OW):
                    u, v = a[2 * ow], a[2 * ow + 1]
                    m = u if u > v else v
                    u, v = b[2 * ow], b[2 * ow + 1]
                    m = m if m > u else u
                    o[ow] = m if m > v else v
            else:
                for ow in range(OW):
                    o[ow] = ((a[2 * ow] + b[2 * ow]) + (a[2 * ow + 1] + b[2 * ow + 1])) * quarter


@intrinsic
def _max3x3s2_block(typingctx, x, r0, r1, r2, out, o, m, avail):
    """``out[o + i] = max(x[r + 2i + j] for r in (r0, r1, r2) for j in (0, 1, 2) if 2i + j <
    avail)`` for ``i < m`` (``1 <= m <= VL``): ``m`` outputs of a 3x3 stride-2 max pool whose
    windows lie in three input rows that have ``avail`` columns from ``r`` on (the last
    window may reach past them, into the right padding), in vector code -- two vectors a
    row, their even and odd lanes (and the even ones shifted by one) taken apart with
    shuffles. ``m == VL`` with ``avail > 2*VL`` reads ``x[r .. r + 2*VL]`` with plain loads
    and stores with a plain store; otherwise it reads only ``x[r .. r + min(2m, avail - 1)]``
    and writes only the ``m`` cells (``store_prefix``). No bounds checks."""
    sig = types.void(x, r0, r1, r2, out, o, m, avail)

    def codegen(context, builder, sig, args):
        xa = context.make_array(sig.args[0])(context, builder, args[0])
        oa = context.make_array(sig.args[4])(context, builder, args[4])
        rows, o_, m_, avail = args[1:4], args[5], args[6], args[7]
        vptr = _VEC.as_pointer()
        ninf = ir.Constant(ir.FloatType(), float("-inf"))
        lanes = ir.Constant(ir.VectorType(_I64, VL), list(range(VL)))

        def vmax(a, b):
            return builder.select(builder.fcmp_ordered(">", a, b), a, b)

        def at(offset, extra):
            return builder.gep(xa.data, [builder.add(offset, ir.Constant(_I64, extra))])

        def windows(lo, hi, nx):
            """The m outputs from the rows' column maxima: lo and hi the first 2*VL columns,
            nx the one after them."""
            pick = ir.VectorType(_I32, VL)
            even = builder.shuffle_vector(lo, hi, ir.Constant(pick, list(range(0, 2 * VL, 2))))
            odd = builder.shuffle_vector(lo, hi, ir.Constant(pick, list(range(1, 2 * VL, 2))))
            tail = builder.insert_element(ir.Constant(_VEC, ir.Undefined), nx,
                                          ir.Constant(_I32, 0))  # fmt: skip
            third = builder.shuffle_vector(even, tail, ir.Constant(pick, list(range(1, VL + 1))))
            return vmax(vmax(even, odd), third)

        optr = builder.bitcast(builder.gep(oa.data, [o_]), vptr)
        whole = builder.and_(builder.icmp_signed(">=", m_, ir.Constant(m_.type, VL)),
                             builder.icmp_signed(">", avail, ir.Constant(avail.type, 2 * VL)))
        with builder.if_else(whole) as (run, part):
            with run:
                lo = hi = nx = None
                for r in rows:
                    a = builder.load(builder.bitcast(at(r, 0), vptr), align=4)
                    b = builder.load(builder.bitcast(at(r, VL), vptr), align=4)
                    c = builder.load(at(r, 2 * VL), align=4)
                    lo = a if lo is None else vmax(lo, a)
                    hi = b if hi is None else vmax(hi, b)
                    nx = c if nx is None else builder.select(
                        builder.fcmp_ordered(">", nx, c), nx, c)  # fmt: skip
                builder.store(windows(lo, hi, nx), optr, align=4)
            with part:  # the columns up to 2m (and inside the row) only, the outputs up to m
                reach = builder.add(builder.mul(m_, ir.Constant(m_.type, 2)),
                                    ir.Constant(m_.type, 1))  # fmt: skip
                reach = builder.select(builder.icmp_signed("<", avail, reach), avail, reach)
                low_mask = builder.icmp_signed("<", lanes, _splat(builder, reach, VL))
                high_mask = builder.icmp_signed("<", builder.add(lanes, _splat(
                    builder, ir.Constant(_I64, VL), VL)), _splat(builder, reach, VL))  # fmt: skip
                fill = _splat(builder, ninf)
                lo = hi = None
                for r in rows:
                    a = masked_load(builder, at(r, 0), low_mask, fill)
                    b = masked_load(builder, at(r, VL), high_mask, fill)
                    lo = a if lo is None else vmax(lo, a)
                    hi = b if hi is None else vmax(hi, b)
                # store_prefix: on AVX2, one by one (interleaved, AVX2 host, against a
                # masked store: GoogLeNet's padded pools 832 x 14x14 1.06x (1 and 2
                # threads), 480 x 28x28 1.10x, 192 x 56x56 1.08x; a valid 64 x 111x111 1.00x)
                store_prefix(builder, windows(lo, hi, ninf), builder.gep(oa.data, [o_]), m_)
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(error_model="numpy")
def _maxpool3x3s2(x, so, H, W, out, do, OH, OW, pt, pl):
    """A 3x3 stride-2 max pool of the flat plane ``x[so : so + H*W]`` into ``out[do : do +
    OH*OW]``, padding ``pt, pl`` (cells past the input never win): a row of outputs at a
    time in vector blocks (``_max3x3s2_block``), ``VL`` windows wholly inside the row's
    columns at a time, then one block for the rest of the windows that start inside the
    row: a whole one overlapping the block before it where it fits in the row, else a
    partial one (masked loads, ``store_prefix``; the last window may reach into the right
    padding); a window that starts in the left padding, or wholly in the right, a cell at a
    time. Rows above or below the input are replaced by the nearest input row, which
    changes no maximum."""
    ninf = np.float32(-np.inf)
    lo = min((pl + 1) // 2, OW)  # the first output whose window starts in the row
    hi = max(min(OW, (W - 1 + pl) // 2 + 1), lo)  # past the last that starts in it
    # past the whole blocks of windows that end inside the row; the right-padded window
    # in the partial block rather than a cell at a time: a 3x3/2 pool of 832 x 14x14
    # ("same": 7 windows a row, the 7th padded) 1.35x, 256 x 16x16 1.47x, 480 x 28x28
    # 1.34x (AVX2, 2 threads, interleaved); valid pools 0.97-1.03x
    full = lo + VL * (max(0, min(hi, (W - 3 + pl) // 2 + 1) - lo) // VL)
    for oh in range(OH):
        top = 2 * oh - pt
        orow = do + oh * OW
        if top + 2 < 0 or top >= H:  # a window row wholly in the padding
            for ow in range(OW):
                out[orow + ow] = ninf
            continue
        a = so + max(top, 0) * W
        b = so + min(max(top + 1, 0), H - 1) * W
        c = so + min(top + 2, H - 1) * W
        for ow in range(lo, full, VL):
            col = 2 * ow - pl
            _max3x3s2_block(x, a + col, b + col, c + col, out, orow + ow, VL, W - col)
        if full < hi:
            # the rest as one whole block ending at the last window, overlapping the blocks
            # before it, where that block's windows start and end inside the row: no masked
            # loads, no partial store (2 threads, interleaved: SqueezeNet's valid pools 1.12-1.16x,
            # ResNet-18's padded 112x112 1.12x)
            start = hi - VL if hi - VL >= lo and 2 * hi - pl < W else full
            col = 2 * start - pl
            _max3x3s2_block(x, a + col, b + col, c + col, out, orow + start, hi - start,
                            W - col)  # fmt: skip
        for ow in range(lo):
            out[orow + ow] = _window_max(x, a, b, c, 2 * ow - pl, W)
        for ow in range(hi, OW):
            out[orow + ow] = _window_max(x, a, b, c, 2 * ow - pl, W)


@cached_njit(inline="always", error_model="numpy")
def _window_max(x, a, b, c, left, W):
    """The maximum of the columns ``left .. left+2`` inside ``[0, W)`` of rows ``a, b, c``
    (-inf for none)."""
    best = np.float32(-np.inf)
    for col in range(left, left + 3):
        if 0 <= col < W:
            u, v, w = x[a + col], x[b + col], x[c + col]
            m = u if u > v else v
            m = m if m > w else w
            best = m if m > best else best
    return best


# One kernel for both pools (``is_max`` a run-time 0/1): each compiled pool kernel cost ~6 s
# of a cold compile. fastmath stays off: it lets LLVM assume no infinities, and -inf is the
# value that padded cells of a max pool stand for; the average pool loses nothing by it.
@cached_njit(parallel=True, error_model="numpy")
def pool2d(x, xc0, C, out, oc0, kh, kw, sh, sw, pt, pl, is_max):
    """Max (``is_max`` 1) or average (0) pooling of channels ``xc0 .. xc0+C-1`` of ``x`` into
    ``oc0 .. oc0+C-1`` of ``out``.

    ``out[n, oc0+c, oh, ow]`` pools ``x[n, xc0+c]`` over the ``kh x kw`` window whose
    top-left corner is ``(oh*sh - pt, ow*sw - pl)``. A max pool counts padded cells as -inf,
    so they never win (a window wholly in padding would give -inf); an average pool never
    counts them (``count_include_pad=False``): it divides by the window's cells inside the
    input.
    """
    N, H, W = x.shape[0], x.shape[2], x.shape[3]
    OH, OW = out.shape[2], out.shape[3]
    Hp = (OH - 1) * sh + kh  # the padded area the windows cover
    Wp = (OW - 1) * sw + kw
    fill = np.float32(-np.inf) if is_max else np.float32(0.0)
    # average pools divide by the number of window cells inside the input: rows x columns
    inv_rows = np.empty(OH, np.float32)
    for oh in range(OH):
        top = oh * sh - pt
        inv_rows[oh] = 1.0 / (min(kh, H - top) - max(0, -top))
    inv_cols = np.empty(OW, np.float32)
    for ow in range(OW):
        left = ow * sw - pl
        inv_cols[ow] = 1.0 / (min(kw, W - left) - max(0, -left))
    planes = N * C
    chunks = min(planes, 64)
    by_rows = sh > 1
    # 2x2 windows 2 apart wholly inside the input (LeNet's subsampling, VGG's pools)
    two = (kh == 2 and kw == 2 and sh == 2 and sw == 2 and pt == 0 and pl == 0
           and 2 * OH <= H and 2 * OW <= W)  # fmt: skip
    same3 = (is_max and kh == 3 and kw == 3 and sh == 1 and sw == 1 and pt == 1
             and pl == 1 and OH == H and OW == W and H >= 2 and W >= 2)  # fmt: skip
    max3s2 = is_max and kh == 3 and kw == 3 and sh == 2 and sw == 2
    if planes * OH * OW * kh * kw < SERIAL_WORK:  # a small pool: on this thread alone
        call_linked(_pool_chunk, 0, planes, x, xc0, C, out, oc0, kh, kw, sh, sw, pt, pl, is_max,
                    fill, Hp, Wp, by_rows, same3, two, max3s2, inv_rows, inv_cols)  # fmt: skip
        return
    for chunk in numba.prange(chunks):
        call_linked(_pool_chunk, chunk * planes // chunks, (chunk + 1) * planes // chunks,
                    x, xc0, C, out, oc0, kh, kw, sh, sw, pt, pl, is_max, fill, Hp, Wp, by_rows,
                    same3, two, max3s2, inv_rows, inv_cols)  # fmt: skip


# Called through a symbol (jit.call_linked), as conv2d_packed's _conv_chunk
@linked_njit(error_model="numpy")
def _pool_chunk(first, last, x, xc0, C, out, oc0, kh, kw, sh, sw, pt, pl, is_max, fill, Hp,
                Wp, by_rows, same3, two, max3s2, inv_rows, inv_cols):  # fmt: skip
    """Planes ``[first, last)`` of pool2d (one chunk)."""
    H, W = x.shape[2], x.shape[3]
    OH, OW = out.shape[2], out.shape[3]
    HW = H * W
    x_flat = x.reshape(x.size)
    out_flat = out.reshape(out.size)
    if two:
        _pool2x2(x_flat, out_flat, first, last, C, x.shape[1], xc0, out.shape[1], oc0, H, W,
                 OH, OW, is_max)  # fmt: skip
        return
    xp = np.empty(Wp if by_rows else Hp * Wp, np.float32)
    t = np.empty(0 if by_rows else Hp * Wp, np.float32)
    if by_rows:
        xp[:] = fill  # the padding cells of the padded row, for good
    for task in range(first, last):
        n = task // C
        c = task - n * C
        if same3:
            so = (n * x.shape[1] + xc0 + c) * HW
            do = (n * out.shape[1] + oc0 + c) * HW
            _maxpool3x3_same(x_flat[so : so + HW], out_flat[do : do + HW], t, H, W)
        elif max3s2:
            _maxpool3x3s2(x_flat, (n * x.shape[1] + xc0 + c) * HW, H, W, out_flat,
                          (n * out.shape[1] + oc0 + c) * OH * OW, OH, OW, pt, pl)  # fmt: skip
        else:  # by rows, or through the padded plane; an average pool always comes here
            dst = out[n, oc0 + c]
            if by_rows:
                _pool_rows(x[n, xc0 + c], dst, xp, kh, kw, sh, sw, pt, pl, is_max)
            else:
                _load_padded(xp, x[n, xc0 + c], Hp, Wp, pt, pl, fill)
                _window_reduce(xp, t, Hp, Wp, kh, kw, is_max)
                for oh in range(OH):
                    row = xp[oh * Wp : oh * Wp + Wp]
                    dst_row = dst[oh]
                    for ow in range(OW):
                        dst_row[ow] = row[ow * sw]
            if not is_max:
                for oh in range(OH):
                    inv = inv_rows[oh]
                    dst_row = dst[oh]
                    for ow in range(OW):
                        dst_row[ow] *= inv * inv_cols[ow]


# Both global pools index each plane as one flat slice from 0 (a loop LLVM vectorises; a
# `for v in plane` iterator stayed scalar, 10x slower) and run a small input on the calling
# thread: SqueezeNet's 1000 planes of 13x13 took 94 us on one thread with a loop per row,
# 9 us so (the mean; ONNX Runtime's 30-40 us).
@cached_njit(fastmath=True, parallel=True, error_model="numpy")
def global_avgpool(x, xc0, C, out, oc0):
    """``out[n, oc0+c, 0, 0]`` = mean of ``x[n, xc0+c]`` over all of H x W (out is 1 x 1)."""
    _global_pool(x, xc0, C, out, oc0, False)


@cached_njit(parallel=True, error_model="numpy")
def global_maxpool(x, xc0, C, out, oc0):
    """``out[n, oc0+c, 0, 0]`` = maximum of ``x[n, xc0+c]`` over all of H x W (out is 1 x 1)."""
    _global_pool(x, xc0, C, out, oc0, True)


@cached_njit(inline="always", error_model="numpy")
def _global_pool(x, xc0, C, out, oc0, is_max):
    """The body of both global pools (inlined, its prange with it): plane by plane, a small
    input on the calling thread."""
    N, Cx = x.shape[0], x.shape[1]
    HW = x.shape[2] * x.shape[3]
    x_flat = x.reshape(x.size)
    if N * C * HW < SERIAL_WORK:
        for task in range(N * C):
            _global_pool_plane(x_flat, task, C, Cx, xc0, HW, out, oc0, is_max)
        return
    for task in numba.prange(N * C):
        _global_pool_plane(x_flat, task, C, Cx, xc0, HW, out, oc0, is_max)


@cached_njit(inline="always", error_model="numpy")
def _global_pool_plane(x_flat, task, C, Cx, xc0, HW, out, oc0, is_max):
    """Plane ``task`` (``n*C + c``) of a global pool: its mean or its maximum (inlined: the
    caller's fastmath, on for the mean only, applies)."""
    n = task // C
    c = task - n * C
    s = (n * Cx + xc0 + c) * HW
    plane = x_flat[s : s + HW]
    if is_max:
        peak = plane[0]
        for i in range(HW):
            v = plane[i]
            peak = v if v > peak else peak
        out[n, oc0 + c, 0, 0] = peak
    else:
        total = np.float32(0.0)
        for i in range(HW):
            total += plane[i]
        out[n, oc0 + c, 0, 0] = total / np.float32(HW)
