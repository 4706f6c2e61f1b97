"""The op registry (cnnc/ops.py): its flags agree with the kernels, and the import arrows
hold (passes and the registry load no Numba; the kernels load none of the graph side)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import graph_of, net_src

from cnnc import ops
from cnnc.kernels import ACT_CODES


def test_registry_activations_are_the_kernels_codes():
    """fuse-epilogue fuses every registry activation into a conv, dense or add, and the
    runtime lowers every ACT_CODES name to the activation kernel: the two must agree."""
    assert set(ops.ACTIVATION_OPS) == set(ACT_CODES) - {"none"}
    assert len(set(ACT_CODES.values())) == len(ACT_CODES)


def _modules_after(imports: str) -> set[str]:
    code = f"import sys\n{imports}\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    return set(result.stdout.split())


def test_registry_and_passes_import_no_numba():
    loaded = _modules_after("import cnnc.ops, cnnc.layers, cnnc.passes, cnnc.report, "
                            "cnnc.memory, cnnc.weights")
    assert not {"numba", "cnnc.kernels", "cnnc.runtime"} & loaded


def test_kernels_do_not_import_the_graph_side():
    loaded = _modules_after("import cnnc.kernels")
    assert not {"cnnc.ops", "cnnc.layers", "cnnc.graph", "cnnc.frontend"} & loaded


def test_every_graph_op_has_a_spec():
    graph = graph_of(net_src("conv(4, 3x3) -> relu -> pad(1) -> concat { identity | "
                             "maxpool(3, stride=1, padding=same) } -> avgpool(global) -> flatten "
                             "-> dense(3)", "3x8x8"))
    assert all(data["op"] in ops.OPS for _, data in graph.nodes(data=True))


@pytest.mark.parametrize("name", list(ops.LAYERS))
def test_every_default_passes_its_own_check(name):
    spec = ops.LAYERS[name]
    for arg in spec.args:
        if arg.default not in (ops.REQUIRED, None):
            arg.check(name, arg.name, arg.default)
