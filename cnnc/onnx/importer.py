"""ONNX -> cnnc layers (§12).

Nodes are visited in the file's (topological) order, only those the output needs.
Each tensor is either a constant (initializers, `Constant`, anything folded by
`fold.py`) or an activation made by a cnnc layer. A node whose inputs are all
constant is folded; otherwise its operator's entry in `HANDLERS` maps it to layers.
Adding a layer to the import is one entry there.

Decompositions exporters produce are recognised before that (`patterns.py`), and
per-channel `Mul`/`Add`/`Sub`/`Div` by constants become an affine step that is folded
into the conv, dense or batchnorm before it, or else written as a batchnorm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ops import broadcasts, window_count
from .fold import BATCH, FOLD, fold, reshape_target
from .layer import EPS, Act, Grouped, Layer
from .model import Model, Node, OnnxError, graph_nodes, read_model


@dataclass(frozen=True)
class Rule:
    handler: object
    since: int = 7  # opset range the handler understands
    until: int = 10**6


def _hw(value, default) -> tuple[int, int]:
    value = list(value) if value is not None else list(default)
    if len(value) != 2:
        raise ValueError
    return int(value[0]), int(value[1])


class Importer:
    def __init__(self, model: Model):
        self.model = model
        self.values: dict[str, object] = dict(model.constants)
        self.values[model.input_name] = Act("input", model.input_shape)
        self.layers: dict[str, Layer] = {}

    # ------------------------------------------------------------ values
    def value(self, node: Node, name: str):
        if name == "":
            return None
        if name not in self.values:
            raise OnnxError(f"{node.where()}: input '{name}' is not computed before it "
                            f"(the graph is not in topological order, or it names no tensor)",
                            file=self.model.path)
        return self.values[name]

    def act(self, node: Node, i: int = 0) -> Act:
        v = self.value(node, node.inputs[i])
        if isinstance(v, Grouped):
            raise self.error(node, f"reads channels regrouped to 5-D (input {i + 1}); cnnc "
                                   f"reads those only as a channel shuffle: Reshape to "
                                   f"(N, g, C/g, H, W), Transpose (0, 2, 1, 3, 4), Reshape "
                                   f"back to (N, C, H, W)")
        if not isinstance(v, Act):
            raise self.error(node, "expects an activation as its input "
                                   f"{i + 1}, not a constant")
        return v

    def const(self, node: Node, i: int, default=None) -> np.ndarray | None:
        if i >= len(node.inputs) or node.inputs[i] == "":
            return default
        v = self.value(node, node.inputs[i])
        if isinstance(v, Act):
            raise self.error(node, f"input {i + 1} ('{node.inputs[i]}') must be a constant "
                                   f"for cnnc, but it is computed from the image")
        return v

    def float_const(self, node: Node, i: int, default=None) -> np.ndarray | None:
        v = self.const(node, i, default)
        if v is not None and (v.dtype == object or v.dtype.kind not in "fiub"):
            raise self.error(node, f"input {i + 1} is not a number array")
        return None if v is None else np.asarray(v, dtype=np.float32)

    def error(self, node: Node, message: str) -> OnnxError:
        return OnnxError(f"{node.where()}: {message}", file=self.model.path)

    def unsupported(self, node: Node, what: str = "") -> OnnxError:
        return self.error(node, f"operator {node.op}{' ' + what if what else ''} has no cnnc "
                                f"counterpart")

    def not_yet(self, node: Node, what: str) -> OnnxError:
        """A node that needs an addition of LANGUAGE.md §11 cnnc does not have yet."""
        if " " not in what:
            what = f"the cnnc layer '{what}'"
        return self.error(node, f"needs {what} (LANGUAGE.md §11), which is not supported yet")

    def emit(self, node: Node, kind: str, x: Act | list[Act], shape: tuple, attrs=None,
             params=None, weight_name: str = "") -> Act:
        inputs = [a.layer for a in (x if isinstance(x, list) else [x])]
        layer_id = f"L{len(self.layers)}"
        self.layers[layer_id] = Layer(layer_id, kind, inputs, tuple(shape), dict(attrs or {}),
                                      dict(params or {}), node, weight_name)
        return Act(layer_id, tuple(shape))

    def set_output(self, node: Node, value, *, only_first: bool = True) -> None:
        self.values[node.outputs[0]] = value
        if only_first:
            for extra in node.outputs[1:]:
                if extra in self.needed:
                    raise self.error(node, f"its output '{extra}' is used; cnnc computes only "
                                           f"the first output of {node.op}")

    # ------------------------------------------------------------ the walk
    def run(self) -> Act:
        from .patterns import recognise
        nodes = recognise(self.model.nodes, self.model.constants)
        self.needed = live_tensors(nodes, self.model.output_name)
        self.visit(nodes)
        out = self.values.get(self.model.output_name)
        if not isinstance(out, Act):
            raise OnnxError(f"the output '{self.model.output_name}' is "
                            f"{'never computed' if out is None else 'a constant'}",
                            file=self.model.path)
        return out

    def visit(self, nodes: list[Node]) -> None:
        for node in nodes:
            if not any(o in self.needed for o in node.outputs):
                continue
            self.visit_node(node)

    def visit_node(self, node: Node) -> None:
        values = [self.value(node, name) for name in node.inputs]
        acts = any(isinstance(v, (Act, Grouped)) for v in values)
        if node.op == "Shape":
            self.set_output(node, _shape_of(node, values[0], self.model.opset))
        elif node.op == "If":
            self.inline_if(node)
        elif not acts and node.op in FOLD:
            self.set_output(node, fold(node, values, self.model.opset), only_first=False)
        else:
            rule = HANDLERS.get(node.op)
            if rule is None:
                raise self.unsupported(node)
            if not rule.since <= self.model.opset <= rule.until:
                raise self.error(node, f"cnnc reads {node.op} of opsets {rule.since} to "
                                       f"{rule.until}, not {self.model.opset}")
            try:
                rule.handler(self, node)
            except (KeyError, ValueError, TypeError, IndexError) as err:
                raise self.error(node, f"unexpected attributes or inputs ({err})") from None

    def inline_if(self, node: Node) -> None:
        cond = self.const(node, 0)
        if cond is None or cond.dtype == object or cond.size != 1:
            raise self.error(node, "its condition is not a constant")
        branch = node.attrs["then_branch" if bool(cond.ravel()[0]) else "else_branch"]
        from .model import _tensor
        for t in branch.initializer:
            self.values[t.name] = _tensor(t, node.where())
        inner = graph_nodes(branch)
        saved = self.needed
        self.needed = saved | live_tensors(inner, *[o.name for o in branch.output])
        self.visit(inner)
        self.needed = saved
        for out, result in zip(node.outputs, branch.output, strict=False):
            self.values[out] = self.value(node, result.name)


def _shape_of(node: Node, value, opset: int) -> np.ndarray:
    if isinstance(value, (Act, Grouped)):
        shape = np.array([BATCH, *value.shape], dtype=object)
    else:
        shape = np.array(value.shape, dtype=np.int64)
    if opset >= 15:
        start, end = node.attrs.get("start", 0), node.attrs.get("end", None)
        shape = shape[start:end]
    return shape


def live_tensors(nodes: list[Node], *outputs: str) -> set[str]:
    """Names of the tensors the outputs depend on (If branches read outer names)."""
    needed = set(outputs)
    for node in reversed(nodes):
        if any(o in needed for o in node.outputs):
            needed.update(_reads(node))
    return needed


def _reads(node: Node) -> list[str]:
    names = [n for n in node.inputs if n]
    for g in (node.attrs.get("then_branch"), node.attrs.get("else_branch")):
        if g is not None:
            names += [n for inner in g.node for n in inner.input if n]
    return names


# ================================================================ geometry
def same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """(before, after) of §5's `same` (TensorFlow's rule)."""
    k_eff = d * (k - 1) + 1
    out = -(-size // s)
    total = max((out - 1) * s + k_eff - size, 0)
    return total // 2, total - total // 2


def out_size(size: int, k: int, s: int, d: int, before: int, after: int,
             ceil_mode: bool = False) -> int:
    return window_count(size, d * (k - 1) + 1, s, before, after, ceil_mode)


def padding_form(hw, kernel, stride, dilation, pads, pool: bool):
    """The §5/§11 `padding` value for pads (top, bottom, left, right) in its most
    readable form (`valid`, `p`, `PHxPW`, `same`, else `TxBxLxR`), or None where a pool
    may not have it (a side more than half the kernel)."""
    pt, pb, pl, pr = pads
    if not any(pads):
        return "valid"
    if pool and (2 * max(pt, pb) > kernel[0] or 2 * max(pl, pr) > kernel[1]):
        same = None  # `same` pads a pool by any amount, but ONNX's pads were explicit
    else:
        same = "same"
    if pt == pb and pl == pr and same:
        return pt if pt == pl else (pt, pl)
    same_pads_ = same_pads(hw[0], kernel[0], stride[0], dilation[0]) + \
        same_pads(hw[1], kernel[1], stride[1], dilation[1])
    if tuple(pads) == same_pads_:
        return "same"
    return None if same is None else tuple(pads)


def onnx_pads(node: Node, hw, kernel, stride, dilation) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a Conv or pool node, `auto_pad` resolved."""
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        (a, b), (c, d) = (same_pads(hw[i], kernel[i], stride[i], dilation[i]) for i in (0, 1))
        return (a, b, c, d) if auto == "SAME_UPPER" else (b, a, d, c)
    if auto == "VALID":
        return 0, 0, 0, 0
    pads = list(node.attrs.get("pads", [0, 0, 0, 0]))
    if len(pads) != 4 or min(pads) < 0:
        raise ValueError(f"pads {pads}")
    return pads[0], pads[2], pads[1], pads[3]


