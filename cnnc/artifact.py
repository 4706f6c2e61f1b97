"""The .cnnc artifact: a zip of `manifest.json` and one `.npy` member per parameter. No pickle.

Layout (VERSION 3; 2 deflated the parameters and had no pool `ceil_mode`):
  manifest.json        format, version, source hash, optimisation settings, and the parsed
                       and optimised graphs as networkx node-link data (no weights)
  params/NAME.npy      each source-level parameter (§6 names), little-endian float32,
                       stored once, uncompressed (float weights deflate by ~1.1:1,
                       and deflating GoogLeNet's 28 MB took longer than the rest of a
                       cached compile)
The optimised graph's parameters (folded batch norms, concatenated 1x1 siblings) are not
stored: load re-runs the deterministic optimiser on the parsed graph and its parameters
(50 ms for GoogLeNet) and requires the result to equal the stored optimised graph.

Loading treats the file as hostile and refuses, with CnncArtifactError, before it
inflates anything large: the manifest's declared size is capped (MAX_MANIFEST_BYTES);
the parsed graph is rebuilt node by node through the front end's own argument and shape
checks and must come out exactly as stored; only then does it say which members must
exist and their exact sizes, checked (with the compression ratio) from the zip's
directory; each member's .npy header must give the shape and dtype the graph needs
before its data is read, in chunks, never past its declared size.
"""

from __future__ import annotations

import io
import json
import math
import os
import secrets
import stat
import zipfile
from dataclasses import dataclass

import networkx as nx
import numpy as np

from .errors import CnncArtifactError, CnncError
from .graph import parameter_shapes
from .layers import LAYERS, bind_arguments, infer_shape
from .ops import BRANCHING_OPS
from .passes import LEVELS, PASSES, optimize
from .report import graph_to_json_data
from .weights import bind_parameters

FORMAT = "cnnc-artifact"
VERSION = 3
MANIFEST = "manifest.json"
# GoogLeNet's manifest is 87 KB; 16 MiB is ~200 times that, and the worst JSON of that
# size (`[[],[],...]`) still parses into a few hundred MB of Python objects, not GBs.
MAX_MANIFEST_BYTES = 16 << 20
# Trained float32 weights deflate by ~1.1:1 and pruned ones by a few times; a zip bomb by
# ~1000:1. Parameters may take MAX_WEIGHTS_RATIO bytes per byte of file, plus
# WEIGHTS_ALLOWANCE for small nets of constants. cnnc itself stores parameters
# uncompressed, so every file cnnc writes, cnnc reads; a deflated member is accepted.
MAX_WEIGHTS_RATIO = 100
WEIGHTS_ALLOWANCE = 16 << 20
MAX_NPY_HEADER = 4096  # ours are 118 bytes: a dict with a shape of at most four sizes
NPY_DTYPE = np.dtype("<f4")
CHUNK = 1 << 20
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same network saves to the same bytes


@dataclass(frozen=True)
class Artifact:
    """What a .cnnc file holds: plain data, from which `compiler.load` builds a Network."""

    source_graph: nx.DiGraph  # the parsed graph
    params: dict[str, np.ndarray]  # by source-level name (§6)
    optimized: nx.DiGraph  # with parameters bound (load re-derives it from the two above)
    source_hash: str
    opt_level: int
    disabled_passes: tuple[str, ...]


def member_name(param: str) -> str:
    return f"params/{param}.npy"


def weights_fit(param_bytes: int, file_size: int) -> bool:
    """Whether parameters of `param_bytes` may come from a file of `file_size` bytes."""
    return param_bytes <= MAX_WEIGHTS_RATIO * file_size + WEIGHTS_ALLOWANCE


# ---------------------------------------------------------------- saving
def save(saved: Artifact, path: str) -> None:
    """Write `saved` to `path` atomically: a temporary file beside it, then a rename.

    An existing `path` must be a regular file (or a symlink to one, which is followed:
    its target is replaced and the link kept); its mode is kept. Any failure, also an
    interrupt, removes the temporary file and leaves `path` as it was.
    """
    target, existing = _save_target(path)
    params = {k: np.ascontiguousarray(v, NPY_DTYPE) for k, v in saved.params.items()}
    manifest = json.dumps({
        "format": FORMAT, "version": VERSION, "source_hash": saved.source_hash,
        "opt_level": saved.opt_level, "disabled_passes": list(saved.disabled_passes),
        "parsed_graph": graph_to_json_data(saved.source_graph),
        "optimized_graph": graph_to_json_data(saved.optimized),
    }).encode("utf-8")
    try:
        fd, tmp = _create_temp(os.path.dirname(target))
    except OSError as err:
        raise CnncError(f"cannot write '{path}': {err.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            if existing is not None:
                _copy_owner_and_mode(fh.fileno(), existing)
            _write_archive(fh, manifest, params)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError):
            raise CnncError(f"cannot write '{path}': {err.strerror}") from None
        raise
    _sync_directory(os.path.dirname(target))


