"""The optimiser: the pass manager, each pass's exact rewrite and its validity conditions,
and the numbers (-O2 against -O0, against small PyTorch twins, every prefix of the
pipeline on every example).

Structure tests apply one pass to a tiny bound graph and count ops before and after;
every rewrite has a negative test per validity condition. Batch norms get random
statistics and every bias is random, so folding is really exercised.

Golden dumps: tests/golden/<case>/NN-pass.txt is the text dump after each pass of a tiny
network; `python tests/test_passes.py --update-golden` rewrites them after an intended
change (read the diff).
"""

from __future__ import annotations

import collections
import os
import sys

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cnnc
from cnnc.checks import memory_report
from cnnc.compiler import verify_passes
from cnnc.errors import CnncError
from cnnc.graph import build_graph, load_program, load_source
from cnnc.memory import plan_buffers
from cnnc.passes import (
    LEVELS,
    PASSES,
    PIPELINE,
    GraphCheckError,
    optimize,
    passes_for,
    verify_graph,
)
from cnnc.passes.rewrite import copy_graph, remove_dead
from cnnc.runtime import Plan
from cnnc.weights import bind_parameters, init_parameters

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "examples")
GOLDEN = os.path.join(HERE, "golden")


# ---------------------------------------------------------------- helpers
def net(body: str, shape: str = "3x8x8") -> str:
    return f"network n(input: {shape}) {{\n{body}\n}}\n"


def parsed(text: str):
    return build_graph(load_source(text))


def random_weights(graph, seed: int = 0) -> dict[str, np.ndarray]:
    """He-normal weights, random biases, and batch norms that really change the values."""
    params = init_parameters(graph, seed)
    rng = np.random.default_rng(seed + 1)
    for key, value in params.items():
        layer, kind = key.rsplit(".", 1)
        is_bn = graph.nodes[layer]["op"] == "batchnorm"
        if kind == "bias" or kind == "running_mean":
            params[key] = rng.normal(0.0, 0.3, value.shape).astype(np.float32)
        elif kind == "running_var":
            params[key] = rng.uniform(0.3, 2.0, value.shape).astype(np.float32)
        elif kind == "weight" and is_bn:
            params[key] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
    return params


def bound(text: str, seed: int = 0):
    graph = parsed(text)
    return bind_parameters(graph, random_weights(graph, seed))


def ops(graph) -> collections.Counter:
    return collections.Counter(d["op"] for _, d in graph.nodes(data=True))


def apply(graph, *names: str):
    """A copy of `graph` after the named passes, each followed by the graph check."""
    graph = copy_graph(graph)
    verify_graph(graph)
    for name in names:
        PASSES[name].apply(graph)
        verify_graph(graph)
    return graph


def run(graph, x: np.ndarray) -> np.ndarray:
    return Plan(graph).run(x)


def rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got - ref)) / max(1e-6, float(np.max(np.abs(ref)))))


def input_for(graph, batch: int = 2, seed: int = 0) -> np.ndarray:
    shape = graph.graph["input_shape"]
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


def same_numbers(graph, *names: str, tol: float = 1e-5):
    """Apply the passes; the output must equal the unoptimised graph's. Returns the result."""
    after = apply(graph, *names)
    x = input_for(graph)
    assert rel(run(after, x), run(copy_graph(graph), x)) <= tol
    return after


def o2_equals_o0(text: str, tol: float = 1e-5) -> np.ndarray:
    """Compile at -O0 and -O2 with the same random weights; compare; the -O0 output."""
    weights = random_weights(parsed(text))
    slow = cnnc.compile_source(text, weights=weights, opt_level=0, progress=False)
    fast = cnnc.compile_source(text, weights=weights, progress=False)
    x = input_for(parsed(text), batch=3, seed=5)
    ref = slow(x)
    assert rel(fast(x), ref) <= tol
    return ref, weights, x


# ---------------------------------------------------------------- pass manager
def test_pipeline_is_every_pass_in_order_with_documented_passes():
    assert PIPELINE == list(PASSES)
    assert set(LEVELS[1]) == {"drop-identity", "fold-padding", "fold-batchnorm", "fuse-epilogue"}
    assert LEVELS[0] == () and list(LEVELS[2]) == PIPELINE
    for name, p in PASSES.items():
        assert p.name == name and name == name.lower() and " " not in name
        doc = type(p).__doc__
        assert "Rewrite" in doc and "Valid" in doc and "Preserves" in doc


def test_levels_and_disabled_passes():
    assert passes_for(0) == []
    assert passes_for(1) == list(LEVELS[1])
    assert passes_for(2, ["fold-padding"]) == [n for n in PIPELINE if n != "fold-padding"]


def test_unknown_pass_is_an_error_with_a_suggestion():
    graph = parsed(net("conv(4, 3x3) -> relu"))
    with pytest.raises(CnncError, match="did you mean 'fuse-epilogue'"):
        optimize(graph, disabled=["fuse-epilogu"])
    with pytest.raises(CnncError, match="unknown optimisation level"):
        optimize(graph, level=3)


def test_optimize_works_on_a_copy():
    graph = bound(net("conv(4, 3x3) -> batchnorm -> relu -> dropout -> dense(3)"))
    before = {n: (dict(d["attrs"]), list(d["inputs"]), dict(d.get("params", {})))
              for n, d in graph.nodes(data=True)}
    out = optimize(graph, check=True)
    assert ops(out)["relu"] == 0 and ops(graph)["relu"] == 1
    for n, d in graph.nodes(data=True):
        attrs, inputs, params = before[n]
        assert d["attrs"] == attrs and d["inputs"] == inputs
        assert all(d["params"][k] is v for k, v in params.items())


