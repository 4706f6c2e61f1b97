"""dwconv, clip and mul (LANGUAGE.md §11) against PyTorch: each layer alone at -O0 and -O2
(odd sizes, stride 2, same/valid/explicit padding, multiplier 2, batch 3), fused by the
passes (padding, batch norm, activations, residuals, in-place concats), the broadcast of a
Cx1x1 branch in add and mul, the depthwise kernel's choice, names, summary and dump, and
the errors for bad arguments and shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import graph_of, net_src, rel_err, resolve_pads

import cnnc
from cnnc.lower import lower_node
from cnnc.memory import plan_buffers
from cnnc.passes import optimize, verify_graph
from cnnc.report import dump_text, summary_text

TOL = 1e-5


def _weights(net, seed=3) -> dict[str, np.ndarray]:
    """Random weights with non-zero biases and batch norms that change the values."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, value in net.parameters().items():
        if key.endswith("running_var"):
            out[key] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        else:
            out[key] = (rng.standard_normal(value.shape) * 0.5).astype(np.float32)
    return out


def _run(body: str, shape: str, opt_level: int, batch: int = 3, seed: int = 3):
    """(cnnc output, input as torch, torch weights by name, the network)."""
    net = cnnc.compile_source(net_src(body, shape), opt_level=opt_level, progress=False)
    weights = _weights(net, seed)
    net.load_weights(weights)
    c, h, w = map(int, shape.split("x"))
    x = (np.random.default_rng(seed + 1).standard_normal((batch, c, h, w)) * 2).astype(
        np.float32)
    return net(x), torch.from_numpy(x), {k: torch.from_numpy(v) for k, v in weights.items()}, net


def _check(got, ref, tol=TOL):
    assert got.shape == tuple(ref.shape)
    assert rel_err(got, ref.detach().numpy()) <= tol


def _torch_dwconv(x, w, b, kernel, stride, padding, dilation):
    """F.conv2d with groups = input depth, padded by the §5 rules."""
    kh, kw = kernel
    t, bo, le, r = resolve_pads(padding, x.shape[2], x.shape[3], kh, kw, *stride, *dilation)
    return F.conv2d(F.pad(x, (le, r, t, bo)), w, b, stride=stride, dilation=dilation,
                    groups=x.shape[1])


# ---------------------------------------------------------------- dwconv
# (input shape, arguments, kernel, stride, padding, dilation)
DW_CASES = [
    ("5x9x7", "3x3, padding=same", (3, 3), (1, 1), "same", (1, 1)),
    ("5x9x7", "3x3, stride=2, padding=same", (3, 3), (2, 2), "same", (1, 1)),
    ("3x11x10", "5x5, stride=2, padding=2, multiplier=2", (5, 5), (2, 2), (2, 2), (1, 1)),
    ("4x8x9", "3x3", (3, 3), (1, 1), "valid", (1, 1)),
    ("4x13x12", "3x5, stride=2x1, padding=1x2, dilation=2, multiplier=2", (3, 5), (2, 1),
     (1, 2), (2, 2)),
    ("6x7x7", "3x3, stride=2, padding=valid, multiplier=3, bias=false", (3, 3), (2, 2),
     "valid", (1, 1)),
    ("2x1x1", "1x1, multiplier=4", (1, 1), (1, 1), "valid", (1, 1)),
    ("8x70x67", "3x3, padding=same", (3, 3), (1, 1), "same", (1, 1)),  # > BLOCK positions
]


@pytest.mark.parametrize("opt_level", [0, 2])
@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: c[0] + " " + c[1])
def test_dwconv_against_torch(case, opt_level):
    shape, args, kernel, stride, padding, dilation = case
    got, x, w, net = _run(f"dwconv({args})", shape, opt_level)
    assert w["dwconv1.weight"].shape[1] == 1
    _check(got, _torch_dwconv(x, w["dwconv1.weight"], w.get("dwconv1.bias"), kernel, stride,
                              padding, dilation))


def test_dwconv_parameters_and_names():
    """Weight [multiplier x C, 1, kh, kw]; dwconv counts apart from conv (§6)."""
    net = cnnc.compile_source(net_src(
        "conv(4, 1x1) -> dwconv(3x3, multiplier=2) -> conv(6, 1x1) -> dw: dwconv(5x3) "
        "-> dwconv(1x1, bias=false)", "3x9x9"), progress=False)
    shapes = {k: v.shape for k, v in net.parameters().items()}
    assert shapes == {"conv1.weight": (4, 3, 1, 1), "conv1.bias": (4,),
                      "dwconv1.weight": (8, 1, 3, 3), "dwconv1.bias": (8,),
                      "conv2.weight": (6, 8, 1, 1), "conv2.bias": (6,),
                      "dw.weight": (6, 1, 5, 3), "dw.bias": (6,),
                      "dwconv2.weight": (6, 1, 1, 1)}


