"""The commands that need the runtime: compile, run, verify, bench."""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from .errors import CnncError, CnncInputError


def _fmt(shape) -> str:
    return "x".join(str(s) for s in shape)


def _compile(args, path: str | None = None):
    from .runtime import compile_file, load
    path = path or args.model
    if path.endswith(".cnnc"):
        net = load(path)
        if getattr(args, "weights", None):
            net.load_weights(args.weights)
        return net
    return compile_file(path, network=args.network, weights=getattr(args, "weights", None),
                        seed=getattr(args, "seed", 0), opt_level=getattr(args, "opt_level", 2),
                        disabled_passes=getattr(args, "disable_pass", ()),
                        dump_dir=getattr(args, "dump_dir", None))


def cmd_compile(args) -> int:
    start = time.perf_counter()
    net = _compile(args)
    out = args.output or os.path.splitext(args.model)[0] + ".cnnc"
    net.save(out)
    # trainable parameters, counted as cnnc summary and PyTorch count them
    n_params = sum(v.size for k, v in net._params.items()
                   if k.endswith((".weight", ".bias")))
    print(f"wrote {out}")
    print(f"  network {net.name}: input {_fmt(net.input_shape)}, output {_fmt(net.output_shape)}")
    print(f"  {n_params:,} parameters, {net.graph.number_of_nodes() - 1} layers after "
          f"-O{net.opt_level}, {len(net._plan.steps)} kernel calls")
    print(f"  compiled in {time.perf_counter() - start:.2f} s")
    return 0


def _read_input(path: str) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CnncInputError("no such input file", file=path) from None
    except (OSError, ValueError, EOFError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CnncInputError(f"cannot read the input: {reason}", file=path) from None
    if not isinstance(data, np.ndarray):
        data.close()
        raise CnncInputError("the input must be one array in an .npy file (numpy.save), "
                             "not an .npz archive", file=path)
    return data


def cmd_run(args) -> int:
    net = _compile(args)
    if args.input:
        x = _read_input(args.input)
        if x.ndim == len(net.input_shape):  # one image: add the batch axis
            x = x[None]
    else:
        batch = 1 if args.batch is None else args.batch
        if batch < 1:
            raise CnncError(f"--batch must be at least 1, got {batch}")
        x = np.random.default_rng(args.seed).standard_normal((batch, *net.input_shape),
                                                              dtype=np.float32)
    start = time.perf_counter()
    y = net(x)
    elapsed = time.perf_counter() - start
    print(f"output {_fmt(y.shape)} in {elapsed * 1e3:.2f} ms")
    if net.graph.nodes[net.graph.graph["output"]]["op"] == "softmax" and y.ndim == 2:
        for i, row in enumerate(y[:16]):
            top = np.argsort(-row)[:5]
            print(f"  sample {i}: " + "  ".join(f"{c}:{row[c]:.4f}" for c in top))
        if len(y) > 16:
            print(f"  ... {len(y) - 16} more samples")
    if args.output:
        try:
            np.save(args.output, y)
        except OSError as err:
            raise CnncError(f"cannot write '{args.output}': {err.strerror}") from None
        print(f"wrote {args.output}")
    return 0


def cmd_bench(args) -> int:
    import numba
    previous = numba.get_num_threads()
    if args.threads is not None:
        if not 1 <= args.threads <= numba.config.NUMBA_NUM_THREADS:
            raise CnncError(f"--threads must be between 1 and {numba.config.NUMBA_NUM_THREADS}")
        numba.set_num_threads(args.threads)
    try:
        return _bench(args)
    finally:
        numba.set_num_threads(previous)


def _bench(args) -> int:
    import numba
    if args.batch < 1 or args.repeat < 1:
        raise CnncError("--batch and --repeat must be at least 1")
    from .report import layer_stats
    net = _compile(args)
    macs = sum(r["macs"] for r in layer_stats(net._source_graph))
    x = np.random.default_rng(0).standard_normal((args.batch, *net.input_shape), dtype=np.float32)
    for _ in range(3):
        net(x)
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        net(x)
        times.append(time.perf_counter() - t)
    med = float(np.median(times))
    print(f"{net.name}: batch {args.batch}, {numba.get_num_threads()} threads, "
          f"{args.repeat} runs")
    print(f"  latency  {med * 1e3:.3f} ms (median; min {min(times) * 1e3:.3f} ms)")
    print(f"  throughput  {args.batch / med:.1f} images/s")
    print(f"  {2 * macs * args.batch / med / 1e9:.1f} GFLOP/s ({2 * macs / 1e9:.3f} GFLOP/image)")
    if args.profile:
        sys.stdout.write(profile_table(net, x, args.repeat))
    return 0


def profile_table(net, x: np.ndarray, repeat: int) -> str:
    """Per-layer median time of each kernel call, slowest first, with the GFLOP/s of the
    convolutions and dense layers of the optimised graph."""
    _, _, calls = net._plan.bind(x.shape[0])
    net(x)  # puts x in the input buffer
    per_step = np.zeros((repeat, len(calls)))
    for r in range(repeat):
        for i, (kernel, kargs) in enumerate(calls):
            t = time.perf_counter()
            kernel(*kargs)
            per_step[r, i] = time.perf_counter() - t
    med = np.median(per_step, axis=0)
    by_node: dict[str, list] = {}
    for step, t in zip(net._plan.steps, med):
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
    from .graph import build_graph, load_program
    from .passes import verify_passes
    from .weights import check_weights, init_parameters
    if args.batch < 1:
        raise CnncError(f"--batch must be at least 1, got {args.batch}")
    graph = build_graph(load_program(args.model), args.network)
    params = init_parameters(graph, args.seed)
    if args.weights:
        params = check_weights(graph, args.weights, params)
    result = verify_passes(graph, params, batch=args.batch, seed=args.seed, tol=args.tolerance)
    print(f"{args.model}: network {graph.graph['name']}, batch {args.batch}, "
          f"tolerance {args.tolerance:g} (max |a - b| / max |a|, against -O0)")
    width = max(len(name) for name, _ in result.rows)
    for name, diff in result.rows:
        mark = "ok" if diff <= args.tolerance else "CHANGED"
        print(f"  after {name:<{width}}  {diff:.3e}  {mark}")
    if result.first_failure is not None:
        print(f"error: pass '{result.first_failure}' changes the result beyond the tolerance",
              file=sys.stderr)
        return 1
    print("every pass keeps the result")
    return 0
