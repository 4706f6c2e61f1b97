"""The .cnn language: every construct of LANGUAGE.md §2-§4 and §10 parses as specified."""

import time

import pytest
from helpers import graph_of, net_src, ops

from cnnc import CnncError
from cnnc.frontend import Branching, Call, Dim, Num, parse
from cnnc.graph import build_graph, load_program, load_source


def chain_ops(text: str) -> list[str]:
    return ops(graph_of(text))[1:]


def test_first_look_example_from_the_contract():
    text = open_contract_example()
    graph = graph_of(text)
    assert graph.graph["name"] == "googlenet"
    assert graph.nodes[graph.graph["output"]]["shape"] == (1000,)


def open_contract_example() -> str:
    import pathlib
    spec = pathlib.Path(__file__).resolve().parents[2] / "shared" / "LANGUAGE.md"
    if not spec.exists():
        spec = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "LANGUAGE.md"
    return spec.read_text().split("```")[1]


def test_comments_blank_lines_and_semicolons():
    text = """# a comment
network n(input: 3x8x8) {   # trailing comment
    conv(4, 3x3); relu   # two statements on one line

    # a comment line inside the body
    maxpool(2)
}
"""
    assert chain_ops(text) == ["conv", "relu", "maxpool"]


@pytest.mark.parametrize("body", [
    "conv(4, 3x3) ->\n  relu ->\n  maxpool(2)",
    "conv(4, 3x3)\n  -> relu\n  -> maxpool(2)",
    "conv(4, 3x3) ->\n\n  # comment between\n  relu\n\n  -> maxpool(2)",
    "conv(4, 3x3)\n\n# comment\n  -> relu -> maxpool(2)",
    "conv(\n  4,\n  3x3\n) -> relu; maxpool(2)",
    "conv(depth=4,\n     kernel=3x3) -> relu -> maxpool(2);",
])
def test_continuation_lines(body):
    assert chain_ops(net_src(body)) == ["conv", "relu", "maxpool"]


@pytest.mark.parametrize("body", [
    "concat { conv(4, 1x1) | conv(2, 1x1) }",
    "concat {\n  conv(4, 1x1)\n| conv(2, 1x1)\n}",
    "concat {\n  conv(4, 1x1) |\n  conv(2, 1x1)\n}",
    "concat {\n\n  conv(4, 1x1)\n\n  # comment\n  | conv(2, 1x1)\n}",
])
def test_branch_layouts(body):
    graph = graph_of(net_src(body))
    assert ops(graph)[1:] == ["conv", "conv", "concat"]
    assert graph.nodes["concat1"]["shape"] == (6, 8, 8)


def test_branch_with_several_statements():
    graph = graph_of(net_src("concat {\n  conv(4, 1x1)\n  relu; conv(3, 3x3, padding=same)\n"
                             "| maxpool(3, stride=1, padding=same) -> conv(2, 1x1)\n}"))
    assert ops(graph)[1:] == ["conv", "relu", "conv", "maxpool", "conv", "concat"]
    assert graph.nodes["concat1"]["inputs"] == ["conv2", "conv3"]
    assert graph.nodes["concat1"]["shape"] == (5, 8, 8)


def test_concat_and_add_are_stages_in_a_chain():
    graph = graph_of(net_src("conv(8, 1x1) -> add { relu | identity } -> relu"))
    assert ops(graph)[1:] == ["conv", "relu", "identity", "add", "relu"]
    assert graph.nodes["add1"]["inputs"] == ["relu1", "identity1"]
    assert graph.nodes["relu2"]["inputs"] == ["add1"]


def test_residual_add_with_identity():
    graph = graph_of(net_src(
        "add { conv(3, 3x3, padding=same) -> relu -> conv(3, 1x1) | identity }"))
    assert graph.nodes["add1"]["inputs"] == ["conv2", "identity1"]
    assert graph.nodes["identity1"]["inputs"] == ["input"]


