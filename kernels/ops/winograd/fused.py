"""The fused Winograd forward: transform, elementwise stage and inverse transform in one kernel.

Each program takes BLOCK_T output tiles (m x m pixels each) x BLOCK_N output channels and
runs the three Winograd stages without writing intermediates to global memory:

1. input transform V = B^T d B of each (m+2) x (m+2) input tile, in fp32, as one matrix
   product with kron(B^T, B^T) over the flattened tile;
2. the elementwise stage as a batched GEMM over the (m+2)^2 tile positions on tensor cores
   (``tl.dot`` on [positions, tiles, channels] x [positions, channels, out-channels]),
   reducing over input channels, with the transformed filter U = G g G^T (cached, see
   ``transforms.py``);
3. output transform Y = A^T M A (kron(A^T, A^T) again), then the shared epilogue.

A 3-D ``tl.dot`` lowers to mma.sync (not wgmma) and every position carries its own operand
and accumulator tiles, so the tiles are small. It moves no transformed tensor through memory,
which is why ``plan.choose_path`` keeps it for layers with few channels, where the
three-stage path's traffic dominates.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...core.launcher import TunedKernel, config
from ...core.params import ConvParams
from ..common import acc_dtype, dot_precision, needs_int64, new_output
from ..epilogue import epilogue_arguments
from ..tiles import gemm_tile
from .tiles import load_input_patches, store_output_tiles, tile_coordinates
from .transforms import CHANNEL_QUANTUM, F2, F4, FILTER_CACHE, WinogradTile, kernel_matrices


@triton.jit
def _position_products(transform, patches, u_ptr, slots, c, k, k_ok, su_pos, su_k, acc,
                       POSITIONS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
                       ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """acc[s] += (B^T d B)[s] @ U[s] for one group of tile-position slots s (a batched tl.dot).

    transform: [S, positions] rows of kron(B^T, B^T); patches: [positions, BLOCK_T*BLOCK_C]
    input tiles. The transform accumulates in fp32: its small integer coefficients are exact
    in fp16/bf16, so this is the fp32 transform, rounded once to the GEMM's input dtype.
    U's channels are zero-padded to a multiple of CHANNEL_QUANTUM, which BLOCK_C divides, so
    its loads need no channel mask (and stay 16-byte vectors for any C).
    """
    v = tl.dot(transform, patches, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
    v = tl.reshape(v, (transform.shape[0], BLOCK_T, BLOCK_C)).to(u_ptr.dtype.element_ty)
    u = tl.load(u_ptr + slots[:, None, None] * su_pos + c[None, :, None] + k[None, None, :] * su_k,
                mask=(slots < POSITIONS)[:, None, None] & k_ok[None, None, :], other=0.0)
    return tl.dot(v, u, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)


@triton.jit
def _winograd_fused_kernel(
    # pointers: input, transformed filter, the two transform matrices, output
    x_ptr, u_ptr, bt_ptr, at_ptr, out_ptr,
    # sizes
    N, H, W, P, Q, C, K, TILES_H, TILES_W,
    # strides of the input, the transformed filter and the output
    sx_n, sx_c, sx_h, sx_w,
    su_pos, su_k,
    so_n, so_k, so_p, so_q,
    # geometry
    pad_h, pad_w,
    # the epilogue (``epilogue.store_conv_tile``): per-channel vectors, residual and its strides, flags
    bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr,
    # meta-parameters
    M_OUT: tl.constexpr, POSITIONS_PAD: tl.constexpr, SLOTS_A: tl.constexpr, SLOTS_B: tl.constexpr,
    OUTPUTS_PAD: tl.constexpr, ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Each program computes BLOCK_T output tiles (M_OUT x M_OUT pixels) x BLOCK_N channels.

    Grid: (tiles of the N*TILES_H*TILES_W x K problem,). The (M_OUT+2)^2 positions of an
    input tile load into POSITIONS_PAD rows (a power of two). The elementwise stage runs on
    slots: SLOTS_A (all 16 of F(2x2)) and, when SLOTS_B > 0, a second group (F(4x4): 32 + 16
    slots for 36 positions); slots past the last position have zero transform rows and
    masked filter loads. U is [positions, K, C_pad] with C contiguous.
    """
    ALPHA: tl.constexpr = M_OUT + 2
    pid = tl.program_id(0)
    num_tiles = N * TILES_H * TILES_W
    offs_t, offs_n, mask_t, mask_n = gemm_tile(pid, num_tiles, K, BLOCK_T, BLOCK_N, GROUP_M)
    if USE_INT64:
        offs_t = offs_t.to(tl.int64)
    n, th, tw = tile_coordinates(offs_t, TILES_H, TILES_W)
    k = offs_n
    if USE_INT64:
        k = k.to(tl.int64)

    pos = tl.arange(0, POSITIONS_PAD)
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
        d = load_input_patches(x_ptr, pos, n, th, tw, mask_t, c, c_ok, H, W, sx_n, sx_c, sx_h, sx_w, pad_h, pad_w,
                               M_OUT)
        patches = tl.reshape(d, (POSITIONS_PAD, BLOCK_T * BLOCK_C))
        acc_a = _position_products(transform_a, patches, u_ptr, slots_a, c, k, mask_n, su_pos, su_k, acc_a,
                                   ALPHA * ALPHA, BLOCK_T, BLOCK_C, ACC_DTYPE, DOT_PRECISION)
        if SLOTS_B > 0:
            acc_b = _position_products(transform_b, patches, u_ptr, slots_b, c, k, mask_n, su_pos, su_k,
                                       acc_b, ALPHA * ALPHA, BLOCK_T, BLOCK_C, ACC_DTYPE, DOT_PRECISION)

    # A^T M A in fp32: rows of the result are output pixels o of a tile, columns (tile, channel).
    outs = tl.arange(0, OUTPUTS_PAD)
    at_rows = at_ptr + outs[:, None] * (SLOTS_A + SLOTS_B)
    y = tl.dot(tl.load(at_rows + slots_a[None, :]).to(ACC_DTYPE),
               tl.reshape(acc_a, (SLOTS_A, BLOCK_T * BLOCK_N)), input_precision="ieee", out_dtype=ACC_DTYPE)
    if SLOTS_B > 0:
        y = tl.dot(tl.load(at_rows + slots_b[None, :]).to(ACC_DTYPE),
                   tl.reshape(acc_b, (SLOTS_B, BLOCK_T * BLOCK_N)), y, input_precision="ieee", out_dtype=ACC_DTYPE)
    store_output_tiles(
        y, n, th, tw, mask_t, k, mask_n, P, Q,
        (out_ptr, so_n, so_k, so_p, so_q),
        (bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
         HAS_BIAS, HAS_SCALE, HAS_RESIDUAL, ACTIVATION),
        M_OUT, OUTPUTS_PAD, BLOCK_T, BLOCK_N,
    )


