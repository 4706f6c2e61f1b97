"""The commands that need the runtime: compile, run, verify, bench."""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

from .cli_common import (
    UsageError,
    load_artifact,
    load_graphs,
    model_kind,
    output_file,
    refuse_special_output,
)
from .errors import CnncError, CnncInputError
from .ops import format_shape
from .weights import npy_header


def _compile(args):
    """The Network of the model named on the command line, with its --weights."""
    from .compiler import compile_file, compile_source
    weights = getattr(args, "weights", None)
    strict = not getattr(args, "allow_missing", False)
    kind = model_kind(args.model)
    if kind == "onnx":
        from .onnx import import_onnx
        text, imported = import_onnx(args.model)
        net = compile_source(text, network=args.network, weights=imported, file=args.model,
                             opt_level=getattr(args, "opt_level", 2),
                             disabled_passes=getattr(args, "disable_pass", ()),
                             max_memory=getattr(args, "max_memory", None))
        if weights:
            net.load_weights(weights, strict=strict)
        return net
    if kind == "cnnc":
        net = load_artifact(args.model, args.network, getattr(args, "max_memory", None))
        if weights:
            net.load_weights(weights, strict=strict)
        return net
    return compile_file(args.model, network=args.network, weights=weights, strict=strict,
                        seed=getattr(args, "seed", 0), opt_level=getattr(args, "opt_level", 2),
                        disabled_passes=getattr(args, "disable_pass", ()),
                        dump_dir=getattr(args, "dump_dir", None),
                        max_memory=getattr(args, "max_memory", None))


def cmd_compile(args) -> int:
    start = time.perf_counter()
    out = args.output or os.path.splitext(args.model)[0] + ".cnnc"
    # the artifact is written beside its target and renamed over it: that would put a
    # regular file in place of /dev/null, so a target that is no regular file is refused
    if not refuse_special_output(out):
        raise CnncError(f"cannot write '{out}': a .cnnc artifact is written to a regular "
                        f"file, and this is a device or a pipe")
    net = _compile(args)
    net.save(out)
    # trainable parameters, counted as cnnc summary and PyTorch count them
    n_params = sum(v.size for k, v in net._params.items()
                   if k.endswith((".weight", ".bias")))
    print(f"wrote {out}")
    print(f"  network {net.name}: input {format_shape(net.input_shape)}, "
          f"output {format_shape(net.output_shape)}")
    print(f"  {n_params:,} parameters, {net.graph.number_of_nodes() - 1} layers after "
          f"-O{net.opt_level}, {len(net._plan.steps)} kernel calls")
    print(f"  compiled in {time.perf_counter() - start:.2f} s")
    return 0