def test_level0_changes_nothing_and_level1_runs_the_local_passes():
    text = net("conv(4, 1x1) -> relu -> dropout -> conv(4, 1x1) -> relu")
    graph = bound(text)
    assert ops(optimize(graph, level=0)) == ops(graph)
    o1 = optimize(graph, level=1, check=True)
    assert ops(o1) == collections.Counter(input=1, conv=2)
    assert "reuse_memory" not in o1.graph
    assert optimize(graph).graph["reuse_memory"] is True


def test_disabled_pass_does_not_run():
    graph = bound(net("conv(4, 3x3) -> relu"))
    assert ops(optimize(graph, disabled=["fuse-epilogue"]))["relu"] == 1


def test_optimize_works_without_parameters():
    """`cnnc dump --stage optimized` and `cnnc summary` optimise the parsed graph."""
    text = net("conv(4, 3x3, bias=false) -> batchnorm -> relu\n"
               "concat { conv(4, 1x1) | conv(6, 1x1) -> conv(5, 3x3, padding=1) }")
    out = optimize(parsed(text), check=True)
    assert ops(out) == collections.Counter(input=1, conv=3, slice=3, concat=1)
    assert not any("params" in d for _, d in out.nodes(data=True))


def test_dump_dir_writes_every_stage(tmp_path):
    graph = bound(net("conv(4, 3x3) -> relu"))
    optimize(graph, dump_dir=str(tmp_path), disabled=["fold-padding"])
    stems = ["00-parsed"] + [f"{i:02d}-{n}" for i, n in
                             enumerate([n for n in PIPELINE if n != "fold-padding"], 1)]
    assert sorted(os.listdir(tmp_path)) == sorted(f"{s}.{e}" for s in stems
                                                  for e in ("txt", "dot", "json"))
    assert "relu" in (tmp_path / "00-parsed.txt").read_text()
    assert "activation=relu" in (tmp_path / "03-fuse-epilogue.txt").read_text()


def test_check_names_the_pass_that_breaks_the_graph(monkeypatch):
    class Broken:
        name = "fuse-epilogue"

        def apply(self, graph):
            graph.nodes["conv1"]["shape"] = (5, 6, 6)

    monkeypatch.setitem(PASSES, "fuse-epilogue", Broken())
    with pytest.raises(GraphCheckError, match="after pass fuse-epilogue: .*'conv1': shape"):
        optimize(bound(net("conv(4, 3x3) -> relu")), check=True)


def test_memory_report_before_and_after_planning():
    text = net("conv(8, 3x3, padding=1) -> relu -> conv(8, 3x3, padding=1) -> relu"
               " -> conv(8, 3x3, padding=1) -> relu -> conv(8, 3x3, padding=1)", "3x16x16")
    activations, parameters = memory_report(parsed(text))
    # before: the input and four 8x16x16 tensors (relus fused); after: two 8x16x16 slots,
    # one of them first holding the input
    assert activations == ("peak activation memory per image (-O2): 35.0 KiB before "
                           "planning, 16.0 KiB after (46%)")
    # 8*3*9 + 3 * 8*8*9 weights, 4 * 8 biases
    assert parameters == ("parameter memory: 7.7 KiB (1,976 values; about 3x that while "
                          "compiled)")


# ---------------------------------------------------------------- verify_graph
def test_verify_graph_accepts_every_parsed_example():
    for name in sorted(os.listdir(EXAMPLES)):
        if name.endswith(".cnn"):
            verify_graph(build_graph(load_program(os.path.join(EXAMPLES, name))))


@pytest.mark.parametrize("damage, message", [
    (lambda g: g.remove_edge("input", "conv1"), "edges from"),
    (lambda g: g.nodes["conv1"].update(shape=(4, 7, 7)), "shape"),
    (lambda g: g.nodes["conv1"]["attrs"].update(pads=(1, 0, 0, 0)), "padding"),
    (lambda g: g.nodes["conv1"]["params"].update(bias=np.zeros(3, np.float32)), "params"),
    (lambda g: g.nodes["conv1"]["params"].update(weight=np.zeros((4, 3, 3, 3))), "float32"),
    (lambda g: g.nodes["conv1"]["attrs"].update(activation="gelu"), "activation"),
    (lambda g: g.nodes["relu1"].update(op="slice", attrs={"start": 1}), "slice"),
    (lambda g: g.nodes["concat1"]["attrs"].update(inplace=[True]), "inplace"),
    (lambda g: g.graph.update(output="nothing"), "output"),
    (lambda g: g.add_edge("relu1", "conv1"), "cycle"),
])
def test_verify_graph_finds_broken_invariants(damage, message):
    graph = bound(net("conv(4, 3x3) -> relu -> concat { identity | sigmoid }"))
    verify_graph(graph)
    damage(graph)
    with pytest.raises(GraphCheckError, match=message):
        verify_graph(graph)


# ---------------------------------------------------------------- drop-identity
def test_drop_identity_removes_dropout_and_identity():
    graph = bound(net("conv(4, 3x3) -> dropout(0.3) -> identity -> relu\n"
                      "add { identity | conv(4, 1x1) | identity }"))
    after = same_numbers(graph, "drop-identity")
    assert ops(graph)["dropout"] == 1 and ops(graph)["identity"] == 3
    assert ops(after) == collections.Counter(input=1, conv=2, relu=1, add=1)
    assert after.nodes["relu1"]["inputs"] == ["conv1"]
    assert after.nodes["add1"]["inputs"] == ["relu1", "conv2", "relu1"]


