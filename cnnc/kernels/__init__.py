"""Numba kernels of the cnnc runtime, one module per op family.

The tensor convention (docs/DESIGN.md): every activation is a 4-D C-contiguous float32
buffer ``(N, Cbuf, H, W)`` (a feature vector is ``(N, Cbuf, 1, 1)``); a kernel takes a buffer
and a channel offset for each operand, reads only its input channels and writes only its
output channels. Scalars are Python ints and floats, so each kernel has exactly one type
signature and is compiled once (and cached on disk).

Every kernel is compiled with ``error_model="numpy"``: Numba's default Python error model
tests every division for a zero divisor (to raise ZeroDivisionError), and that branch keeps
LLVM from vectorising any loop that divides -- the rational tanh ran at 2.2 ns per element
with it and 0.17 ns without. No kernel divides by a value that can be zero.

Numba's disk cache keys a kernel on its own source file only, but kernels compile in the
helpers of other files (``elementwise.activate_into``, and ``interpreter.run_plan`` all the
kernels). So ``_drop_stale_cache`` keeps a hash of every kernel source beside the cache and
empties the cache when any of them changed.
"""

import hashlib
from pathlib import Path


def _drop_stale_cache() -> None:
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for source in sorted(here.glob("*.py")):
        digest.update(source.name.encode() + source.read_bytes())
    cache = here / "__pycache__"
    stamp = cache / "cnnc-kernel-sources.sha256"
    try:
        if stamp.read_text() == digest.hexdigest():
            return
    except OSError:
        pass
    try:
        cache.mkdir(exist_ok=True)
        for entry in [*cache.glob("*.nbi"), *cache.glob("*.nbc")]:
            entry.unlink(missing_ok=True)
        stamp.write_text(digest.hexdigest())
    except OSError:  # a read-only install: Numba then caches elsewhere, as it does
        pass


_drop_stale_cache()

from .conv import conv2d
from .dense import dense
from .elementwise import (
    ACT_CODES,
    ACT_LEAKY,
    ACT_NONE,
    ACT_RELU,
    ACT_SIGMOID,
    ACT_TANH,
    activation,
    add,
    softmax,
)
from .fastconv import (
    choose_conv_kernel,
    conv2d_packed,
    pack_conv_weights,
)
from .layout import copy_channels, pad2d
from .norm import batchnorm, batchnorm_coefficients, lrn
from .pool import global_avgpool, global_maxpool, pool2d

__all__ = [
    "ACT_CODES",
    "ACT_LEAKY",
    "ACT_NONE",
    "ACT_RELU",
    "ACT_SIGMOID",
    "ACT_TANH",
    "activation",
    "add",
    "batchnorm",
    "batchnorm_coefficients",
    "choose_conv_kernel",
    "conv2d",
    "conv2d_packed",
    "copy_channels",
    "dense",
    "global_avgpool",
    "global_maxpool",
    "lrn",
    "pool2d",
    "pack_conv_weights",
    "pad2d",
    "softmax",
]
