"""One jitted loop that runs a whole lowered network, so no Python runs between kernels.

The runtime encodes each kernel call of a plan as an opcode, a row of integers and a row
of floats (``encode_steps``); ``run_plan`` walks the rows and calls the kernels. It removes
the ~1-1.5 us that each Python-to-Numba dispatch of a ~16-argument kernel costs, which is
most of the run time of small networks (LeNet-5 has 8 kernel calls in ~50 us).

``run_plan`` calls each kernel through its address (``decode.call_compiled``), given in
the table ``fns`` (``kernel_addresses``), not as a dispatcher: a jitted caller of a
dispatcher is linked with the callee's code and generates its machine code again, which
made compiling an interpreter cost as much as compiling all its kernels once more (14 s
of GoogLeNet's cold compile). So ``run_plan`` has one signature and one small compiled
body for every network, compiled once per machine (~7 s) and cached on disk; a network
compiles only its own kernels, each for the one signature ``kernel_types`` gives it.

``SIGNATURES`` declares, once, every kernel the interpreter calls and the kinds of its
arguments in order (``ARG_KINDS``: how each kind is laid out in the rows, read back and
typed). Everything else comes from it: a kernel's opcode is its index in the table,
``encode_steps`` lays out the rows, and ``generate_source`` writes the body of
``run_plan``. Numba cannot loop over calls of different signatures, so that body is
Python source, one branch per kernel; it is checked in as ``_interpreter_generated.py``
because Numba's disk cache only keeps functions defined in real files. After changing the
table, regenerate it with ``python -m cnnc.kernels.interpreter``: until then importing
this module refuses the stale file, and tests/test_interpreter_table.py fails.
"""

from __future__ import annotations

import functools
import inspect
import operator
import sys
from pathlib import Path
from typing import NamedTuple

import numba
import numpy as np

from .conv import conv2d
from .decode import TYPES
from .dense import dense
from .depthwise import conv2d_depthwise
from .elementwise import activation, combine, softmax
from .fastconv import conv2d_packed
from .jit import native_address
from .lanesconv import conv2d_lanes
from .layout import copy_channels, pad2d, shuffle_channels
from .norm import batchnorm, lrn
from .pool import global_avgpool, global_maxpool, pool2d
from .winograd import conv2d_winograd


class Kind(NamedTuple):
    """How one kind of argument is encoded, decoded and typed."""

    ints: int  # positions it takes in the step's int row
    floats: int  # positions it takes in the step's float row
    decode: str  # run_plan's expression for it; {i}: its first int, {f}: its float position
    letter: str  # its letter in decode.TYPES: the Numba type of that expression


ARG_KINDS = {
    "tensor": Kind(4, 0, "view(arena, x, n, r, {i})", "T"),  # (start, channels, h, w)
    "int": Kind(1, 0, "r[{i}]", "I"),
    "float": Kind(0, 1, "f[{f}]", "F"),
    "vector": Kind(2, 0, "vector(params, r, {i})", "V"),  # (offset, size) in params
    "matrix": Kind(3, 0, "matrix(params, r, {i})", "M"),  # (offset, rows, columns)
    "tensor4": Kind(5, 0, "tensor4(params, r, {i})", "P"),  # (offset, d0, d1, d2, d3)
}
T, I, F = "tensor", "int", "float"  # noqa: E741 - one letter keeps each table row short

# An opcode is a kernel's index here.
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
                     F, T, I, I)),
    (conv2d_winograd, (T, I, I, T, I, I, "vector", "vector", I, I, I, I, F, T, I)),
    (conv2d_lanes, (T, I, I, T, I, I, "vector", "vector", I, I, I, I, I, I, I, I, I, I, F,
                    F, T, I, I)),
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


