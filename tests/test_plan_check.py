"""One-branch add/concat (LANGUAGE.md §10) against PyTorch, and the plan check that makes a
read of never-written memory a compile-time error instead of garbage numbers."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import net_src, rel_err

import cnnc
from cnnc import lower, runtime

X = np.random.default_rng(3).standard_normal((2, 2, 5, 5)).astype(np.float32)


def _conv(net, x, name):
    p = net.parameters()
    return F.conv2d(x, torch.from_numpy(p[f"{name}.weight"]), torch.from_numpy(p[f"{name}.bias"]))


CASES = {
    "add { identity }": lambda net, x: x,
    "add { relu }": lambda net, x: F.relu(x),
    "concat { identity }": lambda net, x: x,
    "concat { relu }": lambda net, x: F.relu(x),
    "relu -> add { identity }": lambda net, x: F.relu(x),
    "relu -> concat { identity } -> relu": lambda net, x: F.relu(x),
    "add { identity } -> relu": lambda net, x: F.relu(x),
    "conv(3, 1x1) -> add { identity }": lambda net, x: _conv(net, x, "conv1"),
    "conv(3, 1x1) -> add { identity } -> relu": lambda net, x: F.relu(_conv(net, x, "conv1")),
    "add { conv(2, 1x1) } -> add { identity | relu }":
        lambda net, x: _conv(net, x, "conv1") + F.relu(_conv(net, x, "conv1")),
    "add { add { identity } | identity }": lambda net, x: 2 * x,
}


@pytest.mark.parametrize("opt_level", [0, 1, 2])
@pytest.mark.parametrize("body", list(CASES))
def test_one_branch_add_and_concat_match_pytorch(body, opt_level):
    net = cnnc.compile_source(net_src(body, "2x5x5"), opt_level=opt_level, seed=4)
    want = CASES[body](net, torch.from_numpy(X)).numpy()
    assert rel_err(net(X), want) < 1e-5


def test_plan_check_catches_a_missing_step(monkeypatch):
    real = lower.lower_node

    def drop_relu(graph, node_id, views, lanes=frozenset()):
        if graph.nodes[node_id]["op"] == "relu":
            return []
        return real(graph, node_id, views, lanes)

    monkeypatch.setattr(lower, "lower_node", drop_relu)
    with pytest.raises(cnnc.CnncError, match="never written"):
        cnnc.compile_source(net_src("relu -> conv(2, 1x1)", "2x5x5"), opt_level=0)
    with pytest.raises(cnnc.CnncError, match="output .* never completely written"):
        cnnc.compile_source(net_src("conv(2, 1x1) -> relu", "2x5x5"), opt_level=0)


def test_plan_check_catches_storage_shared_by_live_tensors(monkeypatch):
    real = runtime.plan_buffers

    def one_slot(graph, order, reuse):
        plan = real(graph, order, reuse)
        for group in plan.groups:  # every tensor in the same storage: a residual clobbers
            group.slot = 0
        plan.slot_sizes = [max(plan.slot_sizes)]
        return plan

    monkeypatch.setattr(runtime, "plan_buffers", one_slot)
    with pytest.raises(cnnc.CnncError, match="never written"):
        cnnc.compile_source(net_src("conv(2, 1x1) -> add { conv(2, 1x1) | identity }",
                                    "2x5x5"), opt_level=0)
