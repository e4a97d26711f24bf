"""The channel reduction of the tiled path: one complex GEMM per frequency.

Y[f, t, k] = sum_c V[f, t, c] * U[f, k, c] over the channels of k's group, complex, as four real
``tl.dot`` products into two fp32 accumulators (re += Vr Ur - Vi Ui, im += Vr Ui + Vi Ur).
"""
from __future__ import annotations

import triton
import triton.language as tl

from ...core.launcher import TunedKernel, config
from ..tiles import gemm_tile


@triton.jit
def _fft_product_kernel(
    # pointers: input spectra V [2, F, tiles, C], filter spectra U [2, F, K, C_PER_GROUP], products Y [2, F, tiles, K]
    v_ptr, u_ptr, y_ptr,
    # sizes
    TILES, FREQUENCIES, C_PER_GROUP, K_PER_GROUP,
    # strides (part, frequency, row) of V, U and Y; channels contiguous in all three
    sv_part, sv_f, sv_t, su_part, su_f, su_k, sy_part, sy_f, sy_t,
    # meta-parameters
    ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    FREQ_BLOCK: tl.constexpr,
):
    """Each program computes Y[:, f, tiles, k] for BLOCK_M tiles x BLOCK_N output channels of one group
    at FREQ_BLOCK frequencies from program_id(1) * FREQ_BLOCK, group = program_id(2). On a GPU
    FREQ_BLOCK = 1: one 2-D GEMM per frequency.

    Grid: (tiles of the TILES x K_PER_GROUP GEMM, ceil(F / FREQ_BLOCK), groups). One loop over the group's channels in
    BLOCK_K steps (masked past C_PER_GROUP: a reduction under 16 channels still has 16-wide dots).
    """
    pid = tl.program_id(0)
    f = tl.program_id(1) * FREQ_BLOCK + tl.arange(0, FREQ_BLOCK)
    g = tl.program_id(2)
    offs_m, offs_n, mask_m, mask_n = gemm_tile(pid, TILES, K_PER_GROUP, BLOCK_M, BLOCK_N, GROUP_M)
    if USE_INT64:
        f = f.to(tl.int64)
        offs_m = offs_m.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
    f_ok = (f < FREQUENCIES)[:, None, None]
    k = g * K_PER_GROUP + offs_n
    a_rows = v_ptr + f[:, None, None] * sv_f + offs_m[None, :, None] * sv_t + g * C_PER_GROUP
    b_cols = u_ptr + f[:, None, None] * su_f + k[None, None, :] * su_k
    offs_c = tl.arange(0, BLOCK_K)
    re = tl.zeros((FREQ_BLOCK, BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    im = tl.zeros((FREQ_BLOCK, BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for c0 in range(0, C_PER_GROUP, BLOCK_K):
        c = c0 + offs_c
        a_mask = f_ok & mask_m[None, :, None] & (c < C_PER_GROUP)[None, None, :]
        b_mask = f_ok & mask_n[None, None, :] & (c < C_PER_GROUP)[None, :, None]
        vr = tl.load(a_rows + c[None, None, :], mask=a_mask, other=0.0)
        vi = tl.load(a_rows + sv_part + c[None, None, :], mask=a_mask, other=0.0)
        ur = tl.load(b_cols + c[None, :, None], mask=b_mask, other=0.0)
        ui = tl.load(b_cols + su_part + c[None, :, None], mask=b_mask, other=0.0)
        re, im = _complex_dot(vr, vi, ur, ui, re, im, FREQ_BLOCK, BLOCK_M, BLOCK_N, BLOCK_K, ACC_DTYPE, PRECISION)
    out = y_ptr + f[:, None, None] * sy_f + offs_m[None, :, None] * sy_t + k[None, None, :]
    mask = f_ok & mask_m[None, :, None] & mask_n[None, None, :]
    tl.store(out, re, mask=mask)
    tl.store(out + sy_part, im, mask=mask)


@triton.jit
def _complex_dot(vr, vi, ur, ui, re, im, FREQ_BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_K: tl.constexpr, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    """re += vr ur - vi ui, im += vr ui + vi ur: 2-D dots (wgmma) for one frequency, batched 3-D dots
    for FREQ_BLOCK > 1 (the interpreter's setting: one program per frequency is slow there)."""
    if FREQ_BLOCK == 1:
        vr2 = tl.reshape(vr, (BLOCK_M, BLOCK_K))
        vi2 = tl.reshape(vi, (BLOCK_M, BLOCK_K))
        ur2 = tl.reshape(ur, (BLOCK_K, BLOCK_N))
        ui2 = tl.reshape(ui, (BLOCK_K, BLOCK_N))
        re2 = tl.reshape(re, (BLOCK_M, BLOCK_N))
        im2 = tl.reshape(im, (BLOCK_M, BLOCK_N))
        re2 = tl.dot(vr2, ur2, re2, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        re2 = tl.dot(-vi2, ui2, re2, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        im2 = tl.dot(vr2, ui2, im2, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        im2 = tl.dot(vi2, ur2, im2, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        return tl.reshape(re2, (1, BLOCK_M, BLOCK_N)), tl.reshape(im2, (1, BLOCK_M, BLOCK_N))
    else:
        re = tl.dot(vr, ur, re, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        re = tl.dot(-vi, ui, re, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        im = tl.dot(vr, ui, im, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        im = tl.dot(vi, ur, im, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        return re, im


# Two fp32 accumulators per program: 128 x 64 each at 8 warps is 64 registers per thread.
PRODUCT_CONFIGS = [
    config(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, GROUP_M=8, FREQ_BLOCK=1, num_stages=3, num_warps=8),
    config(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, GROUP_M=8, FREQ_BLOCK=1, num_stages=3, num_warps=4),
    config(BLOCK_M=128, BLOCK_N=64, BLOCK_K=16, GROUP_M=8, FREQ_BLOCK=1, num_stages=4, num_warps=8),
]

PRODUCT = TunedKernel(
    _fft_product_kernel, configs=PRODUCT_CONFIGS,
    key=["TILES", "C_PER_GROUP", "K_PER_GROUP", "ACC_DTYPE", "PRECISION", "USE_INT64"],
    interpreter_config=config(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2, FREQ_BLOCK=256, num_stages=1),
    tile_operands=[("BLOCK_M", "BLOCK_K"), ("BLOCK_K", "BLOCK_N")], tile_copies=2,
)


def product(v, u, y, tiles, frequencies, c_per_group, k_per_group, groups, acc, precision, use_int64):
    """Launch ``_fft_product_kernel``: Y = V x U per frequency and group."""
    PRODUCT[lambda meta: (triton.cdiv(tiles, meta["BLOCK_M"]) * triton.cdiv(k_per_group, meta["BLOCK_N"]),
                          triton.cdiv(frequencies, meta["FREQ_BLOCK"]), groups)](
        v, u, y, tiles, frequencies, c_per_group, k_per_group,
        v.stride(0), v.stride(1), v.stride(2), u.stride(0), u.stride(1), u.stride(2),
        y.stride(0), y.stride(1), y.stride(2),
        ACC_DTYPE=acc, PRECISION=precision, USE_INT64=use_int64,
    )
