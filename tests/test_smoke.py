"""The first tests to run: the front end, one small compiled network and the command line,
in a few seconds once the kernels are in the disk cache (`pytest tests/test_smoke.py`)."""

import subprocess
import sys
from pathlib import Path

import numpy as np

import cnnc
from cnnc.graph import build_graph, load_program

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_every_example_parses_and_shape_checks():
    outputs = {path.stem: build_graph(load_program(str(path)), None).graph["output"]
               for path in sorted(EXAMPLES.glob("*.cnn"))}
    assert set(outputs) >= {"lenet5", "cifar_inception", "googlenet", "resnet18", "squeezenet"}


def test_a_small_network_against_numpy():
    net = cnnc.compile_source("network n(input: 2x4x4) {\n  relu -> maxpool(2x2)\n}",
                              progress=False)
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 4)).astype(np.float32)
    want = np.maximum(x, 0).reshape(3, 2, 2, 2, 2, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(net(x), want)


def test_the_command_line_reports_a_mistake_at_its_position(tmp_path):
    model = tmp_path / "m.cnn"
    model.write_text("network n(input: 1x8x8) {\n  conv(4, 9x9)\n}\n")
    result = subprocess.run([sys.executable, "-m", "cnnc.cli", "check", str(model)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{model}:2:3: error: ")
