"""The `cnnc` command line (LANGUAGE.md §9).

Every user mistake is a CnncError, printed as `FILE:LINE:COL: error: ...` with
the source line and a caret; the exit status is then 1 (2 for a command line that
argparse refuses, as argparse itself does) and no traceback shows.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from . import __version__
from .cli_common import (
    UsageError,
    load_artifact,
    load_graphs,
    model_kind,
    onnx_source,
    output_file,
    refuse_special_output,
)
from .diagnostics import format_error
from .errors import CnncError


class OutputError(CnncError):
    """Standard output cannot be written (a full disk, /dev/full, a closed descriptor)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print its usage and exit itself
        raise UsageError(f"{message} (see '{self.prog} --help')", self.prog)


# ---------------------------------------------------------------- option values
def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seed_value(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"the seed must be a non-negative integer, got {value}")
    return value


def tolerance_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value) or value < 0:  # nan would pass every comparison
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def memory_size(text: str) -> int:
    from .memory import parse_size
    try:
        return parse_size(text)
    except CnncError as err:
        raise argparse.ArgumentTypeError(err.message) from None


def _memory_flag(p):
    p.add_argument("--max-memory", type=memory_size, default=None, metavar="SIZE",
                   help="refuse work that needs more memory than this (e.g. 8G; default: "
                        "the memory available)")


def _add_network(p):
    p.add_argument("--network", metavar="NAME",
                   help="the network to use, where the file has several")


def _opt_flags(p):
    level = p.add_mutually_exclusive_group()
    for n in (0, 1, 2):
        level.add_argument(f"-O{n}", dest="opt_level", action="store_const", const=n,
                           help=f"optimisation level {n}" + (" (default)" if n == 2 else ""))
    p.set_defaults(opt_level=2)
    p.add_argument("--disable-pass", action="append", default=[], metavar="NAME",
                   help="switch one optimiser pass off (may be repeated)")
    p.add_argument("--no-winograd", dest="disable_pass", action="append_const",
                   const="winograd", help="run every conv on the direct kernels (the same "
                                          "as --disable-pass winograd)")


def _weight_flags(p):
    p.add_argument("--weights", metavar="NPZ")
    p.add_argument("--allow-missing", action="store_true",
                   help="parameters the weights leave out keep their seeded values")
    p.add_argument("--seed", type=seed_value, default=0)


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnc", description="Compile convolutional network descriptions.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("check", help="parse and shape-check a .cnn file")
    p.add_argument("model")
    _add_network(p)

    p = sub.add_parser("summary", help="per layer: shape, params, MACs, receptive field")
    p.add_argument("model")
    _add_network(p)

    p = sub.add_parser("dump", help="write the graph as text, DOT or JSON")
    p.add_argument("model")
    _add_network(p)
    p.add_argument("--stage", choices=("parsed", "optimized"), default="parsed")
    p.add_argument("--format", choices=("text", "dot", "json"), default="text")
    p.add_argument("-o", "--output", metavar="FILE")
    _opt_flags(p)

    p = sub.add_parser("compile", help="compile a .cnn file to a .cnnc artifact")
    p.add_argument("model")
    p.add_argument("-o", "--output", metavar="FILE")
    _weight_flags(p)
    p.add_argument("--dump-dir", metavar="DIR", help="write the graph after every pass here")
    _memory_flag(p)
    _add_network(p)
    _opt_flags(p)

    p = sub.add_parser("run", help="run a .cnn or .cnnc model on an input")
    p.add_argument("model")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", metavar="NPY")
    src.add_argument("--batch", type=positive_int, default=1, metavar="N")
    p.add_argument("-o", "--output", metavar="NPY")
    _weight_flags(p)
    _memory_flag(p)
    _add_network(p)
    _opt_flags(p)

    p = sub.add_parser("verify", help="check that every optimiser pass keeps the numbers")
    p.add_argument("model")
    _weight_flags(p)
    p.add_argument("--batch", type=positive_int, default=2)
    p.add_argument("--tolerance", type=tolerance_value, default=1e-4)
    _memory_flag(p)
    _add_network(p)

    p = sub.add_parser("bench", help="time a model: latency, throughput, GFLOP/s")
    p.add_argument("model")
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--repeat", type=positive_int, default=20)
    p.add_argument("--profile", action="store_true", help="per-layer time table")
    _memory_flag(p)
    _add_network(p)
    _opt_flags(p)

    p = sub.add_parser("import", help="import an ONNX model as a .cnn file and its .npz weights")
    p.add_argument("model")
    p.add_argument("-o", "--output", metavar="CNN", help="the .cnn file (default: beside the "
                   "model); the weights go beside it, as .npz")

    p = sub.add_parser("export", help="export a .cnn or .cnnc model to ONNX")
    p.add_argument("model")
    p.add_argument("-o", "--output", metavar="ONNX")
    p.add_argument("--opset", type=positive_int, default=17)
    _weight_flags(p)
    _add_network(p)

    from .predict.options import add_predict_arguments  # §13; its types check the values
    add_predict_arguments(sub.add_parser(
        "predict", help="predict over files and folders of arrays and images, on Dask"))
    return parser


# ---------------------------------------------------------------- commands
def cmd_check(args) -> int:
    from .checks import memory_report
    graph, _ = load_graphs(args)
    out = graph.nodes[graph.graph["output"]]["shape"]
    print(f"{args.model}: network {graph.graph['name']} is well formed; "
          f"input {'x'.join(map(str, graph.graph['input_shape']))}, "
          f"output {'x'.join(map(str, out))}, {graph.number_of_nodes() - 1} layers")
    print("\n".join(memory_report(graph)))
    return 0


