"""Work sharing for the kernels' parallel loops: chunks handed out as threads ask.

Numba's ``prange`` (OpenMP's ``omp for``, static schedule) gives each thread a fixed share
of the iterations; whichever finishes first then waits at the region's end, and on a
shared machine the core that other load slows decides the region's time. A kernel
instead runs a ``prange`` over its chunks whose every iteration takes the next chunk from
a shared counter until none are left (``next_chunk``): each thread's first iteration
does its share, however large, and its other iterations find nothing left. With
``take_chunk`` the two halves of the iterations take chunks from the two ends, so with
two threads each keeps to a contiguous run of chunks (their tiles' inputs and weights in
its own cache) until the runs meet.
(``numba.get_num_threads()`` in a kernel would make it a dynamic global, which Numba does
not cache; ``num_threads`` asks the threading layer through a symbol instead.)
A kernel of several phases (Winograd's column split, input transform and GEMMs) runs
them in one parallel region: each phase's tasks are claimed with ``next_chunk``, counted
done with ``count_done``, and ``wait_done`` holds a thread at the phase's end until every
task is done. A thread waits only for tasks another thread has claimed and is running, so a
late thread finds the phase done and goes on, and no task is ever waited for that no thread
will run.
``clock_ns`` reads the monotonic clock from compiled code, for the interpreter's profile.
"""

import platform
import time

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _add_one(context, builder, array_type, array, ordering):
    """IR of ``array[0] += 1`` done atomically with the given memory ordering (an int64
    array); its value is the old ``array[0]``."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.atomic_rmw("add", data, ir.Constant(ir.IntType(64), 1), ordering)


@intrinsic
def next_chunk(typingctx, counter):
    """Atomically ``counter[0] += 1`` (an int64 array) and return its old value: the next
    chunk for the calling thread."""
    sig = types.int64(counter)

    def codegen(context, builder, sig, args):
        return _add_one(context, builder, sig.args[0], args[0], "monotonic")

    return sig, codegen


@intrinsic
def take_chunk(typingctx, counters, nchunks, from_back):
    """The next of ``nchunks`` chunks for the calling thread, taken from the front (``0, 1,
    ...``) or, with ``from_back``, from the back (``nchunks-1, nchunks-2, ...``); ``-1``
    when none is left. ``counters`` is an int64 array of three zeros per region: the chunks
    taken, the front's next and the back's count. The two ends never hand out a chunk
    twice: a chunk is first reserved from the total, then named from its end."""
    sig = types.int64(counters, nchunks, from_back)

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        total = builder.atomic_rmw("add", data, ir.Constant(i64, 1), "monotonic")
        before = builder.basic_block
        with builder.if_then(builder.icmp_signed("<", total, args[1])):
            # reserved: name it from its end (only a reserved chunk counts at its end)
            back = builder.icmp_signed("!=", args[2], ir.Constant(args[2].type, 0))
            end = builder.select(back, ir.Constant(i64, 2), ir.Constant(i64, 1))
            taken = builder.atomic_rmw("add", builder.gep(data, [end]), ir.Constant(i64, 1),
                                       "monotonic")  # fmt: skip
            last = builder.sub(args[1], ir.Constant(i64, 1))
            chunk = builder.select(back, builder.sub(last, taken), taken)
            reserved = builder.basic_block
        result = builder.phi(i64)
        result.add_incoming(ir.Constant(i64, -1), before)
        result.add_incoming(chunk, reserved)
        return result

    return sig, codegen


@intrinsic
def count_done(typingctx, counter):
    """Atomically ``counter[0] += 1`` with acquire-release order (an int64 array; the
    release half is what matters): a task's writes are visible to a thread that
    ``wait_done`` has let through."""
    sig = types.int64(counter)

    def codegen(context, builder, sig, args):
        return _add_one(context, builder, sig.args[0], args[0], "acq_rel")

    return sig, codegen


#: a spin-wait's hint to the core (x86's ``pause``); none elsewhere, where the loop simply
#: reloads
_PAUSE = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


@intrinsic
def _load_acquire(typingctx, counter):
    """``counter[0]`` read with acquire order, after a ``pause`` on x86."""
    sig = types.int64(counter)

    def codegen(context, builder, sig, args):
        if _PAUSE:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.load_atomic(data, "acquire", 8)

    return sig, codegen


def emit_prefetch(builder, ptr, write):
    """Emit ``llvm.prefetch`` of the cache line at ``ptr`` (any pointer) into the caches, for
    reading or (``write``) in a state it can be written in (PREFETCHW on x86): a hint, it
    never faults, wherever ``ptr`` points."""
    i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch")
    flags = (int(write), 3, 1)  # (read or write, keep in every level, data)
    builder.call(fn, [builder.bitcast(ptr, i8p)] + [ir.Constant(i32, v) for v in flags])


@intrinsic
def _prefetch_write(typingctx, a, i):
    """``emit_prefetch`` of ``a[i]``'s line, for writing."""
    sig = types.void(a, i)

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        emit_prefetch(builder, builder.gep(data, [args[1]]), True)
        return context.get_dummy_value()

    return sig, codegen


