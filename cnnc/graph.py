"""AST -> dataflow graph: imports resolved, blocks expanded, names and shapes.

`load_program` reads a file and everything it imports; `build_graph` expands
one network of it into a networkx.DiGraph whose nodes follow the schema of
docs/DESIGN.md. Every check that needs no shapes runs over the whole program
(so a misspelt layer in an unused block is still an error); shapes are
checked for the network built.
"""

from __future__ import annotations

import operator
import os
from contextlib import contextmanager
from dataclasses import dataclass, field

import networkx as nx

from .errors import CnncError, CnncImportError, CnncNameError, CnncValueError
from .frontend import (
    INT_LIMIT,
    BinOp,
    Block,
    Branching,
    Call,
    Dim,
    Expr,
    Import,
    Name,
    Neg,
    Network,
    Num,
    Pos,
    Stage,
    abbreviate,
    did_you_mean,
    parse,
    read_source,
    source_lines,
)
from .layers import LAYERS, WORDS, bind_arguments, infer_shape, param_shapes
from .ops import OPS, Param

KEYWORDS = ("network", "block", "import", "concat", "add", "mul")


@dataclass
class Program:
    """A parsed file with everything it imports."""

    file: str
    blocks: dict[str, Block] = field(default_factory=dict)
    networks: list[Network] = field(default_factory=list)  # the main file's own
    imported_networks: list[Network] = field(default_factory=list)  # visible by name (§10)
    sources: dict[str, str] = field(default_factory=dict)  # file -> text, for error carets


MAX_IMPORT_DEPTH = 50  # files importing one another in a chain
MAX_EXPANSION_DEPTH = 200  # block instances and branches nested in one another
MAX_LAYERS = 50_000  # layers of one expanded network (GoogLeNet has ~200; ~3 s to build)


# ---------------------------------------------------------------- loading
def _import_text(imp: Import, target: str) -> str:
    """The text of an imported file: a `.cnn` file (also after following links), read like
    the main file. A file of any other name is never opened, so an import cannot show a
    line of a file that is not a network description."""
    if not os.path.realpath(target).endswith(".cnn"):
        raise CnncImportError(f"cannot import '{imp.path}': only .cnn files can be imported"
                              ).at(imp.pos)
    try:
        return read_source(target)
    except CnncError as err:
        reason = "cannot find it" if err.message == "no such file" else err.message
        raise CnncImportError(f"cannot import '{imp.path}': {reason}").at(imp.pos) from None


def load_program(path: str) -> Program:
    """Parse `path` and its imports (relative to the importing file)."""
    return _load(read_source(path), path)


def load_source(text: str, file: str = "<source>") -> Program:
    """Parse text; its imports are resolved relative to the current directory."""
    return _load(text, file)


def _load(text: str, file: str) -> Program:
    program = Program(file)
    loaded: set[str] = set()

    def visit(text: str, file: str, stack: list[str]):
        """Read one file; `stack` holds the real paths of the files importing it, and itself."""
        program.sources[file] = text
        module = parse(text, file)
        key = os.path.realpath(file) if os.path.exists(file) else file
        loaded.add(key)
        for block in module.blocks:
            if block.name in program.blocks:
                first = program.blocks[block.name].pos
                raise CnncNameError(
                    f"block '{block.name}' is defined twice (first at {first.file}:{first.line})"
                ).at(block.pos)
            program.blocks[block.name] = block
        if len(stack) == 1:
            program.networks = list(module.networks)
        else:
            program.imported_networks.extend(module.networks)
        base = os.path.dirname(file) if os.path.exists(file) else "."
        for imp in module.imports:
            target = os.path.normpath(os.path.join(base, imp.path))
            real = os.path.realpath(target)
            if real in stack:
                chain = " -> ".join(os.path.basename(p) for p in [*stack, real])
                raise CnncImportError(f"import cycle: {chain}").at(imp.pos)
            if real in loaded:
                continue
            if len(stack) >= MAX_IMPORT_DEPTH:
                raise CnncImportError(
                    f"imports nested more than {MAX_IMPORT_DEPTH} files deep").at(imp.pos)
            visit(_import_text(imp, target), target, [*stack, real])

    try:
        visit(text, file, [os.path.realpath(file) if os.path.exists(file) else file])
        _check_program(program)
    except CnncError as err:
        raise with_source_line(err, program.sources) from None
    return program


def with_source_line(err: CnncError, sources: dict[str, str]) -> CnncError:
    """Give `err` the line it points at from the text that was parsed (not the file
    read again, which may have changed or be anything by now)."""
    if err.source_line is None and err.line is not None and err.file in sources:
        lines = source_lines(sources[err.file])
        if 0 < err.line <= len(lines):
            err.source_line = lines[err.line - 1]
    return err


