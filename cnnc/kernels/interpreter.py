"""One jitted loop that runs a whole lowered network, so no Python runs between kernels.

The runtime encodes each kernel call of a plan as an opcode, a row of integers and a row
of floats (``cnnc.runtime.encode_plan``); ``run_plan`` walks the rows and calls the kernels
with the same argument types as the Python path, so every kernel keeps its one compiled
signature. ``run_plan`` itself has one signature for every network: it is compiled once,
cached on disk, and compile time does not grow with the network. It removes the ~1-1.5 us
that each Python-to-Numba dispatch of a ~16-argument kernel costs, which is most of the
run time of small networks (LeNet-5 has 8 kernel calls in ~50 us).

Encoding of one argument, in order (see ``encode_plan``): a tensor view is 4 ints
``(start, channels, h, w)`` -- the 4-D array ``arena[n*start : n*(start + channels*h*w)]``
seen as ``(n, channels, h, w)``; a parameter array is its offset in ``params`` then its
shape; an int is itself; a float goes to the float row.
"""

import numba

from .conv import conv2d
from .dense import dense
from .elementwise import activation, add, softmax
from .fastconv import conv2d_packed
from .jit import cached_njit
from .layout import copy_channels, pad2d
from .norm import batchnorm, lrn
from .pool import global_avgpool, global_maxpool, pool2d

KERNELS = (conv2d, conv2d_packed, pool2d, global_maxpool, global_avgpool,
           dense, activation, softmax, batchnorm, lrn, pad2d, copy_channels, add)
OPCODES = {kernel: code for code, kernel in enumerate(KERNELS)}
INTS_PER_STEP = 32
FLOATS_PER_STEP = 4


@numba.njit(inline="always", error_model="numpy")
def _view(arena, n, row, i):
    start, channels, h, w = row[i], row[i + 1], row[i + 2], row[i + 3]
    return arena[n * start : n * (start + channels * h * w)].reshape((n, channels, h, w))


@numba.njit(inline="always", error_model="numpy")
def _vec(params, row, i):
    return params[row[i] : row[i] + row[i + 1]]


@numba.njit(inline="always", error_model="numpy")
def _mat(params, row, i):
    return params[row[i] : row[i] + row[i + 1] * row[i + 2]].reshape((row[i + 1], row[i + 2]))


@numba.njit(inline="always", error_model="numpy")
def _tensor4(params, row, i):
    size = row[i + 1] * row[i + 2] * row[i + 3] * row[i + 4]
    return params[row[i] : row[i] + size].reshape((row[i + 1], row[i + 2], row[i + 3], row[i + 4]))


@cached_njit(error_model="numpy")
def run_plan(n, arena, params, ops, ints, floats):
    """Run every encoded kernel call in order on batch size ``n``.

    The branches are in the order a cold compile of ``run_plan`` compiles the kernels it
    calls: the small and rare ones first, the conv and pool kernels last, so that the helper
    process of ``runtime.Plan.warm_up`` compiles them while the main process compiles the
    network's own kernels, starting with the conv (see ``compile_interpreter``).
    """
    for s in range(ops.size):
        op = ops[s]
        r = ints[s]
        f = floats[s]
        x = _view(arena, n, r, 0)  # every kernel's first argument is a tensor
        if op == 12:  # add(a, ac0, b, bc0, C, out, oc0, act, slope)
            add(x, r[4], _view(arena, n, r, 5), r[9], r[10], _view(arena, n, r, 11), r[15],
                r[16], f[0])
        elif op == 11:  # copy_channels(x, xc0, C, out, oc0)
            copy_channels(x, r[4], r[5], _view(arena, n, r, 6), r[10])
        elif op == 10:  # pad2d(x, xc0, C, out, oc0, pt, pl, value)
            pad2d(x, r[4], r[5], _view(arena, n, r, 6), r[10], r[11], r[12], f[0])
        elif op == 9:  # lrn(x, xc0, C, out, oc0, size, alpha, beta, k)
            lrn(x, r[4], r[5], _view(arena, n, r, 6), r[10], r[11], f[0], f[1], f[2])
        elif op == 8:  # batchnorm(x, xc0, C, out, oc0, scale, shift)
            batchnorm(x, r[4], r[5], _view(arena, n, r, 6), r[10], _vec(params, r, 11),
                      _vec(params, r, 13))
        elif op == 7:  # softmax(x, xc0, C, out, oc0)
            softmax(x, r[4], r[5], _view(arena, n, r, 6), r[10])
        elif op == 6:  # activation(x, xc0, C, out, oc0, act, slope)
            activation(x, r[4], r[5], _view(arena, n, r, 6), r[10], r[11], f[0])
        elif op == 5:  # dense(x, xc0, cin, w2, b, out, oc0, act, slope)
            dense(x, r[4], r[5], _mat(params, r, 6), _vec(params, r, 9), _view(arena, n, r, 11),
                  r[15], r[16], f[0])
        elif op == 4:  # global_avgpool(x, xc0, C, out, oc0)
            global_avgpool(x, r[4], r[5], _view(arena, n, r, 6), r[10])
        elif op == 3:  # global_maxpool(x, xc0, C, out, oc0)
            global_maxpool(x, r[4], r[5], _view(arena, n, r, 6), r[10])
        elif op == 0:  # conv2d(x, xc0, cin, w4, b, out, oc0, sh, sw, pt, pl, dh, dw, g, act, slope)
            conv2d(x, r[4], r[5], _tensor4(params, r, 6), _vec(params, r, 11),
                   _view(arena, n, r, 13), r[17], r[18], r[19], r[20], r[21], r[22], r[23],
                   r[24], r[25], f[0])
        elif op == 2:  # pool2d(x, xc0, C, out, oc0, kh, kw, sh, sw, pt, pl, is_max)
            pool2d(x, r[4], r[5], _view(arena, n, r, 6), r[10], r[11], r[12], r[13], r[14],
                   r[15], r[16], r[17])
        else:  # 1: conv2d_packed(x, xc0, cin, out, oc0, K, wpk, b, kh, kw, pt, pl,
            #                   sh, sw, dh, dw, groups, act, slope, res, rc0)
            conv2d_packed(x, r[4], r[5], _view(arena, n, r, 6), r[10], r[11],
                          _vec(params, r, 12), _vec(params, r, 14), r[16], r[17], r[18], r[19],
                          r[20], r[21], r[22], r[23], r[24], r[25], f[0],
                          _view(arena, n, r, 26), r[30])


def interpreter_types() -> tuple:
    """The argument types of ``run_plan``: the same for every network."""
    import numpy as np

    return tuple(numba.typeof(a) for a in (
        1, np.zeros(1, np.float32), np.zeros(1, np.float32), np.zeros(1, np.int64),
        np.zeros((1, INTS_PER_STEP), np.int64), np.zeros((1, FLOATS_PER_STEP), np.float64)))


def compile_interpreter() -> None:
    """Compile (or load from the disk cache) ``run_plan`` and every kernel it calls."""
    run_plan.compile(interpreter_types())
