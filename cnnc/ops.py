"""The op registry: one `OpSpec` per op, the one place that says what an op is.

A spec holds the op's arguments (defaults and value checks), how its attributes are
normalised, its shape rule, its parameter tensors (shapes and initialisation), its MACs
and the flags the passes and the runtime ask about (alias, window, activation, ...).
The front end (`layers.bind_arguments`, `layers.infer_shape`), the graph's parameter
shapes, `weights.init_parameters`, the graph check, the passes and the reports all read
it; docs/DESIGN.md ("The op registry") says how to add an op.

No Numba here: the passes import this module, and must not pull in the kernels. The
kernels side of an activation is its code in `kernels.elementwise.ACT_CODES` (a test
checks that the two agree).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .errors import CnncShapeError, CnncValueError

REQUIRED = object()  # the default of an argument that must be given

# How a spec's op appears in a program.
LAYER = "layer"  # called with arguments: `conv(16, 3x3)`
BRANCHING = "branching"  # `concat { ... | ... }`, `add { ... }`: one input per branch
GRAPH_ONLY = "graph-only"  # made by cnnc, never written: the input

# Whether the op's output is known to be >= 0 (fold-padding asks).
NEVER, ALWAYS, IF_INPUTS = "never", "always", "if its inputs are"

# How a parameter tensor starts out when no weights are given (§6).
HE_NORMAL, ZEROS, ONES = "he-normal", "zeros", "ones"


# ---------------------------------------------------------------- formatting
def format_shape(shape) -> str:
    """`16x32x32`: a shape (or any tuple of sizes) as LANGUAGE.md writes dimensions."""
    return "x".join(str(s) for s in shape)


def describe(value) -> str:
    """An argument value as the source writes it: `3x3`, `true`, `0.5`."""
    if isinstance(value, tuple):
        return format_shape(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---------------------------------------------------------------- argument checks
# Each check takes (op, argument name, value) and returns the resolved value.
def positive_int(op: str, arg: str, value) -> int:
    return _int(op, arg, value, 1)


def _int(op: str, arg: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CnncValueError(f"{op}: {arg} must be an integer, got {describe(value)}")
    if value < minimum:
        what = "positive" if minimum == 1 else f"at least {minimum}"
        raise CnncValueError(f"{op}: {arg} must be {what}, got {value}")
    return value


def non_negative_int(op: str, arg: str, value) -> int:
    return _int(op, arg, value, 0)


def _pair(op: str, arg: str, value, minimum: int) -> tuple[int, int]:
    """An integer `k` or a dimension `HxW`, each at least `minimum`."""
    if isinstance(value, bool) or isinstance(value, (float, str)):
        raise CnncValueError(f"{op}: {arg} must be an integer or HxW, got {describe(value)}")
    pair = (value, value) if isinstance(value, int) else value
    if len(pair) != 2:
        hint = "" if len(pair) != 4 else (
            " (four sides are written pad(top, bottom, left, right))" if op == "pad"
            else " (four sizes TxBxLxR are only for padding)")
        raise CnncValueError(
            f"{op}: {arg} must be an integer or HxW, got {describe(value)}{hint}")
    if min(pair) < minimum:
        what = "positive" if minimum == 1 else "non-negative"
        raise CnncValueError(f"{op}: {arg} must be {what}, got {describe(value)}")
    return tuple(pair)


def positive_pair(op: str, arg: str, value) -> tuple[int, int]:
    return _pair(op, arg, value, 1)


def non_negative_pair(op: str, arg: str, value) -> tuple[int, int]:
    return _pair(op, arg, value, 0)


def number(op: str, arg: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CnncValueError(f"{op}: {arg} must be a number, got {describe(value)}")
    return float(value)


def positive_number(op: str, arg: str, value) -> float:
    result = number(op, arg, value)
    if result <= 0:
        raise CnncValueError(f"{op}: {arg} must be positive, got {describe(value)}")
    return result


def probability(op: str, arg: str, value) -> float:
    result = number(op, arg, value)
    if not 0.0 <= result <= 1.0:
        raise CnncValueError(f"{op}: {arg} must be between 0 and 1, got {describe(value)}")
    return result


def boolean(op: str, arg: str, value) -> bool:
    if not isinstance(value, bool):
        raise CnncValueError(f"{op}: {arg} must be true or false, got {describe(value)}")
    return value


def padding(op: str, arg: str, value):
    """`same`, `valid`, an integer / HxW of zero cells or more, or four amounts TxBxLxR
    (top, bottom, left, right; LANGUAGE.md §11)."""
    if value in ("same", "valid"):
        return value
    if isinstance(value, tuple) and len(value) == 4:
        if min(value) < 0:
            raise CnncValueError(f"{op}: {arg} must be non-negative, got {describe(value)}")
        return value
    if isinstance(value, str) or (isinstance(value, tuple) and len(value) != 2):
        raise CnncValueError(f"{op}: {arg} must be same, valid, an integer, HxW or TxBxLxR, "
                             f"got {describe(value)}")
    return _pair(op, arg, value, 0)


# ---------------------------------------------------------------- the spec
@dataclass(frozen=True)
class Arg:
    """One argument of a layer, in positional order. Unpacks as `(name, default)`."""

    name: str
    default: object  # REQUIRED, None (resolved by the op's normalise), or a source value
    check: Callable[[str, str, object], object]

    def __iter__(self) -> Iterator:
        return iter((self.name, self.default))


@dataclass(frozen=True)
class Param:
    """One parameter tensor (`conv1.weight`); `trainable` as PyTorch's `parameters()`
    counts it (a batch norm's running statistics are buffers)."""

    name: str
    init: str  # HE_NORMAL, ZEROS or ONES
    trainable: bool = True


ShapeRule = Callable[[str, dict, list], tuple]


def same_shape(op: str, attrs: dict, shapes: list[tuple]) -> tuple:
    return shapes[0]


def no_params(attrs: dict, shape_in: tuple) -> dict[str, tuple]:
    return {}


def no_macs(attrs: dict, shape_in: tuple, shape_out: tuple) -> int:
    return 0


@dataclass(frozen=True)
class OpSpec:
    """Everything about one op. The rules are small functions of this module; the flags
    answer the passes' and the runtime's questions without naming ops there."""

    name: str
    form: str = LAYER  # LAYER, BRANCHING or GRAPH_ONLY
    args: tuple[Arg, ...] = ()
    # another way to call the layer (`pad(1, 1, 0, 0)`): given the
    # positional [(value, pos)] and keyword {name: (value, value_pos, key_pos)}
    # arguments, the attributes, or None to bind them by `args` as usual
    special_form: Callable[[list, dict], dict | None] | None = None
    normalise: Callable[[dict], None] | None = None  # fills in derived attributes
    spatial: bool = False  # needs a CxHxW input
    shape: ShapeRule | None = same_shape  # None: set by whoever makes the node
    params: tuple[Param, ...] = ()
    param_shapes: Callable[[dict, tuple], dict[str, tuple]] = no_params  # PyTorch layout
    macs: Callable[[dict, tuple, tuple], int] = no_macs  # per image: (attrs, in, out)
    alias: bool = False  # no kernel: its output is a view of its input's buffer
    identity: bool = False  # at inference its output is its input (drop-identity drops it)
    window: bool = False  # slides a kernel: `kernel, stride, pads` (conv and the pools)
    takes_global: bool = False  # `op(global)`: one window over the whole input
    whole_input: bool = False  # each output value depends on the whole input
    activation: bool = False  # element-wise; may run in a conv, dense or add epilogue
    epilogue: bool = False  # applies an `activation` attribute to the values it stores
    # a convolution: conv's attributes (depth, kernel, stride, padding, pads, dilation,
    # groups, bias), weight [depth, C/groups, kh, kw]; the passes and the runtime treat it
    # as a conv (dwconv is one whose depth and groups come from its input)
    convolution: bool = False
    non_negative: str = NEVER  # NEVER, ALWAYS or IF_INPUTS

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    @property
    def lowering(self) -> str:
        """How the runtime lowers the op: `view` (no kernel), `activation` (the
        activation kernel with the op's code in `kernels.ACT_CODES`), or the op's own
        name (its own rule in the runtime's lowering)."""
        if self.alias or self.name == "input":
            return "view"
        if self.convolution:
            return "conv"
        return "activation" if self.activation else self.name


# ---------------------------------------------------------------- shape rules
def resolve_pads(padding, size: int, kernel: int, stride: int, dilation: int, axis: int):
    """(before, after) padding of one axis (0: rows, 1: columns) under the §5 rules; a
    four-sided padding is (top, bottom, left, right)."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        k_eff = dilation * (kernel - 1) + 1
        out = -(-size // stride)
        total = max((out - 1) * stride + k_eff - size, 0)
        return total // 2, total - total // 2
    if len(padding) == 4:
        return padding[2 * axis], padding[2 * axis + 1]
    return padding[axis], padding[axis]


def window_count(size: int, k_eff: int, stride: int, before: int, after: int,
                 ceil_mode: bool = False) -> int:
    """Windows along one axis of an input of `size` padded by `before` and `after`.

    The floor rule of §5, or with `ceil_mode` PyTorch's: one more window for a partial
    one at the end, except where that window would start in the bottom/right padding
    (it would see no input cell). The caller checks that one window fits.
    """
    span = size + before + after - k_eff
    if not ceil_mode:
        return span // stride + 1
    count = -(-span // stride) + 1
    if (count - 1) * stride >= size + before:
        count -= 1
    return count


def _window(op: str, attrs: dict, shape: tuple) -> tuple[int, int]:
    """Output (H, W) of a conv or pool; fills attrs['pads']."""
    _, h, w = shape
    kernel, stride = attrs["kernel"], attrs["stride"]
    dilation = attrs.get("dilation", (1, 1))
    pt, pb = resolve_pads(attrs["padding"], h, kernel[0], stride[0], dilation[0], 0)
    pl, pr = resolve_pads(attrs["padding"], w, kernel[1], stride[1], dilation[1], 1)
    if not OPS[op].convolution and isinstance(attrs["padding"], tuple):
        # PyTorch's rule, so that no window lies wholly in padding
        if 2 * max(pt, pb) > kernel[0] or 2 * max(pl, pr) > kernel[1]:
            raise CnncValueError(
                f"{op}: padding {describe(attrs['padding'])} is more than half the kernel "
                f"{describe(kernel)}")
    attrs["pads"] = (pt, pb, pl, pr)
    k_eff = [dilation[i] * (kernel[i] - 1) + 1 for i in range(2)]
    padded = (h + pt + pb, w + pl + pr)
    if padded[0] < k_eff[0] or padded[1] < k_eff[1]:
        raise CnncShapeError(
            f"{op}: kernel {describe(kernel)}"
            + (f" (dilated to {format_shape(k_eff)})" if k_eff != list(kernel) else "")
            + f" is larger than its {'padded ' if pt + pb + pl + pr else ''}input "
            f"{format_shape(padded)} (input shape {format_shape(shape)})")
    ceil_mode = attrs.get("ceil_mode", False)
    oh = window_count(h, k_eff[0], stride[0], pt, pb, ceil_mode)
    ow = window_count(w, k_eff[1], stride[1], pl, pr, ceil_mode)
    return oh, ow


def _dwconv_shape(op: str, attrs: dict, shapes: list[tuple]) -> tuple:
    """A depthwise conv: one group per input channel, `multiplier` outputs each (§11)."""
    c = shapes[0][0]
    attrs["depth"] = attrs["multiplier"] * c
    attrs["groups"] = c
    attrs["in_channels"] = c
    return (attrs["depth"], *_window(op, attrs, shapes[0]))


def _conv_shape(op: str, attrs: dict, shapes: list[tuple]) -> tuple:
    c = shapes[0][0]
    groups, depth = attrs["groups"], attrs["depth"]
    if c % groups:
        raise CnncShapeError(f"conv: groups={groups} does not divide the input depth {c}")
    if depth % groups:
        raise CnncShapeError(f"conv: groups={groups} does not divide the output depth {depth}")
    attrs["in_channels"] = c
    return (depth, *_window(op, attrs, shapes[0]))


def _pool_shape(op: str, attrs: dict, shapes: list[tuple]) -> tuple:
    if attrs["global"]:
        return (shapes[0][0], 1, 1)
    return (shapes[0][0], *_window(op, attrs, shapes[0]))


def _shuffle_shape(op: str, attrs: dict, shapes: list[tuple]) -> tuple:
    c, groups = shapes[0][0], attrs["groups"]
    if c % groups:
        raise CnncShapeError(f"shuffle: groups={groups} does not divide the input depth {c}")
    return shapes[0]


def _slice_shape(op: str, attrs: dict, shapes: list[tuple]) -> tuple:
    c, start, count = shapes[0][0], attrs["start"], attrs["count"]
    if start + count > c:
        raise CnncShapeError(
            f"slice: channels {start}..{start + count - 1} are beyond the input depth {c} "
            f"(its channels are 0..{c - 1})")
    return (count, *shapes[0][1:])


def _dense_shape(op: str, attrs: dict, shapes: list[tuple]) -> tuple:
    attrs["in_features"] = math.prod(shapes[0])
    return (attrs["units"],)


def _flatten_shape(op: str, attrs: dict, shapes: list[tuple]) -> tuple:
    return (math.prod(shapes[0]),)


def _pad_shape(op: str, attrs: dict, shapes: list[tuple]) -> tuple:
    c, h, w = shapes[0]
    pt, pb, pl, pr = attrs["pads"]
    return (c, h + pt + pb, w + pl + pr)


def _concat_shape(op: str, attrs: dict, shapes: list[tuple]) -> tuple:
    if len({len(s) for s in shapes}) > 1:
        raise CnncShapeError(
            "concat: branches differ in rank: " + ", ".join(format_shape(s) for s in shapes))
    if len(shapes[0]) == 3 and len({s[1:] for s in shapes}) > 1:
        raise CnncShapeError("concat: branches disagree in height and width: "
                             + ", ".join(format_shape(s) for s in shapes))
    return (sum(s[0] for s in shapes), *shapes[0][1:])


def _elementwise_shape(op: str, attrs: dict, shapes: list[tuple]) -> tuple:
    """`add`, `mul`: equal shapes, except that a CxHxW branch of H = W = 1 is broadcast
    over the height and width of the others (§11's squeeze-and-excitation)."""
    if len({len(s) for s in shapes}) > 1:
        raise CnncShapeError(
            f"{op}: branches differ in rank: " + ", ".join(format_shape(s) for s in shapes))
    full = max(shapes, key=lambda s: math.prod(s[1:]))
    if any(s != full and not broadcasts(s, full) for s in shapes):
        hint = (f"; a branch of shape {full[0]}x1x1 would be broadcast over "
                f"{format_shape(full[1:])}" if len(full) == 3 else "")
        raise CnncShapeError(f"{op}: branches disagree in shape: "
                             + ", ".join(format_shape(s) for s in shapes) + hint)
    return full


def broadcasts(shape: tuple, full: tuple) -> bool:
    """Whether a branch of `shape` is spread over the height and width of `full` (§11):
    both CxHxW of the same depth, `shape` 1x1 and `full` not."""
    return (len(shape) == len(full) == 3 and shape != full and shape[0] == full[0]
            and shape[1:] == (1, 1))


# ---------------------------------------------------------------- parameters and MACs
def _conv_params(attrs: dict, shape_in: tuple) -> dict[str, tuple]:
    kh, kw = attrs["kernel"]
    shapes = {"weight": (attrs["depth"], shape_in[0] // attrs["groups"], kh, kw)}
    if attrs["bias"]:
        shapes["bias"] = (attrs["depth"],)
    return shapes


def _dense_params(attrs: dict, shape_in: tuple) -> dict[str, tuple]:
    shapes = {"weight": (attrs["units"], math.prod(shape_in))}
    if attrs["bias"]:
        shapes["bias"] = (attrs["units"],)
    return shapes


def _batchnorm_params(attrs: dict, shape_in: tuple) -> dict[str, tuple]:
    return {p: (shape_in[0],) for p in ("weight", "bias", "running_mean", "running_var")}


def _conv_macs(attrs: dict, shape_in: tuple, shape_out: tuple) -> int:
    kh, kw = attrs["kernel"]
    return math.prod(shape_out) * (shape_in[0] // attrs["groups"]) * kh * kw


def _dense_macs(attrs: dict, shape_in: tuple, shape_out: tuple) -> int:
    return math.prod(shape_in) * attrs["units"]


# ---------------------------------------------------------------- normalising
def _with_epilogue(attrs: dict) -> None:
    """No activation fused yet (fuse-epilogue sets one)."""
    attrs["activation"] = "none"
    attrs["slope"] = 0.0


def _clip_range(attrs: dict) -> None:
    if attrs["min"] > attrs["max"]:
        raise CnncValueError(f"clip: min {describe(attrs['min'])} is greater than max "
                             f"{describe(attrs['max'])}")


def _pool_defaults(attrs: dict) -> None:
    if attrs["stride"] is None:
        attrs["stride"] = attrs["kernel"]
    attrs["global"] = False


def _pad_sides(attrs: dict) -> None:
    ph, pw = attrs.pop("amount")
    attrs["pads"] = (ph, ph, pw, pw)


def _four_amounts(positional: list, keywords: dict) -> dict | None:
    """`pad(top, bottom, left, right)`."""
    if len(positional) == 4 and not keywords:
        return {"pads": tuple(non_negative_int("pad", "amount", v) for v, _ in positional)}
    if len(positional) in (2, 3):
        raise CnncValueError(
            "pad takes one amount (p or PHxPW) or four integers (top, bottom, left, right), "
            f"got {len(positional)}").at(positional[1][1])
    return None


# ---------------------------------------------------------------- the registry
_WINDOW_ARGS = (Arg("kernel", REQUIRED, positive_pair), Arg("stride", None, positive_pair),
                Arg("padding", "valid", padding))
_POOL_ARGS = (*_WINDOW_ARGS, Arg("ceil_mode", False, boolean))  # §11
_WEIGHT_AND_BIAS = (Param("weight", HE_NORMAL), Param("bias", ZEROS))


def _pool(name: str) -> OpSpec:
    return OpSpec(name, args=_POOL_ARGS, normalise=_pool_defaults, spatial=True,
                  shape=_pool_shape, window=True, takes_global=True, non_negative=IF_INPUTS)


def _activation(name: str, args: tuple[Arg, ...] = (), non_negative: str = NEVER,
                normalise: Callable[[dict], None] | None = None) -> OpSpec:
    """An element-wise activation: its code and formula are in kernels/elementwise.py; its
    arguments (at most two numbers) are the floats its kernel code takes."""
    return OpSpec(name, args=args, activation=True, non_negative=non_negative,
                  normalise=normalise)


_SPECS = (
    OpSpec("input", form=GRAPH_ONLY, shape=None),
    OpSpec("conv",
           args=(Arg("depth", REQUIRED, positive_int), Arg("kernel", REQUIRED, positive_pair),
                 Arg("stride", 1, positive_pair), Arg("padding", "valid", padding),
                 Arg("dilation", 1, positive_pair), Arg("groups", 1, positive_int),
                 Arg("bias", True, boolean)),
           normalise=_with_epilogue, spatial=True, shape=_conv_shape, params=_WEIGHT_AND_BIAS,
           param_shapes=_conv_params, macs=_conv_macs, window=True, epilogue=True,
           convolution=True),
    # §11: depth = multiplier x input depth, groups = input depth (set by its shape rule)
    OpSpec("dwconv",
           args=(Arg("kernel", REQUIRED, positive_pair), Arg("stride", 1, positive_pair),
                 Arg("padding", "valid", padding), Arg("dilation", 1, positive_pair),
                 Arg("multiplier", 1, positive_int), Arg("bias", True, boolean)),
           normalise=_with_epilogue, spatial=True, shape=_dwconv_shape,
           params=_WEIGHT_AND_BIAS, param_shapes=_conv_params, macs=_conv_macs, window=True,
           epilogue=True, convolution=True),
    _pool("maxpool"),
    _pool("avgpool"),
    OpSpec("dense", args=(Arg("units", REQUIRED, positive_int), Arg("bias", True, boolean)),
           normalise=_with_epilogue, shape=_dense_shape, params=_WEIGHT_AND_BIAS,
           param_shapes=_dense_params, macs=_dense_macs, whole_input=True, epilogue=True),
    OpSpec("flatten", shape=_flatten_shape, alias=True, whole_input=True,
           non_negative=IF_INPUTS),
    _activation("relu", non_negative=ALWAYS),
    _activation("sigmoid", non_negative=ALWAYS),
    _activation("tanh"),
    _activation("leaky_relu", args=(Arg("slope", 0.01, number),)),
    _activation("relu6", non_negative=ALWAYS),  # LANGUAGE.md §11
    _activation("hardsigmoid", non_negative=ALWAYS),  # §11
    _activation("hardswish"),  # §11: dips to -0.375 at x = -1.5
    # §11; never counted non-negative, even with min >= 0 (fold-padding stays cautious)
    _activation("clip", args=(Arg("min", REQUIRED, number), Arg("max", REQUIRED, number)),
                normalise=_clip_range),
    OpSpec("softmax", non_negative=ALWAYS),
    OpSpec("batchnorm", args=(Arg("eps", 1e-5, positive_number),),
           params=(Param("weight", ONES), Param("bias", ZEROS),
                   Param("running_mean", ZEROS, trainable=False),
                   Param("running_var", ONES, trainable=False)),
           param_shapes=_batchnorm_params),
    OpSpec("lrn", args=(Arg("size", 5, positive_int), Arg("alpha", 1e-4, number),
                        Arg("beta", 0.75, number), Arg("k", 1.0, number)), spatial=True),
    OpSpec("dropout", args=(Arg("p", 0.5, probability),), alias=True, identity=True,
           non_negative=IF_INPUTS),
    OpSpec("pad", args=(Arg("amount", REQUIRED, non_negative_pair),),
           special_form=_four_amounts, normalise=_pad_sides, spatial=True, shape=_pad_shape,
           non_negative=IF_INPUTS),
    OpSpec("identity", alias=True, identity=True, non_negative=IF_INPUTS),
    OpSpec("concat", form=BRANCHING, shape=_concat_shape, non_negative=IF_INPUTS),
    OpSpec("add", form=BRANCHING, shape=_elementwise_shape, epilogue=True,
           non_negative=IF_INPUTS),
    OpSpec("mul", form=BRANCHING, shape=_elementwise_shape, epilogue=True,  # §11
           non_negative=IF_INPUTS),
    # §11: ShuffleNet's channel shuffle, a permuting copy
    OpSpec("shuffle", args=(Arg("groups", REQUIRED, positive_int),), spatial=True,
           shape=_shuffle_shape, non_negative=IF_INPUTS),
    # §11: channels `start .. start+count-1` of its input, a view of its buffer; passes
    # make slices too (fuse-1x1-siblings, inplace-concat)
    OpSpec("slice", args=(Arg("start", REQUIRED, non_negative_int),
                          Arg("count", REQUIRED, positive_int)),
           shape=_slice_shape, alias=True, non_negative=IF_INPUTS),
)

OPS: dict[str, OpSpec] = {spec.name: spec for spec in _SPECS}

#: The layers a program calls by name (LANGUAGE.md §5, §11), in the order of the table.
LAYERS: dict[str, OpSpec] = {n: s for n, s in OPS.items() if s.form == LAYER}
ALIAS_OPS = tuple(n for n, s in OPS.items() if s.alias)
WINDOW_OPS = tuple(n for n, s in OPS.items() if s.window)
ACTIVATION_OPS = tuple(n for n, s in OPS.items() if s.activation)
EPILOGUE_OPS = tuple(n for n, s in OPS.items() if s.epilogue)
CONV_OPS = tuple(n for n, s in OPS.items() if s.convolution)
BRANCHING_OPS = tuple(n for n, s in OPS.items() if s.form == BRANCHING)


# ---------------------------------------------------------------- epilogues
def epilogue_of(attrs: dict) -> dict:
    """The epilogue attributes of an epilogue op's `attrs` (or of an activation node's,
    given as `{"activation": op, **attrs}`): the activation, the leaky `slope` (0 for the
    others) and the activation's own arguments (clip's `min` and `max`). fuse-epilogue
    copies them onto the producer; passes that merge convs compare them."""
    act = attrs.get("activation", "none")
    result = {"activation": act, "slope": float(attrs.get("slope", 0.0))}
    for arg in OPS[act].args if act in OPS else ():
        result[arg.name] = float(attrs[arg.name])
    return result


def activation_floats(act: str, attrs: dict) -> tuple[float, float]:
    """The two floats the kernels take with activation `act` (`alpha`, `beta`): its
    arguments in order, from `attrs` (the activation's node, or the epilogue op holding
    it), zeros where it has fewer: leaky_relu (slope, 0), clip (min, max)."""
    values = [float(attrs[a.name]) for a in (OPS[act].args if act in OPS else ())]
    return tuple(values + [0.0] * (2 - len(values)))
