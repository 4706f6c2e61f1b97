"""§6: the dotted names of layers and the order and shapes of their parameters."""

import pytest
from helpers import graph_of, net_src

from cnnc import CnncError
from cnnc.graph import parameter_shapes


def names(text):
    return list(parameter_shapes(graph_of(text)))


def test_labels_and_unlabelled_counts():
    text = net_src("stem: conv(4, 3x3) -> relu\nconv(4, 1x1)\nbatchnorm\nhead: dense(10)\n"
                   "dense(5, bias=false)")
    assert names(text) == [
        "stem.weight", "stem.bias", "conv1.weight", "conv1.bias",
        "batchnorm1.weight", "batchnorm1.bias", "batchnorm1.running_mean", "batchnorm1.running_var",
        "head.weight", "head.bias", "dense1.weight"]


def test_counts_run_on_through_branches_in_source_order():
    text = net_src("conv(4, 1x1)\nconcat {\n  conv(2, 1x1) -> conv(2, 3x3, padding=same)\n"
                   "| c: conv(3, 1x1)\n| conv(1, 1x1)\n}\nconv(5, 1x1)")
    graph = graph_of(text)
    convs = [n for n, d in graph.nodes(data=True) if d["op"] == "conv"]
    assert convs == ["conv1", "conv2", "conv3", "c", "conv4", "conv5"]
    assert graph.nodes["conv4"]["attrs"]["depth"] == 1
    assert graph.nodes["conv5"]["attrs"]["depth"] == 5


def test_block_instances_are_named_and_prefix_their_layers():
    text = """
block inception(a, b) {
    concat { conv(a, 1x1) | conv(b, 1x1) -> relu -> conv(b, 3x3, padding=same) }
}
network n(input: 3x8x8) {
    conv(4, 1x1)
    inc3a: inception(2, 3)
    inception(4, 5)
    inception(6, 7)
}
"""
    assert names(text) == [
        "conv1.weight", "conv1.bias",
        "inc3a.conv1.weight", "inc3a.conv1.bias", "inc3a.conv2.weight", "inc3a.conv2.bias",
        "inc3a.conv3.weight", "inc3a.conv3.bias",
        "inception1.conv1.weight", "inception1.conv1.bias", "inception1.conv2.weight",
        "inception1.conv2.bias", "inception1.conv3.weight", "inception1.conv3.bias",
        "inception2.conv1.weight", "inception2.conv1.bias", "inception2.conv2.weight",
        "inception2.conv2.bias", "inception2.conv3.weight", "inception2.conv3.bias"]


def test_nested_blocks_chain_prefixes_and_labels_inside_blocks():
    text = """
block cb(c) { conv(c, 1x1, bias=false) -> batchnorm }
block fire(s, e) {
    squeeze: conv(s, 1x1)
    concat { cb(e) | x3: conv(e, 3x3, padding=same) | cb(e) }
}
network n(input: 3x8x8) { fire(2, 3); f: fire(2, 4) }
"""
    got = names(text)
    assert got[:8] == ["fire1.squeeze.weight", "fire1.squeeze.bias", "fire1.cb1.conv1.weight",
                       "fire1.cb1.batchnorm1.weight", "fire1.cb1.batchnorm1.bias",
                       "fire1.cb1.batchnorm1.running_mean", "fire1.cb1.batchnorm1.running_var",
                       "fire1.x3.weight"]
    assert "fire1.cb2.conv1.weight" in got and "f.cb2.batchnorm1.running_var" in got
    assert got[-1] == "f.cb2.batchnorm1.running_var"


def test_labels_on_parameterless_layers_and_branchings_prefix_nothing():
    text = net_src("act: relu\njoin: concat { conv(2, 1x1) | conv(3, 1x1) }\nconv(1, 1x1)")
    graph = graph_of(text)
    assert "act" in graph and "join" in graph
    assert names(text) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                           "conv3.weight", "conv3.bias"]


def test_each_body_is_its_own_scope():
    text = """
block b(c) { conv(c, 1x1); conv(c, 1x1) }
network n(input: 3x8x8) { conv(2, 1x1); b(3); conv(2, 1x1) }
"""
    assert names(text) == ["conv1.weight", "conv1.bias", "b1.conv1.weight", "b1.conv1.bias",
                           "b1.conv2.weight", "b1.conv2.bias", "conv2.weight", "conv2.bias"]


def test_parameter_shapes_are_pytorchs():
    shapes = parameter_shapes(graph_of(net_src(
        "conv(8, 3x5, bias=false)\nconv(6, 1x1, groups=2)\nbatchnorm\nflatten\ndense(7)", "3x9x9")))
    assert shapes == {
        "conv1.weight": (8, 3, 3, 5), "conv2.weight": (6, 4, 1, 1), "conv2.bias": (6,),
        "batchnorm1.weight": (6,), "batchnorm1.bias": (6,), "batchnorm1.running_mean": (6,),
        "batchnorm1.running_var": (6,), "dense1.weight": (7, 6 * 7 * 5), "dense1.bias": (7,)}


@pytest.mark.parametrize("body, message", [
    ("a: conv(2, 1x1)\na: conv(2, 1x1)", "label 'a' is used twice"),
    ("conv(2, 1x1)\nconv1: conv(2, 1x1)", "equals the automatic name"),
    ("concat { a: relu | a: relu }", "label 'a' is used twice"),
])
def test_label_clashes(body, message):
    with pytest.raises(CnncError, match=message):
        graph_of(net_src(body))