def test_drop_identity_rewires_the_output():
    after = apply(bound(net("conv(4, 3x3) -> dropout")), "drop-identity")
    assert after.graph["output"] == "conv1" and "dropout1" not in after


def test_remove_dead_keeps_what_the_output_needs():
    graph = bound(net("conv(4, 3x3) -> relu"))
    graph.add_node("stray", op="relu", name="stray", inputs=["conv1"], shape=(4, 6, 6),
                   pos=None, attrs={})
    graph.add_edge("conv1", "stray")
    assert remove_dead(graph) == 1 and set(graph) == {"input", "conv1", "relu1"}


# ---------------------------------------------------------------- fold-padding
def test_fold_padding_into_conv_adds_the_amounts():
    graph = bound(net("pad(1, 0, 2, 0) -> conv(4, 3x3, padding=1)"))
    after = same_numbers(graph, "fold-padding")
    assert ops(after) == collections.Counter(input=1, conv=1)
    attrs = after.nodes["conv1"]["attrs"]
    assert attrs["pads"] == (2, 1, 3, 1) and attrs["padding"] == (2, 1, 3, 1)
    assert after.nodes["conv1"]["inputs"] == ["input"]


def test_fold_padding_makes_same_explicit():
    after = apply(bound(net("conv(4, 3x3, stride=2, padding=same) -> "
                            "maxpool(2x2, stride=2, padding=same)", "3x8x9")), "fold-padding")
    assert after.nodes["conv1"]["attrs"]["padding"] == (0, 1, 1, 1)
    assert after.nodes["maxpool1"]["attrs"]["padding"] == (0, 0, 0, 1)


def test_fold_padding_chain_of_pads_into_a_conv():
    graph = bound(net("pad(1) -> pad(0, 2, 1, 0) -> conv(4, 3x3, stride=2)"))
    after = same_numbers(graph, "fold-padding")
    assert ops(after) == collections.Counter(input=1, conv=1)
    assert after.nodes["conv1"]["attrs"]["pads"] == (1, 3, 2, 1)


def test_zero_pad_is_removed_whatever_reads_it():
    after = apply(bound(net("pad(0) -> relu")), "fold-padding")
    assert ops(after) == collections.Counter(input=1, relu=1)


def test_fold_padding_into_maxpool_after_relu():
    graph = bound(net("conv(4, 3x3) -> relu -> pad(1) -> maxpool(3x3, stride=2)", "3x9x9"))
    after = same_numbers(graph, "fold-padding")
    assert ops(after)["pad"] == 0
    assert after.nodes["maxpool1"]["attrs"]["pads"] == (1, 1, 1, 1)


def test_fold_padding_into_maxpool_after_a_relu_epilogue():
    graph = bound(net("conv(4, 3x3) -> relu -> pad(1) -> maxpool(2x2)"))
    after = same_numbers(graph, "fuse-epilogue", "fold-padding")
    assert ops(after) == collections.Counter(input=1, conv=1, maxpool=1)


def test_pad_before_maxpool_on_possibly_negative_input_stays():
    graph = bound(net("conv(4, 3x3) -> pad(1) -> maxpool(3x3, stride=2)", "3x9x9"))
    after = same_numbers(graph, "fold-padding")
    assert ops(after)["pad"] == 1
    graph = bound(net("conv(4, 3x3) -> tanh -> pad(1) -> maxpool(2x2)"))
    assert ops(apply(graph, "fold-padding"))["pad"] == 1


def test_pad_before_maxpool_stays_when_a_window_would_lie_in_padding():
    # relu output is non-negative, but the first 2x2 window covers only padding
    graph = bound(net("relu -> pad(2) -> maxpool(2x2)", "3x4x4"))
    after = same_numbers(graph, "fold-padding")
    assert ops(after)["pad"] == 1


def test_pad_before_avgpool_stays_because_padding_is_not_counted():
    graph = bound(net("relu -> pad(1) -> avgpool(2x2)", "3x6x6"))
    after = same_numbers(graph, "fold-padding")
    assert ops(after)["pad"] == 1


def test_pad_that_no_window_reads_folds_into_pools():
    # 4 rows + 1 padded row, 2x2 windows with stride 2: row 4 is never read
    for pool in ("avgpool", "maxpool"):
        graph = bound(net(f"pad(0, 1, 0, 1) -> {pool}(2x2)", "3x4x4"))
        after = same_numbers(graph, "fold-padding")
        assert ops(after) == collections.Counter({"input": 1, pool: 1})
        assert after.nodes[f"{pool}1"]["attrs"]["pads"] == (0, 1, 0, 1)


def test_pad_with_two_readers_stays():
    graph = bound(net("pad(1) -> concat { conv(4, 3x3) | conv(2, 3x3) }"))
    after = same_numbers(graph, "fold-padding")
    assert ops(after)["pad"] == 1


def test_pad_into_global_pool_or_other_ops_stays():
    for body in ("relu -> pad(1) -> maxpool(global)", "pad(1) -> relu", "pad(1)"):
        assert ops(apply(bound(net(body)), "fold-padding"))["pad"] == 1


# ---------------------------------------------------------------- fold-batchnorm
def test_fold_batchnorm_into_conv_without_bias():
    graph = bound(net("conv(4, 3x3, bias=false) -> batchnorm -> relu"))
    after = same_numbers(graph, "fold-batchnorm")
    assert ops(after) == collections.Counter(input=1, conv=1, relu=1)
    conv = after.nodes["conv1"]
    assert conv["attrs"]["bias"] is True and set(conv["params"]) == {"weight", "bias"}
    assert after.nodes["relu1"]["inputs"] == ["conv1"]