def cmd_summary(args) -> int:
    from .checks import memory_report
    from .report import summary_text
    graph, _ = load_graphs(args)
    sys.stdout.write(summary_text(graph, memory_report(graph)))
    return 0


def _write_output(text: str, path: str | None):
    if path is None:
        sys.stdout.write(text)
        return
    with output_file(path) as fh:
        fh.write(text)
    print(f"wrote {path}", file=sys.stderr)


def cmd_dump(args) -> int:
    from .report import DUMPERS
    graph, net = load_graphs(args)
    if args.stage == "optimized":
        if net is not None:
            graph = net.graph  # what the artifact runs, as it was optimised when compiled
        else:
            from .passes import optimize
            graph = optimize(graph, level=args.opt_level, disabled=args.disable_pass)
    _write_output(DUMPERS[args.format](graph), args.output)
    return 0


def cmd_import(args) -> int:
    import numpy as np
    text, weights, _ = onnx_source(args.model)
    out = args.output or os.path.splitext(args.model)[0] + ".cnn"
    npz = os.path.splitext(out)[0] + ".npz"
    with output_file(out) as fh:
        fh.write(text)
    with output_file(npz, binary=True) as fh:
        np.savez(fh, **weights)
    print(f"wrote {out} and {npz}")
    return 0


def cmd_export(args) -> int:
    """The source graph and parameters of a .cnn, .cnnc or .onnx model, as ONNX; a .cnn
    is not compiled (parameters come from --weights, or the seeded defaults of §6)."""
    from .graph import build_graph, load_program
    from .onnx.export import export_graph
    from .weights import check_weights, init_parameters
    kind = model_kind(args.model)
    base = None
    if kind == "cnnc":
        net = load_artifact(args.model, args.network)
        graph, base = net._source_graph, net.parameters()
    elif kind == "onnx":
        _, base, program = onnx_source(args.model)
        graph = build_graph(program, args.network)
    else:
        graph = build_graph(load_program(args.model), args.network)
    if base is None:
        base = init_parameters(graph, args.seed)
    if args.weights:
        base = check_weights(graph, args.weights, base, strict=not args.allow_missing)
    out = args.output or os.path.splitext(args.model)[0] + ".onnx"
    refuse_special_output(out)
    export_graph(graph, base, out, opset=args.opset)
    print(f"wrote {out}")
    return 0


COMMANDS = {"check": cmd_check, "summary": cmd_summary, "dump": cmd_dump,
            "import": cmd_import, "export": cmd_export}


def _command(name: str):
    if name in COMMANDS:
        return COMMANDS[name]
    if name == "predict":
        from .predict.run import cmd_predict
        return cmd_predict
    from . import commands  # compile, run, verify, bench: they need the runtime
    return getattr(commands, f"cmd_{name}")


# ---------------------------------------------------------------- standard output
class _GuardedStdout:
    """sys.stdout while a command runs. A write or flush that fails (a full disk,
    /dev/full, a descriptor closed by `>&-`) becomes an OutputError. After a failure on
    the process's real standard output, its descriptor is pointed at /dev/null, so the
    interpreter's flush at exit finds nothing to complain about."""

    def __init__(self, stream):
        self.stream = stream

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def write(self, text: str) -> int:
        return self._guard(lambda: self.stream.write(text))

    def flush(self) -> None:
        self._guard(self.stream.flush)

    def _guard(self, operation):
        if self.stream is None:  # Python starts with sys.stdout None when fd 1 is closed
            raise OutputError("cannot write to standard output: it is closed")
        try:
            return operation()
        except BrokenPipeError:
            self.silence()
            raise
        except (OSError, ValueError) as err:  # ValueError: the stream was closed
            self.silence()
            reason = getattr(err, "strerror", None) or str(err)
            raise OutputError(f"cannot write to standard output: {reason}") from None

    def silence(self) -> None:
        if self.stream is sys.__stdout__ and self.stream is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)


def _parse_and_run(argv: list[str] | None) -> int:
    try:
        args = make_parser().parse_args(argv)
    except SystemExit as done:  # --help and --version; every mistake is a UsageError
        return done.code or 0
    return _command(args.command)(args)


def main(argv: list[str] | None = None) -> int:
    stdout = _GuardedStdout(sys.stdout)
    sys.stdout = stdout
    try:
        code = _parse_and_run(argv)
        stdout.flush()  # a full disk shows here, while errors can still be reported
        return code
    except UsageError as err:
        print(f"{err.prog}: error: {err.message}", file=sys.stderr)
        return 2
    except CnncError as err:
        print(format_error(err), file=sys.stderr)
        return 1
    except MemoryError:
        print("error: out of memory (is the input or a layer very large?)", file=sys.stderr)
        return 1
    except RecursionError:
        print("error: the network is nested too deeply", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cnnc dump ... | head`: the reader has all it wanted
        return 0
    finally:
        sys.stdout = stdout.stream


if __name__ == "__main__":
    # run as `python -m cnnc.cli`, this file is __main__: take main() from cnnc.cli, so
    # that there is one copy of each of its classes
    from cnnc.cli import main as cnnc_main
    sys.exit(cnnc_main())
