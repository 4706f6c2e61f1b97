"""The package's import graph (issue 10): no circle, and none of the forbidden arrows.

Every import of every module counts, also one inside a function: a function-local import
that closes a circle only hides it. `from . import x` is an arrow to the module `x` where
`x` is one, else to the package; a package is not counted as imported by its submodules
(Python runs its __init__ first, but that is no dependency of theirs).
"""

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parent.parent / "cnnc"

# (importer, imported): a module or a package with everything under it
FORBIDDEN = [
    ("cnnc.passes", "cnnc.runtime"), ("cnnc.passes", "cnnc.compiler"),
    ("cnnc.passes", "cnnc.kernels"), ("cnnc.passes", "cnnc.lower"),
    ("cnnc.kernels", "cnnc.graph"), ("cnnc.kernels", "cnnc.ops"),
    ("cnnc.kernels", "cnnc.frontend"), ("cnnc.kernels", "cnnc.language"),
    ("cnnc.runtime", "cnnc.cli"), ("cnnc.runtime", "cnnc.cli_common"),
    ("cnnc.runtime", "cnnc.commands"), ("cnnc.runtime", "cnnc.compiler"),
    ("cnnc.artifact", "cnnc.runtime"), ("cnnc.artifact", "cnnc.compiler"),
]


def modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imported(name: str, is_package: bool, node, known) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.split(".")[0] == "cnnc"}
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "cnnc":
        return set()
    return {f"{target}.{a.name}" if f"{target}.{a.name}" in known else target
            for a in node.names}


def import_graph() -> nx.DiGraph:
    known = modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(known)
    for name, (path, is_package) in known.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported(name, is_package, node, known):
                    assert target in known, f"{name} imports {target}, which does not exist"
                    if target != name:
                        graph.add_edge(name, target)
    return graph


def within(module: str, area: str) -> bool:
    return module == area or module.startswith(area + ".")


def test_the_import_graph_has_no_circle():
    assert list(nx.simple_cycles(import_graph())) == []


def test_no_forbidden_arrow():
    arrows = [(a, b) for a, b in import_graph().edges for x, y in FORBIDDEN
              if within(a, x) and within(b, y)]
    assert arrows == []


def test_kernels_import_nothing_of_cnnc_but_kernels_and_the_target():
    """Kernels know the CPU target (cnnc.backend, and the errors it raises), nothing of
    graphs, ops or the language."""
    graph = import_graph()
    outside = [(a, b) for a, b in graph.edges
               if within(a, "cnnc.kernels") and not within(b, "cnnc.kernels")
               and b not in ("cnnc.backend", "cnnc.errors")]
    assert outside == []
    backend = [b for a, b in graph.edges if a == "cnnc.backend"]
    assert set(backend) <= {"cnnc.errors"}


def test_the_walk_resolves_relative_and_function_local_imports():
    tree = ast.parse("def f():\n    from ..runtime import Plan\n    from . import rewrite\n")
    first, second = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    known = {"cnnc.runtime", "cnnc.passes", "cnnc.passes.rewrite"}
    assert imported("cnnc.passes.verify", False, first, known) == {"cnnc.runtime"}
    assert imported("cnnc.passes.verify", False, second, known) == {"cnnc.passes.rewrite"}
    assert imported("cnnc.passes", True, second, known) == {"cnnc.passes.rewrite"}
