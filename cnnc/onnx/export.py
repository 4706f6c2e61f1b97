"""cnnc source graph -> ONNX (§12).

The source graph (the network as written, §6 names) is exported rather than the
optimised one, so Netron shows the layers of the .cnn file: node names are cnnc's
names, initializers are the parameters' names (`conv1.weight`), each node's output
tensor is named like the node; the graph's input is `input` and its output `output`,
both with a symbolic batch dimension `N`. Adding a layer is one entry in `EXPORTERS`.
"""

from __future__ import annotations

import os

import networkx as nx
import numpy as np

from ..errors import CnncError
from .requirement import require_onnx

MIN_OPSET = 13  # Softmax over axis 1 of an image means "per pixel" from opset 13 on


class Ctx:
    def __init__(self, graph: nx.DiGraph, params: dict[str, np.ndarray], opset: int = 17):
        self.graph = graph
        self.opset = opset
        self.params = params
        self.nodes: list = []
        self.initializers: list = []

    def tensor(self, node_id: str) -> str:
        if node_id == self.graph.graph["input"]:
            return "input"
        return "output" if node_id == self.graph.graph["output"] else node_id

    def param(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, node_id: str, inputs: list[str], name: str | None = None,
             output: str | None = None, **attrs) -> str:
        from onnx import helper
        out = output or self.tensor(node_id)
        self.nodes.append(helper.make_node(op, inputs, [out], name=name or node_id, **attrs))
        return out


def _ins(ctx: Ctx, data) -> list[str]:
    return [ctx.tensor(i) for i in data["inputs"]]


def _onnx_pads(attrs) -> list[int]:
    top, bottom, left, right = attrs["pads"]
    return [top, left, bottom, right]


def _conv(ctx, nid, data):
    a = data["attrs"]
    inputs = _ins(ctx, data) + [f"{nid}.weight"] + ([f"{nid}.bias"] if a["bias"] else [])
    ctx.node("Conv", nid, inputs, kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
             pads=_onnx_pads(a), dilations=list(a["dilation"]), group=a["groups"])


def _pool(kind):
    def export(ctx, nid, data):
        a = data["attrs"]
        op = "Max" if kind == "maxpool" else "Average"
        if a["global"]:
            ctx.node(f"Global{op}Pool", nid, _ins(ctx, data))
            return
        extra = {} if kind == "maxpool" else {"count_include_pad": 0}
        if a["ceil_mode"]:
            extra["ceil_mode"] = 1
        ctx.node(f"{op}Pool", nid, _ins(ctx, data), kernel_shape=list(a["kernel"]),
                 strides=list(a["stride"]), pads=_onnx_pads(a), **extra)
    return export


def _dense(ctx, nid, data):
    x = _ins(ctx, data)[0]
    if len(ctx.graph.nodes[data["inputs"][0]]["shape"]) == 3:  # dense flattens (§5)
        x = ctx.node("Flatten", nid, [x], name=f"{nid}/flatten", output=f"{nid}/flatten",
                     axis=1)
    inputs = [x, f"{nid}.weight"] + ([f"{nid}.bias"] if data["attrs"]["bias"] else [])
    ctx.node("Gemm", nid, inputs, transB=1)


def _simple(op, **fixed):
    def export(ctx, nid, data):
        attrs = {k: data["attrs"][v] if isinstance(v, str) else v for k, v in fixed.items()}
        ctx.node(op, nid, _ins(ctx, data), **attrs)
    return export


def _batchnorm(ctx, nid, data):
    ctx.node("BatchNormalization", nid, _ins(ctx, data) + [
        f"{nid}.{p}" for p in ("weight", "bias", "running_mean", "running_var")],
        epsilon=float(data["attrs"]["eps"]))


def _dropout(ctx, nid, data):
    ratio = ctx.param(f"{nid}.ratio", np.array(data["attrs"]["p"], np.float32))
    ctx.node("Dropout", nid, _ins(ctx, data) + [ratio])


