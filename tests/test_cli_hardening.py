"""The command line in a fresh process: usage errors, standard output that cannot be
written, output files, and models or inputs of the wrong kind."""

import os
import pathlib
import stat
import subprocess
import sys

import numpy as np
import pytest

import cnnc
from cnnc.checks import memory_report
from cnnc.cli import main
from cnnc.passes import optimize
from cnnc.report import DUMPERS, summary_text

ROOT = pathlib.Path(__file__).resolve().parents[1]
LENET = str(ROOT / "examples" / "lenet5.cnn")
SMALL = "network small(input: 2x6x5) {\n  c: conv(3, 3x3, padding=same) -> relu\n  dense(4)\n}\n"
# the first bytes of an ONNX model as PyTorch writes it: ir_version 8, producer "pytorch"
ONNX_BYTES = b"\x08\x08\x12\x07pytorch\x1a\x052.13.0:\x00"


def cnnc_cli(*argv, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "cnnc.cli", *map(str, argv)], cwd=ROOT,
                          stderr=subprocess.PIPE, text=True, **kwargs)


def assert_clean(result, status: int, fragment: str):
    """Exit status, one error line that holds `fragment`, and nothing Python says."""
    assert result.returncode == status, result.stderr
    assert fragment in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- usage errors
@pytest.mark.parametrize("argv, fragment", [
    (["frobnicate"], "cnnc: error: argument COMMAND: invalid choice: 'frobnicate'"),
    (["check"], "cnnc check: error: the following arguments are required: model"),
    (["verify", LENET, "--tolerance", "nan"], "argument --tolerance: must be a finite number"),
    (["verify", LENET, "--tolerance", "inf"], "argument --tolerance: must be a finite number"),
    (["verify", LENET, "--tolerance", "-0.5"], "argument --tolerance: must be a finite number"),
    (["verify", LENET, "--batch", "0"], "cnnc verify: error: argument --batch: must be at least 1"),
    (["run", LENET, "--batch", "0"], "cnnc run: error: argument --batch: must be at least 1"),
    (["run", LENET, "--batch", "-3"], "argument --batch: must be at least 1, got -3"),
    (["bench", LENET, "--batch", "0"], "argument --batch: must be at least 1, got 0"),
    (["bench", LENET, "--repeat", "0"], "argument --repeat: must be at least 1, got 0"),
    (["bench", LENET, "--threads", "100000"], "argument --threads: at most"),
    (["run", LENET, "--seed", "-1"], "the seed must be a non-negative integer, got -1"),
    (["run", LENET, "--batch", "two"], "argument --batch: expected an integer, got 'two'"),
])
def test_usage_errors_exit_2_with_one_line(argv, fragment):
    result = cnnc_cli(*argv)
    assert_clean(result, 2, fragment)
    assert result.stderr.startswith("cnnc") and result.stdout == ""


