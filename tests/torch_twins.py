"""Hand-written PyTorch twins of the networks in ``examples/``.

Each twin is an independent oracle for the compiler: it is written from the
papers and from LANGUAGE.md, not generated from the ``.cnn`` files. Next to
every module sits ``cnnc_layers()``, an explicit, ordered list of
``(cnnc_name, module)`` pairs that applies the naming rule of LANGUAGE.md §6 to
the matching ``.cnn`` file by hand; block instances are modules with their own
``cnnc_layers()``, and their names are prefixed with the instance name.

Public helpers:

- ``TWINS``: ``{example file stem: (builder, (C, H, W))}``.
- ``to_cnnc_weights(model)``: ``{cnnc name: ndarray}`` in §6 source order.
- ``load_cnnc_weights(model, weights)``: the reverse, e.g. from
  ``net.parameters()`` of a compiled network (keys and shapes must match).
- ``init_weights_(model, seed)``: He-normal weights, small random biases and
  non-trivial batchnorm statistics, so comparisons exercise every parameter.
- ``count_params_and_macs(model, input_shape)``: trainable parameters and
  multiply-accumulates of conv and dense layers for one sample.

Everything runs in eval mode: dropout is the identity, batchnorm uses its
running statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# Shared pieces


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's `same` padding (LANGUAGE.md §5): (before, after) cells."""
    out = -(-size // stride)  # ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class MaxPoolSame(nn.Module):
    """`maxpool(k, stride=s, padding=same)`: pad with -inf by TensorFlow's rule
    (smaller half top/left, larger half bottom/right), then a valid max pool."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_pads(x.shape[2], self.kernel, self.stride)
        left, right = same_pads(x.shape[3], self.kernel, self.stride)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)


def global_avgpool(x: torch.Tensor) -> torch.Tensor:
    """`avgpool(global)` followed by the implicit flatten of `dense`: (N, C)."""
    return x.mean(dim=(2, 3))


# ---------------------------------------------------------------------------
# lenet5.cnn


class LeNet5(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5, padding=2)
        self.c3 = nn.Conv2d(6, 16, 5)
        self.c5 = nn.Linear(16 * 5 * 5, 120)
        self.f6 = nn.Linear(120, 84)
        self.out = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(torch.tanh(self.c1(x)), 2)  # 6x14x14
        x = F.avg_pool2d(torch.tanh(self.c3(x)), 2)  # 16x5x5
        x = torch.flatten(x, 1)  # (C, H, W) order
        x = torch.tanh(self.c5(x))
        x = torch.tanh(self.f6(x))
        return torch.softmax(self.out(x), dim=1)

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        return [
            ("conv1", self.c1),
            ("conv2", self.c3),
            ("dense1", self.c5),
            ("dense2", self.f6),
            ("dense3", self.out),
        ]


def lenet5() -> nn.Module:
    return LeNet5().eval()


# ---------------------------------------------------------------------------
# cifar_inception.cnn


class ConvBN(nn.Module):
    """block conv_bn(c, k=1): conv(c, k, padding=same, bias=false) -> batchnorm -> relu.
    Stride 1 and odd k, so `same` is k // 2 on every side."""

    def __init__(self, cin: int, c: int, k: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, c, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        return [("conv1", self.conv), ("batchnorm1", self.bn)]


class InceptionBN(nn.Module):
    """block inception of cifar_inception.cnn: four branches of conv_bn."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pp: int):
        super().__init__()
        self.branch1 = ConvBN(cin, c1)
        self.branch3_reduce = ConvBN(cin, c3r)
        self.branch3 = ConvBN(c3r, c3, 3)
        self.branch5_reduce = ConvBN(cin, c5r)
        self.branch5 = ConvBN(c5r, c5, 5)
        self.pool_proj = ConvBN(cin, pp)
        self.out_channels = c1 + c3 + c5 + pp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = self.branch1(x)
        y3 = self.branch3(self.branch3_reduce(x))
        y5 = self.branch5(self.branch5_reduce(x))
        # maxpool(3x3, stride=1, padding=same): one -inf cell on every side.
        yp = self.pool_proj(F.max_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([y1, y3, y5, yp], dim=1)

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        # Unlabelled conv_bn instances, counted through the concat branches.
        return [
            ("conv_bn1", self.branch1),
            ("conv_bn2", self.branch3_reduce),
            ("conv_bn3", self.branch3),
            ("conv_bn4", self.branch5_reduce),
            ("conv_bn5", self.branch5),
            ("conv_bn6", self.pool_proj),
        ]


class CifarInception(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(64)
        self.inc3a = InceptionBN(64, 32, 32, 48, 8, 16, 16)  # 112x32x32
        self.inc3b = InceptionBN(112, 48, 48, 64, 8, 24, 24)  # 160x32x32
        self.pool3 = MaxPoolSame(3, 2)  # 32 -> 16, pads (0, 1)
        self.inc4a = InceptionBN(160, 64, 48, 96, 12, 32, 32)  # 224x16x16
        self.inc4b = InceptionBN(224, 80, 64, 112, 16, 32, 32)  # 256x16x16
        self.pool4 = MaxPoolSame(3, 2)  # 16 -> 8, pads (0, 1)
        self.inc5a = InceptionBN(256, 96, 64, 128, 16, 48, 48)  # 320x8x8
        self.inc5b = InceptionBN(320, 128, 80, 160, 24, 64, 64)  # 416x8x8
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(416, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        x = self.inc3b(self.inc3a(x))
        x = self.pool3(x)
        x = self.inc4b(self.inc4a(x))
        x = self.pool4(x)
        x = self.inc5b(self.inc5a(x))
        x = self.dropout(global_avgpool(x))
        return torch.softmax(self.fc(x), dim=1)

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        return [
            ("stem", self.stem),
            ("batchnorm1", self.stem_bn),
            ("inc3a", self.inc3a),
            ("inc3b", self.inc3b),
            ("inception1", self.inc4a),
            ("inception2", self.inc4b),
            ("inc5a", self.inc5a),
            ("inception3", self.inc5b),
            ("dense1", self.fc),
        ]


def cifar_inception() -> nn.Module:
    return CifarInception().eval()


# ---------------------------------------------------------------------------
# googlenet.cnn


class InceptionV1(nn.Module):
    """The Inception module of Szegedy et al. 2014, Figure 2(b)."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pp: int):
        super().__init__()
        self.branch1 = nn.Conv2d(cin, c1, 1)
        self.branch3_reduce = nn.Conv2d(cin, c3r, 1)
        self.branch3 = nn.Conv2d(c3r, c3, 3, padding=1)
        self.branch5_reduce = nn.Conv2d(cin, c5r, 1)
        self.branch5 = nn.Conv2d(c5r, c5, 5, padding=2)
        self.pool_proj = nn.Conv2d(cin, pp, 1)
        self.out_channels = c1 + c3 + c5 + pp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = F.relu(self.branch1(x))
        y3 = F.relu(self.branch3(F.relu(self.branch3_reduce(x))))
        y5 = F.relu(self.branch5(F.relu(self.branch5_reduce(x))))
        # maxpool(3x3, stride=1, padding=same): one -inf cell on every side.
        yp = F.relu(self.pool_proj(F.max_pool2d(x, 3, stride=1, padding=1)))
        return torch.cat([y1, y3, y5, yp], dim=1)

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        # The conv count runs on through the concat branches in source order.
        return [
            ("conv1", self.branch1),
            ("conv2", self.branch3_reduce),
            ("conv3", self.branch3),
            ("conv4", self.branch5_reduce),
            ("conv5", self.branch5),
            ("conv6", self.pool_proj),
        ]


class GoogLeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 7, stride=2, padding=3)  # 64x112x112
        self.pool1 = MaxPoolSame(3, 2)  # 112 -> 56, pads (0, 1)
        self.conv2_reduce = nn.Conv2d(64, 64, 1)
        self.conv2 = nn.Conv2d(64, 192, 3, padding=1)  # 192x56x56
        self.pool2 = MaxPoolSame(3, 2)  # 56 -> 28, pads (0, 1)
        self.inc3a = InceptionV1(192, 64, 96, 128, 16, 32, 32)  # 256
        self.inc3b = InceptionV1(256, 128, 128, 192, 32, 96, 64)  # 480
        self.pool3 = MaxPoolSame(3, 2)  # 28 -> 14, pads (0, 1)
        self.inc4a = InceptionV1(480, 192, 96, 208, 16, 48, 64)  # 512
        self.inc4b = InceptionV1(512, 160, 112, 224, 24, 64, 64)  # 512
        self.inc4c = InceptionV1(512, 128, 128, 256, 24, 64, 64)  # 512
        self.inc4d = InceptionV1(512, 112, 144, 288, 32, 64, 64)  # 528
        self.inc4e = InceptionV1(528, 256, 160, 320, 32, 128, 128)  # 832
        self.pool4 = MaxPoolSame(3, 2)  # 14 -> 7, pads (0, 1)
        self.inc5a = InceptionV1(832, 256, 160, 320, 32, 128, 128)  # 832
        self.inc5b = InceptionV1(832, 384, 192, 384, 48, 128, 128)  # 1024
        self.dropout = nn.Dropout(0.4)
        self.fc = nn.Linear(1024, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(F.relu(self.stem(x)))
        x = F.relu(self.conv2(F.relu(self.conv2_reduce(x))))
        x = self.pool2(x)
        x = self.inc3b(self.inc3a(x))
        x = self.pool3(x)
        for m in (self.inc4a, self.inc4b, self.inc4c, self.inc4d, self.inc4e):
            x = m(x)
        x = self.pool4(x)
        x = self.inc5b(self.inc5a(x))
        x = self.dropout(global_avgpool(x))
        return torch.softmax(self.fc(x), dim=1)

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        return [
            ("stem", self.stem),
            ("conv1", self.conv2_reduce),
            ("conv2", self.conv2),
            ("inc3a", self.inc3a),
            ("inc3b", self.inc3b),
            ("inception1", self.inc4a),
            ("inception2", self.inc4b),
            ("inception3", self.inc4c),
            ("inception4", self.inc4d),
            ("inception5", self.inc4e),
            ("inc5a", self.inc5a),
            ("inc5b", self.inc5b),
            ("dense1", self.fc),
        ]


def googlenet() -> nn.Module:
    return GoogLeNet().eval()


# ---------------------------------------------------------------------------
# resnet18.cnn


class BasicBlock(nn.Module):
    """`basic(c)` (stride 1, identity shortcut) or `down(c)` (stride 2,
    projection shortcut) of resnet18.cnn, both followed by relu."""

    def __init__(self, cin: int, c: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.projection = stride != 1 or cin != c
        if self.projection:
            self.shortcut_conv = nn.Conv2d(cin, c, 1, stride=stride, bias=False)
            self.shortcut_bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = self.shortcut_bn(self.shortcut_conv(x)) if self.projection else x
        return F.relu(y + shortcut)

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        layers: list[tuple[str, nn.Module]] = [
            ("conv1", self.conv1),
            ("batchnorm1", self.bn1),
            ("conv2", self.conv2),
            ("batchnorm2", self.bn2),
        ]
        if self.projection:  # the second branch of `add` in block `down`
            layers += [("conv3", self.shortcut_conv), ("batchnorm3", self.shortcut_bn)]
        return layers


class ResNet18(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.stem_bn = nn.BatchNorm2d(64)
        self.blocks = nn.ModuleDict()
        cin = 64
        for stage, c in zip((2, 3, 4, 5), (64, 128, 256, 512), strict=True):
            stride = 1 if stage == 2 else 2
            self.blocks[f"res{stage}a"] = BasicBlock(cin, c, stride)
            self.blocks[f"res{stage}b"] = BasicBlock(c, c, 1)
            cin = c
        self.fc = nn.Linear(512, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        x = F.max_pool2d(x, 3, stride=2, padding=1)  # 112 -> 56
        for block in self.blocks.values():
            x = block(x)
        return self.fc(global_avgpool(x))

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        return [
            ("stem", self.stem),
            ("batchnorm1", self.stem_bn),
            ("res2a", self.blocks["res2a"]),
            ("res2b", self.blocks["res2b"]),
            ("res3a", self.blocks["res3a"]),
            ("res3b", self.blocks["res3b"]),
            ("res4a", self.blocks["res4a"]),
            ("res4b", self.blocks["res4b"]),
            ("res5a", self.blocks["res5a"]),
            ("res5b", self.blocks["res5b"]),
            ("fc", self.fc),
        ]


def resnet18() -> nn.Module:
    return ResNet18().eval()


# ---------------------------------------------------------------------------
# squeezenet.cnn


class Fire(nn.Module):
    def __init__(self, cin: int, s: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, s, 1)
        self.expand1x1 = nn.Conv2d(s, e1, 1)
        self.expand3x3 = nn.Conv2d(s, e3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], dim=1)

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        return [
            ("squeeze", self.squeeze),
            ("expand1x1", self.expand1x1),
            ("expand3x3", self.expand3x3),
        ]


class SqueezeNet11(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2)  # 64x111x111
        self.fires = nn.ModuleList(
            [
                Fire(64, 16, 64, 64),  # after pool: 55x55
                Fire(128, 16, 64, 64),
                Fire(128, 32, 128, 128),  # after pool: 27x27
                Fire(256, 32, 128, 128),
                Fire(256, 48, 192, 192),  # after pool: 13x13
                Fire(384, 48, 192, 192),
                Fire(384, 64, 256, 256),
                Fire(512, 64, 256, 256),
            ]
        )
        self.dropout = nn.Dropout(0.5)
        self.final_conv = nn.Conv2d(512, 1000, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        for i, fire in enumerate(self.fires):
            if i in (0, 2, 4):
                x = F.max_pool2d(x, 3, stride=2)  # valid (floor), no ceil mode
            x = fire(x)
        x = F.relu(self.final_conv(self.dropout(x)))
        return torch.softmax(global_avgpool(x), dim=1)

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        return [
            ("conv1", self.conv1),
            ("fire1", self.fires[0]),
            ("fire2", self.fires[1]),
            ("fire3", self.fires[2]),
            ("fire4", self.fires[3]),
            ("fire5", self.fires[4]),
            ("fire6", self.fires[5]),
            ("fire7", self.fires[6]),
            ("fire8", self.fires[7]),
            ("final_conv", self.final_conv),
        ]


def squeezenet() -> nn.Module:
    return SqueezeNet11().eval()


# ---------------------------------------------------------------------------
# mobilenet_v2.cnn


class InvertedResidual(nn.Module):
    """`inverted(cin, c, stride, t)` of mobilenet_v2.cnn (expand 1x1, depthwise 3x3,
    linear 1x1), with the identity shortcut of `residual(c, t)` when `residual`."""

    def __init__(self, cin: int, c: int, stride: int = 1, t: int = 6,
                 residual: bool = False) -> None:
        super().__init__()
        hidden = cin * t
        self.expand = nn.Conv2d(cin, hidden, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden,
                            bias=False)
        self.dw_bn = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, c, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(c)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.expand_bn(self.expand(x)))
        y = F.relu6(self.dw_bn(self.dw(y)))
        y = self.project_bn(self.project(y))
        return x + y if self.residual else y

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        layers = [("conv1", self.expand), ("batchnorm1", self.expand_bn), ("dwconv1", self.dw),
                  ("batchnorm2", self.dw_bn), ("conv2", self.project),
                  ("batchnorm3", self.project_bn)]
        if self.residual:  # `residual` holds its `inverted` instance, `inverted1`
            return [("inverted1", _Layers(layers))]
        return layers


class _Layers(nn.Module):
    """A named list of another module's layers: a block instance inside a block."""

    def __init__(self, layers: list[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self._names = [name for name, _ in layers]
        self._modules_list = nn.ModuleList(module for _, module in layers)

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        return list(zip(self._names, self._modules_list, strict=True))


class MobileNetV2(nn.Module):
    """torchvision's mobilenet_v2 (width 1.0), written out from Table 2 of the paper."""

    STAGES = ((6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
              (6, 320, 1, 1))  # (t, c, n, s) after the first (t=1) block

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(32)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
        self.dw_bn = nn.BatchNorm2d(32)
        self.project = nn.Conv2d(32, 16, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(16)
        self.blocks = nn.ModuleList()
        cin = 16
        for t, c, n, s in self.STAGES:
            self.blocks.append(InvertedResidual(cin, c, s, t))
            self.blocks.extend(InvertedResidual(c, c, 1, t, residual=True) for _ in range(n - 1))
            cin = c
        self.last = nn.Conv2d(320, 1280, 1, bias=False)
        self.last_bn = nn.BatchNorm2d(1280)
        self.fc = nn.Linear(1280, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.stem_bn(self.stem(x)))
        x = self.project_bn(self.project(F.relu6(self.dw_bn(self.dw(x)))))
        for block in self.blocks:
            x = block(x)
        x = F.relu6(self.last_bn(self.last(x)))
        return self.fc(global_avgpool(x))

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        layers = [("stem", self.stem), ("batchnorm1", self.stem_bn), ("dwconv1", self.dw),
                  ("batchnorm2", self.dw_bn), ("conv1", self.project),
                  ("batchnorm3", self.project_bn)]
        counts = {"inverted": 0, "residual": 0}
        for block in self.blocks:
            kind = "residual" if block.residual else "inverted"
            counts[kind] += 1
            layers.append((f"{kind}{counts[kind]}", block))
        return layers + [("conv2", self.last), ("batchnorm4", self.last_bn), ("fc", self.fc)]


def mobilenet_v2() -> nn.Module:
    return MobileNetV2().eval()


# ---------------------------------------------------------------------------
# se_resnet.cnn


class SEBottleneck(nn.Module):
    """`bottleneck(c)` or `down(c, stride)` of se_resnet.cnn: 1x1, 3x3 (stride), 1x1 to
    4c, the SE gate (reduction 16), then the shortcut (a projection in `down`) and relu."""

    def __init__(self, cin: int, c: int, stride: int = 1, projection: bool = False) -> None:
        super().__init__()
        out = 4 * c
        self.conv1 = nn.Conv2d(cin, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.squeeze = nn.Conv2d(out, out // 16, 1)
        self.excite = nn.Conv2d(out // 16, out, 1)
        self.projection = projection
        if projection:
            self.shortcut = nn.Conv2d(cin, out, 1, stride=stride, bias=False)
            self.shortcut_bn = nn.BatchNorm2d(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(y.mean((2, 3), keepdim=True)))))
        y = y * gate
        shortcut = self.shortcut_bn(self.shortcut(x)) if self.projection else x
        return F.relu(y + shortcut)

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        branch = _Layers([("conv1", self.conv1), ("batchnorm1", self.bn1),
                          ("conv2", self.conv2), ("batchnorm2", self.bn2),
                          ("conv3", self.conv3), ("batchnorm3", self.bn3),
                          ("se1", _Layers([("conv1", self.squeeze), ("conv2", self.excite)]))])
        layers: list[tuple[str, nn.Module]] = [("branch1", branch)]
        if self.projection:  # the second branch of `add` in block `down`
            layers += [("conv1", self.shortcut), ("batchnorm1", self.shortcut_bn)]
        return layers


class SEResNet50(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.stem_bn = nn.BatchNorm2d(64)
        self.blocks = nn.ModuleDict()
        cin = 64
        for stage, c, n in ((2, 64, 3), (3, 128, 4), (4, 256, 6), (5, 512, 3)):
            for i in range(n):
                name = f"res{stage}{'abcdef'[i]}"
                stride = 2 if i == 0 and stage > 2 else 1
                self.blocks[name] = SEBottleneck(cin, c, stride, projection=i == 0)
                cin = 4 * c
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        for block in self.blocks.values():
            x = block(x)
        return self.fc(global_avgpool(x))

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        return [("stem", self.stem), ("batchnorm1", self.stem_bn),
                *self.blocks.items(), ("fc", self.fc)]


def se_resnet50() -> nn.Module:
    return SEResNet50().eval()


# shufflenet_v2.cnn


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle as torchvision writes it: view, transpose, flatten."""
    n, c, h, w = x.shape
    x = x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(n, c, h, w)


class ShuffleBranch(nn.Module):
    """block branch(c, stride=1): 1x1 -> bn -> relu, depthwise 3x3 -> bn, 1x1 -> bn -> relu."""

    def __init__(self, cin: int, c: int, stride: int = 1) -> None:
        super().__init__()
        self.pw1 = nn.Conv2d(cin, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.dw = nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.pw2 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.pw1(x)))
        x = self.bn2(self.dw(x))
        return F.relu(self.bn3(self.pw2(x)))

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        return [("conv1", self.pw1), ("batchnorm1", self.bn1), ("conv2", self.dw),
                ("batchnorm2", self.bn2), ("conv3", self.pw2), ("batchnorm3", self.bn3)]


class ShuffleShortcut(nn.Module):
    """block shortcut(cin, c): depthwise 3x3 stride 2 -> bn, 1x1 -> bn -> relu."""

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.pw = nn.Conv2d(cin, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn2(self.pw(self.bn1(self.dw(x)))))

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        return [("conv1", self.dw), ("batchnorm1", self.bn1), ("conv2", self.pw),
                ("batchnorm2", self.bn2)]


class ShuffleUnit(nn.Module):
    """torchvision's InvertedResidual: stride 1 splits the channels in two halves
    (`chunk`), stride 2 runs both branches on all of them; a shuffle of 2 groups last."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        c = cout // 2
        self.shortcut = ShuffleShortcut(cin, c) if stride == 2 else None
        self.branch = ShuffleBranch(cin if stride == 2 else c, c, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat([x1, self.branch(x2)], dim=1)
        else:
            out = torch.cat([self.shortcut(x), self.branch(x)], dim=1)
        return channel_shuffle(out, 2)

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        own = [("shortcut1", self.shortcut)] if self.shortcut is not None else []
        return [*own, ("branch1", self.branch)]


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2 1.0x (Ma et al. 2018, Table 5) as torchvision's shufflenet_v2_x1_0."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.stages = nn.ModuleList()
        cin = 24
        for stage, (repeats, cout) in enumerate(zip((4, 8, 4), (116, 232, 464), strict=True),
                                                start=2):
            units = [ShuffleUnit(cin, cout, 2)] + [ShuffleUnit(cout, cout, 1)
                                                   for _ in range(repeats - 1)]
            self.stages.append(nn.Sequential(*units))
            for i, unit in enumerate(units):
                unit.cnnc_name = f"stage{stage}_{i}"
            cin = cout
        self.conv5 = nn.Conv2d(464, 1024, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(1024)
        self.fc = nn.Linear(1024, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 3, 2, 1)
        for stage in self.stages:
            x = stage(x)
        x = F.relu(self.bn5(self.conv5(x)))
        return self.fc(global_avgpool(x))

    def cnnc_layers(self) -> list[tuple[str, nn.Module]]:
        units = [(u.cnnc_name, u) for stage in self.stages for u in stage]
        return [("conv1", self.conv1), ("batchnorm1", self.bn1), *units,
                ("conv5", self.conv5), ("batchnorm2", self.bn5), ("fc", self.fc)]


def shufflenet_v2() -> nn.Module:
    return ShuffleNetV2().eval()


# ---------------------------------------------------------------------------
# Registry and helpers

TWINS: dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int]]] = {
    "lenet5": (lenet5, (1, 28, 28)),
    "cifar_inception": (cifar_inception, (3, 32, 32)),
    "googlenet": (googlenet, (3, 224, 224)),
    "resnet18": (resnet18, (3, 224, 224)),
    "squeezenet": (squeezenet, (3, 224, 224)),
    "mobilenet_v2": (mobilenet_v2, (3, 224, 224)),
    "se_resnet": (se_resnet50, (3, 224, 224)),
    "shufflenet_v2": (shufflenet_v2, (3, 224, 224)),
}

_TENSORS = {
    nn.Conv2d: ("weight", "bias"),
    nn.Linear: ("weight", "bias"),
    nn.BatchNorm2d: ("weight", "bias", "running_mean", "running_var"),
    nn.BatchNorm1d: ("weight", "bias", "running_mean", "running_var"),
}


def cnnc_named_layers(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """(dotted cnnc name, leaf torch layer) in §6 source order."""
    for name, module in model.cnnc_layers():
        if hasattr(module, "cnnc_layers"):
            yield from cnnc_named_layers(module, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", module


def cnnc_named_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(`NAME.weight` etc., the torch parameter or buffer) in §6 source order."""
    for name, layer in cnnc_named_layers(model):
        for attr in _TENSORS[type(layer)]:
            tensor = getattr(layer, attr)
            if tensor is not None:  # a conv with bias=false has no bias
                yield f"{name}.{attr}", tensor


def to_cnnc_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """The twin's parameters under their cnnc names, float32, in source order."""
    return {
        name: t.detach().cpu().numpy().astype(np.float32, copy=True)
        for name, t in cnnc_named_tensors(model)
    }


@torch.no_grad()
def load_cnnc_weights(model: nn.Module, weights: Mapping[str, np.ndarray]) -> nn.Module:
    """Copy cnnc-named arrays into the twin. Keys must match exactly."""
    tensors = dict(cnnc_named_tensors(model))
    missing = sorted(set(tensors) - set(weights))
    extra = sorted(set(weights) - set(tensors))
    if missing or extra:
        raise KeyError(f"weight names differ: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, t in tensors.items():
        value = np.asarray(weights[name], dtype=np.float32)
        if tuple(value.shape) != tuple(t.shape):
            raise ValueError(f"{name}: shape {value.shape}, twin has {tuple(t.shape)}")
        t.copy_(torch.from_numpy(value))
    return model


@torch.no_grad()
def init_weights_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Deterministic, non-trivial weights: He-normal conv/dense weights, small
    random biases, batchnorm with random scale, shift, mean and variance."""
    g = torch.Generator().manual_seed(seed)
    for _, layer in cnnc_named_layers(model):
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            fan_in = layer.weight[0].numel()
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * math.sqrt(2 / fan_in))
            if layer.bias is not None:
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.1)
        else:
            n = layer.num_features
            layer.weight.copy_(torch.rand(n, generator=g) + 0.5)
            layer.bias.copy_(torch.randn(n, generator=g) * 0.1)
            layer.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            layer.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


@torch.no_grad()
def run(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Forward pass in eval mode on a float32 (N, C, H, W) array."""
    model.eval()
    return model(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()


@torch.no_grad()
def count_params_and_macs(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(trainable parameters, conv + dense multiply-accumulates for one sample).

    conv: output elements * (C_in / groups) * kh * kw; dense: in * out.
    Batchnorm running statistics are buffers, not counted as parameters.
    """
    macs = 0

    def conv_hook(m: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs
        kh, kw = m.kernel_size
        macs += output[0].numel() * (m.in_channels // m.groups) * kh * kw

    def dense_hook(m: nn.Linear, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs
        macs += m.in_features * m.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(dense_hook))
    try:
        model.eval()
        model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in model.parameters())
    return params, macs


def _check_same_pool() -> None:
    """MaxPoolSame against a direct loop over TensorFlow's window placement."""
    x = torch.randn(2, 3, 9, 8)
    for k, s in ((3, 2), (3, 1), (2, 2), (3, 3)):
        got = MaxPoolSame(k, s)(x).numpy()
        H, W = x.shape[2:]
        oh, ow = -(-H // s), -(-W // s)
        top = max((oh - 1) * s + k - H, 0) // 2
        left = max((ow - 1) * s + k - W, 0) // 2
        want = np.empty((2, 3, oh, ow), np.float32)
        for i in range(oh):
            for j in range(ow):
                r0, c0 = i * s - top, j * s - left
                win = x[:, :, max(r0, 0) : r0 + k, max(c0, 0) : c0 + k]
                want[:, :, i, j] = win.amax(dim=(2, 3)).numpy()
        np.testing.assert_array_equal(got, want)
    assert same_pads(112, 3, 2) == (0, 1) and same_pads(56, 3, 1) == (1, 1)


if __name__ == "__main__":
    torch.manual_seed(0)
    _check_same_pool()
    for stem, (builder, shape) in TWINS.items():
        model = init_weights_(builder(), seed=0)
        weights = to_cnnc_weights(model)
        load_cnnc_weights(builder(), weights)  # names and shapes round-trip
        y = run(model, np.random.default_rng(0).standard_normal((2, *shape)))
        params, macs = count_params_and_macs(model, shape)
        convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
        print(
            f"{stem:16s} out {tuple(y.shape)}  params {params:,}  MACs {macs:,}  "
            f"convs {convs}  cnnc tensors {len(weights)}"
        )
