"""sched.take_chunk, the work hand-out of the conv kernels' parallel loops, and
sched.num_threads."""

import numba
import numpy as np
import pytest

from cnnc.kernels.sched import num_threads, take_chunk


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
        numba.set_num_threads(threads)
        try:
            for _ in range(200 if threads > 1 else 1):
                marks = np.zeros(nchunks, np.int64)
                order = np.full(nchunks, -1, np.int64)
                _take_all(nchunks, marks, order)
                assert (marks == 1).all(), marks
                if threads == 1:
                    assert (order == 0).all()
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


@numba.njit(parallel=True)
def _threads_seen(out):
    out[0] = num_threads()  # as the Winograd kernel asks: outside its parallel loop
    for i in numba.prange(out.size - 1):
        out[i + 1] = num_threads()


def test_num_threads_follows_set_num_threads():
    """sched.num_threads: the count numba.set_num_threads gave the calling thread, in and
    out of a parallel loop."""
    for threads in range(1, numba.config.NUMBA_NUM_THREADS + 1):
        numba.set_num_threads(threads)
        try:
            out = np.zeros(9, np.int64)
            _threads_seen(out)
            assert (out == threads).all()
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