def test_fold_batchnorm_into_dense_and_grouped_conv():
    graph = bound(net("conv(6, 3x3, groups=3) -> batchnorm(eps=0.01) -> dense(5) -> batchnorm"))
    after = same_numbers(graph, "fold-batchnorm")
    assert ops(after) == collections.Counter(input=1, conv=1, dense=1)
    assert after.graph["output"] == "dense1"


def test_batchnorm_after_conv_with_two_readers_stays():
    graph = bound(net("conv(4, 3x3) -> concat { batchnorm | relu }"))
    after = same_numbers(graph, "fold-batchnorm")
    assert ops(after)["batchnorm"] == 1


def test_batchnorm_after_an_activation_stays():
    graph = bound(net("conv(4, 3x3) -> relu -> batchnorm"))
    assert ops(apply(graph, "fold-batchnorm"))["batchnorm"] == 1
    # ... also when the activation is already the conv's epilogue
    after = same_numbers(graph, "fuse-epilogue", "fold-batchnorm")
    assert ops(after) == collections.Counter(input=1, conv=1, batchnorm=1)


def test_batchnorm_on_the_input_or_after_a_pool_stays():
    assert ops(apply(bound(net("batchnorm -> conv(4, 3x3)")), "fold-batchnorm"))["batchnorm"] == 1
    assert ops(apply(bound(net("maxpool(2x2) -> batchnorm")), "fold-batchnorm"))["batchnorm"] == 1


# ---------------------------------------------------------------- fuse-epilogue
def test_fuse_epilogue_each_activation():
    graph = bound(net("conv(4, 3x3) -> relu -> conv(4, 3x3) -> leaky_relu(0.2)\n"
                      "add { conv(4, 1x1) -> tanh | identity } -> relu\n"
                      "dense(6) -> sigmoid", "3x9x9"))
    after = same_numbers(graph, "fuse-epilogue")
    assert ops(after) == collections.Counter(input=1, conv=3, add=1, identity=1, dense=1)
    acts = {n: (d["attrs"]["activation"], d["attrs"]["slope"])
            for n, d in after.nodes(data=True) if "activation" in d["attrs"]}
    assert acts == {"conv1": ("relu", 0.0), "conv2": ("leaky_relu", 0.2),
                    "conv3": ("tanh", 0.0), "add1": ("relu", 0.0), "dense1": ("sigmoid", 0.0)}


def test_activation_after_producer_with_two_readers_stays():
    graph = bound(net("conv(4, 3x3) -> concat { relu | sigmoid }"))
    after = same_numbers(graph, "fuse-epilogue")
    assert ops(after)["relu"] == 1 and ops(after)["sigmoid"] == 1


def test_second_activation_and_activation_after_a_pool_stay():
    graph = bound(net("conv(4, 3x3) -> relu -> tanh -> maxpool(2x2) -> sigmoid"))
    after = same_numbers(graph, "fuse-epilogue")
    assert ops(after) == collections.Counter(input=1, conv=1, tanh=1, maxpool=1, sigmoid=1)


# ---------------------------------------------------------------- fuse-residual
RESIDUAL_PASSES = ("drop-identity", "fold-batchnorm", "fuse-epilogue", "fuse-residual")


def test_fuse_residual_identity_shortcut():
    graph = bound(net("conv(8, 3x3, padding=1) -> relu\n"
                      "add { conv(8, 3x3, padding=1) -> batchnorm | identity } -> relu"))
    after = same_numbers(graph, *RESIDUAL_PASSES)
    assert ops(after) == collections.Counter(input=1, conv=2)
    conv = after.nodes["conv2"]
    assert conv["inputs"] == ["conv1", "conv1"] and after.graph["output"] == "conv2"
    assert conv["attrs"]["residual"] is True and conv["attrs"]["activation"] == "relu"
    assert "residual" not in after.nodes["conv1"]["attrs"]


def test_fuse_residual_projection_shortcut_takes_the_first_operand():
    graph = bound(net("conv(8, 3x3, padding=1) -> relu\n"
                      "add { conv(8, 3x3, stride=2, padding=1) -> batchnorm -> relu\n"
                      "      -> conv(8, 3x3, padding=1) -> batchnorm\n"
                      "    | conv(8, 1x1, stride=2) -> batchnorm } -> relu -> maxpool(2x2)"))
    after = same_numbers(graph, *RESIDUAL_PASSES)
    assert ops(after) == collections.Counter(input=1, conv=4, maxpool=1)
    assert after.nodes["conv3"]["inputs"] == ["conv2", "conv4"]
    assert after.nodes["conv3"]["attrs"]["residual"] is True
    assert not after.nodes["conv4"]["attrs"].get("residual")
    assert after.nodes["maxpool1"]["inputs"] == ["conv3"]


@pytest.mark.parametrize("body", [
    "add { conv(8, 3x3, padding=1) -> relu | identity }",  # the conv has an activation
    "conv(8, 3x3, padding=1) -> add { identity | relu }",  # the conv has two readers
    "add { conv(8, 1x1) | identity | identity }",  # three operands
    "add { conv(8, 3x3, padding=1, groups=8) | identity }",  # depthwise: generic kernel
    "add { identity | identity }",  # no conv
])
def test_add_that_cannot_fuse_stays(body):
    graph = bound(net(body, "8x6x6"))
    after = same_numbers(graph, *RESIDUAL_PASSES)
    assert ops(after)["add"] == 1
    assert not any(d["attrs"].get("residual") for _, d in after.nodes(data=True))