def _window_attrs(node: Node, x: Act, kernel):
    if len(x.shape) != 3:
        raise ValueError("a 2-D image input")
    stride = _hw(node.attrs.get("strides"), (1, 1))
    dilation = _hw(node.attrs.get("dilations"), (1, 1))
    pads = onnx_pads(node, x.shape[1:], kernel, stride, dilation)
    return stride, dilation, pads


def _spatial_out(x_shape, kernel, stride, dilation, pads, ceil_mode: bool = False):
    return (out_size(x_shape[1], kernel[0], stride[0], dilation[0], pads[0], pads[1],
                     ceil_mode),
            out_size(x_shape[2], kernel[1], stride[1], dilation[1], pads[2], pads[3],
                     ceil_mode))


def _pad_layer(imp: Importer, node: Node, x: Act, pads) -> Act:
    pt, pb, pl, pr = pads
    return imp.emit(node, "pad", x, (x.shape[0], x.shape[1] + pt + pb, x.shape[2] + pl + pr),
                    {"pads": tuple(pads)})


# ================================================================ handlers
def conv(imp: Importer, node: Node) -> None:
    x, w = imp.act(node), imp.float_const(node, 1)
    b = imp.float_const(node, 2)
    if w.ndim != 4 or len(x.shape) != 3:
        raise imp.unsupported(node, f"with a {w.ndim - 2}-D kernel (cnnc convolves images)")
    kernel = _hw(node.attrs.get("kernel_shape"), w.shape[2:])
    stride, dilation, pads = _window_attrs(node, x, kernel)
    groups = int(node.attrs.get("group", 1))
    if x.shape[0] != w.shape[1] * groups:
        raise imp.error(node, f"weight {w.shape} with group={groups} does not fit an input "
                              f"of depth {x.shape[0]}")
    padding = padding_form(x.shape[1:], kernel, stride, dilation, pads, pool=False)
    shape = (w.shape[0], *_spatial_out(x.shape, kernel, stride, dilation, pads))
    params = {"weight": w} | ({"bias": b.reshape(-1)} if b is not None else {})
    attrs = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                 bias=b is not None)
    if groups > 1 and groups == x.shape[0]:  # one input channel per group: §11's dwconv
        kind, attrs["multiplier"] = "dwconv", w.shape[0] // groups
    else:
        kind, attrs["depth"], attrs["groups"] = "conv", w.shape[0], groups
    imp.set_output(node, imp.emit(node, kind, x, shape, attrs, params, node.inputs[1]))


