"""Constant folding of ONNX nodes whose inputs are all known (§12).

Shape arithmetic in exported graphs (`Shape`->`Gather`->`Unsqueeze`->`Concat`->
`Reshape`) is evaluated here with numpy. The batch size is not known at import time:
`Shape` of an activation gives an object array whose first entry is `BATCH`, which
indexing, concatenation and reshaping carry along; arithmetic on it is an error.
"""

from __future__ import annotations

import numpy as np

from .model import MAX_CONSTANT_ELEMENTS, Node, OnnxError


class _Batch:
    """The symbolic batch size in a folded shape."""

    def __repr__(self) -> str:
        return "N"


BATCH = _Batch()


def _ints(value, node: Node) -> list[int]:
    if value is None:
        return []
    array = np.asarray(value)
    if any(v is BATCH for v in array.ravel()):
        raise OnnxError(f"{node.where()}: its value depends on the batch size")
    return [int(v) for v in array.ravel()]


def _axes(node: Node, inputs, opset: int, since: int) -> list[int] | None:
    """Axes of Squeeze/Unsqueeze/Reduce*: an attribute before `since`, an input after."""
    if opset >= since:
        return _ints(inputs[1], node) if len(inputs) > 1 and inputs[1] is not None else None
    return node.attrs.get("axes")


def _checked_size(shape, node: Node) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise OnnxError(f"{node.where()}: negative size in {shape}")
    if np.prod(shape, dtype=np.float64) > MAX_CONSTANT_ELEMENTS:
        raise OnnxError(f"{node.where()}: a constant of shape {shape} is larger than the "
                        f"limit of {MAX_CONSTANT_ELEMENTS:,} elements")
    return shape


def reshape_target(node: Node, in_shape: tuple, target, allowzero: bool) -> tuple:
    """The shape ONNX Reshape produces from `in_shape` (which may hold BATCH)."""
    dims = list(np.asarray(target).ravel())
    out, unknown = [], None
    for i, d in enumerate(dims):
        if d is BATCH:
            out.append(BATCH)
        elif int(d) == 0 and not allowzero:
            out.append(in_shape[i])
        elif int(d) == -1:
            unknown = i
            out.append(None)
        else:
            out.append(int(d))
    if unknown is not None:
        known = [d for d in out if d is not None]
        rest = [d for d in in_shape]
        # the batch cancels when both sides hold it once
        if known.count(BATCH) != rest.count(BATCH):
            raise OnnxError(f"{node.where()}: its shape depends on the batch size")
        num = np.prod([d for d in rest if d is not BATCH], dtype=np.int64)
        den = np.prod([d for d in known if d is not BATCH], dtype=np.int64)
        if den == 0 or num % den:
            raise OnnxError(f"{node.where()}: cannot reshape {tuple(in_shape)} to "
                            f"{tuple(dims)}")
        out[unknown] = int(num // den)
    return tuple(out)


def _reshape(node, x, target, opset):
    shape = reshape_target(node, x.shape, target, bool(node.attrs.get("allowzero", 0)))
    return x.reshape(_checked_size(shape, node))


def _slice(node, inputs, opset):
    data = inputs[0]
    if opset < 10:
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes, steps = node.attrs.get("axes"), None
    else:
        starts, ends = _ints(inputs[1], node), _ints(inputs[2], node)
        axes = _ints(inputs[3], node) if len(inputs) > 3 and inputs[3] is not None else None
        steps = _ints(inputs[4], node) if len(inputs) > 4 and inputs[4] is not None else None
    axes = list(range(len(starts))) if axes is None else axes
    steps = steps or [1] * len(starts)
    index = [slice(None)] * data.ndim
    for a, s, e, st in zip(axes, starts, ends, steps, strict=False):
        index[a] = slice(s, e, st)
    return data[tuple(index)]


def _constant(node, inputs, opset):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in node.attrs:
            value = np.asarray(node.attrs[key])
            if key.startswith("value_float"):
                value = value.astype(np.float32)
            elif key.startswith("value_int"):
                value = value.astype(np.int64)
            return value
    raise OnnxError(f"{node.where()}: a Constant cnnc cannot read "
                    f"({', '.join(node.attrs) or 'no value'})")


def _constant_of_shape(node, inputs, opset):
    shape = _checked_size(_ints(inputs[0], node), node)
    value = node.attrs.get("value", np.zeros(1, np.float32))
    return np.full(shape, value.ravel()[0], dtype=value.dtype)


def _cast(node, inputs, opset):
    from onnx import helper
    x = inputs[0]
    if x.dtype == object:
        return x  # a shape holding the batch: stays integral
    to = helper.tensor_dtype_to_np_dtype(node.attrs["to"])
    if to == np.float64 or to == np.float16:
        raise OnnxError(f"{node.where()}: casts to {to}; cnnc imports float32 models only")
    return x.astype(to)


def _arith(fn):
    def run(node, inputs, opset):
        try:
            return np.asarray(fn(inputs[0], inputs[1]))
        except TypeError:
            raise OnnxError(f"{node.where()}: its value depends on the batch size") from None
    return run


def _unary(fn):
    def run(node, inputs, opset):
        if inputs[0].dtype == object:
            raise OnnxError(f"{node.where()}: its value depends on the batch size")
        return np.asarray(fn(inputs[0]))
    return run


def _squeeze(node, inputs, opset):
    axes = _axes(node, inputs, opset, 13)
    x = inputs[0]
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(a % x.ndim for a in axes))


