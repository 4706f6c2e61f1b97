"""One jitted loop that runs a whole lowered network, so no Python runs between kernels.

The runtime encodes each kernel call of a plan as an opcode, a row of integers and a row
of floats (``encode_steps``); ``run_plan`` walks the rows and calls the kernels with the
same argument types as the Python path, so every kernel keeps its one compiled
signature. ``run_plan`` itself has one signature for every network: it is compiled once,
cached on disk, and compile time does not grow with the network. It removes the ~1-1.5 us
that each Python-to-Numba dispatch of a ~16-argument kernel costs, which is most of the
run time of small networks (LeNet-5 has 8 kernel calls in ~50 us).

``SIGNATURES`` declares, once, every kernel the interpreter calls and the kinds of its
arguments in order (``ARG_KINDS``: how each kind is laid out in the rows and read back).
Everything else comes from it: a kernel's opcode is its index in the table,
``encode_steps`` lays out the rows, and ``generate_source`` writes the body of
``run_plan``. Numba cannot loop over calls of different kernels, so that body is Python
source, one branch per kernel; it is checked in as ``_interpreter_generated.py`` because
Numba's disk cache only keeps functions defined in real files, and a module of the
package is one wherever the package is installed. After changing the table, regenerate
it with ``python -m cnnc.kernels.interpreter``: until then importing this module refuses
the stale file, and tests/test_interpreter_table.py fails.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import operator
import os
import sys
import threading
from pathlib import Path
from typing import NamedTuple

import numba
import numpy as np

from .conv import conv2d
from .dense import dense
from .depthwise import conv2d_depthwise
from .elementwise import activation, combine, softmax
from .fastconv import conv2d_packed
from .jit import cache_directory_of, warm_key
from .layout import copy_channels, pad2d, shuffle_channels
from .norm import batchnorm, lrn
from .pool import global_avgpool, global_maxpool, pool2d
from .winograd import conv2d_winograd


class Kind(NamedTuple):
    """How one kind of argument is encoded and decoded."""

    ints: int  # positions it takes in the step's int row
    floats: int  # positions it takes in the step's float row
    decode: str  # run_plan's expression for it; {i}: its first int, {f}: its float position


ARG_KINDS = {
    "tensor": Kind(4, 0, "view(arena, n, r, {i})"),  # (start, channels, h, w) in the arena
    "int": Kind(1, 0, "r[{i}]"),
    "float": Kind(0, 1, "f[{f}]"),
    "vector": Kind(2, 0, "vector(params, r, {i})"),  # (offset, size) in params
    "matrix": Kind(3, 0, "matrix(params, r, {i})"),  # (offset, rows, columns)
    "tensor4": Kind(5, 0, "tensor4(params, r, {i})"),  # (offset, d0, d1, d2, d3)
}
T, I, F = "tensor", "int", "float"  # noqa: E741 - one letter keeps each table row short

# In the order run_plan tests the opcodes, which is the order a cold compile of run_plan
# compiles the kernels: the small and rare ones first, the conv and pool kernels last, so
# that the helper process of runtime.Plan.warm_up compiles them while the main process
# compiles the network's own kernels, starting with the conv.
SIGNATURES = (
    (combine, (T, I, T, I, I, T, I, I, I, F, F)),
    (copy_channels, (T, I, I, T, I)),
    (shuffle_channels, (T, I, I, T, I, I)),
    (pad2d, (T, I, I, T, I, I, I, F)),
    (lrn, (T, I, I, T, I, I, F, F, F)),
    (batchnorm, (T, I, I, T, I, "vector", "vector")),
    (softmax, (T, I, I, T, I)),
    (activation, (T, I, I, T, I, I, F, F)),
    (dense, (T, I, I, "matrix", "vector", T, I, I, F, F)),
    (global_avgpool, (T, I, I, T, I)),
    (global_maxpool, (T, I, I, T, I)),
    (conv2d, (T, I, I, "tensor4", "vector", T, I, I, I, I, I, I, I, I, I, F, F)),
    (conv2d_depthwise, (T, I, I, "tensor4", "vector", T, I, I, I, I, I, I, I, I, F, F)),
    (pool2d, (T, I, I, T, I, I, I, I, I, I, I, I)),
    (conv2d_packed, (T, I, I, T, I, I, "vector", "vector", I, I, I, I, I, I, I, I, I, I, F,
                     F, T, I)),
    (conv2d_winograd, (T, I, I, T, I, I, "vector", "vector", I, I, I, I, F, T, I)),
)
OPCODES = {kernel: code for code, (kernel, _) in enumerate(SIGNATURES)}
KINDS = dict(SIGNATURES)
INTS_PER_STEP = max(sum(ARG_KINDS[k].ints for k in kinds) for _, kinds in SIGNATURES)
FLOATS_PER_STEP = max(sum(ARG_KINDS[k].floats for k in kinds) for _, kinds in SIGNATURES)


# ---------------------------------------------------------------- encoding
def encode_steps(calls) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(params, ops, ints, floats) for ``run_plan`` from (kernel, args) pairs.

    A tensor argument is given as its ``(start, channels, h, w)`` in the arena (the plan
    knows where its views live); a parameter array is copied into ``params``. Each
    argument must be of the kind the table declares for its position.
    """
    chunks: list[np.ndarray] = []
    ops = np.zeros(len(calls), np.int64)
    ints = np.zeros((len(calls), INTS_PER_STEP), np.int64)
    floats = np.zeros((len(calls), FLOATS_PER_STEP), np.float64)
    offset = 0
    for s, (kernel, args) in enumerate(calls):
        kinds = KINDS[kernel]
        if len(args) != len(kinds):
            raise TypeError(f"{kernel.__name__} takes {len(kinds)} arguments, got {len(args)}")
        row: list[int] = []
        frow: list[float] = []
        for position, (kind, arg) in enumerate(zip(kinds, args, strict=True)):
            if not _is_kind(kind, arg):
                raise TypeError(f"argument {position} of {kernel.__name__} should be a "
                                f"{kind}, got {type(arg).__name__} {arg!r:.60}")
            if kind == "float":
                frow.append(float(arg))
            elif kind == "int":
                row.append(operator.index(arg))
            elif kind == "tensor":
                row += [operator.index(v) for v in arg]
            else:  # a parameter array
                row += [offset, *arg.shape]
                chunks.append(arg.reshape(-1))
                offset += arg.size
        ops[s] = OPCODES[kernel]
        ints[s, : len(row)] = row
        floats[s, : len(frow)] = frow
    params = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(1, np.float32)
    return params, ops, ints, floats


