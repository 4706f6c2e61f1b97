"""What the compiler shows people: the summary table and the graph dumps."""

from __future__ import annotations

import json
import math

import networkx as nx

from .graph import schedule
from .layers import param_shapes
from .ops import OPS, format_shape


def layer_stats(graph: nx.DiGraph) -> list[dict]:
    """One row per node: parameters, multiply-accumulates, receptive field, stride.

    The receptive field of an output cell is the input window (rows x columns)
    it depends on; the cumulative stride (jump) is the input distance between
    neighbouring output cells. A global pool or dense layer sees all of the input.
    """
    rows = []
    field: dict[str, tuple] = {}  # node -> (rf_h, rf_w, jump_h, jump_w)
    in_h, in_w = graph.graph["input_shape"][1:]
    for node_id in nx.topological_sort(graph):
        data = graph.nodes[node_id]
        op, attrs, shape = data["op"], data["attrs"], data["shape"]
        spec = OPS[op]
        inputs = data["inputs"]
        shape_in = graph.nodes[inputs[0]]["shape"] if inputs else None
        if not inputs:
            rf = (1, 1, 1, 1)
        else:
            rfs = [field[i] for i in inputs]
            rf = tuple(max(r[k] for r in rfs) for k in range(4))
            if spec.window and not attrs.get("global"):
                dil = attrs.get("dilation", (1, 1))
                kh = dil[0] * (attrs["kernel"][0] - 1) + 1
                kw = dil[1] * (attrs["kernel"][1] - 1) + 1
                rf = (rf[0] + (kh - 1) * rf[2], rf[1] + (kw - 1) * rf[3],
                      rf[2] * attrs["stride"][0], rf[3] * attrs["stride"][1])
            elif spec.whole_input or attrs.get("global"):
                rf = (in_h, in_w, rf[2], rf[3])
        field[node_id] = rf
        # trainable parameters, as PyTorch's model.parameters() counts them: a batch
        # norm's running statistics are buffers, not parameters
        params = sum(math.prod(s) for p, s in param_shapes(op, attrs, shape_in).items()
                     if spec.param(p).trainable) if inputs else 0
        macs = spec.macs(attrs, shape_in, shape) if inputs else 0
        rows.append(dict(name=node_id, op=op, shape=shape, params=params, macs=macs,
                         receptive_field=(min(rf[0], in_h), min(rf[1], in_w)),
                         stride=(rf[2], rf[3])))
    return rows


def summary_text(graph: nx.DiGraph, extra_lines: list[str] = ()) -> str:
    rows = layer_stats(graph)
    header = ("layer", "op", "output", "params", "MACs", "recept.", "stride")
    table = [header] + [
        (r["name"], r["op"], format_shape(r["shape"]), f"{r['params']:,}", f"{r['macs']:,}",
         format_shape(r["receptive_field"]), format_shape(r["stride"])) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    right = {3, 4}
    lines = []
    for i, row in enumerate(table):
        cells = [c.rjust(widths[k]) if k in right else c.ljust(widths[k])
                 for k, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    total_params = sum(r["params"] for r in rows)
    total_macs = sum(r["macs"] for r in rows)
    lines.append("")
    output_shape = graph.nodes[graph.graph["output"]]["shape"]
    lines.append(f"network {graph.graph['name']}: input "
                 f"{format_shape(graph.graph['input_shape'])}, output {format_shape(output_shape)}")
    lines.append(f"total parameters: {total_params:,}")
    lines.append(f"total MACs per image: {total_macs:,} ({2 * total_macs / 1e9:.3f} GFLOP)")
    lines.extend(extra_lines)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- dumps
def _attr_text(attrs: dict) -> str:
    def value(v):
        if isinstance(v, tuple):
            return "x".join(str(x) for x in v) if all(isinstance(x, int) for x in v) else str(v)
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)
    return ", ".join(f"{k}={value(v)}" for k, v in attrs.items())


def dump_text(graph: nx.DiGraph) -> str:
    """One line per node in topological (source) order: `id = op(attrs) <- inputs : shape`."""
    lines = [f"network {graph.graph['name']} -> {graph.graph['output']}"]
    for node_id in schedule(graph):
        d = graph.nodes[node_id]
        attrs = _attr_text(d["attrs"])
        ins = ", ".join(d["inputs"])
        lines.append(f"{node_id} = {d['op']}({attrs}) <- [{ins}] : {format_shape(d['shape'])}")
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dump_dot(graph: nx.DiGraph) -> str:
    """Graphviz DOT: one box per node with its name, op and shape."""
    lines = [f"digraph {_dot_quote(graph.graph['name'])} {{",
             "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fillcolor="#f4f4f4", '
             'fontname="Helvetica"];']
    colors = {"conv": "#cfe2ff", "dense": "#cfe2ff", "concat": "#ffe5b4", "add": "#ffe5b4",
              "maxpool": "#d1e7dd", "avgpool": "#d1e7dd", "input": "#eeeeee"}
    for node_id, d in graph.nodes(data=True):
        extra = ""
        act = d["attrs"].get("activation")
        if act and act != "none":
            extra = f" + {act}"
            if d["attrs"].get("act_from"):
                extra += f" from channel {d['attrs']['act_from']}"
        label = f"{node_id}\\n{d['op']}{extra}\\n{format_shape(d['shape'])}"
        color = colors.get(d["op"], "#f4f4f4")
        lines.append(f"  {_dot_quote(node_id)} [label=\"{label.replace(chr(34), '')}\", "
                     f"fillcolor=\"{color}\"];")
    for u, v in graph.edges:
        lines.append(f"  {_dot_quote(u)} -> {_dot_quote(v)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def graph_to_json_data(graph: nx.DiGraph) -> dict:
    """networkx node-link data (loadable by networkx.node_link_graph), without weights."""
    clean = nx.DiGraph()
    clean.graph.update(_jsonable(graph.graph))
    for node_id, d in graph.nodes(data=True):
        clean.add_node(node_id, **{k: _jsonable(v) for k, v in d.items() if k != "params"})
    clean.add_edges_from(graph.edges)
    return nx.node_link_data(clean, edges="edges")


def dump_json(graph: nx.DiGraph) -> str:
    return json.dumps(graph_to_json_data(graph), indent=1) + "\n"


DUMPERS = {"text": dump_text, "dot": dump_dot, "json": dump_json}
