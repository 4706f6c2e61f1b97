"""Side-by-side benchmark: cnnc against PyTorch eager and ONNX Runtime.

For each row (model, batch) and each thread count T, in one process:

1. build the hand-written PyTorch twin of the example (tests/torch_twins.py),
   eval mode, deterministic random weights (`init_weights_`);
2. export the twin to ONNX (fixed batch);
3. set torch, Numba and numpy's BLAS to T threads;
4. compile the .cnn file with cnnc, giving it the same weights, and open an
   ONNX Runtime session with all graph optimisations, T intra-op threads,
   1 inter-op thread, sequential execution;
5. check that the three outputs agree (max|diff| / max|ref| <= 1e-4) before
   timing anything -- a row that disagrees is reported and not timed;
6. warm up, then time single calls, the engines taking short turns round
   after round so that drift in machine load hits all of them alike (see
   `time_round_robin`); report the median and the 10th percentile.

GFLOP/s count 2 * multiply-accumulates (conv and dense, `count_params_and_macs`)
* batch / median time. The "sgemm limit" is numpy's float32 matmul of
2048 x 2048 matrices at the same thread count, measured in the same run.

Run it with OpenBLAS's overrides unset, as on a user's machine:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench.py

Options: --rows lenet5:1,googlenet:8  --threads 1,2  --quick  --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import io
import math
import os
import platform
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ENV_VARS = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "OMP_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
    "NUMBA_NUM_THREADS",
)
ENV_AT_START = {name: os.environ.get(name) for name in ENV_VARS}  # before cnnc sets defaults

# cnnc's runtime set-up first: it sets GOMP_SPINCOUNT=20000 (unless set) before any OpenMP
# runtime starts. torch then loads its own libgomp with global symbols and Numba's OpenMP
# pool binds to that copy, so the setting holds for both cnnc and PyTorch in this process.
import cnnc  # noqa: I001 - must come before torch
from cnnc.runtime import prepare  # noqa: I001

prepare()

import numba
import numpy as np
import onnxruntime as ort
import threadpoolctl
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from torch_twins import TWINS, count_params_and_macs, init_weights_, to_cnnc_weights

DEFAULT_ROWS = [
    ("lenet5", 1),
    ("lenet5", 64),
    ("cifar_inception", 1),
    ("cifar_inception", 16),
    ("googlenet", 1),
    ("googlenet", 8),
    ("resnet18", 1),
    ("resnet18", 8),
    ("squeezenet", 1),
]
DISPLAY_NAMES = {
    "lenet5": "LeNet-5",
    "cifar_inception": "CIFAR inception",
    "googlenet": "GoogLeNet",
    "resnet18": "ResNet-18",
    "squeezenet": "SqueezeNet 1.1",
}
TOLERANCE = 1e-4  # max|diff| / max|reference|
LOAD_WARNING = 0.05  # warn when other processes kept more than this fraction of the CPUs busy
SEED = 0


@dataclass
class Settings:
    """How long to warm up and how many timed calls to make."""

    name: str
    warmup_s: float  # untimed calls per engine for this long (at least 2 calls)
    turn_s: float  # an engine's turn: timed calls for this long (at least 1 call)
    pause_s: float  # sleep before each turn
    target_s: float  # aim for this much timed work per engine
    min_reps: int  # never fewer timed calls per engine
    sgemm_s: float  # time spent on the sgemm reference


FULL = Settings(
    "full", warmup_s=0.5, turn_s=0.05, pause_s=0.01, target_s=1.5, min_reps=10, sgemm_s=2.0
)
QUICK = Settings(
    "quick", warmup_s=0.05, turn_s=0.01, pause_s=0.005, target_s=0.2, min_reps=3, sgemm_s=0.3
)


# ---------------------------------------------------------------------------
# Engines: a name, something prepared once per thread count, and a call.


@dataclass
class Engine:
    name: str
    run: Callable[[], np.ndarray]  # one forward pass on the row's input
    times: list[float] = field(default_factory=list)

    def timed_call(self) -> None:
        start = time.perf_counter()
        self.run()
        self.times.append(time.perf_counter() - start)


def cnnc_engine(net, x: np.ndarray) -> Engine:
    return Engine("cnnc", lambda: net(x))


def torch_engine(model: torch.nn.Module, x: np.ndarray) -> Engine:
    tx = torch.from_numpy(x)

    def run() -> np.ndarray:
        with torch.inference_mode():
            return model(tx).numpy()

    return Engine("torch", run)


def ort_engine(onnx_bytes: bytes, x: np.ndarray, threads: int) -> Engine:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    return Engine("ort", lambda: session.run(None, feed)[0])


def export_onnx(model: torch.nn.Module, x: np.ndarray) -> bytes:
    """The twin as ONNX with a fixed input shape. The TorchScript-based exporter
    (dynamo=False) needs no packages beyond torch and onnx; its deprecation and
    tracer warnings (shapes are constant per row) are silenced."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.from_numpy(x),),
            buffer,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            opset_version=17,
        )
    return buffer.getvalue()


