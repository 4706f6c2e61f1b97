"""ONNX in and out (LANGUAGE.md §12), with ONNX Runtime as the oracle.

Import: torch.nn models exported by torch.onnx (opset 17) and a hand-built opset-9
graph in Caffe2's style are imported, compiled with their weights and compared with
ONNX Runtime on the original file. Export: every example is exported and run in ONNX
Runtime. Round trips: import -> export -> import gives the same text and weights.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
nn = torch.nn

from helpers import rel_err  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnc  # noqa: E402
from cnnc.onnx import import_onnx  # noqa: E402
from cnnc.onnx.export import (  # noqa: E402
    export_network,
)

EXAMPLES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "examples", "*.cnn")))
TOL = 1e-4


def ort_run(path: str, x: np.ndarray) -> np.ndarray:
    """ONNX Runtime's output; a model with a fixed batch of 1 is run image by image."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # Caffe2-style initializers-as-inputs draw warnings
    sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    if inp.shape[0] == 1:
        return np.concatenate([sess.run(None, {inp.name: x[i:i + 1]})[0] for i in range(len(x))])
    return sess.run(None, {inp.name: x})[0]


def torch_export(model: nn.Module, shape, path: str) -> str:
    model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(1, *shape), path, opset_version=17,
                          dynamo=False, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
    return path


def randomise_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial weights and batchnorm statistics, so every parameter matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def check_import(path: str, batches=(1, 3)) -> str:
    """Import `path`, compile it with its weights, compare with ONNX Runtime; the text."""
    text, weights = import_onnx(path)
    net = cnnc.compile_source(text, weights=weights)
    rng = np.random.default_rng(0)
    for n in batches:
        x = rng.standard_normal((n, *net.input_shape)).astype(np.float32)
        ref = ort_run(path, x)
        got = net(x)
        assert got.shape == ref.shape, text
        assert rel_err(got, ref) <= TOL, (rel_err(got, ref), text)
    return text