def _kernels(graph) -> dict[str, str]:
    """The kernel each node of an optimised graph runs."""
    order = list(graph.nodes)
    views = plan_buffers(graph, order, reuse=False).views
    return {node: step.kernel.py_func.__name__ for node in order
            for step in lower_node(graph, node, views)}


def test_depthwise_kernel_runs_dwconv_and_conv_with_groups_equal_to_depth():
    """One input channel per group gets the depthwise kernel, also for conv(groups=C)
    (it took the generic kernel before) and with a multiplier of 4 (the packed one)."""
    net = cnnc.compile_source(net_src(
        "dwconv(3x3) -> conv(8, 3x3, groups=8) -> dwconv(3x3, multiplier=4) "
        "-> conv(8, 3x3, groups=2)", "8x12x12"), progress=False)
    kernels = _kernels(net.graph)
    assert kernels["dwconv1"] == kernels["conv1"] == kernels["dwconv2"] == "conv2d_depthwise"
    assert kernels["conv2"] == "conv2d_packed"


@pytest.mark.parametrize("stride, pads, dilation", [((1, 1), (1, 1), (1, 1)),
                                                  ((2, 2), (0, 2), (1, 1)),
                                                  ((2, 1), (3, 0), (2, 3))])
def test_depthwise_kernel_touches_only_its_channels(stride, pads, dilation):
    """Channels 2..4 of the input buffer, channels 1..6 of the output buffer (multiplier
    2), clip in the store; every other output channel keeps its sentinel."""
    from cnnc import kernels as K
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, 9, 8)).astype(np.float32)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    xt = F.pad(torch.from_numpy(x[:, 2:5]), (pads[1], pads[1], pads[0], pads[0]))
    ref = torch.clamp(F.conv2d(xt, torch.from_numpy(w), torch.from_numpy(b), stride=stride,
                               dilation=dilation, groups=3), -0.5, 1.5)
    out = np.full((2, 9, *ref.shape[2:]), 7.0, np.float32)
    K.conv2d_depthwise(x, 2, 3, w, b, out, 1, *stride, *pads, *dilation, K.ACT_CLIP, -0.5,
                       1.5)
    assert np.all(out[:, [0, 7, 8]] == 7.0)
    _check(out[:, 1:7], ref)


def test_dwconv_folds_pad_batchnorm_and_activation():
    body = "pad(1) -> dwconv(3x3, stride=2, multiplier=2) -> batchnorm -> relu6"
    graph = optimize(graph_of(net_src(body, "3x9x8")), level=2)
    assert [d["op"] for _, d in graph.nodes(data=True)] == ["input", "dwconv"]
    attrs = graph.nodes["dwconv1"]["attrs"]
    assert attrs["pads"] == (1, 1, 1, 1) and attrs["activation"] == "relu6"
    for level in (0, 2):
        got, x, w, _ = _run(body, "3x9x8", level)
        conv = F.conv2d(F.pad(x, (1, 1, 1, 1)), w["dwconv1.weight"], w["dwconv1.bias"],
                        stride=2, groups=3)
        bn = F.batch_norm(conv, w["batchnorm1.running_mean"], w["batchnorm1.running_var"],
                          w["batchnorm1.weight"], w["batchnorm1.bias"], eps=1e-5)
        _check(got, F.relu6(bn))


def test_dwconv_in_place_in_a_concat():
    """The depthwise kernel writes at its channel offset in a concat's buffer."""
    body = "concat { relu | dwconv(3x3, padding=1) -> hardswish | identity }"
    got, x, w, net = _run(body, "3x7x9", 2)
    assert net.graph.nodes["concat1"]["attrs"]["inplace"] == [True, True, False]
    dw = F.hardswish(F.conv2d(x, w["dwconv1.weight"], w["dwconv1.bias"], padding=1, groups=3))
    _check(got, torch.cat([F.relu(x), dw, x], 1))


