"""The layer table of LANGUAGE.md §5: arguments, defaults and their checks.

`bind_arguments` turns a call's evaluated arguments into the resolved attribute
dict stored on a graph node; `infer_shape` computes a layer's output shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import CnncError, CnncNameError, CnncShapeError, CnncValueError
from .frontend import INT_LIMIT, did_you_mean

WORDS = ("same", "valid", "global", "true", "false")
_REQUIRED = object()


@dataclass(frozen=True)
class LayerSpec:
    args: tuple[tuple[str, object], ...]  # (name, default); _REQUIRED for required ones
    params: tuple[str, ...] = ()  # parameter tensors, in order


LAYERS: dict[str, LayerSpec] = {
    "conv": LayerSpec((("depth", _REQUIRED), ("kernel", _REQUIRED), ("stride", 1),
                       ("padding", "valid"), ("dilation", 1), ("groups", 1), ("bias", True)),
                      ("weight", "bias")),
    "maxpool": LayerSpec((("kernel", _REQUIRED), ("stride", None), ("padding", "valid"))),
    "avgpool": LayerSpec((("kernel", _REQUIRED), ("stride", None), ("padding", "valid"))),
    "dense": LayerSpec((("units", _REQUIRED), ("bias", True)), ("weight", "bias")),
    "flatten": LayerSpec(()),
    "relu": LayerSpec(()),
    "sigmoid": LayerSpec(()),
    "tanh": LayerSpec(()),
    "leaky_relu": LayerSpec((("slope", 0.01),)),
    "softmax": LayerSpec(()),
    "batchnorm": LayerSpec((("eps", 1e-5),), ("weight", "bias", "running_mean", "running_var")),
    "lrn": LayerSpec((("size", 5), ("alpha", 1e-4), ("beta", 0.75), ("k", 1.0))),
    "dropout": LayerSpec((("p", 0.5),)),
    "pad": LayerSpec((("amount", _REQUIRED),)),
    "identity": LayerSpec(()),
}


def _describe(value) -> str:
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pair(layer: str, arg: str, value, minimum: int) -> tuple[int, int]:
    """An integer `k` or a dimension `HxW`, each at least `minimum`."""
    if isinstance(value, bool) or isinstance(value, (float, str)):
        raise CnncValueError(f"{layer}: {arg} must be an integer or HxW, got {_describe(value)}")
    pair = (value, value) if isinstance(value, int) else value
    if len(pair) != 2:
        raise CnncValueError(f"{layer}: {arg} must be an integer or HxW, got {_describe(value)}")
    if min(pair) < minimum:
        what = "positive" if minimum == 1 else "non-negative"
        raise CnncValueError(f"{layer}: {arg} must be {what}, got {_describe(value)}")
    return tuple(pair)


def _int(layer: str, arg: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CnncValueError(f"{layer}: {arg} must be an integer, got {_describe(value)}")
    if value < minimum:
        what = "positive" if minimum == 1 else f"at least {minimum}"
        raise CnncValueError(f"{layer}: {arg} must be {what}, got {value}")
    return value


def _number(layer: str, arg: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CnncValueError(f"{layer}: {arg} must be a number, got {_describe(value)}")
    return float(value)


def _bool(layer: str, arg: str, value) -> bool:
    if not isinstance(value, bool):
        raise CnncValueError(f"{layer}: {arg} must be true or false, got {_describe(value)}")
    return value


def _padding(layer: str, value):
    if value in ("same", "valid"):
        return value
    if isinstance(value, str):
        raise CnncValueError(f"{layer}: padding must be same, valid, an integer or HxW, got {value}")
    return _pair(layer, "padding", value, 0)


def bind_arguments(kind: str, positional: list, keywords: dict) -> dict:
    """Match evaluated arguments to the layer's table and check their values.

    `positional` is a list of (value, pos); `keywords` maps name -> (value, value_pos,
    key_pos). Returns the resolved attribute dict. An error in a value carries the value's
    position; an unknown or repeated keyword, the keyword's.
    """
    spec = LAYERS[kind]
    names = [n for n, _ in spec.args]
    # `global` alone is its own form of the pools.
    global_at = [p for v, p, *_ in [*positional, *keywords.values()] if v == "global"]
    if global_at:
        if kind not in ("maxpool", "avgpool"):
            raise CnncValueError(f"{kind}: 'global' is only for avgpool and maxpool").at(global_at[0])
        if len(positional) != 1 or keywords:
            raise CnncValueError(f"{kind}(global) takes no other arguments").at(global_at[0])
        return {"global": True}
    if kind == "pad":
        if len(positional) == 4 and not keywords:
            pads = tuple(_int("pad", "amount", v, 0) for v, _ in positional)
            return {"pads": pads}
        if len(positional) in (2, 3):
            raise CnncValueError(
                "pad takes one amount (p or PHxPW) or four integers (top, bottom, left, right), "
                f"got {len(positional)}").at(positional[1][1])
    if len(positional) > len(names):
        raise CnncValueError(
            f"{kind} takes at most {len(names)} argument{'s' if len(names) != 1 else ''}, "
            f"got {len(positional)}").at(positional[len(names)][1])
    given: dict[str, tuple] = {}
    for (value, pos), name in zip(positional, names):
        given[name] = (value, pos)
    for key, (value, pos, key_pos) in keywords.items():
        if key not in names:
            choices = ", ".join(names) if names else "none"
            raise CnncNameError(
                f"{kind} has no argument '{key}'{did_you_mean(key, names)}; its arguments: {choices}"
            ).at(key_pos)
        if key in given:
            raise CnncValueError(f"{kind}: argument '{key}' given twice").at(key_pos)
        given[key] = (value, pos)
    attrs: dict = {}
    for name, default in spec.args:
        if name in given:
            value, pos = given[name]
            try:
                attrs[name] = _check(kind, name, value)
            except CnncError as err:
                raise err.at(pos) from None
        elif default is _REQUIRED:
            raise CnncValueError(f"{kind} needs the argument '{name}'")
        else:
            attrs[name] = None if default is None else _check(kind, name, default)
    return _normalise(kind, attrs)


def _check(kind: str, name: str, value):
    if kind == "conv":
        if name in ("depth", "groups"):
            return _int(kind, name, value)
        if name in ("kernel", "stride", "dilation"):
            return _pair(kind, name, value, 1)
        if name == "padding":
            return _padding(kind, value)
        return _bool(kind, name, value)
    if kind in ("maxpool", "avgpool"):
        if name == "padding":
            return _padding(kind, value)
        return _pair(kind, name, value, 1)
    if kind == "dense":
        return _int(kind, name, value) if name == "units" else _bool(kind, name, value)
    if kind == "lrn" and name == "size":
        return _int(kind, name, value)
    if kind == "pad":
        return _pair(kind, "amount", value, 0)
    number = _number(kind, name, value)
    if kind == "dropout" and not 0.0 <= number <= 1.0:
        raise CnncValueError(f"dropout: p must be between 0 and 1, got {_describe(value)}")
    if kind == "batchnorm" and number <= 0:
        raise CnncValueError(f"batchnorm: eps must be positive, got {_describe(value)}")
    return number


def _normalise(kind: str, attrs: dict) -> dict:
    if kind in ("maxpool", "avgpool"):
        if attrs["stride"] is None:
            attrs["stride"] = attrs["kernel"]
        attrs["global"] = False
    if kind == "pad":
        ph, pw = attrs.pop("amount")
        attrs["pads"] = (ph, ph, pw, pw)
    if kind in ("conv", "dense"):
        attrs["activation"] = "none"
        attrs["slope"] = 0.0
    return attrs


# ---------------------------------------------------------------- shapes
def _fmt(shape) -> str:
    return "x".join(str(s) for s in shape)


def resolve_pads(padding, size: int, kernel: int, stride: int, dilation: int, axis: int):
    """(before, after) padding of one axis under the §5 rules."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        k_eff = dilation * (kernel - 1) + 1
        out = -(-size // stride)
        total = max((out - 1) * stride + k_eff - size, 0)
        return total // 2, total - total // 2
    return padding[axis], padding[axis]


def _window(kind: str, attrs: dict, shape: tuple) -> tuple[int, int, int]:
    """Output (C, H, W) of a conv or pool; fills attrs['pads']."""
    _, h, w = shape
    kernel, stride = attrs["kernel"], attrs["stride"]
    dilation = attrs.get("dilation", (1, 1))
    pt, pb = resolve_pads(attrs["padding"], h, kernel[0], stride[0], dilation[0], 0)
    pl, pr = resolve_pads(attrs["padding"], w, kernel[1], stride[1], dilation[1], 1)
    if kind != "conv" and isinstance(attrs["padding"], tuple):
        if 2 * attrs["padding"][0] > kernel[0] or 2 * attrs["padding"][1] > kernel[1]:
            raise CnncValueError(
                f"{kind}: padding {_describe(attrs['padding'])} is more than half the kernel "
                f"{_describe(kernel)}")
    attrs["pads"] = (pt, pb, pl, pr)
    k_eff = [dilation[i] * (kernel[i] - 1) + 1 for i in range(2)]
    padded = (h + pt + pb, w + pl + pr)
    if padded[0] < k_eff[0] or padded[1] < k_eff[1]:
        raise CnncShapeError(
            f"{kind}: kernel {_describe(kernel)}"
            + (f" (dilated to {_fmt(k_eff)})" if k_eff != list(kernel) else "")
            + f" is larger than its {'padded ' if pt + pb + pl + pr else ''}input "
            f"{_fmt(padded)} (input shape {_fmt(shape)})")
    oh = (padded[0] - k_eff[0]) // stride[0] + 1
    ow = (padded[1] - k_eff[1]) // stride[1] + 1
    return oh, ow


def infer_shape(kind: str, attrs: dict, shapes: list[tuple]) -> tuple:
    """Output shape of a layer (without batch) from its input shapes.

    Every size is at most INT_LIMIT, like every value of the language, so sizes stay
    small integers however the layers combine (flattening, padding, concatenating).
    Whether a network fits in memory is the runtime's question.
    """
    shape = _output_shape(kind, attrs, shapes)
    if max(shape) > INT_LIMIT:
        raise CnncShapeError(
            f"{kind}: the output shape {_fmt(shape)} has a size beyond the limit {INT_LIMIT}")
    if attrs.get("in_features", 0) > INT_LIMIT:
        raise CnncShapeError(f"{kind}: its {attrs['in_features']} input features are beyond "
                             f"the limit {INT_LIMIT}")
    return shape


def _output_shape(kind: str, attrs: dict, shapes: list[tuple]) -> tuple:
    shape = shapes[0]
    spatial = len(shape) == 3
    if kind in ("conv", "maxpool", "avgpool", "lrn", "pad") and not spatial:
        raise CnncShapeError(
            f"{kind} needs a CxHxW input, got features of shape ({shape[0]},)")
    if kind == "conv":
        c = shape[0]
        groups, depth = attrs["groups"], attrs["depth"]
        if c % groups:
            raise CnncShapeError(f"conv: groups={groups} does not divide the input depth {c}")
        if depth % groups:
            raise CnncShapeError(f"conv: groups={groups} does not divide the output depth {depth}")
        attrs["in_channels"] = c
        return (depth, *_window(kind, attrs, shape))
    if kind in ("maxpool", "avgpool"):
        if attrs["global"]:
            return (shape[0], 1, 1)
        return (shape[0], *_window(kind, attrs, shape))
    if kind == "dense":
        attrs["in_features"] = math.prod(shape)
        return (attrs["units"],)
    if kind == "flatten":
        return (math.prod(shape),)
    if kind == "pad":
        pt, pb, pl, pr = attrs["pads"]
        return (shape[0], shape[1] + pt + pb, shape[2] + pl + pr)
    if kind == "concat":
        if len({len(s) for s in shapes}) > 1:
            raise CnncShapeError(
                "concat: branches differ in rank: " + ", ".join(_fmt(s) for s in shapes))
        if len(shape) == 3 and len({s[1:] for s in shapes}) > 1:
            raise CnncShapeError(
                "concat: branches disagree in height and width: "
                + ", ".join(_fmt(s) for s in shapes))
        return (sum(s[0] for s in shapes), *shape[1:])
    if kind == "add":
        if len(set(shapes)) > 1:
            raise CnncShapeError(
                "add: branches disagree in shape: " + ", ".join(_fmt(s) for s in shapes))
        return shape
    return shape  # element-wise layers, batchnorm, softmax, dropout, identity


def param_shapes(kind: str, attrs: dict, shape_in: tuple) -> dict[str, tuple]:
    """PyTorch-layout shapes of a layer's parameter tensors (§5, §6)."""
    if kind == "conv":
        kh, kw = attrs["kernel"]
        shapes = {"weight": (attrs["depth"], shape_in[0] // attrs["groups"], kh, kw)}
        if attrs["bias"]:
            shapes["bias"] = (attrs["depth"],)
        return shapes
    if kind == "dense":
        shapes = {"weight": (attrs["units"], math.prod(shape_in))}
        if attrs["bias"]:
            shapes["bias"] = (attrs["units"],)
        return shapes
    if kind == "batchnorm":
        c = shape_in[0]
        return {p: (c,) for p in ("weight", "bias", "running_mean", "running_var")}
    return {}
