"""cnnc: a compiler for convolutional network descriptions.

    net = cnnc.compile_file("googlenet.cnn")
    y = net(x)
"""

from .errors import (
    CnncArtifactError,
    CnncError,
    CnncImportError,
    CnncInputError,
    CnncMemoryError,
    CnncNameError,
    CnncShapeError,
    CnncSyntaxError,
    CnncValueError,
    CnncWeightError,
)

# eager, so that `cnnc.predict` is the function even once the cnnc.predict package is
# imported (it imports no more than the standard library and numpy until called)
from .predict import predict

__version__ = "0.1.0"

__all__ = [
    "CnncArtifactError", "CnncError", "CnncImportError", "CnncInputError", "CnncMemoryError",
    "CnncNameError", "CnncShapeError", "CnncSyntaxError", "CnncValueError", "CnncWeightError",
    "compile_file", "compile_source", "load", "predict",
]


def __getattr__(name):
    # The compiler pulls in Numba; `cnnc check` and friends should not pay for it. Importing
    # cnnc changes nothing in the process: the runtime's set-up is `runtime.prepare`, run
    # on the first compile.
    if name in ("compile_file", "compile_source", "load", "Network"):
        from . import compiler
        return getattr(compiler, name)
    if name in ("import_onnx", "compile_onnx"):  # the optional `onnx` package, on demand
        from . import onnx
        return getattr(onnx, name)
    raise AttributeError(f"module 'cnnc' has no attribute {name!r}")