def test_one_branch_concat_and_add_are_allowed():
    graph = graph_of(net_src("concat { conv(4, 1x1) } -> add { relu }"))
    assert graph.nodes["add1"]["shape"] == (4, 8, 8)


def test_layers_without_parentheses_and_with_empty_ones():
    assert chain_ops(net_src("relu(); relu; flatten(); flatten")) == [
        "relu", "relu", "flatten", "flatten"]


def test_numbers():
    module = parse("network n(input: 1x4x4) { leaky_relu(-0.1); batchnorm(eps=1e-5); "
                   "dropout(2.5e-1); lrn(k=2) }")
    calls = module.networks[0].body
    assert isinstance(calls[0].args[0].value.operand, Num)
    graph = graph_of("network n(input: 1x4x4) { leaky_relu(-0.1); batchnorm(eps=1e-5); "
                     "dropout(2.5e-1); lrn(k=2); leaky_relu(slope=2) }")
    attrs = [d["attrs"] for _, d in graph.nodes(data=True)][1:]
    assert attrs[0] == {"slope": -0.1}
    assert attrs[1] == {"eps": 1e-5}
    assert attrs[2] == {"p": 0.25}
    assert attrs[3]["k"] == 2.0 and isinstance(attrs[3]["k"], float)
    assert attrs[4] == {"slope": 2.0}


def test_dimensions_and_single_integers():
    graph = graph_of(net_src("conv(4, 1x3, stride=2x1, padding=0x1, dilation=2)", "3x9x9"))
    attrs = graph.nodes["conv1"]["attrs"]
    assert attrs["kernel"] == (1, 3) and attrs["stride"] == (2, 1)
    assert attrs["padding"] == (0, 1) and attrs["dilation"] == (2, 2)
    assert graph.nodes["conv1"]["shape"] == (4, 5, 7)  # w: 9 + 2 - (2*(3-1)+1) + 1


@pytest.mark.parametrize("expr, value", [
    ("2 + 3 * 4", 14), ("(2 + 3) * 4", 20), ("20 // 3", 6), ("-7 // 2 + 10", 6),
    ("2 * 3 // 4", 1), ("10 - 2 - 3", 5), ("d * 2 + 1", 9),
])
def test_integer_arithmetic(expr, value):
    text = f"block b(d) {{ conv({expr}, 1x1) }}\nnetwork n(input: 3x4x4) {{ b(4) }}"
    assert graph_of(text).nodes["b1.conv1"]["attrs"]["depth"] == value


def test_block_defaults_keywords_and_dimension_parameters():
    text = """
block unit(c, k=3x3, s=1, extra=c*2) {
    conv(c, k, stride=s, padding=same) -> relu
    conv(extra, 1x1)
}
network n(input: 3x16x16) {
    unit(4)
    unit(8, s=2, k=5x5)
    unit(2, extra=3)
}
"""
    graph = graph_of(text)
    assert graph.nodes["unit1.conv1"]["attrs"]["kernel"] == (3, 3)
    assert graph.nodes["unit1.conv2"]["shape"] == (8, 16, 16)
    assert graph.nodes["unit2.conv1"]["attrs"]["kernel"] == (5, 5)
    assert graph.nodes["unit2.conv1"]["shape"] == (8, 8, 8)
    assert graph.nodes["unit2.conv2"]["shape"] == (16, 8, 8)
    assert graph.nodes["unit3.conv2"]["shape"] == (3, 8, 8)


def test_blocks_using_blocks_and_words_as_arguments():
    text = """
block cbr(c, mode=same) { conv(c, 3x3, padding=mode, bias=false) -> batchnorm -> relu }
block two(c) { cbr(c); cbr(c, valid) }
network n(input: 3x8x8) { two(4) }
"""
    graph = graph_of(text)
    assert graph.nodes["two1.cbr1.conv1"]["shape"] == (4, 8, 8)
    assert graph.nodes["two1.cbr2.conv1"]["shape"] == (4, 6, 6)
    assert graph.nodes["two1.cbr2.conv1"]["attrs"]["bias"] is False


