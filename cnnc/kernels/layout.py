"""Data-movement kernels: padding and channel copies."""

from .elementwise import channel_segment, copy_into
from .jit import cached_njit


@cached_njit(fastmath=True, error_model="numpy")
def pad2d(x, xc0, C, out, oc0, pt, pl, value):
    """Place channels ``xc0 .. xc0+C-1`` of ``x`` in ``out`` shifted by ``(pt, pl)``.

    ``out[n, oc0+c, pt+h, pl+w] = x[n, xc0+c, h, w]``; every other cell of those ``C`` output
    planes becomes ``value``. Requires ``pt, pl >= 0`` and the shifted input to fit in ``out``
    (bottom/right padding is what remains of ``out``'s size).
    """
    H, W = x.shape[2], x.shape[3]
    for n in range(x.shape[0]):
        for c in range(C):
            src = x[n, xc0 + c]
            dst = out[n, oc0 + c]
            dst[:] = value
            for h in range(H):
                copy_into(dst[pt + h, pl : pl + W], src[h])


@cached_njit(fastmath=True, error_model="numpy")
def copy_channels(x, xc0, C, out, oc0):
    """Copy channels ``xc0 .. xc0+C-1`` of every image of ``x`` into ``out`` from channel ``oc0``.

    The copy is of the ``C*H*W`` floats that hold those channels, in order, so ``out`` may have
    another spatial size: with the same size it is a channel copy (a copying concat); with
    ``out`` of ``(N, Cout, 1, 1)`` it flattens into channels ``oc0 .. oc0+C*H*W-1``. Requires
    ``C*H*W`` to be a multiple of ``out``'s ``OH*OW``.
    """
    count = C * x.shape[2] * x.shape[3] // (out.shape[2] * out.shape[3])
    for n in range(x.shape[0]):
        copy_into(channel_segment(out, n, oc0, count), channel_segment(x, n, xc0, C))


@cached_njit(fastmath=True, error_model="numpy")
def shuffle_channels(x, xc0, C, out, oc0, groups):
    """ShuffleNet's channel shuffle of channels ``xc0 .. xc0+C-1`` of ``x`` into ``out``.

    The channels, seen as ``groups x k`` (``k = C // groups``), are transposed to
    ``k x groups``: ``out[n, oc0 + i*groups + g] = x[n, xc0 + g*k + i]``. Each channel is
    one contiguous plane copy; ``out`` must not overlap ``x``'s channels.
    """
    k = C // groups
    for n in range(x.shape[0]):
        for g in range(groups):
            for i in range(k):
                copy_into(channel_segment(out, n, oc0 + i * groups + g, 1),
                          channel_segment(x, n, xc0 + g * k + i, 1))
