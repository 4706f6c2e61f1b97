"""Hostile inputs to the front end: every one is a located CnncError, quickly.

Integers are bounded by INT_LIMIT on every arithmetic step; sources are regular
files of bounded size holding text; nesting is bounded; errors render escaped.
Anything that used to hang or eat memory runs in a child process with a
timeout and an address-space limit, so a regression fails instead of hanging.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from cnnc import (
    CnncError,
    CnncImportError,
    CnncShapeError,
    CnncSyntaxError,
    CnncValueError,
    frontend,
)
from cnnc.diagnostics import format_error
from cnnc.frontend import INT_LIMIT, MAX_NESTING, MAX_SOURCE_BYTES, did_you_mean
from cnnc.graph import MAX_LAYERS, build_graph, load_program, load_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = "network n(input: 3x8x8) {\n"
# A hang guard, not a speed check: these refusals take milliseconds on a quiet machine;
# the bound catches a hang or a blow-up, and must hold on a loaded machine too (a
# 2-second bound failed at 2.7 s there).
QUICK_S = 10.0


def error_of(text: str, file: str = "m.cnn") -> CnncError:
    """The error that checking `text` gives, timed: every refusal here is quick."""
    start = time.perf_counter()
    with pytest.raises(CnncError) as info:
        build_graph(load_source(text, file))
    assert time.perf_counter() - start < QUICK_S
    return info.value


def located(err: CnncError) -> tuple:
    return err.file, err.line, err.column


def run_isolated(code: str, timeout: float = 20.0, cwd: str | None = None):
    """Run Python `code` in a child limited to 2 GiB of address space; fail on a hang."""
    limit = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n")
    env = {**os.environ, "PYTHONPATH": ROOT}
    try:
        return subprocess.run([sys.executable, "-c", limit + textwrap.dedent(code)],
                              capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for more than {timeout} s")


# ---------------------------------------------------------------- item 4: integers
def squaring_blocks(times: int) -> str:
    """b{times}(2) squares its parameter `times` times on the way down to a conv."""
    text = "block b0(c) { conv(c, 1x1) }\n"
    for i in range(1, times + 1):
        text += f"block b{i}(c) {{ b{i - 1}(c*c) }}\n"
    return text + N + f"  b{times}(2)\n}}\n"


def test_a_5000_digit_literal_is_refused_at_the_literal():
    err = error_of(N + "  conv(" + "9" * 5000 + ", 1x1)\n}\n")
    assert isinstance(err, CnncValueError)
    assert located(err) == ("m.cnn", 2, 8)
    assert f"larger than {INT_LIMIT}" in err.message and "(5000 characters)" in err.message
    assert len(format_error(err)) < 500  # the line is cut around the caret


def test_leading_zeros_do_not_count():
    graph = build_graph(load_source(N + "  conv(" + "0" * 5000 + "4, 1x1)\n}\n"))
    assert graph.nodes["conv1"]["attrs"]["depth"] == 4


def test_squaring_14_times_stops_at_the_step_that_overflows():
    err = error_of(squaring_blocks(14))
    assert isinstance(err, CnncValueError)
    # 2 -> 4 -> 16 -> 256 -> 65536; b10 computes 65536*65536 (line 11, `c*c` at column 19)
    assert located(err) == ("m.cnn", 11, 19)
    assert f"65536 * 65536 = 4294967296 is beyond the integer limit {INT_LIMIT}" in err.message


def test_squaring_32_times_does_not_build_a_huge_integer():
    result = run_isolated(f"""
        from cnnc.graph import build_graph, load_source
        from cnnc import CnncValueError
        try:
            build_graph(load_source({squaring_blocks(32)!r}, "m.cnn"))
        except CnncValueError as err:
            print(err)
        """, timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("m.cnn:29:20: 65536 * 65536")  # in b28


@pytest.mark.parametrize("expr, column", [
    ("65536*65536", 8), ("2147483647+1", 8), ("-2147483647-1", 8), ("1 + 46341*46341", 12),
])
def test_every_arithmetic_step_is_bounded(expr, column):
    err = error_of(N + f"  conv({expr}, 1x1)\n}}\n")
    assert isinstance(err, CnncValueError)
    assert located(err) == ("m.cnn", 2, column)
    assert "beyond the integer limit" in err.message


def test_the_limit_itself_is_a_value():
    text = N + f"  pad({INT_LIMIT // 2 - 8}, 0, 0, 0) -> pad(0, 2147483647-2147483647, 0, 0)\n}}\n"
    assert build_graph(load_source(text)).nodes["pad1"]["shape"] == (3, INT_LIMIT // 2, 8)


@pytest.mark.parametrize("body, column, fragment", [
    ("pad(2147483648)", 7, "the integer 2147483648 is larger than 2147483647"),
    ("conv(4, 1x1, stride=1e23)", 23, "stride must be an integer or HxW, got 1e+23"),
    ("conv(4, 3, dilation=1e23)", 23, "dilation must be an integer or HxW, got 1e+23"),
    ("conv(4, 3, stride=100000000000000000000000)", 21, "larger than 2147483647"),
    ("conv(4, 3x99999999999)", 13, "the integer 99999999999 is larger"),
    ("leaky_relu(1e400)", 14, "the decimal 1e400 is out of range"),
    ("dropout(p=0." + "9" * 400 + "e999)", 13, "out of range"),
])
def test_out_of_range_values_point_at_the_value(body, column, fragment):
    err = error_of(N + f"  {body}\n}}\n")
    assert isinstance(err, CnncValueError)
    assert located(err) == ("m.cnn", 2, column)
    assert fragment in err.message


def test_an_input_size_beyond_the_limit_points_at_it():
    err = error_of("network n(input: 3x8x4294967296) { relu }\n")
    assert located(err) == ("m.cnn", 1, 22)
    assert "the integer 4294967296 is larger" in err.message


def test_absurd_but_valid_sizes_stay_small_integer_arithmetic():
    # each size is in range; whether it fits in memory is the runtime's memory guard
    text = "network n(input: 100000x100000x100000) {\n  conv(4, 3) -> maxpool(2)\n}\n"
    start = time.perf_counter()
    graph = build_graph(load_source(text))
    assert time.perf_counter() - start < QUICK_S
    assert graph.nodes["maxpool1"]["shape"] == (4, 49999, 49999)


@pytest.mark.parametrize("body, layer", [
    ("flatten", "flatten1"),  # 10**15 features
    ("dense(10)", "dense1"),
    ("pad(1000000000) -> pad(1000000000)", "pad2"),
])
def test_a_computed_size_beyond_the_limit_is_a_shape_error(body, layer):
    err = error_of("network n(input: 100000x100000x100000) {\n  " + body + "\n}\n")
    assert isinstance(err, CnncShapeError)
    assert err.message.startswith(f"layer '{layer}':") and "beyond the limit" in err.message
    assert err.line == 2


def test_a_network_that_expands_exponentially_is_refused():
    blocks = "block b0(c) { relu }\n" + "".join(
        f"block b{i}(c) {{ b{i - 1}(c); b{i - 1}(c) }}\n" for i in range(1, 26))
    result = run_isolated(f"""
        from cnnc.graph import build_graph, load_source
        from cnnc import CnncValueError
        try:
            build_graph(load_source({blocks + N + "  b25(1)" + chr(10) + "}"!r}, "m.cnn"))
        except CnncValueError as err:
            print(err)
        """, timeout=30)
    assert result.returncode == 0, result.stderr
    assert f"the network expands to more than {MAX_LAYERS:,} layers" in result.stdout


# ---------------------------------------------------------------- nesting
@pytest.mark.parametrize("arg, cls, column", [
    # the network's brace and conv's parenthesis are the first two levels
    ("(" * 5000 + "1" + ")" * 5000, CnncSyntaxError, 8 + MAX_NESTING - 2),
    ("1+" * 5000 + "1", CnncSyntaxError, 8),
    ("-" * 5000 + "1", CnncSyntaxError, None),
    ("2" + "*1" * 5000, CnncSyntaxError, 8),
])
def test_deep_expressions_are_located_errors(arg, cls, column):
    err = error_of(N + f"  conv({arg}, 1x1)\n}}\n")
    assert isinstance(err, cls) and err.line == 2, err
    assert column is None or err.column == column
    assert "nested" in err.message


@pytest.mark.parametrize("kind", ["concat", "add"])
def test_deeply_nested_branches_are_located_errors(kind):
    err = error_of(N + "  " + f"{kind} {{ " * 5000 + "relu" + " }" * 5000 + "\n}\n")
    assert isinstance(err, CnncSyntaxError)
    # the network's brace is the first level; the error is at the brace one too many
    opening = len(f"{kind} {{ ")
    assert err.line == 2 and err.column == 3 + opening * (MAX_NESTING - 1) + len(kind) + 1
    assert f"nested more than {MAX_NESTING} levels deep" in err.message


def test_a_long_chain_of_blocks_is_a_located_error():
    text = "block b0(c) { relu }\n" + "".join(
        f"block b{i}(c) {{ b{i - 1}(c) }}\n" for i in range(1, 2000)) + N + "  b1999(1)\n}\n"
    err = error_of(text)
    assert isinstance(err, CnncValueError)
    assert "nested more than" in err.message
    assert err.line is not None and err.line < 2000  # in a block, not at the network


def test_a_long_chain_of_blocks_defined_top_down_is_a_located_error():
    # the recursion check walks from b1999 down before any network is built
    text = "".join(f"block b{i}(c) {{ b{i - 1}(c) }}\n" for i in range(1999, 0, -1))
    err = error_of(text + "block b0(c) { relu }\n" + N + "  relu\n}\n")
    assert isinstance(err, CnncValueError)
    assert err.message.startswith("blocks nested more than 200 deep: b1999 -> b1998 -> b1997")
    assert located(err) == ("m.cnn", 200, 18)  # b1800 calling b1799


def test_a_long_chain_of_imports_is_a_located_error(tmp_path):
    for i in range(200):
        (tmp_path / f"f{i}.cnn").write_text(f'import "f{i + 1}.cnn"\n')
    (tmp_path / "f200.cnn").write_text("network n(input: 1x2x2) { relu }\n")
    with pytest.raises(CnncImportError) as info:
        load_program(str(tmp_path / "f0.cnn"))
    assert "imports nested more than" in info.value.message
    assert (info.value.line, info.value.column) == (1, 1)


def test_a_file_of_too_many_tokens_is_refused_at_the_first_one_too_many(monkeypatch):
    monkeypatch.setattr(frontend, "MAX_TOKENS", 50)  # the real limit takes seconds to reach
    err = error_of(N + "  relu;" * 30 + "\n}\n")
    assert isinstance(err, CnncSyntaxError)
    # `network n ( input : 3x8x8 ) {` and a newline are 9 tokens, each `  relu;` 2 more:
    # the 51st is the `;` of the 21st relu
    assert located(err) == ("m.cnn", 2, 1 + 7 * 20 + 6)
    assert "more than 50 tokens, the limit for a .cnn file" in err.message


def test_a_very_long_name_is_reported_quickly_and_abbreviated():
    start = time.perf_counter()
    assert did_you_mean("a" * 5_000_000, ["relu", "conv"]) == ""
    assert time.perf_counter() - start < QUICK_S
    err = error_of(N + "  relu -> " + "relux" * 1000 + "\n}\n")
    assert err.message == ("unknown layer or block "
                           "'reluxreluxreluxrelux...luxrelux (5000 characters)'")
    err = error_of(N + "  relu " + "relux" * 1000 + "\n}\n")
    assert err.message.startswith("unexpected 'reluxreluxreluxrelux...luxrelux (5000 characters)'")


# ---------------------------------------------------------------- item 7: reading sources
def test_importing_dev_zero_is_refused(tmp_path):
    (tmp_path / "zero.cnn").symlink_to("/dev/zero")
    for target in ("/dev/zero", "zero.cnn"):
        (tmp_path / "m.cnn").write_text(f'import "{target}"\nnetwork n(input: 1x2x2) {{ relu }}\n')
        result = run_isolated(f"""
            from cnnc.graph import load_program
            from cnnc import CnncImportError
            try:
                load_program({str(tmp_path / "m.cnn")!r})
            except CnncImportError as err:
                print(err)
            """, timeout=20)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"{tmp_path / 'm.cnn'}:1:1: cannot import '{target}'")


def test_dev_zero_and_a_fifo_as_the_main_file_are_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe.cnn")
    for path in ("/dev/zero", str(tmp_path / "pipe.cnn")):
        result = run_isolated(f"""
            from cnnc.graph import load_program
            from cnnc import CnncImportError
            try:
                load_program({path!r})
            except CnncImportError as err:
                print(err)
            """, timeout=20)
        assert result.stdout == f"{path}: not a regular file\n", result.stderr


def test_importing_a_fifo_does_not_block(tmp_path):
    os.mkfifo(tmp_path / "pipe.cnn")
    (tmp_path / "m.cnn").write_text('import "pipe.cnn"\nnetwork n(input: 1x2x2) { relu }\n')
    result = subprocess.run([sys.executable, "-m", "cnnc.cli", "check", str(tmp_path / "m.cnn")],
                            capture_output=True, text=True, timeout=20,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"{tmp_path / 'm.cnn'}:1:1: error: cannot import 'pipe.cnn': not a regular file\n")
    assert "Traceback" not in result.stderr


def test_format_error_never_opens_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe.cnn")
    result = run_isolated(f"""
        from cnnc.diagnostics import format_error
        from cnnc.errors import CnncError
        print(format_error(CnncError("bad", file={str(tmp_path / "pipe.cnn")!r}, line=1, column=1)))
        """, timeout=20)
    assert result.stdout == f"{tmp_path / 'pipe.cnn'}:1:1: error: bad\n", result.stderr


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path):
    path = tmp_path / "big.cnn"
    with open(path, "wb") as fh:
        fh.truncate(MAX_SOURCE_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(CnncImportError, match="larger than 16 MiB"):
        load_program(str(path))
    ok = tmp_path / "ok.cnn"
    ok.write_text("network n(input: 1x2x2) { relu }\n" + "#" * (MAX_SOURCE_BYTES - 40) + "\n")
    assert os.path.getsize(ok) <= MAX_SOURCE_BYTES
    assert load_program(str(ok)).networks[0].name == "n"


SECRET = "root:$6$Xy7abc$Secret.Hash.Value:19000:0:99999:7:::"


@pytest.mark.parametrize("name", ["shadow", "shadow.cnn"])
def test_an_import_never_shows_a_line_of_a_file_that_is_not_cnn(tmp_path, name):
    (tmp_path / "shadow").write_text(SECRET + "\n")
    if name.endswith(".cnn"):
        (tmp_path / name).symlink_to(tmp_path / "shadow")  # a link may not smuggle it in
    (tmp_path / "m.cnn").write_text(f'import "{name}"\nnetwork n(input: 1x2x2) {{ relu }}\n')
    with pytest.raises(CnncImportError) as info:
        load_program(str(tmp_path / "m.cnn"))
    shown = format_error(info.value)
    assert "Secret" not in shown and "$6$" not in shown
    assert shown.startswith(f"{tmp_path / 'm.cnn'}:1:1: error: cannot import '{name}': only .cnn")


@pytest.mark.parametrize("data, fragment", [
    (b"network n(input: 1x2x2) { relu } # \x1b[2J\x1b]0;pwned\x07\n",
     "control character \\x1b on line 1"),
    (b"network n(input: 1x2x2) {\n relu\n}\n\x00\x00\x00", "control character \\x00 on line 4"),
    (b"network n(input: 1x2x2) { relu }\n\xff\xfe\n",
     ": not UTF-8 text (invalid byte at offset 33"),
])
def test_binary_or_control_text_is_not_cnn_and_is_not_quoted(tmp_path, data, fragment):
    path = tmp_path / "bad.cnn"
    path.write_bytes(data)
    (tmp_path / "m.cnn").write_text('import "bad.cnn"\nnetwork m(input: 1x2x2) { relu }\n')
    with pytest.raises(CnncError) as info:
        load_program(str(path))
    assert info.value.line is None  # no line to quote
    assert format_error(info.value).startswith(f"{path}: error: not a .cnn text file")
    assert fragment in format_error(info.value)
    with pytest.raises(CnncImportError) as info:
        load_program(str(tmp_path / "m.cnn"))
    assert located(info.value)[1:] == (1, 1) and "not a .cnn text file" in info.value.message
    assert "\x1b" not in format_error(info.value) and "\x00" not in format_error(info.value)


def test_a_utf8_bom_is_dropped(tmp_path):
    path = tmp_path / "bom.cnn"
    path.write_bytes(b"\xef\xbb\xbfnetwork n(input: 1x2x2) { relu }\n")
    assert load_program(str(path)).networks[0].name == "n"


# ---------------------------------------------------------------- escaped rendering
def test_format_error_escapes_file_name_message_and_source_line():
    err = CnncError("unknown layer 'a\x1b[31m'", file="evil\x1b]0;x\x07.cnn", line=1, column=9,
                    source_line="  relu \u202e\x1b[2J x\ty")
    assert format_error(err) == (
        "evil\\x1b]0;x\\x07.cnn:1:9: error: unknown layer 'a\\x1b[31m'\n"
        "      relu \\u202e\\x1b[2J x y\n"
        "                 ^")  # under the escaped \\x1b, the column's character


def test_a_bidi_control_in_a_source_is_shown_escaped_with_the_caret_on_its_token():
    text = N + "  relu # \u202e }\n  reluu\n}\n"
    err = error_of(text)
    shown = format_error(err)
    assert "\u202e" not in shown
    assert shown.splitlines()[1:] == ["      reluu", "      ^"]
    err = error_of(N + "  relu \u202e\n}\n")
    assert format_error(err).splitlines()[1:] == ["      relu \\u202e", "           ^"]


def test_lines_are_counted_like_the_lexer_counts_them():
    # a form feed is white space to the lexer, not a line break: the caret's line is right
    err = error_of(N + "  relu ->\f relu\n  reluu\n}\n")
    assert located(err) == ("m.cnn", 3, 3)
    assert format_error(err).splitlines()[1] == "      reluu"


def test_cli_prints_no_raw_escape_from_a_path(tmp_path):
    path = tmp_path / "x\x1b[2J.cnn"
    path.write_text(N + "  reluu\n}\n")
    result = subprocess.run([sys.executable, "-m", "cnnc.cli", "check", str(path)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 1
    assert "\x1b" not in result.stderr
    assert "x\\x1b[2J.cnn:2:3: error: unknown layer" in result.stderr
