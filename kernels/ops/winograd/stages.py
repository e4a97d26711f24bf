"""The three-stage Winograd forward: the elementwise stage as one 2-D GEMM per tile position.

For T = N * ceil(P/m) * ceil(Q/m) output tiles of m x m pixels and alpha = m + 2:

1. ``_winograd_input_transform_kernel``: V[s, t, c] = (B^T d_t,c B)[s] for every position s
   of the alpha x alpha input patch d of tile t, in fp32, rounded once to the input dtype.
   V is [alpha^2, T, C_pad], channels contiguous, zero in the padded channels.
2. ``_winograd_gemm_kernel``: M[s] = V[s] @ U[s] for every position s, a plain
   [T x C_pad] x [C_pad x K] GEMM per position (position = grid axis 1), fp32 accumulators,
   M [alpha^2, T, K] in fp32 (rounding M to fp16/bf16 would raise F(2x2)'s error from 2.35x
   to 2.84x im2col's in an emulation of the error study, past the bound the tests hold).
   U = G g G^T is [alpha^2, K, C_pad] (``transforms.filter_transform``, cached for
   frozen weights): both operands have the reduction (channel) dimension contiguous, one
   software-pipelined loop over C_pad, no channel mask.
3. ``_winograd_output_transform_kernel``: Y = A^T M_t A per tile and the shared epilogue.

Both transforms are small ``tl.dot`` products with kron(B^T, B^T) / kron(A^T, A^T) over the
flattened patch, with no loop (the input transform unrolls 16-position chunks). For fp16/bf16 the input transform's operands are
the input dtype itself: the coefficients are small integers, every product is exact in fp32,
so the tensor-core product with fp32 accumulation is the fp32 transform. The output
transform reads M in fp32; for fp16/bf16 outputs it runs as "tf32x3" (M split into two tf32
terms, ~2^-22 relative, far below the output's rounding; the coefficients are exact in tf32),
for fp32/fp64 outputs in IEEE arithmetic.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...core.launcher import TunedKernel, config
from ...core.params import ConvParams
from ..common import acc_dtype, dot_precision, needs_int64, new_buffer, new_output
from ..epilogue import epilogue_arguments
from ..tiles import gemm_tile
from .plan import tile_grid, transformed_output_dtype
from .tiles import load_input_patches, store_output_tiles, tile_coordinates
from .transforms import CHANNEL_QUANTUM, F2, F4, FILTER_CACHE, WinogradTile, kernel_matrices, padded_channels


@triton.jit
def _winograd_input_transform_kernel(
    # pointers: input, the input transform matrix, the transformed input V
    x_ptr, bt_ptr, v_ptr,
    # sizes
    N, H, W, C, TILES_H, TILES_W,
    # strides of the input and of V
    sx_n, sx_c, sx_h, sx_w,
    sv_p, sv_t,
    # geometry
    pad_h, pad_w,
    # meta-parameters
    M_OUT: tl.constexpr, POSITIONS_PAD: tl.constexpr, ACC_DTYPE: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Each program writes V[:, t, c] for BLOCK_T tiles t x BLOCK_C channels c.

    Grid: (ceil(T / BLOCK_T), C_pad / BLOCK_C). Channels in [C, C_pad) read as 0, so their V
    is 0 (BLOCK_C divides C_pad: no store mask on channels). The product with kron(B^T, B^T)
    reduces over the patch in chunks of 16 positions (unrolled): an fp32 IEEE product runs on
    FMAs, which hold the whole reduction extent per thread (64 positions spilled for F(4x4)).
    """
    ALPHA: tl.constexpr = M_OUT + 2
    CHUNK: tl.constexpr = 16
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    t_ok = offs_t < N * TILES_H * TILES_W
    rows = tl.arange(0, POSITIONS_PAD)
    if USE_INT64:
        offs_t = offs_t.to(tl.int64)
        rows = rows.to(tl.int64)
    n, th, tw = tile_coordinates(offs_t, TILES_H, TILES_W)
    v = tl.zeros((POSITIONS_PAD, BLOCK_T * BLOCK_C), dtype=ACC_DTYPE)
    for first in tl.static_range(0, POSITIONS_PAD, CHUNK):
        pos = first + tl.arange(0, CHUNK)
        d = load_input_patches(x_ptr, pos, n, th, tw, t_ok, c, c < C, H, W, sx_n, sx_c, sx_h, sx_w, pad_h, pad_w,
                               M_OUT)
        transform = tl.load(bt_ptr + rows[:, None] * POSITIONS_PAD + pos[None, :])
        v = tl.dot(transform, tl.reshape(d, (CHUNK, BLOCK_T * BLOCK_C)), v, input_precision="ieee",
                   out_dtype=ACC_DTYPE)
    v = tl.reshape(v, (POSITIONS_PAD, BLOCK_T, BLOCK_C))
    ok = (rows < ALPHA * ALPHA)[:, None, None] & t_ok[None, :, None]
    tl.store(v_ptr + rows[:, None, None] * sv_p + offs_t[None, :, None] * sv_t + c[None, None, :],
             v.to(v_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _winograd_gemm_kernel(
    # pointers: transformed input V, transformed filter U, their product M
    v_ptr, u_ptr, m_ptr,
    # sizes and the strides of V, U and M
    TILES, C_PAD, K,
    sv_p, sv_t, su_p, su_k, sm_p, sm_t,
    # meta-parameters
    ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Each program computes M[s, tiles, k] = V[s, tiles, :] @ U[s, k, :]^T for one tile
    position s = program_id(1), BLOCK_M tiles x BLOCK_N output channels.

    Grid: (tiles of the T x K GEMM, alpha^2 positions). One loop over C_PAD in BLOCK_K steps
    (BLOCK_K divides C_PAD); both operands have their reduction dimension contiguous.
    """
    pid = tl.program_id(0)
    s = tl.program_id(1)
    offs_m, offs_n, mask_m, mask_n = gemm_tile(pid, TILES, K, BLOCK_M, BLOCK_N, GROUP_M)
    if USE_INT64:
        s = s.to(tl.int64)
        offs_m = offs_m.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
    a_rows = v_ptr + s * sv_p + offs_m * sv_t
    b_cols = u_ptr + s * su_p + offs_n * su_k
    offs_c = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for c0 in range(0, C_PAD, BLOCK_K):
        c = c0 + offs_c
        a = tl.load(a_rows[:, None] + c[None, :], mask=mask_m[:, None], other=0.0)
        b = tl.load(b_cols[None, :] + c[:, None], mask=mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
    tl.store(m_ptr + s * sm_p + offs_m[:, None] * sm_t + offs_n[None, :], acc,
             mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _winograd_output_transform_kernel(
    # pointers: the GEMM's result M, the output transform matrix, output
    m_ptr, at_ptr, out_ptr,
    # sizes
    N, P, Q, K, TILES_H, TILES_W,
    # strides of M and of the output
    sm_p, sm_t,
    so_n, so_k, so_p, so_q,
    # the epilogue (``epilogue.store_conv_tile``): per-channel vectors, residual and its strides, flags
    bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr,
    # meta-parameters
    M_OUT: tl.constexpr, POSITIONS_PAD: tl.constexpr, OUTPUTS_PAD: tl.constexpr,
    ACC_DTYPE: tl.constexpr, TRANSFORM_PRECISION: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Each program finishes BLOCK_T tiles x BLOCK_N output channels: Y = A^T M A, then
    bias, BN scale/shift, residual, activation and the store (``store_conv_tile``).

    Grid: (ceil(T / BLOCK_T), ceil(K / BLOCK_N)).
    """
    ALPHA: tl.constexpr = M_OUT + 2
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    k = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    t_ok = offs_t < N * TILES_H * TILES_W
    k_ok = k < K
    pos = tl.arange(0, POSITIONS_PAD)
    if USE_INT64:
        offs_t = offs_t.to(tl.int64)
        k = k.to(tl.int64)
        pos = pos.to(tl.int64)
    m = tl.load(m_ptr + pos[:, None, None] * sm_p + offs_t[None, :, None] * sm_t + k[None, None, :],
                mask=(pos < ALPHA * ALPHA)[:, None, None] & t_ok[None, :, None] & k_ok[None, None, :], other=0.0)
    outs = tl.arange(0, OUTPUTS_PAD)
    transform = tl.load(at_ptr + outs[:, None] * POSITIONS_PAD + pos[None, :]).to(ACC_DTYPE)
    y = tl.dot(transform, tl.reshape(m, (POSITIONS_PAD, BLOCK_T * BLOCK_N)), input_precision=TRANSFORM_PRECISION,
               out_dtype=ACC_DTYPE)
    n, th, tw = tile_coordinates(offs_t, TILES_H, TILES_W)
    store_output_tiles(
        y, n, th, tw, t_ok, k, k_ok, P, Q,
        (out_ptr, so_n, so_k, so_p, so_q),
        (bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
         HAS_BIAS, HAS_SCALE, HAS_RESIDUAL, ACTIVATION),
        M_OUT, OUTPUTS_PAD, BLOCK_T, BLOCK_N,
    )


# GEMM tiles for an H100 (every BLOCK_K divides CHANNEL_QUANTUM). The first is the one the
# sm_90 launch report shows (it records the first config that compiles and fits); on a GPU
# the autotuner times them all. The shared-memory estimate counts 4-byte elements here (the
# fp32 M pointer is the widest argument), so 3 stages is the most a 128x128x64 tile passes.
GEMM_CONFIGS = [
    config(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_stages=3, num_warps=8),
    config(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_stages=3, num_warps=8),
    config(BLOCK_M=128, BLOCK_N=64, BLOCK_K=64, GROUP_M=8, num_stages=4, num_warps=4),
    config(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_stages=4, num_warps=4),
    config(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, GROUP_M=8, num_stages=4, num_warps=4),
    config(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32, GROUP_M=8, num_stages=4, num_warps=8),
]
assert all(CHANNEL_QUANTUM % c.kwargs["BLOCK_K"] == 0 for c in GEMM_CONFIGS)

WINOGRAD_GEMM = TunedKernel(
    _winograd_gemm_kernel,
    configs=GEMM_CONFIGS,
    key=["TILES", "C_PAD", "K", "ACC_DTYPE", "DOT_PRECISION", "USE_INT64"],
    interpreter_config=config(BLOCK_M=32, BLOCK_N=16, BLOCK_K=64, GROUP_M=2, num_stages=1),
    tile_operands=[("BLOCK_M", "BLOCK_K"), ("BLOCK_K", "BLOCK_N")],
)


class _Transforms:
    """The input- and output-transform kernels of one tile size, with configs sized for its
    patch: the transform products are [alpha^2 padded] x [columns] tiles held in registers."""

    def __init__(self, tile: WinogradTile, input_configs, output_configs):
        self.input = TunedKernel(
            _winograd_input_transform_kernel, configs=input_configs,
            key=["N", "H", "W", "C", "ACC_DTYPE", "USE_INT64"],
            interpreter_config=config(BLOCK_T=16, BLOCK_C=64, num_stages=1),
)
        self.output = TunedKernel(
            _winograd_output_transform_kernel, configs=output_configs,
            key=["N", "P", "Q", "K", "ACC_DTYPE", "TRANSFORM_PRECISION", "USE_INT64"],
            interpreter_config=config(BLOCK_T=16, BLOCK_N=16, num_stages=1),
)
        assert all(CHANNEL_QUANTUM % c.kwargs["BLOCK_C"] == 0 for c in [*input_configs, self.input.interpreter_config])


# F(2x2): 16 positions, so wide column blocks; F(4x4): 36 positions padded to 64 rows (its
# input transform at 128 columns per 8 warps stays near 100 registers in fp16 and fp32). The
# output transform holds M, its two tf32x3 halves and Y: 512 columns per 8 warps (F(2x2)) keep
# it near 70 registers, twice that went to ~175.
_TRANSFORMS = {
    F2.name: _Transforms(
        F2,
        input_configs=[config(BLOCK_T=16, BLOCK_C=64, num_stages=1, num_warps=8),
                       config(BLOCK_T=8, BLOCK_C=64, num_stages=1, num_warps=8),
                       config(BLOCK_T=32, BLOCK_C=32, num_stages=1, num_warps=8)],
        output_configs=[config(BLOCK_T=8, BLOCK_N=64, num_stages=1, num_warps=8),
                        config(BLOCK_T=4, BLOCK_N=64, num_stages=1, num_warps=4),
                        config(BLOCK_T=16, BLOCK_N=32, num_stages=1, num_warps=8)]),
    F4.name: _Transforms(
        F4,
        input_configs=[config(BLOCK_T=2, BLOCK_C=64, num_stages=1, num_warps=8),
                       config(BLOCK_T=1, BLOCK_C=64, num_stages=1, num_warps=4),
                       config(BLOCK_T=2, BLOCK_C=32, num_stages=1, num_warps=4)],
        output_configs=[config(BLOCK_T=2, BLOCK_N=64, num_stages=1, num_warps=8),
                        config(BLOCK_T=2, BLOCK_N=32, num_stages=1, num_warps=4),
                        config(BLOCK_T=4, BLOCK_N=32, num_stages=1, num_warps=8)]),
}


def output_transform_precision(dtype: torch.dtype) -> str:
    """fp16/bf16 outputs: "tf32x3" (tensor cores, error far below the output's rounding);
    fp32/fp64: IEEE."""
    return "tf32x3" if dtype in (torch.float16, torch.bfloat16) else "ieee"


def three_stage_forward(tile: WinogradTile, x, w, bias, params: ConvParams, *,
                        scale=None, shift=None, residual=None, activation=0) -> torch.Tensor:
    """Input transform, one GEMM per position, output transform; returns a new output in
    PyTorch's memory format."""
    out = new_output(params, x.device)
    if out.numel() == 0:
        return out
    u = FILTER_CACHE.get(w, tile)  # [positions, K, C_pad]
    tiles_h, tiles_w, num_tiles = tile_grid(tile, params)
    c_pad = padded_channels(params.c)
    v = new_buffer((tile.positions, num_tiles, c_pad), params.dtype, x.device)
    m = new_buffer((tile.positions, num_tiles, params.k), transformed_output_dtype(params.dtype), x.device)
    input_t, output_t = kernel_matrices(tile, params.dtype, x.device, slots=tile.padded_positions)
    epilogue = epilogue_arguments(out, bias, scale, shift, residual, activation)
    use_int64 = needs_int64(x, v, u, m, out, epilogue.residual_or_out)
    acc = acc_dtype(params.dtype)
    kernels = _TRANSFORMS[tile.name]

    kernels.input[lambda meta: (triton.cdiv(num_tiles, meta["BLOCK_T"]), c_pad // meta["BLOCK_C"])](
        x, input_t, v,
        params.n, params.h, params.w, params.c, tiles_h, tiles_w,
        *x.stride(), v.stride(0), v.stride(1),
        params.pad_top, params.pad_left,
        M_OUT=tile.m, POSITIONS_PAD=tile.padded_positions, ACC_DTYPE=acc, USE_INT64=use_int64,
    )
    WINOGRAD_GEMM[lambda meta: (triton.cdiv(num_tiles, meta["BLOCK_M"]) * triton.cdiv(params.k, meta["BLOCK_N"]),
                                tile.positions)](
        v, u, m,
        num_tiles, c_pad, params.k,
        v.stride(0), v.stride(1), u.stride(0), u.stride(1), m.stride(0), m.stride(1),
        ACC_DTYPE=acc, DOT_PRECISION=dot_precision(params.dtype), USE_INT64=use_int64,
    )
    kernels.output[lambda meta: (triton.cdiv(num_tiles, meta["BLOCK_T"]), triton.cdiv(params.k, meta["BLOCK_N"]))](
        m, output_t, out,
        params.n, params.p, params.q, params.k, tiles_h, tiles_w,
        m.stride(0), m.stride(1), *out.stride(),
        *epilogue.args, **epilogue.flags,
        M_OUT=tile.m, POSITIONS_PAD=tile.padded_positions, OUTPUTS_PAD=tile.padded_outputs,
        ACC_DTYPE=acc, TRANSFORM_PRECISION=output_transform_precision(params.dtype), USE_INT64=use_int64,
    )
    return out
