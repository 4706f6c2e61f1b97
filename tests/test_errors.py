"""§8: every user mistake is a CnncError with a clear message and the exact position."""

import os

import pytest

from cnnc import (
    CnncError,
    CnncImportError,
    CnncNameError,
    CnncShapeError,
    CnncSyntaxError,
    CnncValueError,
)
from cnnc.diagnostics import format_error
from cnnc.graph import build_graph, load_program, load_source

N = "network n(input: 3x8x8) {\n"

CASES = [
    # (id, source, error class, line, column, message fragment)
    ("syntax-expected", N + "  conv(8, 3x3 -> relu\n}\n", CnncSyntaxError, 2, 15,
     "unexpected '->'; expected ')'"),
    ("syntax-double-arrow", N + "  conv(8, 3x3) -> -> relu\n}\n", CnncSyntaxError, 2, 19,
     "unexpected '->'"),
    ("syntax-eof", N + "  relu\n", CnncSyntaxError, 2, 7, "unexpected end of file"),
    ("syntax-character", N + "  conv(4, 1x1) $\n}\n", CnncSyntaxError, 2, 16,
     "unexpected character '$'"),
    ("empty-body", N + "}\n", CnncSyntaxError, 2, 1, "empty body or branch"),
    ("empty-branch", N + "  concat { relu | }\n}\n", CnncSyntaxError, 2, 19,
     "empty body or branch"),
    ("input-word", "network n(inp: 3x8x8) { relu }\n", CnncSyntaxError, 1, 11, "expected 'input'"),
    ("unknown-layer", N + "  conv(8, 3x3)\n  reluu\n}\n", CnncNameError, 3, 3,
     "unknown layer or block 'reluu' (did you mean 'relu'?)"),
    ("unknown-block", "block incep(a) { conv(a, 1x1) }\n" + N + "  incepp(4)\n}\n", CnncNameError,
     3, 3, "unknown layer or block 'incepp' (did you mean 'incep'?)"),
    ("unknown-layer-in-unused-block", "block b(c) { conv(c, 1x1) -> rleu }\n" + N + "  relu\n}\n",
     CnncNameError, 1, 30, "(did you mean 'relu'?)"),
    ("unknown-argument", N + "  conv(8, 3x3, strid=2)\n}\n", CnncNameError, 2, 16,
     "conv has no argument 'strid' (did you mean 'stride'?)"),
    ("unknown-word", N + "  conv(8, 3x3, padding=sme)\n}\n", CnncNameError, 2, 24,
     "undefined word 'sme' (did you mean 'same'?)"),
    ("unknown-block-argument", "block b(width) { conv(width, 1x1) }\n" + N + "  b(widht=3)\n}\n",
     CnncNameError, 3, 5, "block 'b' has no parameter 'widht' (did you mean 'width'?)"),
    ("too-many-arguments", N + "  conv(8, 3x3, 1, valid, 1, 1, true, 5)\n}\n", CnncValueError, 2,
     38, "conv takes at most 7 arguments, got 8"),
    ("too-many-block-arguments", "block b(c) { conv(c, 1x1) }\n" + N + "  b(4, 5)\n}\n",
     CnncValueError, 3, 8, "block 'b' takes 1 argument, got 2"),
    ("missing-argument", N + "  conv(8)\n}\n", CnncValueError, 2, 3,
     "conv needs the argument 'kernel'"),
    ("missing-block-argument", "block b(c, d) { conv(c, 1x1) }\n" + N + "  b(4)\n}\n",
     CnncValueError, 3, 3, "block 'b' needs the argument 'd'"),
    ("argument-twice", N + "  conv(4, 1x1, depth=3)\n}\n", CnncValueError, 2, 16,
     "argument 'depth' given twice"),
    ("pad-three-integers", N + "  pad(1, 2, 3)\n}\n", CnncValueError, 2, 10,
     "pad takes one amount"),
    ("global-on-conv", N + "  conv(4, global)\n}\n", CnncValueError, 2, 11,
     "'global' is only for avgpool and maxpool"),
    ("zero-depth", N + "  conv(0, 3x3)\n}\n", CnncValueError, 2, 8,
     "depth must be positive, got 0"),
    ("negative-kernel", N + "  conv(4, -3)\n}\n", CnncValueError, 2, 11, "kernel must be positive"),
    ("zero-stride", N + "  maxpool(2, stride=0)\n}\n", CnncValueError, 2, 21,
     "stride must be positive, got 0"),
    ("computed-zero-depth", "block b(c) { conv(c - 4, 1x1) }\n" + N + "  b(4)\n}\n",
     CnncValueError, 1, 19, "depth must be positive, got 0"),
    ("decimal-for-integer", N + "  conv(4.5, 1x1)\n}\n", CnncValueError, 2, 8,
     "depth must be an integer"),
    ("dropout-range", N + "  dropout(1.5)\n}\n", CnncValueError, 2, 11, "between 0 and 1"),
    ("division-by-zero", "block b(c) { conv(c // 0, 1x1) }\n" + N + "  b(4)\n}\n", CnncValueError,
     1, 19, "division by zero"),
    ("kernel-larger-than-input", N + "  conv(4, 3x3)\n  conv(4, 7x7)\n}\n", CnncShapeError, 3, 3,
     "layer 'conv2': conv: kernel 7x7 is larger than its input 6x6 (input shape 4x6x6)"),
    ("kernel-larger-than-padded-input", N + "  maxpool(2)\n  conv(2, 7x7, padding=1)\n}\n",
     CnncShapeError, 3, 3, "kernel 7x7 is larger than its padded input 6x6"),
    ("groups-do-not-divide", N + "  conv(4, 3x3, groups=2)\n}\n", CnncShapeError, 2, 3,
     "groups=2 does not divide the input depth 3"),
    ("concat-height-width", N + "  concat {\n    conv(4, 3x3)\n  | conv(4, 1x1)\n  }\n}\n",
     CnncShapeError, 2, 3, "concat: branches disagree in height and width: 4x6x6, 4x8x8"),
    ("concat-rank", N + "  concat { flatten | identity }\n}\n", CnncShapeError, 2, 3,
     "branches differ in rank"),
    ("add-shapes", N + "  add { conv(4, 1x1) | identity }\n}\n", CnncShapeError, 2, 3,
     "add: branches disagree in shape: 4x8x8, 3x8x8"),
    ("conv-after-dense", N + "  dense(10)\n  conv(4, 1x1)\n}\n", CnncShapeError, 3, 3,
     "conv needs a CxHxW input, got features of shape (10,)"),
    ("pool-padding-over-half", N + "  maxpool(3, padding=2)\n}\n", CnncValueError, 2, 3,
     "padding 2x2 is more than half the kernel 3x3"),
    ("duplicate-label", N + "  a: conv(4, 1x1)\n  a: conv(4, 1x1)\n}\n", CnncNameError, 3, 3,
     "label 'a' is used twice"),
    ("label-equals-automatic-name", N + "  conv(4, 1x1)\n  conv1: conv(4, 1x1)\n}\n",
     CnncNameError, 3, 3, "equals the automatic name"),
    ("undefined-block-parameter", "block b(c) {\n  conv(d, 1x1)\n}\n" + N + "  b(4)\n}\n",
     CnncNameError, 2, 8, "undefined block parameter or word 'd'"),
    ("default-uses-later-parameter", "block b(a=c, c=1) { relu }\n" + N + "  relu\n}\n",
     CnncNameError, 1, 11, "not an earlier parameter"),
    ("recursive-blocks", "block a(c) {\n  b(c)\n}\nblock b(c) {\n  a(c)\n}\n" + N + "  relu\n}\n",
     CnncNameError, 5, 3, "recursive block: a -> b -> a"),
    ("self-recursive-block", "block a(c) {\n  relu -> a(c)\n}\n" + N + "  relu\n}\n",
     CnncNameError, 2, 11, "recursive block: a -> a"),
    ("block-named-like-layer", "block conv(c) { relu }\n" + N + "  relu\n}\n", CnncNameError, 1, 1,
     "a block may not be named like a layer"),
    ("parameter-named-like-word", "block b(same) { relu }\n" + N + "  relu\n}\n", CnncNameError,
     1, 9, "may not be named like a word or a layer"),
    ("parameter-order", "block b(a=1, c) { relu }\n" + N + "  relu\n}\n", CnncNameError, 1, 14,
     "has no default but follows one that has"),
    ("block-defined-twice", "block b(a) { relu }\nblock b(a) { relu }\n" + N + "  relu\n}\n",
     CnncNameError, 2, 1, "block 'b' is defined twice"),
    ("input-zero", "network n(input: 0x8x8) { relu }\n", CnncValueError, 1, 18,
     "input sizes must be at least 1"),
    ("missing-import", 'import "nothere.cnn"\n' + N + "  relu\n}\n", CnncImportError, 1, 1,
     "cannot find"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_error_message_and_position(case):
    _, text, cls, line, column, fragment = case
    with pytest.raises(cls) as info:
        build_graph(load_source(text, "m.cnn"))
    err = info.value
    assert isinstance(err, CnncError)
    assert (err.file, err.line, err.column) == ("m.cnn", line, column), err.message
    assert fragment in err.message


def test_no_network():
    with pytest.raises(CnncNameError, match="no network in this file"):
        build_graph(load_source("block b(c) { conv(c, 1x1) }\n", "m.cnn"))


def test_cyclic_import(tmp_path):
    (tmp_path / "a.cnn").write_text('import "b.cnn"\nnetwork n(input: 1x2x2) { relu }\n')
    (tmp_path / "b.cnn").write_text('\nimport "a.cnn"\n')
    with pytest.raises(CnncImportError) as info:
        load_program(str(tmp_path / "a.cnn"))
    err = info.value
    assert "import cycle: a.cnn -> b.cnn -> a.cnn" in err.message
    assert (os.path.basename(err.file), err.line, err.column) == ("b.cnn", 2, 1)


def test_error_inside_imported_file_points_there(tmp_path):
    (tmp_path / "lib.cnn").write_text("block b(c) {\n  conv(c, 1x1) -> rleu\n}\n")
    (tmp_path / "m.cnn").write_text('import "lib.cnn"\nnetwork n(input: 1x2x2) { b(2) }\n')
    with pytest.raises(CnncNameError) as info:
        load_program(str(tmp_path / "m.cnn"))
    assert os.path.basename(info.value.file) == "lib.cnn"
    assert (info.value.line, info.value.column) == (2, 19)


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "bad.cnn"
    path.write_bytes(b"network n(input: 1x2x2) { relu }\n\xff\xfe\n")
    with pytest.raises(CnncError, match="not UTF-8 text"):
        load_program(str(path))


def test_format_error_draws_a_caret():
    with pytest.raises(CnncError) as info:
        build_graph(load_source(N + "  conv(8, 3x3)\n  reluu\n}\n", "m.cnn"))
    info.value.source_line = "  reluu"
    assert format_error(info.value) == (
        "m.cnn:3:3: error: unknown layer or block 'reluu' (did you mean 'relu'?)\n"
        "      reluu\n"
        "      ^")


MORE_CASES = [
    ("label-input-reserved", N + "  input: conv(4, 1x1)\n}\n", CnncNameError, 2, 3,
     "the label 'input' is reserved"),
    ("label-input-in-branch", N + "  concat { input: relu | identity }\n}\n", CnncNameError, 2,
     12, "the label 'input' is reserved"),
    ("semicolon-in-parentheses", N + "  conv(8, 3x3;)\n}\n", CnncSyntaxError, 2, 14,
     "unexpected ';'"),
    ("pad-two-integers", N + "  pad(1, 2)\n}\n", CnncValueError, 2, 10, "pad takes one amount"),
    ("network-defined-twice",
     "network n(input: 1x2x2) { relu }\nnetwork n(input: 1x2x2) { relu }\n",
     CnncNameError, 2, 1, "network 'n' is defined twice"),
]


@pytest.mark.parametrize("case", MORE_CASES, ids=[c[0] for c in MORE_CASES])
def test_more_errors(case):
    test_error_message_and_position(case)


@pytest.mark.parametrize("text", [
    N + "  conv(" + "-" * 3000 + "1, 1x1)\n}\n",
    N + "  conv(" + " + ".join(["1"] * 3000) + ", 1x1)\n}\n",
    N + "  " + "concat { " * 1500 + "relu" + " }" * 1500 + "\n}\n",
])
def test_very_deep_nesting_is_an_error_not_a_crash(text):
    with pytest.raises(CnncError, match="nest"):
        build_graph(load_source(text, "m.cnn"))


def test_imported_networks_are_visible_by_name(tmp_path):
    (tmp_path / "lib.cnn").write_text("network small(input: 1x4x4) { conv(2, 1x1) }\n")
    (tmp_path / "m.cnn").write_text('import "lib.cnn"\nnetwork big(input: 3x4x4) { relu }\n')
    program = load_program(str(tmp_path / "m.cnn"))
    assert build_graph(program).graph["name"] == "big"  # None picks the file's own
    assert build_graph(program, "small").graph["name"] == "small"
    (tmp_path / "only.cnn").write_text('import "lib.cnn"\n')
    with pytest.raises(CnncNameError, match="no network in this file"):
        build_graph(load_program(str(tmp_path / "only.cnn")))
    assert build_graph(load_program(str(tmp_path / "only.cnn")), "small").graph["name"] == "small"
