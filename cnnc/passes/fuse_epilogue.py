"""fuse-epilogue: an activation runs inside the conv, dense or add that produces its input."""

from __future__ import annotations

import networkx as nx

from .rewrite import ACTIVATION_OPS, bypass, sole_consumer

PRODUCERS = ("conv", "dense", "add")


class FuseEpilogue:
    """Rewrite: `conv -> relu` (likewise leaky_relu, sigmoid, tanh; and after dense
    or add) becomes the conv with `attrs['activation']` set to the activation
    (`attrs['slope']` to the leaky slope); the activation node is removed and its
    readers read the conv. The kernel applies it to each output value as it
    stores it, after the bias.

    Valid when the producer's only reader is the activation, the producer is not
    the graph output, and it has no epilogue yet (two activations in a row fuse
    the first one only; the second stays a node).

    Preserves: the output exactly (the same float32 function on the same value),
    node names (the producer keeps its own), shapes.
    """

    name = "fuse-epilogue"

    def apply(self, graph: nx.DiGraph) -> None:
        for node in list(graph.nodes):
            data = graph.nodes[node]
            if data["op"] not in ACTIVATION_OPS:
                continue
            producer = data["inputs"][0]
            attrs = graph.nodes[producer]["attrs"]
            if (graph.nodes[producer]["op"] not in PRODUCERS
                    or attrs.get("activation", "none") != "none"
                    or sole_consumer(graph, producer) != node):
                continue
            attrs["activation"] = data["op"]
            attrs["slope"] = float(data["attrs"].get("slope", 0.0))
            bypass(graph, node)