@pytest.mark.parametrize("body, message", [
    ("dwconv", "dwconv needs the argument 'kernel'"),
    ("dwconv(3x3, multiplier=0)", "dwconv: multiplier must be positive, got 0"),
    ("dwconv(3x3, multiplier=1.5)", "dwconv: multiplier must be an integer, got 1.5"),
    ("dwconv(3x3, groups=2)", "dwconv has no argument 'groups'"),
    ("dwconv(3x3, depth=8)", "dwconv has no argument 'depth'"),
    ("dwconv(3x3, 1, valid, 1, 2, true, 7)", "dwconv takes at most 6 arguments, got 7"),
    ("dwconv(9x9)", "layer .dwconv1.: dwconv: kernel 9x9 is larger than its input 8x8"),
    ("dense(4) -> dwconv(1x1)", "dwconv needs a CxHxW input, got features of shape"),
])
def test_dwconv_errors(body, message):
    with pytest.raises(cnnc.CnncError, match=message.replace("(", r"\(")):
        graph_of(net_src(body))


# ---------------------------------------------------------------- clip
@pytest.mark.parametrize("opt_level", [0, 2])
@pytest.mark.parametrize("args, lo, hi", [("-1, 2.5", -1, 2.5), ("0, 6", 0, 6),
                                          ("min=-0.5, max=-0.25", -0.5, -0.25),
                                          ("1, 1", 1, 1)])
def test_clip_alone(args, lo, hi, opt_level):
    got, x, _, net = _run(f"clip({args})", "3x5x7", opt_level)
    assert net.graph.nodes["clip1"]["attrs"] == {"min": float(lo), "max": float(hi)}
    _check(got, torch.clamp(x, lo, hi))


@pytest.mark.parametrize("producer, reference", [
    ("conv(8, 3x3, padding=1)",  # the packed kernel
     lambda x, w: F.conv2d(x, w["conv1.weight"], w["conv1.bias"], padding=1)),
    ("conv(2, 3x3, padding=1)",  # the generic kernel
     lambda x, w: F.conv2d(x, w["conv1.weight"], w["conv1.bias"], padding=1)),
    ("dwconv(3x3, stride=2, multiplier=2)",
     lambda x, w: F.conv2d(x, w["dwconv1.weight"], w["dwconv1.bias"], stride=2, groups=3)),
    ("dense(7)", lambda x, w: F.linear(x.flatten(1), w["dense1.weight"], w["dense1.bias"])),
    ("add { relu | sigmoid }", lambda x, w: F.relu(x) + torch.sigmoid(x)),
    ("mul { tanh | identity }", lambda x, w: torch.tanh(x) * x),
])
def test_clip_fused_into_the_store(producer, reference):
    got, x, w, net = _run(f"{producer} -> clip(-0.75, 1.25)", "3x7x9", 2)
    node = net.graph.nodes[net.graph.graph["output"]]
    assert node["op"] == producer.split("(")[0].split()[0] and "clip1" not in net.graph
    assert (node["attrs"]["activation"], node["attrs"]["min"], node["attrs"]["max"]) == (
        "clip", -0.75, 1.25)
    _check(got, torch.clamp(reference(x, w), -0.75, 1.25))


def test_clip_fused_into_a_residual_conv():
    got, x, w, net = _run("add { conv(4, 3x3, padding=1) | identity } -> clip(-1, 0.5)",
                          "4x6x5", 2)
    attrs = net.graph.nodes["conv1"]["attrs"]
    assert attrs["residual"] and (attrs["activation"], attrs["min"], attrs["max"]) == (
        "clip", -1.0, 0.5)
    ref = F.conv2d(x, w["conv1.weight"], w["conv1.bias"], padding=1) + x
    _check(got, torch.clamp(ref, -1, 0.5))


def test_sibling_convs_with_different_clip_ranges_stay_apart():
    """fuse-1x1-siblings merges convs with the same epilogue only: clip's range is part
    of it (one wide conv would clip both with one range)."""
    body = "concat { conv(4, 1x1) -> clip(0, 1) | conv(4, 1x1) -> clip(0, 2) " \
           "| conv(4, 1x1) -> clip(0, 1) }"
    got, x, w, net = _run(body, "3x5x5", 2)
    assert "conv1+conv3" in net.graph and "conv2" in net.graph
    assert net.graph.nodes["conv2"]["op"] == "conv"
    refs = [torch.clamp(F.conv2d(x, w[f"conv{i}.weight"], w[f"conv{i}.bias"]), 0, hi)
            for i, hi in ((1, 1), (2, 2), (3, 1))]
    _check(got, torch.cat(refs, 1))


