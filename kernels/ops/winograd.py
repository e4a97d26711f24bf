"""Winograd F(2x2,3x3) and F(4x4,3x3) forward convolution, fused in one kernel.

Each program takes BLOCK_T output tiles (m x m pixels each) x BLOCK_N output channels and
runs the three Winograd stages without writing intermediates to global memory:

1. input transform V = B^T d B of each (m+2) x (m+2) input tile, in fp32, as one matrix
   product with kron(B^T, B^T) over the flattened tile;
2. the elementwise stage as a batched GEMM over the (m+2)^2 tile positions on tensor cores
   (``tl.dot`` on [positions, tiles, channels] x [positions, channels, out-channels]),
   reducing over input channels, with the transformed filter U = G g G^T (cached, see
   ``winograd_transforms.py``);
3. output transform Y = A^T M A (kron(A^T, A^T) again), then the shared epilogue.

Scope: 3x3 kernels, stride 1, dilation 1, groups 1, any padding. Gradients use the generic
backward kernels. F(4x4,3x3) multiplies 4x fewer times than the definition but its
transforms amplify rounding error (measured in README's Winograd table).
"""
from __future__ import annotations

import functools
from typing import Dict, Optional

import torch
import triton
import triton.language as tl

from ..epilogue import epilogue_arguments, store_conv_tile
from ..params import ConvParams
from ..registry import Algorithm, register, register_alias
from ..tuning import TunedKernel, config, grouped_tile
from .common import acc_dtype, dot_precision, needs_int64, new_output
from .winograd_transforms import F2, F4, FILTER_CACHE, TILES, WinogradTile, kernel_matrices, nonzeros


