"""Checking the optimiser's graphs: the invariants every pass keeps.

`verify_graph` is the structural check that runs after every pass in the tests
(and with `optimize(..., check=True)`). The numerical check behind `cnnc verify`
runs plans, so it lives above the runtime (`compiler.verify_passes`).
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from ..backend import winograd_runs
from ..errors import CnncError
from ..layers import infer_shape, param_shapes, resolve_pads
from ..ops import ACTIVATION_OPS, BRANCHING, CONV_OPS, OPS, WINDOW_OPS, window_count

ACTIVATIONS = ("none", *ACTIVATION_OPS)  # what an epilogue may apply
WINOGRAD_TILES = (2, 4)  # the F(m x m, 3x3) tiles the runtime runs


class GraphCheckError(CnncError):
    """The optimiser left a graph that breaks an invariant (a bug in cnnc, not the user's)."""


def verify_graph(graph: nx.DiGraph) -> None:
    """Raise GraphCheckError unless the graph is consistent.

    Checks: the graph input and output exist and the graph is acyclic; each
    node's edges match its `inputs`; its shape is what `layers.infer_shape`
    gives from its inputs' shapes (conv and pools from their `pads`; a `slice`
    lies within its input); the source form of `padding` agrees with `pads`;
    `activation`, `act_from`, `inplace` and `start` attributes are well formed; `params`,
    where present, have exactly the names and shapes the attributes imply.
    """
    for role in ("input", "output"):
        if graph.graph.get(role) not in graph:
            raise GraphCheckError(f"graph check: the graph {role} "
                                  f"'{graph.graph.get(role)}' is not a node")
    if not nx.is_directed_acyclic_graph(graph):
        raise GraphCheckError(f"graph check: cycle {nx.find_cycle(graph)}")
    for node, data in graph.nodes(data=True):
        try:
            _check_node(graph, node, data)
        except GraphCheckError as err:
            raise GraphCheckError(f"graph check: node '{node}': {err.message}") from None


def _check_node(graph: nx.DiGraph, node: str, data: dict) -> None:
    op, attrs, inputs = data["op"], data["attrs"], data["inputs"]
    if op not in OPS:
        raise GraphCheckError(f"unknown op '{op}'")
    if set(graph.predecessors(node)) != set(inputs):
        raise GraphCheckError(f"edges from {sorted(graph.predecessors(node))} but inputs "
                              f"{inputs}")
    if op == "input":
        if inputs or tuple(data["shape"]) != tuple(graph.graph["input_shape"]):
            raise GraphCheckError("the input node has inputs or the wrong shape")
        return
    arity = 2 if op in CONV_OPS and attrs.get("residual") else 1  # a residual: [x, skip]
    if not inputs or (OPS[op].form != BRANCHING and len(inputs) != arity):
        raise GraphCheckError(f"{op} with {len(inputs)} inputs")
    shapes = [tuple(graph.nodes[src]["shape"]) for src in inputs]
    if arity == 2:
        if shapes[1] != tuple(data["shape"]):
            raise GraphCheckError(f"residual of shape {shapes[1]} for an output of shape "
                                  f"{tuple(data['shape'])}")
        shapes = shapes[:1]
    expected = _expected_shape(op, attrs, shapes, tuple(data["shape"]))
    if tuple(data["shape"]) != tuple(expected):
        raise GraphCheckError(f"shape {tuple(data['shape'])}, but its inputs give "
                              f"{tuple(expected)}")
    if "winograd" in attrs:
        _check_winograd(attrs)
    if OPS[op].epilogue and attrs.get("activation", "none") not in ACTIVATIONS:
        raise GraphCheckError(f"unknown activation '{attrs.get('activation')}'")
    if OPS[op].epilogue and attrs.get("activation", "none") != "none":
        missing = [a.name for a in OPS[attrs["activation"]].args if a.name not in attrs]
        if missing:
            raise GraphCheckError(f"epilogue {attrs['activation']} without its "
                                  f"{', '.join(missing)}")
    if "act_from" in attrs:  # fuse-1x1-siblings: the activation from that channel on
        act_from = attrs["act_from"]
        if (op != "conv" or not isinstance(act_from, int) or not 0 < act_from < data["shape"][0]
                or attrs.get("activation", "none") == "none"):
            raise GraphCheckError(f"act_from {act_from!r} on a {op} of depth "
                                  f"{data['shape'][0]}, activation "
                                  f"{attrs.get('activation', 'none')}")
    if op == "concat" and "inplace" in attrs:
        flags = attrs["inplace"]
        if len(flags) != len(inputs) or not all(isinstance(f, bool) for f in flags):
            raise GraphCheckError(f"inplace {flags} does not match {len(inputs)} inputs")
    expected_params = param_shapes(op, attrs, shapes[0])
    if "params" in data:
        got = {k: tuple(np.shape(v)) for k, v in data["params"].items()}
        want = {k: tuple(v) for k, v in expected_params.items()}
        if got != want:
            raise GraphCheckError(f"params {got}, but its attributes need {want}")
        for key, value in data["params"].items():
            if np.asarray(value).dtype != np.float32:
                raise GraphCheckError(f"param '{key}' is {np.asarray(value).dtype}, not float32")


def _check_winograd(attrs: dict) -> None:
    """A conv marked for the Winograd kernel is one it computes (`backend.winograd_runs`)
    with a tile it has: F(2x2) or F(4x4)."""
    if attrs["winograd"] not in WINOGRAD_TILES or not winograd_runs(attrs):
        raise GraphCheckError(f"winograd {attrs['winograd']!r} on a {attrs['kernel']} conv of "
                              f"stride {attrs['stride']}, dilation {attrs['dilation']}, "
                              f"{attrs['groups']} groups, activation "
                              f"{attrs.get('activation', 'none')}")


def _expected_shape(op: str, attrs: dict, shapes: list[tuple], own: tuple) -> tuple:
    if op == "slice":
        start, count = attrs.get("start"), attrs.get("count")
        if (not isinstance(start, int) or not isinstance(count, int) or start < 0
                or count < 1 or start + count > shapes[0][0]):
            raise GraphCheckError(f"slice of channels {start!r}..+{count!r} of an input of "
                                  f"{shapes[0][0]}")
        return (count, *shapes[0][1:])
    if op in WINDOW_OPS and not attrs.get("global"):
        pads = tuple(attrs["pads"])
        if len(pads) != 4 or min(pads) < 0:
            raise GraphCheckError(f"pads {pads}")
        _check_padding(op, attrs, shapes[0])
        c, h, w = shapes[0]
        padded = (c, h + pads[0] + pads[1], w + pads[2] + pads[3])
        try:  # the depth and its checks (a conv's groups)
            depth = infer_shape(op, dict(attrs, padding="valid"), [padded])[0]
        except CnncError as err:
            raise GraphCheckError(err.message) from None
        return (depth, *_window_counts(attrs, shapes[0], pads))
    try:
        return infer_shape(op, dict(attrs), shapes)
    except CnncError as err:
        raise GraphCheckError(err.message) from None


def _window_counts(attrs: dict, shape_in: tuple, pads: tuple) -> tuple[int, int]:
    """Output (H, W) of a conv or pool with explicit `pads` (after fold-padding they may
    exceed what the source allows a pool, so not through `infer_shape`; a ceil-mode pool
    needs them split, not summed into the input)."""
    dilation = attrs.get("dilation", (1, 1))
    counts = []
    for axis in range(2):
        k_eff = dilation[axis] * (attrs["kernel"][axis] - 1) + 1
        counts.append(window_count(shape_in[1 + axis], k_eff, attrs["stride"][axis],
                                   pads[2 * axis], pads[2 * axis + 1],
                                   attrs.get("ceil_mode", False)))
    return tuple(counts)


def _check_padding(op: str, attrs: dict, shape_in: tuple) -> None:
    """The padding attribute (source form or explicit four amounts) agrees with `pads`."""
    padding, pads = attrs["padding"], tuple(attrs["pads"])
    dilation = attrs.get("dilation", (1, 1))
    resolved = ()
    for axis in range(2):
        resolved += resolve_pads(padding, shape_in[1 + axis], attrs["kernel"][axis],
                                 attrs["stride"][axis], dilation[axis], axis)
    if tuple(resolved) != pads:
        raise GraphCheckError(f"padding {padding} means {tuple(resolved)}, but pads are {pads}")
