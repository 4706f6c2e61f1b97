"""Checking the optimiser: the graph invariants, and the numbers after every pass.

`verify_graph` is the structural check that runs after every pass in the tests
(and with `optimize(..., check=True)`). `verify_passes` is the numerical one
behind `cnnc verify`: it runs the unoptimised graph and every prefix of the
pipeline on the same input and reports how far each one drifts.
"""

from __future__ import annotations

from typing import NamedTuple

import networkx as nx
import numpy as np

from ..errors import CnncError
from ..layers import infer_shape, param_shapes, resolve_pads
from ..ops import ACTIVATION_OPS, BRANCHING, OPS, WINDOW_OPS

ACTIVATIONS = ("none", *ACTIVATION_OPS)  # what an epilogue may apply


class GraphCheckError(CnncError):
    """The optimiser left a graph that breaks an invariant (a bug in cnnc, not the user's)."""


def verify_graph(graph: nx.DiGraph) -> None:
    """Raise GraphCheckError unless the graph is consistent.

    Checks: the graph input and output exist and the graph is acyclic; each
    node's edges match its `inputs`; its shape is what `layers.infer_shape`
    gives from its inputs' shapes (conv and pools from their `pads`; a `slice`
    lies within its input); the source form of `padding` agrees with `pads`;
    `activation`, `inplace` and `start` attributes are well formed; `params`,
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
    arity = 2 if op == "conv" and attrs.get("residual") else 1  # a residual: [x, skip]
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
    if OPS[op].epilogue and attrs.get("activation", "none") not in ACTIVATIONS:
        raise GraphCheckError(f"unknown activation '{attrs.get('activation')}'")
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


def _expected_shape(op: str, attrs: dict, shapes: list[tuple], own: tuple) -> tuple:
    if op == "slice":
        start = attrs.get("start")
        if not isinstance(start, int) or start < 0 or start + own[0] > shapes[0][0]:
            raise GraphCheckError(f"slice of channels {start!r}..+{own[0]} of an input of "
                                  f"{shapes[0][0]}")
        return (own[0], *shapes[0][1:])
    if op in WINDOW_OPS and not attrs.get("global"):
        pads = tuple(attrs["pads"])
        if len(pads) != 4 or min(pads) < 0:
            raise GraphCheckError(f"pads {pads}")
        _check_padding(op, attrs, shapes[0])
        c, h, w = shapes[0]
        padded = (c, h + pads[0] + pads[1], w + pads[2] + pads[3])
        try:
            return infer_shape(op, dict(attrs, padding="valid"), [padded])
        except CnncError as err:
            raise GraphCheckError(err.message) from None
    try:
        return infer_shape(op, dict(attrs), shapes)
    except CnncError as err:
        raise GraphCheckError(err.message) from None


def _check_padding(op: str, attrs: dict, shape_in: tuple) -> None:
    """The padding attribute (source form or explicit four amounts) agrees with `pads`."""
    padding, pads = attrs["padding"], tuple(attrs["pads"])
    if isinstance(padding, tuple) and len(padding) == 4:
        resolved = padding
    else:
        dilation = attrs.get("dilation", (1, 1))
        resolved = ()
        for axis in range(2):
            resolved += resolve_pads(padding, shape_in[1 + axis], attrs["kernel"][axis],
                                     attrs["stride"][axis], dilation[axis], axis)
    if tuple(resolved) != pads:
        raise GraphCheckError(f"padding {padding} means {tuple(resolved)}, but pads are {pads}")


# ---------------------------------------------------------------- numbers
class PassCheck(NamedTuple):
    """What `verify_passes` found: one (pass, difference) row per pass, in pipeline order,
    and the name of the first pass whose difference exceeds the tolerance (None if none)."""

    rows: list[tuple[str, float]]
    first_failure: str | None


def relative_difference(got: np.ndarray, ref: np.ndarray) -> float:
    """max|got - ref| / max(1e-6, max|ref|): one number for the whole output.

    Element-wise relative error is meaningless after a softmax (tiny probabilities),
    so the difference is measured against the largest reference value.
    """
    scale = max(1e-6, float(np.max(np.abs(ref))))
    return float(np.max(np.abs(got.astype(np.float64) - ref))) / scale


def verify_passes(source_graph: nx.DiGraph, params: dict[str, np.ndarray], batch: int = 2,
                  seed: int = 0, tol: float = 1e-4) -> PassCheck:
    """Run the parsed graph unoptimised (-O0) and after every prefix of the pipeline.

    `source_graph` is the parsed graph (`graph.build_graph`), `params` its
    parameters by source name (`weights.init_parameters` or user weights). One
    standard-normal input of `batch` images (from `seed`) goes through each
    version; row i is (name of pass i, relative_difference(output after passes
    0..i, output at -O0)). `verify_graph` runs after every pass, so a pass that
    breaks the graph raises GraphCheckError naming the pass. Returns
    PassCheck(rows, first_failure), first_failure being the first pass whose
    difference exceeds `tol`. Every pass of the pipeline runs (no level, no
    disabled passes): this checks the passes, not a configuration.
    """
    from ..runtime import Plan
    from ..weights import bind_parameters
    from . import PASSES, PIPELINE
    from .rewrite import copy_graph

    bound = bind_parameters(source_graph, params)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *source_graph.graph["input_shape"])).astype(np.float32)
    reference = Plan(copy_graph(bound)).run(x)
    graph = copy_graph(bound)
    rows: list[tuple[str, float]] = []
    first_failure = None
    for name in PIPELINE:
        PASSES[name].apply(graph)
        try:
            verify_graph(graph)
        except GraphCheckError as err:
            raise GraphCheckError(f"after pass {name}: {err.message}") from None
        diff = relative_difference(Plan(graph).run(x), reference)
        rows.append((name, diff))
        if first_failure is None and not diff <= tol:
            first_failure = name
    return PassCheck(rows, first_failure)
