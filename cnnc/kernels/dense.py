"""Fully connected layer (like ``torch.nn.Linear`` on the (C, H, W)-flattened input).

The dot products run in a micro-kernel of vector IR (``_make_tile``, as fastconv's): a tile
of ``NU`` units x ``nb`` images keeps ``NU*nb`` vector sums of ``VL`` lanes, and per step
of ``VL`` inputs loads ``NU`` weight vectors and ``nb`` input vectors for ``NU*nb`` FMAs;
the inputs short of a vector come in one masked step, and each sum's lanes are then added
in a fixed tree (halves of halves). Every sum gets the same operations in the same order
whatever tile it is in, so an image gives the same bits alone as in any batch (``cnnc
predict`` splits data sets into batches, and must give what one call gives): a batch runs
tiles of ``NB`` images, the images left over tiles of one. Before, a Numba loop of four
units x two images had LLVM's fast-math reductions, whose order depends on the loop, so a
lone image ran that loop paired with itself: twice the multiply-adds at batch 1.
"""

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..backend import current_target
from .elementwise import SERIAL_WORK, activation
from .fastconv import _I32, _I64, _VEC, _splat, emit_tap_loop, masked_load, vector_fma
from .jit import cached_njit, call_linked, linked_njit

TARGET = current_target()
VL = TARGET.lanes
NU = 4  # units a tile
# images a tile: 4 x 4 sums and 8 loaded vectors fit 32 registers (AVX-512, NEON), 4 x 2
# and 6 fit 16 (AVX2, SSE)
NB = 4 if TARGET.registers >= 32 else 2


