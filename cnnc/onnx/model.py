"""Reading an ONNX file as data: size limits, the one image input, plain node records.

Nothing in the file is executed: the protobuf is parsed by `onnx`, external data is
never followed (a tensor's `location` could name any file), and the file's size is
checked before it is read.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

import numpy as np

from ..errors import CnncError
from .requirement import require_onnx

# The protobuf runtime refuses messages of 2 GiB; parsing needs about twice the file in
# memory. 1 GiB holds every model-zoo CNN (VGG-19, the largest, is 548 MB).
MAX_ONNX_BYTES = 1 << 30
# A folded constant (ConstantOfShape, Expand, ...) may not be larger than this many
# elements: the file may declare shapes it would never have room to store.
MAX_CONSTANT_ELEMENTS = 1 << 28


class OnnxError(CnncError):
    """An ONNX model cnnc cannot import (the node and operator are named)."""


@dataclass
class Node:
    """One ONNX node, as plain Python values (attributes decoded)."""
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)

    def where(self) -> str:
        return f"node '{self.name}' ({self.op})" if self.name else f"a {self.op} node"


@dataclass
class Model:
    path: str
    name: str
    opset: int
    input_name: str
    input_shape: tuple[int, int, int]  # C, H, W
    output_name: str
    constants: dict[str, np.ndarray]
    nodes: list[Node]


def _read(path: str):
    onnx = require_onnx()
    try:
        info = os.stat(path)
    except OSError as err:
        raise CnncError(f"cannot read '{path}': {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CnncError("not an ONNX file: it is not a regular file", file=path)
    if info.st_size > MAX_ONNX_BYTES:
        raise CnncError(f"the ONNX file has {info.st_size:,} bytes, more than the "
                        f"{MAX_ONNX_BYTES:,} bytes cnnc reads", file=path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_ONNX_BYTES + 1)
        return onnx.load_model_from_string(data)
    except Exception as err:  # noqa: BLE001 - any parse failure of foreign data
        raise CnncError(f"not a readable ONNX model: {err}".splitlines()[0], file=path) from None


def _tensor(tensor, where: str) -> np.ndarray:
    from onnx import TensorProto, numpy_helper
    if tensor.data_location == TensorProto.EXTERNAL:
        raise OnnxError(f"{where}: tensor '{tensor.name}' keeps its data in an external "
                        f"file; cnnc reads only self-contained ONNX files")
    if tensor.data_type in (TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16):
        raise OnnxError(f"{where}: tensor '{tensor.name}' is "
                        f"{TensorProto.DataType.Name(tensor.data_type).lower()}; cnnc "
                        f"imports float32 models only")
    count = int(np.prod(tensor.dims, dtype=np.float64)) if tensor.dims else 1
    if count > MAX_CONSTANT_ELEMENTS:
        raise OnnxError(f"{where}: tensor '{tensor.name}' has {count:,} elements, more "
                        f"than the limit {MAX_CONSTANT_ELEMENTS:,}")
    try:
        return numpy_helper.to_array(tensor)
    except Exception as err:  # noqa: BLE001 - a malformed tensor
        raise OnnxError(f"{where}: tensor '{tensor.name}' cannot be read: {err}") from None


def _attributes(proto, where: str) -> dict:
    from onnx import AttributeProto, helper
    attrs = {}
    for a in proto.attribute:
        if a.type == AttributeProto.TENSOR:
            attrs[a.name] = _tensor(a.t, where)
        elif a.type == AttributeProto.GRAPH:
            attrs[a.name] = a.g  # If branches: inlined by the importer when foldable
        else:
            value = helper.get_attribute_value(a)
            attrs[a.name] = value.decode() if isinstance(value, bytes) else value
    return attrs


def graph_nodes(graph) -> list[Node]:
    nodes = []
    for i, n in enumerate(graph.node):
        node = Node(n.op_type, n.name or f"{n.op_type}_{i}", list(n.input), list(n.output))
        if n.domain not in ("", "ai.onnx"):
            raise OnnxError(f"{node.where()}: operator domain '{n.domain}' is not ONNX's own")
        node.attrs = _attributes(n, node.where())
        nodes.append(node)
    return nodes


def _dims(value_info) -> list:
    """A tensor's dimensions: ints, or the symbol's name (or None) where not fixed."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in t.shape.dim]


def _image_input(graph, constants, path) -> tuple[str, tuple[int, int, int]]:
    from onnx import TensorProto
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        names = ", ".join(f"'{i.name}'" for i in inputs) or "none"
        raise OnnxError(f"the model has {len(inputs)} inputs ({names}); cnnc imports "
                        f"networks with one image input", file=path)
    inp = inputs[0]
    elem = inp.type.tensor_type.elem_type
    if elem != TensorProto.FLOAT:
        raise OnnxError(f"input '{inp.name}' is {TensorProto.DataType.Name(elem).lower()}; "
                        f"cnnc imports float32 models only", file=path)
    dims = _dims(inp)
    if len(dims) != 4:
        raise OnnxError(f"input '{inp.name}' has {len(dims)} dimensions; cnnc imports images "
                        f"(N, C, H, W)", file=path)
    if not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        shown = "x".join(str(d) if isinstance(d, int) else "?" for d in dims[1:])
        raise OnnxError(f"input '{inp.name}' has a dynamic size {shown}: cnnc compiles for "
                        f"one fixed C x H x W (only the batch may vary); export the model "
                        f"with fixed height and width", file=path)
    return inp.name, tuple(dims[1:])


def read_model(path: str) -> Model:
    proto = _read(path)
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                default=0)
    if opset < 7:
        raise OnnxError(f"the model uses ONNX opset {opset}; cnnc imports opset 7 and "
                        f"later", file=path)
    graph = proto.graph
    constants = {}
    for t in graph.initializer:
        constants[t.name] = _tensor(t, "initializer")
    input_name, input_shape = _image_input(graph, constants, path)
    if len(graph.output) != 1:
        raise OnnxError(f"the model has {len(graph.output)} outputs; cnnc imports networks "
                        f"with one output", file=path)
    try:
        nodes = graph_nodes(graph)
    except OnnxError as err:
        err.file = path
        raise
    return Model(path, graph.name, opset, input_name, input_shape, graph.output[0].name,
                 constants, nodes)