def generate_source() -> str:
    """The text of ``_interpreter_generated.py``: ``run_plan`` with one branch per kernel."""
    lines = [
        '"""Generated by ``python -m cnnc.kernels.interpreter`` from its SIGNATURES table:',
        "do not edit (see cnnc/kernels/interpreter.py).",
        '"""',
        "",
        "from .decode import call_compiled, copy_rows, matrix, tensor4, vector, view",
        "from .jit import cached_njit",
        "from .sched import clock_ns",
        "",
        "TABLE = (",
        *[line for name, kinds in table() for line in _wrap(
            f"    ({name!r}, (", [repr(k) for k in kinds], " " * 8, ")),")],
        ")",
        "",
        "",
        '@cached_njit(error_model="numpy")',
        "def run_plan(n, arena, params, ops, ints, floats, fns, stamps, x, y, io):",
        '    """Run every encoded kernel call in order on batch size ``n``; ``fns[op]`` is the',
        "    address of kernel ``op``. With ``stamps.size == ops.size + 1`` it also records the",
        "    monotonic clock (ns) before the first call in ``stamps[0]`` and after call ``s`` in",
        "    ``stamps[s + 1]`` (the profile of `cnnc bench --profile`).",
        "",
        "    First the input ``x`` (flat, ``n`` images) is copied into the arena, image ``b`` to",
        "    ``arena[io[0] + b*io[1]:]``, unless ``io[0] < 0``: then the steps read it where it",
        "    is (tensors of start -1). Last the output, image ``b`` from ``arena[io[2] +",
        "    b*io[3]:]``, to ``y`` (flat). An empty ``x`` or ``y`` is not copied (``step_times``",
        "    runs on the input left in the arena, or read in place). ``io[4]`` is 0, the key of",
        '    ``copy_rows``."""',
        "    if x.size > 0 and io[0] >= 0:",
        "        copy_rows(arena, io[0], io[1], x, 0, x.size // n, n, x.size // n, io[4])",
        "    timed = stamps.size == ops.size + 1",
        "    if timed:",
        "        stamps[0] = clock_ns()",
        "    for s in range(ops.size):",
        "        op = ops[s]",
        "        if op < 0 or op >= fns.size or fns[op] == 0:  # never call address 0",
        '            raise ValueError("run_plan: a step of an unknown or uncompiled kernel")',
        "        r = ints[s]",
        "        f = floats[s]",
    ]
    for code, (kernel, kinds) in enumerate(SIGNATURES):
        names = list(inspect.signature(kernel.py_func).parameters)
        if len(names) != len(kinds):
            raise TypeError(f"the table gives {kernel.__name__} {len(kinds)} arguments, "
                            f"but it takes {len(names)}")
        test = ("else:" if 0 < code == len(SIGNATURES) - 1 else
                f"{'if' if code == 0 else 'elif'} op == {code}:")
        name = kernel.__name__
        lines.append(f"        {test}")
        lines += _wrap(f"            # {name}(", names, "            #" + " " * len(name), ")")
        head = f"            call_compiled(fns[{code}], {layout(code)!r}, ("
        lines += _wrap(head, _decoded(kinds), " " * 16, "))")
    lines += ["        if timed:", "            stamps[s + 1] = clock_ns()",
              "    if y.size > 0:",
              "        copy_rows(y, 0, y.size // n, arena, io[2], io[3], n, y.size // n, io[4])"]
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
        np.zeros((1, INTS_PER_STEP), np.int64), np.zeros((1, FLOATS_PER_STEP), np.float64),
        np.zeros(len(SIGNATURES), np.int64), np.zeros(1, np.int64),
        np.zeros(1, np.float32), np.zeros(1, np.float32), np.zeros(5, np.int64)))


def layout(code: int) -> str:
    """Kernel ``code``'s argument kinds, a letter each (``decode.TYPES``)."""
    return "".join(ARG_KINDS[kind].letter for kind in SIGNATURES[code][1])


@functools.cache
def kernel_types(code: int) -> tuple:
    """The one signature kernel ``code`` is compiled for: the types ``run_plan`` calls it
    with (``ARG_KINDS``), which are also those of the arrays and numbers a plan binds."""
    return tuple(TYPES[letter] for letter in layout(code))


INTERPRETER = -1  # compile_kernel's code for run_plan


def compile_kernel(code: int) -> None:
    """Compile kernel ``code`` for its signature (``INTERPRETER``: run_plan), or load it
    from the disk cache."""
    if code == INTERPRETER:
        run_plan.compile(interpreter_types())
    else:
        SIGNATURES[code][0].compile(kernel_types(code))


def kernel_address(code: int) -> int:
    """The address of kernel ``code``'s compiled code (compiled or loaded first), which
    stays valid while the process runs (its dispatcher keeps the code)."""
    compile_kernel(code)
    kernel = SIGNATURES[code][0]
    compiled = kernel.overloads[kernel_types(code)]
    if compiled.signature.return_type != numba.types.none:
        raise TypeError(f"{kernel.__name__} returns {compiled.signature.return_type}; "
                        "run_plan calls kernels that return nothing")
    return native_address(compiled)


def kernel_addresses(codes) -> np.ndarray:
    """``run_plan``'s ``fns``: the address of each kernel of ``codes``, 0 for the others
    (a plan never calls them)."""
    fns = np.zeros(len(SIGNATURES), np.int64)
    for code in codes:
        fns[code] = kernel_address(code)
    return fns


if __name__ == "__main__":  # regenerate: the stale module is not imported
    GENERATED.write_text(generate_source(), encoding="utf-8")
    print(f"wrote {GENERATED}", file=sys.stderr)
else:
    from ._interpreter_generated import TABLE as _GENERATED_TABLE
    from ._interpreter_generated import run_plan

    if _GENERATED_TABLE != table():
        raise ImportError(f"{GENERATED} was generated from another SIGNATURES table; "
                          f"regenerate it with `python -m cnnc.kernels.interpreter`")
