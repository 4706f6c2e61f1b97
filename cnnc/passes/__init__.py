"""The optimiser: an ordered pipeline of named graph rewrites.

Each pass is a module of this package holding one class with a kebab-case
`name` and an `apply(graph)` that rewrites the graph in place; its docstring
states the rewrite, when it is valid and what it preserves. `optimize` runs
the pipeline on a copy of the graph. The graph may carry parameters (from
`weights.bind_parameters`) or not: passes rewrite `params` where present, so
`cnnc dump --stage optimized` and `cnnc summary` can optimise a parsed graph.
"""

from __future__ import annotations

import os

import networkx as nx

from ..errors import CnncError
from .drop_identity import DropIdentity
from .fold_batchnorm import FoldBatchnorm
from .fold_padding import FoldPadding
from .fuse_1x1_chains import Fuse1x1Chains
from .fuse_1x1_siblings import Fuse1x1Siblings
from .fuse_epilogue import FuseEpilogue
from .fuse_residual import FuseResidual
from .inplace_concat import InplaceConcat
from .plan_memory import PlanMemory
from .rewrite import copy_graph
from .verify import GraphCheckError, verify_graph
from .winograd import Winograd

PASSES = {p.name: p for p in (DropIdentity(), FoldPadding(), FoldBatchnorm(), FuseEpilogue(),
                              Fuse1x1Chains(), Fuse1x1Siblings(), FuseResidual(),
                              Winograd(), InplaceConcat(), PlanMemory())}

PIPELINE = [
    # first: dropout/identity between two layers would hide every pattern below
    # (conv -> dropout -> batchnorm, pad -> identity -> conv)
    "drop-identity",
    # before fuse-epilogue only for reading order: it needs nothing fused, and its
    # non-negativity test knows both `relu` nodes and relu epilogues
    "fold-padding",
    # before fuse-epilogue: conv -> batchnorm -> relu folds only while the conv
    # has no epilogue (batchnorm after an activation cannot be folded)
    "fold-batchnorm",
    # after fold-batchnorm (above); before the 1x1 fusions, which group and merge
    # convs by their epilogue
    "fuse-epilogue",
    # before fuse-1x1-siblings: a chain `a -> b` needs `a` to be a conv, not a slice
    # of a wide conv; after fold-batchnorm so conv -> batchnorm -> conv is a chain
    "fuse-1x1-chains",
    # after fuse-epilogue: siblings are grouped by activation, so each group is one
    # conv with its epilogue and no activation node is left between it and readers
    "fuse-1x1-siblings",
    # after fuse-epilogue, which puts a block's `add -> relu` on the add; after the 1x1
    # fusions, which take plain one-input convs only
    "fuse-residual",
    # after every pass that creates or changes convs (the 1x1 fusions, fold-padding's
    # padding, fold-batchnorm's weights): it picks the kernel of each conv as it ends up
    "winograd",
    # after every pass that creates, removes or renames producers: the in-place
    # flags name the concat's producers; it also places the siblings' wide conv
    "inplace-concat",
    # last: buffer lifetimes depend on the final nodes and on the in-place concats
    "plan-memory",
]

LEVELS = {
    0: (),
    1: ("drop-identity", "fold-padding", "fold-batchnorm", "fuse-epilogue"),  # cheap, local
    2: tuple(PIPELINE),
}

__all__ = ["LEVELS", "PASSES", "PIPELINE", "GraphCheckError", "optimize", "passes_for",
           "verify_graph"]


def passes_for(level: int = 2, disabled=()) -> list[str]:
    """The names of the passes that run at `level` without `disabled`, in pipeline order."""
    if level not in LEVELS:
        raise CnncError(f"unknown optimisation level {level}; levels: "
                        + ", ".join(f"-O{n}" for n in LEVELS))
    for name in disabled:
        if name not in PASSES:
            from ..frontend import did_you_mean
            raise CnncError(f"unknown pass '{name}'{did_you_mean(name, PASSES)}; passes: "
                            + ", ".join(PIPELINE))
    return [name for name in PIPELINE if name in LEVELS[level] and name not in disabled]


def optimize(graph: nx.DiGraph, level: int = 2, disabled=(), dump_dir: str | None = None,
             check: bool = False) -> nx.DiGraph:
    """The graph after the passes of `level` (0, 1 or 2) except `disabled`; `graph` is untouched.

    `dump_dir`: write the graph before any pass (`00-parsed`) and after each pass
    (`01-drop-identity`, ...) as .txt, .dot and .json. `check`: run `verify_graph`
    after each pass; a failure names the pass.
    """
    names = passes_for(level, disabled)
    graph = copy_graph(graph)
    if dump_dir is not None:
        _dump(graph, dump_dir, "00-parsed")
    for number, name in enumerate(names, 1):
        PASSES[name].apply(graph)
        if check:
            try:
                verify_graph(graph)
            except GraphCheckError as err:
                raise GraphCheckError(f"after pass {name}: {err.message}") from None
        if dump_dir is not None:
            _dump(graph, dump_dir, f"{number:02d}-{name}")
    return graph


def _dump(graph: nx.DiGraph, directory: str, stem: str) -> None:
    from ..report import dump_dot, dump_json, dump_text
    try:
        os.makedirs(directory, exist_ok=True)
        for ext, dumper in (("txt", dump_text), ("dot", dump_dot), ("json", dump_json)):
            with open(os.path.join(directory, f"{stem}.{ext}"), "w", encoding="utf-8") as fh:
                fh.write(dumper(graph))
    except OSError as err:
        raise CnncError(f"cannot write the pass dumps to '{directory}': {err.strerror}") from None
