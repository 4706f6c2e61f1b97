"""fuse-epilogue: an activation runs inside the conv, dense or add that produces its input."""

from __future__ import annotations

import networkx as nx

from ..ops import ACTIVATION_OPS, EPILOGUE_OPS, epilogue_of
from .rewrite import bypass, sole_consumer


class FuseEpilogue:
    """Rewrite: `conv -> relu` (likewise every op the registry marks `activation`:
    leaky_relu, sigmoid, tanh, relu6, clip, ...; and after dwconv, dense, add or mul, the
    ops it marks `epilogue`) becomes the conv with `attrs['activation']` set to the
    activation (`attrs['slope']` to the leaky slope, 0 otherwise, and the activation's
    other arguments, clip's `min` and `max`, copied); the activation node is removed and its
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
            if (graph.nodes[producer]["op"] not in EPILOGUE_OPS
                    or attrs.get("activation", "none") != "none"
                    or sole_consumer(graph, producer) != node):
                continue
            attrs.update(epilogue_of({**data["attrs"], "activation": data["op"]}))
            bypass(graph, node)
