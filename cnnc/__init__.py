"""cnnc: a compiler for convolutional network descriptions.

    net = cnnc.compile_file("googlenet.cnn")
    y = net(x)
"""

import os

# Numba's OpenMP workers (GNU libgomp) spin for a while after each parallel region, then
# sleep. With libgomp's default spin count, whole networks ran bimodally here (SqueezeNet
# b1: 8 or 13 ms, LeNet-5 b1: 0.09 or 0.18 ms, from one run to the next); a bounded spin
# of 20,000 was steadily at the fast mode (docs/DESIGN.md). libgomp reads this when it
# starts, so it only takes effect if no OpenMP runtime has started in the process yet
# (importing torch first starts one); the user's own setting always wins.
os.environ.setdefault("GOMP_SPINCOUNT", "20000")

from .errors import (CnncArtifactError, CnncError, CnncImportError, CnncInputError,
                     CnncNameError, CnncShapeError, CnncSyntaxError, CnncValueError,
                     CnncWeightError)
# eager, so that `cnnc.predict` is the function even once the cnnc.predict package is
# imported (it imports no more than the standard library and numpy until called)
from .predict import predict

__version__ = "0.1.0"

__all__ = [
    "CnncArtifactError", "CnncError", "CnncImportError", "CnncInputError", "CnncNameError",
    "CnncShapeError", "CnncSyntaxError", "CnncValueError", "CnncWeightError",
    "compile_file", "compile_source", "load", "predict",
]


def __getattr__(name):
    # The runtime pulls in Numba; `cnnc check` and friends should not pay for it.
    if name in ("compile_file", "compile_source", "load", "Network"):
        from . import runtime
        return getattr(runtime, name)
    raise AttributeError(f"module 'cnnc' has no attribute {name!r}")