def _read_input(path: str) -> np.ndarray:
    """The array of an .npy file. Its magic and header are checked first: np.load would
    take any other file for a pickle, and would allocate whatever the header claims."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
            if magic != b"\x93NUMPY":
                what = " but an .npz archive" if magic.startswith(b"PK") else ""
                raise CnncInputError(f"not a .npy array{what} (the input is one array "
                                     f"written with numpy.save)", file=path)
            fh.seek(0)
            shape, dtype = npy_header(fh)
            if dtype.hasobject:
                raise CnncInputError("the input holds pickled objects, which cnnc never "
                                     "loads", file=path)
            size = os.fstat(fh.fileno()).st_size - fh.tell()
            if math.prod(shape) * dtype.itemsize > size:
                raise CnncInputError(f"the input is truncated: its header says shape "
                                     f"{shape} of {dtype}, but the file is shorter",
                                     file=path)
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
    except FileNotFoundError:
        raise CnncInputError("no such input file", file=path) from None
    except (OSError, ValueError, EOFError, SyntaxError) as err:
        reason = (getattr(err, "strerror", None) or str(err)).splitlines()[0] or type(err).__name__
        raise CnncInputError(f"cannot read the input: {reason}", file=path) from None


def cmd_run(args) -> int:
    net = _compile(args)
    if args.input:
        x = _read_input(args.input)
        if x.ndim == len(net.input_shape):  # one image: add the batch axis
            x = x[None]
    else:
        x = np.random.default_rng(args.seed).standard_normal((args.batch, *net.input_shape),
                                                              dtype=np.float32)
    start = time.perf_counter()
    y = net(x)
    elapsed = time.perf_counter() - start
    print(f"output {format_shape(y.shape)} in {elapsed * 1e3:.2f} ms")
    if net.graph.nodes[net.graph.graph["output"]]["op"] == "softmax" and y.ndim == 2:
        for i, row in enumerate(y[:16]):
            top = np.argsort(-row)[:5]
            print(f"  sample {i}: " + "  ".join(f"{c}:{row[c]:.4f}" for c in top))
        if len(y) > 16:
            print(f"  ... {len(y) - 16} more samples")
    if args.output:
        with output_file(args.output, binary=True) as fh:  # np.save(name) would add ".npy"
            np.save(fh, y)
        print(f"wrote {args.output}")
    return 0


def cmd_bench(args) -> int:
    import numba
    previous = numba.get_num_threads()
    if args.threads is not None:
        if args.threads > numba.config.NUMBA_NUM_THREADS:
            raise UsageError(f"argument --threads: at most {numba.config.NUMBA_NUM_THREADS} "
                             f"on this machine, got {args.threads}", "cnnc bench")
        numba.set_num_threads(args.threads)
    try:
        return _bench(args)
    finally:
        numba.set_num_threads(previous)


def _bench(args) -> int:
    import numba

    from .report import layer_stats
    net = _compile(args)
    macs = sum(r["macs"] for r in layer_stats(net._source_graph))
    x = np.random.default_rng(0).standard_normal((args.batch, *net.input_shape), dtype=np.float32)
    for _ in range(3):
        net(x)
    times = []
    single = net._plan.calls_on_one_thread(args.batch)
    for _ in range(args.repeat):
        t = time.perf_counter()
        net(x)
        times.append(time.perf_counter() - t)
    single = net._plan.calls_on_one_thread(args.batch) - single
    med = float(np.median(times))
    threads = numba.get_num_threads()
    print(f"{net.name}: batch {args.batch}, {threads} threads, {args.repeat} runs")
    if single > 0:  # runtime.ThreadChoice found one thread faster, or probed it
        print(f"  {single} of the runs on one thread: faster than {threads} lately, or a "
              f"probe of it (CNNC_ADAPTIVE_THREADS=0 keeps {threads})")
    print(f"  latency  {med * 1e3:.3f} ms (median; min {min(times) * 1e3:.3f} ms)")
    print(f"  throughput  {args.batch / med:.1f} images/s")
    print(f"  {2 * macs * args.batch / med / 1e9:.1f} GFLOP/s ({2 * macs / 1e9:.3f} GFLOP/image)")
    if args.profile:
        sys.stdout.write(profile_table(net, x, args.repeat))
    return 0


def profile_table(net, x: np.ndarray, repeat: int) -> str:
    """Per-layer median time of each kernel call, slowest first, with the GFLOP/s of the
    convolutions and dense layers of the optimised graph. The interpreter times its own
    steps as the network runs (`Plan.step_times`): each layer with its input where the
    last one left it in the caches and the worker threads still spinning from it."""
    med = np.median(net._plan.step_times(x, repeat), axis=0)
    by_node: dict[str, list] = {}
    for step, t in zip(net._plan.steps, med, strict=True):
        entry = by_node.setdefault(step.node, [step.op, 0.0])
        entry[1] += t
    total = sum(t for _, t in by_node.values())
    from .report import layer_stats
    macs = {row["name"]: row["macs"] for row in layer_stats(net.graph)}
    batch = x.shape[0]
    lines = ["", f"{'layer':<28} {'op':<10} {'ms':>9} {'share':>7} {'GFLOP/s':>8}"]
    for node, (op, t) in sorted(by_node.items(), key=lambda kv: -kv[1][1]):
        rate = f"{2 * macs[node] * batch / t / 1e9:8.1f}" if macs.get(node) else ""
        lines.append(f"{node:<28} {op:<10} {t * 1e3:9.3f} {100 * t / total:6.1f}% {rate}")
    lines.append(f"{'total':<28} {'':<10} {total * 1e3:9.3f}")
    return "\n".join(lines) + "\n"


def cmd_verify(args) -> int:
    """Run -O0 and every prefix of the pass pipeline on one input; name the first bad pass."""
    from .compiler import verify_passes
    from .graph import parameter_shapes
    from .memory import check_parameter_memory
    from .weights import check_weights, init_parameters
    graph, net = load_graphs(args)
    check_parameter_memory(graph, parameter_shapes(graph), args.max_memory)
    params = init_parameters(graph, args.seed) if net is None else net.parameters()
    if args.weights:
        params = check_weights(graph, args.weights, params, strict=not args.allow_missing)
    result = verify_passes(graph, params, batch=args.batch, seed=args.seed, tol=args.tolerance)
    print(f"{args.model}: network {graph.graph['name']}, batch {args.batch}, "
          f"tolerance {args.tolerance:g} (max |a - b| / max |a|, against -O0)")
    width = max(len(name) for name, _ in result.rows)
    for name, diff in result.rows:
        mark = "ok" if diff <= args.tolerance else "CHANGED"
        print(f"  after {name:<{width}}  {diff:.3e}  {mark}")
    if result.winograd_layers:
        print("  Winograd layers, each alone against the direct kernel (max |a - b| / max |a| "
              "of its output):")
        width = max(len(node) for node, _, _ in result.winograd_layers)
        for node, m, diff in result.winograd_layers:
            mark = "ok" if diff <= args.tolerance else "CHANGED"
            print(f"    {node:<{width}}  F({m}x{m}, 3x3)  {diff:.3e}  {mark}")
    if result.first_failure is not None:
        print(f"error: pass '{result.first_failure}' changes the result beyond the tolerance",
              file=sys.stderr)
        return 1
    print("every pass keeps the result")
    return 0
