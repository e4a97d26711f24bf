"""grad_weight's reduction in the frequency domain: per frequency, a sum over tiles.

The correlation of an input patch with its (zero-padded) grad_output tile is the tile's share of
grad_weight; in the frequency domain it is V[f, t, c] * conj(DY[f, t, k]). ``weight_grad.py`` takes
G = conj(DY) / (TH*TW) (the conjugate DFT matrices) and sums over the tiles here:

* tiled (groups with more than one input channel): DW[f, k, c] = sum_t G[f, k, t] V[f, c, t] per group,
  one complex GEMM per frequency reducing over the tiles (K/groups x C/groups x tiles) on tensor cores;
  G and V are stored tiles-contiguous for it (both operands K-major: TF32 wgmma cannot transpose);
* depthwise (one input channel per group): DW[f, k] = sum_t G[f, t, k] V[f, t, k // MULTIPLIER],
  elementwise per channel (no channel pair to share a GEMM): a bandwidth-bound sum over the tiles.

Both accumulate into DW across launches (``ACCUMULATE``) when the tiles run in batches; the sum order
is fixed, so the result is deterministic.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ...core.launcher import TunedKernel, config
from ..tiles import gemm_tile
from .product import _complex_dot


@triton.jit
def _fft_weight_product_kernel(
    # pointers: grad_output spectra G [2, F, K, tiles], input spectra V [2, F, C, tiles], DW [2, F, K, C_PER_GROUP]
    g_ptr, v_ptr, dw_ptr,
    # sizes
    TILES, FREQUENCIES, C_PER_GROUP, K_PER_GROUP,
    # strides (part, frequency, channel) of G and V (tiles contiguous: both operands K-major, as TF32
    # wgmma needs) and (part, frequency, k) of DW (channels contiguous)
    sg_part, sg_f, sg_k, sv_part, sv_f, sv_c, sw_part, sw_f, sw_k,
    # meta-parameters
    ACCUMULATE: tl.constexpr, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    FREQ_BLOCK: tl.constexpr,
):
    """Each program computes DW[:, f, k, c] for BLOCK_M output channels k x BLOCK_N input channels c
    of one group at FREQ_BLOCK frequencies from program_id(1) * FREQ_BLOCK (1 on a GPU: one 2-D GEMM
    per frequency), group = program_id(2): the complex sum over all TILES of G[f, k, t] V[f, c, t],
    added to DW when ACCUMULATE.

    Grid: (tiles of the K_PER_GROUP x C_PER_GROUP GEMM, ceil(F / FREQ_BLOCK), groups). One loop over the
    tiles in BLOCK_K steps.
    """
    pid = tl.program_id(0)
    f = tl.program_id(1) * FREQ_BLOCK + tl.arange(0, FREQ_BLOCK)
    g = tl.program_id(2)
    offs_m, offs_n, mask_m, mask_n = gemm_tile(pid, K_PER_GROUP, C_PER_GROUP, BLOCK_M, BLOCK_N, GROUP_M)
    if USE_INT64:
        f = f.to(tl.int64)
        offs_m = offs_m.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
    f_ok = (f < FREQUENCIES)[:, None, None]
    k = g * K_PER_GROUP + offs_m
    a_rows = g_ptr + f[:, None, None] * sg_f + k[None, :, None] * sg_k
    b_cols = v_ptr + f[:, None, None] * sv_f + (g * C_PER_GROUP + offs_n)[None, None, :] * sv_c
    offs_t = tl.arange(0, BLOCK_K)
    re = tl.zeros((FREQ_BLOCK, BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    im = tl.zeros((FREQ_BLOCK, BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for t0 in range(0, TILES, BLOCK_K):
        t = t0 + offs_t
        a_mask = f_ok & mask_m[None, :, None] & (t < TILES)[None, None, :]
        b_mask = f_ok & mask_n[None, None, :] & (t < TILES)[None, :, None]
        gr = tl.load(a_rows + t[None, None, :], mask=a_mask, other=0.0)
        gi = tl.load(a_rows + sg_part + t[None, None, :], mask=a_mask, other=0.0)
        vr = tl.load(b_cols + t[None, :, None], mask=b_mask, other=0.0)
        vi = tl.load(b_cols + sv_part + t[None, :, None], mask=b_mask, other=0.0)
        re, im = _complex_dot(gr, gi, vr, vi, re, im, FREQ_BLOCK, BLOCK_M, BLOCK_N, BLOCK_K, ACC_DTYPE, PRECISION)
    out = dw_ptr + f[:, None, None] * sw_f + k[None, :, None] * sw_k + offs_n[None, None, :]
    mask = f_ok & mask_m[None, :, None] & mask_n[None, None, :]
    if ACCUMULATE:
        re += tl.load(out, mask=mask, other=0.0)
        im += tl.load(out + sw_part, mask=mask, other=0.0)
    tl.store(out, re, mask=mask)
    tl.store(out + sw_part, im, mask=mask)


@triton.jit
def _fft_depthwise_weight_product_kernel(
    # pointers: grad_output spectra G [2, F, tiles, K], input spectra V [2, F, tiles, C], DW [2, F, K, 1]
    g_ptr, v_ptr, dw_ptr,
    # sizes
    TILES, FREQUENCIES, K, MULTIPLIER,
    # strides (part, frequency, tile) of G and V and (part, frequency) of DW; channels contiguous
    sg_part, sg_f, sg_t, sv_part, sv_f, sv_t, sw_part, sw_f,
    # meta-parameters
    ACCUMULATE: tl.constexpr, ACC_DTYPE: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_F: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Each program computes DW[:, f, k] for BLOCK_F frequencies x BLOCK_K output channels k (input
    channel k // MULTIPLIER): the complex sum over all TILES of G[f, t, k] V[f, t, k // MULTIPLIER],
    added to DW when ACCUMULATE.

    Grid: (ceil(F / BLOCK_F), ceil(K / BLOCK_K)). One loop over the tiles.
    """
    f = tl.program_id(0) * BLOCK_F + tl.arange(0, BLOCK_F)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    if USE_INT64:
        f = f.to(tl.int64)
        k = k.to(tl.int64)
    mask = (f < FREQUENCIES)[:, None] & (k < K)[None, :]
    g_rows = g_ptr + f[:, None] * sg_f + k[None, :]
    v_rows = v_ptr + f[:, None] * sv_f + (k // MULTIPLIER)[None, :]
    re = tl.zeros((BLOCK_F, BLOCK_K), dtype=ACC_DTYPE)
    im = tl.zeros((BLOCK_F, BLOCK_K), dtype=ACC_DTYPE)
    for _ in range(0, TILES):
        gr = tl.load(g_rows, mask=mask, other=0.0)
        gi = tl.load(g_rows + sg_part, mask=mask, other=0.0)
        vr = tl.load(v_rows, mask=mask, other=0.0)
        vi = tl.load(v_rows + sv_part, mask=mask, other=0.0)
        re += gr * vr - gi * vi
        im += gr * vi + gi * vr
        g_rows += sg_t  # pointer steps: 64-bit, whatever the tile count
        v_rows += sv_t
    out = dw_ptr + f[:, None] * sw_f + k[None, :]
    if ACCUMULATE:
        re += tl.load(out, mask=mask, other=0.0)
        im += tl.load(out + sw_part, mask=mask, other=0.0)
    tl.store(out, re, mask=mask)
    tl.store(out + sw_part, im, mask=mask)


# As the forward product (``product.py``): two fp32 accumulators, 128 x 64 each at 8 warps.
WEIGHT_PRODUCT = TunedKernel(
    _fft_weight_product_kernel,
    configs=[
        config(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, GROUP_M=8, FREQ_BLOCK=1, num_stages=3, num_warps=8),
        config(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, GROUP_M=8, FREQ_BLOCK=1, num_stages=3, num_warps=4),
    ],
    key=["TILES", "C_PER_GROUP", "K_PER_GROUP", "ACC_DTYPE", "PRECISION", "USE_INT64"],
    interpreter_config=config(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2, FREQ_BLOCK=256, num_stages=1),
    tile_operands=[("BLOCK_M", "BLOCK_K"), ("BLOCK_K", "BLOCK_N")], tile_copies=2,
)

# 16 x 32 per program: RepLKNet's 31x31 at 128 channels (1024 frequencies of 32x32 tiles) is 256 programs.
DEPTHWISE_WEIGHT_PRODUCT = TunedKernel(
    _fft_depthwise_weight_product_kernel,
    configs=[config(BLOCK_F=16, BLOCK_K=32, num_stages=3, num_warps=4)],
    key=["TILES", "K", "ACC_DTYPE", "USE_INT64"],
    interpreter_config=config(BLOCK_F=256, BLOCK_K=16, num_stages=1),
)


def weight_product(g, v, dw, *, tiles, frequencies, c_per_group, k_per_group, groups, multiplier, depthwise,
                   accumulate, acc, precision, use_int64):
    """Launch the tiled or the depthwise reduction: DW (+)= sum over the batch's tiles of G x V; G and V
    are [2, F, tiles, channels] (depthwise: channels contiguous; tiled: tiles contiguous)."""
    if depthwise:
        strides = (g.stride(0), g.stride(1), g.stride(2), v.stride(0), v.stride(1), v.stride(2))
        k = k_per_group * groups
        DEPTHWISE_WEIGHT_PRODUCT[lambda meta: (triton.cdiv(frequencies, meta["BLOCK_F"]), triton.cdiv(k, meta["BLOCK_K"]))](
            g, v, dw, tiles, frequencies, k, multiplier, *strides, dw.stride(0), dw.stride(1),
            ACCUMULATE=accumulate, ACC_DTYPE=acc, USE_INT64=use_int64,
        )
        return
    strides = (g.stride(0), g.stride(1), g.stride(3), v.stride(0), v.stride(1), v.stride(3))
    WEIGHT_PRODUCT[lambda meta: (triton.cdiv(k_per_group, meta["BLOCK_M"]) * triton.cdiv(c_per_group, meta["BLOCK_N"]),
                                 triton.cdiv(frequencies, meta["FREQ_BLOCK"]), groups)](
        g, v, dw, tiles, frequencies, c_per_group, k_per_group, *strides, dw.stride(0), dw.stride(1), dw.stride(2),
        ACCUMULATE=accumulate, ACC_DTYPE=acc, PRECISION=precision, USE_INT64=use_int64,
    )
