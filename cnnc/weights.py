"""Parameters: seeded initialisation, checking user weights, binding them to graph nodes."""

from __future__ import annotations

import difflib
import math
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import networkx as nx
import numpy as np

from .errors import CnncValueError, CnncWeightError
from .graph import parameter_shapes, parameters
from .ops import HE_NORMAL, ONES


def init_parameters(graph: nx.DiGraph, seed: int = 0) -> dict[str, np.ndarray]:
    """§6 defaults, as each parameter's spec says: He-normal conv and dense weights, zero
    biases, identity batch norm.

    One generator seeded with `seed` draws the weights in source order, so the same
    seed always gives the same network.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CnncValueError(f"the seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for key, (shape, param) in parameters(graph).items():
        if param.init == HE_NORMAL:
            fan_in = math.prod(shape[1:])
            params[key] = (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)
        elif param.init == ONES:
            params[key] = np.ones(shape, np.float32)
        else:
            params[key] = np.zeros(shape, np.float32)
    return params


# PyTorch's BatchNorm keeps a step counter beside its statistics; it is no parameter
IGNORED_SUFFIX = "num_batches_tracked"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip


def npy_header(fp) -> tuple[tuple, np.dtype]:
    """(shape, dtype) from the .npy header at the start of `fp`, leaving `fp` at the data.
    Raises ValueError for what is not a .npy header (numpy checks it, without eval)."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    else:  # 3.0 only adds UTF-8 field names of structured dtypes: never real numbers
        raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
    return tuple(shape), dtype


@dataclass(frozen=True)
class _Entry:
    """A supplied weight as far as it has been looked at: its shape and dtype, and how
    to get its numbers (an .npz member is read only once its header has been checked)."""
    shape: tuple
    dtype: np.dtype
    read: Callable[[], np.ndarray]


def _mapping_entries(weights: Mapping) -> dict[str, _Entry]:
    entries = {}
    for key, value in weights.items():
        try:
            array = np.asarray(value)
        except Exception:  # noqa: BLE001 - arbitrary user objects
            array = np.empty(0, object)
        entries[str(key)] = _Entry(array.shape, array.dtype, lambda a=array: a)
    return entries


