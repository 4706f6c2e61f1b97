"""Imported layers -> readable .cnn text and its weights (§12, names of §6).

The layers form a DAG with one input; the language writes DAGs as chains of stages
where a fork and its join are one `concat {…|…}` or `add {…|…}`. `Structure` finds,
from each tensor, the first layer every path from it passes through (a sweep in
topological order: the first point where only one tensor is still open); that layer
is the next stage, and if it has several inputs, each input's chain is a branch. A
graph that does not nest this way is an error naming the layer.
"""

from __future__ import annotations

import os
import re

import numpy as np

from ..diagnostics import printable
from ..errors import CnncError
from .layer import EPS, Layer
from .model import Model, OnnxError

KEYWORDS = {"network", "block", "import", "concat", "add", "mul", "input", "same", "valid",
            "global", "true", "false"}
LAYER_KINDS = {"conv", "maxpool", "avgpool", "dense", "flatten", "relu", "sigmoid", "tanh",
               "leaky_relu", "softmax", "batchnorm", "lrn", "dropout", "pad", "identity",
               "dwconv", "relu6", "hardsigmoid", "hardswish", "clip", "shuffle", "slice", "mul"}
MERGES = {"concat", "add", "mul"}
PARAM_ORDER = {"conv": ("weight", "bias"), "dwconv": ("weight", "bias"),
               "dense": ("weight", "bias"),
               "batchnorm": ("weight", "bias", "running_mean", "running_var")}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# ================================================================ structure
