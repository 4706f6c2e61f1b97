"""ONNX in and out (LANGUAGE.md §12).

    text, weights = cnnc.onnx.import_onnx("model.onnx")   # .cnn source, {name: array}
    net = cnnc.onnx.compile_onnx("model.onnx")
    cnnc.onnx.export_network(net, "model.onnx", opset=17)

The `onnx` package is an optional extra (`pip install 'cnnc[onnx]'`); it is imported
only when one of these functions runs, never by `import cnnc`.
"""

from __future__ import annotations

from .requirement import INSTALL_HINT, require_onnx


def import_onnx(path: str) -> tuple[str, dict]:
    """(.cnn source text, {weight name: float32 array}) of an ONNX CNN (§12)."""
    from .importer import import_model
    return import_model(str(path))


def compile_onnx(path: str, **options):
    """The Network of an ONNX CNN, with its weights; `options` as for compile_source."""
    from ..compiler import compile_source
    text, weights = import_onnx(path)
    return compile_source(text, weights=weights, file=str(path), **options)


def export_network(net, path: str, opset: int = 17) -> None:
    """Write a compiled Network as ONNX: its source graph, §6 names (§12)."""
    from .export import export_network as export
    export(net, path, opset)


__all__ = ["INSTALL_HINT", "import_onnx", "compile_onnx", "export_network", "require_onnx"]