@pytest.mark.parametrize("batch", [1, 3])
def test_sibling_convs_with_and_without_an_activation(batch):
    """One wide conv applies relu to the second member's channels only (issue 12's
    example, 60 channels: tiles of channels straddle the boundary on every target)."""
    body = "conv(60, 3x3, padding=same) -> relu -> add { conv(60, 1x1) | identity " \
           "| conv(60, 1x1) -> relu }"
    got, x, w, net = _run(body, "5x9x7", 2, batch=batch)
    assert net.graph.nodes["conv2+conv3"]["attrs"]["act_from"] == 60
    y = F.relu(F.conv2d(x, w["conv1.weight"], w["conv1.bias"], padding=1))
    ref = (F.conv2d(y, w["conv2.weight"], w["conv2.bias"]) + y
           + F.relu(F.conv2d(y, w["conv3.weight"], w["conv3.bias"])))
    _check(got, ref)


def test_sibling_convs_with_and_without_tanh_in_a_concat():
    body = "concat { conv(5, 1x1) -> tanh | conv(7, 1x1, bias=false) | conv(4, 1x1) -> tanh }"
    got, x, w, net = _run(body, "6x5x4", 2)
    assert net.graph.nodes["conv2+conv1+conv3"]["attrs"]["act_from"] == 7
    ref = torch.cat([torch.tanh(F.conv2d(x, w["conv1.weight"], w["conv1.bias"])),
                     F.conv2d(x, w["conv2.weight"]),
                     torch.tanh(F.conv2d(x, w["conv3.weight"], w["conv3.bias"]))], 1)
    _check(got, ref)


def test_a_chain_of_1x1_convs_keeps_the_clip_of_the_second():
    body = "conv(16, 1x1) -> conv(2, 1x1) -> clip(-0.5, 0.5)"
    got, x, w, net = _run(body, "3x5x4", 2)
    attrs = net.graph.nodes["conv2"]["attrs"]
    assert "conv1" not in net.graph and (attrs["min"], attrs["max"]) == (-0.5, 0.5)
    ref = F.conv2d(F.conv2d(x, w["conv1.weight"], w["conv1.bias"]), w["conv2.weight"],
                   w["conv2.bias"])
    _check(got, torch.clamp(ref, -0.5, 0.5))


@pytest.mark.parametrize("body, message", [
    ("clip", "clip needs the argument 'min'"),
    ("clip(0)", "clip needs the argument 'max'"),
    ("clip(2, 1)", "clip: min 2.0 is greater than max 1.0"),
    ("clip(0, true)", "clip: max must be a number, got true"),
    ("clip(0, 3x3)", "clip: max must be a number, got 3x3"),
    ("clip(0, 1, 2)", "clip takes at most 2 arguments, got 3"),
    ("clip(lo=0, max=1)", "clip has no argument 'lo'"),
])
def test_clip_errors(body, message):
    with pytest.raises(cnnc.CnncError, match=message):
        graph_of(net_src(body))


def test_clip_errors_have_positions():
    """A bad value at the value; min above max at the call."""
    with pytest.raises(cnnc.CnncValueError) as err:
        graph_of(net_src("relu\nclip(0, true)"))
    assert (err.value.line, err.value.column) == (3, 9)
    with pytest.raises(cnnc.CnncValueError) as err:
        graph_of(net_src("relu\n  clip(max=0, min=0.5)"))
    assert (err.value.line, err.value.column) == (3, 3)


# ---------------------------------------------------------------- mul, broadcasting
SE = ("mul { identity | avgpool(global) -> conv(2, 1x1) -> relu -> conv(6, 1x1) "
      "-> hardsigmoid }")


def _se_reference(x, w):
    s = x.mean((2, 3), keepdim=True)
    s = F.relu(F.conv2d(s, w["conv1.weight"], w["conv1.bias"]))
    return x * F.hardsigmoid(F.conv2d(s, w["conv2.weight"], w["conv2.bias"]))


