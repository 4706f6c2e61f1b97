"""The CPU target and the choices that depend on it: one place, free of Numba.

A `Target` says what the vectorised kernels may assume: floats per vector register,
how many vector registers there are, and so the conv micro-kernel's tile (output channels
x vectors of positions) that keeps every accumulator, the input vectors and a broadcast
weight in registers. The host's target is detected once from LLVM's view of the CPU
(the one Numba compiles for); `CNNC_TARGET=avx512|avx2|generic` forces a narrower one,
for tests and measurements. Kernels read the target when they are imported, so every
compiled kernel is built for one target, and the disk cache is keyed by it.

`conv_kernel` is the one place that decides which conv kernel a conv node gets; the
lowering and the passes that need the answer (fuse-residual) ask it.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

from .errors import CnncError


@dataclass(frozen=True)
class Target:
    name: str
    lanes: int  # float32 lanes per vector register
    registers: int  # vector registers
    tile_channels: int  # output channels of a micro-kernel tile (broadcast weights)
    tile_vectors: int  # vectors of flat output positions of a tile
    lanes_vectors: int  # the lanes conv's tile: vectors of output channels
    lanes_positions: int  # and output positions (a broadcast input float each)

    @property
    def tile_width(self) -> int:
        """Flat output positions of a tile."""
        return self.tile_vectors * self.lanes

    def describe(self) -> str:
        return (f"{self.name} ({self.lanes} x float32 vectors, {self.registers} registers; "
                f"conv tile {self.tile_channels} channels x {self.tile_width} positions, "
                f"lanes tile {self.lanes_vectors * self.lanes} x {self.lanes_positions})")


def fitting_tile(registers: int) -> tuple[int, int]:
    """(channels, vectors) of the largest tile whose accumulators, input vectors and one
    broadcast weight fit the register file: channels x vectors + vectors + 1 registers.
    Among equal accumulator counts the taller one (more channels, fewer positions: BLIS's
    6 x 16 sgemm tile on AVX2). Natively on AVX2 (2-vCPU EPYC, 2 threads, interleaved)
    6 x 16 against 4 x 24: SqueezeNet b1 1.075-1.09x (its 1x1 512->1000 at 13x13 1.15x),
    GoogLeNet b1 1.075x, b8 1.05x, ResNet-18 b1 1.03x, b8 0.98x (F(4x4) Winograd layers
    0.97-0.99x at batch 8, its blocks 16 slots wide instead of 24)."""
    fits = [(kt * vn, kt, vn) for kt in (8, 6, 4) for vn in (3, 2, 1)
            if kt * vn + vn + 1 <= registers]
    _, kt, vn = max(fits)
    return kt, vn


def lanes_tile(registers: int, max_positions: int) -> tuple[int, int]:
    """(vectors of output channels, positions) of the lanes conv's tile: two vectors of
    channels (16 on AVX2, K of 16 fills it), and as many positions as the accumulators, the
    two weight vectors and one broadcast leave vector registers for, at most
    ``max_positions``: each position's input pointer takes a general register through the
    tap loop, and x86-64 has 16 (``X86_LANES_POSITIONS``)."""
    return 2, min(max_positions, (registers - 3) // 2)


#: On x86-64 the lanes tile's positions, one input pointer each, and the tap loop's own
#: values share 16 general registers: in the AVX-512 tile's tap loop (2 x NP zmm
#: accumulators) LLVM spilled 4 values per two taps at NP 6 and 8, 27 at 10 and 69 at 12,
#: and 12 positions ran 3x3 512->512 at 7x7 2.5x, 3x3/2 128->256 at 28x28 2.1x slower than
#: 8 (2 threads, batch 1). Of those that fit, 7: the planes of networks for 224x224 images
#: are 7 * 2^k wide (7x7, 14x14, 28x28, 56x56), which tiles of 7 positions cover without
#: junk (7x7: 7 tiles of 7 rather than 7 of 8); interleaved against 8 on AVX-512, 3x3
#: 512->512 at 7x7 1.08-1.14x, ResNet-18 b1 0.99-1.03x, b8 1.01-1.05x, CIFAR inception
#: and LeNet-5 1.00x. (AVX2's 16 vector registers allow 6.) AArch64 has 31 general
#: registers.
X86_LANES_POSITIONS = 7


def _target(name: str, lanes: int, registers: int, max_positions: int) -> Target:
    return Target(name, lanes, registers, *fitting_tile(registers),
                  *lanes_tile(registers, max_positions))


#: The known targets, widest first. `generic` is any 128-bit SIMD CPU (SSE: 16
#: registers); aarch64's NEON has 32.
TARGETS = {
    "avx512": _target("avx512", 16, 32, X86_LANES_POSITIONS),
    "avx2": _target("avx2", 8, 16, X86_LANES_POSITIONS),
    "neon": _target("neon", 4, 32, 12),
    "generic": _target("generic", 4, 16, X86_LANES_POSITIONS),
}


def host_target() -> Target:
    """The widest target this CPU runs, from LLVM's host CPU features."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return TARGETS["neon"]
    try:
        from llvmlite import binding as llvm
        features = llvm.get_host_cpu_features()
    except (ImportError, RuntimeError):  # unknown CPU: the correct, narrow path
        return TARGETS["generic"]
    if all(features.get(f, False) for f in ("avx512f", "avx512vl", "fma")):
        return TARGETS["avx512"]
    if all(features.get(f, False) for f in ("avx2", "fma")):
        return TARGETS["avx2"]
    return TARGETS["generic"]


