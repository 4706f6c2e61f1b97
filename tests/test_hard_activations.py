"""relu6, hardsigmoid and hardswish (LANGUAGE.md §11) against PyTorch: alone at -O0 and
-O2, and fused into the store of a conv (packed and generic kernel), a dense, an add and a
residual conv."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import graph_of, net_src, rel_err

import cnnc
from cnnc.passes import optimize

TOL = 1e-5
TORCH = {"relu6": F.relu6, "hardsigmoid": F.hardsigmoid, "hardswish": F.hardswish}
ACTS = list(TORCH)


def _run(body: str, opt_level: int, shape=(3, 6, 5), batch=2):
    """(cnnc output, input, weights by name) of `body` with random weights; inputs span
    -8..8 so every piece of the activations (below -3, between, above 3 and 6) is hit."""
    net = cnnc.compile_source(net_src(body, "x".join(map(str, shape))), opt_level=opt_level)
    rng = np.random.default_rng(7)
    weights = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in
               net.parameters().items()}
    net.load_weights(weights)
    x = (rng.standard_normal((batch, *shape)) * 4).astype(np.float32)
    return net(x), torch.from_numpy(x), {k: torch.from_numpy(v) for k, v in weights.items()}, net


def _check(got, ref):
    assert got.shape == tuple(ref.shape)
    assert rel_err(got, ref.numpy()) <= TOL


@pytest.mark.parametrize("opt_level", [0, 2])
@pytest.mark.parametrize("act", ACTS)
def test_alone(act, opt_level):
    got, x, _, net = _run(act, opt_level)
    assert [d["op"] for _, d in net.graph.nodes(data=True)] == ["input", act]
    _check(got, TORCH[act](x))


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("depth", [8, 2], ids=["packed", "generic"])
def test_fused_after_conv(act, depth):
    got, x, w, net = _run(f"conv({depth}, 3x3, padding=1) -> {act}", 2)
    conv = net.graph.nodes["conv1"]
    assert conv["attrs"]["activation"] == act and act + "1" not in net.graph
    _check(got, TORCH[act](F.conv2d(x, w["conv1.weight"], w["conv1.bias"], padding=1)))


@pytest.mark.parametrize("act", ACTS)
def test_fused_after_dense(act):
    got, x, w, net = _run(f"dense(7) -> {act}", 2)
    assert net.graph.nodes["dense1"]["attrs"]["activation"] == act
    _check(got, TORCH[act](F.linear(x.flatten(1), w["dense1.weight"], w["dense1.bias"])))


@pytest.mark.parametrize("act", ACTS)
def test_fused_after_add(act):
    got, x, _, net = _run(f"add {{ relu | sigmoid }} -> {act}", 2)
    assert net.graph.nodes["add1"]["attrs"]["activation"] == act
    _check(got, TORCH[act](F.relu(x) + torch.sigmoid(x)))


@pytest.mark.parametrize("act", ACTS)
def test_fused_after_residual_conv(act):
    """add -> act with a conv operand: fuse-residual puts both in the conv's store."""
    got, x, w, net = _run(f"add {{ conv(4, 3x3, padding=1) | identity }} -> {act}", 2,
                          shape=(4, 6, 5))  # the packed kernel (4 channels) adds residuals
    conv = net.graph.nodes["conv1"]
    assert conv["attrs"]["residual"] and conv["attrs"]["activation"] == act
    ref = F.conv2d(x, w["conv1.weight"], w["conv1.bias"], padding=1) + x
    _check(got, TORCH[act](ref))


@pytest.mark.parametrize("act, folds", [("relu6", True), ("hardsigmoid", True),
                                        ("hardswish", False)])
def test_pad_folds_into_maxpool_after_non_negative_ones(act, folds):
    """relu6 and hardsigmoid are >= 0, so a zero pad before a max pool is its padding;
    hardswish dips to -0.375, so the pad stays."""
    body = f"{act} -> pad(1) -> maxpool(3, stride=1)"
    graph = optimize(graph_of(net_src(body, "2x5x5")), level=2)
    assert ("pad1" not in graph) == folds
    got, x, _, _ = _run(body, 2, shape=(2, 5, 5))
    _check(got, F.max_pool2d(F.pad(TORCH[act](x), (1, 1, 1, 1)), 3, 1))


@pytest.mark.parametrize("act", ACTS)
def test_takes_no_arguments(act):
    with pytest.raises(cnnc.CnncValueError, match=f"{act} takes at most 0 arguments, got 1"):
        graph_of(net_src(f"{act}(2)"))
