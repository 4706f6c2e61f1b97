"""cnnc predict and cnnc.predict on Dask (LANGUAGE.md §13).

The oracle is the compiled network run in this process (`cnnc.load(m)(x)`); image
preprocessing is redone here with Pillow and numpy, as docs/PREDICT.md states it.
Most runs use one Dask cluster that this module starts itself: a `dask scheduler` and
two `dask worker` processes on 127.0.0.1 (the `--scheduler` path); the interruption
tests start `cnnc predict` with its own LocalCluster in a subprocess.
"""

from __future__ import annotations

import csv
import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("distributed")
PIL = pytest.importorskip("PIL.Image")

import cnnc  # noqa: E402 - after the skips
from cnnc.cli import main  # noqa: E402

SOURCE = ("network n(input: 3x8x8) { conv(4, 3x3) -> relu -> avgpool(global) -> dense(5) "
          "-> softmax }\n")
HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The tiny model's artifact, compiled here first so the workers find a warm cache."""
    path = tmp_path_factory.mktemp("model") / "n.cnnc"
    cnnc.compile_source(SOURCE, seed=1).save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def net(model):
    return cnnc.load(model)


def _spawn(*args, **kw):
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "dask", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


@pytest.fixture(scope="module")
def scheduler(model, tmp_path_factory):
    """The address of a scheduler with two one-thread workers, all on 127.0.0.1."""
    from distributed import Client
    info = tmp_path_factory.mktemp("dask") / "scheduler.json"
    procs = [_spawn("scheduler", "--host", HOST, "--port", "0", "--no-dashboard",
                    "--scheduler-file", str(info))]
    try:
        deadline = time.time() + 60
        while not info.exists() and time.time() < deadline:
            time.sleep(0.1)
        for _ in range(2):
            procs.append(_spawn("worker", "--scheduler-file", str(info), "--host", HOST,
                                "--nthreads", "1", "--no-dashboard"))
        with Client(scheduler_file=str(info), timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
            address = client.scheduler.address
        assert address.startswith(f"tcp://{HOST}:")
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def predict(capsys, scheduler, *argv):
    code = main(["predict", *map(str, argv), "--scheduler", scheduler])
    out, err = capsys.readouterr()
    return code, out, err


def rng(seed=0):
    return np.random.default_rng(seed)


def outputs(outdir) -> dict[str, np.ndarray]:
    return {os.path.relpath(f, outdir): np.load(f)
            for f in glob.glob(os.path.join(outdir, "**", "*.npy"), recursive=True)}


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def expected_csv(entries, top):
    """[file, index, class, score] rows: the `top` best classes of each (name, index, y)."""
    rows = [["file", "index", "class", "score"]]
    for name, index, y in entries:
        for c in sorted(range(len(y)), key=lambda c: -y[c])[:top]:
            rows.append([name, str(index), str(c), y[c]])
    return rows


def assert_csv(got, want):
    assert [r[:3] for r in got] == [r[:3] for r in want]
    np.testing.assert_allclose([float(r[3]) for r in got[1:]], [r[3] for r in want[1:]],
                               rtol=1e-6)


# ---------------------------------------------------------------- arrays
def test_arrays_match_the_network_in_process(capsys, tmp_path, model, net, scheduler):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    a = rng(1).standard_normal((10, 3, 8, 8)).astype(np.float32)   # split: shard 4
    one = rng(2).standard_normal((3, 8, 8))                        # one C×H×W image, float64
    p = rng(3).integers(-3, 3, (3, 3, 8, 8)).astype(np.int16)      # converted to float32
    q = rng(4).standard_normal((2, 3, 8, 8)).astype(np.float32)
    b = rng(5).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.save(data / "a.npy", a)
    np.save(data / "one.npy", one)
    np.savez(data / "z.npz", p=p, q=q)
    np.save(data / "sub" / "b.npy", b)
    (data / "notes.txt").write_text("not an input: passed over")
    out = tmp_path / "out"
    code, stdout, err = predict(capsys, scheduler, model, data, "-o", out, "--shard", 4,
                                "--batch", 3, "--top", 2)
    assert code == 0, err
    got = outputs(out)
    want = {"a.0.npy": net(a[0:4]), "a.1.npy": net(a[4:8]), "a.2.npy": net(a[8:10]),
            "one.npy": net(one[None]), "z.p.npy": net(p), "z.q.npy": net(q),
            "sub/b.npy": net(b)}
    assert sorted(got) == sorted(want)
    for name, y in want.items():
        assert got[name].dtype == np.float32
        np.testing.assert_array_equal(got[name], y, err_msg=name)
    d = str(data)
    entries = ([(f"{d}/a.npy", i, y) for i, y in enumerate(net(a))]
               + [(f"{d}/one.npy", 0, net(one[None])[0])]
               + [(f"{d}/sub/b.npy", 0, net(b)[0])]
               + [(f"{d}/z.npz:p", i, y) for i, y in enumerate(net(p))]
               + [(f"{d}/z.npz:q", i, y) for i, y in enumerate(net(q))])
    assert_csv(read_csv(out / "predictions.csv"), expected_csv(entries, 2))
    assert "17 images in 7 shards" in stdout
    assert sorted(os.listdir(out)) == [".cnnc-predict.json", "a.0.npy", "a.1.npy", "a.2.npy",
                                       "one.npy", "predictions.csv", "sub", "z.p.npy",
                                       "z.q.npy"]


def test_progress_on_a_terminal_only(capsys, tmp_path, model, scheduler):
    from cnnc.predict.model import open_model
    from cnnc.predict.run import predict_files
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.zeros((3, 3, 8, 8), np.float32))
    args = (open_model(model), [str(tmp_path / "a.npy"), str(tmp_path / "b.npy")])
    predict_files(*args, str(tmp_path / "o1"), scheduler=scheduler, progress=True)
    err = capsys.readouterr().err
    assert "\r\033[Kcnnc predict: 1/2 files  3 images  " in err
    assert "\r\033[Kcnnc predict: 2/2 files  6 images  " in err and "images/s" in err
    predict_files(*args, str(tmp_path / "o2"), scheduler=scheduler)  # stderr: not a tty
    assert capsys.readouterr().err == ""


