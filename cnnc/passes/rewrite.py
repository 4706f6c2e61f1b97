"""Graph surgery shared by the passes.

Every helper keeps the two views of a node's producers in step: the ordered
`inputs` list and the DiGraph edges (one edge per distinct producer). Node
order matters to the runtime (it is the tie-break of the topological sort, so
it decides the schedule and the buffer lifetimes), so new nodes are inserted
where the nodes they replace were, not appended.

A graph may be bound (parameterised nodes carry `params`) or not (`cnnc dump`
and `cnnc summary` optimise the parsed graph); passes rewrite `params` only
where they are present.
"""

from __future__ import annotations

import networkx as nx

from ..graph import schedule


def copy_graph(graph: nx.DiGraph) -> nx.DiGraph:
    """A copy whose node dicts, `inputs`, `attrs` and `params` dicts are fresh.

    Parameter arrays are shared: passes never write into an array, they make new ones.
    """
    copy = graph.copy()
    for _, data in copy.nodes(data=True):
        data["inputs"] = list(data["inputs"])
        data["attrs"] = dict(data["attrs"])
        if "params" in data:
            data["params"] = dict(data["params"])
    return copy


def sole_consumer(graph: nx.DiGraph, node: str) -> str | None:
    """The one node that reads `node`, once; None if there are more, none, or it is the output."""
    if node == graph.graph["output"]:
        return None
    succ = list(graph.successors(node))
    if len(succ) != 1 or graph.nodes[succ[0]]["inputs"].count(node) != 1:
        return None
    return succ[0]


def set_inputs(graph: nx.DiGraph, node: str, inputs: list[str]) -> None:
    """Make `inputs` the producers of `node` (list and edges)."""
    for src in list(graph.predecessors(node)):
        graph.remove_edge(src, node)
    graph.nodes[node]["inputs"] = list(inputs)
    for src in dict.fromkeys(inputs):
        graph.add_edge(src, node)


def replace_uses(graph: nx.DiGraph, old: str, new: str) -> None:
    """Every reader of `old` (and the graph output) reads `new` instead."""
    for user in list(graph.successors(old)):
        inputs = [new if src == old else src for src in graph.nodes[user]["inputs"]]
        set_inputs(graph, user, inputs)
    if graph.graph["output"] == old:
        graph.graph["output"] = new


def bypass(graph: nx.DiGraph, node: str) -> None:
    """Remove a one-input node whose output equals its input; its readers read the input."""
    replace_uses(graph, node, graph.nodes[node]["inputs"][0])
    graph.remove_node(node)


def insert_node(graph: nx.DiGraph, node: str, data: dict, before: str) -> None:
    """Add `node` (with edges from data['inputs']) just before `before` in node order.

    The graph is rebuilt, so node dicts fetched before the call are stale after it.
    """
    nodes = list(graph.nodes(data=True))
    edges = list(graph.edges)
    graph.remove_nodes_from([n for n, _ in nodes])  # keeps graph.graph
    for other, other_data in nodes:
        if other == before:
            graph.add_node(node, **data)
        graph.add_node(other, **other_data)
    graph.add_edges_from(edges)
    for src in dict.fromkeys(data["inputs"]):
        graph.add_edge(src, node)


def fresh_id(graph: nx.DiGraph, base: str) -> str:
    """`base`, or `base~2`, `base~3`, ... : the first id not in the graph."""
    node, n = base, 1
    while node in graph:
        n += 1
        node = f"{base}~{n}"
    return node


def remove_dead(graph: nx.DiGraph) -> int:
    """Remove nodes the output does not depend on (the input always stays); the count."""
    live = nx.ancestors(graph, graph.graph["output"]) | {graph.graph["output"],
                                                          graph.graph["input"]}
    dead = [n for n in graph.nodes if n not in live]
    graph.remove_nodes_from(dead)
    return len(dead)


def ordered(graph: nx.DiGraph) -> list[str]:
    """Node ids in the order the runtime schedules them."""
    return schedule(graph)
