"""plan-memory: let tensors whose lifetimes do not overlap share storage."""

from __future__ import annotations

import networkx as nx


class PlanMemory:
    """Rewrite: sets `graph.graph['reuse_memory']`; the runtime's `plan_buffers`
    then gives each buffer a lifetime (the step that first writes it to the step
    that last reads it, the output living to the end) and places buffers whose
    lifetimes are disjoint in the same slot, best fit first.

    Valid: always. A slot is only handed on after the last read of its previous
    tenant, and every kernel writes all of its output before anything reads it.

    Preserves: the graph itself (nodes, edges, attributes) and the output exactly;
    only the peak activation memory changes (see `memory_report`).
    """

    name = "plan-memory"

    def apply(self, graph: nx.DiGraph) -> None:
        graph.graph["reuse_memory"] = True