def _pool(kind: str):
    def handler(imp: Importer, node: Node) -> None:
        x = imp.act(node)
        kernel = _hw(node.attrs["kernel_shape"], None)
        stride, dilation, pads = _window_attrs(node, x, kernel)
        if dilation != (1, 1):
            raise imp.unsupported(node, "with dilations")
        if kind == "avgpool" and node.attrs.get("count_include_pad", 0) and any(pads):
            # padded zeros that count are real cells: pad first, then pool without padding
            x = _pad_layer(imp, node, x, pads)
            pads = (0, 0, 0, 0)
        pads, padding, ceil_mode = _pool_padding(x.shape[1:], kernel, stride, pads,
                                                 bool(node.attrs.get("ceil_mode")))
        if padding is None:
            raise imp.unsupported(node, f"with more padding than half the kernel (pads top, "
                                        f"bottom, left, right = {pads})")
        shape = (x.shape[0], *_spatial_out(x.shape, kernel, stride, (1, 1), pads, ceil_mode))
        attrs = dict(kernel=kernel, stride=stride, padding=padding)
        if ceil_mode:
            attrs["ceil_mode"] = True
        imp.set_output(node, imp.emit(node, kind, x, shape, attrs))
    return handler


def _pool_padding(hw, kernel, stride, pads, ceil_mode: bool):
    """(pads, §5/§11 padding form or None, ceil mode) giving a pool's windows.

    No window counts a padded cell (max pools, and average pools that exclude padding),
    so ceil mode may become extra bottom/right padding, and bottom/right padding may grow
    or shrink as long as the windows stay the same. The first of these that the language
    can say is taken: a floor-rule padding `valid`, `p`, `PHxPW` or `same` (Caffe's
    ceil-mode pools often come out `same`); the pads as given with `ceil_mode=true`;
    floor-rule four-sided padding.
    """
    choices = []  # per axis: (before, the range of `after` giving the same windows)
    for axis in (0, 1):
        size, k, s = hw[axis], kernel[axis], stride[axis]
        before, after = pads[2 * axis], pads[2 * axis + 1]
        n = window_count(size, k, s, before, after, ceil_mode)
        lower = (n - 1) * s + k - size - before  # the floor rule gives n for after in
        choices.append((before, range(max(lower, 0), lower + s)))  # [lower, lower + s)
    (bh, rh), (bw, rw) = choices
    options = [(bh, bw)] if bh in rh and bw in rw else []
    sh, sw = same_pads(hw[0], kernel[0], stride[0], 1), same_pads(hw[1], kernel[1], stride[1], 1)
    if sh[0] == bh and sw[0] == bw and sh[1] in rh and sw[1] in rw:
        options.append((sh[1], sw[1]))
    options.append((rh[0], rw[0]))
    for ah, aw in options:
        new = (bh, ah, bw, aw)
        form = padding_form(hw, kernel, stride, (1, 1), new, pool=True)
        if form is not None and not (isinstance(form, tuple) and len(form) == 4):
            return new, form, False
    if ceil_mode:
        form = padding_form(hw, kernel, stride, (1, 1), pads, pool=True)
        if form is not None:
            return tuple(pads), form, True
    new = (bh, rh[0], bw, rw[0])
    return new, padding_form(hw, kernel, stride, (1, 1), new, pool=True), False