def test_version():
    result = cnnc_cli("--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, "cnnc 0.1.0\n", "")
    assert cnnc.__version__ == "0.1.0"


# ---------------------------------------------------------------- standard output
@pytest.mark.parametrize("argv", [["check", LENET], ["summary", LENET], ["--help"],
                                  ["dump", ROOT / "examples" / "googlenet.cnn"]])
def test_a_full_standard_output_is_a_clean_error(argv):
    with open("/dev/full", "w") as full:
        result = cnnc_cli(*argv, stdout=full)
    assert_clean(result, 1, "error: cannot write to standard output: No space left on device")


@pytest.mark.parametrize("command", ["check", "summary"])
def test_a_closed_standard_output_is_a_clean_error(command):
    result = cnnc_cli(command, LENET, stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(1))
    assert_clean(result, 1, "error: cannot write to standard output: it is closed")


def test_a_closed_pipe_ends_quietly():
    read_end, write_end = os.pipe()
    os.close(read_end)  # `cnnc dump ... | head` once head has gone
    try:
        result = cnnc_cli("dump", ROOT / "examples" / "googlenet.cnn", stdout=write_end)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (0, "")


# ---------------------------------------------------------------- output files
@pytest.fixture
def no_device_twins():
    """numpy.save(name) adds '.npy': the old `run -o /dev/null` made /dev/null.npy."""
    twins = [pathlib.Path("/dev/null.npy"), pathlib.Path("/dev/full.npy")]
    before = {p for p in twins if p.exists()}
    yield
    made = {p for p in twins if p.exists()} - before
    for p in made:
        p.unlink()
    assert not made, f"created {made}"


def test_run_writes_exactly_the_output_named(capsys, tmp_path, no_device_twins):
    code, out, _ = run_cli(capsys, "run", LENET, "--batch", 2, "-o", tmp_path / "y")
    assert code == 0 and f"wrote {tmp_path / 'y'}" in out
    assert sorted(os.listdir(tmp_path)) == ["y"]
    expected = cnnc.compile_file(LENET)(
        np.random.default_rng(0).standard_normal((2, 1, 28, 28), dtype=np.float32))
    np.testing.assert_array_equal(np.load(tmp_path / "y"), expected)

    code, _, err = run_cli(capsys, "run", LENET, "-o", "/dev/null")
    assert code == 0, err
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    code, _, err = run_cli(capsys, "run", LENET, "-o", "/dev/full")
    assert code == 1 and "cannot write '/dev/full': No space left on device" in err
    code, _, err = run_cli(capsys, "run", LENET, "-o", tmp_path)
    assert code == 1 and f"cannot write '{tmp_path}': it is a directory" in err


def test_dump_output_to_a_directory_or_a_full_device(capsys, tmp_path):
    code, _, err = run_cli(capsys, "dump", LENET, "-o", tmp_path)
    assert code == 1 and f"cannot write '{tmp_path}': it is a directory" in err
    code, _, err = run_cli(capsys, "dump", LENET, "-o", "/dev/full")
    assert code == 1 and "cannot write '/dev/full': No space left on device" in err


def test_compile_never_replaces_a_device_or_a_pipe(capsys, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, _, err = run_cli(capsys, "compile", LENET, "-o", fifo)
    assert code == 1 and "a .cnnc artifact is written to a regular file" in err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


# ---------------------------------------------------------------- models and inputs
@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A small compiled model, stored as m.cnnc and as the same bytes renamed m.bin."""
    folder = tmp_path_factory.mktemp("artifact")
    (folder / "m.cnn").write_text(SMALL)
    cnnc.compile_source(SMALL, seed=2, progress=False).save(str(folder / "m.cnnc"))
    (folder / "m.bin").write_bytes((folder / "m.cnnc").read_bytes())
    return folder


@pytest.mark.parametrize("name", ["m.cnnc", "m.bin"])
def test_check_summary_dump_read_an_artifact(capsys, artifact, name):
    path = artifact / name
    code, out, err = run_cli(capsys, "check", path)
    assert code == 0, err
    source = cnnc.compile_source(SMALL, progress=False)
    parsed = source._source_graph
    assert out == (f"{path}: network small is well formed; input 2x6x5, output 4, 3 layers\n"
                   + "".join(line + "\n" for line in memory_report(parsed)))
    assert run_cli(capsys, "summary", path)[1] == summary_text(parsed, memory_report(parsed))
    assert run_cli(capsys, "dump", path)[1] == DUMPERS["text"](parsed)
    assert (run_cli(capsys, "dump", path, "--stage", "optimized", "--format", "json")[1]
            == DUMPERS["json"](optimize(parsed)))
    code, _, err = run_cli(capsys, "check", path, "--network", "other")
    assert code == 1 and "the artifact holds network 'small', not 'other'" in err


def test_check_of_an_artifact_in_a_fresh_process(artifact):
    result = cnnc_cli("check", artifact / "m.bin")
    assert result.returncode == 0, result.stderr
    assert "network small is well formed" in result.stdout


# ONNX files are imported now (tests/test_onnx.py); these two are no usable models
ONNX_MESSAGES = ("not a readable ONNX model", "the model uses ONNX opset 0; cnnc imports")


@pytest.mark.parametrize("name, content", [("m.onnx", ONNX_BYTES), ("renamed.cnn", ONNX_BYTES),
                                           ("empty.onnx", b"")])
@pytest.mark.parametrize("command", ["check", "summary", "dump", "run", "compile", "verify"])
def test_an_onnx_model_gets_a_useful_answer(capsys, tmp_path, name, content, command):
    path = tmp_path / name
    path.write_bytes(content)
    pytest.importorskip("onnx")
    code, _, err = run_cli(capsys, command, path)
    assert code == 1 and err.startswith(f"{path}: error: ") and err.count("\n") == 1
    assert any(m in err for m in ONNX_MESSAGES), err


def test_an_onnx_model_in_a_fresh_process(tmp_path):
    path = tmp_path / "model.cnn"
    path.write_bytes(ONNX_BYTES)
    pytest.importorskip("onnx")
    assert_clean(cnnc_cli("check", path), 1, ONNX_MESSAGES[0])


@pytest.mark.parametrize("content, fragment", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(40), "not a .npy array (the input is"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(40), "not a .npy array (the input is"),
    (b"\x80\x04\x95 pickle", "not a .npy array (the input is"),
])
def test_run_input_that_is_no_npy_array(capsys, tmp_path, content, fragment):
    path = tmp_path / "x.npy"
    path.write_bytes(content)
    code, _, err = run_cli(capsys, "run", LENET, "--input", path)
    assert code == 1 and fragment in err and "pickle" not in err


def test_run_input_whose_header_claims_more_than_the_file_holds(capsys, tmp_path):
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": (1000000, 1000000)})
    (tmp_path / "x.npy").write_bytes(buf.getvalue() + bytes(64))
    code, _, err = run_cli(capsys, "run", LENET, "--input", tmp_path / "x.npy")
    assert code == 1 and "the input is truncated: its header says shape (1000000, 1000000)" in err
