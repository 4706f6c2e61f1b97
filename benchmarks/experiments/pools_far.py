"""pools_far.py SECONDS: what SqueezeNet's three 3x3/2 max pools cost at 2 threads, with the
two vCPUs near each other and far apart -- the bound on what fusing each pool into the
squeeze after it (pooling the squeeze's input as it reads it) could save.

The steps are called from Python (`Plan.bind`), each timed, in three ways a round: as
planned; without the pools (the squeezes then read the pools' outputs of an earlier call:
wrong numbers, right traffic for everything else); with the pools on one thread. Rounds are
tagged by placement.py's round trip before and after them (changed in between: dropped).
Twenty-seventh session, far: 5.53 ms as planned (pools 0.69), 4.84 without, 5.74 with the
pools on one thread (pools 0.85); near 3.30 (pools 0.14), 3.16, 3.42."""

import os
import sys
import time

import numba
import numpy as np
from placement import _ping_pong, placement, round_trip

import cnnc

HERE = os.path.dirname(os.path.abspath(__file__))
AS_PLANNED, WITHOUT_POOLS, POOLS_ON_ONE = 0, 1, 2


def main(seconds: float) -> None:
    net = cnnc.compile_file(os.path.join(HERE, "..", "..", "examples", "squeezenet.cnn"),
                            progress=False)
    x = np.random.default_rng(0).standard_normal((1, *net.input_shape), dtype=np.float32)
    net(x)
    x_in, _, calls = net._plan.bind(1)
    x_in[...] = x.reshape(x_in.shape)
    is_pool = [step.node.startswith("maxpool") for step in net._plan.steps]
    numba.set_num_threads(2)
    flag = np.zeros(8, np.int64)
    _ping_pong(flag, 10)

    def run(way):
        total = pools = 0.0
        for (kernel, args), pool in zip(calls, is_pool, strict=True):
            if pool and way == WITHOUT_POOLS:
                continue
            if pool and way == POOLS_ON_ONE:
                numba.set_num_threads(1)
            start = time.perf_counter()
            kernel(*args)
            took = time.perf_counter() - start
            if pool and way == POOLS_ON_ONE:
                numba.set_num_threads(2)
            total += took
            pools += took if pool else 0.0
        return total, pools

    rounds = {}
    end = time.time() + seconds
    while time.time() < end:
        before = round_trip(flag, 2000)
        row = []
        for way in (AS_PLANNED, WITHOUT_POOLS, POOLS_ON_ONE):
            run(way)
            row += list(np.median([run(way) for _ in range(7)], axis=0))
        tag = placement(before, round_trip(flag, 2000))
        if tag != "mixed":
            rounds.setdefault(tag, []).append(row)
    for tag, rows in rounds.items():
        m = np.median(np.array(rows), axis=0) * 1e3
        print(f"{tag}: {len(rows)} rounds; as planned {m[0]:.3f} ms (pools {m[1]:.3f}), "
              f"without the pools {m[2]:.3f}, the pools on one thread {m[4]:.3f} "
              f"(pools {m[5]:.3f})")


if __name__ == "__main__":
    main(float(sys.argv[1]))
