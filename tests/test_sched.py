"""sched.take_chunk, the work hand-out of the conv kernels' parallel loops; count_done and
wait_done, the phases of one parallel region; and sched.num_threads."""

import ast
from pathlib import Path

import numba
import numpy as np
import pytest
from helpers import on_threads

from cnnc import kernels as K
from cnnc.kernels.sched import (
    count_done,
    next_chunk,
    num_threads,
    take_chunk,
    wait_done,
    zeroed,
)


@numba.njit(parallel=True)
def _take_all(nchunks, marks, order):
    counters = np.zeros(3, np.int64)
    for worker in numba.prange(nchunks):
        from_back = 2 * worker >= nchunks
        chunk = take_chunk(counters, nchunks, from_back)
        while chunk >= 0:
            marks[chunk] += 1
            order[chunk] = 1 if from_back else 0
            chunk = take_chunk(counters, nchunks, from_back)


@pytest.mark.parametrize("nchunks", [1, 2, 3, 7, 64])
def test_take_chunk_hands_out_every_chunk_once(nchunks):
    """sched.take_chunk: whichever end the iterations take from, every chunk goes to
    exactly one of them, and at one thread the front takes them all, in order."""
    for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
        with on_threads(threads):
            for _ in range(200 if threads > 1 else 1):
                marks = np.zeros(nchunks, np.int64)
                order = np.full(nchunks, -1, np.int64)
                _take_all(nchunks, marks, order)
                assert (marks == 1).all(), marks
                if threads == 1:
                    assert (order == 0).all()


@numba.njit(parallel=True)
def _threads_seen(out):
    out[0] = num_threads()  # as the Winograd kernel asks: outside its parallel loop
    for i in numba.prange(out.size - 1):
        out[i + 1] = num_threads()


def test_num_threads_follows_set_num_threads():
    """sched.num_threads: the count numba.set_num_threads gave the calling thread, in and
    out of a parallel loop."""
    for threads in range(1, numba.config.NUMBA_NUM_THREADS + 1):
        with on_threads(threads):
            out = np.zeros(9, np.int64)
            _threads_seen(out)
            assert (out == threads).all()


@numba.njit(parallel=True)
def _two_phases(iterations, ntasks, first, second):
    """Phase 1 writes first[t] = t + 1 for every task; phase 2's task t reads the whole of
    phase 1 (every task's write, whichever thread made it) into second[t]."""
    state = np.zeros((3, 8), np.int64)
    for _ in numba.prange(iterations):
        task = next_chunk(state[0])
        while task < ntasks:
            first[task] = task + 1
            count_done(state[1])
            task = next_chunk(state[0])
        wait_done(state[1], ntasks)
        task = next_chunk(state[2])
        while task < ntasks:
            total = 0
            for t in range(ntasks):
                total += first[t]
            second[task] = total
            task = next_chunk(state[2])


@pytest.mark.parametrize("iterations, ntasks", [(1, 5), (2, 1), (2, 64), (8, 3), (8, 200)])
def test_a_phase_starts_only_when_the_last_is_done(iterations, ntasks):
    """sched.count_done and wait_done, as conv2d_winograd runs its phases in one parallel
    region: no task of the second phase sees a task of the first unfinished, whether the
    loop has fewer iterations than tasks or more, on one thread or two (where most calls
    have each thread arrive at the wait with the other's tasks in flight)."""
    want = ntasks * (ntasks + 1) // 2
    for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
        with on_threads(threads):
            for _ in range(300 if threads > 1 else 1):
                first = np.zeros(ntasks, np.int64)
                second = np.zeros(ntasks, np.int64)
                _two_phases(iterations, ntasks, first, second)
                assert (second == want).all(), second


# numpy calls that Numba's parallel passes turn into parallel loops of their own
_PARFOR_CALLS = {"zeros", "ones", "full", "arange", "linspace", "zeros_like", "ones_like",
                 "full_like"}


def _parfor_calls_outside_prange(function) -> list[str]:
    """The ``np.zeros(...)``-like calls of a function's body that lie outside its
    ``numba.prange`` loops (inside one, Numba runs them serially)."""
    found = []

    def visit(node, in_prange):
        if isinstance(node, ast.For) and "prange" in ast.unparse(node.iter):
            in_prange = True
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in _PARFOR_CALLS and ast.unparse(node.func.value) == "np"
                and not in_prange):  # fmt: skip
            found.append(f"{function.name}:{node.lineno}: {ast.unparse(node)}")
        for child in ast.iter_child_nodes(node):
            visit(child, in_prange)

    visit(function, False)
    return found


def test_parallel_kernels_make_no_extra_parallel_loops():
    """In a ``parallel=True`` kernel, ``np.zeros`` (and its kin) outside the prange is a
    parallel loop of its own: one more parallel region each call, just to zero a few
    counters. Kernels use ``sched.zeroed`` (a serial loop) instead."""
    found = []
    for path in sorted(Path(K.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                    "parallel=True" in ast.unparse(d) for d in node.decorator_list):  # fmt: skip
                found += [f"{path.name}:{f}" for f in _parfor_calls_outside_prange(node)]
    assert found == []


@numba.njit(parallel=True)
def _count_with_zeroed(n):
    counter = zeroed(1)
    for _ in numba.prange(n):
        next_chunk(counter)
    return counter


def test_zeroed_is_no_parallel_loop():
    """sched.zeroed gives zeros, and the kernel that uses it has one parallel loop (its
    prange) where ``np.zeros`` would have made two."""
    assert _count_with_zeroed(5)[0] == 5
    assert zeroed(4).tolist() == [0, 0, 0, 0]
    sig = _count_with_zeroed.signatures[0]
    diagnostics = _count_with_zeroed.overloads[sig].metadata["parfor_diagnostics"]
    assert len(diagnostics.get_parfors()) == 1
