"""What runs in a Dask worker: the model, loaded once per worker process, and one shard.

The model travels as the bytes of its .cnnc artifact (data, never a pickled Network);
each worker process loads it on first use and keeps it, keyed by the bytes' SHA-256.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import CnncError
from .inputs import Failure, ImageSettings, Shard, read_array, read_images, reason_of
from .outdir import atomic_file, write_errors

_KEEP = 2                   # networks kept per worker: the current model and one more
_networks: dict = {}        # sha256 -> Network, in the order they were loaded
_load_lock = threading.Lock()
DASK_TRIM_THRESHOLD = "65536"  # distributed.nanny.pre-spawn-environ's default
_MMAP_THRESHOLD = 32 << 20  # glibc's largest dynamic mmap threshold (64-bit)
_TRIM_THRESHOLD = 64 << 20  # twice it, as glibc's dynamic rule would set


def keep_heap() -> bool:
    """Undo, in this worker process, what Dask's nanny sets for glibc's malloc: its
    ``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.pre-spawn-environ``) also turns
    off glibc's adjustable mmap threshold, so every buffer of 128 KiB or more that a kernel
    allocates per call (Winograd's and the packed conv's scratch, the output copy) is
    mapped afresh and its pages faulted in again: 9x the page faults of a plain process
    and ~15% of a worker's time on the predict benchmark. The thresholds are set to what
    glibc's own rule reaches in a plain process; the worker then keeps up to 64 MiB of
    freed memory instead of returning it at once. True if they were set."""
    # Dask's value only: a different one was set on purpose, by the user
    if os.environ.get("MALLOC_TRIM_THRESHOLD_") != DASK_TRIM_THRESHOLD or not (
            sys.platform.startswith("linux")):
        return False
    import ctypes
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_threshold, _MMAP_THRESHOLD)
                and mallopt(m_trim_threshold, _TRIM_THRESHOLD))


@contextlib.contextmanager
def one_thread():
    """The kernels use one thread (Dask runs one task per worker thread); Numba's
    setting is per thread, and is put back for whoever runs in this thread next."""
    import numba
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def network(digest: str, blob: bytes):
    """The Network of an artifact's bytes, loaded once per process."""
    net = _networks.get(digest)
    if net is not None:
        return net
    with _load_lock:  # two threads of one worker load it once
        if digest not in _networks:
            from ..compiler import load
            if not _networks:  # the first model this process loads
                keep_heap()
            fd, path = tempfile.mkstemp(suffix=".cnnc")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(blob)
                net = load(path)
            finally:
                os.unlink(path)
            while len(_networks) >= _KEEP:
                _networks.pop(next(iter(_networks)))
            _networks[digest] = net
        return _networks[digest]


def dask_setup(worker) -> None:
    """Run by each local worker as it starts (Dask's preload). Ctrl-C reaches every
    process of the terminal's group; the workers leave it to the client, which stops
    them (a worker that Ctrl-C stopped would print Dask's tracebacks), and turn their
    logging off: a worker whose scheduler the client closed first logged the failed
    heartbeat with a traceback (1 run in ~7 of the interrupt test)."""
    signal.signal(signal.SIGINT, _quiet)


def _quiet(signum, frame) -> None:
    logging.disable(logging.CRITICAL)


def run_batches(net, x: np.ndarray, batch: int) -> np.ndarray:
    """net(x), `batch` images at a time (bounded memory for any shard size)."""
    parts = [net(x[i: i + batch]) for i in range(0, len(x), batch)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


@dataclass(frozen=True)
class Job:
    """What every shard of one run shares."""
    digest: str
    outdir: str
    batch: int
    images: ImageSettings | None


@dataclass(frozen=True)
class Result:
    output: str
    images: int                 # images predicted (unreadable ones not counted)
    failures: tuple[Failure, ...]


def _batches(shard: Shard, job: Job, input_shape: tuple):
    """(images, [Failure]) of each `batch` rows of the shard, read only when needed, so
    that a worker holds one batch of inputs at a time (an .npy is memory-mapped)."""
    if shard.kind == "images":
        for i in range(0, shard.rows, job.batch):
            yield read_images(shard, job.images, input_shape, i, i + job.batch)
    else:
        rows = read_array(shard)
        for i in range(0, len(rows), job.batch):
            yield np.asarray(rows[i: i + job.batch]), []


def predict_shard(blob: bytes, job: Job, shard: Shard) -> Result:
    """Read, predict and write one shard. An unreadable input is a Failure, not an
    exception, so that the run goes on; the output is written atomically."""
    net = network(job.digest, blob)
    parts, failures = [], []
    try:
        with one_thread():
            for x, bad in _batches(shard, job, net.input_shape):
                parts.append(net(x))
                failures += bad
    except (CnncError, OSError, ValueError, EOFError) as err:
        reason = err.message if isinstance(err, CnncError) else reason_of(err)
        return Result(shard.output, 0, (Failure(shard.names[0], reason),))
    y = np.concatenate(parts)
    try:
        if failures:  # first, so that the output never looks done without it
            write_errors(job.outdir, shard.output, failures)
        with atomic_file(job.outdir, shard.output) as fh:
            np.save(fh, y)
    except OSError as err:
        reason = f"cannot write {shard.output} in OUTDIR: {reason_of(err)}"
        return Result(shard.output, 0, (Failure(shard.names[0], reason),))
    return Result(shard.output, shard.rows - len(failures), tuple(failures))


def predict_block(block: np.ndarray, blob: bytes, digest: str, batch: int) -> np.ndarray:
    """map_blocks body of cnnc.predict: one block of a dask.array through the network."""
    net = network(digest, blob)
    with one_thread():
        return run_batches(net, block, batch)
