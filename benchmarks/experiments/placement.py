"""placement.py MODEL SECONDS: how far apart the two threads' cores are, beside the network's
time at 2 threads and at 1, every ~0.5 s for SECONDS; then the rounds grouped by that.

The distance is a cache line's round trip between the two threads (a parallel loop of two
iterations, each waiting for the other's store). On the project's 2-vCPU hosts it is ~66
ns most of the time and ~340 ns the rest -- the vCPUs then sit on different core
complexes -- and that is the "slow phase" of the benchmarks: docs/kernel-notes.md,
twentieth session."""

import sys
import time

import numba
import numpy as np
from numba import njit, prange

import cnnc
from cnnc.kernels.sched import _load_acquire

FAR_NS = 150  # round trips above this count as far


@njit(parallel=True, cache=False)
def _ping_pong(flag, n):
    for t in prange(2):
        for i in range(n):
            want = 2 * i + t
            while _load_acquire(flag) != want:
                pass
            flag[0] = want + 1


def round_trip(flag: np.ndarray, n: int) -> float:
    """A cache line's round trip between the two threads in ns, the mean of ``n``
    (``flag``: an int64 array of 8; the caller has set 2 threads)."""
    flag[0] = 0
    start = time.perf_counter()
    _ping_pong(flag, n)
    return (time.perf_counter() - start) / n * 1e9


def placement(before: float, after: float) -> str:
    """'near' or 'far' when the round trips before and after a round agree on it, else
    'mixed' (the vCPUs moved during the round)."""
    if max(before, after) < FAR_NS:
        return "near"
    return "far" if min(before, after) >= FAR_NS else "mixed"


def _median_ms(net, x, threads: int, calls: int) -> float:
    numba.set_num_threads(threads)
    for _ in range(3):
        net(x)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        net(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def main(model: str, seconds: float) -> None:
    net = cnnc.compile_file(model, progress=False)
    x = np.zeros((1, *net.input_shape), np.float32)
    flag = np.zeros(8, np.int64)
    numba.set_num_threads(2)
    _ping_pong(flag, 10)
    rounds = []
    end = time.time() + seconds
    while time.time() < end:
        numba.set_num_threads(2)
        trip = round_trip(flag, 20000)
        rounds.append((trip, _median_ms(net, x, 2, 20), _median_ms(net, x, 1, 10)))
    r = np.array(rounds)
    print(
        f"{len(r)} rounds; correlation of the round trip with the 2-thread time: "
        f"{np.corrcoef(r[:, 0], r[:, 1])[0, 1]:.2f}"
    )
    for name, part in (("near", r[r[:, 0] < FAR_NS]), ("far", r[r[:, 0] >= FAR_NS])):
        if len(part):
            trip, t2, t1 = np.median(part, axis=0)
            print(
                f"{name:4s} {len(part):4d} rounds: round trip {trip:.0f} ns, 2 threads "
                f"{t2:.2f} ms, 1 thread {t1:.2f} ms, 1T/2T {t1 / t2:.2f}"
            )


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
