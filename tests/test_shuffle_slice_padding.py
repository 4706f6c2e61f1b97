"""LANGUAGE.md §11: `shuffle`, `slice`, pools' `ceil_mode` and four-sided `padding`,
against PyTorch at -O0 and -O2 (odd sizes, stride 2, batch 3), their errors, and how
summary and dump show them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import graph_of, net_src, rel_err

import cnnc
from cnnc.graph import schedule
from cnnc.lower import lower_node
from cnnc.memory import plan_buffers
from cnnc.passes import optimize
from cnnc.report import dump_text, summary_text

TOL = 1e-5
LEVELS = [0, 2]


def _run(body: str, shape: tuple, opt_level: int, batch: int = 3):
    """(cnnc output, torch input, torch weights by name, network) with random weights."""
    net = cnnc.compile_source(net_src(body, "x".join(map(str, shape))), opt_level=opt_level)
    rng = np.random.default_rng(5)
    weights = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in
               net.parameters().items()}
    net.load_weights(weights)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    w = {k: torch.from_numpy(v) for k, v in weights.items()}
    return net(x), torch.from_numpy(x), w, net


def _check(got: np.ndarray, ref: torch.Tensor) -> None:
    assert got.shape == tuple(ref.shape)
    assert rel_err(got, ref.numpy()) <= TOL


def _conv(x, w, name, **kw):
    return F.conv2d(x, w[f"{name}.weight"], w[f"{name}.bias"], **kw)


def _error(body: str, shape: str = "12x5x7") -> cnnc.CnncError:
    with pytest.raises(cnnc.CnncError) as info:
        graph_of(net_src(body, shape))
    return info.value


# ---------------------------------------------------------------- shuffle
@pytest.mark.parametrize("opt_level", LEVELS)
def test_shuffle_matches_torch(opt_level):
    """After a conv (whose epilogue -O2 fuses) and before one; torch's own ChannelShuffle."""
    body = "conv(12, 3x3, stride=2, padding=1) -> relu -> shuffle(3) -> conv(5, 1x1)"
    got, x, w, net = _run(body, (4, 9, 7), opt_level)
    ref = _conv(nn.ChannelShuffle(3)(F.relu(_conv(x, w, "conv1", stride=2, padding=1))),
                w, "conv2")
    _check(got, ref)
    assert net.graph.nodes["shuffle1"]["op"] == "shuffle"


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_shuffle_of_the_input_is_the_transpose_of_the_groups(groups):
    got, x, _, _ = _run(f"shuffle({groups})", (8, 3, 5), 2)
    _check(got, nn.ChannelShuffle(groups)(x))


def test_shuffle_groups_must_divide_the_depth():
    err = _error("conv(12, 1x1)\nshuffle(5)")
    assert isinstance(err, cnnc.CnncShapeError)
    assert "shuffle: groups=5 does not divide the input depth 12" in err.message
    assert (err.line, err.column) == (3, 1)


@pytest.mark.parametrize("body, message", [
    ("shuffle(0)", "shuffle: groups must be positive, got 0"),
    ("shuffle", "shuffle needs the argument 'groups'"),
    ("shuffle(2x2)", "shuffle: groups must be an integer, got 2x2"),
    ("dense(12) -> shuffle(2)", "shuffle needs a CxHxW input"),
])
def test_shuffle_argument_errors(body, message):
    assert message in _error(body).message


# ---------------------------------------------------------------- slice
@pytest.mark.parametrize("opt_level", LEVELS)
def test_slice_matches_torch(opt_level):
    """ShuffleNetV2's split, and a slice of a concat, of the input and of features."""
    body = """conv(10, 3x3, stride=2) -> relu
              concat { slice(0, 4) | slice(4, 6) -> conv(6, 1x1) -> relu } -> slice(3, 5)
              dense(9) -> slice(2, 4)"""
    got, x, w, _ = _run(body, (3, 9, 11), opt_level)
    a = F.relu(_conv(x, w, "conv1", stride=2))
    b = torch.cat([a[:, :4], F.relu(_conv(a[:, 4:], w, "conv2"))], 1)[:, 3:8]
    ref = F.linear(b.flatten(1), w["dense1.weight"], w["dense1.bias"])[:, 2:6]
    _check(got, ref)


