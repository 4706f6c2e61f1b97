"""The optional `onnx` package, imported on demand."""

from __future__ import annotations

from ..errors import CnncError

INSTALL_HINT = "install it with: pip install 'cnnc[onnx]'  (or: pip install onnx)"


def require_onnx():
    """The `onnx` module, or a CnncError that says how to install it."""
    try:
        import onnx
    except ImportError:
        raise CnncError(f"reading and writing ONNX files needs the 'onnx' package; "
                        f"{INSTALL_HINT}") from None
    return onnx