def test_fuse_residual_only_for_convs_that_run_packed():
    """The residual is added in the packed kernel's store: the pass asks the backend."""
    text = "conv({k}, 1x1) -> add {{ conv({k}, 3x3, groups={g}, padding=same) | identity }}"
    for groups, per_group in ((1, 8), (2, 4), (4, 1), (1, 3)):
        k = groups * per_group
        graph = bound(net(text.format(k=k, g=groups), "4x6x6"))
        graph = optimize(graph)
        fused = any(d["attrs"].get("residual") for _, d in graph.nodes(data=True))
        assert fused == (per_group >= 4), (groups, per_group)


# ---------------------------------------------------------------- fuse-1x1-chains
def test_fuse_1x1_chain_that_saves_work():
    # Cin*Cout = 3*4 = 12 < Cmid*(Cin+Cout) = 16*7
    graph = bound(net("conv(16, 1x1, stride=2, padding=1) -> conv(4, 1x1) -> relu"))
    after = same_numbers(graph, "fuse-1x1-chains")
    assert ops(after) == collections.Counter(input=1, conv=1, relu=1)
    attrs = after.nodes["conv2"]["attrs"]
    assert after.nodes["conv2"]["inputs"] == ["input"]
    assert attrs["stride"] == (2, 2) and attrs["pads"] == (1, 1, 1, 1) and attrs["depth"] == 4


def test_fuse_1x1_chain_of_three_without_biases():
    graph = bound(net("conv(16, 1x1, bias=false) -> conv(12, 1x1, bias=false)"
                      " -> conv(2, 1x1, bias=false)"))
    after = same_numbers(graph, "fuse-1x1-chains")
    assert ops(after) == collections.Counter(input=1, conv=1)
    assert after.nodes["conv3"]["attrs"]["bias"] is False
    assert set(after.nodes["conv3"]["params"]) == {"weight"}


def test_1x1_chain_that_would_grow_stays():
    # Cin*Cout = 32*32 = 1024 >= Cmid*(Cin+Cout) = 8*64 = 512
    graph = bound(net("conv(8, 1x1) -> conv(32, 1x1)", "32x4x4"))
    assert ops(apply(graph, "fuse-1x1-chains"))["conv"] == 2


@pytest.mark.parametrize("body", [
    "conv(16, 1x1) -> relu -> conv(4, 1x1)",             # activation in between
    "conv(16, 1x1) -> concat { conv(4, 1x1) | relu }",   # first conv has two readers
    "conv(16, 1x1) -> conv(4, 1x1, padding=1)",          # padding the second
    "conv(16, 1x1) -> conv(4, 1x1, stride=2)",           # stride on the second
    "conv(16, 1x1) -> conv(4, 3x3)",                     # not 1x1
    "conv(16, 1x1, groups=1) -> conv(4, 1x1, groups=2)", # grouped
])
def test_1x1_chain_conditions(body):
    graph = bound(net(body, "4x6x6"))
    assert ops(same_numbers(graph, "fuse-1x1-chains"))["conv"] == 2


def test_1x1_chain_with_epilogue_on_the_first_stays():
    graph = bound(net("conv(16, 1x1) -> relu -> conv(4, 1x1)"))
    assert ops(apply(graph, "fuse-epilogue", "fuse-1x1-chains"))["conv"] == 2


# ---------------------------------------------------------------- fuse-1x1-siblings
def test_fuse_1x1_siblings_into_one_conv_and_slices():
    graph = bound(net("concat { conv(4, 1x1) | conv(6, 1x1, bias=false) "
                      "| conv(5, 3x3, padding=1) | conv(2, 1x1) }"))
    after = same_numbers(graph, "fuse-1x1-siblings")
    assert ops(after) == collections.Counter(input=1, conv=2, slice=3, concat=1)
    wide = after.nodes["conv1+conv2+conv4"]
    assert wide["shape"] == (12, 8, 8) and wide["attrs"]["bias"] is True
    assert [after.nodes[c]["attrs"]["start"] for c in ("conv1", "conv2", "conv4")] == [0, 4, 10]
    assert np.all(wide["params"]["bias"][4:10] == 0)
    # the wide conv is scheduled where the first sibling was
    assert list(after.nodes).index("conv1+conv2+conv4") == 1


def test_siblings_group_by_activation():
    graph = bound(net("concat { conv(4, 1x1) -> relu | conv(6, 1x1) -> relu "
                      "| conv(5, 1x1) -> tanh | conv(3, 1x1) }"))
    after = same_numbers(graph, "fuse-epilogue", "fuse-1x1-siblings")
    assert ops(after) == collections.Counter(input=1, conv=3, slice=2, concat=1)
    assert after.nodes["conv1+conv2"]["attrs"]["activation"] == "relu"


def test_siblings_with_and_without_an_activation_become_one_conv():
    """Issue 12's example: a conv without an activation and one with relu read the same
    tensor; one wide conv, the plain member first, relu from its last channel on."""
    graph = bound(net("add { conv(6, 1x1) | identity | conv(6, 1x1) -> relu }", "6x5x5"))
    after = same_numbers(graph, "fuse-epilogue", "fuse-1x1-siblings")
    assert ops(after) == collections.Counter(input=1, conv=1, slice=2, identity=1, add=1)
    wide = after.nodes["conv1+conv2"]["attrs"]
    assert (wide["activation"], wide["act_from"]) == ("relu", 6)
    # the plain member first, whatever the source order
    graph = bound(net("concat { conv(5, 1x1) -> tanh | conv(3, 1x1, bias=false) "
                      "| conv(4, 1x1) -> tanh }"))
    after = same_numbers(graph, "fuse-epilogue", "fuse-1x1-siblings", "inplace-concat")
    wide = after.nodes["conv2+conv1+conv3"]
    assert (wide["attrs"]["activation"], wide["attrs"]["act_from"]) == ("tanh", 3)
    assert [after.nodes[c]["attrs"]["start"] for c in ("conv2", "conv1", "conv3")] == [0, 3, 8]
    assert np.all(wide["params"]["bias"][:3] == 0)
    assert list(after.nodes).index("conv2+conv1+conv3") == 1  # where conv1 was