_KEY = ["N", "H", "W", "C", "K", "ACC_DTYPE", "DOT_PRECISION", "USE_INT64"]


# H100 configs, from the sm_90 compile report: none spills in the fp16 channels_last variant.
# Every position holds its own [BLOCK_T, BLOCK_C] and [BLOCK_C, BLOCK_N] operand tiles and
# [BLOCK_T, BLOCK_N] accumulator, so the tiles are small: F(2x2) (16 positions) with 16x16x16
# tiles already carries the operands of a 128x128x32 GEMM tile. F(4x4) (48 slots for its 36
# positions) fits only the minimum tile (every tl.dot dimension >= 16).
WINOGRAD_F2_FUSED = TunedKernel(
    _winograd_fused_kernel,
    configs=[
        config(BLOCK_T=16, BLOCK_N=32, BLOCK_C=16, GROUP_M=8, num_stages=2, num_warps=8),
        config(BLOCK_T=32, BLOCK_N=16, BLOCK_C=16, GROUP_M=8, num_stages=2, num_warps=8),
        config(BLOCK_T=16, BLOCK_N=16, BLOCK_C=32, GROUP_M=8, num_stages=3, num_warps=8),
        config(BLOCK_T=16, BLOCK_N=16, BLOCK_C=16, GROUP_M=8, num_stages=2, num_warps=4),
    ],
    key=_KEY,
    interpreter_config=config(BLOCK_T=16, BLOCK_N=16, BLOCK_C=16, GROUP_M=2, num_stages=1),
    tile_operands=[("BLOCK_T", "BLOCK_C"), ("BLOCK_C", "BLOCK_N")],
    tile_copies=sum(F2.slot_groups),
)
WINOGRAD_F4_FUSED = TunedKernel(
    _winograd_fused_kernel,
    configs=[
        config(BLOCK_T=16, BLOCK_N=16, BLOCK_C=16, GROUP_M=8, num_stages=2, num_warps=8),
        # fp64: two stages of 48 slots' tiles need 319 KB (sm_90 compile); one stage fits.
        config(BLOCK_T=16, BLOCK_N=16, BLOCK_C=16, GROUP_M=8, num_stages=1, num_warps=8),
    ],
    key=_KEY,
    interpreter_config=config(BLOCK_T=16, BLOCK_N=16, BLOCK_C=16, GROUP_M=2, num_stages=1),
    tile_operands=[("BLOCK_T", "BLOCK_C"), ("BLOCK_C", "BLOCK_N")],
    tile_copies=sum(F4.slot_groups),
)
_KERNELS = {F2.name: WINOGRAD_F2_FUSED, F4.name: WINOGRAD_F4_FUSED}
assert all(CHANNEL_QUANTUM % c.kwargs["BLOCK_C"] == 0 for kernel in _KERNELS.values()
           for c in [*kernel.configs, kernel.interpreter_config])


def fused_forward(tile: WinogradTile, x, w, bias, params: ConvParams, *,
                  scale=None, shift=None, residual=None, activation=0) -> torch.Tensor:
    """Launch the fused Winograd forward; returns a new output in PyTorch's memory format."""
    out = new_output(params, x.device)
    if out.numel() == 0:
        return out
    u = FILTER_CACHE.get(w, tile)
    input_t, output_t = kernel_matrices(tile, params.dtype, x.device, slots=sum(tile.slot_groups))
    epilogue = epilogue_arguments(out, bias, scale, shift, residual, activation)
    tiles_h, tiles_w = triton.cdiv(params.p, tile.m), triton.cdiv(params.q, tile.m)
    num_tiles = params.n * tiles_h * tiles_w
    grid = lambda meta: (triton.cdiv(num_tiles, meta["BLOCK_T"]) * triton.cdiv(params.k, meta["BLOCK_N"]),)
    _KERNELS[tile.name][grid](
        x, u, input_t, output_t, out,
        params.n, params.h, params.w, params.p, params.q, params.c, params.k, tiles_h, tiles_w,
        *x.stride(), u.stride(0), u.stride(1), *out.stride(),
        params.pad_top, params.pad_left,
        *epilogue.args, **epilogue.flags,
        M_OUT=tile.m, POSITIONS_PAD=tile.padded_positions, SLOTS_A=tile.slot_groups[0],
        SLOTS_B=tile.slot_groups[1], OUTPUTS_PAD=tile.padded_outputs,
        ACC_DTYPE=acc_dtype(params.dtype), DOT_PRECISION=dot_precision(params.dtype),
        USE_INT64=needs_int64(x, u, out, epilogue.residual_or_out),
    )
    return out
