"""The .cnnc artifact: hostile files are refused in bounded memory, saving is safe for the
file it replaces, and each parameter is stored once, uncompressed.

Hostile archives are built by hand with zipfile (and, for the zip bombs, a raw deflate
stream written with struct) from the artifact of one tiny network.
"""

import io
import json
import os
import stat
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib

import numpy as np
import pytest

import cnnc
from cnnc import artifact

TINY = "network n(input: 1x6x6) { conv(2, 3x3) -> relu -> dense(3) }"
X = np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32)
BOMB_BYTES = 2500 << 20  # what each bomb member inflates to: 2.5 GB of zeros


@pytest.fixture(scope="module")
def tiny():
    return cnnc.compile_source(TINY, seed=1, progress=False)


@pytest.fixture
def saved(tiny, tmp_path):
    path = tmp_path / "m.cnnc"
    tiny.save(str(path))
    return path


def members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def write_zip(path, contents: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in contents.items():
            zf.writestr(name, data)


def edit_manifest(path, edit) -> None:
    contents = members(path)
    manifest = json.loads(contents["manifest.json"])
    edit(manifest)
    contents["manifest.json"] = json.dumps(manifest).encode()
    write_zip(path, contents)


def refuse(path, match=None):
    with pytest.raises(cnnc.CnncArtifactError, match=match) as info:
        cnnc.load(str(path))
    return info.value


# ---------------------------------------------------------------- zip bombs
@pytest.fixture(scope="module")
def bomb_stream():
    """(raw deflate data, crc32) of BOMB_BYTES zeros: ~2.5 MB that inflate to 2.5 GB.

    A full flush makes each 1 MiB block independent of the ones before, so one
    compressed block repeated is a valid stream."""
    chunk = bytes(1 << 20)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(BOMB_BYTES >> 20):
        crc = zlib.crc32(chunk, crc)
    return block * (BOMB_BYTES >> 20) + comp.flush(), crc


def write_raw_zip(path, entries: list[tuple[str, bytes, int, int, int]]) -> None:
    """A zip of (name, data, method, crc, declared size) entries, data written as given."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, method, crc, size in entries:
        offset = out.tell()
        raw = name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc,
                              len(data), size, len(raw), 0) + raw + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0,
                                  0x21, crc, len(data), size, len(raw), 0, 0, 0, 0, 0,
                                  offset) + raw)
    count, start = len(entries), out.tell()
    out.write(central.getvalue())
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count,
                          len(central.getvalue()), start, 0))
    path.write_bytes(out.getvalue())


def bomb_entries(path, targets, stream, crc, declared=BOMB_BYTES):
    """The entries of `path` with the members named in `targets` made bombs."""
    entries = []
    for name, data in members(path).items():
        if name in targets:
            entries.append((name, stream, zipfile.ZIP_DEFLATED, crc, declared))
        else:
            entries.append((name, data, zipfile.ZIP_STORED, zlib.crc32(data), len(data)))
    return entries


LOAD_IN_BOUNDED_MEMORY = textwrap.dedent("""
    import resource, sys
    import cnnc, cnnc.compiler  # Numba's mappings and memory are not the load's
    # leave room for 1 GB more than what the imports mapped: a load that inflates a
    # bomb fails with MemoryError here instead of taking the machine's memory
    with open("/proc/self/status") as fh:
        vm = next(int(l.split()[1]) for l in fh if l.startswith("VmSize:")) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        cnnc.load(sys.argv[1])
        print("loaded")
    except cnnc.CnncArtifactError as err:
        print("refused:", err)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
""")


@pytest.mark.parametrize("target", ["manifest", "weights", "lying-manifest"])
def test_zip_bombs_are_refused_in_bounded_memory(saved, bomb_stream, target):
    """A ~2.5 MB archive whose manifest or weights inflate to 2.5 GB is refused before it
    is inflated; a member that declares a small size but inflates to more is refused
    after reading no more than it declares."""
    stream, crc = bomb_stream
    names = list(members(saved))
    if target == "weights":
        entries = bomb_entries(saved, [n for n in names if n != "manifest.json"], stream, crc)
    elif target == "manifest":
        entries = bomb_entries(saved, ["manifest.json"], stream, crc)
    else:
        entries = bomb_entries(saved, ["manifest.json"], stream, crc, declared=1000)
    write_raw_zip(saved, entries)
    assert saved.stat().st_size < 12 << 20  # a few MB, each bomb inflating to 2.5 GB
    proc = subprocess.run([sys.executable, "-c", LOAD_IN_BOUNDED_MEMORY, str(saved)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    verdict, peak_mb = proc.stdout.splitlines()
    assert verdict.startswith("refused:")
    assert int(peak_mb) < 200  # what the load added to the peak; each bomb is 2.5 GB


def test_member_limits_are_checked_before_inflating(saved, monkeypatch):
    """A manifest member over the documented cap is refused from its declared size alone:
    nothing is read from it."""
    contents = members(saved)
    contents["manifest.json"] += b" " * (artifact.MAX_MANIFEST_BYTES + 1)
    write_zip(saved, contents)
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, name, *a, **k: opened.append(name) or real_open(
                            self, name, *a, **k))
    refuse(saved, "manifest")
    assert opened == []


# ---------------------------------------------------------------- hostile manifests
def test_deeply_nested_manifest_is_an_artifact_error(saved):
    contents = members(saved)
    contents["manifest.json"] = b"[" * 100_000 + b"]" * 100_000
    write_zip(saved, contents)
    refuse(saved)
    nested = b'{"format": "cnnc-artifact", "version": %d, "parsed_graph": ' % (
        artifact.VERSION) + b"[" * 100_000 + b"]" * 100_000 + b"}"
    contents["manifest.json"] = nested
    write_zip(saved, contents)
    refuse(saved)


def _node(manifest, op):
    return next(n for n in manifest["parsed_graph"]["nodes"] if n["op"] == op)


def _input_shape(m):  # a consistent edit: the graph's input shape and its input node
    m["parsed_graph"]["graph"]["input_shape"] = [1, 8, 8]
    _node(m, "input")["shape"] = [1, 8, 8]


EDITS = {
    "input-shape": _input_shape,
    "input-node-shape": lambda m: _node(m, "input").update(shape=[1, 8, 8]),
    "input-op": lambda m: _node(m, "input").update(op="relu"),
    "input-with-inputs": lambda m: _node(m, "input").update(inputs=["input"]),
    "missing-attribute": lambda m: _node(m, "conv")["attrs"].pop("kernel"),
    "missing-key": lambda m: _node(m, "conv").pop("attrs"),
    "depth-string": lambda m: _node(m, "conv")["attrs"].update(depth="2"),
    "kernel-floats": lambda m: _node(m, "conv")["attrs"].update(kernel=[3.0, 3.0]),
    "kernel-nested": lambda m: _node(m, "conv")["attrs"].update(kernel=[[3], [3]]),
    "bias-int": lambda m: _node(m, "conv")["attrs"].update(bias=1),
    "conv-shape": lambda m: _node(m, "conv").update(shape=[2, 5, 5]),
    "shape-string": lambda m: _node(m, "conv").update(shape="2x4x4"),
    "unknown-op": lambda m: _node(m, "relu").update(op="gelu"),
    "unknown-input": lambda m: _node(m, "relu").update(inputs=["nowhere"]),
    "extra-attribute": lambda m: _node(m, "relu")["attrs"].update(x=1),
    "nodes-not-a-list": lambda m: m["parsed_graph"].update(nodes={"a": 1}),
    "output-unknown": lambda m: m["parsed_graph"]["graph"].update(output="nowhere"),
    "edges": lambda m: m["parsed_graph"].update(edges=[]),
    "opt-level": lambda m: m.update(opt_level="2"),
    "disabled-pass": lambda m: m.update(disabled_passes=["no-such-pass"]),
    "optimized-graph": lambda m: m["optimized_graph"]["nodes"].pop(),
    "graph-not-a-dict": lambda m: m.update(parsed_graph=[]),
    "manifest-not-a-dict": lambda m: (m.clear()),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_edited_manifest_is_an_artifact_error(saved, edit):
    edit_manifest(saved, EDITS[edit])
    refuse(saved)


def test_manifest_not_utf8_or_not_json(saved):
    contents = members(saved)
    for data in (b"\xff\xfe{", b"{]", b"null"):
        contents["manifest.json"] = data
        write_zip(saved, contents)
        refuse(saved)


# ---------------------------------------------------------------- hostile weights
def _npy(array, **kwargs) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, **kwargs)
    return buf.getvalue()


WEIGHT = "params/conv1.weight.npy"
WEIGHT_EDITS = {
    "float64": lambda a: _npy(a.astype(np.float64)),
    "big-endian": lambda a: _npy(a.astype(">f4")),
    "shape": lambda a: _npy(a.reshape(2, 9)),
    "fortran": lambda a: _npy(np.asfortranarray(a)),
    "object": lambda a: _npy(np.array([{"a": 1}], dtype=object), allow_pickle=True),
    "truncated": lambda a: _npy(a)[:-4],
    "longer": lambda a: _npy(a) + b"\0\0\0\0",
    "header-huge": lambda a: b"\x93NUMPY\x02\x00" + struct.pack("<I", 1 << 30) + b"{",
    "not-npy": lambda a: b"hello",
}


@pytest.mark.parametrize("edit", list(WEIGHT_EDITS))
def test_inconsistent_weight_member_is_an_artifact_error(tiny, saved, edit):
    contents = members(saved)
    assert WEIGHT in contents
    contents[WEIGHT] = WEIGHT_EDITS[edit](tiny.parameters()["conv1.weight"])
    write_zip(saved, contents)
    refuse(saved)


@pytest.mark.parametrize("change", ["missing", "extra", "duplicate"])
def test_members_must_be_exactly_the_parameters(saved, change):
    contents = members(saved)
    if change == "missing":
        del contents[WEIGHT]
        write_zip(saved, contents)
    elif change == "extra":
        contents["params/other.weight.npy"] = contents[WEIGHT]
        write_zip(saved, contents)
    else:
        write_zip(saved, contents)
        with pytest.warns(UserWarning), zipfile.ZipFile(saved, "a") as zf:
            zf.writestr(WEIGHT, _npy(np.zeros((2, 1, 3, 3), np.float32)))
    refuse(saved)


def test_old_versions_get_a_clean_error(saved):
    """A version 1 artifact (manifest + weights.npz) names its version."""
    contents = members(saved)
    manifest = json.loads(contents["manifest.json"])
    manifest["version"] = 1
    buf = io.BytesIO()
    np.savez(buf, **{"src/conv1.weight": np.zeros((2, 1, 3, 3), np.float32)})
    write_zip(saved, {"manifest.json": json.dumps(manifest).encode(),
                      "weights.npz": buf.getvalue()})
    err = refuse(saved, "version 1 is not supported")
    assert "recompile" in str(err)


def test_loading_a_fifo_does_not_block(tmp_path):
    fifo = tmp_path / "m.cnnc"
    os.mkfifo(fifo)
    code = ("import sys, cnnc\ntry:\n cnnc.load(sys.argv[1])\n"
            "except cnnc.CnncArtifactError as e:\n print(e)")
    proc = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True,
                          text=True, timeout=60)
    assert "not a regular file" in proc.stdout, proc.stderr[-2000:]


# ---------------------------------------------------------------- saving
def test_saving_over_a_device_is_refused(tiny, tmp_path):
    device = tmp_path / "null"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    with pytest.raises(cnnc.CnncError, match="not a regular file"):
        tiny.save(str(device))
    assert stat.S_ISCHR(os.stat(device).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_saving_over_dev_null_is_refused(tiny, monkeypatch):
    """/dev/null itself; os.replace is guarded so that a regression cannot replace it."""
    replaced = []

    def guard(src, dst, *args, **kwargs):
        replaced.append(dst)
        raise OSError(1, "Operation not permitted")
    monkeypatch.setattr(os, "replace", guard)
    with pytest.raises(cnnc.CnncError, match="not a regular file"):
        tiny.save("/dev/null")
    assert replaced == []
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_saving_over_a_fifo_or_directory_is_refused(tiny, tmp_path, kind):
    path = tmp_path / "m.cnnc"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    with pytest.raises(cnnc.CnncError, match="not a regular file"):
        tiny.save(str(path))  # a save that opened the FIFO would block here
    mode = os.lstat(path).st_mode
    assert stat.S_ISFIFO(mode) if kind == "fifo" else stat.S_ISDIR(mode)
    assert [p.name for p in tmp_path.iterdir()] == ["m.cnnc"]


def test_saving_keeps_the_mode_of_an_existing_file(tiny, tmp_path):
    path = tmp_path / "m.cnnc"
    path.write_bytes(b"old")
    os.chmod(path, 0o600)
    tiny.save(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    np.testing.assert_array_equal(cnnc.load(str(path))(X), tiny(X))


def test_saving_through_a_symlink_writes_its_target(tiny, tmp_path):
    """Documented choice: a symlink to a regular file is followed, the link is kept."""
    target = tmp_path / "real.cnnc"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    link = tmp_path / "link.cnnc"
    link.symlink_to(target)
    tiny.save(str(link))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    np.testing.assert_array_equal(cnnc.load(str(target))(X), tiny(X))


@pytest.mark.parametrize("failure", ["interrupt-while-serialising", "error-while-serialising",
                                     "read-only-directory", "rename"])
def test_a_failed_save_leaves_no_temporary_file(tiny, saved, monkeypatch, failure):
    before = saved.read_bytes()
    real_open, real_write = os.open, np.lib.format.write_array

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    def fail_serialising(fp, array, *args, **kwargs):
        real_write(fp, array, *args, **kwargs)  # part of the archive is written
        raise ValueError("serialising failed")

    def read_only(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:  # root ignores permissions: refuse like a read-only mount
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    def no_rename(*args, **kwargs):
        raise OSError(28, "No space left on device")
    if failure == "interrupt-while-serialising":
        monkeypatch.setattr(np.lib.format, "write_array", interrupt)
        expected = KeyboardInterrupt
    elif failure == "error-while-serialising":
        monkeypatch.setattr(np.lib.format, "write_array", fail_serialising)
        expected = ValueError
    elif failure == "read-only-directory":
        monkeypatch.setattr(os, "open", read_only)
        expected = cnnc.CnncError
    else:
        monkeypatch.setattr(os, "replace", no_rename)
        expected = cnnc.CnncError
    with pytest.raises(expected):
        tiny.save(str(saved))
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == ["m.cnnc"]


# ---------------------------------------------------------------- size and fidelity
def test_each_parameter_is_stored_once_uncompressed(tmp_path):
    net = cnnc.compile_source("network n(input: 1x6x6) { conv(2, 3x3) -> relu -> dense(4000) }",
                              progress=False)
    path = tmp_path / "m.cnnc"
    net.save(str(path))
    params = net.parameters()
    assert sorted(members(path)) == sorted(
        ["manifest.json", *(f"params/{name}.npy" for name in params)])
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("manifest.json").compress_type == zipfile.ZIP_DEFLATED
        assert all(zf.getinfo(f"params/{name}.npy").compress_type == zipfile.ZIP_STORED
                   for name in params)
        for name, value in params.items():
            with zf.open(f"params/{name}.npy") as fh:
                stored = np.lib.format.read_array(fh, allow_pickle=False)
            assert stored.dtype == np.dtype("<f4")
            np.testing.assert_array_equal(stored, value)
    raw = sum(v.nbytes for v in params.values())  # 128,000 floats of random weights
    assert raw < path.stat().st_size < 1.05 * raw


def test_a_constant_network_is_stored_so_that_it_loads(tmp_path):
    """All-zero weights (which would deflate ~1000:1, past the load limit on the
    compression ratio) are stored and load."""
    text = "network n(input: 1x6x6) { conv(2, 3x3) -> relu -> dense(200000) }"
    net = cnnc.compile_source(text, progress=False)
    net.load_weights({k: np.zeros_like(v) for k, v in net.parameters().items()})
    path = tmp_path / "m.cnnc"
    net.save(str(path))
    raw = sum(v.nbytes for v in net.parameters().values())
    assert raw > artifact.WEIGHTS_ALLOWANCE and path.stat().st_size > raw  # stored, not deflated
    np.testing.assert_array_equal(cnnc.load(str(path))(X), net(X))


BN = """network n(input: 3x10x10) {
  conv(8, 3x3, padding=same) -> batchnorm -> relu -> conv(4, 1x1) -> maxpool(2)
  -> flatten -> dense(5) -> softmax
}"""


def test_save_load_is_bit_identical_in_a_fresh_process(tmp_path):
    """The optimised parameters are re-derived on load (batch norm folded into the conv,
    1x1 siblings concatenated): in another process, with another hash seed, the loaded
    network gives the saved network's outputs bit for bit."""
    rng = np.random.default_rng(3)
    net = cnnc.compile_file("examples/cifar_inception.cnn", seed=4, progress=False)
    bn = cnnc.compile_source(BN, progress=False)
    bn.load_weights({k: rng.uniform(0.5, 1.5, v.shape) for k, v in bn.parameters().items()})
    code = textwrap.dedent("""
        import sys, numpy as np, cnnc
        for path in sys.argv[1:]:
            x = np.load(path + ".x.npy")
            np.save(path + ".y.npy", cnnc.load(path)(x))
    """)
    paths = []
    for model, shape in ((net, (3, 3, 32, 32)), (bn, (2, 3, 10, 10))):
        path = str(tmp_path / f"m{len(paths)}.cnnc")
        model.save(path)
        np.save(path + ".x.npy", rng.standard_normal(shape).astype(np.float32))
        paths.append(path)
    env = dict(os.environ, PYTHONHASHSEED="12345")
    proc = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for model, path in zip((net, bn), paths, strict=True):
        np.testing.assert_array_equal(np.load(path + ".y.npy"), model(np.load(path + ".x.npy")))
    loaded = cnnc.load(paths[1])
    assert [d["op"] for _, d in loaded.graph.nodes(data=True)] == [
        d["op"] for _, d in bn.graph.nodes(data=True)]
    assert "batchnorm" not in [d["op"] for _, d in loaded.graph.nodes(data=True)]
