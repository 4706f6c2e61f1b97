"""The Numba disk cache shared by concurrent processes (cnnc/kernels/jit.py).

Two processes that saved two overloads of one kernel at the same moment used to leave an
index entry pointing at the other overload's code; the next process that loaded it
crashed (SIGSEGV). These tests run exactly so: several fresh processes on one fresh
`NUMBA_CACHE_DIR`, then fresh processes that load what they wrote.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

KERNEL = '''
from cnnc.kernels.jit import cached_njit

@cached_njit()
def twice_plus_one(x):
    return x * 2 + 1
'''

# a writer: compile one overload; every index write first waits, so all writers have read
# the index before any of them writes it back (the interleaving that lost entries and
# mismatched data files)
WRITER = '''
import sys, time
from numba.core.caching import IndexDataCacheFile
save_index = IndexDataCacheFile._save_index
def slow_save_index(self, overloads):
    time.sleep(1.5)
    save_index(self, overloads)
IndexDataCacheFile._save_index = slow_save_index
import numpy as np, shared_kernel
value = {"int": 3, "float": 2.5, "float32": np.float32(1.5)}[sys.argv[1]]
shared_kernel.twice_plus_one(value)
'''

READER = '''
import numpy as np, shared_kernel
f = shared_kernel.twice_plus_one
got = [f(3), f(2.5), f(np.float32(1.5))]
assert got == [7, 6.0, 4.0] and len(f.signatures) == 3, got
print(sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values()))
'''


def _env(cache: Path, path: Path) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    env["PYTHONPATH"] = os.pathsep.join([str(path), str(ROOT)])
    return env


def test_concurrent_writers_of_overloads_keep_each_one(tmp_path):
    (tmp_path / "shared_kernel.py").write_text(KERNEL)
    env = _env(tmp_path / "cache", tmp_path)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, kind], env=env, cwd=tmp_path,
                                stderr=subprocess.PIPE, text=True)
               for kind in ("int", "float", "float32")]
    for w in writers:
        assert w.wait(timeout=120) == 0, w.stderr.read()
    reader = subprocess.run([sys.executable, "-c", READER], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert reader.returncode == 0, reader.stderr
    # every overload came from the disk cache, none was lost
    assert reader.stdout.split() == ["3", "0"], reader.stdout


PARALLEL = '''
import numba
from cnnc.kernels.jit import cached_njit

@cached_njit(parallel=True)
def doubled(x):
    out = x.copy()
    for i in numba.prange(x.size):
        out[i] = x[i] * 2.0
    return out

@cached_njit()
def caller(x):
    return doubled(x) + 1.0
'''

PARALLEL_STEP = '''
import sys
import numpy as np, par_kernel as k
x = np.arange(4.0)
f = k.doubled if sys.argv[1] == "callee" else k.caller
print(f(x).tolist(), k.doubled.stats.cache_hits.total(), k.caller.stats.cache_hits.total())
'''


def test_a_caller_compiled_over_a_cached_parallel_kernel_runs_in_a_fresh_process(tmp_path):
    """A plan interpreter compiled while its parallel kernels came from the disk cache was
    saved without the hook that starts Numba's thread pool; the next process that loaded
    it first crashed on a null pointer (SIGSEGV): the run of these three processes."""
    (tmp_path / "par_kernel.py").write_text(PARALLEL)
    env = _env(tmp_path / "cache", tmp_path)

    def step(which):
        return subprocess.run([sys.executable, "-c", PARALLEL_STEP, which], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)

    first = step("callee")  # compiles and saves the parallel kernel
    assert first.returncode == 0, first.stderr
    second = step("caller")  # the kernel from the cache, the caller compiled and saved
    assert second.returncode == 0, second.stderr
    assert second.stdout.split()[-2:] == ["1", "0"], second.stdout  # kernel hit, caller new
    third = step("caller")  # both from the cache: the caller is the first parallel code
    assert third.returncode == 0, f"return code {third.returncode}: {third.stderr[-2000:]}"
    assert third.stdout.split("]")[0] + "]" == "[1.0, 3.0, 5.0, 7.0]", third.stdout
    assert third.stdout.split()[-1] == "1", third.stdout  # the caller came from the cache


LINKED = '''
import numba
import numpy as np
from cnnc.kernels.jit import cached_njit, call_linked, linked_njit

@linked_njit()
def add_rows(first, last, x, out, shift):
    if shift < 0:
        raise ValueError("negative shift")
    for i in range(first, last):
        out[i] = x[i] + shift

@linked_njit()
def inner(out, i, factor):
    out[i] *= factor

@linked_njit()
def outer(first, last, out, factor):  # a helper that calls a helper through a symbol
    for i in range(first, last):
        call_linked(inner, out, i, factor)

@linked_njit()
def negate_first(out):
    out[0] = -out[0]

@numba.njit
def plain_callee(out):  # linked into the kernel, as Numba links callees
    call_linked(negate_first, out)

@cached_njit(parallel=True)
def shifted(x, shift, factor):
    out = np.empty_like(x)
    call_linked(add_rows, 0, 1, x, out, shift)  # literal 0 and 1: passed as int64
    for chunk in numba.prange(3):
        call_linked(add_rows, 1 + chunk * (x.size - 1) // 3,
                    1 + (chunk + 1) * (x.size - 1) // 3, x, out, shift)
    for chunk in numba.prange(2):  # outer is called in the loop body only
        call_linked(outer, chunk * x.size // 2, (chunk + 1) * x.size // 2, out, factor)
    plain_callee(out)
    return out
'''

LINKED_STEP = '''
import numpy as np, linked_kernel as k
x = np.arange(10.0)
want = (x + 2.5) * 3.0
want[0] = -want[0]
assert k.shifted(x, 2.5, 3.0).tolist() == want.tolist()
try:  # (not from a parallel loop body: Numba's raise there is not for two threads at once)
    k.shifted(x, -1.0, 3.0)
except ValueError as e:
    assert "negative shift" in str(e), e
else:
    raise AssertionError("no ValueError from the linked helper")
helpers = [k.shifted, *(h.dispatcher for h in (k.add_rows, k.outer, k.inner, k.negate_first))]
assert all(len(h.signatures) == 1 for h in helpers), [h.signatures for h in helpers]
print(*(h.stats.cache_hits.total() for h in helpers))
'''


def test_a_helper_called_through_a_symbol_from_a_cold_and_a_warm_cache(tmp_path):
    """call_linked: the caller's code calls the helper through a symbol the dynamic
    linker resolves when the code is loaded, so a fresh process that loads the caller from
    the disk cache must register every helper its code calls first: in the kernel, in a
    parallel loop body only, in a function linked into it, and in a helper (also when a
    helper's own entry is gone and it is compiled again). A helper's exception reaches the
    caller's caller, and each helper compiles once (literal arguments pass as int64)."""
    (tmp_path / "linked_kernel.py").write_text(LINKED)
    env = _env(tmp_path / "cache", tmp_path)

    def step():
        return subprocess.run([sys.executable, "-c", LINKED_STEP], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)

    cold = step()
    assert cold.returncode == 0, cold.stderr
    assert cold.stdout.split() == ["0"] * 5, cold.stdout
    warm = step()
    assert warm.returncode == 0, f"return code {warm.returncode}: {warm.stderr[-2000:]}"
    assert warm.stdout.split() == ["1"] * 5, warm.stdout  # all loaded, none compiled
    for entry in (tmp_path / "cache").rglob("*inner*"):
        entry.unlink()
    inner_gone = step()
    assert inner_gone.returncode == 0, inner_gone.stderr[-2000:]
    assert inner_gone.stdout.split() == ["1", "1", "1", "0", "1"], inner_gone.stdout


def test_call_linked_refuses_a_function_that_is_not_linked():
    import numba
    import pytest
    from numba.core.errors import TypingError

    from cnnc.kernels.jit import call_linked

    @numba.njit
    def plain(x):
        pass

    @numba.njit
    def caller(x):
        call_linked(plain, x)

    with pytest.raises(TypingError, match="calls a linked_njit function"):
        caller(1)


def test_cache_key_holds_every_kernel_source():
    """An entry compiled from other kernel sources (run_plan inlines every kernel) never
    matches, wherever the cache lives."""
    from cnnc.backend import current_target
    from cnnc.kernels.interpreter import run_plan
    from cnnc.kernels.jit import sources_digest

    key = run_plan._cache._index_key((), run_plan.targetctx.codegen())
    assert key[-2:] == (sources_digest(), repr(current_target()))  # the tile too
    assert len(sources_digest()) == 64


NETWORKS = {
    "conv": "network n(input: 3x12x12) { conv(8, 3x3, padding=same) -> relu -> "
            "maxpool(2x2) -> dense(5) }",
    "relu": "network n(input: 1x8x8) { relu }",
    "pool": "network n(input: 2x8x8) { maxpool(2x2) -> avgpool(3x3, stride=1) }",
}


def _cli(*args, env, timeout=900):
    return subprocess.run([sys.executable, "-m", "cnnc.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_concurrent_cold_compiles_then_fresh_runs(tmp_path):
    """Three cold compiles at once on one fresh cache (each also starts its compile
    helper), then fresh processes run each network against PyTorch and verify examples."""
    env = _env(tmp_path / "cache", ROOT)
    for name, text in NETWORKS.items():
        (tmp_path / f"{name}.cnn").write_text(text + "\n")
    compiles = [subprocess.Popen([sys.executable, "-m", "cnnc.cli", "compile",
                                  str(tmp_path / f"{name}.cnn")], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for name in NETWORKS]
    for c in compiles:
        assert c.wait(timeout=900) == 0, c.stderr.read()

    check = textwrap.dedent('''
        import sys, numpy as np, torch, torch.nn.functional as F, cnnc
        net = cnnc.load(sys.argv[1])
        x = np.random.default_rng(0).standard_normal((2, *net.input_shape)).astype(np.float32)
        t = torch.from_numpy(x)
        p = {k: torch.from_numpy(v) for k, v in net.parameters().items()}
        kind = sys.argv[2]
        if kind == "conv":
            y = F.max_pool2d(F.relu(F.conv2d(t, p["conv1.weight"], p["conv1.bias"],
                                             padding=1)), 2)
            y = F.linear(y.flatten(1), p["dense1.weight"], p["dense1.bias"])
        elif kind == "relu":
            y = F.relu(t)
        else:
            y = F.avg_pool2d(F.max_pool2d(t, 2), 3, 1)
        got = net(x)
        assert np.abs(got - y.numpy()).max() < 1e-4 * max(1.0, float(y.abs().max())), kind
        print("ok")
    ''')
    for name in NETWORKS:
        run = subprocess.run([sys.executable, "-c", check, str(tmp_path / f"{name}.cnnc"),
                              name], env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0 and run.stdout.strip() == "ok", (name, run.returncode,
                                                                      run.stderr[-2000:])
    for example in ("lenet5", "cifar_inception", "squeezenet"):
        run = _cli("verify", str(ROOT / "examples" / f"{example}.cnn"), env=env)
        assert run.returncode == 0, (example, run.returncode, run.stderr[-2000:])


def test_each_chunk_helper_compiles_once_for_the_serial_and_the_parallel_path():
    """A kernel calls its chunk helper on the calling thread (a small layer) and in its
    prange loop (a large one); call_linked compiles the helper for the types of each call,
    so the two must give one signature (a uint64 loop index would give a second, ~5 s)."""
    import importlib
    import pkgutil

    import numpy as np

    import cnnc
    from cnnc.kernels.jit import Linked

    text = ("network n(input: {c}x{s}x{s}) {{ conv(16, 3x3, padding=same) -> relu -> "
            "conv(32, 3x3, stride=2) -> relu -> maxpool(3x3, stride=2) -> "
            "avgpool(2x2) -> dense(10) }}")
    for c, s in ((4, 12), (8, 72)):  # serial paths, then parallel ones
        net = cnnc.compile_source(text.format(c=c, s=s))
        assert np.isfinite(net(np.ones((2, c, s, s), np.float32))).all()
    helpers = {}
    package = importlib.import_module("cnnc.kernels")
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"cnnc.kernels.{info.name}")
        helpers.update({f"{info.name}.{name}": value.dispatcher.signatures
                        for name, value in vars(module).items() if isinstance(value, Linked)})
    used = {name for name, sigs in helpers.items() if sigs}
    assert {"fastconv._conv_chunk", "lanesconv._lanes_chunk", "pool._pool_chunk",
            "dense._dense_units"} <= used, used
    assert all(len(sigs) <= 1 for sigs in helpers.values()), helpers
