"""Weights that leave parameters out, unknown names, PyTorch state_dicts, and .npz
headers that claim more than the network needs (LANGUAGE.md §6, §11)."""

import io
import pathlib
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

import cnnc
from cnnc.cli import main
from cnnc.graph import build_graph, load_source
from cnnc.weights import check_weights

NET = ("network small(input: 2x6x5) {\n"
       "  conv1: conv(3, 3x3) -> bn1: batchnorm -> relu -> flatten -> fc: dense(4)\n}\n")
SHAPES = {"conv1.weight": (3, 2, 3, 3), "conv1.bias": (3,), "bn1.weight": (3,),
          "bn1.bias": (3,), "bn1.running_mean": (3,), "bn1.running_var": (3,),
          "fc.weight": (4, 36), "fc.bias": (4,)}
GRAPH = build_graph(load_source(NET, "small.cnn"), None)


def full_weights(seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {k: rng.uniform(0.5, 1.5, s).astype(np.float32) for k, s in SHAPES.items()}
    return weights


def weight_error(weights, **kwargs) -> str:
    with pytest.raises(cnnc.CnncWeightError) as info:
        check_weights(GRAPH, weights, {}, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------- left-out parameters
def test_left_out_parameters_are_all_listed():
    weights = full_weights()
    del weights["conv1.bias"], weights["bn1.running_var"], weights["fc.weight"]
    message = weight_error(weights)
    assert ("the weights leave out 3 of the 8 parameters of network 'small': 'conv1.bias', "
            "'bn1.running_var', 'fc.weight'") in message
    assert "--allow-missing" in message


def test_strict_false_keeps_the_seeded_values_everywhere():
    weights = {"fc.bias": np.arange(4.0)}
    with pytest.raises(cnnc.CnncWeightError, match="leave out 7 of the 8"):
        cnnc.compile_source(NET, weights=weights, progress=False)
    net = cnnc.compile_source(NET, weights=weights, seed=3, strict=False, progress=False)
    seeded = cnnc.compile_source(NET, seed=3, progress=False).parameters()
    params = net.parameters()
    np.testing.assert_array_equal(params["fc.bias"], np.arange(4.0, dtype=np.float32))
    np.testing.assert_array_equal(params["conv1.weight"], seeded["conv1.weight"])
    with pytest.raises(cnnc.CnncWeightError, match="leave out 7 of the 8"):
        net.load_weights({"fc.bias": np.zeros(4)})
    net.load_weights({"fc.bias": np.zeros(4)}, strict=False)
    np.testing.assert_array_equal(net.parameters()["fc.bias"], np.zeros(4, np.float32))
    np.testing.assert_array_equal(net.parameters()["conv1.weight"], seeded["conv1.weight"])


def test_cli_allow_missing(capsys, tmp_path):
    (tmp_path / "m.cnn").write_text(NET)
    np.savez(tmp_path / "w.npz", **{"fc.bias": np.ones(4, np.float32)})
    for command in (["compile", "-o", tmp_path / "m.cnnc"], ["run"], ["verify"]):
        argv = [command[0], tmp_path / "m.cnn", *command[1:], "--weights", tmp_path / "w.npz"]
        code = main([str(a) for a in argv])
        _, err = capsys.readouterr()
        assert code == 1 and "leave out 7 of the 8 parameters" in err, command
        code = main([str(a) for a in argv] + ["--allow-missing"])
        _, err = capsys.readouterr()
        assert code == 0, err
    # a stored artifact holds every parameter; --weights on it is checked the same way
    code = main(["run", str(tmp_path / "m.cnnc"), "--weights", str(tmp_path / "w.npz")])
    assert code == 1 and "leave out 7" in capsys.readouterr()[1]
    code = main(["run", str(tmp_path / "m.cnnc"), "--weights", str(tmp_path / "w.npz"),
                 "--allow-missing"])
    assert code == 0


# ---------------------------------------------------------------- unknown names
def test_every_unknown_name_is_listed_with_a_suggestion_where_one_fits():
    weights = full_weights()
    del weights["conv1.weight"]
    weights["conv1.wieght"] = np.zeros(SHAPES["conv1.weight"])
    weights["bn1.wieght"] = np.zeros(3)        # bn1.weight is supplied: no suggestion
    weights["classifier"] = np.zeros(3)         # nothing close
    message = weight_error(weights, strict=False)
    assert message == ("3 weights name no parameter of network 'small': 'conv1.wieght' "
                       "(did you mean 'conv1.weight'?), 'bn1.wieght', 'classifier'")


def test_unknown_and_left_out_names_in_one_message():
    weights = full_weights()
    weights["fc.wieght"] = weights.pop("fc.weight")
    message = weight_error(weights)
    assert message == (
        "weight 'fc.wieght' names no parameter of network 'small' (did you mean "
        "'fc.weight'?); the weights leave out 1 of the 8 parameters of network 'small': "
        "'fc.weight' (strict=False or --allow-missing keeps seeded values for them)")


def test_num_batches_tracked_is_ignored(tmp_path):
    weights = {**full_weights(), "bn1.num_batches_tracked": np.array(7, np.int64)}
    assert set(check_weights(GRAPH, weights, {})) == set(SHAPES)
    np.savez(tmp_path / "w.npz", **weights)
    assert set(check_weights(GRAPH, str(tmp_path / "w.npz"), {})) == set(SHAPES)


class TorchSmall(nn.Module):
    """The twin of NET, with PyTorch's own names."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3)
        self.bn1 = nn.BatchNorm2d(3)
        self.fc = nn.Linear(36, 4)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.bn1(self.conv1(x))), 1))


def test_a_pytorch_state_dict_loads_as_it_is_and_gives_pytorchs_numbers(capsys, tmp_path):
    torch.manual_seed(0)
    model = TorchSmall()
    model.train()
    for _ in range(3):  # running statistics and num_batches_tracked away from their defaults
        model(torch.randn(8, 2, 6, 5) * 2 + 1)
    model.eval()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    assert "bn1.num_batches_tracked" in state
    np.savez(tmp_path / "state.npz", **state)
    (tmp_path / "m.cnn").write_text(NET)
    x = np.random.default_rng(1).standard_normal((5, 2, 6, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = main(["run", str(tmp_path / "m.cnn"), "--weights", str(tmp_path / "state.npz"),
                 "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")])
    assert code == 0, capsys.readouterr()[1]
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- .npz headers
def npz_with(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def npy_claiming(shape: tuple, dtype="<f4", data: bytes = b"\0" * 16) -> bytes:
    """A valid .npy header for `shape` followed by only a few bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def error_and_peak_memory(path, members: dict) -> tuple[str, int]:
    """The weights error of an .npz of `members` at `path`, and the peak memory reading it
    took (tracemalloc)."""
    path.write_bytes(npz_with(members))
    tracemalloc.start()
    try:
        message = weight_error(str(path))
        return message, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_header_claiming_a_terabyte_is_refused_before_any_data_is_read(tmp_path):
    weights = {f"{k}.npy": npy_bytes(v) for k, v in full_weights().items()}
    weights["fc.weight.npy"] = npy_claiming((1000000, 1000000))
    path = tmp_path / "huge.npz"
    message, peak = error_and_peak_memory(path, weights)
    assert message == (f"{path}: weight 'fc.weight' has shape (1000000, 1000000), but the "
                       f"network needs (4, 36)")
    assert peak < 1 << 20


def test_the_data_of_an_unknown_key_is_never_read(tmp_path):
    weights = {f"{k}.npy": npy_bytes(v) for k, v in full_weights().items()}
    weights["extra.npy"] = npy_claiming((1000000, 1000000))
    path = tmp_path / "extra.npz"
    message, peak = error_and_peak_memory(path, weights)
    assert message == f"{path}: weight 'extra' names no parameter of network 'small'"
    assert peak < 1 << 20


@pytest.mark.parametrize("member, fragment", [
    (npy_claiming((4, 36)), "cannot read weight 'fc.weight'"),           # truncated data
    (b"not an npy file at all", "weight 'fc.weight' is not a readable .npy array"),
    (npy_claiming((4, 36), "|O"), "weight 'fc.weight' holds pickled objects"),
    (npy_claiming((4, 36), "<c8"), "weight 'fc.weight' must be an array of real numbers"),
])
def test_bad_members_name_their_key(tmp_path, member, fragment):
    weights = {f"{k}.npy": npy_bytes(v) for k, v in full_weights().items()}
    weights["fc.weight.npy"] = member
    path = tmp_path / "bad.npz"
    path.write_bytes(npz_with(weights))
    assert fragment in weight_error(str(path))


def test_fortran_order_and_other_dtypes_read_like_numpy(tmp_path):
    weights = full_weights()
    weights["fc.weight"] = np.asfortranarray(weights["fc.weight"].astype(">f8"))
    weights["conv1.bias"] = np.array([1, 2, 3], np.int16)
    np.savez(tmp_path / "w.npz", **weights)
    got = check_weights(GRAPH, pathlib.Path(tmp_path / "w.npz"), {})
    np.testing.assert_array_equal(got["fc.weight"], weights["fc.weight"].astype(np.float32))
    np.testing.assert_array_equal(got["conv1.bias"], np.array([1, 2, 3], np.float32))
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in got.values())