# ================================================================ torch models
class BasicBlock(nn.Module):
    def __init__(self, cin, c, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.down = None
        if stride != 1 or cin != c:
            self.down = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    """ResNet-18's layout (2-2-2-2 basic blocks) with few channels."""

    def __init__(self, w=8, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], w
        for i, c in enumerate((w, 2 * w, 4 * w, 8 * w)):
            blocks += [BasicBlock(cin, c, 1 if i == 0 else 2), BasicBlock(c, c, 1)]
            cin = c
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class Inception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
        super().__init__()
        r = nn.ReLU
        self.b1 = nn.Sequential(nn.Conv2d(cin, c1, 1), r())
        self.b2 = nn.Sequential(nn.Conv2d(cin, c3r, 1), r(), nn.Conv2d(c3r, c3, 3, padding=1), r())
        self.b3 = nn.Sequential(nn.Conv2d(cin, c5r, 1), r(), nn.Conv2d(c5r, c5, 5, padding=2), r())
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, pp, 1), r())

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    """GoogLeNet's stem with its two LocalResponseNorms, then inception modules."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0), nn.Conv2d(16, 16, 1), nn.ReLU(),
            nn.Conv2d(16, 24, 3, padding=1), nn.ReLU(), nn.LocalResponseNorm(5, 2e-4, 0.75, 2.0),
            nn.MaxPool2d(3, 2, ceil_mode=True))
        self.inc = nn.Sequential(Inception(24, 8, 8, 12, 4, 4, 4),
                                 Inception(28, 8, 8, 12, 4, 4, 4),
                                 nn.MaxPool2d(3, 2, ceil_mode=True),
                                 Inception(28, 16, 8, 16, 4, 8, 8))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.4),
                                  nn.Linear(48, 10), nn.Softmax(1))

    def forward(self, x):
        return self.head(self.inc(self.stem(x)))


class Fire(nn.Module):
    def __init__(self, cin, s, e1, e3):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, s, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(s, e1, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(s, e3, 3, padding=1), nn.ReLU())

    def forward(self, x):
        x = self.squeeze(x)
        return torch.cat([self.e1(x), self.e3(x)], 1)


def squeezenet():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(16, 4, 8, 8), Fire(16, 4, 8, 8), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(16, 8, 16, 16), nn.Dropout(0.5), nn.Conv2d(32, 10, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten())


class DenseLayer(nn.Module):
    def __init__(self, cin, growth):
        super().__init__()
        self.f = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(),
                               nn.Conv2d(cin, 4 * growth, 1, bias=False),
                               nn.BatchNorm2d(4 * growth), nn.ReLU(),
                               nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))

    def forward(self, features):  # torchvision's way: concatenate all earlier features
        return self.f(torch.cat(features, 1))


class DenseBlock(nn.Module):
    def __init__(self, cin=8, growth=4, n=3):
        super().__init__()
        self.stem = nn.Conv2d(3, cin, 3, padding=1)
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth) for i in range(n))
        self.tail = nn.Sequential(nn.BatchNorm2d(cin + n * growth), nn.ReLU(),
                                  nn.AvgPool2d(2), nn.Flatten(),
                                  nn.Linear((cin + n * growth) * 64, 10))

    def forward(self, x):
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(features))
        return self.tail(torch.cat(features, 1))


def vgg():
    """VGG-style, with ceil-mode pools on odd sizes and a ZeroPad2d."""
    def convs(cin, c, n):
        out = []
        for i in range(n):
            out += [nn.Conv2d(cin if i == 0 else c, c, 3, padding=1), nn.ReLU()]
        return out
    return nn.Sequential(
        *convs(3, 8, 2), nn.MaxPool2d(2, 2, ceil_mode=True),           # 36 -> 18
        *convs(8, 16, 2), nn.MaxPool2d(2, 2, ceil_mode=True),          # 18 -> 9
        nn.ZeroPad2d((1, 0, 1, 0)), *convs(16, 16, 2),                 # 10
        nn.MaxPool2d(3, 2, ceil_mode=True),                            # 10 -> 5 (ceil)
        *convs(16, 16, 1), nn.MaxPool2d(2, 2, ceil_mode=True),         # 5 -> 3 (ceil)
        nn.Flatten(), nn.Linear(16 * 9, 32), nn.ReLU(), nn.Dropout(), nn.Linear(32, 10))


class InvertedResidualV2(nn.Module):
    """torchvision's MobileNetV2 block: 1x1 expand (unless t = 1), 3x3 depthwise, 1x1
    linear projection, each with batch norm; relu6; a shortcut when shapes allow."""

    def __init__(self, cin: int, c: int, stride: int, t: int):
        super().__init__()
        hidden = cin * t
        layers = [] if t == 1 else [nn.Conv2d(cin, hidden, 1, bias=False),
                                    nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(),
                   nn.Conv2d(hidden, c, 1, bias=False), nn.BatchNorm2d(c)]
        self.conv = nn.Sequential(*layers)
        self.shortcut = stride == 1 and cin == c

    def forward(self, x):
        return x + self.conv(x) if self.shortcut else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's mobilenet_v2 at width 0.25 (channels rounded to multiples of 8)."""

    def __init__(self):
        super().__init__()
        layers = [nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6()]
        cin = 8
        for t, c, n, s in ((1, 8, 1, 1), (6, 8, 2, 2), (6, 8, 3, 2), (6, 16, 4, 2),
                           (6, 24, 3, 1), (6, 40, 3, 2), (6, 80, 1, 1)):
            for i in range(n):
                layers.append(InvertedResidualV2(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 10))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class SqueezeExcitation(nn.Module):
    """torchvision's SE of MobileNetV3: avgpool, 1x1, relu, 1x1, hardsigmoid, scale."""

    def __init__(self, c: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        scale = self.fc2(torch.relu(self.fc1(self.avgpool(x))))
        return x * nn.functional.hardsigmoid(scale)


class MobileNetV3Block(nn.Module):
    """A MobileNetV3 bneck (expand 16 -> 72, 5x5 depthwise stride 2, SE, project to 24,
    hardswish), after a hardswish stem; then a stride-1 bneck with its shortcut, and a
    Clip(-1, 2) that is no relu6."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.Hardswish())
        self.block1 = nn.Sequential(
            nn.Conv2d(16, 72, 1, bias=False), nn.BatchNorm2d(72), nn.Hardswish(),
            nn.Conv2d(72, 72, 5, 2, 2, groups=72, bias=False), nn.BatchNorm2d(72),
            nn.Hardswish(), SqueezeExcitation(72, 24),
            nn.Conv2d(72, 24, 1, bias=False), nn.BatchNorm2d(24))
        self.block2 = nn.Sequential(
            nn.Conv2d(24, 48, 1, bias=False), nn.BatchNorm2d(48), nn.Hardswish(),
            nn.Conv2d(48, 96, 3, 1, 1, groups=48, bias=False), nn.BatchNorm2d(96),
            nn.ReLU(), SqueezeExcitation(96, 24),
            nn.Conv2d(96, 24, 1, bias=False), nn.BatchNorm2d(24))

    def forward(self, x):
        x = self.block1(self.stem(x))
        return torch.clamp(x + self.block2(x), -1.0, 2.0)


TORCH_MODELS = {
    "mobilenet_v2": (MobileNetV2, (3, 48, 40)),
    "mobilenet_v3_block": (MobileNetV3Block, (3, 33, 29)),
    "resnet18": (ResNet18, (3, 32, 32)),
    "googlenet": (GoogLeNet, (3, 64, 64)),
    "squeezenet": (squeezenet, (3, 64, 64)),
    "densenet_block": (DenseBlock, (3, 16, 16)),
    "vgg": (vgg, (3, 36, 36)),
}


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torch_onnx")
    files = {}
    for name, (build, shape) in TORCH_MODELS.items():
        torch.manual_seed(0)
        files[name] = torch_export(randomise_(build()), shape, str(folder / f"{name}.onnx"))
    return files


@pytest.mark.parametrize("name", sorted(TORCH_MODELS))
def test_torch_model_imports_and_matches_onnxruntime(torch_files, name):
    text = check_import(torch_files[name])
    for line in text.splitlines()[2:-1]:  # one layer a line (or a branch's brace)
        assert line.count("(") <= 1, line


def test_imported_text_is_readable(torch_files):
    text, weights = import_onnx(torch_files["googlenet"])
    lines = [line.strip() for line in text.splitlines()]
    assert "lrn" in lines and "lrn(alpha=0.0002, k=2.0)" in lines
    assert "concat {" in text and "  | " in text
    # torch module paths become labels and so weight names
    assert "stem_0.weight" in weights and "inc_0_b1_0.weight" in weights
    text, _ = import_onnx(torch_files["densenet_block"])
    assert text.count("concat {") == 3 and "identity" in text
    text, _ = import_onnx(torch_files["vgg"])
    assert "pad(1, 0, 1, 0)" in text and "maxpool(2x2, padding=same)" in text


def test_depthwise_se_and_clip_import_as_the_v11_layers(torch_files):
    """Conv with group = depth is dwconv, Mul of activations is mul (the SE gate's
    Cx1x1 broadcast included), Clip(0, 6) is relu6 and Clip(-1, 2) clip."""
    text, weights = import_onnx(torch_files["mobilenet_v2"])
    assert text.count("dwconv(") == 17 and "groups=" not in text
    assert "relu6" in text and "clip" not in text
    assert weights["features_3_conv_0.weight"].shape == (8, 1, 3, 3)  # block 1, depthwise
    text, weights = import_onnx(torch_files["mobilenet_v3_block"])
    lines = [line.strip() for line in text.splitlines()]
    assert "block1_3: dwconv(5x5, stride=2, padding=2)" in lines  # batch norm folded in
    assert "block2_3: dwconv(3x3, padding=1, multiplier=2)" in lines
    assert text.count("mul {") == 2 and text.count("hardswish") == 4
    assert lines[-2] == "clip(-1.0, 2.0)"


def test_round_trip_import_export_import(torch_files, tmp_path):
    for name in ("resnet18", "googlenet", "densenet_block", "mobilenet_v2",
                 "mobilenet_v3_block"):
        text, weights = import_onnx(torch_files[name])
        net = cnnc.compile_source(text, weights=weights)
        out = str(tmp_path / f"{name}.onnx")
        export_network(net, out)
        onnx.checker.check_model(onnx.load(out), full_check=True)
        text2, weights2 = import_onnx(out)
        assert text2.splitlines()[1:] == text.splitlines()[1:]
        assert list(weights2) == list(weights)
        for k in weights:
            np.testing.assert_array_equal(weights2[k], weights[k])


# ================================================================ export
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: os.path.basename(p))
def test_example_exports_and_runs_in_onnxruntime(path, tmp_path):
    net = cnnc.compile_file(path)
    out = str(tmp_path / "m.onnx")
    export_network(net, out)
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "N"
    # node names and initializer names are cnnc's (§6)
    assert {i.name for i in model.graph.initializer} >= set(net.parameters())
    names = {n.name for n in model.graph.node}
    assert set(net._source_graph.nodes) - {"input"} <= names
    rng = np.random.default_rng(1)
    for n in (1, 3):
        x = rng.standard_normal((n, *net.input_shape)).astype(np.float32)
        ref = ort_run(out, x)
        assert rel_err(net(x), ref) <= TOL


# ================================================================ Caffe2 style
def _caffe2_model(path: str, opset: int = 9):
    """A hand-built graph as Caffe2's exporter writes them: initializers listed as inputs,
    a weight made by ConstantOfShape, BatchNormalization then per-channel Mul/Add, Sum
    for the residual, a Caffe ceil-mode pool with asymmetric pads, LRN, Dropout,
    Reshape to flatten, Softmax."""
    rng = np.random.default_rng(0)
    f = np.float32

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(f), name)

    inits = [init("conv1_w", 8, 3, 3, 3), init("conv1_b", 8),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(f), "bn_scale"),
             init("bn_bias", 8), init("bn_mean", 8),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(f), "bn_var"),
             init("scale_c", 8, 1, 1), init("shift_c", 8, 1, 1),
             init("res_w", 8, 8, 3, 3), init("fc_w", 10, 8 * 8 * 8), init("fc_b", 10),
             numpy_helper.from_array(np.array([8], np.int64), "zero_shape")]
    nodes = [
        helper.make_node("Conv", ["data", "conv1_w", "conv1_b"], ["conv1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv1", "bn_scale", "bn_bias", "bn_mean",
                                                "bn_var"], ["bn1"], name="bn1", epsilon=1e-3),
        helper.make_node("Mul", ["bn1", "scale_c"], ["bn1_scaled"], name="bn1_scale"),
        helper.make_node("Add", ["bn1_scaled", "shift_c"], ["bn1_shifted"], name="bn1_shift"),
        helper.make_node("Relu", ["bn1_shifted"], ["relu1"], name="relu1"),
        # a weight made in the graph: a zero bias from ConstantOfShape
        helper.make_node("ConstantOfShape", ["zero_shape"], ["res_b"], name="res_b_fill",
                         value=numpy_helper.from_array(np.zeros(1, f))),
        helper.make_node("Conv", ["relu1", "res_w", "res_b"], ["res_conv"], name="res_conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Sum", ["res_conv", "relu1"], ["res_sum"], name="res_sum"),
        helper.make_node("LRN", ["res_sum"], ["norm1"], name="norm1", size=3, alpha=1e-3,
                         beta=0.75, bias=1.5),
        # Caffe's ceil mode: 16 -> 8 with the extra window row and column as bottom/right pads
        helper.make_node("MaxPool", ["norm1"], ["pool1"], name="pool1", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("Dropout", ["pool1"], ["drop1"], name="drop1", ratio=0.3),
        helper.make_node("Constant", [], ["flat_shape"], name="flat_shape_const",
                         value=numpy_helper.from_array(np.array([1, -1], np.int64))),
        helper.make_node("Reshape", ["drop1", "flat_shape"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc"], name="fc", transB=1),
        helper.make_node("Softmax", ["fc"], ["prob"], name="prob"),
    ]
    inputs = [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 16, 16])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "caffe2_net", inputs,
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 10])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 4
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_caffe2_style_opset9_graph(tmp_path):
    path = _caffe2_model(str(tmp_path / "caffe2.onnx"))
    text = check_import(path)
    # node names are labels, except where they are the automatic name anyway (conv1)
    assert text.splitlines()[2:] == [
        "    conv(8, 3x3, padding=1)",
        "    bn1: batchnorm(eps=0.001)",  # the Mul and Add are folded into it
        "    relu",
        "    res_sum: add {",
        "        res_conv: conv(8, 3x3, padding=1)",
        "      | identity",
        "    }",
        "    norm1: lrn(size=3, alpha=0.001, k=1.5)",
        "    pool1: maxpool(3x3, stride=2, padding=same)",  # Caffe's ceil mode
        "    drop1: dropout(0.3)",
        "    flat: flatten",
        "    fc: dense(10)",
        "    prob: softmax",
        "}"]
    text, weights = import_onnx(path)
    assert list(weights) == ["conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias",
                             "bn1.running_mean", "bn1.running_var", "res_conv.weight",
                             "res_conv.bias", "fc.weight", "fc.bias"]


# ================================================================ errors
def _tiny(path, nodes, inits=(), inputs=None, elem=TensorProto.FLOAT, shape=(1, 3, 8, 8),
          opset=13, out_shape=None):
    inputs = inputs or [helper.make_tensor_value_info("x", elem, list(shape))]
    graph = helper.make_graph(nodes, "g", inputs,
                              [helper.make_tensor_value_info(nodes[-1].output[0], elem, None)],
                              initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("case, message", [
    ("unsupported", "node 'my_elu' (Elu): operator Elu has no cnnc counterpart"),
    ("transpose", "node 'shuffle_t' (Transpose): operator Transpose with perm [0, 1, 3, 2] "
                  "(cnnc reads a Transpose only in a channel shuffle"),
    ("double", "input 'x' is double; cnnc imports float32 models only"),
    ("two_inputs", "the model has 2 inputs ('x', 'y'); cnnc imports networks with one image"),
    ("dynamic", "input 'x' has a dynamic size 3x?x?"),
])
def test_clean_errors(tmp_path, case, message):
    path = str(tmp_path / "m.onnx")
    relu = helper.make_node("Relu", ["x"], ["r"], name="r")
    if case == "unsupported":
        _tiny(path, [relu, helper.make_node("Elu", ["r"], ["e"], name="my_elu")])
    elif case == "transpose":
        _tiny(path, [relu, helper.make_node("Transpose", ["r"], ["t"], name="shuffle_t",
                                            perm=[0, 1, 3, 2])])
    elif case == "double":
        _tiny(path, [relu], elem=TensorProto.DOUBLE)
    elif case == "two_inputs":
        ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in "xy"]
        _tiny(path, [helper.make_node("Add", ["x", "y"], ["s"], name="s")], inputs=ins)
    elif case == "dynamic":
        _tiny(path, [relu], shape=(1, 3, "H", "W"))
    with pytest.raises(cnnc.CnncError) as err:
        import_onnx(path)
    assert message in str(err.value)
    # the command line says the same, without a traceback
    proc = subprocess.run([sys.executable, "-m", "cnnc.cli", "check", path],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr


def test_oversized_file_is_refused_before_reading(tmp_path, monkeypatch):
    from cnnc.onnx import model as onnx_model
    path = _tiny(str(tmp_path / "m.onnx"), [helper.make_node("Relu", ["x"], ["r"], name="r")])
    monkeypatch.setattr(onnx_model, "MAX_ONNX_BYTES", 10)
    with pytest.raises(cnnc.CnncError, match="more than the 10 bytes cnnc reads"):
        import_onnx(path)


def test_without_onnx_the_commands_say_how_to_install(tmp_path):
    path = _tiny(str(tmp_path / "m.onnx"), [helper.make_node("Relu", ["x"], ["r"], name="r")])
    code = ("import sys; sys.modules['onnx'] = None; from cnnc.cli import main; "
            f"sys.exit(main(['check', {path!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "pip install 'cnnc[onnx]'" in proc.stderr and "Traceback" not in proc.stderr


def test_import_cnnc_does_not_import_onnx():
    code = "import sys, cnnc, cnnc.cli; print('onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.strip() == "False"


# ================================================================ command line
def test_cli_import_export_check_summary_dump(torch_files, tmp_path):
    def cnnc_cli(*args):
        proc = subprocess.run([sys.executable, "-m", "cnnc.cli", *args], capture_output=True,
                              text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    src = torch_files["squeezenet"]
    cnnc_cli("import", src, "-o", "sq.cnn")
    text, weights = import_onnx(src)
    assert (tmp_path / "sq.cnn").read_text() == text
    with np.load(tmp_path / "sq.npz", allow_pickle=False) as npz:
        assert list(npz.files) == list(weights)
    assert "well formed" in cnnc_cli("check", src)
    assert "sq_0" in cnnc_cli("summary", src) or "conv" in cnnc_cli("summary", src)
    assert '"op": "concat"' in cnnc_cli("dump", src, "--format", "json")
    cnnc_cli("export", "sq.cnn", "--weights", "sq.npz", "-o", "back.onnx", "--opset", "17")
    x = np.random.default_rng(2).standard_normal((3, 3, 64, 64)).astype(np.float32)
    assert rel_err(ort_run(str(tmp_path / "back.onnx"), x), ort_run(src, x)) <= TOL


# ================================================================ §11 layers
# shuffle, slice, ceil mode, four-sided padding
def channel_shuffle(x, groups):
    """torchvision's ShuffleNetV2 shuffle: view, transpose, view back."""
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, -1, h, w)