def test_network_selection():
    text = "network a(input: 1x4x4) { relu }\nnetwork b(input: 2x4x4) { relu }\n"
    assert graph_of(text).graph["name"] == "b"
    assert graph_of(text, "a").graph["name"] == "a"
    with pytest.raises(CnncError, match="no network 'c'"):
        graph_of(text, "c")


def test_imports_are_relative_and_read_once(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "base.cnn").write_text("block cr(c) { conv(c, 1x1) -> relu }\n")
    (tmp_path / "lib" / "mid.cnn").write_text(
        'import "base.cnn"\nblock two(c) { cr(c); cr(c) }\nnetwork unused(input: 1x1x1) { relu }\n')
    (tmp_path / "lib" / "side.cnn").write_text('import "base.cnn"\n')
    (tmp_path / "main.cnn").write_text(
        'import "lib/mid.cnn"\nimport "lib/side.cnn"\n'
        'network m(input: 3x4x4) { two(5) -> cr(2) }\n')
    program = load_program(str(tmp_path / "main.cnn"))
    assert [n.name for n in program.networks] == ["m"]  # imported networks are not picked
    graph = build_graph(program)
    assert graph.nodes["cr1.conv1"]["shape"] == (2, 4, 4)


def test_positions_are_kept():
    module = parse(
        "network n(input: 3x8x8) {\n    stem: conv(4, 3x3)\n    concat { relu | relu }\n}",
        "f.cnn")
    call, branching = module.networks[0].body
    assert isinstance(call, Call) and (call.pos.line, call.pos.column) == (2, 5)
    assert call.label == "stem"
    assert isinstance(call.args[1].value, Dim) and call.args[1].value.pos.column == 19
    assert isinstance(branching, Branching) and (branching.pos.line, branching.pos.column) == (3, 5)


def test_graph_nodes_follow_the_schema():
    graph = graph_of(net_src("stem: conv(4, 3x3, padding=same) -> relu\nflatten\ndense(10)"))
    for node_id, d in graph.nodes(data=True):
        assert set(d) >= {"op", "name", "inputs", "shape", "pos", "attrs"}
        assert d["name"] == node_id
        assert sorted(graph.predecessors(node_id)) == sorted(set(d["inputs"]))
    assert graph.nodes["stem"]["pos"] == ("m.cnn", 2, 1)
    assert graph.nodes["dense1"]["shape"] == (10,)
    assert graph.graph["output"] == "dense1"


def _deep_network(layers: int) -> str:
    body = "\n".join(f"conv(4, 3x3, padding=same) -> relu  # layer {i}" for i in range(layers))
    return "network deep(input: 3x8x8) {\n" + body + "\n}\n"


def _check_seconds(text: str) -> tuple[float, object]:
    start = time.perf_counter()
    graph = build_graph(load_source(text))
    return time.perf_counter() - start, graph


def test_checking_time_grows_linearly_with_the_network():
    """8 times the layers take about 8 times as long (64 times if anything were quadratic);
    a ratio, not a time, so a loaded machine does not fail it."""
    small = min(_check_seconds(_deep_network(1_000))[0] for _ in range(3))
    elapsed, graph = _check_seconds(_deep_network(8_000))
    assert graph.number_of_nodes() == 16_001
    assert graph.nodes["conv8000"]["shape"] == (4, 8, 8)
    assert elapsed < 24 * small, f"1,000 layers in {small:.2f} s, 8,000 in {elapsed:.2f} s"


@pytest.mark.parametrize("text", [
    "(" * 5000, "network n(input: 3x8x8) { conv(" + "(" * 3000 + "1" + ")" * 3000 + ", 1x1) }",
    "network n(input: 3x8x8) {" + "concat {" * 500 + "relu" + "}" * 500 + "}",
    "\x00\x01 garbage", "network" * 1000,
])
def test_hostile_inputs_fail_cleanly(text):
    start = time.perf_counter()
    try:
        build_graph(load_source(text))
    except CnncError:
        pass
    assert time.perf_counter() - start < 10
