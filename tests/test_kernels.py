"""The Numba kernels against torch.nn.functional on small random tensors.

Every kernel reads its operand from inside a bigger buffer (channel offset > 0 where it
matters) and writes into a buffer pre-filled with SENTINEL, so each test also checks that
the channels outside the kernel's output range are left alone. All calls use Python ints and
floats and C-contiguous float32 arrays, so each kernel is compiled once (see the last test).
"""

import math
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import resolve_pads

from cnnc import kernels as K

SENTINEL = 7.0
TOL = 1e-4
ALPHA = 0.1  # leaky-relu slope used throughout
ACTS = [K.ACT_NONE, K.ACT_RELU, K.ACT_LEAKY, K.ACT_SIGMOID, K.ACT_TANH]


# ---------------------------------------------------------------- helpers


def rng_for(*key) -> np.random.Generator:
    """A generator seeded by the test's parameters, the same in every run."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def random(rng, *shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def embed(rng, t: np.ndarray, c0: int, extra: int = 2) -> np.ndarray:
    """A random buffer with ``t`` in channels ``c0 .. c0+C-1`` and random channels around it."""
    n, c, h, w = t.shape
    buf = random(rng, n, c0 + c + extra, h, w)
    buf[:, c0 : c0 + c] = t
    return buf


def output_buffer(n: int, c: int, h: int, w: int, oc0: int) -> np.ndarray:
    return np.full((n, oc0 + c + 3, h, w), SENTINEL, np.float32)


def check(out: np.ndarray, oc0: int, ref) -> None:
    """Channels ``oc0 ..`` of ``out`` match ``ref``; all other channels still hold SENTINEL."""
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    c = ref.shape[1]
    assert out.shape[0] == ref.shape[0] and out.shape[2:] == ref.shape[2:]
    got = out[:, oc0 : oc0 + c]
    err = np.abs(got - ref).max() / max(1.0, float(np.abs(ref).max()))
    assert err <= TOL, f"max relative error {err:.2e}"
    assert (out[:, :oc0] == SENTINEL).all() and (out[:, oc0 + c :] == SENTINEL).all()


def torch_act(t: torch.Tensor, act: int) -> torch.Tensor:
    if act == K.ACT_RELU:
        return F.relu(t)
    if act == K.ACT_LEAKY:
        return F.leaky_relu(t, ALPHA)
    if act == K.ACT_SIGMOID:
        return torch.sigmoid(t)
    if act == K.ACT_TANH:
        return torch.tanh(t)
    return t


# ---------------------------------------------------------------- conv2d

# (N, cin, H, W, K, (kh, kw), (sh, sw), padding, (dh, dw), groups)
CONV_CASES = [
    (1, 3, 9, 7, 4, (3, 3), (1, 1), "valid", (1, 1), 1),
    (3, 3, 9, 7, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (1, 5, 8, 8, 6, (3, 3), (1, 1), "same", (1, 1), 1),
    (3, 4, 9, 9, 5, (3, 3), (2, 2), "same", (1, 1), 1),  # asymmetric pads (0, 1)
    (1, 4, 10, 8, 3, (3, 3), (2, 2), "same", (1, 1), 1),
    (2, 3, 11, 10, 4, (5, 5), (3, 3), "same", (1, 1), 1),
    (2, 3, 11, 10, 4, (4, 4), (1, 1), "same", (1, 1), 1),  # even kernel: pads (1, 2)
    (1, 4, 9, 7, 5, (1, 7), (1, 1), "same", (1, 1), 1),
    (2, 4, 9, 7, 5, (3, 1), (1, 1), "same", (1, 1), 1),
    (1, 4, 9, 7, 5, (1, 7), (1, 1), (0, 3), (1, 1), 1),
    (3, 4, 12, 9, 5, (7, 1), (2, 1), (3, 0), (1, 1), 1),
    (1, 3, 9, 7, 4, (1, 1), (1, 1), "valid", (1, 1), 1),
    (2, 3, 9, 7, 4, (1, 1), (2, 2), "valid", (1, 1), 1),
    (1, 3, 13, 11, 4, (3, 3), (3, 3), (2, 1, 0, 2), (1, 1), 1),  # explicit asymmetric
    (2, 3, 9, 7, 4, (3, 3), (1, 2), (1, 0, 2, 1), (1, 1), 1),
    (1, 3, 11, 9, 4, (3, 3), (1, 1), "valid", (2, 2), 1),
    (3, 3, 11, 9, 4, (3, 3), (1, 1), "same", (2, 2), 1),
    (1, 3, 12, 10, 2, (3, 2), (2, 1), (2, 1), (2, 3), 1),
    (1, 4, 9, 7, 6, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    (3, 4, 9, 8, 4, (3, 3), (2, 2), "same", (1, 1), 2),
    (2, 6, 9, 7, 6, (3, 3), (1, 1), (1, 1), (1, 1), 3),
    (1, 5, 9, 7, 5, (3, 3), (1, 1), (1, 1), (1, 1), 5),  # depthwise
    (3, 4, 10, 9, 8, (3, 3), (2, 2), "same", (1, 1), 4),  # depthwise, multiplier 2
    (2, 4, 9, 7, 4, (5, 5), (1, 1), "same", (2, 2), 4),  # dilated depthwise
    (1, 3, 2, 3, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),  # input smaller than kernel
    (2, 3, 1, 1, 5, (1, 1), (1, 1), "valid", (1, 1), 1),
]


def run_conv(case, bias, act, xc0, oc0):
    n, cin, h, w, k, (kh, kw), (sh, sw), padding, (dh, dw), groups = case
    rng = rng_for("conv", case, bias, act, xc0, oc0)
    x = random(rng, n, cin, h, w)
    wt = random(rng, k, cin // groups, kh, kw)
    b = random(rng, k) if bias else np.zeros(k, np.float32)
    pt, pb, pl, pr = resolve_pads(padding, h, w, kh, kw, sh, sw, dh, dw)
    xt = F.pad(torch.from_numpy(x), (pl, pr, pt, pb))
    conv = F.conv2d(
        xt,
        torch.from_numpy(wt),
        torch.from_numpy(b) if bias else None,
        stride=(sh, sw),
        dilation=(dh, dw),
        groups=groups,
    )
    ref = torch_act(conv, act)
    out = output_buffer(n, k, ref.shape[2], ref.shape[3], oc0)
    K.conv2d(
        embed(rng, x, xc0), xc0, cin, wt, b, out, oc0, sh, sw, pt, pl, dh, dw, groups, act, ALPHA,
        0.0,
    )
    check(out, oc0, ref)


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_shapes(case, bias):
    run_conv(case, bias, K.ACT_NONE, xc0=1, oc0=2)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("case", [CONV_CASES[1], CONV_CASES[3], CONV_CASES[22]], ids=str)
def test_conv2d_activations(case, act):
    run_conv(case, True, act, xc0=2, oc0=1)


@pytest.mark.parametrize("xc0, oc0", [(0, 0), (0, 3), (4, 0)])
def test_conv2d_offsets(xc0, oc0):
    run_conv(CONV_CASES[19], True, K.ACT_RELU, xc0, oc0)


# ---------------------------------------------------------------- pools

# (N, C, H, W, (kh, kw), (sh, sw), padding)
POOL_CASES = [
    (1, 3, 9, 7, (2, 2), (2, 2), "valid"),
    (3, 3, 8, 8, (2, 2), (2, 2), "valid"),
    (2, 3, 9, 7, (3, 3), (2, 2), "valid"),
    (1, 3, 9, 7, (3, 3), (1, 1), "same"),
    # 3x3/1 "same": the max pool's two-pass path (pool._maxpool3x3_same), its edges
    (2, 3, 2, 2, (3, 3), (1, 1), "same"),
    (2, 2, 2, 9, (3, 3), (1, 1), "same"),
    (1, 2, 9, 2, (3, 3), (1, 1), "same"),
    (3, 4, 14, 14, (3, 3), (1, 1), "same"),
    (2, 2, 5, 3, (3, 3), (1, 1), "same"),
    (1, 2, 7, 1, (3, 3), (1, 1), "same"),  # one column: the general path
    (3, 3, 9, 8, (3, 3), (2, 2), "same"),
    (2, 3, 10, 10, (3, 3), (2, 2), "same"),  # pads (0, 1)
    (1, 2, 11, 9, (3, 3), (3, 3), "same"),
    (2, 2, 10, 7, (2, 2), (2, 2), "same"),
    (1, 3, 9, 7, (3, 3), (2, 2), (1, 1)),
    (2, 3, 10, 8, (5, 5), (3, 3), (2, 2)),
    (1, 3, 9, 7, (1, 3), (1, 2), (0, 1)),
    (2, 3, 9, 7, (3, 1), (2, 1), "same"),
    (1, 3, 9, 7, (3, 3), (2, 2), (1, 0, 0, 1)),  # explicit asymmetric
    (2, 2, 8, 9, (4, 2), (3, 2), (2, 1, 1, 0)),
    # stride 2, rows wide enough for vector loops and their remainders (_windows_s2)
    (1, 2, 13, 41, (3, 3), (2, 2), "valid"),
    (2, 2, 12, 38, (2, 2), (2, 2), "valid"),
    (1, 2, 9, 37, (3, 2), (2, 2), "same"),
    # 3x3/2 max: vector blocks of outputs (pool._max3x3s2_block), their masked tails, the
    # edge windows, pads wider than one cell, planes smaller than a window
    (1, 2, 9, 70, (3, 3), (2, 2), "valid"),
    (2, 3, 8, 67, (3, 3), (2, 2), "same"),
    (1, 2, 7, 40, (3, 3), (2, 2), (2, 2, 2, 2)),
    (1, 2, 5, 36, (3, 3), (2, 2), (0, 2, 1, 2)),
    (1, 1, 1, 1, (3, 3), (2, 2), "same"),
    (2, 2, 2, 3, (3, 3), (2, 2), "same"),
    # the window padded on the right in the masked block: a remainder of exactly VL (8, 16
    # or 4 lanes) with it, of fewer, GoogLeNet's 14x14 (7 windows a row)
    (1, 2, 6, 32, (3, 3), (2, 2), "same"),
    (1, 2, 5, 16, (3, 3), (2, 2), "same"),
    (1, 2, 4, 8, (3, 3), (2, 2), "same"),
    (2, 3, 14, 14, (3, 3), (2, 2), "same"),
    (1, 2, 6, 30, (3, 3), (2, 2), (1, 1, 1, 2)),
    # the rest of a row as a whole block overlapping the one before it: SqueezeNet's 27x27
    # (13 windows a row), 17 windows (VL 16 too), padded on the left (ResNet's pool)
    (2, 3, 27, 27, (3, 3), (2, 2), "valid"),
    (1, 2, 7, 35, (3, 3), (2, 2), "valid"),
    (1, 2, 5, 34, (3, 3), (2, 2), (1, 1)),
    # work above SERIAL_WORK: the chunks shared out over the threads (the cases above run
    # on the calling thread alone)
    (2, 64, 40, 40, (3, 3), (2, 2), "same"),
    (2, 40, 31, 30, (3, 3), (1, 1), "same"),
    (4, 96, 32, 32, (2, 2), (2, 2), "valid"),
]


def pool_setup(kind, case):
    n, c, h, w, (kh, kw), (sh, sw), padding = case
    rng = rng_for(kind, case)
    x = random(rng, n, c, h, w)
    pads = resolve_pads(padding, h, w, kh, kw, sh, sw)
    return rng, x, pads


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_maxpool2d(case):
    n, c, _, _, (kh, kw), (sh, sw), _ = case
    rng, x, (pt, pb, pl, pr) = pool_setup("max", case)
    xt = F.pad(torch.from_numpy(x), (pl, pr, pt, pb), value=-math.inf)
    ref = F.max_pool2d(xt, (kh, kw), (sh, sw))
    out = output_buffer(n, c, ref.shape[2], ref.shape[3], oc0=1)
    K.pool2d(embed(rng, x, 2), 2, c, out, 1, kh, kw, sh, sw, pt, pl, 1)
    check(out, 1, ref)


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_avgpool2d(case):
    n, c, _, _, (kh, kw), (sh, sw), padding = case
    rng, x, (pt, pb, pl, pr) = pool_setup("avg", case)
    xt = torch.from_numpy(x)
    if isinstance(padding, tuple) and len(padding) == 2:
        ref = F.avg_pool2d(xt, (kh, kw), (sh, sw), padding, count_include_pad=False)
    else:  # torch pads symmetrically only: divide window sums by window cell counts
        sums = F.avg_pool2d(F.pad(xt, (pl, pr, pt, pb)), (kh, kw), (sh, sw))
        counts = F.avg_pool2d(F.pad(torch.ones_like(xt), (pl, pr, pt, pb)), (kh, kw), (sh, sw))
        ref = sums / counts
    out = output_buffer(n, c, ref.shape[2], ref.shape[3], oc0=1)
    K.pool2d(embed(rng, x, 2), 2, c, out, 1, kh, kw, sh, sw, pt, pl, 0)
    check(out, 1, ref)


@pytest.mark.parametrize("stride", [2, 1])
def test_maxpool2d_all_negative_with_padding(stride):
    """Padding must never win, even where every input value is negative."""
    rng = rng_for("maxneg")
    x = -np.abs(random(rng, 2, 3, 6, 5)) - 1.0
    ref = F.max_pool2d(torch.from_numpy(x), 3, stride, padding=1)
    out = output_buffer(2, 3, ref.shape[2], ref.shape[3], oc0=0)
    K.pool2d(x, 0, 3, out, 0, 3, 3, stride, stride, 1, 1, 1)
    check(out, 0, ref)


@pytest.mark.parametrize("shape", [(1, 4, 7, 7), (3, 5, 6, 9), (2, 3, 1, 1)], ids=str)
def test_global_pools(shape):
    rng = rng_for("global", shape)
    x = random(rng, *shape)
    n, c = shape[:2]
    xt = torch.from_numpy(x)
    buf = embed(rng, x, 1)
    out = output_buffer(n, c, 1, 1, oc0=2)
    K.global_avgpool(buf, 1, c, out, 2)
    check(out, 2, xt.mean(dim=(2, 3), keepdim=True))
    out = output_buffer(n, c, 1, 1, oc0=2)
    K.global_maxpool(buf, 1, c, out, 2)
    check(out, 2, xt.amax(dim=(2, 3), keepdim=True))


# ---------------------------------------------------------------- dense

# (N, cin, H, W, units)
DENSE_CASES = [
    (1, 12, 1, 1, 5),
    (3, 12, 1, 1, 7),
    (1, 3, 4, 5, 6),
    (3, 4, 3, 3, 9),
    (2, 70, 1, 1, 33),
    # work above SERIAL_WORK: the units shared out over the threads
    (4, 300, 1, 1, 300),
    (2, 64, 8, 8, 70),
    # an odd batch and units short of a block of 4 (dense.UNIT_BLOCK), shared out
    (5, 300, 1, 1, 190),
]


@pytest.mark.parametrize("case", DENSE_CASES, ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_dense(case, bias):
    n, cin, h, w, units = case
    rng = rng_for("dense", case, bias)
    x = random(rng, n, cin, h, w)
    wt = random(rng, units, cin * h * w)
    b = random(rng, units) if bias else np.zeros(units, np.float32)
    ref = F.linear(torch.from_numpy(x).flatten(1), torch.from_numpy(wt), torch.from_numpy(b))
    out = output_buffer(n, units, 1, 1, oc0=2)
    K.dense(embed(rng, x, 3), 3, cin, wt, b, out, 2, K.ACT_NONE, ALPHA, 0.0)
    check(out, 2, ref[:, :, None, None])


@pytest.mark.parametrize("n", [5, 300])  # on this thread alone, and shared out
def test_dense_outputs_do_not_depend_on_the_batch(n):
    """An image's outputs are the same bits alone, paired or last of an odd batch (images
    go two at a time through one loop): `cnnc predict` splits data sets into batches."""
    rng = rng_for("dense-batch", n)
    x = random(rng, n, 70, 1, 1)
    wt = random(rng, 13, 70)
    b = random(rng, 13)
    whole = output_buffer(n, 13, 1, 1, oc0=0)
    K.dense(x, 0, 70, wt, b, whole, 0, K.ACT_NONE, ALPHA, 0.0)
    for i in (0, n - 2, n - 1):
        alone = output_buffer(1, 13, 1, 1, oc0=0)
        K.dense(x[i : i + 1].copy(), 0, 70, wt, b, alone, 0, K.ACT_NONE, ALPHA, 0.0)
        np.testing.assert_array_equal(alone[0], whole[i])


@pytest.mark.parametrize("act", ACTS)
def test_dense_activations(act):
    rng = rng_for("dense-act", act)
    x = random(rng, 2, 16, 1, 1)
    wt = random(rng, 10, 16)
    b = random(rng, 10)
    ref = torch_act(
        F.linear(torch.from_numpy(x).flatten(1), torch.from_numpy(wt), torch.from_numpy(b)), act
    )
    out = output_buffer(2, 10, 1, 1, oc0=1)
    K.dense(x, 0, 16, wt, b, out, 1, act, ALPHA, 0.0)
    check(out, 1, ref[:, :, None, None])


# ---------------------------------------------------------------- element-wise

ELEMENTWISE_SHAPES = [(1, 3, 5, 7), (3, 4, 6, 6), (2, 10, 1, 1)]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
def test_activation(act, shape):
    rng = rng_for("act", act, shape)
    x = 4 * random(rng, *shape)
    ref = torch_act(torch.from_numpy(x), act)
    out = output_buffer(*shape, oc0=1)
    K.activation(embed(rng, x, 2), 2, shape[1], out, 1, act, ALPHA, 0.0)
    check(out, 1, ref)


@pytest.mark.parametrize("act", ACTS)
def test_activation_in_place(act):
    rng = rng_for("act-inplace", act)
    x = 4 * random(rng, 2, 3, 5, 4)
    ref = torch_act(torch.from_numpy(x), act)
    buf = output_buffer(2, 3, 5, 4, oc0=2)
    buf[:, 2:5] = x
    K.activation(buf, 2, 3, buf, 2, act, ALPHA, 0.0)
    check(buf, 2, ref)


def test_sigmoid_extremes():
    x = np.array([-200.0, -90.0, -20.0, 0.0, 20.0, 90.0, 200.0], np.float32).reshape(1, 7, 1, 1)
    out = np.empty_like(x)
    K.activation(x, 0, 7, out, 0, K.ACT_SIGMOID, 0.0, 0.0)
    assert np.isfinite(out).all()
    check(out, 0, torch.sigmoid(torch.from_numpy(x)))


@pytest.mark.parametrize("act", [K.ACT_NONE, K.ACT_RELU, K.ACT_LEAKY])
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
def test_add(act, shape):
    rng = rng_for("add", act, shape)
    a, b = random(rng, *shape), random(rng, *shape)
    ref = torch_act(torch.from_numpy(a) + torch.from_numpy(b), act)
    out = output_buffer(*shape, oc0=2)
    K.combine(embed(rng, a, 1), 1, embed(rng, b, 0), 0, shape[1], out, 2, 0, act, ALPHA, 0.0)
    check(out, 2, ref)


def test_add_aliasing_output():
    rng = rng_for("add-alias")
    a, b = random(rng, 2, 3, 4, 5), random(rng, 2, 3, 4, 5)
    ref = F.relu(torch.from_numpy(a) + torch.from_numpy(b))
    buf = output_buffer(2, 3, 4, 5, oc0=1)
    buf[:, 1:4] = a
    K.combine(buf, 1, embed(rng, b, 2), 2, 3, buf, 1, 0, K.ACT_RELU, 0.0, 0.0)
    check(buf, 1, ref)


@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES + [(3, 1, 4, 4)], ids=str)
def test_softmax(shape):
    rng = rng_for("softmax", shape)
    x = 30 * random(rng, *shape)  # large values: overflows unless the max is subtracted
    ref = F.softmax(torch.from_numpy(x), dim=1)
    out = output_buffer(*shape, oc0=1)
    K.softmax(embed(rng, x, 2), 2, shape[1], out, 1)
    check(out, 1, ref)
    K.softmax(out, 1, shape[1], out, 1)  # in place, on already normalised values
    check(out, 1, F.softmax(ref, dim=1))


# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
def test_batchnorm(shape):
    rng = rng_for("bn", shape)
    c = shape[1]
    x = random(rng, *shape)
    weight, bias, mean = random(rng, c), random(rng, c), random(rng, c)
    var = rng.uniform(0.1, 2.0, c).astype(np.float32)
    ref = F.batch_norm(
        torch.from_numpy(x),
        torch.from_numpy(mean),
        torch.from_numpy(var),
        torch.from_numpy(weight),
        torch.from_numpy(bias),
        eps=1e-3,
    )
    scale, shift = K.batchnorm_coefficients(weight, bias, mean, var, 1e-3)
    assert scale.dtype == shift.dtype == np.float32
    out = output_buffer(*shape, oc0=1)
    K.batchnorm(embed(rng, x, 2), 2, c, out, 1, scale, shift)
    check(out, 1, ref)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 9])
@pytest.mark.parametrize("n", [1, 3])
def test_lrn(size, n):
    rng = rng_for("lrn", size, n)
    x = 2 * random(rng, n, 7, 5, 6)
    alpha, beta, k = 0.8, 0.75, 1.5  # large alpha so the window matters
    ref = torch.nn.LocalResponseNorm(size, alpha, beta, k)(torch.from_numpy(x))
    out = output_buffer(n, 7, 5, 6, oc0=1)
    K.lrn(embed(rng, x, 2), 2, 7, out, 1, size, alpha, beta, k)
    check(out, 1, ref)


# ---------------------------------------------------------------- layout


@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 3), (0, 3, 2, 0)], ids=str)
@pytest.mark.parametrize("value", [0.0, -math.inf])
def test_pad2d(pads, value):
    pt, pb, pl, pr = pads
    rng = rng_for("pad", pads, value)
    x = random(rng, 2, 3, 5, 4)
    ref = F.pad(torch.from_numpy(x), (pl, pr, pt, pb), value=value)
    out = output_buffer(2, 3, ref.shape[2], ref.shape[3], oc0=2)
    K.pad2d(embed(rng, x, 1), 1, 3, out, 2, pt, pl, value)
    got = out[:, 2:5]
    assert (got == ref.numpy()).all()
    assert (out[:, :2] == SENTINEL).all() and (out[:, 5:] == SENTINEL).all()


def test_copy_channels_concat():
    rng = rng_for("copy")
    x = random(rng, 3, 4, 5, 6)
    out = output_buffer(3, 4, 5, 6, oc0=2)
    K.copy_channels(embed(rng, x, 1), 1, 4, out, 2)
    check(out, 2, x)


def test_copy_channels_flatten():
    rng = rng_for("flatten")
    x = random(rng, 2, 3, 4, 5)
    out = output_buffer(2, 60, 1, 1, oc0=1)
    K.copy_channels(embed(rng, x, 2), 2, 3, out, 1)
    check(out, 1, x.reshape(2, 60, 1, 1))


# ---------------------------------------------------------------- compilation

NUMBA_KERNELS = [
    "conv2d",
    "pool2d",
    "global_avgpool",
    "global_maxpool",
    "dense",
    "activation",
    "combine",
    "softmax",
    "batchnorm",
    "lrn",
    "pad2d",
    "copy_channels",
]


@pytest.mark.parametrize("name", NUMBA_KERNELS)
def test_one_signature_per_kernel(name):
    """The calls above all used the same argument types, so nothing compiled twice."""
    assert len(getattr(K, name).signatures) <= 1