def runnable_targets() -> list[str]:
    """The names of the targets this host can run (its own and every narrower one)."""
    host = host_target()
    if host.name == "neon":
        return ["neon", "generic"]
    order = ["avx512", "avx2", "generic"]
    return order[order.index(host.name):]


@functools.cache
def current_target() -> Target:
    """The host's target, or the narrower one `CNNC_TARGET` names."""
    wanted = os.environ.get("CNNC_TARGET", "").strip().lower()
    if not wanted:
        return host_target()
    if wanted not in TARGETS:
        raise CnncError(f"CNNC_TARGET={wanted!r} is not a target; targets: "
                        + ", ".join(TARGETS))
    if wanted not in runnable_targets():
        raise CnncError(f"CNNC_TARGET={wanted} cannot run on this CPU ({host_target().name}); "
                        f"it runs " + ", ".join(runnable_targets()))
    return TARGETS[wanted]


#: Convs with fewer output channels per group than this run on the generic kernel: the
#: packed one pads each group's channels to a tile and would spend most of its
#: multiply-adds on zeros (depthwise 3x3: generic 8, packed 3 GFLOP/s on one thread);
#: grouped convs with 8 or more channels per group gain (3x3, 64->64, 8 groups: 28 vs 6).
PACKED_MIN_CHANNELS_PER_GROUP = 4


def conv_kernel(out_channels: int, groups: int, in_channels: int) -> str:
    """Which conv kernel runs a conv: ``"depthwise"`` when each of several groups reads one
    input channel (``dwconv``, ``conv`` with groups = input depth; any multiplier), else
    ``"packed"`` (register-blocked, weights packed once; its store adds a residual) or
    ``"generic"`` for thin groups. (An ungrouped conv of a one-channel input stays packed.)"""
    if groups > 1 and in_channels == groups:
        return "depthwise"
    return "packed" if out_channels // groups >= PACKED_MIN_CHANNELS_PER_GROUP else "generic"


#: The lanes kernel (kernels/lanesconv.py: output channels in the vector lanes, input
#: broadcast) against the packed one, interleaved in one process, 2 threads, AVX2, batch 1
#: unless named (docs/kernel-notes.md): it wins where the packed kernel computes junk
#: columns or splits stride phases -- stride 2 (3x3 128->256 at 28x28 1.15-1.26x, 256->512
#: at 14x14 1.19-1.26x, 64->128 at 56x56 1.06-1.11x), small planes (5x5 24->64 at 8x8
#: 1.36-1.41x, 12->32 at 16x16 1.07-1.17x, 32->128 at 7x7 1.3x, 3x3 160->320 at 7x7
#: 1.2x, 64->128 at 8x8 1.14x, 1x1 832->448 at 7x7 1.23x; 3x3 512->512 at 7x7 1.01x),
#: LeNet-5's valid 5x5 6->16 at 14x14 (1.4-1.8x at batch 1 to 64) -- is even at 28x28
#: (5x5 16->32 0.95-0.98x, 32->96 1.01x) and loses on wider planes (3x3 32->48 at 32x32
#: 0.86-1.0x, 16->64 at 55x55 0.8x, 1x1 128->16 at 55x55 0.8-0.9x, 1x1/2 64->128 at 56x56
#: 0.82-0.85x), short reductions (3x3 3->64 at 32x32, 27 taps: 0.6-0.7x), three
#: input channels (the 7x7/2 stem, 147 taps: 0.86-0.92x) and fewer output channels than
#: its tile (LeNet-5's 6: 0.8x).
LANES_MIN_TAPS = 64  # input channels x kernel cells
LANES_MIN_INPUT_CHANNELS = 4
LANES_MAX_PLANE = 16 * 16  # stride-1 outputs up to this many positions
LANES_MAX_PLANE_1X1 = 64  # 1x1 outputs up to this many
# and 1x1 convs of at most LANES_MAX_NARROW_CHANNELS outputs on planes up to 14x14: 1x1
# 512->64 at 13x13 1.14-1.21x (batch 1, 8), 384->48 1.15x, 512->128 at 14x14 1.13x,
# 480->64 1.06x, 528->128 1.03x, 480->192 1.03x; but 480->304 0.93x, 512->1000 at 13x13
# 0.86x, and on 28x28 planes 256->64 0.98x, 192->96 0.93x, 256->176 0.79x
LANES_MAX_NARROW_PLANE = 14 * 14
LANES_MAX_NARROW_CHANNELS = 192


