"""What `cnnc predict` reads: finding the inputs, cutting them into shards, reading a shard.

The client plans (it lists folders and reads only .npy headers); the workers read the
data of their shard. Both see the same paths, so paths are made absolute here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np

from ..errors import CnncError, CnncInputError

ARRAY_SUFFIXES = (".npy", ".npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_SAFE_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Failure:
    """An input that could not be read: its name as the user gave it, and why."""
    name: str
    reason: str


@dataclass(frozen=True)
class Shard:
    """One unit of work: up to `--shard` images, written to one output file.

    kind "array": rows start..stop of an array in `source` (an .npy, or member `key`
    of an .npz); `single` when the array is one C×H×W image. kind "images": `files`,
    decoded and stacked in this order. `names` are the inputs as the user gave them
    (for messages and predictions.csv); `stamp` identifies the inputs' contents
    (size and modification time) so that a changed input is not taken as done.
    """
    output: str                     # relative to OUTDIR, '/'-separated
    kind: str                       # "array" or "images"
    names: tuple[str, ...]
    source: str = ""
    key: str | None = None
    start: int = 0
    stop: int = 0
    single: bool = False
    files: tuple[str, ...] = ()
    stamp: tuple = field(default=(), compare=False)

    @property
    def rows(self) -> int:
        return len(self.files) if self.kind == "images" else self.stop - self.start

    def identity(self, settings: dict) -> str:
        """A digest of everything that decides this shard's output bytes."""
        spec = [self.output, self.kind, self.names, self.source, self.key, self.start,
                self.stop, self.single, self.files, self.stamp, settings]
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def csv_rows(self):
        """(file, index) of each output row, for predictions.csv."""
        if self.kind == "images":
            return [(name, 0) for name in self.names]
        return [(self.names[0], i) for i in range(self.start, self.stop)]


@dataclass
class Plan:
    shards: list[Shard]
    failures: list[Failure]         # inputs refused while planning (bad header, shape)


# ------------------------------------------------------------------ finding the inputs
def _walk(folder: str, skip: str | None) -> list[str]:
    """Every file under `folder`, sorted by relative path (a/b/c as ("a", "b", "c"));
    hidden names and `skip` (OUTDIR, when it lies inside the folder) are left out."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")
                   and os.path.abspath(os.path.join(root, d)) != skip]
        found += [os.path.join(root, f) for f in files if not f.startswith(".")]
    return sorted(found, key=lambda p: os.path.relpath(p, folder).split(os.sep))


def _is_input(path: str) -> bool:
    return path.lower().endswith(ARRAY_SUFFIXES + IMAGE_SUFFIXES)


def find_inputs(data: list[str], outdir: str) -> list[tuple[str, str, str]]:
    """(absolute path, name as given, relative output name) of every input file.

    A folder's files are named by their path relative to the folder, a file given by
    its own name; a folder's files of other kinds are passed over, a file given of
    another kind is an error.
    """
    skip = os.path.abspath(outdir)
    found = []
    for item in data:
        if os.path.isdir(item):
            for path in _walk(item, skip):
                if _is_input(path):
                    rel = os.path.relpath(path, item).replace(os.sep, "/")
                    found.append((os.path.abspath(path), path, rel))
        elif os.path.exists(item):
            if not _is_input(item):
                raise CnncInputError("not an input cnnc predict reads (.npy, .npz, .png, "
                                     ".jpg, .jpeg, or a folder of these)", file=item)
            found.append((os.path.abspath(item), item, os.path.basename(item)))
        else:
            raise CnncInputError("no such file or folder", file=item)
    return found


# ------------------------------------------------------------------ reading array headers
def _header(fh, size: int, name: str) -> tuple[tuple, np.dtype]:
    """Shape and dtype from an .npy header, checked against the bytes there are."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ValueError(f"holds {dtype} values, not real numbers")
    if fh.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > size:
        raise ValueError("is truncated")
    return tuple(shape), dtype


def array_headers(path: str) -> list[tuple[str | None, tuple]]:
    """[(npz member or None, shape)] of an .npy or .npz file, reading headers only."""
    if path.lower().endswith(".npy"):
        with open(path, "rb") as fh:
            return [(None, _header(fh, os.fstat(fh.fileno()).st_size, path)[0])]
    out = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.filename.endswith(".npy"):
                with zf.open(info) as fh:
                    out.append((info.filename[:-4], _header(fh, info.file_size, path)[0]))
    if not out:
        raise ValueError("holds no arrays")
    return out


def _rows(shape: tuple, input_shape: tuple) -> tuple[int, bool]:
    """(number of images, is one C×H×W image) of an array of `shape`."""
    if shape == input_shape:
        return 1, True
    if len(shape) == 4 and shape[1:] == input_shape and shape[0] >= 1:
        return shape[0], False
    want = "x".join(map(str, input_shape))
    raise ValueError(f"has shape {'x'.join(map(str, shape))}; the network takes one image "
                     f"{want} or a batch Nx{want} with N >= 1")


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


# ------------------------------------------------------------------ cutting into shards
def _split(n: int, shard: int) -> list[tuple[int, int]]:
    return [(i, min(i + shard, n)) for i in range(0, n, shard)]


