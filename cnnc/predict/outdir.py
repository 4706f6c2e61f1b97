"""OUTDIR: atomic writes, which shards are already done, and predictions.csv.

A shard is done when (1) OUTDIR's manifest, `.cnnc-predict.json`, records for its
output the identity the shard has now (a digest of the model, the preprocessing
settings, the inputs' names, sizes and modification times, and the rows), (2) the
output is a float32 .npy whose header has the expected shape and whose size matches
it, and (3) no `.errors.txt` beside it says that some of its images were unreadable.
Files are only ever renamed into place (written under `.cnnc-predict-tmp/` first), so
an output that exists is whole; the checks guard against outputs of another model,
other settings or changed inputs. Before a run, an output that is not done is
deleted and only then the manifest updated, so a file that exists always matches it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile

import numpy as np

from ..errors import CnncError
from .inputs import Failure, Shard

MANIFEST = ".cnnc-predict.json"
TMPDIR = ".cnnc-predict-tmp"
PREDICTIONS = "predictions.csv"
FORMAT = "cnnc-predict"


def errors_path(output: str) -> str:
    """The file beside an output that lists its unreadable images."""
    return output[:-4] + ".errors.txt"


@contextlib.contextmanager
def atomic_file(outdir: str, rel: str, mode: str = "wb"):
    """Open OUTDIR/rel to be written as a whole or not at all: the data goes to a
    temporary file in OUTDIR's temporary folder, renamed into place when complete."""
    final = os.path.join(outdir, *rel.split("/"))
    os.makedirs(os.path.dirname(final), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(rel) + ".",
                               dir=os.path.join(outdir, TMPDIR))
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8",
                                                            "newline": ""})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())  # the rename must not outrun the data on a crash
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(outdir: str, rel: str, data: bytes) -> None:
    with atomic_file(outdir, rel) as fh:
        fh.write(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def write_errors(outdir: str, output: str, failures: list[Failure]) -> None:
    text = "".join(f"{f.name}: {f.reason}\n" for f in failures)
    write_atomic(outdir, errors_path(output), text.encode("utf-8"))


def is_whole(path: str, shape: tuple) -> bool:
    """Is `path` a float32 .npy of `shape` with all of its data?"""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            got, _, dtype = read(fh)
            size = os.fstat(fh.fileno()).st_size
            expected = fh.tell() + int(np.prod(shape)) * 4
    except (OSError, ValueError, EOFError):
        return False
    return tuple(got) == tuple(shape) and dtype == np.float32 and size == expected


class OutDir:
    """OUTDIR of one run: `prepare` sorts the shards into done and to do."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def file(self, rel: str) -> str:
        return os.path.join(self.path, *rel.split("/"))

    def _old_manifest(self) -> dict:
        try:
            with open(self.file(MANIFEST), encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return {}
        shards = data.get("shards")
        return shards if isinstance(shards, dict) else {}

    def prepare(self, shards: list[Shard], settings: dict, output_shape: tuple):
        """([shards done], [shards to do]); clears what is stale, then records the plan."""
        try:
            os.makedirs(self.path, exist_ok=True)
            shutil.rmtree(self.file(TMPDIR), ignore_errors=True)  # a killed run's leftovers
            os.makedirs(self.file(TMPDIR))
        except OSError as err:
            raise CnncError(f"cannot write to OUTDIR '{self.path}': {err.strerror}") from None
        recorded = self._old_manifest()
        done, todo = [], []
        for shard in shards:
            ident = shard.identity(settings)
            path = self.file(shard.output)
            if (recorded.get(shard.output) == ident
                    and is_whole(path, (shard.rows, *output_shape))
                    and not os.path.exists(self.file(errors_path(shard.output)))):
                done.append(shard)
                continue
            for stale in (path, self.file(errors_path(shard.output))):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(stale)
            recorded[shard.output] = ident
            todo.append(shard)
        manifest = {"format": FORMAT, "version": 1, "shards": recorded}
        write_atomic(self.path, MANIFEST, json.dumps(manifest, indent=0).encode())
        return done, todo

    def finish(self) -> None:
        shutil.rmtree(self.file(TMPDIR), ignore_errors=True)

    def write_predictions(self, shards: list[Shard], top: int) -> int:
        """predictions.csv from the outputs there are: `file,index,class,score` for the
        `top` classes of every image, best first. Returns the number of images."""
        count = 0
        with atomic_file(self.path, PREDICTIONS, "w") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["file", "index", "class", "score"])
            for shard in shards:
                try:
                    y = np.load(self.file(shard.output), allow_pickle=False)
                except (OSError, ValueError):
                    continue  # failed in this run: reported already
                order = np.argsort(-y, axis=1, kind="stable")[:, :top]
                for (name, index), row, classes in zip(shard.csv_rows(), y, order, strict=True):
                    if np.isnan(row).any():
                        continue  # an unreadable image
                    count += 1
                    writer.writerows([name, index, int(c), str(row[c])] for c in classes)
        return count
