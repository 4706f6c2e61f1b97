"""The `cnnc` command line (LANGUAGE.md §9).

Every user mistake is a CnncError, printed as `FILE:LINE:COL: error: ...` with
the source line and a caret; the exit status is then 1 and no traceback shows.
"""

from __future__ import annotations

import argparse
import sys

from .errors import CnncError, format_error


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would exit 2 with its own format
        raise CnncError(f"{message} (see '{self.prog} --help')")


def _add_network(p):
    p.add_argument("--network", metavar="NAME", help="the network to use, where the file has several")


def _opt_flags(p):
    level = p.add_mutually_exclusive_group()
    for n in (0, 1, 2):
        level.add_argument(f"-O{n}", dest="opt_level", action="store_const", const=n,
                           help=f"optimisation level {n}" + (" (default)" if n == 2 else ""))
    p.set_defaults(opt_level=2)
    p.add_argument("--disable-pass", action="append", default=[], metavar="NAME",
                   help="switch one optimiser pass off (may be repeated)")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnc", description="Compile convolutional network descriptions.")
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
    p.add_argument("--weights", metavar="NPZ")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dump-dir", metavar="DIR", help="write the graph after every pass here")
    _add_network(p)
    _opt_flags(p)

    p = sub.add_parser("run", help="run a .cnn or .cnnc model on an input")
    p.add_argument("model")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", metavar="NPY")
    src.add_argument("--batch", type=int, default=None, metavar="N")
    p.add_argument("-o", "--output", metavar="NPY")
    p.add_argument("--weights", metavar="NPZ")
    p.add_argument("--seed", type=int, default=0)
    _add_network(p)
    _opt_flags(p)

    p = sub.add_parser("verify", help="check that every optimiser pass keeps the numbers")
    p.add_argument("model")
    p.add_argument("--weights", metavar="NPZ")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--tolerance", type=float, default=1e-4)
    _add_network(p)

    p = sub.add_parser("bench", help="time a model: latency, throughput, GFLOP/s")
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--profile", action="store_true", help="per-layer time table")
    _add_network(p)
    _opt_flags(p)

    from .predict.options import add_predict_arguments  # §13; its types check the values
    add_predict_arguments(sub.add_parser(
        "predict", help="predict over files and folders of arrays and images, on Dask"))
    return parser


def _load_graph(args):
    from .graph import build_graph, load_program
    program = load_program(args.model)
    return build_graph(program, args.network)


def cmd_check(args) -> int:
    graph = _load_graph(args)
    out = graph.nodes[graph.graph["output"]]["shape"]
    print(f"{args.model}: network {graph.graph['name']} is well formed; "
          f"input {'x'.join(map(str, graph.graph['input_shape']))}, "
          f"output {'x'.join(map(str, out))}, {graph.number_of_nodes() - 1} layers")
    return 0


def cmd_summary(args) -> int:
    from .report import summary_text
    graph = _load_graph(args)
    from .passes import memory_report
    sys.stdout.write(summary_text(graph, memory_report(graph)))
    return 0


def _write_output(text: str, path: str | None):
    if path is None:
        sys.stdout.write(text)
        return
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as err:
        raise CnncError(f"cannot write '{path}': {err.strerror}") from None
    print(f"wrote {path}", file=sys.stderr)


def cmd_dump(args) -> int:
    from .report import DUMPERS
    graph = _load_graph(args)
    if args.stage == "optimized":
        from .passes import optimize
        graph = optimize(graph, level=args.opt_level, disabled=args.disable_pass)
    _write_output(DUMPERS[args.format](graph), args.output)
    return 0


COMMANDS = {"check": cmd_check, "summary": cmd_summary, "dump": cmd_dump}


def _command(name: str):
    if name in COMMANDS:
        return COMMANDS[name]
    if name == "predict":
        from .predict.run import cmd_predict
        return cmd_predict
    from . import commands  # compile, run, verify, bench: they need the runtime
    return getattr(commands, f"cmd_{name}")


def main(argv: list[str] | None = None) -> int:
    try:
        args = make_parser().parse_args(argv)
        return _command(args.command)(args)
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
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