@pytest.mark.parametrize("opt_level", [0, 2])
@pytest.mark.parametrize("body, shape, reference", [
    ("mul { identity | relu }", "3x5x7", lambda x, w: x * F.relu(x)),
    ("mul { tanh | identity | sigmoid }", "2x3x5",
     lambda x, w: torch.tanh(x) * x * torch.sigmoid(x)),
    ("mul { identity | avgpool(global) }", "3x5x7", lambda x, w: x * x.mean((2, 3), True)),
    ("mul { avgpool(global) | identity }", "3x5x7", lambda x, w: x.mean((2, 3), True) * x),
    ("add { maxpool(global) | identity | avgpool(global) }", "4x3x5",
     lambda x, w: x.amax((2, 3), True) + x + x.mean((2, 3), True)),
    ("add { identity | avgpool(global) }", "3x1x1", lambda x, w: x + x),
    ("mul { avgpool(global) | maxpool(global) }", "3x4x4",
     lambda x, w: x.mean((2, 3), True) * x.amax((2, 3), True)),
    ("mul { relu }", "3x4x4", lambda x, w: F.relu(x)),
    ("dense(5) -> mul { identity | sigmoid }", "3x4x4",
     lambda x, w: (lambda d: d * torch.sigmoid(d))(
         F.linear(x.flatten(1), w["dense1.weight"], w["dense1.bias"]))),
    (SE, "6x7x5", _se_reference),
])
def test_mul_and_broadcast_against_torch(body, shape, reference, opt_level):
    got, x, w, _ = _run(body, shape, opt_level)
    _check(got, reference(x, w))


def test_squeeze_and_excitation_optimised():
    """The SE block: the gate's convs carry relu and hardsigmoid; the mul stays."""
    got, x, w, net = _run(SE + " -> relu6", "6x7x5", 2)
    ops = {n: d["op"] for n, d in net.graph.nodes(data=True)}
    assert ops == {"input": "input", "avgpool1": "avgpool", "conv1": "conv", "conv2": "conv",
                   "mul1": "mul"}
    assert net.graph.nodes["mul1"]["attrs"]["activation"] == "relu6"
    assert net.graph.nodes["conv2"]["attrs"]["activation"] == "hardsigmoid"
    _check(got, F.relu6(_se_reference(x, w)))


def test_broadcast_add_is_no_residual():
    """fuse-residual adds a same-shape skip in the conv's store; an add whose conv operand
    or skip is broadcast stays an add."""
    body = "add { identity | avgpool(global) -> conv(4, 1x1) } -> relu"
    graph = optimize(graph_of(net_src(body, "4x6x5")), level=2, check=True)
    assert graph.nodes["add1"]["op"] == "add"
    assert not graph.nodes["conv1"]["attrs"].get("residual")
    got, x, w, _ = _run(body, "4x6x5", 2)
    gate = F.conv2d(x.mean((2, 3), keepdim=True), w["conv1.weight"], w["conv1.bias"])
    _check(got, F.relu(x + gate))


def test_mul_is_never_a_residual():
    body = "mul { conv(4, 3x3, padding=1) | identity }"
    graph = optimize(graph_of(net_src(body, "4x6x5")), level=2, check=True)
    assert graph.nodes["mul1"]["op"] == "mul"
    got, x, w, _ = _run(body, "4x6x5", 2)
    _check(got, F.conv2d(x, w["conv1.weight"], w["conv1.bias"], padding=1) * x)


def test_mul_in_place_in_a_concat():
    body = "concat { relu | mul { identity | avgpool(global) } }"
    got, x, _, net = _run(body, "3x5x6", 2)
    assert net.graph.nodes["concat1"]["attrs"]["inplace"] == [True, True]
    _check(got, torch.cat([F.relu(x), x * x.mean((2, 3), True)], 1))


def test_pad_folds_into_a_maxpool_after_a_mul_of_non_negative_branches():
    body = "mul { relu | sigmoid } -> pad(1) -> maxpool(3, stride=1)"
    graph = optimize(graph_of(net_src(body, "2x5x5")), level=2)
    assert "pad1" not in graph
    got, x, _, _ = _run(body, "2x5x5", 2)
    _check(got, F.max_pool2d(F.pad(F.relu(x) * torch.sigmoid(x), (1, 1, 1, 1)), 3, 1))


@pytest.mark.parametrize("body, message, column", [
    ("mul { identity | maxpool(2) }", "mul: branches disagree in shape: 3x8x8, 3x4x4", 1),
    ("relu -> add { identity | avgpool(global) -> conv(2, 1x1) }",
     "add: branches disagree in shape: 3x8x8, 2x1x1; a branch of shape 3x1x1 would be "
     "broadcast over 8x8", 9),
    ("mul { flatten | identity }", "mul: branches differ in rank: 192, 3x8x8", 1),
    ("mul { avgpool(global) -> flatten | dense(3) -> relu | identity }",
     "mul: branches differ in rank", 1),
])
def test_shape_errors_at_the_branching(body, message, column):
    with pytest.raises(cnnc.CnncShapeError, match=message) as err:
        graph_of(net_src(body))
    assert (err.value.line, err.value.column) == (2, column)