@pytest.mark.parametrize("opt_level", LEVELS)
def test_slice_of_the_input_as_the_output(opt_level):
    got, x, _, _ = _run("slice(1, 2)", (4, 3, 5), opt_level)
    _check(got, x[:, 1:3])


def test_slice_is_a_view_of_its_producer():
    """No kernel runs for a slice: its tensor is channels start.. of its input's buffer."""
    graph = optimize(graph_of(net_src("conv(10, 3x3) -> slice(3, 5) -> relu", "3x7x7")))
    order = schedule(graph)
    views = plan_buffers(graph, order, reuse=True).views
    conv, part = views["conv1"], views["slice1"]
    assert (part.group, part.c0, part.channels) == (conv.group, conv.c0 + 3, 5)
    assert lower_node(graph, "slice1", views) == []


def test_slice_out_of_range_is_an_error_at_the_slice():
    err = _error("conv(10, 1x1)\nslice(6, 5)")
    assert isinstance(err, cnnc.CnncShapeError)
    assert "slice: channels 6..10 are beyond the input depth 10" in err.message
    assert (err.line, err.column) == (3, 1)


@pytest.mark.parametrize("body, message", [
    ("slice(0, 0)", "slice: count must be positive, got 0"),
    ("slice(-1, 2)", "slice: start must be at least 0, got -1"),
    ("slice(2)", "slice needs the argument 'count'"),
    ("slice(12, 1)", "slice: channels 12..12 are beyond the input depth 12"),
])
def test_slice_argument_errors(body, message):
    assert message in _error(body).message


# ---------------------------------------------------------------- ceil_mode
# (kernel, stride, padding) on a 5x8 input: 3/3/1 on 5 rows is a case of PyTorch's
# "minus one" (the last window would start in the bottom padding), 2/2/0 on 5 an odd
# size whose last window is partial
CEIL_CASES = [(3, 2, 0), (3, 2, 1), (2, 2, 0), (3, 3, 1), (2, 1, 1)]


@pytest.mark.parametrize("opt_level", LEVELS)
@pytest.mark.parametrize("k, s, p", CEIL_CASES)
def test_ceil_mode_pools_match_torch(k, s, p, opt_level):
    body = f"""concat {{ maxpool({k}, stride={s}, padding={p}, ceil_mode=true)
                       | avgpool({k}, stride={s}, padding={p}, ceil_mode=true) }}"""
    got, x, _, _ = _run(body, (2, 5, 8), opt_level)
    ref = torch.cat([F.max_pool2d(x, k, s, p, ceil_mode=True),
                     F.avg_pool2d(x, k, s, p, ceil_mode=True, count_include_pad=False)], 1)
    _check(got, ref)


def test_ceil_mode_drops_the_window_that_starts_in_padding():
    """3x3/3, padding 1 on 5 rows: ceil((5+2-3)/3)+1 = 3 windows, the third would start
    at row 6 of the padded 7, in the padding: 2 rows, as PyTorch gives."""
    graph = graph_of(net_src("maxpool(3, stride=3, padding=1, ceil_mode=true)", "1x5x8"))
    assert graph.nodes["maxpool1"]["shape"] == (1, 2, 3)
    assert F.max_pool2d(torch.zeros(1, 1, 5, 8), 3, 3, 1, ceil_mode=True).shape[2:] == (2, 3)
    floor = graph_of(net_src("maxpool(2, stride=2)", "1x5x7"))
    ceil = graph_of(net_src("maxpool(2, stride=2, ceil_mode=true)", "1x5x7"))
    assert floor.nodes["maxpool1"]["shape"] == (1, 2, 3)
    assert ceil.nodes["maxpool1"]["shape"] == (1, 3, 4)


def test_ceil_mode_is_only_for_pools():
    assert "conv has no argument 'ceil_mode'" in _error("conv(4, 3, ceil_mode=true)").message
    assert "maxpool: ceil_mode must be true or false, got 1" in _error(
        "maxpool(2, ceil_mode=1)").message
    assert "maxpool(global) takes no other arguments" in _error(
        "maxpool(global, ceil_mode=true)").message


