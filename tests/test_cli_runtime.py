"""The commands that run networks: compile, run, verify, bench, and the optimised dumps."""

import pathlib

import numpy as np

import cnnc
from cnnc.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
LENET = ROOT / "examples" / "lenet5.cnn"


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_compile_then_run_the_artifact(capsys, tmp_path):
    artifact = tmp_path / "lenet.cnnc"
    code, out, _ = run_cli(capsys, "compile", LENET, "-o", artifact, "--seed", 3)
    assert code == 0
    assert f"wrote {artifact}" in out and "input 1x28x28, output 10" in out
    assert "61,706 parameters" in out and "compiled in" in out
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, _ = run_cli(capsys, "run", artifact, "--input", tmp_path / "x.npy", "-o",
                           tmp_path / "y.npy")
    assert code == 0
    assert "output 4x10" in out and out.count("sample ") == 4
    y = np.load(tmp_path / "y.npy")
    expected = cnnc.compile_file(str(LENET), seed=3)(x)
    np.testing.assert_array_equal(y, expected)
    top = int(np.argmax(expected[0]))
    assert f"sample 0: {top}:" in out


def test_run_source_with_weights_and_single_image(capsys, tmp_path):
    net = cnnc.compile_file(str(LENET))
    weights = {k: np.full(v.shape, 0.01, np.float32) for k, v in net.parameters().items()}
    np.savez(tmp_path / "w.npz", **weights)
    np.save(tmp_path / "x.npy", np.ones((1, 28, 28), np.float32))
    code, out, _ = run_cli(capsys, "run", LENET, "--weights", tmp_path / "w.npz", "--input",
                           tmp_path / "x.npy")
    assert code == 0 and "output 1x10" in out


def test_run_reports_bad_inputs(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((2, 3, 28, 28), np.float32))
    code, _, err = run_cli(capsys, "run", LENET, "--input", tmp_path / "x.npy")
    assert code == 1
    assert "input has shape (2, 3, 28, 28), but network 'lenet5' expects (N, 1, 28, 28)" in err
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    code, _, err = run_cli(capsys, "run", LENET, "--input", tmp_path / "o.npy")
    assert code == 1 and "the input holds pickled objects" in err
    np.savez(tmp_path / "x.npz", x=np.ones((1, 1, 28, 28), np.float32))
    code, _, err = run_cli(capsys, "run", LENET, "--input", tmp_path / "x.npz")
    assert code == 1 and "not a .npy array but an .npz archive" in err
    code, _, err = run_cli(capsys, "run", LENET, "--seed", -3)
    assert code == 2 and "non-negative integer" in err
    code, _, err = run_cli(capsys, "run", LENET, "--batch", 0)
    assert code == 2 and "argument --batch: must be at least 1, got 0" in err


def test_verify_names_every_pass(capsys):
    code, out, _ = run_cli(capsys, "verify", ROOT / "examples" / "cifar_inception.cnn")
    assert code == 0
    for name in ("drop-identity", "fold-padding", "fold-batchnorm", "fuse-epilogue",
                 "fuse-1x1-chains", "fuse-1x1-siblings", "fuse-residual", "winograd",
                 "inplace-concat", "plan-memory"):
        assert f"after {name}" in out
    assert "every pass keeps the result" in out


def test_dump_optimized_and_dump_dir(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "dump", LENET, "--stage", "optimized")
    assert code == 0
    assert "tanh" not in [line.split(" = ")[1].split("(")[0] for line in out.splitlines()[1:]]
    assert "activation=tanh" in out
    code, _, _ = run_cli(capsys, "compile", LENET, "-o", tmp_path / "l.cnnc", "--dump-dir",
                         tmp_path / "passes")
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "passes").iterdir())
    assert names[:3] == ["00-parsed.dot", "00-parsed.json", "00-parsed.txt"]
    assert "10-plan-memory.txt" in names


def test_opt_levels_and_disabled_passes(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "dump", LENET, "--stage", "optimized", "-O0")
    assert code == 0 and " = tanh(" in out
    code, out, _ = run_cli(capsys, "dump", LENET, "--stage", "optimized", "--disable-pass",
                           "fuse-epilogue")
    assert code == 0 and " = tanh(" in out
    code, _, err = run_cli(capsys, "dump", LENET, "--disable-pass", "fuse-epilog", "--stage",
                           "optimized")
    assert code == 1 and "did you mean 'fuse-epilogue'" in err


def test_summary_reports_peak_memory(capsys):
    code, out, _ = run_cli(capsys, "summary", ROOT / "examples" / "googlenet.cnn")
    assert code == 0
    assert ("peak activation memory per image (-O2): 18.30 MiB before planning, "
            "6.12 MiB after") in out


def test_bench_with_profile(capsys):
    code, out, _ = run_cli(capsys, "bench", LENET, "--batch", 2, "--threads", 1, "--repeat", 3,
                           "--profile")
    assert code == 0
    assert "lenet5: batch 2, 1 threads" in out and "GFLOP/s" in out
    assert "conv1" in out and "share" in out