# ---------------------------------------------------------------------------
# Measurements


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    numba.set_num_threads(threads)


def sgemm_gflops(threads: int, seconds: float) -> float:
    """numpy float32 2048^3 matmul, BLAS limited to `threads`: median GFLOP/s."""
    n = 2048
    rng = np.random.default_rng(SEED)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"):
        np.matmul(a, b, out=c)  # warm-up
        times = []
        deadline = time.perf_counter() + seconds
        while len(times) < 5 or time.perf_counter() < deadline:
            start = time.perf_counter()
            np.matmul(a, b, out=c)
            times.append(time.perf_counter() - start)
    return 2 * n**3 / float(np.median(times)) / 1e9


class OtherLoad:
    """How busy other processes kept the CPUs: (busy CPU time of the machine, from
    /proc/stat, including time stolen by a hypervisor) minus (this process's CPU
    time), over wall time x CPUs. Anything above a few percent makes the numbers
    suspect: on a 2-core machine one busy process slows small nets by 100x."""

    def __init__(self) -> None:
        self.start = self._now()

    @staticmethod
    def _now() -> tuple[float, float, float] | None:
        try:
            jiffies = [int(v) for v in Path("/proc/stat").read_text().split()[1:9]]
        except (OSError, ValueError):
            return None  # not Linux
        idle = jiffies[3] + jiffies[4]  # idle, iowait
        busy = (sum(jiffies) - idle) / os.sysconf("SC_CLK_TCK")
        own = sum(os.times()[:2])
        return time.perf_counter(), busy, own

    def fraction(self) -> float | None:
        end = self._now()
        if self.start is None or end is None:
            return None
        wall, busy, own = (b - a for a, b in zip(self.start, end, strict=True))
        return max(0.0, busy - own) / (wall * (os.cpu_count() or 1))


def relative_error(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(y - ref)) / np.max(np.abs(ref)))


class MismatchError(Exception):
    pass


def check_outputs(engines: list[Engine], reference: str) -> dict[str, float]:
    """Run every engine once; every output must match the reference engine's."""
    outputs = {e.name: np.asarray(e.run()) for e in engines}
    ref = outputs[reference]
    errors = {}
    for name, y in outputs.items():
        if name == reference:
            continue
        if y.shape != ref.shape:
            raise MismatchError(f"{name} output shape {y.shape}, {reference} gives {ref.shape}")
        errors[name] = relative_error(y, ref)
        if not errors[name] <= TOLERANCE:  # also catches NaN
            raise MismatchError(
                f"{name} differs from {reference}: max|diff|/max|ref| = "
                f"{errors[name]:.3g} > {TOLERANCE:g}"
            )
    return errors