def _unsqueeze(node, inputs, opset):
    axes = _axes(node, inputs, opset, 13)
    x = inputs[0]
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = np.expand_dims(x, a)
    return x


def _div(a, b):
    if np.issubdtype(np.asarray(a).dtype, np.integer) and np.issubdtype(np.asarray(b).dtype,
                                                                          np.integer):
        return np.asarray(a) // np.asarray(b)
    return np.asarray(a) / np.asarray(b)


def _range(node, inputs, opset):
    start, limit, delta = (np.asarray(v).item() for v in inputs[:3])
    if delta == 0:
        raise OnnxError(f"{node.where()}: a Range with step 0")
    n = max(int(np.ceil((limit - start) / delta)), 0)
    _checked_size((n,), node)
    return np.arange(start, limit, delta, dtype=np.asarray(inputs[0]).dtype)


def _expand(node, inputs, opset):
    shape = np.broadcast_shapes(inputs[0].shape, tuple(_ints(inputs[1], node)))
    return np.broadcast_to(inputs[0], _checked_size(shape, node)).copy()


def _gather(node, inputs, opset):
    return np.take(inputs[0], np.asarray(inputs[1], dtype=np.int64),
                   axis=node.attrs.get("axis", 0))


def _concat(node, inputs, opset):
    return np.concatenate([np.asarray(x) for x in inputs], axis=node.attrs.get("axis", 0))


def _transpose(node, inputs, opset):
    return np.transpose(inputs[0], node.attrs.get("perm"))


def _flatten(node, inputs, opset):
    x, axis = inputs[0], node.attrs.get("axis", 1) % max(inputs[0].ndim, 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


# op type -> fn(node, input arrays, opset) -> output array (the first output)
FOLD = {
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Identity": lambda node, inputs, opset: inputs[0],
    "Cast": _cast,
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": _concat,
    "Reshape": lambda node, inputs, opset: _reshape(node, inputs[0], inputs[1], opset),
    "Flatten": _flatten,
    "Slice": _slice,
    "Transpose": _transpose,
    "Range": _range,
    "Expand": _expand,
    "Add": _arith(np.add),
    "Sub": _arith(np.subtract),
    "Mul": _arith(np.multiply),
    "Div": _arith(_div),
    "Pow": _arith(np.power),
    "Equal": _arith(np.equal),
    "Greater": _arith(np.greater),
    "Less": _arith(np.less),
    "Not": _unary(np.logical_not),
    "Sqrt": _unary(np.sqrt),
    "Neg": _unary(np.negative),
    "Floor": _unary(np.floor),
    "Ceil": _unary(np.ceil),
    "Reciprocal": _unary(np.reciprocal),
}


def fold(node: Node, inputs: list, opset: int):
    """The node's first output, computed from constant inputs."""
    try:
        value = FOLD[node.op](node, inputs, opset)
    except OnnxError:
        raise
    except (ValueError, IndexError, KeyError, TypeError) as err:
        raise OnnxError(f"{node.where()}: cannot evaluate it on its constant inputs: "
                        f"{err}") from None
    value = np.asarray(value)
    if value.dtype == np.float64:
        value = value.astype(np.float32)
    return value
