"""The layers of a program, by the op registry (`cnnc.ops`): binding a call's arguments,
output shapes and parameter shapes.

`bind_arguments` turns a call's evaluated arguments into the resolved attribute
dict stored on a graph node; `infer_shape` computes an op's output shape;
`param_shapes` the shapes of its parameter tensors. Each reads the op's spec; nothing
here names an op.
"""

from __future__ import annotations

from .errors import CnncError, CnncNameError, CnncShapeError, CnncValueError
from .frontend import INT_LIMIT, did_you_mean
from .ops import LAYERS, OPS, REQUIRED, OpSpec, format_shape, resolve_pads

__all__ = ["LAYERS", "WORDS", "bind_arguments", "infer_shape", "param_shapes", "resolve_pads"]

WORDS = ("same", "valid", "global", "true", "false")
_GLOBAL_OPS = " and ".join(sorted(n for n, s in LAYERS.items() if s.takes_global))


def bind_arguments(kind: str, positional: list, keywords: dict) -> dict:
    """Match evaluated arguments to the layer's table and check their values.

    `positional` is a list of (value, pos); `keywords` maps name -> (value, value_pos,
    key_pos). Returns the resolved attribute dict. An error in a value carries the value's
    position; an unknown or repeated keyword, the keyword's.
    """
    spec = LAYERS[kind]
    names = [arg.name for arg in spec.args]
    # `global` alone is its own form of the pools.
    global_at = [p for v, p, *_ in [*positional, *keywords.values()] if v == "global"]
    if global_at:
        if not spec.takes_global:
            raise CnncValueError(f"{kind}: 'global' is only for {_GLOBAL_OPS}").at(global_at[0])
        if len(positional) != 1 or keywords:
            raise CnncValueError(f"{kind}(global) takes no other arguments").at(global_at[0])
        return {"global": True}
    if spec.special_form is not None:
        attrs = spec.special_form(positional, keywords)
        if attrs is not None:
            return attrs
    if len(positional) > len(names):
        raise CnncValueError(
            f"{kind} takes at most {len(names)} argument{'s' if len(names) != 1 else ''}, "
            f"got {len(positional)}").at(positional[len(names)][1])
    given: dict[str, tuple] = {}
    for (value, pos), name in zip(positional, names, strict=False):
        given[name] = (value, pos)
    for key, (value, pos, key_pos) in keywords.items():
        if key not in names:
            choices = ", ".join(names) if names else "none"
            raise CnncNameError(
                f"{kind} has no argument '{key}'{did_you_mean(key, names)}; "
                f"its arguments: {choices}"
            ).at(key_pos)
        if key in given:
            raise CnncValueError(f"{kind}: argument '{key}' given twice").at(key_pos)
        given[key] = (value, pos)
    return _resolve(spec, given)


def _resolve(spec: OpSpec, given: dict[str, tuple]) -> dict:
    """The attributes from the given (value, pos) by name and the defaults, checked."""
    attrs: dict = {}
    for arg in spec.args:
        if arg.name in given:
            value, pos = given[arg.name]
            try:
                attrs[arg.name] = arg.check(spec.name, arg.name, value)
            except CnncError as err:
                raise err.at(pos) from None
        elif arg.default is REQUIRED:
            raise CnncValueError(f"{spec.name} needs the argument '{arg.name}'")
        else:  # None: the op's normalise fills it in
            attrs[arg.name] = None if arg.default is None else arg.check(
                spec.name, arg.name, arg.default)
    if spec.normalise is not None:
        spec.normalise(attrs)
    return attrs


def infer_shape(kind: str, attrs: dict, shapes: list[tuple]) -> tuple:
    """Output shape of an op (without batch) from its input shapes.

    Every size is at most INT_LIMIT, like every value of the language, so sizes stay
    small integers however the layers combine (flattening, padding, concatenating).
    Whether a network fits in memory is the runtime's question.
    """
    spec = OPS[kind]
    if spec.spatial and len(shapes[0]) != 3:
        raise CnncShapeError(
            f"{kind} needs a CxHxW input, got features of shape ({shapes[0][0]},)")
    shape = spec.shape(kind, attrs, shapes)
    if max(shape) > INT_LIMIT:
        raise CnncShapeError(
            f"{kind}: the output shape {format_shape(shape)} has a size beyond the limit "
            f"{INT_LIMIT}")
    if attrs.get("in_features", 0) > INT_LIMIT:
        raise CnncShapeError(f"{kind}: its {attrs['in_features']} input features are beyond "
                             f"the limit {INT_LIMIT}")
    return shape


def param_shapes(kind: str, attrs: dict, shape_in: tuple) -> dict[str, tuple]:
    """PyTorch-layout shapes of an op's parameter tensors (§5, §6), in order."""
    return OPS[kind].param_shapes(attrs, shape_in)
