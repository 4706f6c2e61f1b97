"""Work sharing for the kernels' parallel loops: chunks handed out as threads ask.

Numba's ``prange`` (OpenMP's ``omp for``, static schedule) gives each thread a fixed share
of the iterations; whichever finishes first then waits at the region's end, and on a
shared machine the core that other load slows decides the region's time. A kernel
instead runs a ``prange`` over its chunks whose every iteration takes the next chunk from
a shared counter until none are left (``next_chunk``): each thread's first iteration
does its share, however large, and its other iterations find nothing left.
(``numba.get_num_threads()`` in a kernel would make it a dynamic global, which Numba does
not cache.)
"""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def next_chunk(typingctx, counter):
    """Atomically ``counter[0] += 1`` (an int64 array) and return its old value: the next
    chunk for the calling thread."""
    sig = types.int64(counter)

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.atomic_rmw("add", data, ir.Constant(ir.IntType(64), 1), "monotonic")

    return sig, codegen
