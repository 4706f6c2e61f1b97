"""Shape inference (§5) against hand-computed shapes and against PyTorch."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import graph_of, net_src, same_pads


def out_shape(layer: str, shape: str = "3x17x16"):
    graph = graph_of(net_src(layer, shape))
    return graph.nodes[graph.graph["output"]]["shape"]


@pytest.mark.parametrize("hw", [(17, 16), (8, 8), (5, 9)])
@pytest.mark.parametrize("k, s, p, d, g", [
    ((3, 3), (1, 1), "valid", (1, 1), 1), ((3, 3), (2, 2), "same", (1, 1), 1),
    ((1, 7), (1, 1), "same", (1, 1), 1), ((5, 3), (2, 3), (2, 1), (1, 1), 3),
    ((3, 3), (1, 2), "same", (2, 2), 1), ((2, 2), (3, 3), "valid", (2, 1), 3),
    ((4, 4), (2, 2), "same", (1, 1), 1),
])
def test_conv_shapes_match_pytorch(hw, k, s, p, d, g):
    h, w = hw
    pad_arg = p if isinstance(p, str) else f"{p[0]}x{p[1]}"
    layer = (f"conv(6, {k[0]}x{k[1]}, stride={s[0]}x{s[1]}, padding={pad_arg}, "
             f"dilation={d[0]}x{d[1]}, groups={g})")
    x = torch.zeros(1, 3, h, w)
    if p == "same":
        pt, pb = same_pads(h, k[0], s[0], d[0])
        pl, pr = same_pads(w, k[1], s[1], d[1])
        x = F.pad(x, (pl, pr, pt, pb))
        pad = 0
    else:
        pad = 0 if p == "valid" else p
    weight = torch.zeros(6, 3 // g, *k)
    ref = F.conv2d(x, weight, stride=s, padding=pad, dilation=d, groups=g).shape[1:]
    assert out_shape(layer, f"3x{h}x{w}") == tuple(ref)
    if p == "same":
        assert tuple(ref[1:]) == (math.ceil(h / s[0]), math.ceil(w / s[1]))


@pytest.mark.parametrize("kind", ["maxpool", "avgpool"])
@pytest.mark.parametrize("k, s, p", [
    (2, None, "valid"), (3, 2, "valid"), (3, 2, "same"), (3, 1, "same"), (3, 2, 1),
    ((3, 2), (2, 1), (1, 0)), (5, 3, "same"),
])
def test_pool_shapes_match_pytorch(kind, k, s, p):
    k2 = k if isinstance(k, tuple) else (k, k)
    s2 = k2 if s is None else (s if isinstance(s, tuple) else (s, s))
    def fmt(v):
        return v if isinstance(v, str) else f"{v[0]}x{v[1]}" if isinstance(v, tuple) else str(v)
    stride = f", stride={fmt(s)}" if s is not None else ""
    layer = f"{kind}({fmt(k)}{stride}, padding={fmt(p)})"
    x = torch.zeros(1, 3, 17, 16)
    pad = 0
    if p == "same":
        x = F.pad(x, (*same_pads(16, k2[1], s2[1]), *same_pads(17, k2[0], s2[0])))
    elif p != "valid":
        pad = p
    ref = F.max_pool2d(x, k2, s2, pad).shape[1:]
    assert out_shape(layer) == tuple(ref)


@pytest.mark.parametrize("layer, shape", [
    ("avgpool(global)", (3, 1, 1)), ("maxpool(global)", (3, 1, 1)),
    ("flatten", (3 * 17 * 16,)), ("dense(10)", (10,)), ("flatten -> dense(4) -> flatten", (4,)),
    ("pad(1)", (3, 19, 18)), ("pad(2x1)", (3, 21, 18)), ("pad(1, 2, 3, 4)", (3, 20, 23)),
    ("lrn", (3, 17, 16)), ("softmax", (3, 17, 16)), ("dense(6) -> batchnorm -> softmax", (6,)),
    ("concat { conv(4, 1x1) | identity | maxpool(3, stride=1, padding=same) }", (10, 17, 16)),
    ("dense(3) -> concat { dense(2) | identity }", (5,)),
    ("add { conv(3, 3x3, padding=same) | identity | relu }", (3, 17, 16)),
    ("conv(8, 3x3, stride=2, padding=1)", (8, 9, 8)),
])
def test_hand_computed_shapes(layer, shape):
    assert out_shape(layer) == shape


def test_same_padding_split_smaller_half_first():
    graph = graph_of(net_src("conv(2, 4x4, padding=same)\nmaxpool(3, stride=2, padding=same)",
                             "1x8x7"))
    assert graph.nodes["conv1"]["attrs"]["pads"] == (1, 2, 1, 2)
    # maxpool: out 4x4 from 8x7 -> total rows (3*2+3-8)=1, cols (3*2+3-7)=2
    assert graph.nodes["maxpool1"]["attrs"]["pads"] == (0, 1, 1, 1)
    assert graph.nodes["maxpool1"]["shape"] == (2, 4, 4)
