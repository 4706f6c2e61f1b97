"""The lanes conv kernel (cnnc/kernels/lanesconv.py) against torch.nn.functional.conv2d.

The same checks as test_fastconv.py's for the packed kernel (input inside a bigger
buffer, output channels outside the kernel's range left at SENTINEL), on ungrouped convs:
output channel counts around the tile of channels (16 on AVX2), planes shorter than a tile
of positions and not a multiple of it, strides, padding, dilation, residuals, every
activation and activations from a channel on.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_fastconv import (
    ACTS,
    ALPHA,
    check,
    make_problem,
    parallel_case,
    random,
    rng_for,
    torch_act,
)

import cnnc
from cnnc import kernels as K
from cnnc.backend import current_target, lanes_runs
from cnnc.kernels import lanesconv
from cnnc.kernels.elementwise import ACT_HARDSWISH, ACT_RELU6


def run_lanes(case, act=K.ACT_RELU, xc0=1, oc0=2, res=None, rc0=-1, act_from=0, ref=None):
    """The case's conv with activation ``act`` against PyTorch's, or against ``ref``
    computed by the caller from ``make_problem(case, ACT_NONE, xc0, oc0)``'s data."""
    _, cin, _, _, k, (kh, kw), (sh, sw), _, (dh, dw), groups = case
    problem_act = act if ref is None else K.ACT_NONE  # make_problem seeds its data by it
    x, wt, b, (pt, _, pl, _), expected, out = make_problem(case, problem_act, xc0, oc0)
    K.conv2d_lanes(x, xc0, cin, out, oc0, k, K.pack_lanes_weights(wt), b, kh, kw, pt, pl, sh,
                   sw, dh, dw, groups, act, ALPHA, 0.0, out if res is None else res, rc0,
                   act_from)  # fmt: skip
    check(out, oc0, expected if ref is None else ref)


# (N, cin, H, W, K, (kh, kw), (sh, sw), padding, (dh, dw), groups); groups is always 1
LANES_CASES = [
    # 1x1: read as it is (unpadded, stride 1), else through the padded copy
    (1, 3, 9, 7, 4, (1, 1), (1, 1), "valid", (1, 1), 1),  # fewer channels than a tile
    (3, 20, 13, 11, 17, (1, 1), (1, 1), "valid", (1, 1), 1),  # a tile and one channel
    (2, 3, 1, 1, 5, (1, 1), (1, 1), "valid", (1, 1), 1),  # one position: a partial tile
    (2, 6, 9, 8, 9, (1, 1), (2, 2), "valid", (1, 1), 1),
    (3, 4, 7, 7, 5, (1, 1), (1, 1), (1, 1), (1, 1), 1),
    # 3x3
    (3, 5, 8, 8, 6, (3, 3), (1, 1), "same", (1, 1), 1),
    (1, 19, 17, 9, 33, (3, 3), (1, 1), (1, 1), (1, 1), 1),  # two tiles and one channel
    (3, 4, 9, 9, 13, (3, 3), (2, 2), "same", (1, 1), 1),
    (1, 4, 10, 8, 8, (3, 3), (2, 2), "same", (1, 1), 1),  # asymmetric padding (0, 1)
    (2, 3, 13, 11, 4, (3, 3), (3, 3), (2, 1, 0, 2), (1, 1), 1),
    (2, 3, 9, 7, 4, (3, 3), (1, 2), (1, 0, 2, 1), (1, 1), 1),
    (1, 3, 2, 3, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),  # input smaller than the kernel
    # 5x5 (LeNet-5's second conv, an inception 5x5), 7x7, 1x7, 7x1, an even kernel
    (4, 6, 14, 14, 16, (5, 5), (1, 1), "valid", (1, 1), 1),
    (1, 24, 8, 8, 64, (5, 5), (1, 1), "same", (1, 1), 1),
    (1, 4, 12, 11, 10, (5, 5), (1, 1), "same", (1, 1), 1),
    (3, 3, 15, 13, 8, (7, 7), (2, 2), (3, 3), (1, 1), 1),
    (1, 4, 9, 7, 5, (1, 7), (1, 1), "same", (1, 1), 1),
    (3, 4, 12, 9, 5, (7, 1), (2, 1), (3, 0), (1, 1), 1),
    (2, 3, 11, 10, 4, (4, 4), (1, 1), "same", (1, 1), 1),
    # dilation, with and without a stride
    (1, 3, 11, 9, 4, (3, 3), (1, 1), "valid", (2, 2), 1),
    (3, 3, 11, 9, 6, (3, 3), (1, 1), "same", (2, 2), 1),
    (1, 3, 12, 10, 2, (3, 2), (2, 1), (2, 1), (2, 3), 1),
    # more weights than one k block reads: 7 k blocks of 16, the last short
    (2, 64, 9, 9, 100, (3, 3), (2, 2), "same", (1, 1), 1),
    # more taps than 2 * TAP_BLOCK (on AVX2: 3 blocks of 128, the last short) over groups
    # of TILE_GROUP tiles of positions, the last group short (24 tiles of 6 positions)
    (1, 36, 12, 12, 20, (3, 3), (1, 1), "same", (1, 1), 1),
]


