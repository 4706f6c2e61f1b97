"""layers_vs_ort.py MODEL SECONDS [THREADS [BATCH]]: cnnc's time per layer beside ONNX
Runtime's, in rounds that alternate the two engines; each round is tagged by where the two
threads' cores sat (placement.py's round trip, before and after it), and the medians are
given per tag: near, far (rounds that changed in between are dropped).

cnnc's times are its step clock (`Plan.step_times`), ORT's its own profiler (node kernel
times, on the model cnnc exports); each ORT run's nodes are matched to it by time. ORT's
profiled run is slower than an unprofiled one, and its layer names differ from cnnc's
(its fused nodes are named after their last op), so compare sums and the layers that pair
up by eye. The twenty-first session's per-layer comparisons (docs/kernel-notes.md) came
from this script."""

import collections
import json
import os
import sys
import tempfile
import time

import numba
import numpy as np
import onnxruntime as ort
from placement import _ping_pong, placement, round_trip

import cnnc

CALLS = 15  # calls of each engine a round


def main(model: str, seconds: float, threads: int, batch: int) -> None:
    numba.set_num_threads(threads)
    net = cnnc.compile_file(model, progress=False)
    x = np.random.default_rng(0).standard_normal((batch, *net.input_shape), dtype=np.float32)
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "model.onnx")
    net.export_onnx(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(folder, "profile")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    warm = 20
    for _ in range(warm):
        session.run(None, {name: x})
    numba.set_num_threads(2)
    flag = np.zeros(8, np.int64)
    _ping_pong(flag, 10)
    tags, steps = [], []
    end = time.time() + seconds
    while time.time() < end:
        numba.set_num_threads(2)
        before = round_trip(flag, 2000)
        numba.set_num_threads(threads)
        steps.append(net._plan.step_times(x, CALLS + 2)[2:])
        for _ in range(CALLS):
            session.run(None, {name: x})
        numba.set_num_threads(2)
        after = round_trip(flag, 2000)
        tags.append(placement(before, after))
    with open(session.end_profiling(), encoding="utf-8") as f:
        events = json.load(f)
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][warm:]
    starts = np.array([r["ts"] for r in runs])
    per_run = [collections.defaultdict(float) for _ in runs]
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            i = int(np.searchsorted(starts, e["ts"], side="right")) - 1
            if 0 <= i < len(runs) and e["ts"] <= runs[i]["ts"] + runs[i]["dur"]:
                per_run[i][e["name"][: -len("_kernel_time")]] += e["dur"] / 1000
    print(f"{model}, batch {batch}, {threads} thread(s); ms, medians")
    for tag in ("near", "far"):
        rounds = [i for i, t in enumerate(tags) if t == tag]
        if not rounds:
            continue
        ours = np.median(np.concatenate([steps[i] for i in rounds]), axis=0) * 1e3
        theirs = [i * CALLS + j for i in rounds for j in range(CALLS) if i * CALLS + j < len(runs)]
        names = list(dict.fromkeys(k for i in theirs for k in per_run[i]))
        ort_ms = {k: float(np.median([per_run[i].get(k, 0.0) for i in theirs])) for k in names}
        run_ms = np.median([runs[i]["dur"] / 1000 for i in theirs])
        print(f"== {tag}: {len(rounds)} rounds; cnnc's steps {ours.sum():.3f}, ORT's nodes "
              f"{sum(ort_ms.values()):.3f} (its profiled run {run_ms:.3f})")
        layers = collections.OrderedDict()
        for step, t in zip(net._plan.steps, ours, strict=True):
            layers[step.node] = layers.get(step.node, 0.0) + t
        for layer, t in layers.items():
            other = ort_ms.pop(layer, None)
            print(f"  {layer[:40]:40s} {t:8.3f} {'' if other is None else f'{other:8.3f}'}")
        for layer, t in ort_ms.items():
            print(f"  {'ORT ' + layer[:36]:40s} {'':8s} {t:8.3f}")
    print(f"rounds: {dict(collections.Counter(tags))}")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], float(args[1]), int(args[2]) if len(args) > 2 else 2,
         int(args[3]) if len(args) > 3 else 1)