# ---------------------------------------------------------------- checks without shapes
def _walk_calls(body):
    for stage in body:
        if isinstance(stage, Call):
            yield stage
        else:
            for branch in stage.branches:
                yield from _walk_calls(branch)


def _walk_names(expr: Expr):
    if isinstance(expr, Name):
        yield expr
    elif isinstance(expr, BinOp):
        yield from _walk_names(expr.left)
        yield from _walk_names(expr.right)
    elif isinstance(expr, Neg):
        yield from _walk_names(expr.operand)


def _check_names(body, params: set[str], program: Program):
    known = [*LAYERS, *program.blocks]
    for call in _walk_calls(body):
        if call.kind not in LAYERS and call.kind not in program.blocks:
            raise CnncNameError(
                f"unknown layer or block '{abbreviate(call.kind)}'{did_you_mean(call.kind, known)}"
            ).at(call.pos)
        for arg in call.args:
            for name in _walk_names(arg.value):
                if name.id not in params and name.id not in WORDS:
                    hint = did_you_mean(name.id, [*params, *WORDS])
                    where = "block parameter or word" if params else "word"
                    raise CnncNameError(f"undefined {where} '{abbreviate(name.id)}'{hint}").at(
                        name.pos)


def _check_program(program: Program):
    for block in program.blocks.values():
        if block.name in LAYERS or block.name in KEYWORDS:
            raise CnncNameError(f"a block may not be named like a layer: '{block.name}'").at(
                block.pos)
        seen: list[str] = []
        has_default = False
        for param in block.params:
            if param.name in WORDS or param.name in LAYERS or param.name in KEYWORDS:
                raise CnncNameError(
                    f"a block parameter may not be named like a word or a layer: '{param.name}'"
                ).at(param.pos)
            if param.name in seen:
                raise CnncNameError(f"parameter '{param.name}' is declared twice").at(param.pos)
            if param.default is None and has_default:
                raise CnncNameError(
                    f"parameter '{param.name}' has no default but follows one that has"
                ).at(param.pos)
            if param.default is not None:
                has_default = True
                for name in _walk_names(param.default):
                    if name.id not in seen and name.id not in WORDS:
                        raise CnncNameError(
                            f"the default of '{param.name}' uses '{name.id}', which is not an "
                            "earlier parameter").at(name.pos)
            seen.append(param.name)
        _check_names(block.body, set(seen), program)
    seen_networks: dict[str, Network] = {}
    for network in [*program.imported_networks, *program.networks]:
        if network.name in seen_networks:
            first = seen_networks[network.name].pos
            raise CnncNameError(
                f"network '{network.name}' is defined twice (first at {first.file}:{first.line})"
            ).at(network.pos)
        seen_networks[network.name] = network
        _check_names(network.body, set(), program)
    _check_recursion(program)


def _check_recursion(program: Program):
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(name: str, path: list[str]):
        state[name] = 1
        for call in _walk_calls(program.blocks[name].body):
            if call.kind not in program.blocks:
                continue
            if len(path) >= MAX_EXPANSION_DEPTH:
                raise CnncValueError(
                    f"blocks nested more than {MAX_EXPANSION_DEPTH} deep: "
                    f"{' -> '.join(path[:3])} -> ... -> {call.kind}").at(call.pos)
            if state.get(call.kind) == 1:
                cycle = " -> ".join([*path[path.index(call.kind):], call.kind]) \
                    if call.kind in path else f"{name} -> {call.kind}"
                raise CnncNameError(f"recursive block: {cycle}").at(call.pos)
            if call.kind not in state:
                visit(call.kind, [*path, call.kind])
        state[name] = 2

    for name in program.blocks:
        if name not in state:
            visit(name, [name])


# ---------------------------------------------------------------- evaluation
def evaluate(expr: Expr, env: dict):
    """Value of an argument expression: int, float, dimension tuple, bool or word."""
    if isinstance(expr, Num):
        return expr.value
    if isinstance(expr, Dim):
        return expr.values
    if isinstance(expr, Name):
        if expr.id in env:
            return env[expr.id]
        if expr.id in ("true", "false"):
            return expr.id == "true"
        return expr.id  # a word; undefined names were rejected by _check_names
    if isinstance(expr, Neg):
        value = evaluate(expr.operand, env)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CnncValueError(f"cannot negate {value!r}").at(expr.pos)
        return -value
    left, right = evaluate(expr.left, env), evaluate(expr.right, env)
    for value in (left, right):
        if isinstance(value, bool) or not isinstance(value, int):
            shown = "x".join(map(str, value)) if isinstance(value, tuple) else value
            raise CnncValueError(f"arithmetic needs integers, got {shown}").at(expr.pos)
    if expr.op == "//" and right == 0:
        raise CnncValueError("division by zero").at(expr.pos)
    result = _ARITHMETIC[expr.op](left, right)
    # Operands are within INT_LIMIT, so one step is at most ~2**62: checking every step
    # keeps every value small however often a block squares its parameter.
    if abs(result) > INT_LIMIT:
        raise CnncValueError(
            f"{left} {expr.op} {right} = {result} is beyond the integer limit {INT_LIMIT}"
        ).at(expr.pos)
    return result


_ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "//": operator.floordiv}


# ---------------------------------------------------------------- expansion
def assign_names(body, reserved: tuple[str, ...] = ()) -> dict[int, str]:
    """§6: the name of every stage of one body, keyed by id(stage).

    Labels give the name; otherwise the kind and its count among the unlabelled
    stages of that kind in this body, counting on through branches in source order.
    """
    order: list[Stage] = []

    def walk(stages):
        for stage in stages:
            order.append(stage)
            if isinstance(stage, Branching):
                for branch in stage.branches:
                    walk(branch)

    walk(body)
    names: dict[int, str] = {}
    counts: dict[str, int] = {}
    for stage in order:
        if stage.label is None:
            counts[stage.kind] = counts.get(stage.kind, 0) + 1
            names[id(stage)] = f"{stage.kind}{counts[stage.kind]}"
    automatic = set(names.values())
    labels: set[str] = set()
    for stage in order:
        if stage.label is None:
            continue
        if stage.label in labels:
            raise CnncNameError(f"label '{stage.label}' is used twice in this body").at(stage.pos)
        if stage.label in reserved:
            raise CnncNameError(f"the label '{stage.label}' is reserved here").at(stage.pos)
        if stage.label in automatic:
            raise CnncNameError(
                f"label '{stage.label}' equals the automatic name of an unlabelled layer in this "
                "body").at(stage.pos)
        labels.add(stage.label)
        names[id(stage)] = stage.label
    return names


class _Expander:
    def __init__(self, program: Program):
        self.program = program
        self.graph = nx.DiGraph()
        self._names: dict[int, dict[int, str]] = {}
        self._depth = 0  # block instances and branches open around the current stage

    def names_of(self, body) -> dict[int, str]:
        key = id(body)
        if key not in self._names:
            self._names[key] = assign_names(body)
        return self._names[key]

    def add_node(self, node_id: str, op: str, inputs: list[str], shape: tuple, pos: Pos,
                 attrs: dict):
        if self.graph.number_of_nodes() > MAX_LAYERS:  # blocks calling blocks grow exponentially
            raise CnncValueError(f"the network expands to more than {MAX_LAYERS:,} layers").at(pos)
        self.graph.add_node(node_id, op=op, name=node_id, inputs=list(inputs), shape=shape,
                            pos=(pos.file, pos.line, pos.column), attrs=attrs)
        for src in dict.fromkeys(inputs):
            self.graph.add_edge(src, node_id)

    def chain(self, body, x: str, prefix: str, env: dict) -> str:
        names = self.names_of(body)
        return self._stages(body, x, prefix, env, names)

    def _stages(self, stages, x: str, prefix: str, env: dict, names) -> str:
        for stage in stages:
            node_id = prefix + names[id(stage)]
            if isinstance(stage, Branching):
                with self._nested(stage):
                    outs = [self._stages(b, x, prefix, env, names) for b in stage.branches]
                shapes = [self.graph.nodes[o]["shape"] for o in outs]
                shape = self._infer(stage.kind, {}, shapes, node_id, stage.pos)
                self.add_node(node_id, stage.kind, outs, shape, stage.pos, {})
            elif stage.kind in LAYERS:
                attrs = self._bind(stage, env)
                shape = self._infer(stage.kind, attrs, [self.graph.nodes[x]["shape"]], node_id,
                                    stage.pos)
                self.add_node(node_id, stage.kind, [x], shape, stage.pos, attrs)
            else:
                block = self.program.blocks[stage.kind]
                inner = self._block_env(block, stage, env)
                with self._nested(stage):
                    node_id = self.chain(block.body, x, node_id + ".", inner)
            x = node_id
        return x

    @contextmanager
    def _nested(self, stage: Stage):
        """Bound the nesting of blocks and branches, so expansion's recursion is bounded."""
        if self._depth >= MAX_EXPANSION_DEPTH:
            raise CnncValueError(
                f"blocks and branches nested more than {MAX_EXPANSION_DEPTH} deep").at(stage.pos)
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def _infer(self, kind, attrs, shapes, node_id, pos) -> tuple:
        try:
            return infer_shape(kind, attrs, shapes)
        except CnncError as err:
            err.message = f"layer '{node_id}': {err.message}"
            raise err.at(pos) from None

    def _bind(self, call: Call, env: dict) -> dict:
        positional, keywords = self._arguments(call, env)
        try:
            return bind_arguments(call.kind, positional, keywords)
        except CnncError as err:
            raise err.at(call.pos) from None

    def _arguments(self, call: Call, env: dict):
        positional, keywords = [], {}
        for arg in call.args:
            value = evaluate(arg.value, env)
            if arg.key is None:
                if keywords:
                    raise CnncValueError(
                        "a positional argument may not follow a keyword argument").at(arg.pos)
                positional.append((value, arg.pos))
            elif arg.key in keywords:
                raise CnncValueError(f"argument '{arg.key}' given twice").at(arg.pos)
            else:
                keywords[arg.key] = (value, arg.value.pos, arg.pos)
        return positional, keywords

    def _block_env(self, block: Block, call: Call, env: dict) -> dict:
        positional, keywords = self._arguments(call, env)
        params = [p.name for p in block.params]
        if len(positional) > len(params):
            raise CnncValueError(
                f"block '{block.name}' takes {len(params)} argument"
                f"{'s' if len(params) != 1 else ''}, got {len(positional)}"
            ).at(positional[len(params)][1])
        inner: dict = {}
        for (value, _), name in zip(positional, params, strict=False):
            inner[name] = value
        for key, (value, _, pos) in keywords.items():
            if key not in params:
                raise CnncNameError(
                    f"block '{block.name}' has no parameter '{key}'{did_you_mean(key, params)}"
                ).at(pos)
            if key in inner:
                raise CnncValueError(f"argument '{key}' given twice").at(pos)
            inner[key] = value
        for param in block.params:
            if param.name not in inner:
                if param.default is None:
                    raise CnncValueError(
                        f"block '{block.name}' needs the argument '{param.name}'").at(call.pos)
                inner[param.name] = evaluate(param.default, inner)
        return inner