def test_a_file_given_is_named_by_its_name(capsys, tmp_path, model, net, scheduler):
    x = rng(6).standard_normal((2, 3, 8, 8)).astype(np.float32)
    (tmp_path / "deep" / "er").mkdir(parents=True)
    np.save(tmp_path / "deep" / "er" / "x.npy", x)
    code, _, err = predict(capsys, scheduler, model, tmp_path / "deep" / "er" / "x.npy",
                           "-o", tmp_path / "out")
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "x.npy"), net(x))


# ---------------------------------------------------------------- images
def _image(path, pixels):
    PIL.fromarray(pixels).save(path)


def test_images_decoded_resized_and_normalised(capsys, tmp_path, model, net, scheduler):
    data = tmp_path / "photos"
    (data / "cats").mkdir(parents=True)
    pics = {name: rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
            for i, name in enumerate(["b.png", "a.png", "c.png"])}
    for name, px in pics.items():
        _image(data / name, px)
    big = rng(9).integers(0, 256, (20, 12, 3), dtype=np.uint8)     # 12 wide, 20 high
    _image(data / "cats" / "big.jpg", big)
    gray = rng(10).integers(0, 256, (8, 8), dtype=np.uint8)        # decoded to RGB
    _image(data / "cats" / "gray.png", gray)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    out = tmp_path / "out"
    code, _, err = predict(capsys, scheduler, model, data, "-o", out, "--shard", 2,
                           "--mean", "0.5,0.4,0.3", "--std", "0.2,0.25,0.5")
    assert code == 0, err

    def prep(rgb):
        x = rgb.astype(np.float32).transpose(2, 0, 1) / np.float32(255)
        return (x - np.float32(mean)[:, None, None]) / np.float32(std)[:, None, None]

    with PIL.open(data / "cats" / "big.jpg") as img:  # JPEG: compare with its decoding
        resized = np.asarray(img.convert("RGB").resize((8, 8), PIL.Resampling.BILINEAR))
    top = np.stack([prep(pics[n]) for n in ("a.png", "b.png", "c.png")])
    cats = np.stack([prep(resized), prep(np.repeat(gray[:, :, None], 3, axis=2))])
    got = outputs(out)
    assert sorted(got) == ["cats/images.0.npy", "images.0.npy", "images.1.npy"]
    np.testing.assert_allclose(got["images.0.npy"], net(top[:2]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["images.1.npy"], net(top[2:]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["cats/images.0.npy"], net(cats), rtol=1e-5, atol=1e-7)
    names = [f"{data}/{n}" for n in ("a.png", "b.png", "c.png", "cats/big.jpg",
                                     "cats/gray.png")]
    ys = np.concatenate([net(top), net(cats)])
    entries = [(n, 0, y) for n, y in sorted(zip(names, ys, strict=True), key=lambda t: t[0])]
    assert_csv(read_csv(out / "predictions.csv"), expected_csv(entries, 5))


def test_size_resizes_then_centre_crops(capsys, tmp_path, model, net, scheduler):
    px = rng(11).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    _image(tmp_path / "p.png", px)
    code, _, err = predict(capsys, scheduler, model, tmp_path / "p.png", "-o",
                           tmp_path / "out", "--size", "10x12")
    assert code == 0, err
    with PIL.open(tmp_path / "p.png") as img:
        r = np.asarray(img.resize((12, 10), PIL.Resampling.BILINEAR), np.float32)
    x = (r[1:9, 2:10].transpose(2, 0, 1) / np.float32(255))[None]
    np.testing.assert_allclose(np.load(tmp_path / "out" / "images.0.npy"), net(x),
                               rtol=1e-5, atol=1e-7)
    code, _, err = predict(capsys, scheduler, model, tmp_path / "p.png", "-o",
                           tmp_path / "out", "--size", "6x12")
    assert code == 1 and "--size 6x12 is smaller than the network's input 8x8" in err


# ---------------------------------------------------------------- reruns
def _stamps(outdir):
    return {f: (os.stat(f).st_ino, os.stat(f).st_mtime_ns)
            for f in glob.glob(os.path.join(outdir, "*.npy"))}


def test_rerun_rewrites_only_the_deleted_outputs(capsys, tmp_path, model, net, scheduler):
    x = rng(12).standard_normal((9, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    assert predict(capsys, scheduler, model, tmp_path / "x.npy", "-o", out, "--shard", 2)[0] == 0
    before = _stamps(out)
    assert len(before) == 5
    gone = [str(out / "x.1.npy"), str(out / "x.4.npy")]
    for f in gone:
        os.remove(f)
    code, stdout, _ = predict(capsys, scheduler, model, tmp_path / "x.npy", "-o", out,
                              "--shard", 2)
    assert code == 0
    assert "3 images in 2 shards" in stdout and "3 shards were already done" in stdout
    after = _stamps(out)
    assert {f for f in after if after[f] != before[f]} == set(gone)
    for i, f in enumerate(sorted(after, key=lambda f: int(f.split(".")[-2]))):
        np.testing.assert_array_equal(np.load(f), net(x[2 * i: 2 * i + 2]))


def test_another_model_or_changed_input_is_not_taken_as_done(capsys, tmp_path, model,
                                                            scheduler):
    x = rng(13).standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", x)
    other = tmp_path / "other.cnnc"
    cnnc.compile_source(SOURCE, seed=2).save(str(other))  # same shapes, other weights
    out = tmp_path / "out"
    assert predict(capsys, scheduler, model, tmp_path, "-o", out)[0] == 0
    code, stdout, _ = predict(capsys, scheduler, other, tmp_path, "-o", out)
    assert code == 0 and "0 shards were already done" in stdout
    np.testing.assert_array_equal(np.load(out / "x.npy"), cnnc.load(str(other))(x))
    x2 = x * 2
    np.save(tmp_path / "x.npy", x2)
    code, stdout, _ = predict(capsys, scheduler, other, tmp_path, "-o", out)
    assert code == 0 and "4 images in 1 shards" in stdout
    np.testing.assert_array_equal(np.load(out / "x.npy"), cnnc.load(str(other))(x2))


# ---------------------------------------------------------------- unreadable inputs
def test_unreadable_inputs_are_named_and_the_rest_finish(capsys, tmp_path, model, net,
                                                        scheduler):
    data = tmp_path / "data"
    data.mkdir()
    good = rng(14).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.save(data / "good.npy", good)
    (data / "garbage.npy").write_bytes(b"this is no array")
    np.save(data / "short.npy", good)
    with open(data / "short.npy", "r+b") as fh:  # truncated
        fh.truncate(os.path.getsize(data / "short.npy") - 10)
    np.save(data / "wrong.npy", np.zeros((2, 1, 8, 8), np.float32))
    np.savez(data / "evil.npz", **{"../../escape": good})  # would write outside OUTDIR
    pics = [rng(15 + i).integers(0, 256, (8, 8, 3), dtype=np.uint8) for i in range(2)]
    _image(data / "p0.png", pics[0])
    (data / "p1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    _image(data / "p2.png", pics[1])
    out = tmp_path / "out"
    code, _, err = predict(capsys, scheduler, model, data, "-o", out)
    assert code == 1
    assert "5 inputs could not be read" in err
    for name in ("evil.npz", "garbage.npy", "short.npy", "wrong.npy", "p1.png"):
        assert f"  {data}/{name}: " in err
    assert "is truncated" in err and "has shape 2x1x8x8" in err
    assert "array named '../../escape', which cannot name an output file" in err
    assert not glob.glob(str(tmp_path / "**" / "escape*"), recursive=True)
    assert "Traceback" not in err
    np.testing.assert_array_equal(np.load(out / "good.npy"), net(good))
    y = np.load(out / "images.0.npy")  # rows in sorted order; the broken one is NaN
    x = np.stack([p.astype(np.float32).transpose(2, 0, 1) / np.float32(255) for p in pics])
    np.testing.assert_allclose(y[[0, 2]], net(x), rtol=1e-5, atol=1e-7)
    assert np.isnan(y[1]).all()
    assert (out / "images.0.errors.txt").read_text().startswith(f"{data}/p1.png: ")
    files = {r[0] for r in read_csv(out / "predictions.csv")[1:]}
    assert files == {f"{data}/good.npy", f"{data}/p0.png", f"{data}/p2.png"}
    # once the image is fixed, a rerun redoes its shard (not done while it had errors)
    _image(data / "p1.png", pics[0])
    for name in ("evil.npz", "garbage.npy", "short.npy", "wrong.npy"):
        os.remove(data / name)
    code, stdout, err = predict(capsys, scheduler, model, data, "-o", out)
    assert code == 0, err
    assert "3 images in 1 shards" in stdout
    assert not (out / "images.0.errors.txt").exists()
    np.testing.assert_allclose(np.load(out / "images.0.npy"), net(x[[0, 0, 1]]),
                               rtol=1e-5, atol=1e-7)


def test_mistakes_before_running(capsys, tmp_path, model, scheduler):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    code, _, err = predict(capsys, scheduler, model, tmp_path / "x.npy", tmp_path / "d",
                           "-o", tmp_path / "out")
    assert code == 1 and "would both be written to x.npy in OUTDIR" in err
    code, _, err = predict(capsys, scheduler, model, tmp_path / "nothing", "-o",
                           tmp_path / "out")
    assert code == 1 and "nothing: error: no such file or folder" in err
    (tmp_path / "w.txt").write_text("")
    code, _, err = predict(capsys, scheduler, model, tmp_path / "w.txt", "-o", tmp_path / "o")
    assert code == 1 and "not an input cnnc predict reads" in err


@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "must be at least 1, got 0"),
    (["--size", "8by8"], "'8by8' is not a size HxW"),
    (["--mean", "0.1,0.2"], "give one number or three"),
    (["--std", "0"], "a standard deviation cannot be zero"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not allowed with argument"),
])
def test_usage_errors(capsys, tmp_path, argv, message):
    code = main(["predict", "m.cnnc", "x.npy", "-o", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code != 0 and message in err and "Traceback" not in err


def test_without_the_extras_it_says_how_to_install_them(capsys, tmp_path, model,
                                                       monkeypatch):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    monkeypatch.setitem(sys.modules, "distributed", None)
    code = main(["predict", model, str(tmp_path / "x.npy"), "-o", str(tmp_path / "o")])
    assert code == 1
    assert "pip install 'cnnc[predict]'" in capsys.readouterr().err


def test_the_other_commands_need_no_extras(tmp_path):
    code = ("import sys\nfor m in ('dask', 'distributed', 'PIL'): sys.modules[m] = None\n"
            "import cnnc\nfrom cnnc.cli import main\n"
            f"sys.exit(main(['run', {str(tmp_path / 'n.cnn')!r}, '--batch', '2']))\n")
    (tmp_path / "n.cnn").write_text(SOURCE)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    assert "output 2x5" in r.stdout


# ---------------------------------------------------------------- the dask.array API
def test_predict_maps_a_dask_array(model, net, scheduler):
    import dask.array as da
    from distributed import Client
    x = rng(16).standard_normal((11, 3, 8, 8)).astype(np.float32)
    dx = da.from_array(x, chunks=(4, 2, 8, 5))  # chunks across C and W are joined
    y = cnnc.predict(model, dx, batch=3)
    assert isinstance(y, da.Array) and y.shape == (11, 5) and y.chunks == ((4, 4, 3), (5,))
    with Client(scheduler) as client:
        got = client.compute(y).result()
    np.testing.assert_array_equal(got, net(x))
    graph = dict(y.__dask_graph__())
    assert sum(isinstance(v, bytes) or "cnnc-model" in str(k) for k, v in graph.items()) == 1


def test_predict_takes_a_network_and_keeps_spatial_outputs():
    import dask.array as da
    net = cnnc.compile_source("network c(input: 2x6x6) { conv(3, 3x3) -> relu }")
    x = rng(17).standard_normal((5, 2, 6, 6)).astype(np.float32)
    y = cnnc.predict(net, da.from_array(x, chunks=2))
    assert y.shape == (5, 3, 4, 4)
    np.testing.assert_array_equal(y.compute(scheduler="threads"), net(x))
    with pytest.raises(cnnc.CnncInputError, match=r"expects \(N, 2, 6, 6\)"):
        cnnc.predict(net, da.zeros((5, 3, 6, 6)))


# ---------------------------------------------------------------- interruptions
@pytest.fixture
def sigint_taken():
    """SIGINT raises KeyboardInterrupt here and is not ignored in children, as in a
    terminal, even when the suite runs as a background job (which starts with SIGINT
    ignored, and passes that on through exec to the cnnc it starts)."""
    handler = signal.getsignal(signal.SIGINT)
    if handler is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if handler is signal.SIG_IGN:
        signal.signal(signal.SIGINT, handler)


def test_ctrl_c_silences_logging_until_the_run_has_unwound(sigint_taken):
    """cnnc.predict.run._quiet_on_interrupt: SIGINT turns logging off, then interrupts;
    leaving the block puts back the SIGINT handler and the logging level it found."""
    import logging

    from cnnc.predict.run import _quiet_on_interrupt
    handler = signal.getsignal(signal.SIGINT)
    logging.disable(logging.NOTSET)
    seen = []
    with pytest.raises(KeyboardInterrupt), _quiet_on_interrupt():
        assert logging.root.manager.disable == logging.NOTSET
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the signal is taken before this ends
        finally:  # the teardown's place: logging is off
            seen.append(logging.root.manager.disable)
    assert seen == [logging.CRITICAL]
    assert logging.root.manager.disable == logging.NOTSET
    assert signal.getsignal(signal.SIGINT) is handler
    with _quiet_on_interrupt():  # leaving without an interrupt changes nothing either
        pass
    assert signal.getsignal(signal.SIGINT) is handler


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_an_interrupted_run_leaves_no_partial_file_and_resumes(capsys, tmp_path, model, net,
                                                                scheduler, sig, sigint_taken):
    x = rng(18).standard_normal((300, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "cnnc.cli", "predict", model, str(tmp_path / "x.npy"), "-o",
            str(out), "--shard", "1", "--workers", "2"]
    proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not glob.glob(str(out / "x.*.npy")) and time.time() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # Ctrl-C: the terminal signals the whole group
        else:
            proc.kill()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Traceback" not in err and "interrupted" in err, err
        assert not (out / ".cnnc-predict-tmp").exists()
    else:
        assert proc.returncode == -signal.SIGKILL, err
    done = glob.glob(str(out / "x.*.npy"))
    assert 0 < len(done) < 300, err
    for f in done:  # every file there is whole
        i = int(f.split(".")[-2])
        np.testing.assert_array_equal(np.load(f), net(x[i: i + 1]))
    assert not (out / "predictions.csv").exists()
    code, _, err = predict(capsys, scheduler, model, tmp_path / "x.npy", "-o", out,
                           "--shard", 1)
    assert code == 0, err
    got = np.concatenate([np.load(out / f"x.{i}.npy") for i in range(300)])
    np.testing.assert_array_equal(got, net(x))
    assert not (out / ".cnnc-predict-tmp").exists()


def test_a_worker_that_dies_mid_run_costs_a_retry_only(tmp_path, model, net, scheduler):
    import threading

    from distributed import Client

    from cnnc.predict.model import open_model
    from cnnc.predict.run import Options, predict_files
    x = rng(19).standard_normal((200, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    result = {}

    def run():
        result["summary"] = predict_files(open_model(model), [str(tmp_path / "x.npy")],
                                          str(out), Options(shard=1), scheduler=scheduler,
                                          progress=False)

    with Client(scheduler) as client:
        before = client.run(os.getpid)
        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.time() + 120
        while not glob.glob(str(out / "x.*.npy")) and time.time() < deadline:
            time.sleep(0.01)
        victim = min(before)
        os.kill(before[victim], signal.SIGKILL)  # its nanny starts a new one
        thread.join(timeout=300)
        assert victim not in client.run(os.getpid)
    summary = result["summary"]
    assert summary.failures == [] and summary.images == 200
    got = np.concatenate([np.load(out / f"x.{i}.npy") for i in range(200)])
    np.testing.assert_array_equal(got, net(x))


_FAULTS = """
import resource, sys
import numpy as np
import cnnc
from cnnc.predict import worker
net = cnnc.compile_source("network f(input: 16x32x32) { conv(64, 3x3, padding=same) }")
if sys.argv[1] == "keep":
    assert worker.keep_heap()
x = np.ones((4, 16, 32, 32), np.float32)
net(x)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    net(x)  # a 1 MiB output copy per call, and the conv's scratch
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_a_worker_keeps_its_heap_despite_the_nannys_malloc_setting(tmp_path):
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc
    map every large buffer afresh: each call faults its pages in again. keep_heap (run
    when a worker loads its first model) sets the thresholds back to glibc's own."""
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536", "NUMBA_NUM_THREADS": "1"}

    def faults(mode):
        run = subprocess.run([sys.executable, "-c", _FAULTS, mode], env=env, check=True,
                             capture_output=True, text=True, timeout=600)
        return int(run.stdout.split()[-1])

    nannys, kept = faults("nanny"), faults("keep")
    # 20 calls that each fault in >= 1 MiB afresh: >= 5,000 faults; kept: a few
    assert nannys > 20 * 256 and kept < nannys / 4, (nannys, kept)


def test_keep_heap_leaves_a_plain_process_alone(monkeypatch):
    """Nothing to undo without Dask's setting, and a value of the user's own is kept."""
    from cnnc.predict import worker
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert worker.keep_heap() is False
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    assert worker.keep_heap() is False


def test_the_local_cluster_slows_dasks_housekeeping_in_its_workers():
    """The workers of cnnc's LocalCluster run with LOCAL_CONFIG (no task profiler, no
    GIL polling, ...): the nanny hands the client's configuration on to them."""
    import dask.config
    from distributed import Client

    from cnnc.predict.run import LOCAL_CONFIG, local_cluster

    def seen():
        return {k: dask.config.get(k) for k in LOCAL_CONFIG}

    with local_cluster(1) as cluster, Client(cluster) as client:
        (got,) = client.run(seen).values()
    assert got == LOCAL_CONFIG
    assert seen() != LOCAL_CONFIG  # and only there: this process keeps its own
