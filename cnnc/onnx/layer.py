"""The layers an ONNX import builds, before they are written as .cnn text."""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import Node

EPS = 1e-5  # batchnorm's default (§5)


@dataclass
class Act:
    """An activation: the output of layer `layer` (or the input), shape without batch."""
    layer: str
    shape: tuple


@dataclass
class Layer:
    id: str
    kind: str
    inputs: list[str]
    shape: tuple
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    node: Node | None = None  # the ONNX node it came from: its name may become a label
    weight_name: str = ""  # the ONNX name of its weight, another label candidate


@dataclass
class Grouped:
    """The channels of activation `x` viewed as (groups, C/groups) by a 5-D Reshape, and
    `transposed` once a Transpose swapped those two axes: the middle of the channel
    shuffle torch exports (Reshape -> Transpose -> Reshape), which becomes one `shuffle`
    when the last Reshape flattens it back. Nothing else may read it."""
    x: Act
    groups: int
    transposed: bool = False

    @property
    def shape(self) -> tuple:
        """The 5-D shape without the batch: (groups, C/groups, H, W), or swapped."""
        c, h, w = self.x.shape
        pair = (self.groups, c // self.groups)
        return (*(pair[::-1] if self.transposed else pair), h, w)