def _save_target(path: str) -> tuple[str, os.stat_result | None]:
    """The file to replace (symlinks resolved) and its status, if it exists."""
    target = os.path.realpath(path)
    try:
        status = os.stat(target)
    except FileNotFoundError:
        return target, None
    except OSError as err:
        raise CnncError(f"cannot write '{path}': {err.strerror}") from None
    if not stat.S_ISREG(status.st_mode):  # a device, FIFO, socket or directory
        raise CnncError(f"cannot write '{path}': it exists and is not a regular file")
    return target, status


def _create_temp(directory: str) -> tuple[int, str]:
    """A new file `.cnnc-*.tmp` in `directory`. Mode 0666 lets the umask decide, as for
    any new file (mkstemp would make it private)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(directory, f".cnnc-{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def _copy_owner_and_mode(fd: int, existing: os.stat_result) -> None:
    if (existing.st_uid, existing.st_gid) != (os.geteuid(), os.getegid()):
        try:
            os.fchown(fd, existing.st_uid, existing.st_gid)
        except PermissionError:
            pass  # only root may give a file away; the file becomes ours, as with cp
    os.fchmod(fd, stat.S_IMODE(existing.st_mode))  # after chown, which clears set-id bits


def _sync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_archive(fh, manifest: bytes, params: dict[str, np.ndarray]) -> None:
    """The manifest deflated, the parameters stored (so always within `weights_fit`)."""
    with zipfile.ZipFile(fh, "w") as zf:
        _add_member(zf, MANIFEST, zipfile.ZIP_DEFLATED,
                    lambda out: out.write(manifest), len(manifest))
        for name, array in params.items():
            _add_member(zf, member_name(name), zipfile.ZIP_STORED,
                        lambda out, a=array: np.lib.format.write_array(
                            out, a, allow_pickle=False), array.nbytes)
    fh.flush()


def _add_member(zf: zipfile.ZipFile, name: str, compression: int, write, size: int) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.compress_type = compression
    info.external_attr = 0o644 << 16
    with zf.open(info, "w", force_zip64=size > (1 << 30)) as out:
        write(out)


# ---------------------------------------------------------------- loading
def load(path: str) -> Artifact:
    """What the file at `path` holds; any fault of the file is a CnncArtifactError."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise CnncArtifactError("no such file", file=path) from None
    except OSError as err:
        raise CnncArtifactError(f"cannot read it: {err.strerror}", file=path) from None
    if not stat.S_ISREG(status.st_mode):  # opening a FIFO would block
        raise CnncArtifactError("not a regular file", file=path)
    try:
        with open(path, "rb") as fh, zipfile.ZipFile(fh) as zf:
            file_size = os.fstat(fh.fileno()).st_size
            infos = _directory(zf)
            manifest = _read_manifest(zf, infos)
            source = parsed_graph_from_json(manifest["parsed_graph"])
            settings = _settings(manifest)
            params = _read_params(zf, infos, parameter_shapes(source), file_size)
    except CnncArtifactError as err:
        err.file = path
        raise
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as err:
        raise CnncArtifactError(f"not a valid .cnnc file ({err})", file=path) from None
    except Exception as err:  # noqa: BLE001 - a check above missed a malformed value
        raise CnncArtifactError(f"malformed .cnnc content ({type(err).__name__}: {err})",
                                file=path) from None
    optimized = _optimize(source, params, settings, manifest["optimized_graph"], path)
    return Artifact(source, params, optimized, **settings)


def _bad(message: str) -> CnncArtifactError:
    return CnncArtifactError(message)


