"""cnnc against ONNX Runtime one layer at a time: where a network's gap to ORT comes from.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/layers.py \\
        "conv(128, 3x3, stride=2, padding=same) -> relu" 64x56x56 --batch 1

Each layer (a line of .cnn, compiled alone on an input of the given C x H x W) is exported
to ONNX by cnnc itself (`Network.export_onnx`), so both engines run the same weights; the
two take turns as in bench.py (`time_round_robin`, 2 threads). Prints the medians and
ORT / cnnc (above 1: cnnc is faster). docs/kernel-notes.md keeps the results.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench  # noqa: E402

import cnnc  # noqa: E402

LAYER_SETTINGS = bench.Settings(
    "layers", warmup_s=0.2, turn_s=0.03, pause_s=0.01, target_s=0.6, min_reps=10, sgemm_s=0
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("layers", nargs="+", help='pairs of "LAYER" CxHxW')
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if len(args.layers) % 2:
        parser.error('give pairs of "LAYER" CxHxW')
    bench.set_threads(args.threads)
    for layer, shape in zip(args.layers[::2], args.layers[1::2], strict=True):
        c, h, w = (int(v) for v in shape.split("x"))
        net = cnnc.compile_source(f"network t(input: {c}x{h}x{w}) {{\n {layer}\n}}\n",
                                  progress=False)
        x = np.random.default_rng(0).standard_normal((args.batch, c, h, w), dtype=np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            net.export_onnx(f"{tmp}/layer.onnx")
            onnx_bytes = Path(f"{tmp}/layer.onnx").read_bytes()
        engines = [bench.Engine("cnnc", lambda net=net, x=x: net(x)),
                   bench.ort_engine(onnx_bytes, x, args.threads)]
        error = bench.relative_error(engines[0].run(), engines[1].run())
        bench.time_round_robin(engines, LAYER_SETTINGS)
        ms = [1e3 * float(np.median(e.times)) for e in engines]
        print(f"{shape} b{args.batch} {layer:45s} cnnc {ms[0]:8.3f} ms  ORT {ms[1]:8.3f} ms  "
              f"ORT/cnnc {ms[1] / ms[0]:.2f}  (difference {error:.0e})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
