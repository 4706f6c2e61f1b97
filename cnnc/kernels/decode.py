"""How ``run_plan`` reads one encoded argument of a kernel call (``interpreter.ARG_KINDS``).

Each helper takes a step's int row ``r`` and the argument's first position ``i`` in it;
they are small compiled functions the interpreter calls (not inlined: that cost 2 s of its
cold compile, a call costs nanoseconds).
``call_compiled`` then calls the kernel through its address.
"""

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic


@numba.njit(error_model="numpy")
def view(arena, x, n, r, i):
    """A tensor ``(start, channels, h, w)``: the 4-D array ``arena[n*start : n*(start +
    channels*h*w)]`` seen as ``(n, channels, h, w)``; with ``start < 0``, the caller's input
    ``x`` itself (read where it is, not copied into the arena: `runtime.Plan`)."""
    start, channels, h, w = r[i], r[i + 1], r[i + 2], r[i + 3]
    if start < 0:
        return x[: n * channels * h * w].reshape((n, channels, h, w))
    return arena[n * start : n * (start + channels * h * w)].reshape((n, channels, h, w))


@numba.njit(error_model="numpy")
def vector(params, r, i):
    """A parameter vector ``(offset, size)`` in ``params``."""
    return params[r[i] : r[i] + r[i + 1]]


@numba.njit(error_model="numpy")
def matrix(params, r, i):
    """A parameter matrix ``(offset, rows, columns)`` in ``params``."""
    return params[r[i] : r[i] + r[i + 1] * r[i + 2]].reshape((r[i + 1], r[i + 2]))


@numba.njit(error_model="numpy")
def tensor4(params, r, i):
    """A 4-D parameter tensor ``(offset, d0, d1, d2, d3)`` in ``params``."""
    size = r[i + 1] * r[i + 2] * r[i + 3] * r[i + 4]
    return params[r[i] : r[i] + size].reshape((r[i + 1], r[i + 2], r[i + 3], r[i + 4]))


@numba.njit(error_model="numpy")
def copy_rows(dst, d0, dstride, src, s0, sstride, rows, m, key):
    """``dst[d0 + b*dstride : +m] = src[s0 + b*sstride : +m]`` for ``b < rows`` (1-D float32
    arrays), bit for bit: ``key`` is 0, and each value's bits are xor-ed with it.

    The xor is there because the key is only known at run time: LLVM turns a plain copy
    loop into a call of libc's memmove, and glibc's (2.36, AMD Zen 3, its ``rep movsb`` path
    for ~4-500 KB) copies at 2-3 GB/s instead of 30-40 when the destination starts 1-63
    bytes past the source modulo 4 KB: a network's 200 KB input took 149 us a call instead
    of 39 when the caller's array happened to sit so. This loop copies any alignment at
    25-30 GB/s. (Adding -0.0 instead would turn a signaling NaN quiet.)"""
    du = dst.view(np.uint32)
    su = src.view(np.uint32)
    k = np.uint32(key)
    for b in range(rows):
        d = du[d0 + b * dstride : d0 + b * dstride + m]
        s = su[s0 + b * sstride : s0 + b * sstride + m]
        for i in range(m):
            d[i] = s[i] ^ k


#: The Numba type of each kind of kernel argument as ``run_plan`` decodes it, by the
#: letter that stands for the kind in ``call_compiled``'s ``layout`` (interpreter.ARG_KINDS)
TYPES = {
    "T": numba.float32[:, :, :, ::1],  # an activation tensor, a view of the arena
    "I": numba.int64,
    "F": numba.float64,
    "V": numba.float32[::1],  # parameters: a vector, a matrix, a 4-D tensor
    "M": numba.float32[:, ::1],
    "P": numba.float32[:, :, :, ::1],
}


@intrinsic
def call_compiled(typingctx, address, layout, args):
    """Call the compiled kernel at ``address`` (``interpreter.kernel_address``) on the
    tuple ``args``, by Numba's own calling convention, as a call of the kernel's
    dispatcher would, and pass its exception on. ``layout`` (a literal string, a letter of
    ``TYPES`` per argument) is the signature the kernel's code was compiled for
    (``interpreter.kernel_types``): ``args`` must have exactly those types.

    The caller is not linked with the kernel's code, so compiling it does not compile the
    kernel again (a direct call copies the callee's whole module into the caller's and
    generates its machine code anew: 14 s for GoogLeNet's kernels)."""
    if not isinstance(layout, types.StringLiteral):
        raise TypingError("call_compiled takes the kernel's layout as a literal string")
    expected = tuple(TYPES[letter] for letter in layout.literal_value)
    if tuple(args) != expected:
        raise TypingError(f"arguments {tuple(args)}, but the kernel is compiled for "
                          f"{expected}")
    sig = types.none(address, layout, args)

    def codegen(context, builder, sig, llargs):
        argtys = tuple(sig.args[2])
        fnty = context.call_conv.get_function_type(types.none, argtys)
        fn = builder.inttoptr(llargs[0], fnty.as_pointer())
        values = [builder.extract_value(llargs[2], i) for i in range(len(argtys))]
        status, _ = context.call_conv.call_function(builder, fn, types.none, argtys, values)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()

    return sig, codegen
