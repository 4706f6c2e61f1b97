"""The compiler's public face: `compile_file`, `compile_source`, `load` and `Network`.

This is the one module above both the optimiser (`passes`) and the runtime: it parses
(`graph`), binds and checks parameters (`weights`), optimises, plans and runs
(`runtime.Plan`), and reads and writes artifacts (`artifact`, which knows nothing of
`Network`). `verify_passes`, which runs the plan of every prefix of the pipeline, lives
here for the same reason.
"""

from __future__ import annotations

import hashlib
import math
import sys
import threading
from typing import NamedTuple

import networkx as nx
import numpy as np

from . import artifact
from .errors import CnncInputError
from .graph import build_graph, load_program, load_source, parameter_shapes
from .memory import check_memory, check_parameter_memory
from .passes import PASSES, PIPELINE, GraphCheckError, optimize, verify_graph
from .passes.rewrite import copy_graph
from .runtime import Plan
from .weights import bind_parameters, check_weights, init_parameters

_FLOAT32 = np.dtype(np.float32)  # native byte order: one object

__all__ = ["Network", "PassCheck", "compile_file", "compile_source", "load",
           "relative_difference", "verify_passes"]


# ---------------------------------------------------------------- the compiled network
class Network:
    """A compiled network: call it on (N, C, H, W) arrays."""

    def __init__(self, source_graph: nx.DiGraph, params: dict[str, np.ndarray], *,
                 opt_level: int = 2, disabled_passes=(), source_hash: str = "",
                 optimized: nx.DiGraph | None = None, progress: bool | None = None,
                 dump_dir: str | None = None, max_memory: int | None = None):
        self._source_graph = source_graph
        self.max_memory = max_memory  # bytes; None: the memory available at the time
        self._params = params
        self.opt_level = opt_level
        self.disabled_passes = tuple(disabled_passes)
        self.source_hash = source_hash
        self._progress = sys.stderr.isatty() if progress is None else progress
        self._dump_dir = dump_dir
        self._lock = threading.Lock()
        self._build(optimized)

    def _build(self, optimized: nx.DiGraph | None = None):
        if optimized is None:
            bound = bind_parameters(self._source_graph, self._params)
            optimized = optimize(bound, level=self.opt_level, disabled=self.disabled_passes,
                                 dump_dir=self._dump_dir)
        self.graph = optimized
        self._plan = Plan(optimized, self.max_memory)
        self._plan.warm_up(self._progress)
        self._input_shape = self.input_shape  # checked on every call

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self._source_graph.graph["input_shape"])

    @property
    def output_shape(self) -> tuple:
        return tuple(self._source_graph.nodes[self._source_graph.graph["output"]]["shape"])

    @property
    def name(self) -> str:
        return self._source_graph.graph["name"]

    def parameters(self) -> dict[str, np.ndarray]:
        """{source-level name: array} in source order (§6), PyTorch layouts."""
        return {k: v.copy() for k, v in self._params.items()}

    def load_weights(self, weights, *, strict: bool = True) -> None:
        """Replace parameters from a mapping or an .npz path (same checks as compile;
        with `strict=False` the parameters left out keep their current values)."""
        self._params = check_weights(self._source_graph, weights, self._params, strict=strict)
        self._build()

    def __call__(self, x) -> np.ndarray:
        plan = self._plan
        # the common call, checked at a glance (LeNet-5 at batch 1 is ~25 us a call, and
        # the full checks below and in Plan.run took 1.2 of them): an array cnnc can run as
        # it is, of a batch size it has run before
        if type(x) is np.ndarray and x.dtype is _FLOAT32 and x.shape[1:] == self._input_shape:
            flags = x.flags
            if flags.c_contiguous and flags.writeable:
                with self._lock:
                    if plan.ready(x.shape[0]):
                        return plan.run_ready(x)
        x = self._check_input(x)
        with self._lock:  # calls share the planned buffers: one at a time
            return plan.run(x)

    def _check_input(self, x) -> np.ndarray:
        try:
            array = np.asarray(x)
        except Exception as err:  # noqa: BLE001 - arbitrary user objects
            raise CnncInputError(f"input is not an array: {err}") from None
        if array.dtype.kind not in "biuf":
            raise CnncInputError(f"input must be an array of real numbers, got dtype {array.dtype}")
        shape = self._input_shape
        if array.ndim != 4 or array.shape[1:] != shape or array.shape[0] < 1:
            expected = "(N, " + ", ".join(map(str, shape)) + ")"
            raise CnncInputError(
                f"input has shape {tuple(array.shape)}, but network '{self.name}' expects "
                f"{expected} with N >= 1")
        # before the float32 copy below (of a broadcast array, say) and the arena; once a
        # batch size has its arena only a copy can be new (reading the system's available
        # memory costs more than a small network's whole run)
        n = int(array.shape[0])
        converts = (array.dtype != np.float32 or not array.flags.c_contiguous
                    or not array.flags.writeable)  # Plan.run copies a read-only one
        if not converts and self._plan.has_arena(n):
            return array
        check_memory(4 * n * (self._plan.buffers.peak_floats() + math.prod(shape) * converts
                              + math.prod(self.output_shape)),
                     self.max_memory, f"running network '{self.name}' on a batch of {n:,}",
                     error=CnncInputError)
        return np.ascontiguousarray(array, dtype=np.float32)

    def export_onnx(self, path: str, opset: int = 17) -> None:
        """Write the network as an ONNX model (§12): its source graph, §6 names, a symbolic
        batch dimension; needs the `onnx` extra."""
        from .onnx.export import export_network
        export_network(self, path, opset)

    def save(self, path: str) -> None:
        """Write the network as a .cnnc artifact (`artifact.save`)."""
        artifact.save(artifact.Artifact(
            source_graph=self._source_graph, params=self._params, optimized=self.graph,
            source_hash=self.source_hash, opt_level=self.opt_level,
            disabled_passes=self.disabled_passes), path)

    def __repr__(self) -> str:
        return (f"<cnnc.Network {self.name}: input {self.input_shape}, output {self.output_shape},"
                f" {len(self._plan.steps)} kernel calls, -O{self.opt_level}>")