# ---------------------------------------------------------------- four-sided padding
def _max_ref(x, k, s, pads, ceil_mode=False):
    """A max pool with padding (t, b, l, r) and PyTorch's ceil rule: the input padded
    with -inf, pooled, and the trailing windows that saw no input cell (-inf: they start
    in the bottom/right padding) dropped."""
    top, bottom, left, right = pads
    y = F.max_pool2d(F.pad(x, (left, right, top, bottom), value=float("-inf")), k, s,
                     ceil_mode=ceil_mode)
    return _drop_empty_tail(y, torch.isinf(y))


def _avg_ref(x, k, s, pads, ceil_mode=False):
    """An average over the window's input cells: window sums of the zero-padded input
    over window counts of ones; windows with no input cell (0/0) dropped as above."""
    top, bottom, left, right = pads

    def sums(v):
        return F.avg_pool2d(F.pad(v, (left, right, top, bottom)), k, s, ceil_mode=ceil_mode,
                            divisor_override=1)
    y = sums(x) / sums(torch.ones_like(x))
    return _drop_empty_tail(y, torch.isnan(y))


def _drop_empty_tail(y, empty):
    rows, cols = y.shape[2], y.shape[3]
    while rows and empty[:, :, rows - 1, :cols].all():
        rows -= 1
    while cols and empty[:, :, :rows, cols - 1].all():
        cols -= 1
    assert not empty[:, :, :rows, :cols].any()
    return y[:, :, :rows, :cols]


@pytest.mark.parametrize("opt_level", LEVELS)
@pytest.mark.parametrize("depth", [8, 2], ids=["packed", "generic"])
def test_four_sided_conv_padding_matches_torch(depth, opt_level):
    body = f"conv({depth}, 3x2, stride=2, padding=1x2x0x3) -> relu"
    got, x, w, net = _run(body, (3, 9, 8), opt_level)
    assert net.graph.nodes["conv1"]["attrs"]["pads"] == (1, 2, 0, 3)
    _check(got, F.relu(_conv(F.pad(x, (0, 3, 1, 2)), w, "conv1", stride=2)))


@pytest.mark.parametrize("opt_level", LEVELS)
@pytest.mark.parametrize("pads, ceil_mode", [((1, 0, 0, 1), False), ((0, 1, 1, 0), True),
                                             ((1, 1, 0, 1), True), ((0, 0, 1, 1), True)])
def test_four_sided_pool_padding_matches_torch(pads, ceil_mode, opt_level):
    padding, ceil = "x".join(map(str, pads)), str(ceil_mode).lower()
    body = f"""concat {{ maxpool(3, stride=2, padding={padding}, ceil_mode={ceil})
                       | avgpool(3, stride=2, padding={padding}, ceil_mode={ceil}) }}"""
    got, x, _, _ = _run(body, (2, 7, 8), opt_level)
    ref = torch.cat([_max_ref(x, 3, 2, pads, ceil_mode), _avg_ref(x, 3, 2, pads, ceil_mode)],
                    1)
    _check(got, ref)


def test_the_references_agree_with_torch_where_it_pads():
    """_max_ref and _avg_ref against PyTorch's own symmetric padding and ceil mode."""
    x = torch.randn(2, 3, 5, 8)
    for k, s, p in CEIL_CASES:
        for ceil_mode in (False, True):
            assert torch.equal(_max_ref(x, k, s, (p,) * 4, ceil_mode),
                               F.max_pool2d(x, k, s, p, ceil_mode=ceil_mode))
            want = F.avg_pool2d(x, k, s, p, ceil_mode=ceil_mode, count_include_pad=False)
            assert torch.allclose(_avg_ref(x, k, s, (p,) * 4, ceil_mode), want, atol=1e-6)


@pytest.mark.parametrize("body, message", [
    ("maxpool(3, padding=0x2x0x0)", "maxpool: padding 0x2x0x0 is more than half the kernel 3x3"),
    ("avgpool(2x4, padding=0x0x2x3)",
     "avgpool: padding 0x0x2x3 is more than half the kernel 2x4"),
    ("conv(4, kernel=1x2x3x4)",
     "conv: kernel must be an integer or HxW, got 1x2x3x4 (four sizes TxBxLxR are only for "
     "padding)"),
    ("conv(4, 3, stride=1x1x1x1)", "conv: stride must be an integer or HxW, got 1x1x1x1"),
    ("maxpool(2, stride=2x2x2x2)", "maxpool: stride must be an integer or HxW"),
    ("conv(4, 3, dilation=1x1x1x1)", "conv: dilation must be an integer or HxW"),
    ("conv(4, 3, padding=1x2x3)",
     "conv: padding must be same, valid, an integer, HxW or TxBxLxR, got 1x2x3"),
    ("conv(4, 3, padding=1x2x3x4x5)", "got 1x2x3x4x5"),
    ("pad(1x2x3x4)", "pad: amount must be an integer or HxW, got 1x2x3x4 (four sides are "
                     "written pad(top, bottom, left, right))"),
])
def test_four_part_dimensions_only_for_padding(body, message):
    err = _error(body)
    assert message in err.message
    assert err.line == 2


