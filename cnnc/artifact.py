"""The .cnnc artifact: a zip holding `manifest.json` and `weights.npz`. No pickle.

manifest.json: format name and version, the source hash, optimisation settings,
the parsed graph and the optimised graph as networkx node-link data. weights.npz:
the source-level parameters (`src/NAME`) and the optimised graph's node parameters
(`opt/NODE/PARAM`). Loading rebuilds both graphs from data and never runs code
from the file; a corrupt or truncated file is a CnncArtifactError.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile

import networkx as nx
import numpy as np

from .errors import CnncArtifactError, CnncError
from .graph import parameter_shapes
from .passes.verify import verify_graph
from .report import graph_to_json_data
from .weights import check_weights

FORMAT = "cnnc-artifact"
VERSION = 1


def save(net, path: str) -> None:
    """Write `net` to `path` atomically (a temporary file, then a rename)."""
    arrays = {f"src/{k}": v for k, v in net._params.items()}
    for node_id, data in net.graph.nodes(data=True):
        for param, value in data.get("params", {}).items():
            arrays[f"opt/{node_id}/{param}"] = np.ascontiguousarray(value, np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    weights = buf.getvalue()
    manifest = {
        "format": FORMAT, "version": VERSION, "source_hash": net.source_hash,
        "opt_level": net.opt_level, "disabled_passes": list(net.disabled_passes),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "parameter_order": list(net._params),
        "parsed_graph": graph_to_json_data(net._source_graph),
        "optimized_graph": graph_to_json_data(net.graph),
    }
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".cnnc-", suffix=".tmp", dir=directory)
    except OSError as err:
        raise CnncError(f"cannot write '{path}': {err.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("manifest.json", json.dumps(manifest))
                zf.writestr("weights.npz", weights, compress_type=zipfile.ZIP_STORED)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a saved model is not
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise CnncError(f"cannot write '{path}': {err.strerror}") from None
        raise


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def graph_from_json_data(data: dict) -> nx.DiGraph:
    """Inverse of report.graph_to_json_data: lists back to the tuples the schema uses."""
    if "edges" not in data and "links" in data:  # written by networkx before 3.4's key
        data = {**data, "edges": data["links"]}
    graph = nx.node_link_graph(data, directed=True, multigraph=False, edges="edges")
    for key, value in list(graph.graph.items()):
        graph.graph[key] = _tuples(value)
    for _, d in graph.nodes(data=True):
        d["shape"] = _tuples(d["shape"])
        d["pos"] = _tuples(d["pos"])
        d["inputs"] = list(d["inputs"])
        attrs = {k: _tuples(v) for k, v in d["attrs"].items()}
        if isinstance(attrs.get("inplace"), tuple):
            attrs["inplace"] = list(attrs["inplace"])
        d["attrs"] = attrs
    return graph


def load(path: str):
    from .runtime import Network
    try:
        with zipfile.ZipFile(path) as zf:
            manifest = json.loads(zf.read("manifest.json").decode("utf-8"))
            weights = zf.read("weights.npz")
    except FileNotFoundError:
        raise CnncArtifactError("no such file", file=path) from None
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, EOFError) as err:
        raise CnncArtifactError(f"not a valid .cnnc file ({err})", file=path) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CnncArtifactError("not a .cnnc artifact", file=path)
    if manifest.get("version") != VERSION:
        raise CnncArtifactError(
            f"artifact version {manifest.get('version')} is not supported (this cnnc reads "
            f"version {VERSION})", file=path)
    if hashlib.sha256(weights).hexdigest() != manifest.get("weights_sha256"):
        raise CnncArtifactError("the weights are corrupt (checksum mismatch)", file=path)
    try:
        with np.load(io.BytesIO(weights), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        source = graph_from_json_data(manifest["parsed_graph"])
        optimized = graph_from_json_data(manifest["optimized_graph"])
        params = {k: arrays[f"src/{k}"] for k in manifest["parameter_order"]}
        for key, value in arrays.items():
            if key.startswith("opt/"):
                node_id, param = key[4:].rsplit("/", 1)
                optimized.nodes[node_id].setdefault("params", {})[param] = value
        # the file is data from outside: check it before any kernel touches memory
        source_shapes = parameter_shapes(source)
        if list(params) != list(source_shapes):
            raise CnncArtifactError("its parameters do not match its graph", file=path)
        check_weights(source, params, {})
        verify_graph(optimized)
        return Network(source, params, opt_level=int(manifest["opt_level"]),
                       disabled_passes=tuple(manifest["disabled_passes"]),
                       source_hash=str(manifest["source_hash"]), optimized=optimized)
    except CnncArtifactError:
        raise
    except Exception as err:  # noqa: BLE001 - any malformed content is the file's fault
        raise CnncArtifactError(f"malformed .cnnc content ({type(err).__name__}: {err})",
                                file=path) from None
