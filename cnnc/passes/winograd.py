"""winograd: 3x3 stride-1 convs that pay for it run the Winograd kernel."""

from __future__ import annotations

import networkx as nx

from ..backend import winograd_tile


class Winograd:
    """Rewrite: a conv for which `backend.winograd_tile` gives a tile m (3x3, stride 1,
    dilation 1, one group, a large enough output and channel counts) gets
    `attrs['winograd'] = m`; the runtime then computes it by Winograd F(m x m, 3x3)
    (cnnc/kernels/winograd.py), weights transformed once at compile time. The conv's
    epilogue (activation, residual) is applied by that kernel's store as by the
    packed one.

    Valid for any such conv; it changes no node, edge or shape, so it may run anywhere
    after the passes that create or change convs.

    Preserves: the output within float32 rounding, not bit for bit -- F(4x4, 3x3)'s
    transforms scale values by up to 8 and 1/24 (~4e-6 relative per layer against ~1e-7
    for the direct kernel); `cnnc verify` shows the error of each such layer. Switched off
    with -O1 or less, `--no-winograd` or `compile_file(..., winograd=False)`.
    """

    name = "winograd"

    def apply(self, graph: nx.DiGraph) -> None:
        for node in graph.nodes:
            data = graph.nodes[node]
            if data["op"] != "conv":
                continue
            in_channels = graph.nodes[data["inputs"][0]]["shape"][0]
            m = winograd_tile(data["attrs"], in_channels, tuple(data["shape"]))
            if m:
                data["attrs"]["winograd"] = m
            else:
                data["attrs"].pop("winograd", None)