#: A network runs the lanes kernel only when the convs it would take hold at least this
#: share of the network's conv multiply-adds: it costs ~7 CPU s of cold compile (one time
#: per machine; 10-13 s before jit.call_linked) for 1.1-1.2x on those layers, which in
#: GoogLeNet (13% of its multiply-adds) came to 0.97-1.02x of the whole network and pushed
#: its cold compile from 35-45 to 48-56 s on a slow day (the limit is 40 s; 26.5 -> 32.5 s
#: on the thirteenth session's AVX2 host); SqueezeNet (4%) gained 1.03x. CIFAR inception
#: (21%) and LeNet-5 (67%) keep it. Strided convs run it whatever their share
#: (`lower.lanes_convs`): there the packed kernel copies the input into stride phases, and
#: lanes won most (1.06-1.26x a layer). Since Winograd took ResNet-18's 3x3 convs at 7x7,
#: its strided 3x3s hold 10% and by the share alone it lost the lanes kernel; natively on
#: AVX2, interleaved, giving it back ran ResNet-18 b1 1.02x, b8 1.04x. Any network with a
#: strided conv lanes takes now pays its compile: SE-ResNet (11%) too; GoogLeNet and
#: SqueezeNet, whose strided convs have 3 input channels, do not.
LANES_MIN_SHARE = 0.2