class Structure:
    def __init__(self, layers: dict[str, Layer], output: str, path: str):
        self.layers = layers
        self.output = output
        self.path = path
        self.order = {lid: i for i, lid in enumerate(layers)}
        self.order["input"] = -1
        self.users: dict[str, list[str]] = {"input": []}
        for layer in layers.values():
            self.users.setdefault(layer.id, [])
            for i in layer.inputs:
                self.users[i].append(layer.id)

    def _closure(self, start: str, step) -> set[str]:
        seen, stack = {start}, [start]
        while stack:
            for nxt in step(stack.pop()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    def ancestors(self, lid: str) -> set[str]:
        return self._closure(lid, lambda x: self.layers[x].inputs if x != "input" else [])

    def descendants(self, lid: str) -> set[str]:
        return self._closure(lid, lambda x: self.users[x])

    def error(self, lid: str) -> CnncError:
        node = self.layers[lid].node
        where = node.where() if node is not None else f"layer {lid}"
        return OnnxError(f"{where}: the graph around it does not nest as cnnc's chains and "
                         f"concat/add branches", file=self.path)

    def _join(self, t: str, end: str) -> str:
        """The first layer after `t` that every path from `t` to `end` passes through."""
        region = sorted((self.descendants(t) & self.ancestors(end)) - {t},
                        key=self.order.__getitem__)
        inside = set(region)
        remaining: dict[str, int] = {}
        for lid in region:
            for i in self.layers[lid].inputs:
                remaining[i] = remaining.get(i, 0) + 1
        open_ = {t}
        for lid in region:
            for i in self.layers[lid].inputs:
                if i != t and i not in inside:
                    raise self.error(lid)  # reads a tensor from outside the fork
                remaining[i] -= 1
                if remaining[i] == 0:
                    open_.discard(i)
            if remaining.get(lid, 0) or lid == end:
                open_.add(lid)
            if open_ == {lid}:
                return lid
        raise self.error(end)

    def chain(self, t: str, end: str) -> list:
        items = []
        while t != end:
            join = self._join(t, end)
            layer = self.layers[join]
            if layer.inputs == [t] and layer.kind not in MERGES:
                items.append(("layer", layer))
            else:
                if layer.kind not in MERGES:
                    raise self.error(join)
                regions = [(self.descendants(t) & self.ancestors(i)) - {t} if i != t else set()
                           for i in layer.inputs]
                for a in range(len(regions)):
                    for b in range(a + 1, len(regions)):
                        if regions[a] & regions[b]:
                            raise self.error(join)
                items.append(("merge", layer, [self.chain(t, i) for i in layer.inputs]))
            t = join
        return items


# ================================================================ names
def _sanitised(text: str, kind: str) -> str | None:
    s = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")
    s = re.sub(r"_+", "_", s)
    if not s:
        return None
    return f"{kind}_{s}" if s[0].isdigit() else s


def _candidate(layer: Layer) -> str | None:
    """The label an ONNX name gives a layer: the node's name where it is a valid name;
    for layers with weights also the module path of a torch export
    (`/layer1/layer1.0/conv1/Conv` -> `layer1_0_conv1`) or the weight's name."""
    name = layer.node.name if layer.node is not None else ""
    if _NAME.match(name) and name not in KEYWORDS | LAYER_KINDS:
        return name
    if not layer.params:
        return None
    parts = [p for p in name.split("/") if p]
    if name.startswith("/") and len(parts) >= 2:
        return _sanitised(_module_path(parts[:-1]), layer.kind)
    w = layer.weight_name
    if w and not w.startswith("onnx::"):
        w = re.sub(r"([._](weight|w|W))\Z", "", w)
        return _sanitised(w, layer.kind)
    return _sanitised(name, layer.kind)


def _module_path(scopes: list[str]) -> str:
    """torch.onnx's scopes `inc`, `inc.0`, `b4`, `b4.1` -> the module `inc.0.b4.1`."""
    path, prev = [], None
    for scope in scopes:
        path.append(scope[len(prev) + 1:] if prev and scope.startswith(prev + ".") else scope)
        prev = scope
    return ".".join(path)


def _stages(items, out: list):
    """Every stage in source order as (kind, layer or None); None: an implicit identity."""
    for item in items:
        if item[0] == "layer":
            out.append(item[1])
        else:
            out.append(item[1])
            for branch in item[2]:
                if branch:
                    _stages(branch, out)
                else:
                    out.append(None)
    return out


def assign_names(stages: list) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, names) by layer id: labels kept where they clash with nothing (§6, §10)."""
    layers = [s for s in stages if s is not None]
    labels: dict[str, str] = {}
    taken: set[str] = set()
    for layer in layers:
        label = _candidate(layer)
        if label is None or label in KEYWORDS | LAYER_KINDS:
            continue
        if label in taken:
            if not layer.params:
                continue
            n = 2
            while f"{label}_{n}" in taken:
                n += 1
            label = f"{label}_{n}"
        labels[layer.id] = label
        taken.add(label)
    # a label that is the automatic name anyway (`relu3` on the third relu, as cnnc's
    # export names it) is left out, so import -> export -> import gives the same text
    own = {lid for lid, label in labels.items()
           if re.fullmatch(re.escape(_kind_of(layers, lid)) + r"[0-9]+", label)}
    auto = _automatic(stages, {k: v for k, v in labels.items() if k not in own})
    for lid in own:
        if auto.get(lid) == labels[lid]:
            del labels[lid]
    while True:
        auto = _automatic(stages, labels)
        clashes = {lid for lid, label in labels.items() if label in auto.values()}
        if not clashes:
            break
        for lid in clashes:  # "X_2" is never an automatic name: those end in digits
            layer = next(x for x in layers if x.id == lid)
            if layer.params:
                n = 2
                while f"{labels[lid]}_{n}" in taken:
                    n += 1
                labels[lid] = f"{labels[lid]}_{n}"
                taken.add(labels[lid])
            else:
                del labels[lid]
    names = dict(auto)
    names.update(labels)
    return labels, names


def _kind_of(layers: list, lid: str) -> str:
    return next(x.kind for x in layers if x.id == lid)


def _automatic(stages: list, labels: dict[str, str]) -> dict[str, str]:
    counts: dict[str, int] = {}
    auto = {}
    for i, stage in enumerate(stages):
        kind = "identity" if stage is None else stage.kind
        if stage is not None and stage.id in labels:
            continue
        counts[kind] = counts.get(kind, 0) + 1
        auto[stage.id if stage is not None else f"#identity{i}"] = f"{kind}{counts[kind]}"
    return auto


# ================================================================ text
def _num(value: float) -> str:
    text = str(np.float32(value))
    if not np.isfinite(np.float32(value)):
        raise CnncError(f"cannot write the number {value} in a .cnn file")
    return text


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        return "x".join(str(int(x)) for x in v)
    if isinstance(v, float):
        return _num(v)
    return str(v)


def _pair(v):
    return (v, v) if isinstance(v, int) and not isinstance(v, bool) else v


def call_text(layer: Layer) -> str:
    a = layer.attrs
    kind = layer.kind
    args: list[str] = []

    def keyword(name, value, default):
        if _pair(value) != _pair(default):
            square = isinstance(value, tuple) and len(set(value)) == 1
            args.append(f"{name}={value[0] if square else _value(value)}")

    if kind == "conv":
        args += [str(a["depth"]), _value(a["kernel"])]
        keyword("stride", a["stride"], (1, 1))
        keyword("padding", a["padding"], "valid")
        keyword("dilation", a["dilation"], (1, 1))
        keyword("groups", a["groups"], 1)
        keyword("bias", a["bias"], True)
    elif kind == "dwconv":
        args.append(_value(a["kernel"]))
        keyword("stride", a["stride"], (1, 1))
        keyword("padding", a["padding"], "valid")
        keyword("dilation", a["dilation"], (1, 1))
        keyword("multiplier", a["multiplier"], 1)
        keyword("bias", a["bias"], True)
    elif kind in ("maxpool", "avgpool"):
        if a.get("global"):
            args.append("global")
        else:
            args.append(_value(a["kernel"]))
            keyword("stride", a["stride"], a["kernel"])
            keyword("padding", a["padding"], "valid")
            keyword("ceil_mode", a.get("ceil_mode", False), False)
    elif kind == "dense":
        args.append(str(a["units"]))
        keyword("bias", a["bias"], True)
    elif kind == "leaky_relu":
        if not np.isclose(a["slope"], 0.01):
            args.append(_num(a["slope"]))
    elif kind == "batchnorm":
        if np.float32(a["eps"]) != np.float32(EPS):
            args.append(f"eps={_num(a['eps'])}")
    elif kind == "lrn":
        for name, default in (("size", 5), ("alpha", 1e-4), ("beta", 0.75), ("k", 1.0)):
            if np.float32(a[name]) != np.float32(default):
                args.append(f"{name}={a[name] if name == 'size' else _num(a[name])}")
    elif kind == "dropout":
        if np.float32(a["p"]) != np.float32(0.5):
            args.append(_num(a["p"]))
    elif kind == "pad":
        top, bottom, left, right = a["pads"]
        if top == bottom == left == right:
            args.append(str(top))
        elif (top, left) == (bottom, right):
            args.append(f"{top}x{left}")
        else:
            args += [str(top), str(bottom), str(left), str(right)]
    elif kind == "shuffle":
        args.append(str(a["groups"]))
    elif kind == "slice":
        args += [str(a["start"]), str(a["count"])]
    elif kind == "clip":
        args += [_num(a["min"]), _num(a["max"])]
    return f"{kind}({', '.join(args)})" if args else kind


def render(items, labels: dict[str, str], indent: str) -> list[str]:
    lines = []
    for item in items:
        layer = item[1]
        label = f"{labels[layer.id]}: " if layer.id in labels else ""
        if item[0] == "layer":
            lines.append(f"{indent}{label}{call_text(layer)}")
            continue
        lines.append(f"{indent}{label}{layer.kind} {{")
        for b, branch in enumerate(item[2]):
            body = render(branch, labels, indent + "    ") or [f"{indent}    identity"]
            if b:
                body[0] = f"{indent}  | {body[0][len(indent) + 4:]}"
            lines += body
        lines.append(f"{indent}}}")
    return lines


def _network_name(model: Model) -> str:
    for text in (os.path.splitext(os.path.basename(model.path))[0], model.name):
        name = _sanitised(text or "", "net")
        if name and name not in KEYWORDS | LAYER_KINDS:
            return name
    return "model"


def write(model: Model, layers: dict[str, Layer], output: str) -> tuple[str, dict]:
    items = Structure(layers, output, model.path).chain("input", output)
    if not items:  # the output is the input
        items = [("layer", Layer("identity0", "identity", ["input"], model.input_shape))]
    stages = _stages(items, [])
    labels, names = assign_names(stages)
    weights = {}
    for layer in stages:
        if layer is None:
            continue
        for p in PARAM_ORDER.get(layer.kind, ()):
            if p in layer.params and (p != "bias" or layer.attrs.get("bias", True)):
                weights[f"{names[layer.id]}.{p}"] = np.ascontiguousarray(layer.params[p],
                                                                         dtype=np.float32)
    shape = "x".join(map(str, model.input_shape))
    source = printable(os.path.basename(model.path))
    lines = [f"# {source}: imported from ONNX (opset {model.opset}) by cnnc import",
             f"network {_network_name(model)}(input: {shape}) {{"]
    lines += render(items, labels, "    ")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    _check(text, weights, layers[output].shape if output in layers else model.input_shape)
    return text, weights


def _check(text: str, weights: dict, out_shape: tuple) -> None:
    """The text must name exactly these weights in these shapes, and give this output."""
    from ..graph import build_graph, load_source, parameter_shapes
    graph = build_graph(load_source(text, "<imported>"))
    shapes = {k: tuple(v) for k, v in parameter_shapes(graph).items()}
    mine = {k: v.shape for k, v in weights.items()}
    got = tuple(graph.nodes[graph.graph["output"]]["shape"])
    if shapes != mine or got != tuple(out_shape):
        raise CnncError(f"internal error: the imported text does not match its weights "
                        f"({sorted(set(shapes.items()) ^ set(mine.items()))[:4]}) or output "
                        f"({got} vs {tuple(out_shape)})")
