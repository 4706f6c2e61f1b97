"""Parameters: seeded initialisation, checking user weights, binding them to graph nodes."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping

import networkx as nx
import numpy as np

from .errors import CnncValueError, CnncWeightError
from .graph import parameter_shapes


def init_parameters(graph: nx.DiGraph, seed: int = 0) -> dict[str, np.ndarray]:
    """§6 defaults: He-normal conv and dense weights, zero biases, identity batch norm.

    One generator seeded with `seed` draws the weights in source order, so the same
    seed always gives the same network.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CnncValueError(f"the seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for key, shape in parameter_shapes(graph).items():
        kind = key.rsplit(".", 1)[1]
        if kind == "weight" and len(shape) in (2, 4):  # conv or dense
            fan_in = math.prod(shape[1:])
            params[key] = (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)
        elif kind in ("weight", "running_var"):  # batchnorm scale and variance
            params[key] = np.ones(shape, np.float32)
        else:
            params[key] = np.zeros(shape, np.float32)
    return params


def read_weights_file(path: str) -> dict[str, np.ndarray]:
    """Arrays of an .npz file, read without pickle."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except FileNotFoundError:
        raise CnncWeightError("no such weights file", file=path) from None
    except OSError as err:
        raise CnncWeightError(f"cannot read weights: {err.strerror}", file=path) from None
    if magic != b"PK\x03\x04":  # numpy would take any other file for a pickle
        raise CnncWeightError("not an .npz archive (write one with numpy.savez)", file=path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "pickle" in reason.lower():
            reason = "it holds pickled objects, which cnnc never loads"
        raise CnncWeightError(f"cannot read weights: {reason}", file=path) from None


def check_weights(graph: nx.DiGraph, weights, base: Mapping[str, np.ndarray]
                  ) -> dict[str, np.ndarray]:
    """`base` updated with user weights (a mapping or an .npz path), all checked.

    A key that names no parameter, an array of the wrong shape, or one that is not
    real numbers is an error naming both the key and what the network needs.
    """
    if isinstance(weights, (str, bytes)) or hasattr(weights, "__fspath__"):
        weights = read_weights_file(str(weights))
    elif not isinstance(weights, Mapping):
        raise CnncWeightError(
            f"weights must be a mapping of names to arrays or an .npz path, got "
            f"{type(weights).__name__}")
    shapes = parameter_shapes(graph)
    result = dict(base)
    for key, value in weights.items():
        if key not in shapes:
            from .frontend import did_you_mean
            raise CnncWeightError(
                f"weight '{key}' names no parameter of network '{graph.graph['name']}'"
                f"{did_you_mean(str(key), shapes)}")
        try:
            array = np.asarray(value)
        except Exception:  # noqa: BLE001 - arbitrary user objects
            array = None
        if array is None or array.dtype.kind not in "biuf":
            kind = "none" if array is None else str(array.dtype)
            raise CnncWeightError(
                f"weight '{key}' must be an array of real numbers, got {kind}")
        if array.shape != tuple(shapes[key]):
            raise CnncWeightError(
                f"weight '{key}' has shape {tuple(array.shape)}, but the network needs "
                f"{tuple(shapes[key])}")
        result[key] = np.ascontiguousarray(array, dtype=np.float32)
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
