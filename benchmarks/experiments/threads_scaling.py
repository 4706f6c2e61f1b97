"""threads_scaling.py MODEL SECONDS: cnnc and ONNX Runtime at 2 threads and at 1, batch 1,
taking turns in bench.py's pattern for SECONDS; prints the medians of each quarter of the
rounds sorted by ORT's 2-thread time (how busy the host was), with each engine's 1T/2T
scaling. The measurement behind kernel-notes' nineteenth session ("One thread against
two"). Needs the bench extra (onnxruntime); run with OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE unset, as bench.py."""

import os
import sys
import tempfile
import time

import numba
import numpy as np
import onnxruntime as ort

import cnnc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench import wait_until_quiet  # noqa: E402


def main(model: str, seconds: float) -> None:
    net = cnnc.compile_file(model, progress=False)
    x = np.random.default_rng(0).standard_normal((1, *net.input_shape), dtype=np.float32)
    path = os.path.join(tempfile.mkdtemp(), "net.onnx")
    net.export_onnx(path)
    sessions = {}
    for threads in (1, 2):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sessions[threads] = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sessions[1].get_inputs()[0].name

    def ours(threads):
        def call():
            numba.set_num_threads(threads)
            net(x)
        return call

    def theirs(threads):
        return lambda: sessions[threads].run(None, {name: x})

    engines = [ours(2), theirs(2), ours(1), theirs(1)]
    for call in engines:
        for _ in range(3):
            call()
    rows = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        row = []
        for call in engines:
            wait_until_quiet(0.01)
            call()
            times = []
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 0.05:
                c0 = time.perf_counter()
                call()
                times.append(time.perf_counter() - c0)
            row.append(np.median(times))
        rows.append(row)
    r = np.array(rows) * 1e3
    order = np.argsort(r[:, 1])
    n = len(order)
    print(f"{n} rounds; ms: cnnc 2T, ORT 2T, cnnc 1T, ORT 1T; ORT/cnnc at 2T, 1T; "
          "1T/2T of cnnc, ORT")
    for label, idx in (("quietest quarter", order[: n // 4]),
                       ("middle half", order[n // 4 : 3 * n // 4]),
                       ("busiest quarter", order[3 * n // 4 :])):
        m = np.median(r[idx], axis=0)
        print(f"{label:17s} {m[0]:.2f} {m[1]:.2f} {m[2]:.2f} {m[3]:.2f}  "
              f"{m[1] / m[0]:.3f} {m[3] / m[2]:.3f}  {m[2] / m[0]:.2f} {m[3] / m[1]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
