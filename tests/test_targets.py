"""CPU targets (cnnc/backend.py): every target this host can run is tested against PyTorch.

The host's own target runs the whole suite; each narrower one (`CNNC_TARGET`) runs the
packed-conv kernel tests and a small network in a fresh process, since kernels compile
their target's tile in when they are imported.
"""

import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cnnc.backend import TARGETS, Target, fitting_tile, host_target, runnable_targets

ROOT = Path(__file__).resolve().parent.parent
NARROWER = [name for name in runnable_targets() if name != host_target().name]


@pytest.mark.parametrize("registers, tile", [(32, (8, 3)), (16, (6, 2)), (8, (6, 1))])
def test_tiles_fit_the_register_file(registers, tile):
    kt, vn = fitting_tile(registers)
    assert (kt, vn) == tile
    assert kt * vn + vn + 1 <= registers  # accumulators, input vectors, one broadcast


def test_known_targets():
    assert {name: (t.lanes, t.registers, t.tile_channels, t.tile_width)
            for name, t in TARGETS.items()} == {
        "avx512": (16, 32, 8, 48), "avx2": (8, 16, 6, 16), "neon": (4, 32, 8, 12),
        "generic": (4, 16, 6, 8)}
    assert {name: (t.lanes_vectors, t.lanes_positions) for name, t in TARGETS.items()} == {
        "avx512": (2, 7), "avx2": (2, 6), "neon": (2, 12), "generic": (2, 6)}
    for t in TARGETS.values():  # accumulators, weight vectors, one broadcast
        assert t.lanes_vectors * t.lanes_positions + t.lanes_vectors + 1 <= t.registers
    assert isinstance(host_target(), Target)
    assert runnable_targets()[0] == host_target().name and "generic" in runnable_targets()


def _env(target: str) -> dict:
    return dict(os.environ, CNNC_TARGET=target, PYTHONPATH=str(ROOT))


@pytest.mark.parametrize("target", NARROWER)
def test_packed_conv_kernels_on_a_narrower_target(target):
    """The packed and the lanes conv kernels' tests, with the target's tiles."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(ROOT / "tests" / "test_fastconv.py"),
                             str(ROOT / "tests" / "test_lanesconv.py")],
                            env=_env(target), cwd=ROOT / "tests", capture_output=True,
                            text=True, timeout=1800)
    _check_suite(result)


def _check_suite(result: subprocess.CompletedProcess) -> None:
    """A pytest run in a subprocess passed, and ran tests."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


EMULATED_AVX512 = textwrap.dedent('''
    import dataclasses, sys
    import cnnc.backend as B
    B.TARGETS["generic"] = dataclasses.replace(B.TARGETS["avx512"], name="generic")
    import pytest
    from cnnc.kernels import fastconv, lanesconv
    assert (fastconv.VL, fastconv.KT, fastconv.TW, lanesconv.NP, lanesconv.KB) == (
        16, 8, 48, 7, 32)
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "test_fastconv.py",
                          "test_lanesconv.py", "-k", "not choice"]))
''')


@pytest.mark.skipif("avx512" in runnable_targets(), reason="the native suite runs it")
def test_the_avx512_tiles_emulated(tmp_path):
    """The AVX-512 tiles (16 lanes: 8 x 48 packed, 32 x 7 lanes) on a CPU without AVX-512:
    LLVM splits each 16-float vector into narrower ones, so the kernels' index arithmetic
    for the wide tiles is checked against PyTorch on any x86 host. Its own cache directory:
    these kernels pose as the generic target's."""
    env = dict(_env("generic"), NUMBA_CACHE_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", EMULATED_AVX512], env=env,
                            cwd=ROOT / "tests", capture_output=True, text=True, timeout=1800)
    _check_suite(result)


NETWORK_CHECK = textwrap.dedent('''
    import numpy as np, torch, torch.nn.functional as F, cnnc
    from cnnc.backend import current_target
    from cnnc.kernels import fastconv
    assert current_target().name == fastconv.TARGET.name == "{target}"
    net = cnnc.compile_source("""network n(input: 5x11x9) {{
        conv(12, 3x3, padding=same) -> relu
        add {{ conv(12, 3x3, padding=same) | identity }} -> relu
        conv(16, 3x3, stride=2, padding=1) -> relu
        conv(6, 1x1, stride=2)
    }}""", progress=False)
    kernels = {{s.node: s.kernel.__name__ for s in net._plan.steps}}
    assert kernels["conv3"] == "conv2d_lanes" and kernels["conv4"] == "conv2d_packed", kernels
    p = {{k: torch.from_numpy(v) for k, v in net.parameters().items()}}
    x = np.random.default_rng(0).standard_normal((3, 5, 11, 9)).astype(np.float32)
    t = F.relu(F.conv2d(torch.from_numpy(x), p["conv1.weight"], p["conv1.bias"], padding=1))
    t = F.relu(F.conv2d(t, p["conv2.weight"], p["conv2.bias"], padding=1) + t)
    t = F.relu(F.conv2d(t, p["conv3.weight"], p["conv3.bias"], stride=2, padding=1))
    t = F.conv2d(t, p["conv4.weight"], p["conv4.bias"], stride=2)
    err = np.abs(net(x) - t.numpy()).max() / max(1.0, float(t.abs().max()))
    assert err < 1e-4, err
    print("ok", fastconv.KT, fastconv.TW)
''')


