"""The fast conv kernels (cnnc/kernels/fastconv.py) against torch.nn.functional.conv2d.

As in test_kernels.py, every kernel reads its input from inside a bigger buffer (channel
offset > 0) and writes into a buffer pre-filled with SENTINEL, so each test also checks that
the channels outside the kernel's output range are left alone. Shapes are small but cover
the micro-kernel's tails: output planes shorter and longer than one 48-position tile, output
channel counts that are not multiples of 8, 1x1 convs that read the input buffer as it is, and
batches split into blocks of images laid side by side.
"""

import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import resolve_pads

from cnnc import kernels as K
from cnnc.backend import conv_kernel
from cnnc.kernels import fastconv
from cnnc.kernels.elementwise import SERIAL_WORK

SENTINEL = 7.0
TOL = 1e-4
ALPHA = 0.1
ACTS = [K.ACT_NONE, K.ACT_RELU, K.ACT_LEAKY, K.ACT_SIGMOID, K.ACT_TANH]


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def random(rng, *shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def torch_act(t: torch.Tensor, act: int) -> torch.Tensor:
    return {
        K.ACT_NONE: lambda: t,
        K.ACT_RELU: lambda: F.relu(t),
        K.ACT_LEAKY: lambda: F.leaky_relu(t, ALPHA),
        K.ACT_SIGMOID: lambda: torch.sigmoid(t),
        K.ACT_TANH: lambda: torch.tanh(t),
    }[act]()


def check(out: np.ndarray, oc0: int, ref: np.ndarray) -> None:
    """Channels ``oc0 ..`` of ``out`` match ``ref``; all other channels still hold SENTINEL."""
    c = ref.shape[1]
    assert out.shape[0] == ref.shape[0] and out.shape[2:] == ref.shape[2:]
    err = np.abs(out[:, oc0 : oc0 + c] - ref).max() / max(1.0, float(np.abs(ref).max()))
    assert err <= TOL, f"max relative error {err:.2e}"
    assert (out[:, :oc0] == SENTINEL).all() and (out[:, oc0 + c :] == SENTINEL).all()


def make_problem(case, act, xc0, oc0):
    """Random input embedded at channel ``xc0``, weights, bias, reference and output buffer."""
    n, cin, h, w, k, (kh, kw), (sh, sw), padding, (dh, dw), groups = case
    rng = rng_for(case, act, xc0, oc0)
    x = random(rng, n, xc0 + cin + 2, h, w)  # random channels around the operand
    wt = random(rng, k, cin // groups, kh, kw)
    b = random(rng, k)
    pads = resolve_pads(padding, h, w, kh, kw, sh, sw, dh, dw)
    pt, pb, pl, pr = pads
    xt = F.pad(torch.from_numpy(x[:, xc0 : xc0 + cin]).double(), (pl, pr, pt, pb))
    conv = F.conv2d(
        xt,
        torch.from_numpy(wt).double(),
        torch.from_numpy(b).double(),
        stride=(sh, sw),
        dilation=(dh, dw),
        groups=groups,
    )
    ref = torch_act(conv, act).numpy()
    out = np.full((n, oc0 + k + 3, ref.shape[2], ref.shape[3]), SENTINEL, np.float32)
    return x, wt, b, pads, ref, out


def run_packed(case, act=K.ACT_RELU, xc0=1, oc0=2):
    _, cin, _, _, k, (kh, kw), (sh, sw), _, (dh, dw), groups = case
    x, wt, b, (pt, _, pl, _), ref, out = make_problem(case, act, xc0, oc0)
    wpk = K.pack_conv_weights(wt, groups)
    K.conv2d_packed(
        x, xc0, cin, out, oc0, k, wpk, b, kh, kw, pt, pl, sh, sw, dh, dw, groups, act, ALPHA,
        0.0, out, -1, 0,
    )
    check(out, oc0, ref)


# (N, cin, H, W, K, (kh, kw), (sh, sw), padding, (dh, dw), groups)
PACKED_CASES = [
    # 1x1, stride 1, unpadded: the input buffer read as it is
    (1, 3, 9, 7, 4, (1, 1), (1, 1), "valid", (1, 1), 1),  # one partial tile (63 positions)
    (3, 5, 6, 8, 11, (1, 1), (1, 1), "valid", (1, 1), 1),  # exactly one full tile
    (3, 20, 13, 11, 17, (1, 1), (1, 1), "valid", (1, 1), 1),  # 3 tiles, last one partial
    (2, 3, 1, 1, 5, (1, 1), (1, 1), "valid", (1, 1), 1),
    # 1x1 with a stride or padding: through the phase-split input
    (2, 6, 9, 8, 9, (1, 1), (2, 2), "valid", (1, 1), 1),
    (1, 6, 10, 7, 8, (1, 1), (2, 1), "valid", (1, 1), 1),
    (3, 4, 7, 7, 5, (1, 1), (1, 1), (1, 1), (1, 1), 1),
    # 3x3
    (1, 3, 9, 7, 4, (3, 3), (1, 1), "valid", (1, 1), 1),
    (3, 5, 8, 8, 6, (3, 3), (1, 1), "same", (1, 1), 1),
    (1, 19, 17, 9, 21, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (3, 4, 9, 9, 13, (3, 3), (2, 2), "same", (1, 1), 1),  # odd size: pads (1, 1)
    (1, 4, 10, 8, 8, (3, 3), (2, 2), "same", (1, 1), 1),  # even size: asymmetric (0, 1)
    (2, 3, 13, 11, 4, (3, 3), (3, 3), (2, 1, 0, 2), (1, 1), 1),  # explicit asymmetric
    (2, 3, 9, 7, 4, (3, 3), (1, 2), (1, 0, 2, 1), (1, 1), 1),
    (1, 3, 2, 3, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),  # input smaller than kernel
    # 5x5, 7x7
    (1, 4, 12, 11, 10, (5, 5), (1, 1), "same", (1, 1), 1),
    (3, 3, 6, 6, 8, (5, 5), (1, 1), (2, 2), (1, 1), 1),
    (1, 3, 16, 16, 9, (7, 7), (2, 2), "same", (1, 1), 1),  # stem-like, pads (2, 3)
    (3, 3, 15, 13, 8, (7, 7), (2, 2), (3, 3), (1, 1), 1),
    # 1x7, 7x1, even kernel
    (1, 4, 9, 7, 5, (1, 7), (1, 1), "same", (1, 1), 1),
    (3, 4, 12, 9, 5, (7, 1), (2, 1), (3, 0), (1, 1), 1),
    (2, 3, 11, 10, 4, (4, 4), (1, 1), "same", (1, 1), 1),  # pads (1, 2)
    # dilation
    (1, 3, 11, 9, 4, (3, 3), (1, 1), "valid", (2, 2), 1),
    (3, 3, 11, 9, 6, (3, 3), (1, 1), "same", (2, 2), 1),
    (1, 3, 12, 10, 2, (3, 2), (2, 1), (2, 1), (2, 3), 1),  # dilation with stride
    # groups
    (1, 4, 9, 7, 6, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    (3, 8, 9, 8, 18, (3, 3), (2, 2), "same", (1, 1), 2),  # 9 channels per group
    (2, 6, 9, 7, 6, (3, 3), (1, 1), (1, 1), (1, 1), 3),
    (1, 6, 6, 6, 6, (1, 1), (1, 1), "valid", (1, 1), 2),  # grouped 1x1, read as it is
    # a 1x1 conv of AS_IS_CHANNELS outputs and more than THIN_TAPS inputs on a plane not a
    # multiple of 16 floats: copied, aligned
    (1, 33, 5, 5, 256, (1, 1), (1, 1), "valid", (1, 1), 1),
    # one image a block, no column padding (and the case below): the split copies whole
    # planes, here with zero rows above and below
    (1, 4, 9, 7, 5, (3, 1), (1, 1), (1, 1, 0, 0), (1, 1), 1),
    # no junk columns, one image a block: full tiles stored straight from the micro-kernel
    (1, 5, 7, 7, 130, (1, 1), (1, 1), "valid", (1, 1), 1),
    (1, 4, 20, 20, 16, (1, 1), (2, 2), "valid", (1, 1), 1),
    # rows wider than a tile: tiles inside one row of one image stored straight too
    (1, 3, 9, 60, 16, (3, 3), (1, 1), "same", (1, 1), 1),
    (2, 3, 5, 61, 8, (3, 3), (2, 1), (1, 1), (1, 1), 1),
    (1, 5, 9, 7, 5, (3, 3), (1, 1), (1, 1), (1, 1), 5),  # depthwise
    # images side by side in blocks smaller than the batch (XQ_BLOCK_BYTES = 64 KB): 31 KB
    # of split input an image, blocks of 2 images; 62 KB an image, blocks of 1
    (4, 16, 20, 20, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (3, 32, 20, 20, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    # weights beyond one k-block group (WEIGHT_GROUP_BYTES = 192 KB): 2 groups, the last
    # one short of a k block with 8-channel tiles (stride 2; grouped; a 1x1 read as it is)
    (2, 64, 9, 9, 100, (3, 3), (2, 2), "same", (1, 1), 1),
    (1, 128, 5, 5, 240, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    (1, 512, 3, 5, 100, (1, 1), (1, 1), "valid", (1, 1), 1),
    # stride 2 with one column phase read: the split's constant-stride copy
    (2, 3, 9, 10, 4, (1, 1), (2, 2), (1, 1), (1, 1), 1),  # padded: the copy starts at j 1
    (1, 3, 11, 12, 4, (3, 3), (2, 2), "same", (2, 2), 1),  # dilation 2: even taps only
    # 1x1 convs of more than THIN_TAPS taps, each tile through several k blocks: a plane of
    # 63 positions (copied), a grouped one of 48 (read as it is)
    (2, 40, 9, 7, 12, (1, 1), (1, 1), "valid", (1, 1), 1),
    (2, 70, 8, 6, 10, (1, 1), (1, 1), "valid", (1, 1), 2),  # grouped: 35 taps a group
    # planes of ALIAS_PLANE_FLOATS (32x32), ALIAS_CHANNELS outputs: copied to planes an odd
    # number of lines apart
    (2, 40, 32, 32, 64, (1, 1), (1, 1), "valid", (1, 1), 1),
]


@pytest.mark.parametrize("case", PACKED_CASES, ids=str)
def test_packed_shapes(case):
    run_packed(case)


def parallel_case(case):
    """The case with its batch raised until the conv's multiply-adds reach SERIAL_WORK, so
    that conv2d_packed shares its work out over the threads (the small cases above run on
    the calling thread alone)."""
    n, cin, h, w, k, (kh, kw), stride, padding, dilation, groups = case
    ref = make_problem((1, *case[1:]), K.ACT_NONE, 0, 0)[4]
    macs = k * ref.shape[2] * ref.shape[3] * (cin // groups) * kh * kw
    return (max(n, -(-SERIAL_WORK // macs)), *case[1:])


@pytest.mark.parametrize("case", PACKED_CASES, ids=str)
def test_packed_shapes_parallel(case):
    run_packed(parallel_case(case))


@pytest.mark.parametrize("act", ACTS)
# 33: rows wider than a tile, whose vectors go straight to out or, at a row's end, through
# the scratch (tanh and sigmoid both ways)
@pytest.mark.parametrize("case", [PACKED_CASES[i] for i in (2, 10, 26, 33, -2)], ids=str)
def test_packed_activations(case, act):
    run_packed(case, act, xc0=2, oc0=1)


@pytest.mark.parametrize("act", [K.ACT_RELU, K.ACT_TANH, K.ACT_SIGMOID])
@pytest.mark.parametrize("n", [2, 3, 16])
def test_packed_outputs_do_not_depend_on_the_batch(act, n):
    """An image's outputs are the same bits alone and in a batch (docs/DESIGN.md): LeNet-5's
    first conv on one image has 28 rows of 30 columns, whose last tile is partial (stored
    through the scratch), while a batch lays its images side by side, where tiles are
    whole (stored by the micro-kernel) -- tanh and sigmoid rounded differently there."""
    rng = rng_for("packed-batch", act, n)
    x = random(rng, n, 1, 28, 28)
    wt = random(rng, 6, 1, 5, 5)
    b = random(rng, 6)
    wpk = K.pack_conv_weights(wt, 1)

    def conv(images):
        out = np.empty((images.shape[0], 6, 28, 28), np.float32)
        K.conv2d_packed(images, 0, 1, out, 0, 6, wpk, b, 5, 5, 2, 2, 1, 1, 1, 1, 1, act,
                        ALPHA, 0.0, out, -1, 0)  # fmt: skip
        return out

    whole = conv(x)
    for i in (0, n - 1):
        np.testing.assert_array_equal(conv(x[i : i + 1].copy()), whole[i : i + 1])


@pytest.mark.parametrize("act", [K.ACT_RELU, K.ACT_TANH, K.ACT_SIGMOID])
def test_packed_nan_stays_nan(act):
    """A NaN input cell gives NaN where PyTorch does, tiles stored straight from registers
    (their tanh clamp) or through the scratch alike, and leaves the other cells finite."""
    x = np.ones((1, 3, 8, 8), np.float32)
    x[0, 1, 2, 3] = np.nan  # a straight tile (1x1 on a flat plane)
    x[0, 2, 7, 7] = np.nan  # the last, partial tile: through the scratch
    w = np.full((8, 3, 1, 1), 0.5, np.float32)
    b = np.zeros(8, np.float32)
    out = np.zeros((1, 8, 8, 8), np.float32)
    K.conv2d_packed(x, 0, 3, out, 0, 8, K.pack_conv_weights(w, 1), b, 1, 1, 0, 0, 1, 1, 1, 1,
                    1, act, 0.0, 0.0, out, -1, 0)  # fmt: skip
    ref = torch_act(F.conv2d(torch.from_numpy(x), torch.from_numpy(w)), act).numpy()
    assert (np.isnan(out) == np.isnan(ref)).all() and np.isnan(ref).sum() == 16
    assert np.allclose(out[~np.isnan(ref)], ref[~np.isnan(ref)], atol=1e-6)


@pytest.mark.parametrize("xc0, oc0", [(0, 0), (0, 3), (4, 0)])
@pytest.mark.parametrize("case", [PACKED_CASES[2], PACKED_CASES[9], PACKED_CASES[-2]], ids=str)
def test_packed_offsets(case, xc0, oc0):
    run_packed(case, K.ACT_LEAKY, xc0, oc0)


@pytest.mark.parametrize("case", [PACKED_CASES[i] for i in (0, 2, 3)] + [
    (2, 16, 2, 2, 32, (1, 1), (1, 1), "valid", (1, 1), 8),  # planes of 4: 4 groups read past
    (3, 12, 3, 3, 24, (1, 1), (1, 1), "valid", (1, 1), 4),
], ids=str)
def test_packed_as_is_at_buffer_end(case):
    """A 1x1 conv read as it is, its input the last channels of the buffer: the partial
    tail tiles of the last image (of its last groups, on planes shorter than a vector) go
    through the panels (their reads would pass the end)."""
    n, cin, h, w, k = case[:5]
    groups = case[-1]
    x, wt, b, _, ref, out = make_problem(case, K.ACT_NONE, 1, 0)
    x = np.ascontiguousarray(x[:, : 1 + cin])  # the operand ends the buffer
    K.conv2d_packed(x, 1, cin, out, 0, k, K.pack_conv_weights(wt, groups), b, 1, 1, 0, 0, 1,
                    1, 1, 1, groups, K.ACT_NONE, ALPHA, 0.0, out, -1, 0)  # fmt: skip
    check(out, 0, ref)


# Run in a child process: the input ends where an inaccessible page begins, so a read past
# its end is a segmentation fault, which would take pytest down with it.
GUARDED_CONV = """
import ctypes, mmap, sys
import numpy as np, torch
from cnnc import kernels as K
n, cin, h, w, k, groups = (int(v) for v in sys.argv[1:])
page = mmap.PAGESIZE
size = n * cin * h * w
pages = -(-size * 4 // page)
buf = mmap.mmap(-1, (pages + 1) * page)
base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
assert libc.mprotect(base + pages * page, page, 0) == 0  # PROT_NONE
x = np.frombuffer(buf, np.float32, size, pages * page - size * 4).reshape(n, cin, h, w)
rng = np.random.default_rng(0)
x[...] = rng.standard_normal(x.shape, dtype=np.float32)
wt = rng.standard_normal((k, cin // groups, 1, 1), dtype=np.float32)
b = np.zeros(k, np.float32)
out = np.empty((n, k, h, w), np.float32)
K.conv2d_packed(x, 0, cin, out, 0, k, K.pack_conv_weights(wt, groups), b, 1, 1, 0, 0, 1, 1, 1,
                1, groups, K.ACT_NONE, 0.0, 0.0, out, -1, 0)
ref = torch.nn.functional.conv2d(torch.from_numpy(x.copy()), torch.from_numpy(wt),
                                 groups=groups).numpy()
assert np.allclose(out, ref, atol=1e-4), abs(out - ref).max()
print("ok")
"""


@pytest.mark.parametrize("shape", [(1, 512, 13, 13, 64, 1), (2, 16, 2, 2, 32, 8),
                                   (3, 12, 3, 3, 24, 4), (1, 64, 7, 7, 48, 1)], ids=str)
def test_packed_as_is_reads_nothing_past_its_input(shape):
    """A 1x1 conv read as it is, its input ending at an inaccessible page: a last, partial
    tile is shifted to end at its plane's end (13x13 and 7x7: whole vectors, or the full
    tile), and on planes shorter than a tile the panels hold every tap it would read past
    the end (SIGSEGV otherwise)."""
    proc = subprocess.run([sys.executable, "-c", GUARDED_CONV, *map(str, shape)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@pytest.mark.parametrize("act", [K.ACT_NONE, K.ACT_RELU, K.ACT_TANH])
@pytest.mark.parametrize("case", [PACKED_CASES[i] for i in (2, 9, 11, 36, -1)], ids=str)
def test_packed_residual(case, act):
    """``act(conv + bias + res)``: the residual is read from channels ``rc0..`` of its own
    buffer, at the output's cells, junk columns and batch blocks included."""
    n, cin, _, _, k, (kh, kw), (sh, sw), _, (dh, dw), groups = case
    x, wt, b, (pt, _, pl, _), _, out = make_problem(case, K.ACT_NONE, 1, 2)
    conv = make_problem(case, K.ACT_NONE, 1, 2)[4]  # the reference before the activation
    rng = rng_for("residual", case, act)
    res = random(rng, n, k + 5, *conv.shape[2:])
    ref = torch_act(torch.from_numpy(conv + res[:, 3 : 3 + k].astype(np.float64)), act).numpy()
    K.conv2d_packed(x, 1, cin, out, 2, k, K.pack_conv_weights(wt, groups), b, kh, kw, pt, pl,
                    sh, sw, dh, dw, groups, act, ALPHA, 0.0, res, 3, 0)  # fmt: skip
    check(out, 2, ref)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("act_from", [0, 3, 8, 13, 40])
@pytest.mark.parametrize("act", [K.ACT_RELU, K.ACT_TANH])
@pytest.mark.parametrize("case", [
    PACKED_CASES[2],
    (1, 5, 7, 7, 130, (1, 1), (1, 1), "valid", (1, 1), 1),  # straight from the micro-kernel
    (1, 3, 9, 60, 16, (3, 3), (1, 1), "same", (1, 1), 1),  # straight inside rows
    (2, 8, 9, 8, 18, (3, 3), (2, 2), "same", (1, 1), 2),
], ids=str)
def test_packed_act_from(case, act, act_from, residual):
    """The activation on output channels ``act_from`` up only (the wide conv of sibling
    1x1 convs with different epilogues): channel counts around and inside a tile of
    channels, with and without a residual, stored through the scratch and straight."""
    n, cin, _, _, k, (kh, kw), (sh, sw), _, (dh, dw), groups = case
    x, wt, b, (pt, _, pl, _), conv, out = make_problem(case, K.ACT_NONE, 1, 2)
    res, rc0 = out, -1
    if residual:
        res = random(rng_for("act_from", case), n, k + 5, *conv.shape[2:])
        conv = conv + res[:, 3 : 3 + k].astype(np.float64)
        rc0 = 3
    ref = conv.copy()
    ref[:, act_from:] = torch_act(torch.from_numpy(conv[:, act_from:]), act).numpy()
    K.conv2d_packed(x, 1, cin, out, 2, k, K.pack_conv_weights(wt, groups), b, kh, kw, pt, pl,
                    sh, sw, dh, dw, groups, act, ALPHA, 0.0, res, rc0, act_from)  # fmt: skip
    check(out, 2, ref)


def test_packed_weight_layout():
    """``[group][k_block][tap][KT]``, K padded with zeros to a multiple of KT per group."""
    w = np.arange(2 * 3 * 2 * 1 * 2, dtype=np.float32).reshape(6, 2, 1, 2) + 1  # groups=2
    packed = K.pack_conv_weights(w, 2).reshape(2, 1, 4, fastconv.KT)
    for g in range(2):
        for k in range(fastconv.KT):
            col = packed[g, 0, :, k]
            expect = w[g * 3 + k].reshape(4) if k < 3 else np.zeros(4)
            np.testing.assert_array_equal(col, expect)


# ---------------------------------------------------------------- selection


@pytest.mark.parametrize(
    "out_channels, groups, in_channels, expected",
    [(64, 1, 3, "packed"), (128, 1, 64, "packed"), (64, 2, 64, "packed"),
     (64, 8, 64, "packed"), (4, 1, 1, "packed"), (3, 1, 8, "generic"),
     (48, 16, 32, "generic"),
     # one input channel per group: the depthwise kernel, whatever the multiplier
     (32, 32, 32, "depthwise"), (64, 32, 32, "depthwise"), (128, 16, 16, "depthwise"),
     (16, 1, 1, "packed")],  # an ungrouped conv of a one-channel input is no depthwise one
)
def test_conv_kernel_choice(out_channels, groups, in_channels, expected):
    assert conv_kernel(out_channels, groups, in_channels) == expected


# ---------------------------------------------------------------- compilation


@pytest.mark.parametrize("name", ["conv2d_packed"])
def test_one_signature_per_kernel(name):
    """Every call above used the same argument types, so nothing compiled twice."""
    assert len(getattr(K, name).signatures) <= 1


# ---------------------------------------------------------------- flat layout


@pytest.mark.parametrize(
    "W, OW, pl, sw, KW, dw, expected",
    [
        (56, 56, 1, 1, 3, 1, 57),  # 3x3 same: one zero column between neighbours
        (7, 7, 1, 1, 3, 1, 8),
        (9, 7, 0, 1, 3, 1, 9),  # valid: the image's own columns
        (224, 112, 3, 2, 7, 1, 114),  # 7x7/2 stem: phase 0 holds 114 columns
        (56, 28, 0, 2, 1, 1, 28),  # 1x1/2: one phase, no padding
        (5, 7, 1, 1, 1, 1, 7),  # 1x1 padded: the output is the wider
        (11, 11, 2, 1, 3, 2, 13),  # dilated 3x3 same
    ],
)
def test_image_width(W, OW, pl, sw, KW, dw, expected):
    assert fastconv._image_width.py_func(W, OW, pl, sw, KW, dw) == expected


def test_images_per_block():
    """The smallest divisor of the batch whose images make rows of XQ_ROW_FLOATS, else the
    largest whose images fit XQ_BLOCK_BYTES together."""
    block, row = fastconv.XQ_BLOCK_BYTES, fastconv.XQ_ROW_FLOATS
    per_block = fastconv._images_per_block.py_func
    assert per_block(8, block // 8, 1) == 8  # narrow images: as many as fit
    assert per_block(8, block // 5, 1) == 4
    assert per_block(4, 16 * 23 * 21 * 4, 21) == 2  # a case above
    assert per_block(3, 32 * 23 * 21 * 4, 21) == 1  # and this one
    assert per_block(8, 64, row // 2) == 2  # rows long enough with two images
    assert per_block(8, 64, row // 3) == 4  # three would do; four divide the batch
    assert per_block(8, 64, row) == 1
    assert per_block(7, block // 2, 1) == 1
    assert per_block(1, 4 * block, 1) == 1