def _global_pool(kind: str):
    def handler(imp: Importer, node: Node) -> None:
        x = imp.act(node)
        if len(x.shape) != 3:
            raise imp.unsupported(node, "on features")
        imp.set_output(node, imp.emit(node, kind, x, (x.shape[0], 1, 1), {"global": True}))
    return handler


def reduce_mean(imp: Importer, node: Node) -> None:
    x = imp.act(node)
    axes = node.attrs.get("axes")
    if imp.model.opset >= 18:
        axes = None if len(node.inputs) < 2 else [int(a) for a in imp.const(node, 1)]
    if len(x.shape) != 3 or sorted(a % 4 for a in axes or []) != [2, 3]:
        raise imp.unsupported(node, "over axes other than height and width")
    y = imp.emit(node, "avgpool", x, (x.shape[0], 1, 1), {"global": True})
    if not node.attrs.get("keepdims", 1):
        y = imp.emit(node, "flatten", y, (x.shape[0],))
    imp.set_output(node, y)


def _features(imp: Importer, node: Node, x: Act) -> Act:
    if len(x.shape) == 3:  # ONNX flattened it before; cnnc's dense would too
        x = imp.emit(node, "flatten", x, (math.prod(x.shape),))
    return x


def gemm(imp: Importer, node: Node) -> None:
    x = imp.act(node)
    b, c = imp.float_const(node, 1), imp.float_const(node, 2)
    if node.attrs.get("transA", 0) or b.ndim != 2:
        raise imp.unsupported(node, "with transA or a non-matrix weight")
    w = b if node.attrs.get("transB", 0) else b.T
    w = (w * node.attrs.get("alpha", 1.0)).astype(np.float32)
    _dense(imp, node, x, w, c, node.attrs.get("beta", 1.0))


def matmul(imp: Importer, node: Node) -> None:
    x, b = imp.act(node), imp.float_const(node, 1)
    if b.ndim != 2:
        raise imp.unsupported(node, "with a non-matrix weight")
    _dense(imp, node, x, np.ascontiguousarray(b.T), None, 1.0)