def _array_shards(path: str, name: str, rel: str, input_shape: tuple, shard: int):
    stem = rel[:-4]
    stamp = _stamp(path)
    for key, shape in array_headers(path):
        if key is not None and not _SAFE_KEY.fullmatch(key):  # it becomes a file name
            raise ValueError(f"holds an array named {key!r}, which cannot name an output "
                             "file")
        n, single = _rows(shape, input_shape)
        base = stem if key is None else f"{stem}.{key}"
        shown = name if key is None else f"{name}:{key}"
        pieces = _split(n, shard)
        for i, (start, stop) in enumerate(pieces):
            output = f"{base}.npy" if len(pieces) == 1 else f"{base}.{i}.npy"
            yield Shard(output, "array", (shown,), source=path, key=key, start=start,
                        stop=stop, single=single, stamp=stamp)


def _image_shards(images: list[tuple[str, str, str]], shard: int):
    """Images grouped by the folder they mirror to, `shard` at a time in sorted order."""
    groups: dict[str, list] = {}
    for path, name, rel in images:
        folder, _, base = rel.rpartition("/")
        groups.setdefault(folder, []).append((base, path, name))
    for folder in sorted(groups):
        members = sorted(groups[folder])
        prefix = f"{folder}/" if folder else ""
        for i, (start, stop) in enumerate(_split(len(members), shard)):
            chunk = members[start:stop]
            yield Shard(f"{prefix}images.{i}.npy", "images", tuple(m[2] for m in chunk),
                        files=tuple(m[1] for m in chunk),
                        stamp=tuple(_stamp(m[1]) for m in chunk))


def plan_shards(data: list[str], outdir: str, input_shape: tuple, shard: int) -> Plan:
    """Find the inputs and cut them into shards; an unreadable array is a Failure."""
    found = find_inputs(data, outdir)
    shards: list[Shard] = []
    failures: list[Failure] = []
    images = []
    for path, name, rel in found:
        if path.lower().endswith(IMAGE_SUFFIXES):
            images.append((path, name, rel))
            continue
        try:
            shards.extend(_array_shards(path, name, rel, input_shape, shard))
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            failures.append(Failure(name, reason_of(err)))
    shards.extend(_image_shards(images, shard))
    _check_unique(shards)
    return Plan(shards, failures)


def _check_unique(shards: list[Shard]):
    seen: dict[str, Shard] = {}
    for s in shards:
        if s.output in seen:
            raise CnncError(f"'{seen[s.output].names[0]}' and '{s.names[0]}' would both be "
                            f"written to {s.output} in OUTDIR; predict them separately")
        seen[s.output] = s


def reason_of(err: BaseException) -> str:
    """A one-line reason for a Failure."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err).splitlines()[0] if str(err) else type(err).__name__


# ------------------------------------------------------------------ reading a shard
def read_array(shard: Shard) -> np.ndarray:
    """The shard's rows as an (n, C, H, W) array, not yet float32; of an .npy, a view of
    the memory-mapped file (an .npz member has to be read whole)."""
    if shard.key is None:
        array = np.load(shard.source, mmap_mode="r", allow_pickle=False)
    else:
        with np.load(shard.source, allow_pickle=False) as npz:
            array = npz[shard.key]
    if shard.single:
        return np.asarray(array)[None]
    return array[shard.start: shard.stop]


@dataclass(frozen=True)
class ImageSettings:
    """How images become network inputs: resized to `size` (H, W) with Pillow's bilinear
    filter, centre-cropped to the network's H×W, scaled to [0, 1], normalised."""
    size: tuple[int, int]
    crop: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def read_image(path: str, settings: ImageSettings) -> np.ndarray:
    """One image file as a float32 C×H×W array (RGB)."""
    from PIL import Image
    with Image.open(path) as img:
        img = img.convert("RGB")
        h, w = settings.size
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BILINEAR)
        pixels = np.asarray(img, dtype=np.float32)
    ch, cw = settings.crop
    top, left = (h - ch) // 2, (w - cw) // 2
    pixels = pixels[top: top + ch, left: left + cw].transpose(2, 0, 1) / np.float32(255)
    mean = np.asarray(settings.mean, np.float32)[:, None, None]
    std = np.asarray(settings.std, np.float32)[:, None, None]
    return (pixels - mean) / std


def read_images(shard: Shard, settings: ImageSettings, input_shape: tuple, start: int,
                stop: int):
    """(images start..stop of the shard, with a NaN row for each unreadable one,
    [Failure])."""
    files = shard.files[start:stop]
    out = np.full((len(files), *input_shape), np.nan, np.float32)
    failures = []
    for i, (path, name) in enumerate(zip(files, shard.names[start:stop], strict=True)):
        try:
            out[i] = read_image(path, settings)
        except Exception as err:  # noqa: BLE001 - Pillow raises many kinds for bad files
            failures.append(Failure(name, f"cannot decode the image: {reason_of(err)}"))
    return out, failures


__all__ = ["Failure", "ImageSettings", "Plan", "Shard", "plan_shards", "read_array",
           "read_images", "reason_of"]
