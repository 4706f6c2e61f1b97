"""The command line: check, summary, dump, and how it reports mistakes (§8, §9)."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import networkx as nx
import pytest

from cnnc.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_check_passes_on_every_example(capsys, path):
    code, out, err = run_cli(capsys, "check", path)
    assert code == 0, err
    assert "is well formed" in out


def test_examples_are_the_five_promised():
    assert {p.stem for p in EXAMPLES} >= {"lenet5", "cifar_inception", "googlenet", "resnet18",
                                          "squeezenet"}


def _totals(text: str) -> tuple[int, int]:
    params = int(re.search(r"total parameters: ([\d,]+)", text).group(1).replace(",", ""))
    macs = int(re.search(r"total MACs per image: ([\d,]+)", text).group(1).replace(",", ""))
    return params, macs


@pytest.mark.parametrize("name", ["googlenet", "lenet5", "resnet18", "squeezenet",
                                  "cifar_inception", "mobilenet_v2", "se_resnet",
                                  "shufflenet_v2"])
def test_summary_totals_equal_pytorch(capsys, name):
    import torch_twins
    code, out, _ = run_cli(capsys, "summary", ROOT / "examples" / f"{name}.cnn")
    assert code == 0
    builder, shape = torch_twins.TWINS[name]
    assert _totals(out) == torch_twins.count_params_and_macs(builder(), shape)


def test_summary_rows_show_receptive_field_and_stride(capsys):
    src = ROOT / "examples" / "lenet5.cnn"
    code, out, _ = run_cli(capsys, "summary", src)
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line and line[0] != "-"}
    # conv 5x5 -> pool 2x2/2 -> conv 5x5 -> pool 2x2/2: 5, 6 (jump 2), 14, 16 (jump 4)
    assert rows["conv1"][-2:] == ["5x5", "1x1"]
    assert rows["avgpool1"][-2:] == ["6x6", "2x2"]
    assert rows["conv2"][-2:] == ["14x14", "2x2"]
    assert rows["avgpool2"][-2:] == ["16x16", "4x4"]
    assert rows["conv1"][2:5] == ["6x28x28", "156", "117,600"]


def test_dump_text_lists_every_node(capsys):
    code, out, _ = run_cli(capsys, "dump", ROOT / "examples" / "lenet5.cnn")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "network lenet5 -> softmax1"
    assert lines[2].startswith("conv1 = conv(depth=6, kernel=5x5, stride=1x1, padding=2x2")
    assert lines[2].endswith("<- [input] : 6x28x28")
    assert len(lines) == 1 + 13


def test_dump_json_is_node_link_data(capsys, tmp_path):
    out_file = tmp_path / "g.json"
    code, _, _ = run_cli(capsys, "dump", ROOT / "examples" / "googlenet.cnn", "--format", "json",
                         "-o", out_file)
    assert code == 0
    graph = nx.node_link_graph(json.loads(out_file.read_text()))
    assert graph.number_of_nodes() == 141
    assert graph.nodes["inc3a.concat1"]["shape"] == [256, 28, 28]
    assert graph.nodes["inc3a.concat1"]["inputs"] == ["inc3a.relu1", "inc3a.relu3", "inc3a.relu5",
                                                      "inc3a.relu6"]
    assert sum(1 for _, d in graph.nodes(data=True) if d["op"] == "conv") == 57


def test_dump_dot_renders_with_graphviz(capsys, tmp_path):
    out_file = tmp_path / "g.dot"
    code, _, _ = run_cli(capsys, "dump", ROOT / "examples" / "cifar_inception.cnn", "--format",
                         "dot", "-o", out_file)
    assert code == 0
    text = out_file.read_text()
    assert '"inc3a.concat1" [label="inc3a.concat1\\nconcat\\n' in text
    dot = shutil.which("dot")
    if dot is None:
        if os.environ.get("CNNC_REQUIRE_DOT"):
            pytest.fail("Graphviz 'dot' is required (CNNC_REQUIRE_DOT is set) but not installed")
        pytest.skip("Graphviz 'dot' is not installed")
    svg = subprocess.run([dot, "-Tsvg", str(out_file)], capture_output=True, text=True, check=True)
    assert "<svg" in svg.stdout and "inc3a.concat1" in svg.stdout


def test_network_option(capsys, tmp_path):
    path = tmp_path / "two.cnn"
    path.write_text("network a(input: 1x4x4) { relu }\nnetwork b(input: 2x4x4) { flatten }\n")
    assert "network b" in run_cli(capsys, "check", path)[1]
    assert "network a" in run_cli(capsys, "check", path, "--network", "a")[1]
    code, _, err = run_cli(capsys, "check", path, "--network", "c")
    assert code == 1 and "no network 'c'" in err


def test_error_output_format(capsys, tmp_path):
    path = tmp_path / "bad.cnn"
    path.write_text("network n(input: 3x8x8) {\n  conv(8, 3x3) -> relu\n  convv(4, 3x3)\n}\n")
    code, out, err = run_cli(capsys, "check", path)
    assert code == 1 and out == ""
    assert err == (f"{path}:3:3: error: unknown layer or block 'convv' (did you mean 'conv'?)\n"
                   "      convv(4, 3x3)\n"
                   "      ^\n")


@pytest.mark.parametrize("argv, status, fragment", [
    (["frobnicate"], 2, "invalid choice"),
    (["check"], 2, "the following arguments are required"),
    (["dump", "x.cnn", "--format", "svg"], 2, "invalid choice"),
    (["check", "does-not-exist.cnn"], 1, "no such file"),
])
def test_bad_command_lines(capsys, argv, status, fragment):
    code, _, err = run_cli(capsys, *argv)
    assert code == status
    assert err.startswith("error:") or ": error:" in err
    assert fragment in err


def test_console_script_never_shows_a_traceback(tmp_path):
    bad = tmp_path / "bad.cnn"
    bad.write_bytes(b"network n(input: 3x8x8) {\n  conv(4, \xff)\n}\n")
    result = subprocess.run([sys.executable, "-m", "cnnc.cli", "check", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "not UTF-8 text" in result.stderr