@pytest.mark.parametrize("text, message", [
    ("block mul(c) { relu }\nnetwork n(input: 3x4x4) { relu }", "unexpected 'mul'"),
    ("network n(input: 3x4x4) { mul: relu }", "unexpected"),
    ("network n(input: 3x4x4) { mul(2) }", "unexpected"),
])
def test_mul_is_a_keyword(text, message):
    with pytest.raises(cnnc.CnncError, match=message):
        graph_of(text)


# ---------------------------------------------------------------- reports, artifacts
def test_summary_and_dump_show_the_new_layers():
    text = net_src("dwconv(3x3, padding=same, multiplier=2) -> clip(0, 4) -> " + SE.replace(
        "conv(6, 1x1)", "conv(12, 1x1)"), "6x7x5")
    graph = graph_of(text)
    verify_graph(graph)
    summary = summary_text(graph)
    rows = {line.split()[0]: line.split() for line in summary.splitlines()[2:] if line}
    assert rows["dwconv1"][1:5] == ["dwconv", "12x7x5", "120", f"{12 * 7 * 5 * 9:,}"]
    assert rows["clip1"][1:4] == ["clip", "12x7x5", "0"]
    assert rows["mul1"][1:4] == ["mul", "12x7x5", "0"]
    dump = dump_text(graph)
    assert "clip1 = clip(min=0.0, max=4.0) <- [dwconv1] : 12x7x5" in dump
    assert "mul1 = mul() <- [identity1, hardsigmoid1] : 12x7x5" in dump
    optimised = dump_text(optimize(graph, level=2))
    assert ("dwconv1 = dwconv(kernel=3x3, stride=1x1, padding=1x1x1x1, dilation=1x1, "
            "multiplier=2, bias=true, activation=clip, slope=0.0, depth=12, groups=6, "
            "in_channels=6, pads=1x1x1x1, min=0.0, max=4.0) <- [input] : 12x7x5") in optimised


def test_artifact_round_trip(tmp_path):
    text = net_src("dwconv(3x3, stride=2, multiplier=2) -> clip(-1, 1) -> " + SE.replace(
        "conv(6, 1x1)", "conv(12, 1x1)"), "6x9x8")
    net = cnnc.compile_source(text, progress=False)
    net.load_weights(_weights(net))
    net.save(tmp_path / "m.cnnc")
    again = cnnc.load(tmp_path / "m.cnnc")
    x = np.random.default_rng(0).standard_normal((2, 6, 9, 8)).astype(np.float32)
    np.testing.assert_array_equal(again(x), net(x))


# ---------------------------------------------------------------- the examples
def _se_resnet_at_64():
    """examples/se_resnet.cnn at 64x64 (its global pool takes any size) and its twin with
    random weights, each block's last batch norm scale cut to a fifth: with He weights the
    residual sum grows block by block until float32 PyTorch itself is 4e-4 from float64."""
    import torch_twins
    model = torch_twins.init_weights_(torch_twins.se_resnet50(), seed=3)
    with torch.no_grad():
        for block in model.blocks.values():
            block.bn3.weight.mul_(0.2)
    with open("examples/se_resnet.cnn", encoding="utf-8") as fh:
        text = fh.read().replace("input: 3x224x224", "input: 3x64x64")
    return text, model, torch_twins.to_cnnc_weights(model)


def test_se_resnet_keeps_its_numbers_through_every_pass():
    """What `cnnc verify` checks, with the conditioned weights."""
    from cnnc.compiler import verify_passes
    from cnnc.passes import PIPELINE
    text, _, weights = _se_resnet_at_64()
    check = verify_passes(graph_of(text), weights, batch=2, tol=1e-5)
    assert [n for n, _ in check.rows] == PIPELINE
    assert check.first_failure is None, check.rows


@pytest.mark.parametrize("opt_level", [0, 2])
def test_se_resnet_matches_its_pytorch_twin(opt_level):
    text, model, weights = _se_resnet_at_64()
    net = cnnc.compile_source(text, weights=weights, opt_level=opt_level, progress=False)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    _check(net(x), ref)
