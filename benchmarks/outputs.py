"""Every example's output on a fixed input, saved or compared bit for bit.

A refactor that should change no number runs this before (`--save`) and after
(`--compare`) on the same machine:

    python benchmarks/outputs.py --save /tmp/before.npz
    ... change the code ...
    python benchmarks/outputs.py --compare /tmp/before.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import cnnc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def outputs(levels=(0, 2), batch: int = 2) -> dict[str, np.ndarray]:
    result = {}
    for path in sorted(EXAMPLES.glob("*.cnn")):
        for level in levels:
            net = cnnc.compile_file(str(path), seed=0, opt_level=level, progress=False)
            x = np.random.default_rng(1).standard_normal((batch, *net.input_shape))
            result[f"{path.stem}-O{level}"] = net(x.astype(np.float32))
            print(f"{path.stem} -O{level}: {result[f'{path.stem}-O{level}'].shape}",
                  file=sys.stderr)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", metavar="NPZ")
    group.add_argument("--compare", metavar="NPZ")
    args = parser.parse_args()
    now = outputs()
    if args.save:
        np.savez(args.save, **now)
        return 0
    with np.load(args.compare) as before:
        differ = [k for k in now if k not in before or not np.array_equal(now[k], before[k])]
        missing = [k for k in before.files if k not in now]
    for key in differ + missing:
        print(f"DIFFERS: {key}")
    print(f"{len(now) - len(differ)} of {len(now)} outputs bit-identical")
    return 1 if differ or missing else 0


if __name__ == "__main__":
    sys.exit(main())