def _dense(imp, node, x, w, c, beta):
    x = _features(imp, node, x)
    units = w.shape[0]
    if w.shape[1] != x.shape[0]:
        raise imp.error(node, f"weight of {w.shape[1]} inputs for {x.shape[0]} features")
    params = {"weight": np.ascontiguousarray(w)}
    if c is not None:
        params["bias"] = (np.broadcast_to(c.reshape(-1) if c.size > 1 else c.ravel(),
                                          (units,)) * beta).astype(np.float32)
    imp.set_output(node, imp.emit(node, "dense", x, (units,), dict(units=units,
                                  bias=c is not None), params, node.inputs[1]))


def flatten(imp: Importer, node: Node) -> None:
    x = imp.act(node)
    axis = node.attrs.get("axis", 1)
    if axis % (len(x.shape) + 1) != 1:
        raise imp.unsupported(node, f"on axis {axis} (cnnc flattens from the channels)")
    imp.set_output(node, x if len(x.shape) == 1 else
                   imp.emit(node, "flatten", x, (math.prod(x.shape),)))


def reshape(imp: Importer, node: Node) -> None:
    value = imp.value(node, node.inputs[0])
    x = value if isinstance(value, Grouped) else imp.act(node)
    if imp.model.opset < 5:
        target = node.attrs["shape"]
    else:
        target = imp.const(node, 1)
    target = list(np.asarray(target).ravel())
    if target and not isinstance(target[0], type(BATCH)) and int(target[0]) not in (0, -1):
        target[0] = BATCH  # a fixed batch (often 1) in the file: cnnc's batch is free
    out = reshape_target(node, (BATCH, *x.shape), np.array(target, dtype=object),
                         bool(node.attrs.get("allowzero", 0)))
    if out[0] is not BATCH:
        raise imp.unsupported(node, f"that moves the batch axis (to {out})")
    out = tuple(out[1:])
    if isinstance(x, Grouped):
        imp.set_output(node, _ungrouped(imp, node, x, out))
    elif out == x.shape:
        imp.set_output(node, x)
    elif len(out) == 1:
        imp.set_output(node, x if len(x.shape) == 1 else imp.emit(node, "flatten", x, out))
    elif len(x.shape) == 3 and len(out) == 4 and out[2:] == x.shape[1:]:
        imp.set_output(node, Grouped(x, out[0]))  # (C, H, W) -> (g, C/g, H, W)
    else:
        raise imp.unsupported(node, f"from {x.shape} to {out} (cnnc reshapes only to "
                                    f"features)")


def _ungrouped(imp: Importer, node: Node, grouped: Grouped, out: tuple) -> Act:
    """The end of a channel shuffle: regrouped channels flattened back to (C, H, W)."""
    x = grouped.x
    if out != x.shape:
        raise imp.unsupported(node, f"from {grouped.shape} to {out} (cnnc reads a 5-D "
                                    f"reshape only as part of a channel shuffle)")
    if not grouped.transposed:  # regrouped and back: nothing moved
        return x
    return imp.emit(node, "shuffle", x, x.shape, {"groups": grouped.groups})


def transpose(imp: Importer, node: Node) -> None:
    """The middle of a channel shuffle: (N, g, C/g, H, W) -> (N, C/g, g, H, W)."""
    value = imp.value(node, node.inputs[0])
    perm = list(node.attrs.get("perm", []))
    if not isinstance(value, Grouped) or perm != [0, 2, 1, 3, 4]:
        raise imp.unsupported(node, f"with perm {perm} (cnnc reads a Transpose only in a "
                                    f"channel shuffle: Reshape to (N, g, C/g, H, W), "
                                    f"Transpose (0, 2, 1, 3, 4), Reshape back)")
    imp.set_output(node, Grouped(value.x, value.groups, not value.transposed))


def _channel_axis(imp: Importer, node: Node, x: Act, axis: int) -> None:
    rank = len(x.shape) + 1
    if not -rank <= axis < rank or axis % rank != 1:
        raise imp.unsupported(node, f"on axis {axis} (cnnc slices channels only)")


def _slice_layer(imp: Importer, node: Node, x: Act, start: int, count: int) -> Act:
    """Channels start .. start+count-1 of x; all of them is x itself."""
    if count <= 0:
        raise imp.error(node, f"takes no channels (start {start}, count {count})")
    if (start, count) == (0, x.shape[0]):
        return x
    return imp.emit(node, "slice", x, (count, *x.shape[1:]), {"start": start, "count": count})