class _Npz:
    """An .npz archive opened with zipfile, its members' .npy headers read on demand.

    numpy.load would read a member's data as soon as it is asked for it, allocating
    whatever its header claims; here the header is read first, so the shape can be
    checked against the network's before a byte of data is read.
    """

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, "rb") as fh:
                magic = fh.read(4)
            if magic not in _ZIP_MAGICS:  # numpy would take any other file for a pickle
                raise CnncWeightError("not an .npz archive (write one with numpy.savez)",
                                      file=path)
            self._zip = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise CnncWeightError("no such weights file", file=path) from None
        except IsADirectoryError:
            raise CnncWeightError("is a directory, not a weights file", file=path) from None
        except OSError as err:
            raise CnncWeightError(f"cannot read weights: {err.strerror}", file=path) from None
        except (zipfile.BadZipFile, EOFError, ValueError) as err:
            raise self._error(f"cannot read weights: {err}") from None

    def __enter__(self) -> _Npz:
        return self

    def __exit__(self, *exc) -> None:
        self._zip.close()

    def _error(self, message: str) -> CnncWeightError:
        return CnncWeightError(message, file=self.path)

    def members(self) -> dict[str, str]:
        """{key: member name}, keys as numpy.load names them (`NAME.npy` holds `NAME`)."""
        return {m.removesuffix(".npy"): m for m in self._zip.namelist()}

    def entry(self, key: str, member: str) -> _Entry:
        """The member's header, read and checked for a real dtype; no data yet."""
        try:
            with self._zip.open(member) as fp:
                shape, dtype = npy_header(fp)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, SyntaxError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise self._error(f"weight '{key}' is not a readable .npy array: {reason}") from None
        if dtype.hasobject:
            raise self._error(f"weight '{key}' holds pickled objects, which cnnc never loads")
        return _Entry(shape, dtype, lambda: self._read(key, member))

    def _read(self, key: str, member: str) -> np.ndarray:
        try:
            with self._zip.open(member) as fp:
                return np.lib.format.read_array(fp, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise self._error(f"cannot read weight '{key}': {reason}") from None


def _names(keys) -> str:
    return ", ".join(f"'{k}'" for k in keys)


def _suggestion(key: str, candidates: list[str]) -> str:
    """' (did you mean ...?)' for a weight name, or ''. A candidate must be close in its
    layer part and in its parameter part, each on its own: `bn1.wieght` is not offered
    `conv1.weight` however alike the whole strings look."""
    from .frontend import did_you_mean

    def close(a: str, b: str) -> bool:
        return difflib.SequenceMatcher(None, a, b).ratio() >= 0.6

    layer, _, param = key.rpartition(".")
    fitting = [c for c in candidates
               if close(layer, c.rpartition(".")[0]) and close(param, c.rpartition(".")[2])]
    return did_you_mean(key, fitting)


def _mismatch(graph: nx.DiGraph, supplied, needed, strict: bool) -> str | None:
    """Why the supplied names do not fit the network (unknown ones, left-out ones), or None.

    A "did you mean" is offered for an unknown name only among the names nobody supplied.
    """
    network = graph.graph["name"]
    unknown = [k for k in supplied if k not in needed]
    given = set(supplied)
    unsupplied = [k for k in needed if k not in given]
    missing = unsupplied if strict else []
    problems = []
    if len(unknown) == 1:
        problems.append(f"weight '{unknown[0]}' names no parameter of network '{network}'"
                        f"{_suggestion(unknown[0], unsupplied)}")
    elif unknown:
        listed = ", ".join(f"'{k}'{_suggestion(k, unsupplied)}" for k in unknown)
        problems.append(f"{len(unknown)} weights name no parameter of network '{network}': "
                        f"{listed}")
    if missing:
        problems.append(
            f"the weights leave out {len(missing)} of the {len(needed)} parameters of network "
            f"'{network}': {_names(missing)} (strict=False or --allow-missing keeps seeded "
            f"values for them)")
    return "; ".join(problems) or None


def check_weights(graph: nx.DiGraph, weights, base: Mapping[str, np.ndarray], *,
                  strict: bool = True) -> dict[str, np.ndarray]:
    """`base` updated with user weights (a mapping or an .npz path), all checked.

    Every key must name a parameter (all unknown ones are listed at once; keys ending in
    `num_batches_tracked` are ignored), and with `strict` every parameter must be
    supplied (all missing ones are listed). An array of the wrong shape, or one that is
    not real numbers, is an error naming both the key and what the network needs. From
    an .npz file, each array's header is checked before its data is read, and the data
    of an unknown key is never read.
    """
    if isinstance(weights, (str, bytes)) or hasattr(weights, "__fspath__"):
        path = os.fsdecode(weights)
        with _Npz(path) as npz:
            members = npz.members()
            return _checked(graph, members, lambda key: npz.entry(key, members[key]),
                            base, strict, path)
    if not isinstance(weights, Mapping):
        raise CnncWeightError(
            f"weights must be a mapping of names to arrays or an .npz path, got "
            f"{type(weights).__name__}")
    entries = _mapping_entries(weights)
    return _checked(graph, entries, entries.__getitem__, base, strict, None)


def _checked(graph, keys, entry_of, base, strict, path) -> dict[str, np.ndarray]:
    shapes = {k: tuple(v) for k, v in parameter_shapes(graph).items()}
    supplied = [k for k in keys if not k.endswith(IGNORED_SUFFIX)]
    problem = _mismatch(graph, supplied, shapes, strict)
    if problem:
        raise CnncWeightError(problem, file=path)
    entries = {key: entry_of(key) for key in supplied}  # every header before any data
    for key, entry in entries.items():
        if entry.dtype.kind not in "biuf":
            raise CnncWeightError(
                f"weight '{key}' must be an array of real numbers, got {entry.dtype}", file=path)
        if entry.shape != shapes[key]:
            raise CnncWeightError(
                f"weight '{key}' has shape {entry.shape}, but the network needs "
                f"{shapes[key]}", file=path)
    result = dict(base)
    for key, entry in entries.items():
        result[key] = np.ascontiguousarray(entry.read(), dtype=np.float32)
    return result


def bind_parameters(graph: nx.DiGraph, params: Mapping[str, np.ndarray]) -> nx.DiGraph:
    """A copy of `graph` whose parameterised nodes carry their arrays in `params`."""
    by_layer: dict[str, dict[str, np.ndarray]] = {}
    for key, value in params.items():
        layer, param = key.rsplit(".", 1)
        by_layer.setdefault(layer, {})[param] = value
    bound = graph.copy()
    for _, data in bound.nodes(data=True):
        data["attrs"] = dict(data["attrs"])
        if data["name"] in by_layer:
            data["params"] = by_layer[data["name"]]
    return bound