def _other_threads_cpu_ns() -> dict[str, int] | None:
    """CPU time used so far by each of this process's threads other than the calling one
    (Linux's /proc/self/task/*/schedstat), or None where that cannot be read."""
    me = str(threading.get_native_id())
    times = {}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for task in tasks:
        if task == me:
            continue
        try:
            times[task] = int(Path(f"/proc/self/task/{task}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # the thread ended
    return times


QUIET_WINDOW_S = 0.01  # other threads used no CPU for this long: they have stopped spinning
QUIET_LIMIT_S = 1.0  # give up waiting after this long


def wait_until_quiet(pause_s: float) -> float:
    """Sleep `pause_s`, then until no other thread of this process has used CPU for
    `QUIET_WINDOW_S` (at most `QUIET_LIMIT_S`); returns the seconds waited.

    Worker threads busy-wait for a while after a call: ORT's intra-op worker went on
    spinning for ~40 ms after its last call here (LeNet-5, 2 threads), so with a fixed 10 ms
    pause the engine whose turn came next shared the two cores with it, and its median
    slowed by up to 3x. Waiting until they are quiet keeps every engine's turn its own."""
    start = time.perf_counter()
    time.sleep(pause_s)
    before = _other_threads_cpu_ns()
    if before is None:
        return time.perf_counter() - start
    while time.perf_counter() - start < QUIET_LIMIT_S:
        time.sleep(QUIET_WINDOW_S)
        after = _other_threads_cpu_ns()
        if after is None:
            break
        used = sum(t - before[task] for task, t in after.items() if task in before)
        if used < 100_000:  # under 0.1 ms in the window (threads alive at both ends)
            break
        before = after
    return time.perf_counter() - start


def time_round_robin(engines: list[Engine], settings: Settings) -> int:
    """Warm up each engine, then let the engines take turns, round after round.

    A turn starts with a short sleep that lasts until the worker threads of the engine
    before have stopped spinning (`wait_until_quiet`: OpenMP and ORT threads busy-wait
    for a while after a call), and one untimed call, which wakes this engine's threads and
    refills the caches with its data; then timed calls for `turn_s`. Strict
    call-by-call alternation slowed the small nets in a measurement here
    (ORT on LeNet-5 2-3x, PyTorch and cnnc 1.1-2x) through that interference.
    Returns the number of rounds; every engine makes at least one timed call
    per round."""
    slowest = 0.0
    for engine in engines:
        wait_until_quiet(settings.pause_s)
        engine.run()  # a first call can be much slower: not part of the estimate
        calls, start = 0, time.perf_counter()
        while calls < 2 or time.perf_counter() - start < settings.warmup_s:
            engine.run()
            calls += 1
        slowest = max(slowest, (time.perf_counter() - start) / calls)
    rounds = max(math.ceil(settings.target_s / max(settings.turn_s, slowest)), settings.min_reps)
    for engine in engines:
        engine.times = []
    for _ in range(rounds):
        for engine in engines:
            wait_until_quiet(settings.pause_s)
            engine.run()  # untimed
            start = time.perf_counter()
            engine.timed_call()
            while time.perf_counter() - start < settings.turn_s:
                engine.timed_call()
    return rounds


@dataclass
class Result:
    model: str
    batch: int
    threads: int
    macs: int  # per sample
    median_ms: dict[str, float] = field(default_factory=dict)
    p10_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    rounds: int = 0
    other_load: float | None = None  # OtherLoad during the timing
    failure: str | None = None


def bench_row(stem: str, batch: int, thread_counts: list[int], settings: Settings) -> list[Result]:
    builder, shape = TWINS[stem]
    model = init_weights_(builder(), seed=SEED).eval()
    _, macs = count_params_and_macs(model, shape)
    x = np.random.default_rng(SEED).standard_normal((batch, *shape), dtype=np.float32)
    start = time.perf_counter()
    onnx_bytes = export_onnx(model, x)
    print(
        f"\n{DISPLAY_NAMES[stem]} batch {batch}: {2 * macs * batch / 1e9:.4g} GFLOP, "
        f"ONNX export {time.perf_counter() - start:.1f} s",
        flush=True,
    )

    results = []
    for threads in thread_counts:
        result = Result(stem, batch, threads, macs)
        results.append(result)
        set_threads(threads)
        # Compiled after the thread count is set, as a user would; the first call may load
        # more libraries (SciPy's BLAS, for np.dot in Numba), so it comes before the limits.
        start = time.perf_counter()
        path = ROOT / "examples" / f"{stem}.cnn"
        net = cnnc.compile_file(str(path), weights=to_cnnc_weights(model), progress=False)
        net(x)
        compile_s = time.perf_counter() - start
        # cnnc may call numpy's BLAS between its kernels: hold it to T threads too.
        with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"):
            engines = [
                cnnc_engine(net, x),
                torch_engine(model, x),
                ort_engine(onnx_bytes, x, threads),
            ]
            try:
                result.errors = check_outputs(engines, reference="torch")
            except MismatchError as err:
                result.failure = str(err)
                print(
                    f"  !!! {threads} thread(s): OUTPUTS DISAGREE, row not timed: {err}",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            load = OtherLoad()
            result.rounds = time_round_robin(engines, settings)
            result.other_load = load.fraction()
        for engine in engines:
            result.median_ms[engine.name] = float(np.median(engine.times)) * 1e3
            result.p10_ms[engine.name] = float(np.percentile(engine.times, 10)) * 1e3
        ms = result.median_ms
        calls = "/".join(str(len(engine.times)) for engine in engines)
        print(
            f"  {threads} thread(s): cnnc compile + first call {compile_s:.1f} s; "
            f"max|diff|/max|ref| vs torch: cnnc {result.errors['cnnc']:.1e}, "
            f"ort {result.errors['ort']:.1e}\n"
            f"    cnnc {ms['cnnc']:.3f} ms, torch {ms['torch']:.3f} ms, ort {ms['ort']:.3f} ms "
            f"({result.rounds} rounds, {calls} timed calls, other load {fmt_load(result)})",
            flush=True,
        )
        if (result.other_load or 0) > LOAD_WARNING:
            print(
                "    WARNING: other processes were busy during this row; its numbers are suspect",
                file=sys.stderr,
                flush=True,
            )
    return results


# ---------------------------------------------------------------------------
# Reporting


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return " ".join(
                    f
                    for f in (
                        "avx2",
                        "fma",
                        "avx512f",
                        "avx512bw",
                        "avx512vl",
                        "avx512_vnni",
                        "avx512_bf16",
                    )
                    if f in flags
                )
    except OSError:
        pass
    return "unknown"


def blas_lines() -> list[str]:
    lines = []
    for lib in threadpoolctl.threadpool_info():
        if lib.get("user_api") != "blas":
            continue
        owner = Path(lib.get("filepath", "?")).parent.name.removesuffix(".libs")
        lines.append(
            f"BLAS of {owner}: {lib.get('internal_api')} {lib.get('version')}, "
            f"kernel {lib.get('architecture')}, {lib.get('num_threads')} threads, "
            f"{lib.get('threading_layer')} ({Path(lib.get('filepath', '?')).name})"
        )
    return lines or ["no BLAS found by threadpoolctl"]


def environment_lines() -> list[str]:
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel Numba function has run yet
        layer = f"not started (configured: {numba.config.THREADING_LAYER})"
    lines = [
        (
            f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs "
            f"({len(os.sched_getaffinity(0))} usable), flags: {cpu_flags()}"
        ),
        (
            f"python {platform.python_version()}, numpy {np.__version__}, "
            f"numba {numba.__version__} "
            f"(threading layer: {layer}), torch {torch.__version__}, "
            f"onnxruntime {ort.__version__}, cnnc {getattr(cnnc, '__version__', '?')}"
        ),
    ]
    from cnnc.backend import current_target
    lines.append(f"cnnc target: {current_target().describe()}")
    lines += blas_lines()
    lines.append(
        "environment at start: "
        + ", ".join(
            f"{name} unset" if value is None else f"{name}={value!r}"
            for name, value in ENV_AT_START.items()
        )
    )
    changed = {
        name: os.environ.get(name)
        for name in ENV_VARS
        if os.environ.get(name) != ENV_AT_START[name]
    }
    if changed:
        lines.append(
            "changed in the process since start (cnnc's import sets a default): "
            + ", ".join(f"{name}={value!r}" for name, value in changed.items())
        )
    return lines


def fmt_load(result: Result) -> str:
    return "?" if result.other_load is None else f"{result.other_load:.0%}"


def fmt_ms(result: Result, engine: str) -> str:
    return f"{result.median_ms[engine]:.3f} ({result.p10_ms[engine]:.3f})"


def table(results: list[Result], sgemm: dict[int, float]) -> str:
    header = (
        "| model | batch | threads | cnnc ms | PyTorch ms | ORT ms | cnnc GFLOP/s "
        "| of sgemm | PyTorch / cnnc | ORT / cnnc | other load |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for r in results:
        head = f"| {DISPLAY_NAMES[r.model]} | {r.batch} | {r.threads} |"
        if r.failure:
            failure = r.failure.replace("|", "\\|")  # Markdown cell
            lines.append(f"{head} FAILED: {failure} | | | | | | | |")
            continue
        gflops = 2 * r.macs * r.batch / (r.median_ms["cnnc"] / 1e3) / 1e9
        lines.append(
            f"{head} {fmt_ms(r, 'cnnc')} | {fmt_ms(r, 'torch')} | {fmt_ms(r, 'ort')} "
            f"| {gflops:.1f} | {gflops / sgemm[r.threads]:.0%} "
            f"| {r.median_ms['torch'] / r.median_ms['cnnc']:.2f} "
            f"| {r.median_ms['ort'] / r.median_ms['cnnc']:.2f} | {fmt_load(r)} |"
        )
    return "\n".join(lines)


def notes(sgemm: dict[int, float], settings: Settings) -> str:
    limits = ", ".join(f"{t} thread(s): {g:.0f} GFLOP/s" for t, g in sorted(sgemm.items()))
    return (
        f"Milliseconds per forward pass: median (10th percentile) of single calls "
        f"after warm-up; the engines take turns of {settings.turn_s * 1e3:.0f} ms, each opening "
        f"with a pause of at least {settings.pause_s * 1e3:.0f} ms that lasts until the other "
        f"engines' threads have stopped spinning, and an untimed call "
        f"({settings.name} settings). "
        f"GFLOP/s = 2 * conv+dense MACs * batch / median. "
        f"sgemm limit (numpy float32 2048^3 matmul, median): {limits}. "
        f"Speed-ups above 1 mean cnnc is faster. "
        f"Other load: the share of the CPUs that other processes kept busy while the row "
        f"was timed (above {LOAD_WARNING:.0%}, the row's numbers are suspect). "
        f"Outputs agree within max|diff|/max|ref| <= {TOLERANCE:g} before timing."
    )


def write_markdown(path: Path, results, sgemm, env_lines, settings, command) -> None:
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    smoke = (
        "\n**Smoke run (`--quick`): too few repetitions for the numbers to mean anything.**\n"
        if settings is QUICK
        else ""
    )
    text = (
        f"# cnnc benchmark results\n{smoke}\n"
        f"Run on {date} with `{command}`.\n\n"
        + "".join(f"- {line}\n" for line in env_lines)
        + f"\n{table(results, sgemm)}\n\n{notes(sgemm, settings)}\n"
    )
    path.write_text(text)
    print(f"\nwrote {path}")


# ---------------------------------------------------------------------------
# Command line


def parse_rows(text: str) -> list[tuple[str, int]]:
    rows = []
    for item in text.split(","):
        stem, _, batch = item.strip().partition(":")
        if stem not in TWINS:
            raise argparse.ArgumentTypeError(f"unknown model '{stem}' (known: {', '.join(TWINS)})")
        try:
            rows.append((stem, int(batch) if batch else 1))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad batch in '{item}'") from None
        if rows[-1][1] < 1:
            raise argparse.ArgumentTypeError(f"batch must be at least 1 in '{item}'")
    return rows


def parse_threads(text: str) -> list[int]:
    try:
        threads = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad thread list '{text}'") from None
    limit = numba.config.NUMBA_NUM_THREADS
    if any(not 1 <= t <= limit for t in threads):
        raise argparse.ArgumentTypeError(f"thread counts must be between 1 and {limit}")
    return threads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows",
        type=parse_rows,
        default=DEFAULT_ROWS,
        help="MODEL:BATCH,... (models: " + ", ".join(TWINS) + ")",
    )
    parser.add_argument(
        "--threads",
        type=parse_threads,
        default=[1, 2],
        help="comma-separated thread counts (default 1,2)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="few repetitions: a smoke test, not a measurement"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="also write a Markdown report here (e.g. benchmarks/RESULTS.md)",
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    sys.stdout.reconfigure(line_buffering=True)  # keep a log in order with the warnings

    if any(ENV_AT_START[name] is not None for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")):
        print(
            "WARNING: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE is set; OpenBLAS (numpy's, and "
            "SciPy's inside cnnc) may not use this CPU's best kernel. Run as\n"
            "  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench.py",
            file=sys.stderr,
        )
    for line in environment_lines():
        print(line)

    sgemm = {}
    for threads in args.threads:
        load = OtherLoad()
        sgemm[threads] = sgemm_gflops(threads, settings.sgemm_s)
        other = load.fraction()
        print(
            f"sgemm limit, {threads} thread(s): {sgemm[threads]:.1f} GFLOP/s "
            f"(other load {'?' if other is None else f'{other:.0%}'})",
            flush=True,
        )

    results = []
    for stem, batch in args.rows:
        try:
            results += bench_row(stem, batch, args.threads, settings)
        except Exception as err:  # noqa: BLE001 - report the row as failed, go on with the rest
            traceback.print_exc()
            print(f"  !!! {stem} batch {batch} FAILED: {err!r}", file=sys.stderr, flush=True)
            failure = f"{type(err).__name__}: {err}".splitlines()[0]
            results += [Result(stem, batch, t, 0, failure=failure) for t in args.threads]

    # Again: the Numba threading layer is known now, and cnnc may have loaded another BLAS.
    env_lines = environment_lines()
    print("\n" + "\n".join(env_lines))
    print("\n" + table(results, sgemm))
    print("\n" + notes(sgemm, settings))
    if args.out:
        command = "python benchmarks/bench.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        write_markdown(args.out, results, sgemm, env_lines, settings, command.strip())
    failed = [r for r in results if r.failure]
    if failed:
        print(f"\n{len(failed)} row(s) FAILED, see above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
