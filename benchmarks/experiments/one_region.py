"""one_region.py: the prototype of kernel-notes' nineteenth session. A chain of STEPS steps,
each CHUNKS chunks of work, run (a) as one prange region a step with a serial prologue (as
the kernels do today) and (b) as one region a call where each thread walks the steps,
claiming chunks from each step's counter and waiting only for the chunks in flight of the
step before. 1 and 2 threads, interleaved. Environment: STEPS, CHUNKS, REPS (work a
chunk), PRO (prologue work a step), S (seconds)."""

import os
import sys
import time

os.environ.setdefault("GOMP_SPINCOUNT", "20000")
import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from cnnc.kernels.sched import count_done, next_chunk, wait_done  # noqa: E402

STEPS, CHUNKS = int(os.environ.get("STEPS", "45")), int(os.environ.get("CHUNKS", "64"))
REPS = int(os.environ.get("REPS", "40"))       # work per chunk
PRO = int(os.environ.get("PRO", "300"))        # serial prologue work per step

@njit(fastmath=True)
def chunk_work(a, s, c, reps):
    acc = np.float32(0)
    for r in range(reps):
        for i in range(a.shape[2]):
            acc += a[s, c, i] * np.float32(r)
    a[s, c, 0] = acc

@njit(fastmath=True)
def prologue(b, pro):
    acc = 0.0
    for i in range(pro):
        acc += b[i % b.size] * i
    b[0] = acc

@njit(parallel=True)
def one_step(a, b, s, counter, reps, pro):
    prologue(b, pro)
    scratch = np.empty((CHUNKS, 16), np.float32)
    counter[0] = 0
    for w in prange(CHUNKS):
        c = next_chunk(counter)
        while c < CHUNKS:
            chunk_work(a, s, c, reps)
            scratch[w, 0] = 1
            c = next_chunk(counter)

@njit
def regions(a, b, counters, reps, pro):
    for s in range(STEPS):
        one_step(a, b, s, counters[s], reps, pro)

@njit(parallel=True)
def spmd(a, b, claim, done, reps, pro, nthreads):
    for s in range(STEPS):
        claim[s, 0] = 0
        done[s, 0] = 0
    for _ in prange(nthreads):
        bt = np.empty(b.size, np.float64)
        for i in range(b.size):
            bt[i] = b[i]
        for s in range(STEPS):
            if s > 0:
                wait_done(done[s - 1], CHUNKS)
            prologue(bt, pro)
            c = next_chunk(claim[s])
            while c < CHUNKS:
                chunk_work(a, s, c, reps)
                count_done(done[s])
                c = next_chunk(claim[s])

a = np.ones((STEPS, CHUNKS, 256), np.float32)
b = np.ones(64, np.float64)
counters = np.zeros((STEPS, 1), np.int64)
claim = np.zeros((STEPS, 8), np.int64)  # a cache line each
done = np.zeros((STEPS, 8), np.int64)
S = float(os.environ.get("S", "20"))
res = {}
end = time.perf_counter() + S
first = True
while time.perf_counter() < end or first:
    for T in (1, 2):
        numba.set_num_threads(T)
        for name, f in (("regions", lambda: regions(a, b, counters, REPS, PRO)),
                        ("spmd", lambda t=T: spmd(a, b, claim, done, REPS, PRO, t))):
            f()
            v = res.setdefault((T, name), [])
            for _ in range(20):
                t0 = time.perf_counter()
                f()
                v.append(time.perf_counter() - t0)
    first = False
for k, v in sorted(res.items()):
    print(k, "ms", round(np.median(v) * 1e3, 3), "p90", round(np.percentile(v, 90) * 1e3, 3))
for name in ("regions", "spmd"):
    print(name, "1T/2T", round(np.median(res[(1, name)]) / np.median(res[(2, name)]), 3))
