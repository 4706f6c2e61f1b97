"""Decompositions exporters write for one cnnc layer, recognised back into that layer.

`nn.LocalResponseNorm` has no ONNX symbolic in torch.onnx: it is exported as the
primitives of `F.local_response_norm`,

    div = AveragePool(Pad(Unsqueeze(Mul(x, x))))   # a window of `size` channels
    y   = Div(x, Pow(Add(Mul(Squeeze(div), alpha), k), beta))

with shape plumbing (Shape, Gather, Reshape, If, ...) around the pool. `recognise`
replaces the `Div` by one `LRN` node; the rest is then dead and never visited.
"""

from __future__ import annotations

import numpy as np

from .model import Node

# shape plumbing that may surround the squared window sum without changing its values
_PLUMBING = {"Unsqueeze", "Squeeze", "Reshape", "If", "Shape", "Gather", "Constant",
             "Concat", "Equal", "Cast", "Slice", "Transpose", "ConstantOfShape", "Identity",
             "Sub", "Add", "Neg", "Div", "Mul", "Range", "Expand", "Greater", "Less", "Not"}


def _scalar(constants, producers, name):
    """The value of a scalar constant (an initializer or a Constant node), or None."""
    if name in constants:
        value = constants[name]
    elif name in producers and producers[name].op == "Constant" and \
            "value" in producers[name].attrs:
        value = producers[name].attrs["value"]
    else:
        return None
    value = np.asarray(value)
    return float(value.ravel()[0]) if value.size == 1 and value.dtype.kind == "f" else None


def _operands(node: Node, constants, producers):
    """(the non-constant input, the constant's value) of a binary node, or None."""
    a, b = node.inputs
    for x, c in ((a, b), (b, a)):
        value = _scalar(constants, producers, c)
        if value is not None:
            return x, value
    return None


def _lrn(div: Node, constants, producers) -> Node | None:
    x, den = div.inputs
    chain = []
    for op in ("Pow", "Add", "Mul"):
        node = producers.get(den)
        if node is None or node.op != op or len(node.inputs) != 2:
            return None
        pair = _operands(node, constants, producers)
        if pair is None or (op == "Pow" and node.inputs[1] != _const_input(node, pair)):
            return None
        den, value = pair
        chain.append(value)
    beta, k, alpha = chain
    window = _window_of_squares(den, x, constants, producers)
    if window is None:
        return None
    return Node("LRN", div.name, [x], list(div.outputs),
                {"size": window, "alpha": alpha, "beta": beta, "bias": k})


def _const_input(node: Node, pair) -> str:
    return node.inputs[1] if node.inputs[0] == pair[0] else node.inputs[0]


def _window_of_squares(name: str, x: str, constants, producers) -> int | None:
    """The window size if `name` is the mean of x*x over a window of channels (through
    shape plumbing only), else None."""
    seen, stack, squares, pools = {x}, [name], 0, []  # x itself may feed Shape
    while stack:
        t = stack.pop()
        if t in seen or t in constants or t == "":
            continue
        seen.add(t)
        node = producers.get(t)
        if node is None:
            return None
        if node.op == "Mul" and node.inputs == [x, x]:
            squares += 1
            continue
        if node.op == "AveragePool":
            pools.append(node)
        elif node.op == "Pad":
            if node.attrs.get("mode", "constant") != "constant":
                return None
        elif node.op not in _PLUMBING:
            return None
        stack += [i for i in node.inputs if i]
        for g in (node.attrs.get("then_branch"), node.attrs.get("else_branch")):
            if g is not None:
                stack += [i for inner in g.node for i in inner.input if i
                          and i not in {o for n in g.node for o in n.output}]
    if squares != 1 or len(pools) != 1:
        return None
    pool = pools[0].attrs
    kernel = list(pool.get("kernel_shape", []))
    if not kernel or any(k != 1 for k in kernel[1:]) or any(s != 1 for s in
                                                             pool.get("strides", [1])):
        return None
    if not pool.get("count_include_pad", 0) and any(pool.get("pads", [0])):
        return None
    return int(kernel[0])


def recognise(nodes: list[Node], constants: dict) -> list[Node]:
    """`nodes` with recognised decompositions replaced by single nodes."""
    producers = {o: n for n in nodes for o in n.outputs}
    out = []
    for node in nodes:
        if node.op == "Div" and len(node.inputs) == 2:
            node = _lrn(node, constants, producers) or node
        out.append(node)
    return out
