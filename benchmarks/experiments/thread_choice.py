"""thread_choice.py MODEL[:BATCH] SECONDS: what runtime.ThreadChoice gains or costs, at 2
threads, with the cores near each other and far apart.

Two instances of the same network take turns of 50 ms (each turn after a pause until the
other's threads are quiet, and one untimed call); one has the choice, the other keeps both
threads always. Two instances of the same code can differ by a few % by themselves (where
their arenas fall), so the roles swap every 10 s and the ratio is the geometric mean over
the two assignments; the choice (its times, its probes' schedule) moves with its role. Each
round is tagged by placement.py's round trip before and after it (near, far; changed in
between: dropped). The medians are of each turn's median, so a probe (4 calls the other
way) weighs more here than in a long run of calls."""

import sys
import time

import numba
import numpy as np
from placement import _ping_pong, placement, round_trip

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from bench import wait_until_quiet  # noqa: E402

import cnnc  # noqa: E402
from cnnc import runtime  # noqa: E402

TURN_S, SWAP_S = 0.05, 10.0


def main(spec: str, seconds: float) -> None:
    numba.set_num_threads(2)
    path, _, b = spec.partition(":")
    batch = int(b or 1)
    nets = [cnnc.compile_file(path, progress=False) for _ in range(2)]
    x = np.random.default_rng(0).standard_normal((batch, *nets[0].input_shape), dtype=np.float32)
    flag = np.zeros(8, np.int64)
    _ping_pong(flag, 10)

    choice, off = runtime.ThreadChoice(2), runtime.ThreadChoice(2)
    off.off = True

    def give_choice_to(chosen):  # the one choice moves with its role, learnt state and all
        nets[chosen]._plan._choices[batch] = choice
        nets[1 - chosen]._plan._choices[batch] = off

    rounds = {}
    chosen, swap, end = 0, time.time() + SWAP_S, time.time() + seconds
    give_choice_to(chosen)
    while time.time() < end:
        if time.time() > swap:
            chosen, swap = 1 - chosen, time.time() + SWAP_S
            give_choice_to(chosen)
        before = round_trip(flag, 2000)
        medians = []
        for net in nets:
            wait_until_quiet(0.01)
            net(x)
            times, stop = [], time.perf_counter() + TURN_S
            while time.perf_counter() < stop:
                start = time.perf_counter()
                net(x)
                times.append(time.perf_counter() - start)
            medians.append(np.median(times))
        tag = placement(before, round_trip(flag, 2000))
        if tag != "mixed":
            rounds.setdefault((tag, chosen), []).append(medians)
    name = spec.rsplit("/", 1)[-1]
    for tag in ("near", "far"):
        ratios = []
        for chosen in (0, 1):
            if (tag, chosen) in rounds:
                m = np.median(np.array(rounds[tag, chosen]), axis=0)
                ratios.append(m[1 - chosen] / m[chosen])
                print(f"{name} {tag}: {len(rounds[tag, chosen])} rounds, instance {chosen} "
                      f"chooses: {m[chosen] * 1e3:.3f} ms against {m[1 - chosen] * 1e3:.3f}")
        if ratios:
            gain = np.prod(ratios) ** (1 / len(ratios))
            print(f"{name} {tag}: without / with the choice {gain:.3f}")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