def test_pool_padding_error_points_at_the_pool():
    err = _error("conv(4, 3)\nmaxpool(3, padding=2x0x0x0)")
    assert (err.line, err.column) == (3, 1)


# ---------------------------------------------------------------- fold-padding
@pytest.mark.parametrize("opt_level", LEVELS)
def test_asymmetric_pad_folds_into_a_conv(opt_level):
    body = "pad(1, 0, 2, 1) -> conv(4, 3x3, stride=2, padding=1x0x0x1)"
    got, x, w, net = _run(body, (3, 8, 7), opt_level)
    if opt_level:
        assert "pad1" not in net.graph
        attrs = net.graph.nodes["conv1"]["attrs"]
        assert attrs["pads"] == attrs["padding"] == (2, 0, 2, 2)
    _check(got, _conv(F.pad(x, (2, 2, 2, 0)), w, "conv1", stride=2))


@pytest.mark.parametrize("opt_level", LEVELS)
def test_asymmetric_pad_folds_into_a_ceil_mode_maxpool_after_relu(opt_level):
    body = "relu -> pad(0, 1, 1, 0) -> maxpool(3, stride=2, padding=1x0x0x1, ceil_mode=true)"
    got, x, _, net = _run(body, (2, 8, 7), opt_level)
    if opt_level:
        assert "pad1" not in net.graph
        assert net.graph.nodes["maxpool1"]["attrs"]["pads"] == (1, 1, 1, 1)
    padded = F.pad(F.relu(x), (1, 0, 0, 1))
    _check(got, _max_ref(padded, 3, 2, (1, 0, 0, 1), ceil_mode=True))


@pytest.mark.parametrize("opt_level", LEVELS)
def test_pad_before_a_ceil_mode_avgpool_keeps_its_zeros(opt_level):
    """The pad's zeros count in the mean; the pool's own padding does not."""
    body = "pad(0, 1, 0, 1) -> avgpool(2, stride=2, ceil_mode=true)"
    got, x, _, net = _run(body, (2, 6, 5), opt_level)
    assert "pad1" in net.graph
    _check(got, _avg_ref(F.pad(x, (0, 1, 0, 1)), 2, 2, (0, 0, 0, 0), ceil_mode=True))


# ---------------------------------------------------------------- summary and dump
SHOWN = """conv(12, 3x3, padding=1x2x0x1) -> maxpool(3, stride=2, ceil_mode=true)
           concat { slice(0, 6) | slice(6, 6) -> conv(6, 1x1) } -> shuffle(3)"""


def test_dump_and_summary_show_the_new_layers():
    graph = graph_of(net_src(SHOWN, "3x9x10"))
    dump = dump_text(graph)
    assert "conv1 = conv(depth=12, kernel=3x3, stride=1x1, padding=1x2x0x1," in dump
    assert "pads=1x2x0x1) <- [input] : 12x10x9" in dump
    assert ("maxpool1 = maxpool(kernel=3x3, stride=2x2, padding=valid, ceil_mode=true, "
            "global=false, pads=0x0x0x0) <- [conv1] : 12x5x4") in dump
    assert "slice2 = slice(start=6, count=6) <- [maxpool1] : 6x5x4" in dump
    assert "shuffle1 = shuffle(groups=3) <- [concat1] : 12x5x4" in dump
    rows = {line.split()[0]: line.split() for line in summary_text(graph).splitlines()
            if line.strip()}
    assert rows["slice1"][:4] == ["slice1", "slice", "6x5x4", "0"]
    assert rows["shuffle1"][:4] == ["shuffle1", "shuffle", "12x5x4", "0"]
    assert rows["maxpool1"][:3] == ["maxpool1", "maxpool", "12x5x4"]
