"""Winograd convolution (cnnc/kernels/winograd.py, the `winograd` pass) against PyTorch.

The kernel is checked directly on small random shapes (odd sizes, valid/same/explicit
padding, batches 1 and 3, rows wide enough for whole vectors of tiles, channel counts that
are not multiples of the micro-kernel's tile, channel offsets, the residual and activation
epilogue) for both tiles, F(2x2, 3x3) and F(4x4, 3x3); then a ResNet basic block compiled
whole, whose convs the pass picks, against a float64 PyTorch twin; then the choice rule and
the switches that turn it off.
"""

import os
import subprocess
import sys
import zlib

import numba
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import graph_of, on_threads, resolve_pads

import cnnc
from cnnc import backend
from cnnc import kernels as K
from cnnc.backend import TARGETS, winograd_tile
from cnnc.cli import main
from cnnc.compiler import verify_passes
from cnnc.passes import GraphCheckError, optimize, verify_graph

SENTINEL = 7.0
TOL = 1e-4  # max |got - ref| / max |ref|
ALPHA = 0.1


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def torch_act(t: torch.Tensor, act: int) -> torch.Tensor:
    return F.relu(t) if act == K.ACT_RELU else t


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    # a relu'd reference may be all zeros (one output cell, four channels)
    return float(np.abs(got - ref).max() / max(1e-6, float(np.abs(ref).max())))


# (N, cin, H, W, K, padding): 3x3, stride 1
CASES = [
    (1, 3, 9, 7, 5, (1, 1)),  # odd sizes, partial tiles on both edges
    # batch 3, K not a multiple of the tile's channels; with F(2x2) rows of 2 tiles, two
    # rows a vector, the last of an image beside the next image's first
    (3, 17, 11, 6, 9, "valid"),
    (1, 8, 3, 3, 4, "valid"),  # one output cell
    (3, 8, 10, 13, 33, (2, 1, 0, 2)),  # explicit asymmetric padding
    (1, 5, 8, 8, 6, "same"),  # F(2x2): 4 x 4 tiles, two rows a vector, one vector of slots
    (3, 5, 30, 29, 9, "same"),  # many tiles: several blocks, the last one partial
    (1, 64, 12, 12, 70, (1, 1)),  # few tiles, many k blocks: a block split over k
    (2, 4, 9, 70, 5, (1, 1)),  # wide rows: whole and partial runs of a vector's tiles
    (2, 1030, 5, 5, 9, (1, 1)),  # many input channels: the GEMMs prefetch weights ahead
    # F(4x4): two blocks of slots, each in k shares; on two threads each thread splits and
    # transforms a block once for its shares (the scratch holds it for the next share)
    (1, 40, 28, 28, 20, (1, 1)),
]


@pytest.mark.parametrize("name", ["BT4", "AT4", "BT2", "AT2"])
def test_transform_programs_are_their_matrices(name):
    """The kernel's transform programs (shared sums between rows) compute exactly their
    Lavin & Gray matrix, and the matrices are the ones F(m x m, 3x3) needs: Y = A^T
    [(G g G^T) * (B^T d B)] A is the valid correlation of d with g."""
    from cnnc.kernels import winograd as W

    matrix = getattr(W, name)
    steps = getattr(W, f"{name}_STEPS", None) or W.matrix_steps(matrix)
    a = rng_for(name).standard_normal((matrix.shape[1], 7))
    got = np.array(W.run_steps(steps, list(a)))
    assert got.shape == (matrix.shape[0], 7)
    np.testing.assert_allclose(got, matrix @ a, rtol=0, atol=1e-12)
    m = 4 if name.endswith("4") else 2
    bt, g, at = (getattr(W, f"{k}{m}") for k in ("BT", "G", "AT"))
    d = rng_for(name, "d").standard_normal((m + 2, m + 2))
    w = rng_for(name, "w").standard_normal((3, 3))
    y = at @ ((g @ w @ g.T) * (bt @ d @ bt.T)) @ at.T
    ref = np.array([[np.sum(d[i : i + 3, j : j + 3] * w) for j in range(m)] for i in range(m)])
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("act,residual", [(K.ACT_RELU, True), (K.ACT_RELU, False),
                                          (K.ACT_NONE, True), (K.ACT_NONE, False)])