@pytest.mark.parametrize("target", NARROWER)
def test_a_network_on_a_narrower_target(target):
    result = subprocess.run([sys.executable, "-c", NETWORK_CHECK.format(target=target)],
                            env=_env(target), capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    t = TARGETS[target]
    assert result.stdout.split() == ["ok", str(t.tile_channels), str(t.tile_width)]


@pytest.mark.parametrize("value, message", [
    ("bogus", "CNNC_TARGET='bogus' is not a target; targets: avx512, avx2, neon, generic"),
    *([("avx512", "CNNC_TARGET=avx512 cannot run on this CPU")]
      if "avx512" not in runnable_targets() else []),
])
def test_an_unknown_or_too_wide_target_is_a_clean_error(tmp_path, value, message):
    model = tmp_path / "m.cnn"
    model.write_text("network n(input: 1x4x4) { relu }\n")
    result = subprocess.run([sys.executable, "-m", "cnnc.cli", "run", str(model)],
                            env=_env(value), capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr


#: LLVM CPU names and features that make Numba compile for a CPU of each x86 target's class
#: (on any host that runs it): its register file, so the register allocation of each
#: target's tiles is what that CPU would run.
X86_CPUS = {"avx512": ("skylake-avx512", "+avx512f,+avx512vl,+avx512bw,+avx512dq"),
            "avx2": ("haswell", "+avx2,+fma"), "generic": ("x86-64", "+sse2")}

SPILL_PROBE = textwrap.dedent('''
    import json, re
    import numba, numpy as np, cnnc
    from cnnc.kernels import fastconv, lanesconv, winograd
    net = cnnc.compile_source("""network n(input: 64x32x32) {
        conv(64, 3x3, stride=2, padding=same)
        conv(64, 1x1)
        conv(64, 3x3, padding=same)
    }""", progress=False)
    kernels = sorted(s.kernel.__name__ for s in net._plan.steps)
    assert kernels == ["conv2d_lanes", "conv2d_packed", "conv2d_winograd"], kernels
    net(np.ones((1, 64, 32, 32), np.float32))
    report = {}
    for name, helper, tile in [
            ("lanes", lanesconv._lanes_chunk, lanesconv.KV * lanesconv.NP),
            ("packed", fastconv._conv_chunk, fastconv.KT * fastconv.VN),
            ("winograd", winograd._winograd_chunk, fastconv.KT * winograd.WVN)]:
        d = helper.dispatcher
        # compiled again here: the cold compile ran half the kernels in a helper process,
        # and code loaded from the cache has no assembly to read
        fresh = numba.njit(**d.targetoptions)(d.py_func)
        for sig in d.signatures:
            fresh.compile(sig)
        asm = "".join(fresh.inspect_asm(sig) for sig in d.signatures)
        loops = []  # single-block loops of a whole tile's multiply-adds: the tap loops
        for label, block in re.findall(r"^(\\.?\\w+):\\n(.*?)(?=^\\.?\\w+:|\\Z)", asm, re.M | re.S):
            back = re.search(rf"^\\s*j\\w+\\s+{re.escape(label)}$", block, re.M)
            if back is None:
                continue
            lines = block[:back.start()].splitlines()
            fmas = sum(bool(re.search(r"\\bv?fmadd|\\bv?mulps", s)) for s in lines)
            adds = sum(bool(re.search(r"\\bv?(add|sub)ps", s)) for s in lines)
            if fmas >= tile and fmas >= adds:  # not a transform's adds (Winograd)
                stack = sum(bool(re.search(r"\\((%rsp|%rbp)", s)) for s in lines)
                loops.append((fmas, stack))
        report[name] = {"loops": loops, "fmaf": bool(re.search(r"\\bfmaf\\b", asm))}
    print(json.dumps(report))
''')


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 only")
@pytest.mark.parametrize("target", [t for t in runnable_targets() if t in X86_CPUS])
def test_the_tap_loops_keep_their_tile_in_registers(tmp_path, target):
    """Compiled for a CPU of each target's class, every micro-kernel's tap loop (lanes,
    packed, Winograd's GEMMs) keeps its accumulators and pointers in registers: at most one
    stack access per three multiply-adds (spill-free loops here: 0-5 per 12-48; the AVX-512
    lanes tile of 12 positions, whose input pointers outnumbered the general registers,
    had 69 per 48 and ran 2-2.5x slower), and no call of libm's ``fmaf`` (a CPU without
    FMA multiplies and adds)."""
    cpu, features = X86_CPUS[target]
    env = dict(_env(target), NUMBA_CACHE_DIR=str(tmp_path), NUMBA_CPU_NAME=cpu,
               NUMBA_CPU_FEATURES=features)
    result = subprocess.run([sys.executable, "-c", SPILL_PROBE], env=env,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    for name, found in report.items():
        assert found["loops"], f"{name}: no tap loop found"
        for fmas, stack in found["loops"]:
            assert 3 * stack <= fmas, f"{name} on {target} ({cpu}): {found['loops']}"
        assert not found["fmaf"], f"{name} on {target} calls fmaf"