def _make(program, network, weights, seed, opt_level, disabled_passes, text, progress,
          dump_dir=None, strict=True, max_memory=None, winograd=True):
    if not winograd and "winograd" not in disabled_passes:
        disabled_passes = (*disabled_passes, "winograd")
    graph = build_graph(program, network)
    check_parameter_memory(graph, parameter_shapes(graph), max_memory)
    params = init_parameters(graph, seed)
    if weights is not None:
        params = check_weights(graph, weights, params, strict=strict)
    source_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Network(graph, params, opt_level=opt_level, disabled_passes=disabled_passes,
                   source_hash=source_hash, progress=progress, dump_dir=dump_dir,
                   max_memory=max_memory)


def compile_file(path: str, network: str | None = None, weights=None, seed: int = 0, *,
                 opt_level: int = 2, disabled_passes=(), progress: bool | None = None,
                 dump_dir: str | None = None, strict: bool = True,
                 max_memory: int | None = None, winograd: bool = True) -> Network:
    """Compile the network of a .cnn file (§7). `dump_dir` receives the graph after each pass;
    `strict=False` lets `weights` leave parameters out (they keep their seeded values);
    `max_memory` (bytes; default: what is available) bounds parameters and activations;
    `winograd=False` keeps every conv on the direct kernels (the same as disabling the
    `winograd` pass)."""
    program = load_program(str(path))
    text = "".join(program.sources.values())
    return _make(program, network, weights, seed, opt_level, disabled_passes, text, progress,
                 dump_dir, strict, max_memory, winograd)


def compile_source(text: str, network: str | None = None, weights=None, seed: int = 0, *,
                   opt_level: int = 2, disabled_passes=(), progress: bool | None = None,
                   file: str = "<source>", strict: bool = True,
                   max_memory: int | None = None, winograd: bool = True) -> Network:
    """Compile the network of .cnn source text (§7); `strict`, `max_memory` and `winograd`
    as for compile_file."""
    program = load_source(text, file)
    return _make(program, network, weights, seed, opt_level, disabled_passes, text, progress,
                 strict=strict, max_memory=max_memory, winograd=winograd)


def load(path: str, max_memory: int | None = None) -> Network:
    """Load a .cnnc artifact written by Network.save; `max_memory` as for compile_file.
    Any fault of the file is a CnncArtifactError (`artifact.load`)."""
    saved = artifact.load(path)
    return Network(saved.source_graph, saved.params, optimized=saved.optimized,
                   opt_level=saved.opt_level, disabled_passes=saved.disabled_passes,
                   source_hash=saved.source_hash, max_memory=max_memory)


# ---------------------------------------------------------------- checking the passes
class PassCheck(NamedTuple):
    """What `verify_passes` found: one (pass, difference) row per pass, in pipeline order,
    the name of the first pass whose difference exceeds the tolerance (None if none), and
    one (conv, tile m, difference) row per conv the winograd pass gave the Winograd kernel."""

    rows: list[tuple[str, float]]
    first_failure: str | None
    winograd_layers: list[tuple[str, int, float]] = []


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
    return PassCheck(rows, first_failure, _winograd_errors(graph, x))


def _winograd_errors(graph: nx.DiGraph, x: np.ndarray) -> list[tuple[str, int, float]]:
    """(conv, m, difference) for each conv of the optimised `graph` that runs Winograd:
    the network up to that conv, run with that conv on Winograd and every conv on the
    direct kernels, against all of them on the direct kernels; the difference of the
    conv's own output (`relative_difference`), so the error of that layer alone."""
    rows = []
    for node in [n for n in graph.nodes if graph.nodes[n]["attrs"].get("winograd")]:
        m = graph.nodes[node]["attrs"]["winograd"]
        outputs = []
        for keep in (None, node):
            sub = copy_graph(graph)
            sub.remove_nodes_from(set(sub) - nx.ancestors(sub, node) - {node})
            sub.graph["output"] = node
            for other in sub:
                if other != keep:
                    sub.nodes[other]["attrs"].pop("winograd", None)
            outputs.append(Plan(sub).run(x))
        rows.append((node, m, relative_difference(outputs[1], outputs[0])))
    return rows
