"""Cold compile time of each kernel a network uses, one after the other in one process.

    NUMBA_CACHE_DIR=$(mktemp -d) python benchmarks/compile_time.py examples/googlenet.cnn

With an empty cache directory every kernel is compiled, not loaded; each line gives the
wall and CPU seconds of one kernel (runtime.COMPILE_COST holds these, to share a cold
compile out between two processes), the last the interpreter's.
"""

import sys
import time

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
