"""The arguments of `cnnc predict` (LANGUAGE.md §13). A bad value is a usage error,
raised by argparse through the value's type function."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def size(text: str) -> tuple[int, int]:
    """`HxW` (or one integer for a square) in pixels."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size HxW (e.g. 224x224)")
    return values[0], values[1]


def floats(text: str) -> tuple[float, ...]:
    """One number or three (R, G, B), separated by commas: `0.485,0.456,0.406`."""
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number or numbers "
                                         "separated by commas") from None
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(f"'{text}': give one number or three (R, G, B)")
    return values


def nonzero_floats(text: str) -> tuple[float, ...]:
    values = floats(text)
    if any(v == 0 for v in values):
        raise argparse.ArgumentTypeError(f"'{text}': a standard deviation cannot be zero")
    return values


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a .cnnc artifact or a .cnn file")
    p.add_argument("data", metavar="DATA", nargs="+",
                   help=".npy, .npz, PNG or JPEG files, or folders of these")
    p.add_argument("-o", "--output", metavar="OUTDIR", required=True,
                   help="where the outputs go, mirroring the inputs")
    p.add_argument("--batch", type=positive_int, default=64, metavar="N",
                   help="images per network call (default 64)")
    p.add_argument("--shard", type=positive_int, default=1024, metavar="N",
                   help="images per shard, the unit of work and of output (default 1024)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=positive_int, default=None, metavar="N",
                       help="local worker processes of one thread (default: one per core)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="a running Dask scheduler, e.g. tcp://10.0.0.1:8786")
    p.add_argument("--top", type=positive_int, default=5, metavar="K",
                   help="classes per image in predictions.csv (default 5)")
    p.add_argument("--size", type=size, default=None, metavar="HxW",
                   help="resize images to this, then centre-crop to the network's input")
    p.add_argument("--mean", type=floats, default=None, metavar="M",
                   help="subtracted from images scaled to [0, 1]: one value or R,G,B")
    p.add_argument("--std", type=nonzero_floats, default=None, metavar="S",
                   help="divides images after the mean: one value or R,G,B")
    p.add_argument("--network", metavar="NAME",
                   help="the network to use, where the file has several")
    p.add_argument("--weights", metavar="NPZ", help="weights for a .cnn model")
    p.add_argument("--seed", type=int, default=0)
