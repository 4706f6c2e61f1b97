"""The memory guard (issue 9 item 5): work that needs more memory than the limit is refused
before anything is allocated, with what it needs and the limit; check/summary report it."""

import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import net_src

import cnnc
from cnnc.memory import format_bytes, parse_size

ROOT = Path(__file__).resolve().parent.parent


def _in_bounded_subprocess(code: str, limit_gib: int = 2) -> subprocess.CompletedProcess:
    """Run `code` with at most `limit_gib` GiB of address space beyond Python's own, so a
    guard that allocates first fails with MemoryError instead of slowing the machine."""
    wrapper = textwrap.dedent(f"""
        import resource
        import numba, numpy, networkx, lark, cnnc.runtime  # their mappings count too
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + {limit_gib} * 2**30, resource.RLIM_INFINITY))
    """) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True,
                          timeout=300)


def test_huge_conv_parameters_are_refused_before_allocation():
    code = """
        import cnnc
        try:
            cnnc.compile_source("network n(input: 3x8x8) {\\n  conv(2000000000, 3x3)\\n}")
        except cnnc.CnncMemoryError as err:
            print(err.line, err.column, err.message)
    """
    result = _in_bounded_subprocess(code)
    assert result.returncode == 0, result.stderr
    line, column, message = result.stdout.split(" ", 2)
    assert (line, column) == ("2", "3")
    assert "56,000,000,000 parameters" in message and "conv1" in message
    assert "more than" in message and "the memory available now; max_memory= or --max-memory " \
        "sets another limit" in message


def test_activations_of_100_gb_are_refused_at_compile_time():
    code = """
        import cnnc
        try:
            cnnc.compile_source("network n(input: 3x100000x100000) {\\n  conv(4, 3x3)\\n}")
        except cnnc.CnncMemoryError as err:
            print(err.line, err.message)
    """
    result = _in_bounded_subprocess(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("2 the activations of network 'n' at batch size 1 ")
    assert "'conv1', 4x99998x99998 per image" in result.stdout
    assert "needs 260.8 GiB" in result.stdout  # (3 + 4) x 1e10 floats, both live at once


@pytest.fixture(scope="module")
def small_net():
    return cnnc.compile_source(net_src("relu", "1x8x8"))


def test_a_batch_of_1e8_is_refused_before_the_input_is_copied(small_net):
    x = np.broadcast_to(np.zeros((1, 1, 8, 8), np.float64), (10**8, 1, 8, 8))  # no memory
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(cnnc.CnncInputError, match=r"batch of 100,000,000 needs 95\.4 GiB"):
        small_net(x)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


def test_max_memory_sets_the_limit(small_net):
    with pytest.raises(cnnc.CnncMemoryError, match=r"needs 2\.4 MiB, more than 1\.0 MiB \(the "
                                                   r"limit given by max_memory"):
        cnnc.compile_source(net_src("conv(64, 3x3)", "1x100x100"), max_memory=2**20)
    net = cnnc.compile_source(net_src("relu", "1x8x8"), max_memory=10_000)
    assert net(np.ones((4, 1, 8, 8))).shape == (4, 1, 8, 8)  # 4 x (2 + 1) x 256 B fits
    with pytest.raises(cnnc.CnncInputError, match="batch of 100 needs 75.0 KiB"):
        net(np.ones((100, 1, 8, 8), np.float32))


@pytest.mark.parametrize("text,value", [("1000", 1000), ("512M", 512 * 2**20),
                                        ("1.5GiB", 3 * 2**29), ("8g", 8 * 2**30)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "-1", "0", "1.5X", "1e9", "G"])
def test_parse_size_refuses_what_is_no_size(text):
    with pytest.raises(cnnc.CnncValueError, match="memory"):
        parse_size(text)


def test_format_bytes():
    assert [format_bytes(n) for n in (12, 2048, 3 * 2**29, 2**41)] == [
        "12 B", "2.0 KiB", "1.5 GiB", "2.0 TiB"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cnnc.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_cli_max_memory(tmp_path):
    model = tmp_path / "m.cnn"
    model.write_text(net_src("conv(64, 3x3)", "1x100x100"))
    result = _cli("compile", model, "--max-memory", "1M")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{model}:2:1: error: the activations")
    assert "more than 1.0 MiB" in result.stderr
    result = _cli("verify", model, "--max-memory", "1K")
    assert result.returncode == 1 and "more than 1.0 KiB" in result.stderr
    result = _cli("run", model, "--max-memory", "lots")
    assert result.returncode == 2 and "not a memory size: 'lots'" in result.stderr


def test_check_and_summary_report_planned_memory():
    for command in ("check", "summary"):
        result = _cli(command, ROOT / "examples" / "lenet5.cnn")
        assert result.returncode == 0, result.stderr
        assert "peak activation memory per image (-O2): 34.7 KiB before planning, 23.0 KiB " \
               "after (66%)" in result.stdout
        assert "parameter memory: 241.0 KiB (61,706 values" in result.stdout