def test_kernel_matches_torch(case, m, act, residual):
    n, cin, h, w, k, padding = case
    rng = rng_for(case, m, act, residual)
    xc0, oc0, rc0 = 1, 2, 3  # operands inside bigger buffers
    x = rng.standard_normal((n, xc0 + cin + 2, h, w)).astype(np.float32)
    wt = (rng.standard_normal((k, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    pt, pb, pl, pr = resolve_pads(padding, h, w, 3, 3, 1, 1)
    xt = F.pad(torch.from_numpy(x[:, xc0 : xc0 + cin]).double(), (pl, pr, pt, pb))
    ref = F.conv2d(xt, torch.from_numpy(wt).double(), torch.from_numpy(b).double())
    oh, ow = ref.shape[2:]
    out = np.full((n, oc0 + k + 3, oh, ow), SENTINEL, np.float32)
    res = rng.standard_normal((n, rc0 + k + 1, oh, ow)).astype(np.float32)
    if residual:
        ref = ref + torch.from_numpy(res[:, rc0 : rc0 + k]).double()
    ref = torch_act(ref, act).numpy()
    K.conv2d_winograd(x, xc0, cin, out, oc0, k, K.pack_winograd_weights(wt, m), b, m, pt, pl,
                      act, ALPHA, res if residual else out, rc0 if residual else -1)
    assert relative_error(out[:, oc0 : oc0 + k], ref) <= TOL
    assert (out[:, :oc0] == SENTINEL).all() and (out[:, oc0 + k :] == SENTINEL).all()


def block_source(c: int, h: int, w: int) -> str:
    return f"""network resblock(input: {c}x{h}x{w}) {{
    add {{
        conv({c}, 3x3, padding=1, bias=false) -> batchnorm -> relu
        -> conv({c}, 3x3, padding=same) -> batchnorm
      | identity
    }}
    relu
}}
"""


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("n, cin, h, w, k", [
    (1, 64, 12, 12, 70),  # few blocks, many k blocks (F(4x4): one, split once for all)
    (1, 40, 28, 28, 20),  # F(4x4): two blocks in k shares, each thread its own split
    # one block in k shares: F(2x2) each thread transforms it, F(4x4) once for all
    (1, 48, 7, 7, 70),
])
def test_outputs_do_not_depend_on_the_threads(m, n, cin, h, w, k):
    """The work items depend on the thread count (ITEMS_PER_THREAD): a few blocks of slots
    are split over k blocks into more items on more threads, and a plane of fewer F(4x4)
    blocks than threads is split and transformed once for all. Each output channel is still
    computed the same way, so the outputs are the same bits at every thread count."""
    rng = rng_for("threads", m)
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    wt = (rng.standard_normal((k, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    upk = K.pack_winograd_weights(wt, m)
    outs = []
    for threads in range(1, numba.config.NUMBA_NUM_THREADS + 1):
        with on_threads(threads):
            out = np.empty((n, k, h, w), np.float32)
            K.conv2d_winograd(x, 0, cin, out, 0, k, upk, b, m, 1, 1, K.ACT_RELU, ALPHA, out, -1)
            outs.append(out)
    assert all(np.array_equal(out, outs[0]) for out in outs)


def split_layout(n, oh, ow, m):
    """The per-thread split's layout for ``n`` images and an ``oh x ow`` output, as
    conv2d_winograd lays it out: (tw, tv, twp, per_image, nslots, hr, u, plane), ``plane``
    the floats of one (image, channel, column phase)."""
    from cnnc.kernels import winograd as wg

    th, tw = -(-oh // m), -(-ow // m)
    tv = wg.SV // 2 if tw <= wg.SV // 2 else wg.SV
    twp = -(-tw // tv) * tv
    per_image, hr, u = th * twp, m * th + 2, twp + 1
    return tw, tv, twp, per_image, n * per_image, hr, u, hr * u + wg.SV


def split_rows(xq, n, cin, m, plane, hr, u):
    """A split buffer seen as (image, channel, column phase, row, column)."""
    return xq[: n * cin * m * plane].reshape(n, cin, m, plane)[..., : hr * u].reshape(
        n, cin, m, hr, u)


def block_order(nslots, order, rng):
    """The first slots of the blocks of ``nslots`` slots: in order, backward, shuffled, or
    ("some") a shuffled half of them."""
    from cnnc.kernels import winograd as wg

    blocks = list(range(0, nslots, wg.TW))
    if order == "backward":
        return blocks[::-1]
    if order in ("shuffled", "some"):
        blocks = [blocks[i] for i in rng.permutation(len(blocks))]
    return blocks[: max(1, len(blocks) // 2)] if order == "some" else blocks


@pytest.mark.parametrize("n, cin, h, w, pads, m", [
    (3, 5, 9, 6, (1, 1, 1, 1), 2),  # two tile rows a vector (tv < SV), blocks across images
    (2, 17, 23, 31, (0, 2, 1, 0), 4),  # asymmetric padding
    (1, 3, 40, 7, (2, 0, 0, 2), 4),  # narrow, tall: many blocks
    (2, 9, 14, 14, (1, 1, 1, 1), 2),
])
@pytest.mark.parametrize("order", ["forward", "backward", "shuffled", "some"])
def test_blocks_transform_from_a_threads_own_split(n, cin, h, w, pads, m, order):
    """A thread's buffer starts as NaN (never split: any read of a row it did not split
    shows); for each block it takes, in any order, it splits the block's rows and
    transforms the block, and the tiles' lanes equal those transformed from a whole split.
    Nothing is written past the buffer, and every row it holds is the whole split's."""
    from cnnc.kernels import winograd as wg

    pt, pb, pl, pr = pads
    oh, ow = h + pt + pb - 2, w + pl + pr - 2
    tw, tv, twp, per_image, nslots, hr, u, plane = split_layout(n, oh, ow, m)
    size = n * cin * m * plane
    rng = rng_for("own split", n, cin, h, w, pads, m, order)
    x = rng.standard_normal((n, cin + 2, h, w)).astype(np.float32)
    xf = x.reshape(-1)
    whole = np.full(size, np.nan, np.float32)
    wg._split_columns_task(0, n * cin, 0, hr, xf, cin + 2, h, w, 1, cin, whole, m, hr, u, pt, pl)
    own = np.full(size + 64, np.nan, np.float32)  # 64 guard floats past its end
    rows = np.zeros((n, 2), np.int64)
    keep = np.empty(cin * m * wg.SV, np.float32)
    blocks = block_order(nslots, order, rng)
    tiles = np.empty((3, wg.TW), np.int64)
    shape = ((m + 2) ** 2, cin | 1, wg.TW)
    for s0 in blocks:
        wg._split_for_block(s0, min(nslots, s0 + wg.TW), rows, keep, xf, cin + 2, h, w, 1, cin,
                            own[:size], m, hr, u, pt, pl, per_image, twp)
        wg._slot_tiles(s0, tiles, m, per_image, twp, tw, nslots)
        got = np.zeros(wg._v_floats(m, cin), np.float32)
        want = np.zeros_like(got)
        wg._transform_input(0, cin, s0, got, 0, tiles, own[:size], cin, hr, u, m, nslots, tv)
        wg._transform_input(0, cin, s0, want, 0, tiles, whole, cin, hr, u, m, nslots, tv)
        live = tiles[1] >= 0
        np.testing.assert_array_equal(got.reshape(shape)[:, :cin, live],
                                      want.reshape(shape)[:, :cin, live])
    assert np.isnan(own[size:]).all()
    held = split_rows(own, n, cin, m, plane, hr, u)
    ref = split_rows(whole, n, cin, m, plane, hr, u)
    for i, (lo, hi) in enumerate(rows):
        np.testing.assert_array_equal(held[i, :, :, lo:hi], ref[i, :, :, lo:hi])


MANY_THREADS = """
import numba, numpy as np
from cnnc import kernels as K
rng = np.random.default_rng(5)
for m, (n, cin, h, w, k) in ((2, (2, 12, 31, 29, 20)), (4, (1, 9, 45, 37, 33))):
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    upk = K.pack_winograd_weights(rng.standard_normal((k, cin, 3, 3)).astype(np.float32), m)
    b = rng.standard_normal(k).astype(np.float32)
    outs = []
    for threads in range(1, 5):
        numba.set_num_threads(threads)
        out = np.empty((n, k, h, w), np.float32)
        K.conv2d_winograd(x, 0, cin, out, 0, k, upk, b, m, 1, 1, K.ACT_NONE, 0.0, out, -1)
        outs.append(out)
    assert all(np.array_equal(o, outs[0]) for o in outs), [abs(o - outs[0]).max() for o in outs]
print("ok")
"""


def test_planes_of_many_blocks_on_more_threads_than_two():
    """Planes of many blocks: one or two threads each split the rows of their own blocks,
    more share one split (conv2d_winograd's ``shared``); run in a process of four threads
    (NUMBA_NUM_THREADS), every count from one to four gives the same bits."""
    env = dict(os.environ, NUMBA_NUM_THREADS="4")
    proc = subprocess.run([sys.executable, "-c", MANY_THREADS], capture_output=True,
                          text=True, env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


BLOCK = block_source(32, 28, 28)
WIDE_BLOCK = block_source(128, 7, 7)  # wide: F(2x2) on 4 x 4 tiles


def torch_block(x: torch.Tensor, p: dict) -> torch.Tensor:
    def bn(t, name):
        return F.batch_norm(t, p[f"{name}.running_mean"], p[f"{name}.running_var"],
                            p[f"{name}.weight"], p[f"{name}.bias"], False, 0.0, 1e-5)
    y = F.relu(bn(F.conv2d(x, p["conv1.weight"], padding=1), "batchnorm1"))
    y = bn(F.conv2d(y, p["conv2.weight"], p["conv2.bias"], padding=1), "batchnorm2")
    return F.relu(y + x)


@pytest.fixture(scope="module")
def block_nets():
    return (cnnc.compile_source(BLOCK, seed=1, progress=False),
            cnnc.compile_source(BLOCK, seed=1, progress=False, winograd=False))


def conv_tiles(net) -> dict:
    return {node: d["attrs"].get("winograd") for node, d in net.graph.nodes(data=True)
            if d["op"] == "conv"}


def check_block(net, direct, batch: int) -> None:
    """Both nets of a block against its float64 PyTorch twin on one random batch."""
    c, h, w = net.input_shape
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    params = {k: torch.from_numpy(v).double() for k, v in net.parameters().items()}
    # non-trivial batchnorm statistics, so the folded weights are not the raw ones
    for name in ("batchnorm1", "batchnorm2"):
        params[f"{name}.running_mean"] = torch.from_numpy(rng.standard_normal(c)) * 0.1
        params[f"{name}.running_var"] = torch.from_numpy(rng.uniform(0.5, 2.0, c))
    weights = {k: v.numpy().astype(np.float32) for k, v in params.items()}
    net.load_weights(weights)
    direct.load_weights(weights)
    ref = torch_block(torch.from_numpy(x).double(), params).numpy()
    assert relative_error(net(x), ref) <= TOL
    assert relative_error(direct(x), ref) <= TOL


@pytest.mark.parametrize("batch", [1, 3])
def test_network_block_matches_torch(block_nets, batch):
    net, direct = block_nets
    # both convs run Winograd F(4x4, 3x3), the second with the block's residual and relu
    assert conv_tiles(net) == {"conv1": 4, "conv2": 4}
    assert net.graph.nodes["conv2"]["attrs"]["residual"]
    assert net.graph.nodes["conv2"]["attrs"]["activation"] == "relu"
    assert conv_tiles(direct) == {"conv1": None, "conv2": None}
    check_block(net, direct, batch)


@pytest.fixture(scope="module")
def wide_nets():
    return (cnnc.compile_source(WIDE_BLOCK, seed=1, progress=False),
            cnnc.compile_source(WIDE_BLOCK, seed=1, progress=False, winograd=False))


@pytest.mark.parametrize("batch", [1, 3])
def test_wide_block_matches_torch(wide_nets, batch):
    net, direct = wide_nets
    # F(2x2) on a 7x7 plane: rows of 4 tiles, two to a vector, at every batch size
    assert conv_tiles(net) == {"conv1": 2, "conv2": 2}
    check_block(net, direct, batch)


def test_verify_shows_the_winograd_layers(block_nets):
    net, _ = block_nets
    check = verify_passes(net._source_graph, net.parameters())
    assert check.first_failure is None
    assert "winograd" in [name for name, _ in check.rows]
    assert [node for node, _, _ in check.winograd_layers] == ["conv1", "conv2"]
    assert all(m == 4 and 0 < err <= TOL for _, m, err in check.winograd_layers)


def conv_attrs(kernel=(3, 3), stride=(1, 1), dilation=(1, 1), groups=1) -> dict:
    return {"kernel": kernel, "stride": stride, "dilation": dilation, "groups": groups}


@pytest.fixture
def on_target(monkeypatch):
    """Make the choice rules see target ``name`` (they are pure: nothing compiles)."""
    return lambda name: monkeypatch.setattr(backend, "current_target", lambda: TARGETS[name])


def test_choice_rule(on_target):
    on_target("avx2")
    assert winograd_tile(conv_attrs(), 32, (32, 28, 28)) == 4
    assert winograd_tile(conv_attrs(), 64, (64, 56, 56)) == 4
    assert winograd_tile(conv_attrs(), 16, (16, 25, 25)) == 4  # 7 x 7 tiles of 4x4
    assert winograd_tile(conv_attrs(), 256, (256, 24, 24)) == 2  # 6 x 6 of 4x4: too few
    # but rows of exactly 4 tiles of 4x4 (13-16 wide, 13+ tall) take F(4x4) with 64+
    # channels on a side
    assert winograd_tile(conv_attrs(), 256, (256, 14, 14)) == 4
    assert winograd_tile(conv_attrs(), 48, (192, 13, 13)) == 4
    assert winograd_tile(conv_attrs(), 16, (64, 16, 16)) == 4
    assert winograd_tile(conv_attrs(), 64, (64, 40, 16)) == 4
    assert winograd_tile(conv_attrs(), 128, (128, 12, 16)) == 2  # 3 tile rows
    assert winograd_tile(conv_attrs(), 256, (256, 12, 12)) == 2  # rows of 3 tiles
    assert winograd_tile(conv_attrs(), 256, (256, 14, 17)) == 2  # rows of 5 tiles
    assert winograd_tile(conv_attrs(), 32, (32, 14, 14)) == 2  # 7 x 7 tiles of 2x2
    assert winograd_tile(conv_attrs(), 64, (64, 12, 12)) == 0  # too few tiles
    assert winograd_tile(conv_attrs(), 96, (256, 7, 7)) == 0
    # but wide convs take F(2x2) from 4 x 4 tiles of 2x2
    assert winograd_tile(conv_attrs(), 512, (512, 12, 12)) == 2
    assert winograd_tile(conv_attrs(), 512, (512, 7, 7)) == 2
    assert winograd_tile(conv_attrs(), 128, (128, 7, 7)) == 2
    assert winograd_tile(conv_attrs(), 512, (512, 6, 6)) == 0  # 3 x 3 tiles
    assert winograd_tile(conv_attrs(), 127, (512, 7, 7)) == 0
    assert winograd_tile(conv_attrs(), 15, (32, 28, 28)) == 0  # too few channels


def test_choice_rule_avx512_rows_of_four_need_64_channels_on_both_sides(on_target):
    on_target("avx512")
    assert winograd_tile(conv_attrs(), 256, (256, 14, 14)) == 4
    assert winograd_tile(conv_attrs(), 64, (256, 13, 13)) == 4
    assert winograd_tile(conv_attrs(), 48, (192, 13, 13)) == 2
    assert winograd_tile(conv_attrs(), 16, (64, 16, 16)) == 2
    assert winograd_tile(conv_attrs(), 32, (32, 28, 28)) == 4  # the other rules as avx2's
    assert winograd_tile(conv_attrs(), 512, (512, 7, 7)) == 2
    assert winograd_tile(conv_attrs(), 32, (15, 28, 28)) == 0
    assert winograd_tile(conv_attrs(stride=(2, 2)), 64, (64, 56, 56)) == 0
    assert winograd_tile(conv_attrs(dilation=(2, 2)), 64, (64, 56, 56)) == 0
    assert winograd_tile(conv_attrs(groups=2), 64, (64, 56, 56)) == 0
    assert winograd_tile(conv_attrs(kernel=(5, 5)), 64, (64, 56, 56)) == 0
    assert winograd_tile(conv_attrs(kernel=(1, 3)), 64, (64, 56, 56)) == 0
    # the kernel's store applies no activation but relu: the others stay on the packed one
    assert winograd_tile(dict(conv_attrs(), activation="relu"), 64, (64, 56, 56)) == 4
    assert winograd_tile(dict(conv_attrs(), activation="leaky_relu"), 64, (64, 56, 56)) == 0


def test_levels_and_switches_turn_it_off():
    graph = graph_of(BLOCK)
    assert "winograd" in optimize(graph).nodes["conv1"]["attrs"]
    assert "winograd" not in optimize(graph, level=1).nodes["conv1"]["attrs"]
    assert "winograd" not in optimize(graph, disabled=["winograd"]).nodes["conv1"]["attrs"]


def test_cli_no_winograd(capsys, tmp_path):
    model = tmp_path / "block.cnn"
    model.write_text(BLOCK)
    assert main(["dump", str(model), "--stage", "optimized"]) == 0
    assert "winograd=4" in capsys.readouterr().out
    assert main(["dump", str(model), "--stage", "optimized", "--no-winograd"]) == 0
    assert "winograd" not in capsys.readouterr().out


def test_graph_check_refuses_winograd_where_the_kernel_cannot_run():
    graph = optimize(graph_of(BLOCK))
    verify_graph(graph)
    graph.nodes["conv1"]["attrs"]["winograd"] = 3  # no such kernel
    with pytest.raises(GraphCheckError, match="winograd 3 on a"):
        verify_graph(graph)
    graph.nodes["conv1"]["attrs"].update(winograd=4, activation="sigmoid")
    with pytest.raises(GraphCheckError, match="activation sigmoid"):
        verify_graph(graph)
    strided = optimize(graph_of(BLOCK.replace("padding=1, bias", "stride=2, padding=1, bias")
                                .replace("| identity", "| conv(32, 1x1, stride=2)")))
    verify_graph(strided)
    strided.nodes["conv1"]["attrs"]["winograd"] = 4
    with pytest.raises(GraphCheckError, match="winograd 4 on a"):
        verify_graph(strided)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("order", ["forward", "backward", "shuffled"])
def test_each_threads_split_holds_the_rows_its_blocks_read(m, order):
    """A thread splits only the input rows of the blocks it takes, into its own buffer,
    extending the rows it holds up or down as it goes (two threads take blocks from the two
    ends). Whatever the order of the blocks, the rows they read are those of a whole split
    -- extending downwards must undo the split's spill into the first row held."""
    from cnnc.kernels import winograd as wg

    n, cin, h, w, pad = 2, 5, 30, 29, 1
    _, _, twp, per_image, nslots, hr, u, plane = split_layout(n, h, w, m)
    x = rng_for("split", m, order).standard_normal((n, cin + 1, h, w)).astype(np.float32)
    xf = x.reshape(-1)

    def split(blocks):
        xq = np.full(n * cin * m * plane, SENTINEL, np.float32)
        rows = np.zeros((n, 2), np.int64)
        keep = np.empty(cin * m * wg.SV, np.float32)
        for s0 in blocks:
            wg._split_for_block(s0, min(nslots, s0 + wg.TW), rows, keep, xf, cin + 1, h, w, 1,
                                cin, xq, m, hr, u, pad, pad, per_image, twp)
        return split_rows(xq, n, cin, m, plane, hr, u)

    whole = split(range(0, nslots, wg.TW))
    blocks = block_order(nslots, order, rng_for("order", m))
    assert len(blocks) >= 3
    np.testing.assert_array_equal(split(blocks), whole)
    # and the whole split is the padded input taken apart by column phase
    xpad = np.pad(x[:, 1:], ((0, 0), (0, 0), (pad, hr - h - pad), (pad, m * u - w - pad)))
    for ph in range(m):
        np.testing.assert_array_equal(whole[:, :, ph, :, :], xpad[:, :, :, ph::m][..., :u])