@pytest.mark.parametrize("case", LANES_CASES, ids=str)
def test_lanes_shapes(case):
    run_lanes(case)


@pytest.mark.parametrize("case", LANES_CASES, ids=str)
def test_lanes_shapes_parallel(case):
    run_lanes(parallel_case(case))


@pytest.mark.parametrize("act", [*ACTS, ACT_RELU6, ACT_HARDSWISH])
@pytest.mark.parametrize("case", [LANES_CASES[i] for i in (1, 7, 12, -2, -1)], ids=str)
def test_lanes_activations(case, act):
    if act in (ACT_RELU6, ACT_HARDSWISH):  # not in torch_act: referenced here
        conv = make_problem(case, K.ACT_NONE, 2, 1)[4]
        t = torch.from_numpy(conv)
        ref = (F.relu6(t) if act == ACT_RELU6 else F.hardswish(t)).numpy()
        run_lanes(case, act, xc0=2, oc0=1, ref=ref)
    else:
        run_lanes(case, act, xc0=2, oc0=1)


@pytest.mark.parametrize("xc0, oc0", [(0, 0), (0, 3), (4, 0)])
@pytest.mark.parametrize("case", [LANES_CASES[i] for i in (1, 6, 13)], ids=str)
def test_lanes_offsets(case, xc0, oc0):
    run_lanes(case, K.ACT_LEAKY, xc0, oc0)


@pytest.mark.parametrize("act", [K.ACT_NONE, K.ACT_RELU, K.ACT_TANH])
@pytest.mark.parametrize("case", [LANES_CASES[i] for i in (1, 6, 7, -2, -1)], ids=str)
def test_lanes_residual(case, act):
    """``act(conv + bias + res)``, the residual read from channels ``rc0..`` of its own
    buffer."""
    n, k = case[0], case[4]
    conv = make_problem(case, K.ACT_NONE, 1, 2)[4]
    res = random(rng_for("residual", case, act), n, k + 5, *conv.shape[2:])
    ref = torch_act(torch.from_numpy(conv + res[:, 3 : 3 + k].astype(np.float64)), act).numpy()
    run_lanes(case, act, 1, 2, res=res, rc0=3, ref=ref)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("act_from", [0, 3, 16, 21, 40])
@pytest.mark.parametrize("act", [K.ACT_RELU, K.ACT_TANH])
@pytest.mark.parametrize("case", [LANES_CASES[6], LANES_CASES[-1]], ids=str)
def test_lanes_act_from(case, act, act_from, residual):
    """The activation on output channels ``act_from`` up only: from inside a tile of
    channels, at a tile's edge and past the last channel."""
    n, k = case[0], case[4]
    conv = make_problem(case, K.ACT_NONE, 1, 2)[4]
    res = None
    if residual:
        res = random(rng_for("act_from", case), n, k + 5, *conv.shape[2:])
        conv = conv + res[:, 3 : 3 + k].astype(np.float64)
    ref = conv.copy()
    ref[:, act_from:] = torch_act(torch.from_numpy(conv[:, act_from:]), act).numpy()
    run_lanes(case, act, 1, 2, res=res, rc0=3 if residual else -1, act_from=act_from, ref=ref)


