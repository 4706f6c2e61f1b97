"""drop-identity: remove dropout and identity, then every node the output does not need."""

from __future__ import annotations

import networkx as nx

from ..ops import OPS
from .rewrite import bypass, remove_dead


class DropIdentity:
    """Rewrite: a `dropout` or `identity` node is removed and its readers (and the
    graph output, if it was one) read its input instead; then nodes the output
    does not depend on are removed.

    Valid: always. At inference dropout is the identity (LANGUAGE.md §5), and a
    node nobody reads cannot change the output.

    Preserves: the output exactly, the names of all other nodes, the order of a
    reader's inputs (`add { identity | identity }` becomes `add(x, x)`).
    """

    name = "drop-identity"

    def apply(self, graph: nx.DiGraph) -> None:
        for node in list(graph.nodes):
            if OPS[graph.nodes[node]["op"]].identity:
                bypass(graph, node)
        remove_dead(graph)