def slice_(imp: Importer, node: Node) -> None:
    """Slice along the channels, step 1 (torch's `chunk` and `x[:, a:b]`)."""
    x = imp.act(node)
    if imp.model.opset < 10:
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes, steps = node.attrs.get("axes"), None
    else:
        starts, ends = (_int_list(imp, node, i) for i in (1, 2))
        axes, steps = _int_list(imp, node, 3), _int_list(imp, node, 4)
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else list(steps)
    channels = None
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        axis = range(len(x.shape) + 1)[int(a)]  # IndexError: no such axis
        if axis == 0:  # the batch, of unknown size: only all of it
            whole = int(s) == 0 and int(e) >= 2**31 - 1 and int(st) == 1
        else:
            size = x.shape[axis - 1]
            lo, hi, step = slice(int(s), int(e), int(st)).indices(size)
            whole = (lo, hi, step) == (0, size, 1)
            if axis == 1 and step == 1:
                channels, whole = (lo, hi - lo), True
        if not whole:
            raise imp.unsupported(node, f"on axis {a} with step {st} (cnnc slices channels "
                                        f"only, step 1)")
    imp.set_output(node, x if channels is None else _slice_layer(imp, node, x, *channels))


def _int_list(imp: Importer, node: Node, i: int) -> list[int] | None:
    value = imp.const(node, i)
    return None if value is None else [int(v) for v in np.asarray(value).ravel()]