def lanes_runs(attrs: dict, in_channels: int, out_shape: tuple) -> bool:
    """Whether the lanes kernel computes a conv the packed kernel would (``conv_kernel``
    says "packed", no Winograd): one group, at least ``LANES_MIN_INPUT_CHANNELS`` input
    channels and ``LANES_MIN_TAPS`` taps, output channels that fill its tile to at least
    3/4, and a plane of at most ``LANES_MAX_PLANE_1X1`` positions for a 1x1 (or
    ``LANES_MAX_NARROW_PLANE`` with at most ``LANES_MAX_NARROW_CHANNELS`` outputs), else a
    plane of at most ``LANES_MAX_PLANE`` or (but on AVX-512) a stride."""
    k, oh, ow = out_shape
    t = current_target()
    tile = t.lanes_vectors * t.lanes
    kh, kw = attrs["kernel"]
    if (attrs["groups"] != 1 or in_channels < LANES_MIN_INPUT_CHANNELS
            or in_channels * kh * kw < LANES_MIN_TAPS):
        return False
    if -(-k // tile) * tile * 3 > 4 * k:
        return False
    if (kh, kw) == (1, 1):
        return oh * ow <= LANES_MAX_PLANE_1X1 or (
            oh * ow <= LANES_MAX_NARROW_PLANE and k <= LANES_MAX_NARROW_CHANNELS)
    # A strided conv on any plane -- except on AVX-512, whose lanes tile holds 14
    # accumulators of its 32 registers (x86-64's general registers cap its positions)
    # against the packed tile's 24: there the packed kernel ran 3x3/2 convs with outputs of
    # 28x28 and 32x32 1.06-1.15x faster (64->128, 128->128, 128->256, 32->64; 1 and 2
    # threads) and lanes kept 14x14 (128->256 1.07-1.09x)
    strided = tuple(attrs["stride"]) != (1, 1) and t.lanes < 16
    return strided or oh * ow <= LANES_MAX_PLANE


#: Winograd pays where a conv has enough output tiles to amortise its input and output
#: transforms and the weights' larger transformed form: F(4x4, 3x3) from 49 tiles of 4x4
#: per image (a 25x25 output), else F(2x2, 3x3) from 49 tiles of 2x2 (13x13), with 16
#: channels in and out. Measured on AVX2, 2 threads, batch 1, against the packed kernel
#: (docs/kernel-notes.md): F(4x4) 1.4-1.8x from 27x27 up (16->64 channels at 55x55, 32->128
#: at 27x27, 64 and 128 at 56x56 and 28x28), F(2x2) 1.15-1.3x at 13x13-16x16 (48->192 to
#: 256->256) where F(4x4) lost (0.6-0.8x: few tiles fill few vector lanes); at 7x7 both
#: lose (0.6x). The plan serves every batch size, so the rule is batch 1's.
WINOGRAD_MIN_TILES = 49
WINOGRAD_MIN_CHANNELS = 16
#: and F(2x2) from 16 tiles (a 7x7 output) for wide layers, whose weights outweigh the
#: transforms: with rows of 4 tiles packed two to a vector and only the slots that hold
#: tiles multiplied (kernels/winograd.py), AVX-512 host, one conv against the direct
#: kernels, 1 / 2 threads: 3x3 160->320 at 7x7 1.13 / 1.17x at batch 1, 1.44x at batch 8;
#: 192->384 1.16 / 1.14x, 1.46 / 1.44x; 512->512 1.02 / 0.94x, 1.51 / 1.39x; 256->256
#: 0.93 / 1.03x, 1.30 / 1.38x; but 48->128 0.73 / 0.85x at batch 1. In whole networks,
#: interleaved against the direct kernels: ResNet-18 b8 1.12x, b1 0.98-1.04x, GoogLeNet b1
#: 0.98-1.02x (at batch 1 the 16 slots fill one vector and the weights, 16/9 of the
#: direct kernels', come from memory). A plan holding both kernels, each for its batch
#: sizes, would break the rule that an image's outputs are the same bits in any batch
#: (docs/DESIGN.md), so one rule serves every batch.
WINOGRAD_MIN_TILES_WIDE = 16
WINOGRAD_WIDE_CHANNELS = 128
#: F(4x4) also on planes 13-16 cells wide and at least 13 tall (rows of exactly 4 tiles,
#: which fill the kernel's half vectors: two tile rows a vector of 8 slots) where a side has
#: at least WINOGRAD_NARROW_CHANNELS channels. Against F(2x2), AVX2, 2 / 1 threads, batch
#: 1: 3x3 256->256 at 14x14 1.24 / 1.37x (batch 8 1.42x), 160->320 1.29x, 96->208 1.20x,
#: 48->192 at 13x13 1.18 / 1.37x, 64->256 1.27x, 16->64 1.25x, 64->64 at 16x16 1.16 /
#: 1.22x; but 32->32 at 14x14 0.92x, 16->16 0.98x, and rows of 3 or 2 tiles lose (12x12
#: 0.97x, 10x10 0.90x, 7x7 0.55x). On AVX-512 (32-slot GEMM blocks, of which such a plane
#: fills 16) both sides need them: F(4x4) against F(2x2), 2 threads, batch 1, in the
#: network: 48->192 at 13x13 0.87x, 64->256 0.98-1.04x, 256->256 at 14x14 1.09-1.15x.
WINOGRAD_NARROW_CHANNELS = 64


def winograd_runs(attrs: dict) -> bool:
    """Whether the Winograd kernel computes a conv of these attributes: 3x3, stride 1,
    dilation 1, one group, and no activation or relu (the only epilogues it compiles)."""
    return (tuple(attrs["kernel"]) == (3, 3) and tuple(attrs["stride"]) == (1, 1)
            and tuple(attrs["dilation"]) == (1, 1) and attrs["groups"] == 1
            and attrs.get("activation", "none") in ("none", "relu"))


def winograd_tile(attrs: dict, in_channels: int, out_shape: tuple) -> int:
    """The output tile m of the Winograd F(m x m, 3x3) kernel a conv should run, or 0 for
    the direct kernels: only convs it computes (`winograd_runs`) qualify; 4 on a plane of
    rows of 4 tiles (``WINOGRAD_NARROW_CHANNELS``), else the largest m whose tiles reach
    ``WINOGRAD_MIN_TILES`` an image, else 2 for a wide conv whose tiles of 2x2 reach
    ``WINOGRAD_MIN_TILES_WIDE``."""
    k, oh, ow = out_shape
    channels = min(in_channels, k)
    if not winograd_runs(attrs) or channels < WINOGRAD_MIN_CHANNELS:
        return 0
    # on AVX-512 both sides: a plane's 16 slots fill one of the GEMM tile's two vectors
    narrow = max(in_channels, k) if current_target().lanes < 16 else channels
    if -(-ow // 4) == 4 and -(-oh // 4) >= 4 and narrow >= WINOGRAD_NARROW_CHANNELS:
        return 4
    for m in (4, 2):
        if -(-oh // m) * -(-ow // m) >= WINOGRAD_MIN_TILES:
            return m
    wide = channels >= WINOGRAD_WIDE_CHANNELS
    return 2 if wide and -(-oh // 2) * -(-ow // 2) >= WINOGRAD_MIN_TILES_WIDE else 0
