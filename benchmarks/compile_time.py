"""Cold compile time of each kernel a network uses, one after the other in one process.

    NUMBA_CACHE_DIR=$(mktemp -d) python benchmarks/compile_time.py examples/googlenet.cnn

With an empty cache directory every kernel is compiled, not loaded; each line gives the
wall and CPU seconds of one kernel (runtime.COMPILE_COST holds these, to share a cold
compile out between two processes), the last the interpreter's. Then the helpers compiled
for more than one signature: a literal argument (``f(0, ...)`` where another call passes
an int64) types, and compiles, a helper once more (``_conv_chunk`` twice cost ~9 s).
"""

import importlib
import pkgutil
import sys
import time

from numba.core.registry import CPUDispatcher

import cnnc
from cnnc.kernels.interpreter import SIGNATURES, compile_kernel, run_plan
from cnnc.runtime import INTERPRETER, Plan

Plan.warm_up = lambda self, progress=False: None  # the network is built, nothing compiled
net = cnnc.compile_file(sys.argv[1], winograd="--no-winograd" not in sys.argv)
for code in [*net._plan.codes, INTERPRETER]:
    name = run_plan.__name__ if code == INTERPRETER else SIGNATURES[code][0].__name__
    wall, cpu = time.perf_counter(), time.process_time()
    compile_kernel(code)
    print(f"{name:20s} wall {time.perf_counter() - wall:6.1f} s  "
          f"CPU {time.process_time() - cpu:6.1f} s", flush=True)

twice = []
for info in pkgutil.iter_modules(importlib.import_module("cnnc.kernels").__path__):
    module = importlib.import_module(f"cnnc.kernels.{info.name}")
    for name, value in vars(module).items():
        value = getattr(value, "dispatcher", value)  # a jit.Linked helper
        if isinstance(value, CPUDispatcher) and value.py_func.__module__ == module.__name__:
            if len(value.signatures) > 1:
                twice.append(f"{info.name}.{name} ({len(value.signatures)})")
print("compiled for more than one signature:", ", ".join(twice) or "none")