def _is_kind(kind: str, arg) -> bool:
    if kind == "float":
        return isinstance(arg, float)
    if kind == "int":
        return isinstance(arg, (int, np.integer)) and not isinstance(arg, bool)
    if kind == "tensor":
        return isinstance(arg, tuple) and len(arg) == ARG_KINDS[kind].ints
    return isinstance(arg, np.ndarray) and arg.ndim == ARG_KINDS[kind].ints - 1


# ---------------------------------------------------------------- run_plan's source
GENERATED = Path(__file__).resolve().with_name("_interpreter_generated.py")


def table() -> tuple:
    """The table by kernel name, as the generated module records it."""
    return tuple((kernel.__name__, kinds) for kernel, kinds in SIGNATURES)


def generate_source(codes=None) -> str:
    """The text of ``_interpreter_generated.py``: ``run_plan`` with one branch per kernel.

    With ``codes`` (opcodes), the ``run_plan`` of a module outside the package
    (``interpreter_for``) with branches for those kernels only."""
    selected = range(len(SIGNATURES)) if codes is None else sorted(codes)
    package = "." if codes is None else "cnnc.kernels."
    modules: dict[str, list[str]] = {}
    for code in selected:
        kernel = SIGNATURES[code][0]
        modules.setdefault(kernel.py_func.__module__.rsplit(".", 1)[1], []).append(
            kernel.__name__)
    imports = [f"from {package}{m} import {', '.join(sorted(names))}" for m, names in sorted(
        modules.items())]
    lines = [
        '"""Generated by ``python -m cnnc.kernels.interpreter`` from its SIGNATURES table:',
        "do not edit (see cnnc/kernels/interpreter.py).",
        '"""',
        "",
        *sorted(imports + [f"from {package}decode import matrix, tensor4, vector, view",
                           f"from {package}jit import cached_njit"]),
        "",
        "TABLE = (",
        *[line for name, kinds in table() for line in _wrap(
            f"    ({name!r}, (", [repr(k) for k in kinds], " " * 8, ")),")],
        ")",
        "",
        "",
        '@cached_njit(error_model="numpy")',
        "def run_plan(n, arena, params, ops, ints, floats):",
        '    """Run every encoded kernel call in order on batch size ``n``."""',
        "    for s in range(ops.size):",
        "        op = ops[s]",
        "        r = ints[s]",
        "        f = floats[s]",
    ]
    for index, code in enumerate(selected):
        kernel, kinds = SIGNATURES[code]
        names = list(inspect.signature(kernel.py_func).parameters)
        if len(names) != len(kinds):
            raise TypeError(f"the table gives {kernel.__name__} {len(kinds)} arguments, "
                            f"but it takes {len(names)}")
        test = ("else:" if 0 < index == len(selected) - 1 else
                f"{'if' if index == 0 else 'elif'} op == {code}:")
        name = kernel.__name__
        lines.append(f"        {test}")
        lines += _wrap(f"            # {name}(", names, "            #" + " " * len(name), ")")
        lines += _wrap(f"            {name}(", _decoded(kinds), " " * (13 + len(name)), ")")
    return "\n".join(lines) + "\n"