@pytest.mark.parametrize("act", [K.ACT_RELU, K.ACT_TANH, K.ACT_SIGMOID])
def test_lanes_nan_stays_nan(act):
    """A NaN input cell gives NaN where PyTorch does, and the other cells stay finite."""
    x = np.ones((1, 3, 8, 8), np.float32)
    x[0, 1, 2, 3] = np.nan
    x[0, 2, 7, 7] = np.nan  # in the last, partial tile of positions
    w = np.full((20, 3, 1, 1), 0.5, np.float32)
    out = np.zeros((1, 20, 8, 8), np.float32)
    K.conv2d_lanes(x, 0, 3, out, 0, 20, K.pack_lanes_weights(w), np.zeros(20, np.float32),
                   1, 1, 0, 0, 1, 1, 1, 1, 1, act, 0.0, 0.0, out, -1, 0)  # fmt: skip
    ref = torch_act(F.conv2d(torch.from_numpy(x), torch.from_numpy(w)), act).numpy()
    assert (np.isnan(out) == np.isnan(ref)).all() and np.isnan(ref).sum() == 40
    assert np.allclose(out[~np.isnan(ref)], ref[~np.isnan(ref)], atol=1e-6)


def test_lanes_weight_layout():
    """``[k_block][tap][KB]``, K padded with zeros to a multiple of KB."""
    kb = lanesconv.KB
    w = np.arange((kb + 1) * 2 * 3, dtype=np.float32).reshape(kb + 1, 2, 1, 3) + 1
    packed = K.pack_lanes_weights(w).reshape(2, 6, kb)
    for k in range(2 * kb):
        expect = w[k].reshape(6) if k <= kb else np.zeros(6)
        np.testing.assert_array_equal(packed[k // kb, :, k % kb], expect)


def conv_attrs(kernel, stride=(1, 1), groups=1):
    return {"kernel": kernel, "stride": stride, "groups": groups}


@pytest.mark.parametrize("attrs, cin, out_shape, expected", [
    (conv_attrs((3, 3), (2, 2)), 128, (256, 14, 14), True),  # stride 2
    (conv_attrs((3, 3), (2, 2)), 64, (128, 28, 28), "narrow"),  # stride 2, a wide plane
    (conv_attrs((5, 5)), 6, (16, 10, 10), "16"),  # LeNet-5's: where 16 channels fill a tile
    (conv_attrs((3, 3)), 512, (512, 7, 7), True),  # a small plane
    (conv_attrs((1, 1)), 832, (384, 7, 7), True),  # a 1x1 on a small plane
    (conv_attrs((1, 1)), 128, (16, 55, 55), False),  # a 1x1 on a wide plane
    (conv_attrs((1, 1)), 512, (64, 13, 13), True),  # few outputs on a 13x13 plane
    (conv_attrs((1, 1)), 512, (1000, 13, 13), False),  # many
    (conv_attrs((3, 3)), 16, (64, 55, 55), False),  # a wide plane
    (conv_attrs((3, 3)), 3, (64, 32, 32), False),  # 27 taps
    (conv_attrs((7, 7), (2, 2)), 3, (64, 112, 112), False),  # 147 taps of 3 channels
    (conv_attrs((1, 1), (2, 2)), 64, (128, 28, 28), False),  # a strided 1x1, wide plane
    (conv_attrs((5, 5)), 1, (6, 28, 28), False),  # 25 taps, 6 channels
    (conv_attrs((3, 3), (2, 2), groups=2), 64, (64, 14, 14), False),  # grouped
])
def test_lanes_choice(attrs, cin, out_shape, expected):
    if expected == "16":  # AVX-512's tile of 32 channels would be half empty
        expected = current_target().lanes_vectors * current_target().lanes <= 16
    if expected == "narrow":  # AVX-512's packed tile wins on strided convs' wide planes
        expected = current_target().lanes < 16
    assert lanes_runs(attrs, cin, out_shape) == expected


@pytest.mark.parametrize("last, lanes", [
    ("maxpool(4) -> conv(32, 3x3)", False),  # 13% of the multiply-adds: not worth its compile
    ("conv(32, 3x3, stride=6)", True),  # 13% too, but strided: worth it whatever its share
    ("conv(64, 3x3, stride=2)", True),  # 69%
])
def test_lanes_only_for_enough_of_the_work(last, lanes):
    """A network runs the lanes kernel only where its convs hold LANES_MIN_SHARE of the
    network's conv work, or on strided convs; the wide 1x1 conv stays packed either way."""
    net = cnnc.compile_source(f"network n(input: 64x28x28) {{ conv(128, 1x1) -> {last} }}",
                              progress=False)
    kernels = [s.kernel.__name__ for s in net._plan.steps]
    assert kernels[0] == "conv2d_packed"
    assert kernels[-1] == ("conv2d_lanes" if lanes else "conv2d_packed")


def test_one_lanes_signature():
    """Every call above used the same argument types, so nothing compiled twice."""
    assert len(K.conv2d_lanes.signatures) <= 1
