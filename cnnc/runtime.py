"""Running a lowered network: the plan (its steps on one float32 arena), its encoding for
the jitted interpreter, and the process set-up the kernels need.

`Plan` schedules the graph, places its tensors (`memory.plan_buffers`), lowers it
(`lower.lower`), checks the result (`check_plan`) and runs it with
`kernels.interpreter.run_plan`. `prepare` is the one explicit set-up step, run on the
first plan of a process; importing this module changes nothing.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import networkx as nx
import numba
import numpy as np

from . import kernels as K
from .errors import CnncError, CnncInputError
from .graph import schedule
from .kernels.interpreter import (
    INTERPRETER,
    SIGNATURES,
    compile_kernel,
    encode_steps,
    interpreter_types,
    kernel_addresses,
    kernel_types,
    run_plan,
)
from .kernels.jit import cache_directory_of, is_cached
from .kernels.sched import CLOCK_MONOTONIC
from .lower import Step, lower
from .memory import View, check_activation_memory, plan_buffers

__all__ = ["Plan", "Step", "ThreadChoice", "check_plan", "encode_plan", "prepare"]

# Numba's OpenMP workers (GNU libgomp) spin for a while after each parallel region, then
# sleep. With libgomp's default spin count, whole networks ran bimodally here (SqueezeNet
# b1: 8 or 13 ms, LeNet-5 b1: 0.09 or 0.18 ms, from one run to the next); a bounded spin
# of 20,000 was steadily at the fast mode (docs/DESIGN.md). libgomp reads it when it
# starts, with Numba's threading layer on the first parallel kernel, so `prepare` sets it
# before any kernel is compiled or run; it takes no effect if an OpenMP runtime has
# already started in the process (importing torch first starts one). The user's own
# setting always wins.
GOMP_SPINCOUNT = "20000"
_prepare_lock = threading.Lock()
_prepared = False


# Whether calls choose between the caller's threads and one (ThreadChoice): CNNC_ADAPTIVE_THREADS=0
# keeps the caller's always.
ADAPTIVE_THREADS = os.environ.get("CNNC_ADAPTIVE_THREADS", "1") != "0"

_NO_STAMPS = np.zeros(0, np.int64)  # run_plan's stamps when it records no times
# run_plan's (x, y, io) when it copies neither the input nor the output
NO_IO = (np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(5, np.int64))


def prepare() -> None:
    """The runtime's process-wide set-up, once, before the first kernel compiles or runs:
    bound libgomp's spin (GOMP_SPINCOUNT, unless the user set it) and tidy the kernels'
    disk cache (`kernels.tidy_cache`). `Plan` calls it; it is idempotent."""
    global _prepared
    with _prepare_lock:
        if _prepared:
            return
        os.environ.setdefault("GOMP_SPINCOUNT", GOMP_SPINCOUNT)
        K.tidy_cache()
        _prepared = True


class ThreadChoice:
    """Whether a batch size's calls run on the caller's threads or on one thread: the one
    that took less time lately, timed again from time to time.

    Every kernel gives the same bits on any number of threads, so the choice changes only
    the time. Two threads lose to one where the layers' data crosses between cores slowly
    (docs/DESIGN.md, "Threads"): with this host's two vCPUs on different core complexes,
    CIFAR inception b1 took 3.3 ms on two threads and 2.6 on one, and near each other 1.6
    and 2.6. Which case holds changes while a process runs, so the choice is a measurement:

    - the calls of the current choice are timed (their time: the median of the last
      `RECENT`);
    - now and then the next `PROBE` calls run the other way (the first of them, which wakes
      or idles a thread, is not counted), and the other way is taken if the median of the
      rest was `MARGIN` faster;
    - the first probe comes after `PROBE` calls' time over `BUDGET`, each next one after
      calls worth what the last cost over the choice (at most a call's time a call) over
      `BUDGET`, but at least `FLOOR` calls; so probes cost about `BUDGET` of the run time.
      Each probe that changes nothing doubles that wait, up to `PATIENCE` times;
    - a probe also comes early, within `RECENT` calls, when the current choice's median
      grows `DRIFT` over its time at the last decision (the cores moved apart);
    - if the first `RECENT` calls on the caller's threads take less than `SHORT`, nothing
      more is timed for that batch size, whatever the thread count later.

    A choice is for one thread count: a call at another starts it again.
    """

    RECENT = 8
    PROBE = 4
    BUDGET = 0.01
    MARGIN = 0.05
    DRIFT = 0.25
    FLOOR = 30
    PATIENCE = 4
    SHORT = 300e-6  # seconds

    def __init__(self, threads: int):
        self.threads = threads  # the caller's thread count that these times are for
        self.one = False  # the current choice: one thread
        self.off = False  # calls too short to be worth timing
        self.recent: list[float] = []  # seconds of the current choice's last calls
        self.probe: list[float] = []  # seconds of the probe's calls so far
        self.left = 0  # calls of the probe still to run
        self.due: float | None = None  # seconds of calls to run before the next probe
        self.baseline = 0.0  # the current choice's median at the last decision
        self.patience = 1  # doubles (up to PATIENCE) with each probe that changes nothing
        self.calls = 0  # calls of the current choice, timed
        self.on_one = 0  # calls that ran on one thread (for `cnnc bench`)

    def one_thread(self) -> bool:
        """Whether the next call runs on one thread."""
        return self.one != (self.left > 0)

    def record(self, seconds: float) -> None:
        """The time of the call that `one_thread` was asked for."""
        self.on_one += self.one_thread()
        if self.left:
            self.probe.append(seconds)
            self.left -= 1
            if not self.left:
                self._decide()
            return
        self.recent = self.recent[1 - self.RECENT:] + [seconds]
        self.calls += 1
        if self.due is None:
            if len(self.recent) < self.RECENT:
                return
            mine = _median(self.recent)
            if mine < self.SHORT:
                self.off = True
                return
            self.due, self.baseline = self.PROBE * mine / self.BUDGET, mine
        self.due -= seconds
        if self.due <= 0 or (self.calls % self.RECENT == 0
                             and _median(self.recent) > (1 + self.DRIFT) * self.baseline):
            self.left, self.probe = self.PROBE, []

    def _decide(self) -> None:
        mine, other = _median(self.recent), _median(self.probe[1:])
        if other < (1 - self.MARGIN) * mine:
            self.one = not self.one
            self.recent = self.probe[1:]
            self.patience, self.baseline = 1, other
        else:
            self.patience, self.baseline = min(2 * self.patience, self.PATIENCE), mine
        # what the next probe will cost over the choice (counted as at most one call's time
        # more a call, as the first probe was budgeted: a stall during a probe must not put
        # the next off for minutes), over the budget, but at least FLOOR calls (ways that
        # take about as long cost nothing to probe); times the patience
        cost = min(abs(other - mine), self.baseline)
        self.due = self.patience * max(self.PROBE * cost / self.BUDGET,
                                       self.FLOOR * self.baseline)


def _num_threads() -> int:
    """numba.get_num_threads(), in 0.1 us rather than 0.7 (LeNet-5 b1 takes 25 us a call):
    the threading layer's own query, which Numba's public function wraps with checks, once
    the layer has started; the public function otherwise, or if Numba has no such name."""
    query = getattr(numba.np.ufunc.parallel, "_get_num_threads", None)
    return query() if query is not None else numba.get_num_threads()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def check_plan(plan: Plan) -> None:
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
    once; ``bind`` gives the same calls as Python (kernel, args) pairs for tests;
    ``step_times`` reads the interpreter's own clock around each step, for profiles.
    """

    def __init__(self, graph: nx.DiGraph, max_memory: int | None = None):
        prepare()
        self.graph = graph
        self.max_memory = max_memory
        self.order = schedule(graph)
        self.buffers = plan_buffers(graph, self.order, bool(graph.graph.get("reuse_memory")))
        check_activation_memory(graph, self.buffers, 1, max_memory)
        self.steps: list[Step] = lower(graph, self.order, self.buffers.views)
        self.input_view = self.buffers.views[graph.graph["input"]]
        self.output_view = self.buffers.views[graph.graph["output"]]
        self.slot_starts = np.concatenate(([0], np.cumsum(self.buffers.slot_sizes))).astype(int)
        self._image_floats = self.input_view.channels * math.prod(self.input_view.hw)
        check_plan(self)
        self.direct_input = reads_input_in_place(self)
        self.encoded = encode_plan(self)
        self.codes = sorted({int(op) for op in self.encoded[1]})  # the kernels it calls
        self.interpreter = run_plan
        self._fns: np.ndarray | None = None  # their addresses, once compiled (warm_up)
        self._arenas: dict[int, np.ndarray] = {}
        self._io: dict[int, np.ndarray] = {}
        self._choices: dict[int, ThreadChoice] = {}  # per batch size, while ADAPTIVE_THREADS
        self._output_shape = graph.nodes[graph.graph["output"]]["shape"]

    def view_start(self, view: View) -> int:
        """Where the view's group starts in the arena, per image."""
        return int(self.slot_starts[self.buffers.groups[view.group].slot])

    def has_arena(self, n: int) -> bool:
        return n in self._arenas

    def arena(self, n: int) -> np.ndarray:
        if n not in self._arenas:
            check_activation_memory(self.graph, self.buffers, n, self.max_memory,
                                    CnncInputError)
            if len(self._arenas) > 4:  # keep memory bounded when batch sizes vary
                self._arenas.clear()
                self._io.clear()
                self._choices.clear()
            self._arenas[n] = np.empty(max(1, n * int(self.slot_starts[-1])), np.float32)
        return self._arenas[n]

    def _io_offsets(self, n: int) -> np.ndarray:
        """run_plan's ``io`` at batch size n: where the input's and the output's first
        images start in the arena and their groups' floats per image, then the copy's key
        (0: decode.copy_rows)."""
        if n not in self._io:
            offsets = []
            for view in (self.input_view, self.output_view):
                h, w = view.hw
                offsets += [n * self.view_start(view) + view.c0 * h * w,
                            self.buffers.groups[view.group].per_image]
            if self.direct_input:
                offsets[0] = -1  # read where it is
            self._io[n] = np.array(offsets + [0], np.int64)
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
        """The network on ``x``, a new output array (``net(x)`` after its checks)."""
        n = x.shape[0]
        if x.size != n * self._image_floats:
            raise ValueError(f"Plan.run: input of shape {x.shape[1:]}, not the plan's")
        x = np.ascontiguousarray(x, np.float32)
        # run_plan types its input writable, so a read-only one is copied: one compiled
        # interpreter (a read-only view made every call cost 0.5 us, 1.5% of LeNet-5's)
        if not x.flags.writeable:
            x = x.copy()
        self.arena(n)
        if self._fns is None:
            self.warm_up()
        return self.run_ready(x)

    def ready(self, n: int) -> bool:
        """Whether `run_ready` can run batch size n: compiled, with its arena."""
        return self._fns is not None and n in self._arenas

    def run_ready(self, x: np.ndarray) -> np.ndarray:
        """`run` on a C-contiguous, writable float32 input of the plan's image shape, at a
        batch size `ready` for."""
        n = x.shape[0]
        y = np.empty((n, *self._output_shape), np.float32)
        choice = self._choices.get(n)
        timed = ADAPTIVE_THREADS and (choice is None or not choice.off)
        threads = _num_threads() if timed else 1
        if threads <= 1:  # not timed, or nothing to choose
            self._interpret(n, x, y)
            return y
        if choice is None or choice.threads != threads:  # times at another count say nothing
            choice = self._choices[n] = ThreadChoice(threads)
        one = choice.one_thread()
        try:
            if one:
                numba.set_num_threads(1)
            start = time.perf_counter()
            self._interpret(n, x, y)
            seconds = time.perf_counter() - start
        finally:
            if one:
                numba.set_num_threads(threads)
        choice.record(seconds)
        return y

    def calls_on_one_thread(self, n: int) -> int:
        """How many calls at batch size n have run on one thread by `ThreadChoice` (since
        the choice for the current thread count began)."""
        choice = self._choices.get(n)
        return 0 if choice is None else choice.on_one

    def _interpret(self, n: int, x: np.ndarray, y: np.ndarray) -> None:
        # run_plan copies x in and the output out itself, unchecked (decode.copy_rows:
        # numpy's copy is libc's memmove, which can be 15x slower for some alignments)
        self.interpreter(n, self._arenas[n], *self.encoded, self._fns, _NO_STAMPS, x.ravel(),
                         y.ravel(), self._io_offsets(n))  # fmt: skip

    def step_times(self, x: np.ndarray, repeat: int) -> np.ndarray:
        """Seconds each step took in each of ``repeat`` runs on ``x``, ``(repeat, steps)``:
        the interpreter's own clock between its kernel calls, so a step is timed where it
        runs in the network (its input where the last step left it, the worker threads as
        the last parallel region left them)."""
        n = x.shape[0]
        self.run(x)  # compiles, puts x in the input buffer (unless read in place)
        times = np.zeros((repeat, len(self.steps)))
        x = np.ascontiguousarray(x, np.float32).ravel()
        if CLOCK_MONOTONIC is None:  # no clock_gettime (Windows): each kernel from Python
            x_in, _, calls = self.bind(n)
            x_in.reshape(-1)[:] = x
            for r in range(repeat):
                for i, (kernel, args) in enumerate(calls):
                    start = time.perf_counter()
                    kernel(*args)
                    times[r, i] = time.perf_counter() - start
            return times
        stamps = np.zeros(len(self.steps) + 1, np.int64)
        for r in range(repeat):
            self.interpreter(n, self.arena(n), *self.encoded, self._fns, stamps, x, NO_IO[1],
                             self._io_offsets(n))  # copies x in before the clock starts
            times[r] = np.diff(stamps) * 1e-9
        return times

    def warm_up(self, progress: bool = False):
        """Compile (or load from Numba's disk cache) the plan's kernels and the
        interpreter, showing progress, and take the kernels' addresses for ``run``.

        Each kernel is compiled for its one signature (``kernel_types``). When two or more
        of them (or the interpreter) are not in the disk cache yet, a helper process
        compiles with this one (``_start_compile_helper``): each takes the costliest kernel
        left as it comes free (``compile_claimed``), and this one loads the helper's from
        the disk cache when it is done.
        """
        start = time.perf_counter()
        todo = [c for c in self.codes if not _ready(SIGNATURES[c][0], kernel_types(c))]
        if not _ready(run_plan, interpreter_types()):
            todo.append(INTERPRETER)
        todo.sort(key=_compile_cost, reverse=True)
        claims = _claims_directory() if len(todo) > 1 else None
        helper = _start_compile_helper(todo, claims) if claims else None

        def show(name: str) -> None:
            if progress:
                second = ", with a second process" if helper is not None else ""
                sys.stderr.write(f"\r\033[Kcnnc: compiling {name} ({len(todo)} to compile"
                                 f"{second}; the first compile on this machine, later ones "
                                 f"load it) ... {time.perf_counter() - start:.0f} s")
                sys.stderr.flush()

        try:
            compile_claimed(todo, claims, show)
            if helper is not None:
                show("(waiting for the second process)")
                try:  # it leaves its kernels in the disk cache (or failed: compiled below)
                    helper.wait(timeout=HELPER_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    pass  # stuck: killed below, and its kernels compiled here
            self.interpreter.compile(interpreter_types())
            self._fns = kernel_addresses(self.codes)  # loads (or compiles) the helper's
        finally:  # interrupted or failed: the helper does not outlive us
            if helper is not None and helper.poll() is None:
                helper.kill()
                helper.wait()
            if claims:
                shutil.rmtree(claims, ignore_errors=True)
        if progress and todo:
            sys.stderr.write(f"\r\033[Kcnnc: {len(todo)} kernels compiled in "
                             f"{time.perf_counter() - start:.1f} s\n")
            sys.stderr.flush()


# What a kernel's cold compile costs, in CPU seconds on the development machine
# (`python benchmarks/compile_time.py examples/googlenet.cnn`), 1 for the small ones: the
# costliest are compiled first, so the two processes of a cold compile end together.
COMPILE_COST = {"conv2d_packed": 16, "pool2d": 11, "conv2d_winograd": 9, "dense": 6,
                "run_plan": 6, "conv2d_lanes": 7}


# A helper still compiling after this long is taken to be stuck (the costliest kernel
# takes ~16 s here, ~60 s on a loaded machine): it is killed and its kernels compiled here.
HELPER_TIMEOUT_S = 900


def _ready(dispatcher, argtypes: tuple) -> bool:
    """Whether ``dispatcher`` needs no compile for ``argtypes``: compiled in this process
    already, or in the disk cache."""
    return tuple(argtypes) in dispatcher.overloads or is_cached(dispatcher, argtypes)


def _compile_cost(code: int) -> float:
    name = "run_plan" if code == INTERPRETER else SIGNATURES[code][0].__name__
    return COMPILE_COST.get(name, 1)


def _claims_directory() -> str | None:
    """A new directory where the two processes of a cold compile claim kernels; None
    when the kernels' disk cache, through which the helper hands its work over, cannot be
    written."""
    if not os.access(cache_directory_of(run_plan), os.W_OK) or not sys.executable:
        return None
    try:
        return tempfile.mkdtemp(prefix="cnnc-compile-")
    except OSError:
        return None


def compile_claimed(codes: list[int], claims: str | None, show=lambda name: None,
                    parent: int | None = None) -> None:
    """Compile the kernels of ``codes`` (``compile_kernel``'s codes) in order, each one
    that no other process has claimed in the directory ``claims`` (None: all): the two
    processes of a cold compile take the next kernel as they come free. A helper (its
    ``parent`` the process that started it) stops before its next kernel once that
    process is gone or has removed ``claims`` (done, failed or killed)."""
    for code in codes:
        if parent is not None and (os.getppid() != parent or not os.path.isdir(claims)):
            return
        if claims is not None:
            try:
                os.close(os.open(os.path.join(claims, str(code)),
                                 os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue  # the other process has it
            except OSError:
                pass  # cannot claim: compile it anyway
        show("the plan interpreter" if code == INTERPRETER else SIGNATURES[code][0].__name__)
        compile_kernel(code)


def _start_compile_helper(codes: list[int], claims: str):
    """A process that compiles kernels of ``codes`` into the disk cache, claiming each in
    ``claims`` as this process does, while this one compiles the others (None if it cannot
    start).

    Nothing but the disk cache and the claims pass between the two, so a helper that
    fails only costs this process the compiles it would have done anyway.
    """
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
        "from cnnc.runtime import compile_claimed\n"
        f"compile_claimed({list(codes)!r}, {claims!r}, parent={os.getpid()})\n"
    )
    try:
        return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None


def reads_input_in_place(plan: Plan) -> bool:
    """Whether the steps can read the caller's input array where it is, rather than a copy
    in the arena: its group holds the input alone, no step writes to it, and it is not the
    output (SqueezeNet's 3x224x224 copy took ~35 us of its ~3.6 ms on the calling thread)."""
    group = plan.input_view.group
    return (plan.buffers.groups[group].per_image == plan._image_floats
            and plan.output_view.group != group
            and not any(view.group == group for step in plan.steps for view in step.writes))


def encode_plan(plan: Plan) -> tuple:
    """(params, ops, ints, floats) for kernels.interpreter.run_plan: each view becomes its
    (start, channels, h, w) in the arena -- the input's start -1 when the steps read the
    caller's array in place --, the rest is laid out by the interpreter's table."""
    def place(arg):
        if not isinstance(arg, View):
            return arg
        h, w = arg.hw
        start = plan.view_start(arg)
        if plan.direct_input and arg.group == plan.input_view.group:
            start = -1
        return (start, plan.buffers.groups[arg.group].per_image // (h * w), h, w)

    return encode_steps([(s.kernel, tuple(map(place, s.args))) for s in plan.steps])
