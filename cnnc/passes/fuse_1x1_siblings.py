"""fuse-1x1-siblings: 1x1 convs that read the same tensor become one wider conv."""

from __future__ import annotations

import networkx as nx
import numpy as np

from ..backend import conv_kernel
from ..ops import epilogue_of
from .fuse_1x1_chains import is_pointwise
from .rewrite import fresh_id, insert_node, set_inputs


def _fusable(attrs: dict) -> bool:
    return (is_pointwise(attrs) and tuple(attrs["stride"]) == (1, 1)
            and not any(attrs["pads"]))


class Fuse1x1Siblings:
    """Rewrite: convs `c1, c2, ...` (depths d1, d2, ...) that all read tensor `x`,
    all 1x1 with stride 1, groups 1, no padding, and the same activation epilogue,
    become one conv `prefix.c1+c2+...` of depth d1 + d2 + ... (weights and biases
    stacked in node order, a zero bias for a conv without one) placed where the
    first of them was. Each `ci` stays, with its name, shape and readers, as a
    `slice` node: a view of channels `start .. start+di-1` of the wide conv's
    output, which costs no copy at run time. A group needs two members.

    Siblings with no activation and siblings with one same activation epilogue
    (`add { conv(60, 1x1) | identity | conv(60, 1x1) -> relu }`) form one group
    too, when the wide conv runs on the packed kernel: those without come first,
    and the wide conv's `act_from` (their total depth) makes its store apply the
    activation to the channels from there on only. Other mixes of activations form
    one group per activation.

    Valid: a 1x1, stride-1, unpadded conv computes each output channel from the
    same input pixel independently of the others, so stacking output channels
    changes nothing; the epilogue acts value by value, on each member's channels
    as on the member alone.

    Preserves: the output exactly (each channel is the same sum in the same
    order), every node name (readers still read `ci`), shapes.
    """

    name = "fuse-1x1-siblings"

    def apply(self, graph: nx.DiGraph) -> None:
        for x in list(graph.nodes):
            groups: dict[tuple, list[str]] = {}
            for user in graph.successors(x):
                data = graph.nodes[user]
                if data["op"] == "conv" and data["inputs"] == [x] and _fusable(data["attrs"]):
                    key = tuple(epilogue_of(data["attrs"]).items())
                    groups.setdefault(key, []).append(user)
            order = {n: i for i, n in enumerate(graph.nodes)}
            mixed = _mixed_group(graph, x, groups)
            if mixed is not None:
                plain, activated = (sorted(m, key=order.__getitem__) for m in mixed)
                self._fuse(graph, x, plain + activated, order,
                           act_from=sum(graph.nodes[m]["shape"][0] for m in plain))
                continue
            for members in groups.values():
                if len(members) > 1:
                    self._fuse(graph, x, sorted(members, key=order.__getitem__), order)

    def _fuse(self, graph: nx.DiGraph, x: str, members: list[str], order: dict,
              act_from: int = 0) -> None:
        datas = [graph.nodes[m] for m in members]
        first = datas[0]
        depth = sum(d["shape"][0] for d in datas)
        attrs = dict(datas[-1 if act_from else 0]["attrs"])  # mixed: the activated's epilogue
        attrs.update(depth=depth, bias=any(d["attrs"]["bias"] for d in datas))
        if act_from:
            attrs["act_from"] = act_from
        wide = fresh_id(graph, wide_name(members))
        data = {"op": "conv", "name": wide, "inputs": [x],
                "shape": (depth, *first["shape"][1:]), "pos": first["pos"], "attrs": attrs}
        if all("params" in d for d in datas):
            data["params"] = stack([d["params"] for d in datas], attrs["bias"])
        insert_node(graph, wide, data, before=min(members, key=order.__getitem__))
        start = 0
        for member in members:
            d = graph.nodes[member]  # insert_node made new node dicts
            d.update(op="slice", attrs={"start": start, "count": d["shape"][0]})
            d.pop("params", None)
            set_inputs(graph, member, [wide])
            start += d["shape"][0]


def _mixed_group(graph: nx.DiGraph, x: str, groups: dict) -> tuple[list, list] | None:
    """(members without an activation, members with one) when the siblings of `x` have
    exactly those two epilogues and their wide conv runs on the packed kernel (the one
    with `act_from`); else None."""
    plain = [m for key, m in groups.items() if dict(key)["activation"] == "none"]
    if len(groups) != 2 or not plain:
        return None
    activated = next(m for key, m in groups.items() if dict(key)["activation"] != "none")
    members = plain[0] + activated
    depth = sum(graph.nodes[m]["shape"][0] for m in members)
    if conv_kernel(depth, 1, graph.nodes[x]["shape"][0]) != "packed":
        return None
    return plain[0], activated


def wide_name(members: list[str]) -> str:
    """`inc3a.conv1+conv2+conv4` for inc3a.conv1, inc3a.conv2, inc3a.conv4."""
    parts = [m.split(".") for m in members]
    common = 0
    while all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    prefix = ".".join(parts[0][:common])
    rest = "+".join(".".join(p[common:]) for p in parts)
    return f"{prefix}.{rest}" if prefix else rest


def stack(params: list[dict], bias: bool) -> dict:
    """Weights (and biases, zeros where a member has none) stacked along output channels."""
    result = {"weight": np.concatenate([p["weight"] for p in params], axis=0)}
    if bias:
        result["bias"] = np.concatenate(
            [p["bias"] if "bias" in p else np.zeros(p["weight"].shape[0], np.float32)
             for p in params]).astype(np.float32)
    return result