def _directory(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    infos: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        if info.filename in infos:
            raise _bad(f"member '{info.filename}' appears twice")
        if info.flag_bits & 0x1:
            raise _bad(f"member '{info.filename}' is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _bad(f"member '{info.filename}' uses compression method "
                       f"{info.compress_type} (cnnc writes deflate or none)")
        infos[info.filename] = info
    return infos


def _read_bounded(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """A member's bytes, refused if its declared size or what it inflates to passes `limit`."""
    if info.file_size > limit:
        raise _bad(f"member '{info.filename}' declares {info.file_size:,} bytes, more than "
                   f"the {limit:,} allowed")
    with zf.open(info) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise _bad(f"member '{info.filename}' inflates past {limit:,} bytes")
    return data


def _read_manifest(zf: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo]) -> dict:
    if MANIFEST not in infos:
        raise _bad("not a .cnnc artifact (no manifest.json)")
    data = _read_bounded(zf, infos[MANIFEST], MAX_MANIFEST_BYTES)
    try:
        manifest = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise _bad("the manifest is nested too deeply") from None
    except ValueError as err:  # also UnicodeDecodeError
        raise _bad(f"the manifest is not JSON text ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _bad("not a .cnnc artifact")
    version = manifest.get("version")
    if version != VERSION:
        raise _bad(f"artifact version {version!r} is not supported (this cnnc reads version "
                   f"{VERSION}); recompile it from its .cnn source")
    missing = {"source_hash", "opt_level", "disabled_passes", "parsed_graph",
               "optimized_graph"} - set(manifest)
    if missing:
        raise _bad(f"the manifest lacks {', '.join(sorted(missing))}")
    return manifest


def _settings(manifest: dict) -> dict:
    level, disabled, source_hash = (manifest["opt_level"], manifest["disabled_passes"],
                                    manifest["source_hash"])
    if type(level) is not int or level not in LEVELS:
        raise _bad(f"unknown optimisation level {level!r}")
    if not isinstance(disabled, list) or not all(
            isinstance(p, str) and p in PASSES for p in disabled):
        raise _bad(f"disabled passes {disabled!r} are not pass names")
    if not isinstance(source_hash, str):
        raise _bad("the source hash is not a string")
    return {"opt_level": level, "disabled_passes": tuple(disabled),
            "source_hash": source_hash}


def _read_params(zf: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo],
                 shapes: dict[str, tuple], file_size: int) -> dict[str, np.ndarray]:
    """The parameters the graph needs, all checked from the zip directory first."""
    wanted = {member_name(k): k for k in shapes}
    unexpected = sorted(set(infos) - set(wanted) - {MANIFEST})
    missing = sorted(set(wanted) - set(infos))
    if unexpected or missing:
        raise _bad("its members do not match its graph ("
                   + "; ".join(filter(None, [
                       missing and "missing " + ", ".join(missing[:5]),
                       unexpected and "unexpected " + ", ".join(unexpected[:5])])) + ")")
    nbytes = {k: math.prod(shape) * NPY_DTYPE.itemsize for k, shape in shapes.items()}
    total = sum(nbytes.values())
    if not weights_fit(total, file_size):
        raise _bad(f"its graph needs {total:,} bytes of parameters, too many for a file of "
                   f"{file_size:,} bytes (more than {MAX_WEIGHTS_RATIO}:1)")
    for name, key in wanted.items():
        declared = infos[name].file_size
        if not nbytes[key] < declared <= nbytes[key] + 12 + MAX_NPY_HEADER:
            raise _bad(f"member '{name}' declares {declared:,} bytes; parameter '{key}' "
                       f"{shapes[key]} needs {nbytes[key]:,} and a header")
    return {key: _read_param(zf, infos[name], key, shapes[key]) for name, key in wanted.items()}


def _read_exact(stream, n: int, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise _bad(f"{what} is truncated")
    return data


def _read_param(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str,
                shape: tuple) -> np.ndarray:
    """One .npy member: its header must say `shape` and float32 before its data is read."""
    what = f"member '{info.filename}'"
    with zf.open(info) as member:
        header_size = _check_npy_header(member, what, key, shape)
        array = np.empty(shape, NPY_DTYPE)
        if info.file_size != header_size + array.nbytes:
            raise _bad(f"{what} declares {info.file_size:,} bytes, but its header and "
                       f"shape {shape} make {header_size + array.nbytes:,}")
        flat = array.reshape(-1).view(np.uint8)
        for start in range(0, flat.size, CHUNK):
            chunk = _read_exact(member, min(CHUNK, flat.size - start), what)
            flat[start:start + len(chunk)] = np.frombuffer(chunk, np.uint8)
        if member.read(1):
            raise _bad(f"{what} is longer than its header says")
    return array


def _check_npy_header(member, what: str, key: str, shape: tuple) -> int:
    """Read and check an .npy header (versions 1.0 and 2.0); return its size in bytes."""
    magic = _read_exact(member, 8, what)
    if magic[:6] != b"\x93NUMPY" or magic[6:] not in (b"\x01\x00", b"\x02\x00"):
        raise _bad(f"{what} is not an .npy array of version 1.0 or 2.0")
    length_bytes = _read_exact(member, 2 if magic[6] == 1 else 4, what)
    length = int.from_bytes(length_bytes, "little")
    if length > MAX_NPY_HEADER:
        raise _bad(f"{what} has a header of {length:,} bytes")
    header = io.BytesIO(length_bytes + _read_exact(member, length, what))
    read_header = (np.lib.format.read_array_header_1_0 if magic[6] == 1
                   else np.lib.format.read_array_header_2_0)
    try:
        got_shape, fortran, dtype = read_header(header, max_header_size=MAX_NPY_HEADER)
    except ValueError as err:
        raise _bad(f"{what} has a malformed header ({err})") from None
    if tuple(got_shape) != tuple(shape) or fortran or dtype != NPY_DTYPE:
        order = "Fortran-order " if fortran else ""
        raise _bad(f"{what} holds a {order}{dtype} array of shape {tuple(got_shape)}, but "
                   f"parameter '{key}' is float32 of shape {tuple(shape)}")
    return 8 + len(length_bytes) + length


def _optimize(source: nx.DiGraph, params: dict, settings: dict, stored, path: str):
    """The optimised graph re-derived from the parsed one; it must be the one stored."""
    optimized = optimize(bind_parameters(source, params), level=settings["opt_level"],
                         disabled=settings["disabled_passes"])
    derived = json.loads(json.dumps(graph_to_json_data(optimized)))
    try:
        same = _node_link(stored) == _node_link(derived)
    except CnncArtifactError as err:
        err.file = path
        raise
    if not same:
        raise CnncArtifactError(
            "its optimised graph is not the one this cnnc derives from its parsed graph "
            "(edited, or written by another cnnc version); recompile it", file=path)
    return optimized


# ---------------------------------------------------------------- the parsed graph
NODE_KEYS = {"id", "op", "name", "inputs", "shape", "pos", "attrs"}
GRAPH_KEYS = {"name", "input", "output", "input_shape"}


def _node_link(data) -> dict:
    """graph, nodes and edges of node-link data; `links` is networkx's key before 3.4."""
    if not isinstance(data, dict):
        raise _bad("a graph is not an object")
    edges = data.get("edges", data.get("links"))
    if not isinstance(data.get("graph"), dict) or not isinstance(data.get("nodes"), list) \
            or not isinstance(edges, list):
        raise _bad("a graph lacks its graph, nodes or edges")
    if not all(isinstance(e, dict) and isinstance(e.get("source"), str)
               and isinstance(e.get("target"), str) for e in edges):
        raise _bad("a graph has a malformed edge")
    return {"graph": data["graph"], "nodes": data["nodes"],
            "edges": sorted((e["source"], e["target"]) for e in edges)}


def parsed_graph_from_json(data) -> nx.DiGraph:
    """The parsed graph of a manifest, rebuilt node by node through the front end's own
    argument and shape checks. It must come out exactly as stored: the types, the
    derived attributes (`pads`, `in_channels`), every shape and every edge."""
    data = _node_link(data)
    meta = data["graph"]
    if set(meta) != GRAPH_KEYS or meta["input"] != "input" or not isinstance(
            meta["name"], str) or not isinstance(meta["output"], str):
        raise _bad("the parsed graph's attributes are malformed")
    graph = nx.DiGraph()
    graph.graph.update(name=meta["name"], input="input", output=meta["output"],
                       input_shape=_int_tuple(meta["input_shape"], "the input shape", 3))
    for index, node in enumerate(data["nodes"]):
        if not isinstance(node, dict) or set(node) != NODE_KEYS:
            raise _bad(f"node {index} of the parsed graph is malformed")
        _add_parsed_node(graph, node, first=index == 0)
    if meta["output"] not in graph:
        raise _bad(f"the graph output '{meta['output']}' is not a node")
    if sorted(graph.edges) != data["edges"]:
        raise _bad("the parsed graph's edges do not match its nodes' inputs")
    return graph


def _add_parsed_node(graph: nx.DiGraph, node: dict, first: bool) -> None:
    node_id, op, inputs = node["id"], node["op"], node["inputs"]
    if not isinstance(node_id, str) or node_id in graph or node["name"] != node_id:
        raise _bad(f"node id {node_id!r} is malformed or repeated")
    where = f"node '{node_id}'"
    if not isinstance(inputs, list) or not all(isinstance(s, str) and s in graph
                                               for s in inputs):
        raise _bad(f"{where} reads inputs {inputs!r} that come before it in no graph")
    pos = node["pos"]
    if not (isinstance(pos, list) and len(pos) == 3 and isinstance(pos[0], str)
            and all(type(v) is int for v in pos[1:])):
        raise _bad(f"{where} has a malformed position")
    if first:  # the input node, exactly as build_graph makes it
        if (node_id, op, inputs, node["attrs"]) != ("input", "input", [], {}) or \
                _int_tuple(node["shape"], f"{where}'s shape", 3) != graph.graph["input_shape"]:
            raise _bad("the input node does not match the graph's input shape")
        attrs, shape = {}, graph.graph["input_shape"]
    else:
        attrs, shape = _rebuild_layer(graph, where, op, node["attrs"], inputs)
        if not _same(shape, node["shape"]):
            raise _bad(f"{where} has shape {node['shape']!r}, but its inputs give "
                       f"{list(shape)}")
    graph.add_node(node_id, op=op, name=node_id, inputs=list(inputs), shape=shape,
                   pos=tuple(pos), attrs=attrs)
    for src in dict.fromkeys(inputs):
        graph.add_edge(src, node_id)


def _rebuild_layer(graph: nx.DiGraph, where: str, op, stored, inputs: list) -> tuple:
    """(attrs, shape) as the front end makes them from the stored source-level arguments."""
    if not isinstance(stored, dict):
        raise _bad(f"{where} has malformed attributes")
    shapes = [graph.nodes[s]["shape"] for s in inputs]
    if op in BRANCHING_OPS:
        positional, keywords = None, None
        if stored or not inputs:
            raise _bad(f"{where}: a {op} has inputs and no attributes")
    elif op in LAYERS:
        if len(inputs) != 1:
            raise _bad(f"{where}: a {op} reads one input, not {len(inputs)}")
        positional, keywords = _arguments(where, op, stored)
    else:
        raise _bad(f"{where} has an unknown op {op!r}")
    try:
        attrs = {} if positional is None else bind_arguments(op, positional, keywords)
        shape = infer_shape(op, attrs, shapes)
    except CnncError as err:
        raise _bad(f"{where}: {err.message}") from None
    differ = sorted(set(attrs) ^ set(stored)) or [
        k for k, v in attrs.items() if not _same(v, stored[k])]
    if differ:
        raise _bad(f"{where}: its attributes {', '.join(map(repr, differ))} are not what its "
                   f"arguments give")
    return attrs, shape


def _arguments(where: str, op: str, stored: dict) -> tuple[list, dict]:
    """The call that gives `stored`: its source-level arguments, each with no position
    (keywords as the front end passes them: value, value position, keyword position)."""
    values = {k: _scalar_or_ints(v, f"{where}'s attribute '{k}'") for k, v in stored.items()}
    if op in ("maxpool", "avgpool") and values.get("global") is True:
        return [("global", None)], {}
    if op == "pad":
        if not isinstance(values.get("pads"), tuple):
            raise _bad(f"{where} lacks its pads")
        return [(v, None) for v in values["pads"]], {}
    missing = [name for name, _ in LAYERS[op].args if name not in values]
    if missing:
        raise _bad(f"{where} lacks the attribute '{missing[0]}'")
    return [], {name: (values[name], None, None) for name, _ in LAYERS[op].args}


def _scalar_or_ints(value, what: str):
    """A JSON attribute as the front end holds it: a scalar, or a tuple of integers."""
    if isinstance(value, list):
        if not all(type(v) is int for v in value):
            raise _bad(f"{what} is a list of other than integers")
        return tuple(value)
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise _bad(f"{what} is not a scalar or a list of integers")


def _int_tuple(value, what: str, length: int) -> tuple:
    if not (isinstance(value, list) and len(value) == length
            and all(type(v) is int and v > 0 for v in value)):
        raise _bad(f"{what} is not {length} positive integers")
    return tuple(value)


def _same(rebuilt, stored) -> bool:
    """Equal with the same JSON types (`true` is not `1`, `3` is not `3.0`)."""
    if isinstance(rebuilt, tuple):
        return isinstance(stored, list) and len(stored) == len(rebuilt) and all(
            _same(a, b) for a, b in zip(rebuilt, stored, strict=True))
    return type(rebuilt) is type(stored) and rebuilt == stored
