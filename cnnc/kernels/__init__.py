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
helpers of other files (``elementwise.activate_into``, and an interpreter the kernels of
its plan): ``jit.cached_njit`` keys every entry on a digest of all kernel sources, so an
entry of other sources is never loaded. ``tidy_cache`` only deletes such dead entries; it
runs once per process in the runtime's set-up on first compile (``runtime.prepare``), not
on import, which changes nothing on disk. Every plan runs the one interpreter, which
calls its kernels through their addresses (``interpreter``), so a network compiles only
the kernels it uses, each once per machine.
"""

import functools
import shutil
from pathlib import Path

from .conv import conv2d
from .dense import dense
from .depthwise import conv2d_depthwise
from .elementwise import (
    ACT_CLIP,
    ACT_CODES,
    ACT_LEAKY,
    ACT_NONE,
    ACT_RELU,
    ACT_SIGMOID,
    ACT_TANH,
    activation,
    combine,
    softmax,
)
from .fastconv import (
    conv2d_packed,
    pack_conv_weights,
)
from .jit import sources_digest
from .lanesconv import conv2d_lanes, pack_lanes_weights
from .layout import copy_channels, pad2d, shuffle_channels
from .norm import batchnorm, batchnorm_coefficients, lrn
from .pool import global_avgpool, global_maxpool, pool2d
from .winograd import conv2d_winograd, pack_winograd_weights

_CACHE = Path(__file__).resolve().parent / "__pycache__"


@functools.cache
def tidy_cache() -> None:
    """Once per process: delete the cache files of other kernel sources (dead entries, as
    their keys hold another sources digest) when the sources changed since the last tidy."""
    digest = sources_digest()
    stamp = _CACHE / "cnnc-kernel-sources.sha256"
    try:
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    try:
        _CACHE.mkdir(exist_ok=True)
        for entry in [*_CACHE.glob("*.nbi"), *_CACHE.glob("*.nbc")]:
            entry.unlink(missing_ok=True)
        # the per-network interpreters of cnnc 0.x before 2026-12-02, no longer used
        shutil.rmtree(_CACHE / "cnnc_plans", ignore_errors=True)
        stamp.write_text(digest)
    except OSError:  # a read-only install: Numba then caches elsewhere, as it does
        pass


__all__ = [
    "ACT_CLIP",
    "ACT_CODES",
    "ACT_LEAKY",
    "ACT_NONE",
    "ACT_RELU",
    "ACT_SIGMOID",
    "ACT_TANH",
    "activation",
    "combine",
    "batchnorm",
    "batchnorm_coefficients",
    "conv2d",
    "conv2d_depthwise",
    "conv2d_packed",
    "conv2d_lanes",
    "pack_lanes_weights",
    "conv2d_winograd",
    "copy_channels",
    "dense",
    "global_avgpool",
    "global_maxpool",
    "lrn",
    "pool2d",
    "pack_conv_weights",
    "pack_winograd_weights",
    "pad2d",
    "shuffle_channels",
    "softmax",
    "tidy_cache",
]