@cached_njit(parallel=True, error_model="numpy")
def dense(x, xc0, cin, w, b, out, oc0, act, alpha, beta):
    """``out[n, oc0+u, 0, 0] = act(b[u] + w[u] . flat(x[n, xc0:xc0+cin]))``.

    ``flat`` takes the ``cin*H*W`` floats of channels ``xc0 .. xc0+cin-1`` of image ``n`` in
    (C, H, W) order, so a 3-D input needs no flatten copy. ``w`` is ``(units, cin*H*W)``,
    ``b`` is ``(units,)`` (zeros for no bias), ``out`` is ``(N, Cout, 1, 1)``.

    Parallel over blocks of ``NU`` units (on this thread alone for a small layer); each
    weight row is read once a tile of images.
    """
    N = x.shape[0]
    units = w.shape[0]
    D = cin * x.shape[2] * x.shape[3]  # == w.shape[1]
    xs = x.shape[1] * x.shape[2] * x.shape[3]
    start = xc0 * x.shape[2] * x.shape[3]
    xf = x.reshape(x.size)
    wf = w.reshape(w.size)
    of = out.reshape(out.size)
    if N * units * D < SERIAL_WORK:  # a small layer: on this thread alone
        call_linked(_dense_units, 0, units, xf, xs, start, D, N, wf, b, of, out.shape[1], oc0)
    else:
        blocks = (units + NU - 1) // NU
        chunks = min(blocks, DENSE_CHUNKS)
        for chunk in numba.prange(chunks):
            call_linked(_dense_units, NU * (blocks * chunk // chunks),
                        min(units, NU * (blocks * (chunk + 1) // chunks)),
                        xf, xs, start, D, N, wf, b, of, out.shape[1], oc0)  # fmt: skip
    activation(out, oc0, units, out, oc0, act, alpha, beta)


DENSE_CHUNKS = 64  # static work chunks of unit blocks, shared out over the threads by prange


def _reduce(builder, sums):
    """The lane sums of the vectors ``sums``, as a list of float values: each as a tree,
    lanes ``i`` and ``i + p/2`` added while ``p`` partial sums are left, the same order
    whatever vectors it shares the work with (plain IR adds, no fast-math flags: LLVM keeps
    it). Two vectors of ``g`` sums of ``p`` partials each (sum ``j``'s partial ``i`` in lane
    ``j*p + i``) become one of ``2g`` sums of ``p/2``: two shuffles and an add, not two
    trees' worth (16 sums of 16 lanes: 15 adds, against 64 and their 128 shuffles)."""
    vecs = [(v, 1) for v in sums]  # (vector, sums it holds)
    undef = ir.Constant(_VEC, ir.Undefined)
    while vecs[0][1] < VL:
        out = []
        for k in range(0, len(vecs), 2):
            (a, g), (b, _) = vecs[k], vecs[k + 1] if k + 1 < len(vecs) else (undef, 0)
            p = VL // g  # partials a sum, now
            lo, hi = [], []
            for r in range(VL):
                j, i = divmod(r, p // 2)  # sum j of the result, its partial i
                src = j * p + i if j < g else VL + (j - g) * p + i
                lo.append(src)
                hi.append(src + p // 2)
            pick = [builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, VL), idx))
                    for idx in (lo, hi)]  # fmt: skip
            out.append((builder.fadd(pick[0], pick[1]), 2 * g))
        vecs = out
    return [builder.extract_element(v, ir.Constant(_I32, j)) for v, _ in vecs
            for j in range(VL)][: len(sums)]


def _make_tile(nb):
    """An intrinsic ``tile(w, woff, D, nvalid, x, xoff, xstride, out, ooff, ostride, b,
    boff)`` for ``NU`` units x ``nb`` images:

        out[ooff + m*ostride + u] = b[boff + u] + sum_d w[woff + u*D + d] * x[xoff + m*xstride + d]

    for ``u < nvalid``, ``m < nb``, ``d < D``; units ``u >= nvalid`` read unit
    ``nvalid - 1``'s row and are not stored. All arrays 1-D float32, no bounds checks."""

    @intrinsic
    def tile(typingctx, w, woff, D, nvalid, x, xoff, xstride, out, ooff, ostride, b, boff):
        sig = types.void(w, woff, D, nvalid, x, xoff, xstride, out, ooff, ostride, b, boff)

        def codegen(context, builder, sig, args):
            wa, xa, oa, ba = [context.make_array(sig.args[i])(context, builder, args[i])
                              for i in (0, 4, 7, 10)]  # fmt: skip
            woff_, d_, nvalid_, xoff_, xstride_, ooff_, ostride_, boff_ = [
                args[i] for i in (1, 2, 3, 5, 6, 8, 9, 11)]
            last = builder.sub(nvalid_, ir.Constant(_I64, 1))
            wrows = []
            for u in range(NU):
                c = ir.Constant(_I64, u)
                row = builder.select(builder.icmp_signed("<", c, nvalid_), c, last)
                wrows.append(builder.gep(wa.data, [builder.add(woff_, builder.mul(row, d_))]))
            xrows = [builder.gep(xa.data, [builder.add(xoff_, builder.mul(
                ir.Constant(_I64, m), xstride_))]) for m in range(nb)]
            fma = vector_fma(builder)
            vptr = _VEC.as_pointer()

            def step(loads):
                def body(t, acc):
                    wv = [loads(p, t) for p in wrows]
                    xv = [loads(p, t) for p in xrows]
                    return [builder.call(fma, [wv[u], xv[m], acc[u * nb + m]])
                            for u in range(NU) for m in range(nb)]  # fmt: skip
                return body

            def at(p, t):  # the t-th vector of a row
                return builder.gep(p, [builder.mul(t, ir.Constant(_I64, VL))])

            def whole(p, t):
                return builder.load(builder.bitcast(at(p, t), vptr), align=4)

            nvec = builder.sdiv(d_, ir.Constant(_I64, VL))
            zero = ir.Constant(_VEC, None)
            acc = emit_tap_loop(builder, nvec, [zero] * (NU * nb), step(whole))
            # the inputs short of a vector: masked loads, zeros in the other lanes (a
            # multiply-add of two zeros leaves a sum as it was)
            rest = builder.sub(d_, builder.mul(nvec, ir.Constant(_I64, VL)))
            lanes = ir.Constant(ir.VectorType(_I64, VL), list(range(VL)))
            mask = builder.icmp_signed("<", lanes, _splat(builder, rest))

            def part(p, t):
                return masked_load(builder, at(p, t), mask, zero)

            totals = _reduce(builder, step(part)(nvec, acc))
            for u in range(NU):
                with builder.if_then(builder.icmp_signed("<", ir.Constant(_I64, u), nvalid_)):
                    bias = builder.load(builder.gep(ba.data, [builder.add(
                        boff_, ir.Constant(_I64, u))]))
                    for m in range(nb):
                        at = builder.add(ooff_, builder.add(builder.mul(
                            ir.Constant(_I64, m), ostride_), ir.Constant(_I64, u)))
                        total = builder.fadd(totals[u * nb + m], bias)
                        builder.store(total, builder.gep(oa.data, [at]))
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile_group = _make_tile(NB)
_tile_one = _make_tile(1)


@linked_njit(error_model="numpy")
def _dense_units(first, last, xf, xs, start, D, N, wf, b, of, cout, oc0):
    """Units ``[first, last)`` of dense, for every image: tiles of ``NU`` units x ``NB``
    images, the images short of ``NB`` one at a time (``_make_tile``)."""
    for u in range(first, last, NU):
        nvalid = min(NU, last - u)
        n = 0
        while n + NB <= N:
            _tile_group(wf, u * D, D, nvalid, xf, n * xs + start, xs, of, n * cout + oc0 + u,
                        cout, b, u)  # fmt: skip
            n += NB
        while n < N:
            _tile_one(wf, u * D, D, nvalid, xf, n * xs + start, xs, of, n * cout + oc0 + u,
                      cout, b, u)  # fmt: skip
            n += 1
