"""Lowering: the optimised graph becomes kernel calls (`Step`s) on planned tensor views.

Every tensor is a view (group, c0, channels, hw) placed by `memory.plan_buffers`
(docs/DESIGN.md); a step's arguments hold those views, which the runtime's plan binds to
arena positions. Kernels take shapes and attributes as arguments, so each compiles once
per type signature and is cached on disk by Numba.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from . import kernels as K
from .backend import LANES_MIN_SHARE, conv_kernel, lanes_runs
from .errors import CnncError
from .memory import ALIAS_OPS, View
from .ops import CONV_OPS, activation_floats, broadcasts


@dataclass
class Step:
    """One kernel call. `reads` and `writes` are the exact tensor regions it touches
    (channel ranges of groups), which `runtime.check_plan` follows through the whole plan."""

    node: str
    op: str
    kernel: object
    args: tuple  # with View placeholders, bound to arrays per batch size
    reads: tuple[View, ...] = ()
    writes: tuple[View, ...] = ()


def lower(graph: nx.DiGraph, order: list[str], views: dict[str, View]) -> list[Step]:
    """The kernel calls of the whole graph, node by node in `order`."""
    lanes = lanes_convs(graph, order, views)
    return [step for node_id in order for step in lower_node(graph, node_id, views, lanes)]


def lanes_convs(graph: nx.DiGraph, order: list[str], views: dict[str, View]) -> set[str]:
    """The convs that run on the lanes kernel: those `lanes_runs` gives it, when they hold
    at least `LANES_MIN_SHARE` of the network's conv multiply-adds, else the strided ones
    among them only (backend.LANES_MIN_SHARE says why)."""
    chosen, strided, macs, total = set(), set(), 0, 0
    for node_id in order:
        data = graph.nodes[node_id]
        if data["op"] not in CONV_OPS:
            continue
        attrs = data["attrs"]
        x = views[data["inputs"][0]]
        work = data["params"]["weight"].size * data["shape"][1] * data["shape"][2]
        total += work
        if (not attrs.get("winograd")
                and conv_kernel(data["shape"][0], attrs["groups"], x.channels) == "packed"
                and lanes_runs(attrs, x.channels, data["shape"])):
            chosen.add(node_id)
            macs += work
            if tuple(attrs["stride"]) != (1, 1):
                strided.add(node_id)
    return chosen if macs >= LANES_MIN_SHARE * total else strided


def _weight_and_bias(data) -> tuple[np.ndarray, np.ndarray]:
    w = np.ascontiguousarray(data["params"]["weight"], np.float32)
    b = data["params"].get("bias")
    b = np.zeros(w.shape[0], np.float32) if b is None else np.ascontiguousarray(b, np.float32)
    return w, b


def _conv_step(data, attrs, x: View, ins: list[View], out: View, act: int, alpha: float,
               beta: float, step, lanes: bool) -> Step:
    """The kernel call of a convolution (conv, dwconv), on the kernel the backend picks."""
    w, b = _weight_and_bias(data)
    pt, _, pl, _ = attrs["pads"]
    kernel = conv_kernel(data["shape"][0], attrs["groups"], x.channels)
    # a residual (fuse-residual) is the second input, added in the Winograd or packed store
    res, rc0 = (ins[1], ins[1].c0) if attrs.get("residual") else (out, -1)
    if attrs.get("winograd"):  # the winograd pass chose it; weights transformed here
        m = attrs["winograd"]
        args = (x, x.c0, x.channels, out, out.c0, w.shape[0], K.pack_winograd_weights(w, m),
                b, m, pt, pl, act, alpha, res, rc0)
        return step(K.conv2d_winograd, args, reads=ins)
    if kernel == "packed":
        # register-blocked direct convolution, weights packed once here: output positions
        # in the vector lanes, or output channels (the lanes kernel: `lanes_convs`)
        kh, kw = attrs["kernel"]
        wpk = K.pack_lanes_weights(w) if lanes else K.pack_conv_weights(w, attrs["groups"])
        args = (x, x.c0, x.channels, out, out.c0, w.shape[0], wpk, b, kh, kw, pt, pl,
                *attrs["stride"], *attrs["dilation"], attrs["groups"], act, alpha, beta, res,
                rc0, attrs.get("act_from", 0))
        return step(K.conv2d_lanes if lanes else K.conv2d_packed, args, reads=ins)
    if attrs.get("residual") or attrs.get("act_from"):
        raise CnncError(f"internal: conv '{data['name']}' has a residual or a partial "
                        "activation but no packed kernel")
    if kernel == "depthwise":
        args = (x, x.c0, x.channels, w, b, out, out.c0, *attrs["stride"], pt, pl,
                *attrs["dilation"], act, alpha, beta)
        return step(K.conv2d_depthwise, args)
    args = (x, x.c0, x.channels, w, b, out, out.c0, *attrs["stride"], pt, pl,
            *attrs["dilation"], attrs["groups"], act, alpha, beta)
    return step(K.conv2d, args)


def lower_node(graph: nx.DiGraph, node_id: str, views: dict[str, View],
               lanes: set[str] = frozenset()) -> list[Step]:
    """The kernel calls that compute one node; View objects stand for buffers; the convs
    in `lanes` run on the lanes kernel (`lanes_convs`).

    An op named in `kernels.ACT_CODES` is an element-wise activation: it lowers to the one
    activation kernel with its code, so a new activation needs no change here.
    """
    data = graph.nodes[node_id]
    op, attrs = data["op"], data["attrs"]
    out = views[node_id]
    ins = [views[i] for i in data["inputs"]]
    x = ins[0] if ins else None
    act = K.ACT_CODES.get(attrs.get("activation", "none"))
    # the epilogue's arguments (leaky slope; clip's min and max)
    alpha, beta = activation_floats(attrs.get("activation", "none"), attrs)

    def step(kernel, args, reads=(x,), writes=(out,)) -> Step:
        return Step(node_id, op, kernel, args, tuple(reads), tuple(writes))

    if op in ("input", *ALIAS_OPS):
        return []
    if op in CONV_OPS:
        return [_conv_step(data, attrs, x, ins, out, act, alpha, beta, step, node_id in lanes)]
    if op in ("maxpool", "avgpool"):
        if attrs["global"]:
            kernel = K.global_maxpool if op == "maxpool" else K.global_avgpool
            return [step(kernel, (x, x.c0, x.channels, out, out.c0))]
        pt, _, pl, _ = attrs["pads"]
        args = (x, x.c0, x.channels, out, out.c0, *attrs["kernel"], *attrs["stride"], pt, pl,
                int(op == "maxpool"))
        return [step(K.pool2d, args)]
    if op == "dense":
        w, b = _weight_and_bias(data)
        return [step(K.dense, (x, x.c0, x.channels, w, b, out, out.c0, act, alpha, beta))]
    if op in K.ACT_CODES:
        args = (x, x.c0, x.channels, out, out.c0, K.ACT_CODES[op], *activation_floats(op, attrs))
        return [step(K.activation, args)]
    if op == "softmax":
        return [step(K.softmax, (x, x.c0, x.channels, out, out.c0))]
    if op == "batchnorm":
        p = data["params"]
        scale, shift = K.batchnorm_coefficients(p["weight"], p["bias"], p["running_mean"],
                                                p["running_var"], attrs["eps"])
        return [step(K.batchnorm, (x, x.c0, x.channels, out, out.c0, scale, shift))]
    if op == "lrn":
        args = (x, x.c0, x.channels, out, out.c0, attrs["size"], float(attrs["alpha"]),
                float(attrs["beta"]), float(attrs["k"]))
        return [step(K.lrn, args)]
    if op == "pad":
        pt, _, pl, _ = attrs["pads"]
        return [step(K.pad2d, (x, x.c0, x.channels, out, out.c0, pt, pl, 0.0))]
    if op == "shuffle":
        return [step(K.shuffle_channels, (x, x.c0, x.channels, out, out.c0, attrs["groups"]))]
    if op == "concat":
        steps, offset = [], 0
        for src in ins:
            part = View(out.group, out.c0 + offset, src.channels, out.hw)
            if part != src:  # not written in place by its producer
                steps.append(step(K.copy_channels, (src, src.c0, src.channels, out, part.c0),
                                  reads=(src,), writes=(part,)))
            offset += src.channels
        return steps
    if op in ("add", "mul"):
        if len(ins) == 1:  # `add { A }` is A (with the add's fused activation, if any)
            return [step(K.activation, (x, x.c0, x.channels, out, out.c0, act, alpha, beta))]
        # the first operand of full shape first: the kernel broadcasts its second operand
        # (§11: a Cx1x1 branch over HxW); + and * commute exactly, also in float32
        full = tuple(data["shape"])
        shapes = [tuple(graph.nodes[i]["shape"]) for i in data["inputs"]]
        first = next(k for k, s in enumerate(shapes) if not broadcasts(s, full))
        ordered = [ins[first]] + ins[:first] + ins[first + 1:]
        steps = []
        a = ordered[0]
        for i, b in enumerate(ordered[1:]):
            last = i == len(ordered) - 2
            args = (a, a.c0, b, b.c0, out.channels, out, out.c0, int(op == "mul"),
                    act if last else 0, alpha, beta)
            steps.append(step(K.combine, args, reads=(a, b)))
            a = out
        return steps
    raise CnncError(f"internal: no kernel for op '{op}'")
