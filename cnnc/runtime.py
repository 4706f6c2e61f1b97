"""Lowering and execution: the optimised graph becomes Numba kernel calls on planned buffers.

Every tensor is a view (buffer, c0) as docs/DESIGN.md describes, placed by
`memory.plan_buffers`. Kernels take shapes and attributes as arguments, so each compiles once per
type signature and is cached on disk by Numba.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import networkx as nx
import numba
import numpy as np

from . import kernels as K
from .errors import CnncError, CnncInputError
from .graph import build_graph, load_program, load_source, parameter_shapes, schedule
from .kernels.fastconv import choose_conv_kernel, conv2d_packed, pack_conv_weights
from .kernels.interpreter import (
    FLOATS_PER_STEP,
    INTS_PER_STEP,
    OPCODES,
    compile_interpreter,
    run_plan,
)
from .memory import (
    ALIAS_OPS,
    View,
    check_activation_memory,
    check_memory,
    check_parameter_memory,
    plan_buffers,
)
from .weights import bind_parameters, check_weights, init_parameters

ACT_CODES = K.ACT_CODES


# ---------------------------------------------------------------- lowering
@dataclass
class Step:
    """One kernel call. `reads` and `writes` are the exact tensor regions it touches
    (channel ranges of groups), which `check_plan` follows through the whole plan."""

    node: str
    op: str
    kernel: object
    args: tuple  # with View placeholders, bound to arrays per batch size
    reads: tuple[View, ...] = ()
    writes: tuple[View, ...] = ()


def _weight_and_bias(data) -> tuple[np.ndarray, np.ndarray]:
    w = np.ascontiguousarray(data["params"]["weight"], np.float32)
    b = data["params"].get("bias")
    b = np.zeros(w.shape[0], np.float32) if b is None else np.ascontiguousarray(b, np.float32)
    return w, b


def lower_node(graph: nx.DiGraph, node_id: str, views: dict[str, View]) -> list[Step]:
    """The kernel calls that compute one node; View objects stand for buffers."""
    data = graph.nodes[node_id]
    op, attrs = data["op"], data["attrs"]
    out = views[node_id]
    ins = [views[i] for i in data["inputs"]]
    x = ins[0] if ins else None
    act = ACT_CODES.get(attrs.get("activation", "none"))
    slope = float(attrs.get("slope", 0.0))

    def step(kernel, args, reads=(x,), writes=(out,)) -> Step:
        return Step(node_id, op, kernel, args, tuple(reads), tuple(writes))

    if op in ("input", *ALIAS_OPS):
        return []
    if op == "conv":
        w, b = _weight_and_bias(data)
        pt, _, pl, _ = attrs["pads"]
        in_shape = graph.nodes[data["inputs"][0]]["shape"]
        if choose_conv_kernel(attrs, in_shape, data["shape"]) == "packed":
            # register-blocked direct convolution, weights packed once here; a residual
            # (fuse-residual) is the second input, added in the store
            kh, kw = attrs["kernel"]
            res, rc0 = (ins[1], ins[1].c0) if attrs.get("residual") else (out, -1)
            args = (x, x.c0, x.channels, out, out.c0, w.shape[0],
                    pack_conv_weights(w, attrs["groups"]), b, kh, kw, pt, pl, *attrs["stride"],
                    *attrs["dilation"], attrs["groups"], act, slope, res, rc0)
            return [step(conv2d_packed, args, reads=ins)]
        if attrs.get("residual"):
            raise CnncError(f"internal: conv '{node_id}' has a residual but no packed kernel")
        args = (x, x.c0, x.channels, w, b, out, out.c0, *attrs["stride"], pt, pl,
                *attrs["dilation"], attrs["groups"], act, slope)
        return [step(K.conv2d, args)]
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
        return [step(K.dense, (x, x.c0, x.channels, w, b, out, out.c0, act, slope))]
    if op in K.ACT_CODES:
        return [step(K.activation, (x, x.c0, x.channels, out, out.c0, ACT_CODES[op], slope))]
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
    if op == "concat":
        steps, offset = [], 0
        for src in ins:
            part = View(out.group, out.c0 + offset, src.channels, out.hw)
            if part != src:  # not written in place by its producer
                steps.append(step(K.copy_channels, (src, src.c0, src.channels, out, part.c0),
                                  reads=(src,), writes=(part,)))
            offset += src.channels
        return steps
    if op == "add":
        if len(ins) == 1:  # `add { A }` is A (with the add's fused activation, if any)
            return [step(K.activation, (x, x.c0, x.channels, out, out.c0, act, slope))]
        steps = []
        a = ins[0]
        for i, b in enumerate(ins[1:]):
            last = i == len(ins) - 2
            steps.append(step(K.add, (a, a.c0, b, b.c0, out.channels, out, out.c0,
                                      act if last else 0, slope), reads=(a, b)))
            a = out
        return steps
    raise CnncError(f"internal: no kernel for op '{op}'")


def check_plan(plan: "Plan") -> None:
    """Follow every step's reads and writes through the arena; fail on a read of memory
    that its tensor's producer has not written (never written, or since overwritten by a
    tensor that shares its storage).

    The arena of one image is tracked as disjoint segments ``(start, end, group)``: which
    group's data each range of floats holds now. This runs at compile time, so a lowering
    or buffer-planning bug is a clear internal error instead of garbage numbers.
    """
    segments: list[tuple[int, int, int]] = []

    def span(view: View) -> tuple[int, int]:
        h, w = view.hw
        start = plan.view_start(view) + view.c0 * h * w
        return start, start + view.channels * h * w

    def holds(view: View) -> bool:
        lo, hi = span(view)
        covered = sum(min(e, hi) - max(s, lo) for s, e, g in segments
                      if g == view.group and s < hi and e > lo)
        return covered == hi - lo

    def write(view: View) -> None:
        lo, hi = span(view)
        kept = []
        for s, e, g in segments:
            if s < lo:
                kept.append((s, min(e, lo), g))
            if e > hi:
                kept.append((max(s, hi), e, g))
        segments[:] = [seg for seg in kept if seg[0] < seg[1]] + [(lo, hi, view.group)]

    name = plan.graph.graph["name"]
    write(plan.input_view)
    for step in plan.steps:
        for view in step.reads:
            if not holds(view):
                raise CnncError(f"internal: the plan of '{name}' reads data that was never "
                                f"written (step {step.kernel.__name__} of node '{step.node}')")
        for view in step.writes:
            write(view)
    if not holds(plan.output_view):
        raise CnncError(f"internal: the output of '{name}' is never completely written")


class Plan:
    """The lowered network: steps in order, buffer plan, and their encoding for run_plan.

    All activation buffers live in one float32 arena per batch size; slot ``s`` of the
    buffer plan starts at ``n * slot_starts[s]``. ``run`` calls the jitted interpreter
    once; ``bind`` gives the same calls as Python (kernel, args) pairs for profiling.
    """

    def __init__(self, graph: nx.DiGraph, max_memory: int | None = None):
        self.graph = graph
        self.max_memory = max_memory
        self.order = schedule(graph)
        self.buffers = plan_buffers(graph, self.order, bool(graph.graph.get("reuse_memory")))
        check_activation_memory(graph, self.buffers, 1, max_memory)
        self.steps: list[Step] = []
        for node_id in self.order:
            self.steps.extend(lower_node(graph, node_id, self.buffers.views))
        self.input_view = self.buffers.views[graph.graph["input"]]
        self.output_view = self.buffers.views[graph.graph["output"]]
        self.slot_starts = np.concatenate(([0], np.cumsum(self.buffers.slot_sizes))).astype(int)
        check_plan(self)
        self.encoded = encode_plan(self)
        self._arenas: dict[int, np.ndarray] = {}
        self._io: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._output_shape = graph.nodes[graph.graph["output"]]["shape"]

    def view_start(self, view: View) -> int:
        """Where the view's group starts in the arena, per image."""
        return int(self.slot_starts[self.buffers.groups[view.group].slot])

    def arena(self, n: int) -> np.ndarray:
        if n not in self._arenas:
            check_activation_memory(self.graph, self.buffers, n, self.max_memory,
                                    CnncInputError)
            if len(self._arenas) > 4:  # keep memory bounded when batch sizes vary
                self._arenas.clear()
                self._io.clear()
            self._arenas[n] = np.empty(max(1, n * int(self.slot_starts[-1])), np.float32)
        return self._arenas[n]

    def _io_arrays(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The input and output channel ranges at batch size n, made once per n."""
        if n not in self._io:
            i, o = self.input_view, self.output_view
            self._io[n] = (self.array(n, i)[:, i.c0: i.c0 + i.channels],
                           self.array(n, o)[:, o.c0: o.c0 + o.channels])
        return self._io[n]

    def array(self, n: int, view: View) -> np.ndarray:
        """The 4-D array of a view's group at batch size n (a view into the arena)."""
        g = self.buffers.groups[view.group]
        h, w = view.hw
        start = n * self.view_start(view)
        return self.arena(n)[start: start + n * g.per_image].reshape(
            n, g.per_image // (h * w), h, w)

    def bind(self, n: int):
        """(input array, output array, [(kernel, args)]) for batch size n."""
        calls = [(s.kernel, tuple(self.array(n, a) if isinstance(a, View) else a
                                  for a in s.args)) for s in self.steps]
        return self.array(n, self.input_view), self.array(n, self.output_view), calls

    def run(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        arena = self.arena(n)
        inp, out = self._io_arrays(n)
        inp[...] = x
        run_plan(n, arena, *self.encoded)
        return out.copy().reshape(n, *self._output_shape)

    def warm_up(self, progress: bool = False):
        """Compile (or load from Numba's disk cache) every kernel, showing progress.

        Kernels are compiled for the argument types of their first call, without
        running the network. The first (cold) compile on a machine is shared with a
        helper process (``_start_compile_helper``).
        """
        _, _, calls = self.bind(1)
        first_args: dict = {}
        for kernel, args in calls:
            if hasattr(kernel, "signatures") and not kernel.signatures:
                first_args.setdefault(kernel, args)
        start = time.perf_counter()
        helper = None if run_plan.signatures else _start_compile_helper()
        try:
            for i, (kernel, args) in enumerate(first_args.items(), 1):
                if progress:
                    sys.stderr.write(f"\r\033[Kcnnc: compiling kernel {i}/{len(first_args)} "
                                     f"({kernel.__name__}) ...")
                    sys.stderr.flush()
                kernel.compile(tuple(numba.typeof(a) for a in args))
            if not run_plan.signatures:
                if progress:
                    what = ("the interpreter's other kernels, in a second process" if helper
                            else "the plan interpreter")
                    sys.stderr.write(f"\r\033[Kcnnc: compiling {what} ...")
                    sys.stderr.flush()
                if helper is not None:
                    helper.wait()  # it leaves run_plan in the disk cache (or failed: no matter)
                compile_interpreter()
                K.mark_cache_warm()
        finally:  # interrupted or failed: the helper does not outlive us
            if helper is not None and helper.poll() is None:
                helper.kill()
                helper.wait()
        if progress and first_args:
            sys.stderr.write(f"\r\033[Kcnnc: {len(first_args)} kernels ready in "
                             f"{time.perf_counter() - start:.1f} s\n")
            sys.stderr.flush()


def _start_compile_helper():
    """On a cold cache, a process that compiles the interpreter while this one compiles
    the network's kernels; None when the cache is warm or cannot be written.

    A cold compile is all of the kernels (the interpreter calls every one), ~45 s on one
    core. The interpreter compiles the small kernels first and the conv and pool kernels
    last (the order of its branches), this process the network's own kernels, the conv
    first, so each kernel is compiled once and the other process loads it from the disk
    cache: on two cores the cold GoogLeNet compile takes ~60% of the time. Nothing but the
    cache passes between the two, so a helper that fails only costs this process the
    compile it would have done anyway.
    """
    if K.cache_is_warm() or not K.cache_is_writable() or not sys.executable:
        return None
    # the helper loads this very package by its path, and nothing from the current
    # directory (which `python -c` would put first on sys.path)
    package = os.path.dirname(os.path.abspath(__file__))
    init = os.path.join(package, "__init__.py")
    code = (
        "import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]\n"
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('cnnc', {init!r}, "
        f"submodule_search_locations=[{package!r}])\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['cnnc'] = module\n"
        "spec.loader.exec_module(module)\n"
        "from cnnc.kernels.interpreter import compile_interpreter; compile_interpreter()\n"
    )
    try:
        return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None


def encode_plan(plan: Plan) -> tuple:
    """(params, ops, ints, floats) for kernels.interpreter.run_plan; see its docstring."""
    chunks: list[np.ndarray] = []
    offset = 0
    ops = np.zeros(len(plan.steps), np.int64)
    ints = np.zeros((len(plan.steps), INTS_PER_STEP), np.int64)
    floats = np.zeros((len(plan.steps), FLOATS_PER_STEP), np.float64)
    for s, step in enumerate(plan.steps):
        ops[s] = OPCODES[step.kernel]
        row: list[int] = []
        frow: list[float] = []
        for arg in step.args:
            if isinstance(arg, View):
                h, w = arg.hw
                g = plan.buffers.groups[arg.group]
                row += [plan.view_start(arg), g.per_image // (h * w), h, w]
            elif isinstance(arg, np.ndarray):
                row += [offset, *arg.shape]
                chunks.append(arg.reshape(-1))
                offset += arg.size
            elif isinstance(arg, float):
                frow.append(arg)
            else:
                row.append(int(arg))
        ints[s, : len(row)] = row
        floats[s, : len(frow)] = frow
    params = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(1, np.float32)
    return params, ops, ints, floats


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
        from .passes import optimize
        if optimized is None:
            bound = bind_parameters(self._source_graph, self._params)
            optimized = optimize(bound, level=self.opt_level, disabled=self.disabled_passes,
                                 dump_dir=self._dump_dir)
        self.graph = optimized
        self._plan = Plan(optimized, self.max_memory)
        self._plan.warm_up(self._progress)

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
        x = self._check_input(x)
        with self._lock:  # calls share the planned buffers: one at a time
            return self._plan.run(x)

    def _check_input(self, x) -> np.ndarray:
        try:
            array = np.asarray(x)
        except Exception as err:  # noqa: BLE001 - arbitrary user objects
            raise CnncInputError(f"input is not an array: {err}") from None
        if array.dtype.kind not in "biuf":
            raise CnncInputError(f"input must be an array of real numbers, got dtype {array.dtype}")
        expected = "(N, " + ", ".join(map(str, self.input_shape)) + ")"
        if array.ndim != 4 or tuple(array.shape[1:]) != self.input_shape or array.shape[0] < 1:
            raise CnncInputError(
                f"input has shape {tuple(array.shape)}, but network '{self.name}' expects "
                f"{expected} with N >= 1")
        # before the float32 copy below (of a broadcast array, say) and the arena
        n = int(array.shape[0])
        converts = array.dtype != np.float32 or not array.flags.c_contiguous
        check_memory(4 * n * (self._plan.buffers.peak_floats()
                              + math.prod(self.input_shape) * converts
                              + math.prod(self.output_shape)),
                     self.max_memory, f"running network '{self.name}' on a batch of {n:,}",
                     error=CnncInputError)
        return np.ascontiguousarray(array, dtype=np.float32)

    def save(self, path: str) -> None:
        from .artifact import save
        save(self, path)

    def __repr__(self) -> str:
        return (f"<cnnc.Network {self.name}: input {self.input_shape}, output {self.output_shape},"
                f" {len(self._plan.steps)} kernel calls, -O{self.opt_level}>")


def _make(program, network, weights, seed, opt_level, disabled_passes, text, progress,
          dump_dir=None, strict=True, max_memory=None):
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
                 max_memory: int | None = None) -> Network:
    """Compile the network of a .cnn file (§7). `dump_dir` receives the graph after each pass;
    `strict=False` lets `weights` leave parameters out (they keep their seeded values);
    `max_memory` (bytes; default: what is available) bounds parameters and activations."""
    program = load_program(str(path))
    text = "".join(program.sources.values())
    return _make(program, network, weights, seed, opt_level, disabled_passes, text, progress,
                 dump_dir, strict, max_memory)


def compile_source(text: str, network: str | None = None, weights=None, seed: int = 0, *,
                   opt_level: int = 2, disabled_passes=(), progress: bool | None = None,
                   file: str = "<source>", strict: bool = True,
                   max_memory: int | None = None) -> Network:
    """Compile the network of .cnn source text (§7); `strict` and `max_memory` as for
    compile_file."""
    program = load_source(text, file)
    return _make(program, network, weights, seed, opt_level, disabled_passes, text, progress,
                 strict=strict, max_memory=max_memory)


def load(path: str, max_memory: int | None = None) -> Network:
    """Load a .cnnc artifact written by Network.save; `max_memory` as for compile_file."""
    from .artifact import load as load_artifact
    return load_artifact(path, max_memory=max_memory)