#: floats in a 64-byte cache line
LINE_FLOATS = 16


@numba.njit(inline="always")
def prefetch_for_write(a, start, stop):
    """Ask for the cache lines of ``a[start:stop]`` in a state they can be written in, all at
    once, before a thread writes them: lines another core holds (it read them last) then come
    over together, not one store at a time."""
    for i in range(start, stop, LINE_FLOATS):
        _prefetch_write(a, i)


@numba.njit(inline="always")
def zeroed(n):
    """``np.zeros(n, np.int64)`` for a kernel's counters, written so that Numba keeps it
    serial: in a ``parallel=True`` function ``np.zeros`` is a parallel loop of its own, one
    more parallel region a call (~1.5 us on one thread, 2.5-3.4 on two) just to zero a few
    counters."""
    a = np.empty(n, np.int64)
    for i in range(n):
        a[i] = 0
    return a


@numba.njit(inline="always")
def wait_done(counter, total):
    """Spin until ``counter[0]`` (``count_done``'s) reaches ``total``."""
    while _load_acquire(counter) < total:
        pass


@intrinsic
def num_threads(typingctx):
    """The number of threads the calling thread's parallel loops run on
    (``numba.set_num_threads``): a call of the threading layer's ``get_num_threads``, by
    the symbol Numba registers with LLVM for its own parallel loops (whose compiled code
    calls it the same way), so the kernel stays cacheable."""
    sig = types.int64()

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(64), []), "get_num_threads")
        return builder.call(fn, [])

    return sig, codegen


#: POSIX's monotonic clock, by the number this platform gives it (1 on Linux, 6 on macOS);
#: None where the C library has no ``clock_gettime`` (Windows): ``clock_ns`` is then 0
CLOCK_MONOTONIC = getattr(time, "CLOCK_MONOTONIC", None)


@intrinsic
def clock_ns(typingctx):
    """The monotonic clock in nanoseconds: a call of the C library's ``clock_gettime``
    (through the vDSO on Linux: ~20 ns), by its symbol, so a caller stays cacheable; 0 on a
    platform without it, or when the call fails."""
    sig = types.int64()

    def codegen(context, builder, sig, args):
        i64, i32 = ir.IntType(64), ir.IntType(32)
        if CLOCK_MONOTONIC is None:
            return ir.Constant(i64, 0)
        # struct timespec: two 64-bit fields on the 64-bit platforms cnnc runs on
        spec = cgutils.alloca_once(builder, ir.ArrayType(i64, 2), zfill=True)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i32, [i32, spec.type]), "clock_gettime")
        zero = ir.Constant(i32, 0)
        failed = builder.icmp_signed("!=", builder.call(fn, [ir.Constant(i32, CLOCK_MONOTONIC),
                                                             spec]), zero)
        sec, nsec = (builder.load(builder.gep(spec, [zero, ir.Constant(i32, k)])) for k in (0, 1))
        ns = builder.add(builder.mul(sec, ir.Constant(i64, 1_000_000_000)), nsec)
        return builder.select(failed, ir.Constant(i64, 0), ns)

    return sig, codegen