def split(imp: Importer, node: Node) -> None:
    """Split along the channels: one slice per output."""
    x = imp.act(node)
    _channel_axis(imp, node, x, int(node.attrs.get("axis", 0)))
    c = x.shape[0]
    if imp.model.opset >= 13:
        sizes = _int_list(imp, node, 1)
    else:
        sizes = node.attrs.get("split")
    parts = len(node.outputs)
    if sizes is None:  # equal parts (opset 18's num_outputs: the last may be smaller)
        size = -(-c // parts)
        sizes = [min(size, c - i * size) for i in range(parts)]
    if len(sizes) != parts or sum(sizes) != c or min(sizes) < 0:
        raise imp.error(node, f"splits {c} channels into {list(sizes)}")
    start = 0
    for name, size in zip(node.outputs, sizes, strict=True):
        if name in imp.needed:
            imp.values[name] = _slice_layer(imp, node, x, start, size)
        start += size


def squeeze(imp: Importer, node: Node) -> None:
    x = imp.act(node)
    axes = node.attrs.get("axes") if imp.model.opset < 13 else \
        [int(a) for a in imp.const(node, 1, np.array([2, 3]))]
    if len(x.shape) == 3 and x.shape[1:] == (1, 1) and sorted(a % 4 for a in axes) == [2, 3]:
        imp.set_output(node, imp.emit(node, "flatten", x, (x.shape[0],)))
    else:
        raise imp.unsupported(node, f"of axes {axes} on {x.shape}")


def concat(imp: Importer, node: Node) -> None:
    xs = [imp.act(node, i) for i in range(len(node.inputs))]
    rank = len(xs[0].shape)
    if node.attrs.get("axis", 1) % (rank + 1) != 1:
        raise imp.unsupported(node, "on an axis other than the channels")
    if len({len(x.shape) for x in xs}) > 1 or len({x.shape[1:] for x in xs}) > 1:
        raise imp.error(node, "inputs disagree in shape")
    if len(xs) == 1:
        imp.set_output(node, xs[0])
        return
    shape = (sum(x.shape[0] for x in xs), *xs[0].shape[1:])
    imp.set_output(node, imp.emit(node, "concat", xs, shape))


def add_like(imp: Importer, node: Node) -> None:
    """Add, Sum and Mul of activations (one of depth C and 1x1 may be broadcast over the
    others' height and width, §11); Add/Sub/Mul/Div of an activation and a constant."""
    values = [imp.value(node, n) for n in node.inputs]
    acts = [v for v in values if isinstance(v, Act)]
    if len(acts) == len(values):
        if node.op not in ("Add", "Sum", "Mul"):
            raise imp.unsupported(node)
        full = max((a.shape for a in acts), key=lambda s: (len(s), math.prod(s[1:])))
        if any(a.shape != full and not broadcasts(a.shape, full) for a in acts):
            raise imp.error(node, "inputs disagree in shape: "
                                  + ", ".join(str(a.shape) for a in acts))
        kind = "mul" if node.op == "Mul" else "add"
        imp.set_output(node, acts[0] if len(acts) == 1 else imp.emit(node, kind, acts, full))
        return
    if len(values) != 2 or len(acts) != 1:
        raise imp.unsupported(node, "of several constants")
    x = acts[0]
    c_first = not isinstance(values[0], Act)
    vec = _per_channel(imp, node, x, values[1 - values.index(x)])
    one, zero = np.ones_like(vec), np.zeros_like(vec)
    scale, shift = {
        "Add": (one, vec), "Sum": (one, vec),
        "Sub": (-one, vec) if c_first else (one, -vec),
        "Mul": (vec, zero),
        "Div": (None, None) if c_first else (1.0 / vec.astype(np.float64), zero),
    }[node.op]
    if scale is None:
        raise imp.unsupported(node, "of a constant by an activation")
    imp.set_output(node, imp.emit(node, "_affine", x, x.shape, params={
        "scale": np.asarray(scale, np.float64), "shift": np.asarray(shift, np.float64)}))


def _per_channel(imp: Importer, node: Node, x: Act, c) -> np.ndarray:
    """A constant that broadcasts over the activation varying only by channel, as a
    vector of one value per channel."""
    c = np.asarray(c, dtype=np.float64)
    rank = len(x.shape) + 1
    if c.ndim > rank:
        raise imp.unsupported(node, f"with a constant of shape {c.shape}")
    c = c.reshape((1,) * (rank - c.ndim) + c.shape)
    if c.shape[0] != 1 or any(s != 1 for s in c.shape[2:]) or c.shape[1] not in (1, x.shape[0]):
        raise imp.unsupported(node, f"with a constant of shape {c.shape} that is not one "
                                    f"value per channel")
    return np.broadcast_to(c.reshape(-1), (x.shape[0],)).copy()


def batchnorm(imp: Importer, node: Node) -> None:
    x = imp.act(node)
    if not node.attrs.get("spatial", 1) or node.attrs.get("training_mode", 0):
        raise imp.unsupported(node, "in training mode or not spatial")
    scale, bias, mean, var = (imp.float_const(node, i).reshape(-1) for i in (1, 2, 3, 4))
    if any(p.shape != (x.shape[0],) for p in (scale, bias, mean, var)):
        raise imp.error(node, f"parameters do not have {x.shape[0]} channels")
    eps = float(np.float32(node.attrs.get("epsilon", EPS)))
    imp.set_output(node, imp.emit(node, "batchnorm", x, x.shape, {"eps": eps}, {
        "weight": scale, "bias": bias, "running_mean": mean, "running_var": var},
        node.inputs[1]))


def lrn(imp: Importer, node: Node) -> None:
    x = imp.act(node)
    a = node.attrs
    imp.set_output(node, imp.emit(node, "lrn", x, x.shape, dict(
        size=int(a["size"]), alpha=float(a.get("alpha", 1e-4)),
        beta=float(a.get("beta", 0.75)), k=float(a.get("bias", 1.0)))))


def dropout(imp: Importer, node: Node) -> None:
    x = imp.act(node)
    if imp.model.opset >= 12:
        ratio = imp.float_const(node, 1, np.float32(0.5))
        training = imp.const(node, 2, np.array(False))
        if bool(np.asarray(training).ravel()[0]):
            raise imp.unsupported(node, "in training mode")
        p = float(np.asarray(ratio).ravel()[0])
    else:
        p = float(node.attrs.get("ratio", 0.5))
    imp.set_output(node, imp.emit(node, "dropout", x, x.shape, {"p": p}))


def identity(imp: Importer, node: Node) -> None:
    imp.set_output(node, imp.act(node))


def pad(imp: Importer, node: Node) -> None:
    x = imp.act(node)
    if imp.model.opset >= 11:
        pads = [int(p) for p in imp.const(node, 1)]
        value = imp.float_const(node, 2, np.zeros(1, np.float32))
        if len(node.inputs) > 3 and node.inputs[3]:
            raise imp.unsupported(node, "with axes")
    else:
        pads = list(node.attrs["pads"])
        value = np.float32(node.attrs.get("value", 0.0))
    mode = node.attrs.get("mode", "constant")
    if mode != "constant" or float(np.asarray(value).ravel()[0]) != 0.0:
        raise imp.unsupported(node, f"in mode '{mode}' or with a value other than 0")
    if len(x.shape) != 3 or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or \
            min(pads) < 0:
        raise imp.unsupported(node, f"with pads {pads} (cnnc pads height and width)")
    imp.set_output(node, _pad_layer(imp, node, x, (pads[2], pads[6], pads[3], pads[7])))


def _unary(kind: str, **fixed):
    def handler(imp: Importer, node: Node) -> None:
        x = imp.act(node)
        attrs = {k: float(node.attrs.get(onnx_name, default))
                 for k, (onnx_name, default) in fixed.items()}
        imp.set_output(node, imp.emit(node, kind, x, x.shape, attrs))
    return handler


def softmax(imp: Importer, node: Node) -> None:
    x = imp.act(node)
    rank = len(x.shape) + 1
    axis = node.attrs.get("axis", -1 if imp.model.opset >= 13 else 1) % rank
    # before opset 13, Softmax flattens from `axis` on: over channels only if H = W = 1
    over_channels = axis == 1 and (imp.model.opset >= 13 or rank == 2 or x.shape[1:] == (1, 1))
    if not over_channels and not (rank == 2 and axis == 1):
        raise imp.unsupported(node, f"over axis {axis} of {(None, *x.shape)} (cnnc's softmax "
                                    f"is over the channels)")
    imp.set_output(node, imp.emit(node, "softmax", x, x.shape))


def _available(kind: str) -> bool:
    try:
        from ..layers import LAYERS
    except ImportError:
        return False
    return kind in LAYERS


def _future(kind: str, **attrs):
    """An operator that is one cnnc layer of §11: mapped once that layer exists."""
    def handler(imp: Importer, node: Node) -> None:
        if not _available(kind):
            raise imp.not_yet(node, kind)
        x = imp.act(node)
        imp.set_output(node, imp.emit(node, kind, x, x.shape, attrs))
    return handler


def clip(imp: Importer, node: Node) -> None:
    if imp.model.opset >= 11:
        lo = imp.float_const(node, 1, np.float32(-np.inf))
        hi = imp.float_const(node, 2, np.float32(np.inf))
        lo, hi = float(np.asarray(lo).ravel()[0]), float(np.asarray(hi).ravel()[0])
    else:
        lo, hi = node.attrs.get("min", -np.inf), node.attrs.get("max", np.inf)
    if lo == 0 and hi == np.inf:
        return _unary("relu")(imp, node)
    if lo == 0 and hi == 6:
        return _future("relu6")(imp, node)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise imp.unsupported(node, f"with bounds {lo}, {hi}")
    return _future("clip", min=lo, max=hi)(imp, node)


def hardsigmoid(imp: Importer, node: Node) -> None:
    alpha, beta = node.attrs.get("alpha", 0.2), node.attrs.get("beta", 0.5)
    if not (math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5):
        raise imp.unsupported(node, f"with alpha={alpha}, beta={beta} (cnnc's hardsigmoid "
                                    f"is PyTorch's: 1/6, 0.5)")
    return _future("hardsigmoid")(imp, node)


# ONNX op type -> how it becomes cnnc layers (a node of constants is folded instead)
HANDLERS: dict[str, Rule] = {
    "Conv": Rule(conv),
    "MaxPool": Rule(_pool("maxpool")),
    "AveragePool": Rule(_pool("avgpool")),
    "GlobalAveragePool": Rule(_global_pool("avgpool")),
    "GlobalMaxPool": Rule(_global_pool("maxpool")),
    "ReduceMean": Rule(reduce_mean),
    "Gemm": Rule(gemm),
    "MatMul": Rule(matmul),
    "Flatten": Rule(flatten),
    "Reshape": Rule(reshape),
    "Squeeze": Rule(squeeze),
    "Concat": Rule(concat),
    "Add": Rule(add_like),
    "Sum": Rule(add_like),
    "Sub": Rule(add_like),
    "Mul": Rule(add_like),
    "Div": Rule(add_like),
    "BatchNormalization": Rule(batchnorm),
    "LRN": Rule(lrn),
    "Dropout": Rule(dropout),
    "Identity": Rule(identity),
    "Pad": Rule(pad),
    "Relu": Rule(_unary("relu")),
    "Sigmoid": Rule(_unary("sigmoid")),
    "Tanh": Rule(_unary("tanh")),
    "LeakyRelu": Rule(_unary("leaky_relu", slope=("alpha", 0.01))),
    "Softmax": Rule(softmax),
    # §11 layers: each maps once its layer exists
    "Clip": Rule(clip),
    "HardSigmoid": Rule(hardsigmoid),
    "HardSwish": Rule(_future("hardswish"), since=14),
    "Transpose": Rule(transpose),
    "Split": Rule(split),
    "Slice": Rule(slice_),
}


def import_model(path: str) -> tuple[str, dict]:
    from .writer import write
    model = read_model(path)
    importer = Importer(model)
    out = importer.run()
    from .tidy import tidy
    layers, output = tidy(importer.layers, out.layer)
    return write(model, layers, output)
