"""The interpreter's one table of kernel signatures (issue 10 item 1): run_plan's checked-in
body is what the table generates, and the encoding follows the table's kinds."""

import numpy as np
import pytest

from cnnc import kernels as K
from cnnc.kernels import interpreter
from cnnc.lower import lower_node
from cnnc.memory import View


def test_generated_interpreter_is_what_the_table_gives():
    """After a change to SIGNATURES, `python -m cnnc.kernels.interpreter` regenerates it."""
    assert interpreter.GENERATED.read_text(encoding="utf-8") == interpreter.generate_source()


def test_every_interpreter_kernel_is_in_the_table_with_its_arity():
    import inspect
    for kernel, kinds in interpreter.SIGNATURES:
        assert len(kinds) == len(inspect.signature(kernel.py_func).parameters), kernel
        assert set(kinds) <= set(interpreter.ARG_KINDS)
    assert [k for k, _ in interpreter.SIGNATURES] == list(interpreter.OPCODES)


def test_encoding_lays_out_each_kind_as_declared():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([7, 8], np.float32)
    args = ((1, 2, 3, 4), 5, 6, w, b, (10, 20, 30, 40), 11, 12, 0.5, 0.25)
    params, ops, ints, floats = interpreter.encode_steps([(K.dense, args)])
    assert ops.tolist() == [interpreter.OPCODES[K.dense]]
    assert ints[0, :17].tolist() == [1, 2, 3, 4, 5, 6, 0, 2, 3, 6, 2, 10, 20, 30, 40, 11, 12]
    assert floats[0, :2].tolist() == [0.5, 0.25]
    np.testing.assert_array_equal(params, [0, 1, 2, 3, 4, 5, 7, 8])


@pytest.mark.parametrize("args, message", [
    (((1, 2, 3, 4), 5, 6, (1, 2, 3, 4), 7), "takes 8 arguments, got 5"),
    (((1, 2, 3, 4), 5, 6, (1, 2, 3, 4), 7, 1, 0, 0.0),
     "argument 6 of activation should be a float"),
    (((1, 2, 3, 4), 5.0, 6, (1, 2, 3, 4), 7, 1, 0.0, 0.0),
     "argument 1 of activation should be a"),
])
def test_encoding_refuses_arguments_of_other_kinds(args, message):
    with pytest.raises(TypeError, match=message):
        interpreter.encode_steps([(K.activation, args)])


def test_any_activation_code_lowers_to_the_activation_kernel(monkeypatch):
    """A new name in kernels.ACT_CODES is an element-wise op the lowering needs no change for."""
    import networkx as nx
    monkeypatch.setitem(K.ACT_CODES, "new_act", 7)
    graph = nx.DiGraph()
    graph.add_node("x", op="input", inputs=[], attrs={}, shape=(2, 3, 3))
    graph.add_node("a", op="new_act", inputs=["x"], attrs={}, shape=(2, 3, 3))
    views = {"x": View(0, 0, 2, (3, 3)), "a": View(1, 0, 2, (3, 3))}
    (step,) = lower_node(graph, "a", views)
    assert step.kernel is K.activation
    assert step.args == (views["x"], 0, 2, views["a"], 0, 7, 0.0, 0.0)
    assert step.reads == (views["x"],) and step.writes == (views["a"],)