@pytest.mark.parametrize("body", [
    # three epilogues: one group per activation, as before
    "concat { conv(4, 1x1) -> relu | conv(6, 1x1) -> tanh | conv(5, 1x1) }",
    # a wide conv of 3 channels runs on the generic kernel, which has no act_from
    "concat { conv(1, 1x1) -> relu | conv(2, 1x1) }",
])
def test_siblings_with_other_epilogue_mixes_stay_apart(body):
    graph = bound(net(body))
    after = same_numbers(graph, "fuse-epilogue", "fuse-1x1-siblings")
    assert ops(after)["slice"] == 0


def test_siblings_inside_blocks_get_a_dotted_name():
    text = ("block b() { add { conv(4, 1x1) | conv(4, 1x1) } }\n"
            + net("x: b() -> y: b()"))
    after = same_numbers(bound(text), "fuse-1x1-siblings")
    assert {"x.conv1+conv2", "y.conv1+conv2"} <= set(after)


@pytest.mark.parametrize("body", [
    "concat { conv(6, 1x1) -> maxpool(2x2) | conv(4, 1x1, stride=2) }",
    "concat { conv(6, 1x1) | conv(4, 1x1, padding=1) -> maxpool(3x3, stride=1) }",
    "concat { conv(6, 1x1) | conv(3, 1x1, groups=3) }",
    "concat { conv(6, 1x1) | conv(3, 3x3, padding=1) }",
])
def test_siblings_that_are_not_plain_1x1_stay(body):
    graph = bound(net(body, "3x4x4"))
    after = same_numbers(graph, "fuse-1x1-siblings")
    assert ops(after)["conv"] == 2 and ops(after)["slice"] == 0


# ---------------------------------------------------------------- inplace-concat
def copies(graph) -> int:
    return sum(1 for s in Plan(graph).steps if s.op == "concat")


def test_inplace_concat_places_every_branch():
    graph = bound(net("concat { conv(4, 3x3) | conv(2, 3x3) -> relu | maxpool(3x3, stride=1) }"))
    after = same_numbers(graph, "inplace-concat")
    assert after.nodes["concat1"]["attrs"]["inplace"] == [True, True, True]
    assert copies(graph) == 3 and copies(after) == 0


def test_inplace_concat_conditions():
    # the graph input and a producer listed twice stay copied
    graph = bound(net("concat { identity | relu } -> conv(4, 3x3) -> concat { identity | "
                      "concat { identity | identity } }"))
    after = same_numbers(graph, "drop-identity", "inplace-concat")
    flags = {n: d["attrs"]["inplace"] for n, d in after.nodes(data=True) if d["op"] == "concat"}
    assert flags == {"concat1": [False, True], "concat3": [False, False],
                     "concat2": [True, True]}
    assert after.nodes["concat3"]["inputs"] == ["conv1", "conv1"]
    # an alias has no buffer of its own to place
    after = same_numbers(bound(net("relu -> concat { dropout | sigmoid }")), "inplace-concat")
    assert after.nodes["concat1"]["attrs"]["inplace"] == [False, True]


def test_a_producer_in_two_concats_is_placed_in_the_first():
    graph = bound(net("conv(4, 3x3) -> concat { concat { identity | relu } | identity }"))
    after = same_numbers(graph, "drop-identity", "inplace-concat")
    assert after.nodes["concat2"]["attrs"]["inplace"] == [True, True]  # inner: conv1, relu1
    assert after.nodes["concat1"]["attrs"]["inplace"] == [True, False]  # outer: concat2, conv1


def test_inplace_concat_takes_in_the_wide_conv_of_a_first_slice():
    graph = bound(net("concat { conv(4, 1x1) | conv(6, 1x1) -> conv(5, 3x3, padding=1) "
                      "| maxpool(3x3, stride=1, padding=1) } -> relu"))
    after = same_numbers(graph, "fuse-1x1-siblings", "inplace-concat")
    assert ops(after) == collections.Counter(input=1, conv=2, slice=3, concat=1, maxpool=1,
                                             relu=1)
    wide = after.nodes["concat1.wide"]
    assert wide["inputs"] == ["conv1+conv2", "conv3", "maxpool1"]
    assert wide["attrs"]["inplace"] == [True, True, True] and wide["shape"] == (18, 8, 8)
    # the slice of the concat's first branch was rotated to the end of the wide conv
    assert after.nodes["conv1"]["attrs"]["start"] == 6
    assert after.nodes["conv2"]["attrs"]["start"] == 0
    assert after.nodes["concat1"]["op"] == "slice"
    assert after.nodes["concat1"]["attrs"]["start"] == 6
    assert copies(after) == 0


def test_inplace_concat_takes_in_the_wide_conv_of_a_last_slice():
    graph = bound(net("concat { conv(6, 1x1) -> conv(5, 3x3, padding=1) | conv(4, 1x1) }"))
    after = same_numbers(graph, "fuse-1x1-siblings", "inplace-concat")
    assert after.nodes["concat1.wide"]["inputs"] == ["conv2", "conv1+conv3"]
    assert after.nodes["conv3"]["attrs"]["start"] == 0  # rotated to the front
    assert after.nodes["concat1"]["attrs"]["start"] == 0
    assert after.nodes["concat1.wide"]["shape"][0] == 15 and copies(after) == 0