class ShuffleUnit(nn.Module):
    """torchvision's ShuffleNetV2 InvertedResidual; `split` splits the channels with
    torch.split (an ONNX Split) instead of chunk (two Slices)."""

    def __init__(self, cin, cout, stride, split=False):
        super().__init__()
        self.stride, self.split = stride, split
        c = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                nn.Conv2d(cin, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.branch2 = nn.Sequential(
            nn.Conv2d(cin if stride > 1 else c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False), nn.BatchNorm2d(c),
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())

    def forward(self, x):
        if self.stride == 1:
            halves = x.split(x.shape[1] // 2, dim=1) if self.split else x.chunk(2, dim=1)
            out = torch.cat((halves[0], self.branch2(halves[1])), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


def shufflenet_units():
    """A ShuffleNetV2 stem, a stride-2 and two stride-1 units, then a slice, a ceil-mode
    pool that no floor-rule padding can say, and the head."""
    class Head(nn.Module):
        def forward(self, x):
            return x[:, 4:14]
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        ShuffleUnit(8, 16, 2), ShuffleUnit(16, 16, 1), ShuffleUnit(16, 16, 1, split=True),
        Head(), nn.MaxPool2d(3, 2, 1, ceil_mode=True),                  # 6x6 -> 4x4
        nn.AvgPool2d(2, 2, ceil_mode=True), nn.Flatten(), nn.Linear(10 * 2 * 2, 5))


def test_shufflenet_units_import_and_match_onnxruntime(tmp_path):
    """Reshape -> Transpose -> Reshape becomes shuffle(2); chunk's two Slices and
    split's Split become slices in a concat; ceil-mode pools say ceil_mode=true."""
    torch.manual_seed(0)
    path = torch_export(randomise_(shufflenet_units()), (3, 47, 45),
                        str(tmp_path / "shufflenet.onnx"))
    kinds = [n.op_type for n in onnx.load(path).graph.node]
    assert {"Transpose", "Slice", "Split"} <= set(kinds)
    text = check_import(path)
    lines = [line.strip() for line in text.splitlines()]
    assert lines.count("shuffle(2)") == 3
    assert lines.count("slice(0, 8)") == 2 and lines.count("| slice(8, 8)") == 2
    assert "slice(4, 10)" in lines
    # on 6x6, 3/2 with padding 1 gives 4x4 with ceil mode, 3x3 without, and no floor-rule
    # padding of at most half the kernel gives 4x4; the avgpool's ceil mode changes nothing
    assert "maxpool(3x3, stride=2, padding=1, ceil_mode=true)" in lines
    assert "avgpool(2x2)" in lines


@pytest.mark.parametrize("ceil_mode, count_include_pad", [(True, False), (False, False)])
def test_avgpool_ceil_mode_imports(tmp_path, ceil_mode, count_include_pad):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AvgPool2d(3, 2, 1, ceil_mode=ceil_mode,
                                                           count_include_pad=count_include_pad))
    path = torch_export(randomise_(model), (3, 12, 11), str(tmp_path / "avg.onnx"))
    text = check_import(path)
    assert ("ceil_mode=true" in text) == ceil_mode, text


def _conv_and_pool(path, conv_pads, pool_pads):
    """A Conv and a MaxPool with asymmetric ONNX pads [top, left, bottom, right]."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="c", kernel_shape=[3, 3],
                              strides=[2, 1], pads=conv_pads),
             helper.make_node("MaxPool", ["c"], ["p"], name="p", kernel_shape=[3, 3],
                              strides=[2, 2], pads=pool_pads)]
    return _tiny(path, nodes, inits, shape=(1, 3, 9, 8))


def test_asymmetric_pads_become_four_sided_padding(tmp_path):
    path = _conv_and_pool(str(tmp_path / "m.onnx"), [1, 2, 0, 1], [0, 1, 1, 0])
    text = check_import(path)
    assert text.splitlines()[2:4] == ["    c: conv(4, 3x3, stride=2x1, padding=1x0x2x1)",
                                      "    p: maxpool(3x3, stride=2, padding=0x1x1x0)"], text
    assert "pad(" not in text


def test_export_of_the_new_layers_runs_in_onnxruntime_and_imports_back(tmp_path):
    src = """network m(input: 6x11x9) {
    conv(8, 3x3, stride=2, padding=1x2x0x1)
    relu
    concat {
        slice(0, 4)
      | slice(4, 4)
        conv(4, 1x1)
    }
    shuffle(4)
    maxpool(3x3, stride=2, padding=1, ceil_mode=true)
    avgpool(3x3, stride=1, padding=0x1x1x0)
    slice(2, 5)
}
"""
    net = cnnc.compile_source(src)
    out = str(tmp_path / "m.onnx")
    export_network(net, out)
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    kinds = [n.op_type for n in model.graph.node]
    assert kinds.count("Slice") == 3 and kinds.count("Transpose") == 1
    assert kinds.count("Reshape") == 2 and "Pad" not in kinds
    pool = next(n for n in model.graph.node if n.op_type == "MaxPool")
    assert helper.get_attribute_value(next(a for a in pool.attribute
                                           if a.name == "ceil_mode")) == 1
    rng = np.random.default_rng(4)
    for n in (1, 3):
        x = rng.standard_normal((n, *net.input_shape)).astype(np.float32)
        assert rel_err(net(x), ort_run(out, x)) <= TOL
    text, weights = import_onnx(out)
    assert text.splitlines()[1:] == src.splitlines()
    assert list(weights) == list(net.parameters())


@pytest.mark.parametrize("nodes, message", [
    ([helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="cut")],
     "node 'cut' (Slice): operator Slice on axis 2 with step 1 (cnnc slices channels only"),
    ([helper.make_node("Split", ["x"], ["y", "z"], name="halves", axis=2)],
     "node 'halves' (Split): operator Split on axis 2 (cnnc slices channels only)"),
    ([helper.make_node("Reshape", ["x", "g"], ["y"], name="group"),
      helper.make_node("Relu", ["y"], ["z"], name="act")],
     "node 'act' (Relu): reads channels regrouped to 5-D (input 1); cnnc reads those only as "
     "a channel shuffle"),
    ([helper.make_node("Reshape", ["x", "g"], ["y"], name="group"),
      helper.make_node("Transpose", ["y"], ["z"], name="swap", perm=[0, 1, 2, 4, 3])],
     "node 'swap' (Transpose): operator Transpose with perm [0, 1, 2, 4, 3]"),
])
def test_slices_and_shuffles_cnnc_cannot_say(tmp_path, nodes, message):
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in
             (("s", [1]), ("e", [5]), ("a", [2]), ("g", [1, 3, 1, 8, 8]))]
    path = _tiny(str(tmp_path / "m.onnx"), nodes, inits)
    with pytest.raises(cnnc.CnncError) as err:
        import_onnx(path)
    assert message in str(err.value)