def _decoded(kinds) -> list[str]:
    """run_plan's expression for each argument."""
    exprs, i, f = [], 0, 0
    for kind in kinds:
        k = ARG_KINDS[kind]
        exprs.append(k.decode.format(i=i, f=f))
        i, f = i + k.ints, f + k.floats
    return exprs


def _wrap(head: str, items: list[str], cont: str, close: str, width: int = 99) -> list[str]:
    """`head` then `items` separated by commas, then `close`, in lines of at most `width`
    characters that break between items (continuation lines start with `cont`)."""
    lines, line = [], head
    for k, item in enumerate(items):
        piece = item + (close if k == len(items) - 1 else ",")
        if len(line) + len(piece) + 1 > width and line != head:
            lines.append(line)
            line = cont + piece
        else:
            line += ("" if line == head else " ") + piece
    return lines + [line]


def interpreter_types() -> tuple:
    """The argument types of ``run_plan``: the same for every network."""
    return tuple(numba.typeof(a) for a in (
        1, np.zeros(1, np.float32), np.zeros(1, np.float32), np.zeros(1, np.int64),
        np.zeros((1, INTS_PER_STEP), np.int64), np.zeros((1, FLOATS_PER_STEP), np.float64)))


def compile_interpreter(codes=None) -> None:
    """Compile (or load from the disk cache) the interpreter of ``codes`` (all kernels:
    None) and every kernel it calls."""
    interpreter = run_plan if codes is None else interpreter_for(codes)
    interpreter.compile(interpreter_types())


# ---------------------------------------------------------------- per-network interpreters
# ``run_plan`` calls every kernel, so compiling it compiles them all (a cold compile of a
# network of one relu took 80 s). A plan instead runs the interpreter of just the kernels
# it uses: a module generated for that set of opcodes, written once into the kernels'
# disk-cache directory (Numba caches only functions of real files) and named by a hash of
# its text, so each set is compiled once per machine and target. Where that directory
# cannot be written, plans share the package's full ``run_plan``.
_INTERPRETERS: dict[frozenset, object] = {}


def interpreter_for(codes):
    """The ``run_plan`` dispatcher whose branches are the kernels of ``codes``."""
    key = frozenset(int(c) for c in codes)
    if key not in _INTERPRETERS:
        _INTERPRETERS[key] = _generated_interpreter(key) if key else run_plan
    return _INTERPRETERS[key]


def _generated_interpreter(codes: frozenset):
    if codes == frozenset(range(len(SIGNATURES))):
        return run_plan
    source = generate_source(codes)
    name = "cnnc_plan_" + hashlib.sha256(source.encode()).hexdigest()[:20]
    directory = Path(cache_directory_of(run_plan)) / "cnnc_plans"
    path = directory / f"{name}.py"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # write a temporary file, then link it into place: the module appears whole,
            # and once only (a second writer would change its time stamp, which Numba's
            # cache entries hold)
            tmp = directory / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
            tmp.write_text(source, encoding="utf-8")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        if path.read_text(encoding="utf-8") != source:  # never run a file we did not write
            return run_plan
    except OSError:  # a read-only cache directory
        return run_plan
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # Numba's cache finds a function's globals by module name
    spec.loader.exec_module(module)
    return module.run_plan


def interpreter_is_cached(interpreter) -> bool:
    """Whether ``interpreter`` has been compiled into the disk cache here (a marker beside
    its cache entries, written by ``mark_interpreter_cached``)."""
    try:
        return _marker(interpreter).read_text() == warm_key()
    except OSError:
        return False


def mark_interpreter_cached(interpreter) -> None:
    try:
        _marker(interpreter).write_text(warm_key())
    except OSError:
        pass


def _marker(interpreter) -> Path:
    module = Path(interpreter.py_func.__code__.co_filename).stem
    return Path(cache_directory_of(interpreter)) / f"{module}.cnnc-warm"


if __name__ == "__main__":  # regenerate: the stale module is not imported
    GENERATED.write_text(generate_source(), encoding="utf-8")
    print(f"wrote {GENERATED}", file=sys.stderr)
else:
    from ._interpreter_generated import TABLE as _GENERATED_TABLE
    from ._interpreter_generated import run_plan

    if _GENERATED_TABLE != table():
        raise ImportError(f"{GENERATED} was generated from another SIGNATURES table; "
                          f"regenerate it with `python -m cnnc.kernels.interpreter`")