def test_slice_in_the_middle_of_a_concat_is_copied():
    graph = bound(net("concat { conv(3, 3x3, padding=1) | conv(4, 1x1) "
                      "| conv(6, 1x1) -> conv(5, 3x3, padding=1) }"))
    after = same_numbers(graph, "fuse-1x1-siblings", "inplace-concat")
    assert after.nodes["concat1"]["attrs"]["inplace"] == [True, False, True]
    assert copies(after) == 1


def test_concat_read_by_a_concat_keeps_its_slices_copied():
    graph = bound(net("concat { concat { conv(4, 1x1) | conv(6, 1x1) -> conv(5, 3x3, "
                      "padding=1) } | relu }"))
    after = same_numbers(graph, "fuse-1x1-siblings", "inplace-concat")
    assert "concat2.wide" not in after
    assert after.nodes["concat2"]["attrs"]["inplace"] == [False, True]
    assert after.nodes["concat1"]["attrs"]["inplace"] == [True, True]


# ---------------------------------------------------------------- plan-memory
def test_plan_memory_reuses_buffers():
    graph = bound(net("conv(8, 3x3, padding=1) -> relu -> conv(8, 3x3, padding=1) -> relu"
                      " -> conv(8, 3x3, padding=1) -> relu", "3x8x8"))
    after = same_numbers(graph, "plan-memory")
    assert ops(after) == ops(graph) and after.graph["reuse_memory"] is True
    order = list(nx.topological_sort(after))
    assert (plan_buffers(after, order, True).peak_floats()
            < plan_buffers(after, order, False).peak_floats())


# ---------------------------------------------------------------- -O2 against -O0 and torch
INCEPTION = """
block conv_bn(c, k=1) {
    conv(c, k, padding=same, bias=false) -> batchnorm -> relu
}
network tiny(input: 3x12x12) {
    pad(1, 0, 1, 0) -> stem: conv(8, 3x3, padding=1) -> batchnorm -> relu
    pad(0, 1, 0, 1) -> maxpool(3x3, stride=2)
    concat {
        conv_bn(4)
      | conv_bn(4) -> conv_bn(6, 3)
      | conv(3, 1x1) -> leaky_relu(0.1) -> conv(5, 3x3, padding=same) -> relu
      | maxpool(3x3, stride=1, padding=same) -> conv_bn(3)
    }
    dropout
    avgpool(global)
    dense(5)
    softmax
}
"""


def torch_inception(p, x):
    def conv_bn(t, name, k=1):
        pad = (k - 1) // 2
        t = F.conv2d(t, p[f"{name}.conv1.weight"], None, padding=pad)
        t = F.batch_norm(t, p[f"{name}.batchnorm1.running_mean"],
                         p[f"{name}.batchnorm1.running_var"], p[f"{name}.batchnorm1.weight"],
                         p[f"{name}.batchnorm1.bias"], eps=1e-5)
        return F.relu(t)

    t = F.pad(x, (1, 0, 1, 0))
    t = F.conv2d(t, p["stem.weight"], p["stem.bias"], padding=1)
    t = F.relu(F.batch_norm(t, p["batchnorm1.running_mean"], p["batchnorm1.running_var"],
                            p["batchnorm1.weight"], p["batchnorm1.bias"], eps=1e-5))
    t = F.max_pool2d(F.pad(t, (0, 1, 0, 1)), 3, 2)
    b1 = conv_bn(t, "conv_bn1")
    b2 = conv_bn(conv_bn(t, "conv_bn2"), "conv_bn3", 3)
    b3 = F.leaky_relu(F.conv2d(t, p["conv1.weight"], p["conv1.bias"]), 0.1)
    b3 = F.relu(F.conv2d(b3, p["conv2.weight"], p["conv2.bias"], padding=1))
    b4 = F.max_pool2d(F.pad(t, (1, 1, 1, 1), value=float("-inf")), 3, 1)
    b4 = conv_bn(b4, "conv_bn4")
    t = torch.cat([b1, b2, b3, b4], 1).mean((2, 3))
    return F.softmax(F.linear(t, p["dense1.weight"], p["dense1.bias"]), 1)


CHAIN = """
network chain(input: 4x7x7) {
    conv(16, 1x1, stride=2, padding=1) -> conv(3, 1x1) -> conv(8, 3x3) -> batchnorm -> tanh
    pad(1) -> avgpool(2x2, stride=1)
    dense(6, bias=false) -> batchnorm -> sigmoid
}
"""


def torch_chain(p, x):
    t = F.conv2d(x, p["conv1.weight"], p["conv1.bias"], stride=2, padding=1)
    t = F.conv2d(t, p["conv2.weight"], p["conv2.bias"])
    t = F.conv2d(t, p["conv3.weight"], p["conv3.bias"])
    t = torch.tanh(F.batch_norm(t, p["batchnorm1.running_mean"], p["batchnorm1.running_var"],
                                p["batchnorm1.weight"], p["batchnorm1.bias"], eps=1e-5))
    t = F.avg_pool2d(F.pad(t, (1, 1, 1, 1)), 2, 1).flatten(1)
    t = F.linear(t, p["dense1.weight"])
    return torch.sigmoid(F.batch_norm(t, p["batchnorm2.running_mean"],
                                      p["batchnorm2.running_var"], p["batchnorm2.weight"],
                                      p["batchnorm2.bias"], eps=1e-5))