def select_network(program: Program, network: str | None) -> Network:
    if not program.networks and (network is None or not program.imported_networks):
        raise CnncNameError("no network in this file", file=program.file)
    if network is None:
        return program.networks[-1]
    for net in [*program.networks, *program.imported_networks]:
        if net.name == network:
            return net
    names = [n.name for n in [*program.networks, *program.imported_networks]]
    raise CnncNameError(
        f"no network '{network}' in this file{did_you_mean(network, names)}; "
        f"networks: {', '.join(names)}", file=program.file)


def build_graph(program: Program, network: str | None = None) -> nx.DiGraph:
    """Expand one network into its dataflow graph with names and shapes."""
    net = select_network(program, network)
    expander = _Expander(program)
    assign_names(net.body, reserved=("input",))  # the input node's id
    expander.add_node("input", "input", [], net.input_shape, net.pos, {})
    try:
        output = expander.chain(net.body, "input", "", {})
    except CnncError as err:
        raise with_source_line(err, program.sources) from None
    except RecursionError:  # not expected: nesting is bounded (MAX_NESTING, MAX_EXPANSION_DEPTH)
        raise CnncValueError("network nested too deeply").at(net.pos) from None
    graph = expander.graph
    graph.graph.update(name=net.name, input="input", output=output,
                       input_shape=tuple(net.input_shape))
    return graph


def schedule(graph: nx.DiGraph) -> list[str]:
    """Node ids in the order the runtime runs them: source order, as dependencies allow."""
    index = {n: i for i, n in enumerate(graph.nodes)}
    return list(nx.lexicographical_topological_sort(graph, key=index.__getitem__))


def parameters(graph: nx.DiGraph) -> dict[str, tuple[tuple, Param]]:
    """{'conv1.weight': (shape, its Param spec), ...} in source order (§6)."""
    found = {}
    for _, data in graph.nodes(data=True):
        shape_in = graph.nodes[data["inputs"][0]]["shape"] if data["inputs"] else None
        spec = OPS[data["op"]]
        for param, shape in param_shapes(data["op"], data["attrs"], shape_in).items():
            found[f"{data['name']}.{param}"] = (shape, spec.param(param))
    return found


def parameter_shapes(graph: nx.DiGraph) -> dict[str, tuple]:
    """{'conv1.weight': shape, ...} in source order (§6)."""
    return {key: shape for key, (shape, _) in parameters(graph).items()}