def _pad(ctx, nid, data):
    top, bottom, left, right = data["attrs"]["pads"]
    pads = ctx.param(f"{nid}.pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
    ctx.node("Pad", nid, _ins(ctx, data) + [pads], mode="constant")


def _shuffle(ctx, nid, data):
    """Reshape (N, C, H, W) -> (N, g, C/g, H, W), swap axes 1 and 2, Reshape back, as
    torch exports a channel shuffle; a 0 in a Reshape target keeps the (symbolic) batch."""
    c, h, w = data["shape"]
    g = data["attrs"]["groups"]
    grouped = ctx.param(f"{nid}.grouped_shape", np.array([0, g, c // g, h, w], np.int64))
    flat = ctx.param(f"{nid}.shape", np.array([0, c, h, w], np.int64))
    x = ctx.node("Reshape", nid, _ins(ctx, data) + [grouped], name=f"{nid}/group",
                 output=f"{nid}/group")
    x = ctx.node("Transpose", nid, [x], name=f"{nid}/transpose", output=f"{nid}/transpose",
                 perm=[0, 2, 1, 3, 4])
    ctx.node("Reshape", nid, [x, flat])


def _slice(ctx, nid, data):
    a = data["attrs"]
    bounds = [ctx.param(f"{nid}.{k}", np.array([v], np.int64)) for k, v in
              (("starts", a["start"]), ("ends", a["start"] + a["count"]), ("axes", 1))]
    ctx.node("Slice", nid, _ins(ctx, data) + bounds)


def _add(ctx, nid, data):
    inputs = _ins(ctx, data)
    ctx.node("Add" if len(inputs) == 2 else "Sum", nid, inputs)


def _mul(ctx, nid, data):
    """ONNX's Mul takes two inputs: a chain `NAME/1`, `NAME/2`, ... ends in `NAME`. Its
    broadcasting spreads a (N, C, 1, 1) operand over H x W as §11 does."""
    inputs = _ins(ctx, data)
    if len(inputs) == 1:
        ctx.node("Identity", nid, inputs)
        return
    product = inputs[0]
    for k, other in enumerate(inputs[1:], 1):
        last = k == len(inputs) - 1
        name = nid if last else f"{nid}/{k}"
        product = ctx.node("Mul", nid, [product, other], name=name,
                           output=None if last else name)


def _clip(low: str, high: str):
    """Clip with its bounds as initializers `NAME.min` and `NAME.max` (opset 11 on)."""
    def export(ctx, nid, data):
        bounds = [ctx.param(f"{nid}.{key}", np.array(data["attrs"].get(key, value), np.float32))
                  for key, value in (("min", float(low)), ("max", float(high)))]
        ctx.node("Clip", nid, _ins(ctx, data) + bounds)
    return export


def _hardswish(ctx, nid, data):
    """HardSwish from opset 14; before it x * HardSigmoid(x) (PyTorch's 1/6 and 0.5)."""
    if ctx.opset >= 14:
        ctx.node("HardSwish", nid, _ins(ctx, data))
        return
    (x,) = _ins(ctx, data)
    gate = ctx.node("HardSigmoid", nid, [x], name=f"{nid}/hardsigmoid",
                    output=f"{nid}/hardsigmoid", alpha=1 / 6, beta=0.5)
    ctx.node("Mul", nid, [x, gate])


# cnnc op -> fn(ctx, node id, node data) adding ONNX nodes
EXPORTERS = {
    "conv": _conv,
    "maxpool": _pool("maxpool"),
    "avgpool": _pool("avgpool"),
    "dense": _dense,
    "flatten": _simple("Flatten", axis=1),
    "relu": _simple("Relu"),
    "sigmoid": _simple("Sigmoid"),
    "tanh": _simple("Tanh"),
    "leaky_relu": _simple("LeakyRelu", alpha="slope"),
    "softmax": _simple("Softmax", axis=1),
    "batchnorm": _batchnorm,
    "lrn": _simple("LRN", size="size", alpha="alpha", beta="beta", bias="k"),
    "dropout": _dropout,
    "pad": _pad,
    "identity": _simple("Identity"),
    "concat": _simple("Concat", axis=1),
    "add": _add,
    # §11
    "dwconv": _conv,  # a Conv with group = input depth
    "relu6": _clip("0", "6"),
    "clip": _clip("-inf", "inf"),
    "hardsigmoid": _simple("HardSigmoid", alpha=1 / 6, beta=0.5),
    "hardswish": _hardswish,
    "mul": _mul,
    "shuffle": _shuffle,
    "slice": _slice,
}


def to_model(graph: nx.DiGraph, params: dict[str, np.ndarray], opset: int = 17):
    """The ONNX ModelProto of a source graph and its {§6 name: array} parameters."""
    onnx = require_onnx()
    from onnx import TensorProto, helper
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise CnncError(f"cnnc exports ONNX opsets {MIN_OPSET} to {newest}, not {opset}")
    ctx = Ctx(graph, params, opset)
    for name, array in params.items():
        ctx.param(name, np.ascontiguousarray(array, dtype=np.float32))
    for nid in nx.topological_sort(graph):
        data = graph.nodes[nid]
        if data["op"] == "input":
            continue
        export = EXPORTERS.get(data["op"])
        if export is None:
            raise CnncError(f"layer '{nid}' ({data['op']}) cannot be exported to ONNX yet")
        export(ctx, nid, data)
    out_shape = graph.nodes[graph.graph["output"]]["shape"]
    if graph.graph["output"] == graph.graph["input"]:
        ctx.node("Identity", "output", ["input"])
    onnx_graph = helper.make_graph(
        ctx.nodes, graph.graph["name"],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       ["N", *graph.graph["input_shape"]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", *out_shape])],
        initializer=ctx.initializers)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="cnnc")
    onnx.checker.check_model(model)
    return model


def export_graph(graph: nx.DiGraph, params: dict[str, np.ndarray], path: str,
                 opset: int = 17) -> None:
    """Write the ONNX model of a source graph to `path`."""
    data = to_model(graph, params, opset).SerializeToString()
    try:
        with open(path, "wb") as fh:
            fh.write(data)
    except OSError as err:
        if os.path.isfile(path):
            os.unlink(path)
        raise CnncError(f"cannot write '{path}': {err.strerror or err}") from None


def export_network(net, path: str, opset: int = 17) -> None:
    """`net.export_onnx(path, opset)`: the network's source graph and parameters."""
    export_graph(net._source_graph, net.parameters(), str(path), opset)