RESIDUAL = """
network residual(input: 4x6x6) {
    conv(4, 3x3, padding=1, bias=false) -> batchnorm -> relu
    add { conv(4, 3x3, padding=1) -> batchnorm | identity } -> relu
    pad(1) -> maxpool(2x2)
    concat { conv(2, 1x1) | conv(3, 1x1) }
}
"""


def torch_residual(p, x):
    def bn(t, name):
        return F.batch_norm(t, p[f"{name}.running_mean"], p[f"{name}.running_var"],
                            p[f"{name}.weight"], p[f"{name}.bias"], eps=1e-5)

    t = F.relu(bn(F.conv2d(x, p["conv1.weight"], None, padding=1), "batchnorm1"))
    t = F.relu(bn(F.conv2d(t, p["conv2.weight"], p["conv2.bias"], padding=1), "batchnorm2") + t)
    t = F.max_pool2d(F.pad(t, (1, 1, 1, 1)), 2)
    return torch.cat([F.conv2d(t, p["conv3.weight"], p["conv3.bias"]),
                      F.conv2d(t, p["conv4.weight"], p["conv4.bias"])], 1)


@pytest.mark.parametrize("text, twin, expected", [
    (INCEPTION, torch_inception, "input conv*6 slice*3 concat maxpool*2 avgpool dense softmax"),
    (CHAIN, torch_chain, "input conv*2 avgpool pad dense"),
    (RESIDUAL, torch_residual, "input conv*3 maxpool slice*3 concat"),
])
def test_o2_equals_o0_and_torch(text, twin, expected):
    ref, weights, x = o2_equals_o0(text)
    graph = bound(text)
    want_ops = collections.Counter()
    for item in expected.split():
        op, _, count = item.partition("*")
        want_ops[op] = int(count or 1)
    assert ops(optimize(graph, check=True)) == want_ops
    fast = cnnc.compile_source(text, weights=weights, progress=False)
    with torch.no_grad():
        want = twin({k: torch.from_numpy(v) for k, v in weights.items()},
                    torch.from_numpy(x)).numpy()
    assert rel(ref, want) <= 1e-5
    assert rel(fast(x), want) <= 1e-5


@pytest.mark.parametrize("text", [INCEPTION, CHAIN, RESIDUAL])
def test_every_level_and_single_disabled_pass_keeps_the_numbers(text):
    graph = bound(text)
    x = input_for(graph)
    ref = run(optimize(graph, level=0), x)
    assert rel(run(optimize(graph, level=1, check=True), x), ref) <= 1e-5
    for name in PIPELINE:
        assert rel(run(optimize(graph, disabled=[name], check=True), x), ref) <= 1e-5, name


# ---------------------------------------------------------------- examples
def example(name: str):
    return build_graph(load_program(os.path.join(EXAMPLES, f"{name}.cnn")))


# se_resnet: with these random batch norms 16 residual blocks amplify float32 rounding
# beyond any tolerance; tests/test_v11_layers.py verifies it with conditioned weights
@pytest.mark.parametrize("name", ["lenet5", "cifar_inception", "resnet18", "squeezenet",
                                  "mobilenet_v2", "shufflenet_v2"])
def test_verify_passes_on_examples(name):
    graph = example(name)
    check = verify_passes(graph, random_weights(graph), batch=1)
    assert [n for n, _ in check.rows] == PIPELINE
    assert check.first_failure is None, check.rows


def test_verify_passes_names_the_first_pass_beyond_tolerance():
    graph = parsed(net("conv(4, 3x3, bias=false) -> batchnorm -> relu"))
    check = verify_passes(graph, random_weights(graph), tol=0.0)
    assert check.first_failure == "fold-batchnorm"  # float32 rounding of the folded weights
    assert check.rows[0] == ("drop-identity", 0.0)


def test_googlenet():
    """No relu, dropout, identity or pad left; <= 39 convs; concats in place; same numbers."""
    graph = example("googlenet")
    params = init_parameters(graph, 0)
    optimized = optimize(bind_parameters(graph, params), check=True)
    counts = ops(optimized)
    assert ops(graph)["conv"] == 57 and counts["conv"] <= 39
    assert not counts["relu"] + counts["dropout"] + counts["identity"] + counts["pad"]
    concats = [d for _, d in optimized.nodes(data=True) if d["op"] == "concat"]
    assert len(concats) == 9 and all(all(d["attrs"]["inplace"]) for d in concats)
    assert copies(optimized) == 0
    check = verify_passes(graph, params, batch=1, tol=1e-5)
    assert check.first_failure is None, check.rows


# ---------------------------------------------------------------- golden dumps
GOLDEN_CASES = {"inception": INCEPTION, "chain": CHAIN, "residual": RESIDUAL}


def golden_dumps(text: str, directory: str) -> None:
    optimize(parsed(text), dump_dir=directory)
    for name in os.listdir(directory):
        if not name.endswith(".txt"):
            os.remove(os.path.join(directory, name))


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden_dump_after_every_pass(case, tmp_path):
    golden_dumps(GOLDEN_CASES[case], str(tmp_path))
    expected_dir = os.path.join(GOLDEN, case)
    assert sorted(os.listdir(tmp_path)) == sorted(os.listdir(expected_dir))
    for name in sorted(os.listdir(expected_dir)):
        with open(os.path.join(expected_dir, name), encoding="utf-8") as fh:
            assert (tmp_path / name).read_text() == fh.read(), name


if __name__ == "__main__" and sys.argv[1:] == ["--update-golden"]:
    import shutil
    for case, text in GOLDEN_CASES.items():
        target = os.path.join(GOLDEN, case)
        shutil.rmtree(target, ignore_errors=True)
        golden_dumps(text, target)
        print(f"wrote {target}")
