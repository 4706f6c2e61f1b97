"""`cnnc predict`: plan the shards, run them on a Dask cluster, report (LANGUAGE.md §13).

    plan       the client lists the inputs and reads .npy headers only   (inputs.py)
    skip       shards whose outputs are done are left alone              (outdir.py)
    cluster    a LocalCluster of one-thread worker processes, or --scheduler
    ship       the model's artifact bytes, scattered once to every worker
    run        one task per shard; each worker reads, predicts and writes (worker.py)
    report     predictions.csv from the outputs; unreadable inputs by name
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field

from ..errors import CnncError
from .inputs import Failure, ImageSettings, Shard, plan_shards
from .outdir import OutDir
from .worker import Job, Result, predict_shard

INSTALL_HINT = "pip install 'cnnc[predict]'"
# Set in each local worker before anything there starts Numba's or OpenMP's threads.
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
# Dask's housekeeping, slowed down for a local cluster (its scheduler runs in this process,
# its workers on the same cores as the work): by default an idle 2-worker cluster takes
# ~22% of a core (each worker samples its task thread's stack every 10 ms for the
# dashboard's profile, polls the GIL every 1 ms, ticks its event loop every 20 ms,
# measures its memory every 100 ms); with these ~4% (docs/PREDICT.md has the numbers).
LOCAL_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.tick.interval": "200ms",
    "distributed.worker.memory.monitor-interval": "1s",
}


def require(*modules: str) -> None:
    """Import the optional dependencies, or say how to install them."""
    import importlib
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            what = "Pillow" if name == "PIL" else "Dask (dask[distributed])"
            raise CnncError(f"cnnc predict needs {what}, which is not installed; "
                            f"install it with: {INSTALL_HINT}") from None


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ------------------------------------------------------------------ the cluster
def local_cluster(workers: int):
    """`workers` processes of one thread each, all on 127.0.0.1 only."""
    import dask.config
    from distributed import LocalCluster
    # The scheduler's HTTP server (the dashboard, if bokeh is installed) takes any free
    # port of 127.0.0.1, not 8787, which another cluster may hold. The workers run
    # cnnc.predict.worker's dask_setup when they start (Dask's preload). LOCAL_CONFIG: the
    # scheduler (in this process) reads it as it starts; the workers get it as DASK_*
    # variables, which a worker the nanny restarts gets too (the configuration a nanny
    # hands on is copied only shallowly, and set back to Dask's defaults after this call).
    env = {**WORKER_ENV, **{_dask_variable(k): str(v) for k, v in LOCAL_CONFIG.items()}}
    with dask.config.set(LOCAL_CONFIG):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                            host="127.0.0.1", dashboard_address="127.0.0.1:0",
                            silence_logs=logging.ERROR, env=env,
                            preload=["cnnc.predict.worker"])


def _dask_variable(key: str) -> str:
    """The environment variable of a Dask configuration key
    (``distributed.worker.profile.enabled`` -> ``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED``)."""
    return "DASK_" + "__".join(part.upper().replace("-", "_") for part in key.split("."))


def connect(scheduler: str, timeout: float = 30.0):
    """A Client of a running scheduler that has at least one worker."""
    from distributed import Client
    try:
        client = Client(scheduler, timeout=f"{timeout}s")
    except (OSError, TimeoutError, ValueError) as err:
        raise CnncError(f"cannot reach the Dask scheduler at '{scheduler}': {err}") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        client.close()
        raise CnncError(f"the Dask scheduler at '{scheduler}' has no workers (start some "
                        f"with: dask worker {scheduler})") from None
    return client


# ------------------------------------------------------------------ progress
class Progress:
    """`12/40 files  3,456 images  210.3 images/s` on one line of a terminal."""

    def __init__(self, shards: list[Shard], done: list[Shard], enabled: bool):
        self.enabled = enabled
        self.remaining: dict[str, int] = {}
        for s in shards:
            for f in _input_files(s):
                self.remaining[f] = self.remaining.get(f, 0) + 1
        self.files = len(self.remaining)
        for s in done:
            self._count(s)
        self.images = 0  # predicted in this run: the rate counts this run's work only
        self.start = time.perf_counter()

    def _count(self, shard: Shard) -> None:
        for f in _input_files(shard):
            self.remaining[f] -= 1
            if not self.remaining[f]:
                del self.remaining[f]

    def update(self, shard: Shard, result: Result | None) -> None:
        self._count(shard)
        self.images += result.images if result else 0
        if self.enabled:
            sys.stderr.write(f"\r\033[Kcnnc predict: {self.line()}")
            sys.stderr.flush()

    def rate(self) -> float:
        return self.images / max(time.perf_counter() - self.start, 1e-9)

    def line(self) -> str:
        done = self.files - len(self.remaining)
        return (f"{done}/{self.files} files  {self.images:,} images  "
                f"{self.rate():.1f} images/s")

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _input_files(shard: Shard) -> tuple[str, ...]:
    return shard.files if shard.kind == "images" else (shard.source,)


# ------------------------------------------------------------------ the run
@dataclass
class Summary:
    shards: int = 0
    skipped: int = 0
    images: int = 0
    seconds: float = 0.0
    predictions: int | None = None          # images in predictions.csv, if written
    failures: list[Failure] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Options:
    batch: int = 64
    shard: int = 1024
    top: int = 5
    size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def image_settings(model, options: Options) -> ImageSettings:
    c, h, w = model.input_shape
    if c != 3:
        raise CnncError(f"images are decoded to RGB (3 channels), but the network takes {c}")
    size = options.size or (h, w)
    if size[0] < h or size[1] < w:
        raise CnncError(f"--size {size[0]}x{size[1]} is smaller than the network's input "
                        f"{h}x{w}, to which the images are centre-cropped")
    return ImageSettings(size, (h, w), _per_channel(options.mean, 0.0, "--mean"),
                         _per_channel(options.std, 1.0, "--std"))


def _per_channel(values, default: float, flag: str) -> tuple[float, ...]:
    if not values:
        return (default,) * 3
    if len(values) == 1:
        return tuple(values) * 3
    if len(values) != 3:
        raise CnncError(f"{flag} takes one value or three (R, G, B), got {len(values)}")
    if flag == "--std" and any(v == 0 for v in values):
        raise CnncError("--std must not be zero")
    return tuple(values)


def predict_files(model, data: list[str], outdir: str, options: Options = Options(), *,
                  workers: int | None = None, scheduler: str | None = None, client=None,
                  progress: bool | None = None) -> Summary:
    """Predict every input of `data` into `outdir` (the work of `cnnc predict`).

    `model` is a Model (predict.model.open_model). The cluster is `client` if given,
    else the scheduler at `scheduler`, else a LocalCluster of `workers` processes.
    """
    start = time.perf_counter()
    plan = plan_shards(data, outdir, model.input_shape, options.shard)
    images = image_settings(model, options) if any(
        s.kind == "images" for s in plan.shards) else None
    if images is not None:
        require("PIL")
    settings = {"array": {"model": model.digest},
                "images": {"model": model.digest, "images": asdict(images) if images else None}}
    out = OutDir(outdir)
    done, todo = out.prepare(plan.shards, settings, model.output_shape)
    summary = Summary(shards=len(plan.shards), skipped=len(done),
                      failures=list(plan.failures))
    bar = Progress(plan.shards, done, sys.stderr.isatty() if progress is None else progress)
    job = Job(model.digest, out.path, options.batch, images)
    try:
        if todo:
            results = _run_on_cluster(model, job, todo, bar, client, scheduler, workers)
            for _, result in results:
                summary.images += result.images
                summary.failures.extend(result.failures)
        if model.is_softmax:
            summary.predictions = out.write_predictions(plan.shards, options.top)
    finally:
        bar.close()
        out.finish()
    summary.seconds = time.perf_counter() - start
    summary.failures = sorted(dict.fromkeys(summary.failures), key=lambda f: f.name)
    return summary


def _run_on_cluster(model, job: Job, todo: list[Shard], bar: Progress, client, scheduler,
                    workers):
    require("distributed")
    cluster = None
    own_client = client is None
    with _quiet_on_interrupt():  # the teardown below included
        try:
            if client is None and scheduler:
                client = connect(scheduler)
            elif client is None:
                cluster = local_cluster(workers or default_workers())
                from distributed import Client
                client = Client(cluster)
            return list(_submit(client, model, job, todo, bar))
        finally:
            if own_client and client is not None:
                client.close()
            if cluster is not None:
                cluster.close()


@contextlib.contextmanager
def _quiet_on_interrupt():
    """Ctrl-C turns logging off before it interrupts anything, until the run has unwound:
    the work the teardown drops makes Dask and Tornado log errors with tracebacks (a
    Tornado callback of distributed's `sync` met an unset variable, once in a run of the
    test suite); the user asked for it and sees "interrupted". Only where this thread takes
    signals (the main one) and SIGINT is not ignored (`nohup`, a background job)."""
    previous_level = logging.root.manager.disable

    def interrupted(signum, frame):
        logging.disable(logging.CRITICAL)
        raise KeyboardInterrupt

    installed = False
    try:
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            previous = signal.signal(signal.SIGINT, interrupted)
            installed = True
    except ValueError:  # not the main thread: its signals go elsewhere
        pass
    if not installed:
        yield
        return
    try:
        yield
    finally:  # (a handler set from outside Python reads as None: the default it is)
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
        logging.disable(previous_level)


def _submit(client, model, job: Job, todo: list[Shard], bar: Progress):
    """(shard, Result) as shards finish. A worker that dies mid-shard costs that shard a
    retry (Dask reschedules it); a task that fails is reported as its input's failure."""
    from distributed import as_completed
    blob = client.scatter(model.blob, broadcast=True, hash=False)
    futures = {client.submit(predict_shard, blob, job, shard, pure=False): shard
               for shard in todo}
    for future in as_completed(futures):
        shard = futures[future]
        try:
            result = future.result()
        except Exception as err:  # noqa: BLE001 - a worker's error, reported by name
            reason = f"the worker failed ({type(err).__name__}: {err})"
            result = Result(shard.output, 0, (Failure(shard.names[0], reason),))
        bar.update(shard, result)
        future.release()
        yield shard, result


# ------------------------------------------------------------------ the command
def cmd_predict(args) -> int:
    from .model import open_model
    require("dask", "distributed")
    model = open_model(args.model, network=args.network, weights=args.weights, seed=args.seed)
    options = Options(batch=args.batch, shard=args.shard, top=args.top, size=args.size,
                      mean=args.mean, std=args.std)
    summary = predict_files(model, args.data, args.output, options, workers=args.workers,
                            scheduler=args.scheduler)
    new = summary.shards - summary.skipped
    print(f"cnnc predict: {summary.images:,} images in {new} shards in "
          f"{summary.seconds:.1f} s ({summary.images_per_second:.1f} images/s); "
          f"{summary.skipped} shards were already done; outputs in {args.output}")
    if summary.predictions is not None:
        print(f"  predictions.csv: top {args.top} classes of {summary.predictions:,} images")
    if summary.failures:
        n = len(summary.failures)
        print(f"error: {n} input{'s' if n > 1 else ''} could not be read:", file=sys.stderr)
        for f in summary.failures:
            print(f"  {f.name}: {f.reason}", file=sys.stderr)
        return 1
    return 0