@triton.jit
def _position_products(transform, patches, u_ptr, slots, c, c_ok, k, k_ok, su_pos, su_c, acc,
                       POSITIONS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
                       ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """acc[s] += (B^T d B)[s] @ U[s] for one group of tile-position slots s (a batched tl.dot).

    transform: [S, positions] rows of kron(B^T, B^T); patches: [positions, BLOCK_T*BLOCK_C]
    input tiles. The transform accumulates in fp32: its small integer coefficients are exact
    in fp16/bf16, so this is the fp32 transform, rounded once to the GEMM's input dtype.
    """
    v = tl.dot(transform, patches, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
    v = tl.reshape(v, (transform.shape[0], BLOCK_T, BLOCK_C)).to(u_ptr.dtype.element_ty)
    u = tl.load(u_ptr + slots[:, None, None] * su_pos + c[None, :, None] * su_c + k[None, None, :],
                mask=(slots < POSITIONS)[:, None, None] & c_ok[None, :, None] & k_ok[None, None, :], other=0.0)
    return tl.dot(v, u, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)


@triton.jit
def _winograd_forward_kernel(
    x_ptr, u_ptr, bt_ptr, at_ptr, out_ptr, bias_ptr, scale_ptr, shift_ptr, res_ptr,
    N, H, W, P, Q, C, K, TILES_H, TILES_W,
    sx_n, sx_c, sx_h, sx_w,
    su_pos, su_c,
    so_n, so_k, so_p, so_q,
    sr_n, sr_k, sr_p, sr_q,
    pad_h, pad_w,
    M_OUT: tl.constexpr, POSITIONS_PAD: tl.constexpr, SLOTS_A: tl.constexpr, SLOTS_B: tl.constexpr,
    OUTPUTS_PAD: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    ACTIVATION: tl.constexpr, ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    USE_INT64: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Each program computes BLOCK_T output tiles (M_OUT x M_OUT pixels) x BLOCK_N channels.

    Grid: (tiles of the N*TILES_H*TILES_W x K problem,). Position (a, b) of the
    (M_OUT+2)^2 input tile is flattened to a*(M_OUT+2)+b and loaded into POSITIONS_PAD rows
    (a power of two). The elementwise stage runs on slots: SLOTS_A (all 16 of F(2x2)) and,
    when SLOTS_B > 0, a second group (F(4x4): 32 + 16 slots for 36 positions); slots past
    the last position have zero transform rows and masked filter loads.
    """
    ALPHA: tl.constexpr = M_OUT + 2
    pid = tl.program_id(0)
    num_tiles = N * TILES_H * TILES_W
    pid_t, pid_n = grouped_tile(pid, tl.cdiv(num_tiles, BLOCK_T), tl.cdiv(K, BLOCK_N), GROUP_M)

    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_t = offs_t < num_tiles
    mask_n = offs_n < K
    if USE_INT64:
        offs_t = offs_t.to(tl.int64)
    n = offs_t // (TILES_H * TILES_W)
    th = (offs_t // TILES_W) % TILES_H
    tw = offs_t % TILES_W
    k = offs_n
    if USE_INT64:
        k = k.to(tl.int64)

    # Input pixel of every (position, tile): [POSITIONS_PAD, BLOCK_T].
    pos = tl.arange(0, POSITIONS_PAD)
    h = th[None, :] * M_OUT - pad_h + (pos // ALPHA)[:, None]
    w = tw[None, :] * M_OUT - pad_w + (pos % ALPHA)[:, None]
    in_ok = (pos < ALPHA * ALPHA)[:, None] & mask_t[None, :] & (h >= 0) & (h < H) & (w >= 0) & (w < W)
    x_rows = n[None, :] * sx_n + h * sx_h + w * sx_w
    offs_c = tl.arange(0, BLOCK_C)

    slots_a = tl.arange(0, SLOTS_A).to(k.dtype)
    transform_a = tl.load(bt_ptr + slots_a[:, None] * POSITIONS_PAD + pos[None, :])
    acc_a = tl.zeros((SLOTS_A, BLOCK_T, BLOCK_N), dtype=ACC_DTYPE)
    if SLOTS_B > 0:
        slots_b = SLOTS_A + tl.arange(0, SLOTS_B).to(k.dtype)
        transform_b = tl.load(bt_ptr + slots_b[:, None] * POSITIONS_PAD + pos[None, :])
        acc_b = tl.zeros((SLOTS_B, BLOCK_T, BLOCK_N), dtype=ACC_DTYPE)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + offs_c
        c_ok = c < C
        d = tl.load(x_ptr + x_rows[:, :, None] + c[None, None, :] * sx_c,
                    mask=in_ok[:, :, None] & c_ok[None, None, :], other=0.0)
        patches = tl.reshape(d, (POSITIONS_PAD, BLOCK_T * BLOCK_C))
        acc_a = _position_products(transform_a, patches, u_ptr, slots_a, c, c_ok, k, mask_n, su_pos, su_c, acc_a,
                                   ALPHA * ALPHA, BLOCK_T, BLOCK_C, ACC_DTYPE, DOT_PRECISION)
        if SLOTS_B > 0:
            acc_b = _position_products(transform_b, patches, u_ptr, slots_b, c, c_ok, k, mask_n, su_pos, su_c,
                                       acc_b, ALPHA * ALPHA, BLOCK_T, BLOCK_C, ACC_DTYPE, DOT_PRECISION)

    # A^T M A in fp32: rows of the result are (output pixel o within the tile, tile).
    outs = tl.arange(0, OUTPUTS_PAD)
    at_rows = at_ptr + outs[:, None] * (SLOTS_A + SLOTS_B)
    y = tl.dot(tl.load(at_rows + slots_a[None, :]).to(ACC_DTYPE),
               tl.reshape(acc_a, (SLOTS_A, BLOCK_T * BLOCK_N)), input_precision="ieee", out_dtype=ACC_DTYPE)
    if SLOTS_B > 0:
        y = tl.dot(tl.load(at_rows + slots_b[None, :]).to(ACC_DTYPE),
                   tl.reshape(acc_b, (SLOTS_B, BLOCK_T * BLOCK_N)), y, input_precision="ieee", out_dtype=ACC_DTYPE)
    y = tl.reshape(y, (OUTPUTS_PAD * BLOCK_T, BLOCK_N))
    p = th[None, :] * M_OUT + (outs // M_OUT)[:, None]
    q = tw[None, :] * M_OUT + (outs % M_OUT)[:, None]
    out_ok = (outs < M_OUT * M_OUT)[:, None] & mask_t[None, :] & (p < P) & (q < Q)
    rows_n = tl.reshape(n[None, :] + 0 * p, (OUTPUTS_PAD * BLOCK_T,))
    store_conv_tile(
        y, rows_n, tl.reshape(p, (OUTPUTS_PAD * BLOCK_T,)), tl.reshape(q, (OUTPUTS_PAD * BLOCK_T,)), k,
        tl.reshape(out_ok, (OUTPUTS_PAD * BLOCK_T,)), mask_n,
        out_ptr, so_n, so_k, so_p, so_q,
        bias_ptr, scale_ptr, shift_ptr,
        res_ptr, sr_n, sr_k, sr_p, sr_q,
        HAS_BIAS, HAS_SCALE, HAS_RESIDUAL, ACTIVATION,
    )


_KEY = ["N", "H", "W", "C", "K", "ACC_DTYPE", "DOT_PRECISION", "USE_INT64"]


def _examples(m_out: int, tile: WinogradTile):
    sizes = dict(M_OUT=m_out, POSITIONS_PAD=tile.padded_positions, SLOTS_A=tile.slot_groups[0],
                 SLOTS_B=tile.slot_groups[1], OUTPUTS_PAD=tile.padded_outputs)
    plain = dict(HAS_BIAS=True, HAS_SCALE=False, HAS_RESIDUAL=False, ACTIVATION=0, USE_INT64=False)
    return [
        # channels_last activations: c (and the transformed filter's k) contiguous.
        dict(constexprs=dict(sizes, **plain, ACC_DTYPE=tl.float32, DOT_PRECISION="ieee"),
             dtype="fp16",
             ones=("sx_c", "so_k"), aligned=True),
        dict(constexprs=dict(sizes, HAS_BIAS=True, HAS_SCALE=True, HAS_RESIDUAL=True, ACTIVATION=1, USE_INT64=True,
                             ACC_DTYPE=tl.float32, DOT_PRECISION="ieee"),
             dtype="bf16"),
        dict(constexprs=dict(sizes, **plain, ACC_DTYPE=tl.float32, DOT_PRECISION="ieee"),
             dtype="fp32"),
    ]


# H100 configs, from the sm_90 compile report: none spills in the fp16 channels_last variant.
# Every position holds its own [BLOCK_T, BLOCK_C] and [BLOCK_C, BLOCK_N] operand tiles and
# [BLOCK_T, BLOCK_N] accumulator, so the tiles are small: F(2x2) (16 positions) with 16x16x16
# tiles already carries the operands of a 128x128x32 GEMM tile. F(4x4) (48 slots for its 36
# positions) fits only the minimum tile (every tl.dot dimension >= 16), at 254 registers.
WINOGRAD_F2_FORWARD = TunedKernel(
    _winograd_forward_kernel,
    configs=[
        config(BLOCK_T=16, BLOCK_N=32, BLOCK_C=16, GROUP_M=8, num_stages=2, num_warps=8),
        config(BLOCK_T=32, BLOCK_N=16, BLOCK_C=16, GROUP_M=8, num_stages=2, num_warps=8),
        config(BLOCK_T=16, BLOCK_N=16, BLOCK_C=32, GROUP_M=8, num_stages=3, num_warps=8),
        config(BLOCK_T=16, BLOCK_N=16, BLOCK_C=16, GROUP_M=8, num_stages=2, num_warps=4),
    ],
    key=_KEY,
    interpreter_config=config(BLOCK_T=16, BLOCK_N=16, BLOCK_C=16, GROUP_M=2, num_stages=1),
    tile_operands=[("BLOCK_T", "BLOCK_C"), ("BLOCK_C", "BLOCK_N")],
    examples=_examples(2, F2),
)
WINOGRAD_F4_FORWARD = TunedKernel(
    _winograd_forward_kernel,
    configs=[
        config(BLOCK_T=16, BLOCK_N=16, BLOCK_C=16, GROUP_M=8, num_stages=2, num_warps=8),
    ],
    key=_KEY,
    interpreter_config=config(BLOCK_T=16, BLOCK_N=16, BLOCK_C=16, GROUP_M=2, num_stages=1),
    tile_operands=[("BLOCK_T", "BLOCK_C"), ("BLOCK_C", "BLOCK_N")],
    examples=_examples(4, F4),
)
_KERNELS = {F2.name: WINOGRAD_F2_FORWARD, F4.name: WINOGRAD_F4_FORWARD}


def unsupported(params: ConvParams) -> Optional[str]:
    """None when Winograd F(m x m, 3x3) applies, else the failed condition."""
    if (params.r, params.s) != (3, 3):
        return f"winograd needs a 3x3 kernel, got {params.r}x{params.s}"
    if params.stride != (1, 1):
        return f"winograd needs stride 1, got stride={list(params.stride)}"
    if params.dilation != (1, 1):
        return f"winograd needs dilation 1, got dilation={list(params.dilation)}"
    if params.groups != 1:
        return f"winograd needs groups=1, got groups={params.groups}"
    return None


def winograd_forward(tile: WinogradTile, x, w, bias, params: ConvParams, *,
                     scale=None, shift=None, residual=None, activation=0):
    """Launch the fused Winograd forward; returns a new output in PyTorch's memory format."""
    out = new_output(params, x.device)
    if out.numel() == 0:
        return out
    u = FILTER_CACHE.get(w, tile)
    input_t, output_t = kernel_matrices(tile, params.dtype, x.device)
    epilogue = epilogue_arguments(out, bias, scale, shift, residual, activation)
    tiles_h, tiles_w = triton.cdiv(params.p, tile.m), triton.cdiv(params.q, tile.m)
    num_tiles = params.n * tiles_h * tiles_w
    grid = lambda meta: (triton.cdiv(num_tiles, meta["BLOCK_T"]) * triton.cdiv(params.k, meta["BLOCK_N"]),)
    _KERNELS[tile.name][grid](
        x, u, input_t, output_t, out,
        *epilogue.pointers,
        params.n, params.h, params.w, params.p, params.q, params.c, params.k, tiles_h, tiles_w,
        *x.stride(), u.stride(0), u.stride(1), *out.stride(), *epilogue.residual_strides,
        params.pad_top, params.pad_left,
        M_OUT=tile.m, POSITIONS_PAD=tile.padded_positions, SLOTS_A=tile.slot_groups[0],
        SLOTS_B=tile.slot_groups[1], OUTPUTS_PAD=tile.padded_outputs,
        **epilogue.flags,
        ACC_DTYPE=acc_dtype(params.dtype), DOT_PRECISION=dot_precision(params.dtype),
        USE_INT64=needs_int64(x, u, out, epilogue.residual_or_out),
    )
    return out


def winograd_counts(tile: WinogradTile, params: ConvParams) -> Dict[str, int]:
    """Direct MACs, the elementwise stage's true multiplies, and the transforms separately.

    ``multiplies``: (m+2)^2 per m x m output tile per (c, k), tiles covering P x Q (edge
    tiles count whole). ``*_transform_flops``: adds and multiplies of the separable
    transforms (one per nonzero matrix entry, applied to rows then columns).
    ``kernel_multiplies``: what this kernel issues for the elementwise stage, with the
    positions in power-of-two slot groups (F(4x4): 32 + 16 slots for 36 positions).
    """
    tiles = params.n * triton.cdiv(params.p, tile.m) * triton.cdiv(params.q, tile.m)
    a, m = tile.alpha, tile.m
    return {
        "macs": params.macs,
        "multiplies": tiles * tile.positions * params.c * params.k,
        "input_transform_flops": tiles * params.c * 2 * a * nonzeros(tile.BT),
        "filter_transform_flops": params.c * params.k * (3 + a) * nonzeros(tile.G),
        "output_transform_flops": tiles * params.k * (a + m) * nonzeros(tile.AT),
        "kernel_multiplies": tiles * sum(tile.slot_groups) * params.c * params.k,
    }


# Worst ||out - ref|| ratio to im2col's in the README's error study, per tile and dtype
# (interpreter, scaled-down VGG-16 / ResNet-50 layers); fp64 behaves like fp32.
MEASURED_ERROR_RATIO = {
    F2.name: {torch.float32: 2.0, torch.float64: 2.0, torch.float16: 2.4, torch.bfloat16: 1.9},
    F4.name: {torch.float32: 13.0, torch.float64: 13.0, torch.float16: 14.9, torch.bfloat16: 8.0},
}


def _register(tile: WinogradTile):
    register(Algorithm(
        name=tile.name,
        unsupported=unsupported,
        forward=functools.partial(winograd_forward, tile),
        count=functools.partial(winograd_counts, tile),
        description=f"fused Winograd F({tile.m}x{tile.m},3x3): transform, batched GEMM over "
                    f"{tile.positions} tile positions, inverse transform",
        error_ratio=MEASURED_ERROR_RATIO[tile.name].__getitem__,
    ))


for _tile in TILES.values():
    _register(_tile)


def choose_tile(params: ConvParams) -> str:
    """F(2x2) or F(4x4) for ``algorithm="winograd"``, from the error study in README.

    fp16/bf16: F(2x2). Its error is about 2x im2col's; F(4x4)'s is 8-15x (fp16 2.7e-3,
    bf16 2.4e-2 relative), more than those formats' own rounding. fp32/fp64: F(4x4) (up to
    13x im2col's error, still ~1e-6 relative in fp32) for 4x fewer multiplies, unless the
    output is smaller than one 4x4 tile, where most of its work would be padding.
    """
    if params.dtype in (torch.float16, torch.bfloat16) or min(params.p, params.q) < F4.m:
        return F2.name
    return F4.name


register_alias("winograd", choose_tile)
