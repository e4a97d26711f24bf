"""The depthwise FFT path: one kernel per tile does DFT -> multiply -> inverse DFT.

A depthwise layer (one input channel per group) has no channel reduction: its per-frequency product
is elementwise, so each program transforms its patches, multiplies them by the filter spectrum and
transforms back in registers. Only the filter spectrum U (one patch per output channel, from
``spectrum.py``) is in memory; the transformed input and products never reach HBM.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ...core.launcher import TunedKernel, config
from .dft import forward_dft, inverse_dft, load_patches, load_sequences, store_output, tile_origin


@triton.jit
def _fft_depthwise_kernel(
    # pointers: input, forward DFT matrices (width, height), filter spectra U [2, F, K],
    # inverse DFT matrices (height, width), forward and inverse twiddles (LONG), output
    x_ptr, fr_ptr, fc_ptr, u_ptr, ic_ptr, ir_ptr, tc_ptr, ts_ptr, itc_ptr, its_ptr, out_ptr,
    # sizes: tiles, input size, output channels and the channel multiplier, output size and tiling
    TILES, H, W, K, MULTIPLIER, P, Q, TILES_H, TILES_W, MH, MW,
    # strides of the input, of U (part, frequency; output channels contiguous) and of the output
    sx_n, sx_c, sx_h, sx_w,
    su_part, su_f,
    so_n, so_k, so_p, so_q,
    # the patch origin offset (top / left padding)
    pad_h, pad_w,
    # the epilogue (``epilogue.store_conv_tile``)
    bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr,
    # meta-parameters
    TH: tl.constexpr, TW: tl.constexpr, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
    USE_INT64: tl.constexpr, LONG: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Each program computes BLOCK_T output tiles x BLOCK_N output channels k (input channel
    k // MULTIPLIER): the patches' spectra (two GEMMs), times U[:, :, k] (complex, elementwise),
    inverse DFT (two GEMMs), crop, epilogue.

    Grid: (ceil(TILES / BLOCK_T), ceil(K / BLOCK_N)). LONG (a 1-D layer): each tile is one
    full-length DFT of TW * TH samples, decomposed into the two GEMMs with twiddles (``dft.py``).
    """
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    k = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    t_ok = t < TILES
    k_ok = k < K
    if USE_INT64:
        t = t.to(tl.int64)
        k = k.to(tl.int64)
    n, p0, q0, h0, w0 = tile_origin(t, TILES_H, TILES_W, MH, MW, pad_h, pad_w)
    if LONG:
        d = load_sequences(x_ptr, n, w0, t_ok, k // MULTIPLIER, k_ok, W, sx_n, sx_c, sx_w, 1, TH * TW, TH, TW)
    else:
        d = load_patches(x_ptr, n, h0, w0, t_ok, k // MULTIPLIER, k_ok, H, W, sx_n, sx_c, sx_h, sx_w, 1, 1, TH, TW, TH, TW)
    B: tl.constexpr = BLOCK_T * BLOCK_N
    x = tl.reshape(forward_dft(d, fr_ptr, fc_ptr, tc_ptr, ts_ptr, B, TH, TW, ACC_DTYPE, PRECISION, LONG),
                   (BLOCK_T, BLOCK_N, TW, 2, TH))
    v = tl.arange(0, TW)
    part = tl.arange(0, 2)
    u = tl.arange(0, TH)
    f = (v[:, None, None] * TH + u[None, None, :]) * su_f + part[None, :, None] * su_part
    spec = tl.load(u_ptr + k[:, None, None, None] + f[None, :, :, :], mask=k_ok[:, None, None, None], other=0.0)
    xr, xi = tl.split(tl.permute(x, (0, 1, 2, 4, 3)))
    ur, ui = tl.split(tl.permute(spec, (0, 1, 3, 2)))
    ur = ur[None, :, :, :].to(ACC_DTYPE)
    ui = ui[None, :, :, :].to(ACC_DTYPE)
    y = tl.permute(tl.join(xr * ur - xi * ui, xr * ui + xi * ur), (0, 1, 2, 4, 3))
    real = tl.reshape(inverse_dft(tl.reshape(y, (B, TW, 2, TH)), ic_ptr, ir_ptr, itc_ptr, its_ptr, B, TH, TW,
                                  ACC_DTYPE, PRECISION, LONG), (BLOCK_T, BLOCK_N, TH, TW))
    output = (out_ptr, so_n, so_k, so_p, so_q)
    epilogue = (bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q, HAS_BIAS, HAS_SCALE, HAS_RESIDUAL,
                ACTIVATION)
    store_output(real, n, p0, q0, t_ok, k, k_ok, P, Q, MH, MW, output, epilogue, BLOCK_T, BLOCK_N, TH, TW, LONG)


# Static configs: the compile check's fallbacks; every launch runs the planner's blocks (``plan.transform_blocks``).
DEPTHWISE = TunedKernel(
    _fft_depthwise_kernel, configs=[config(BLOCK_T=1, BLOCK_N=2, num_stages=1, num_warps=8), config(BLOCK_T=1, BLOCK_N=4, num_stages=1, num_warps=8)],
    key=["K", "P", "Q", "ACC_DTYPE", "TH", "TW"], interpreter_config=config(BLOCK_T=1, BLOCK_N=16, num_stages=1),
)


def depthwise(x, x_strides, u, out, out_strides, epilogue_args, epilogue_flags, *, tiles, size, k, multiplier,
              out_size, tile_grid, tile_step, origin, width, height, th, tw, acc, precision, use_int64, blocks,
              twiddles=None, inverse_twiddles=None):
    """Launch ``_fft_depthwise_kernel`` with the planner's blocks (BLOCK_T, BLOCK_N)."""
    block_t, block_n = blocks
    cfg = config(BLOCK_T=block_t, BLOCK_N=block_n, num_stages=1, num_warps=8)
    DEPTHWISE.launch(
        lambda meta: (triton.cdiv(tiles, meta["BLOCK_T"]), triton.cdiv(k, meta["BLOCK_N"])), [cfg],
        x, width.forward_real, height.forward_complex, u, height.inverse_complex, width.inverse_real,
        *(twiddles or (u, u)), *(inverse_twiddles or (u, u)), out,
        tiles, *size, k, multiplier, *out_size, *tile_grid, *tile_step,
        *x_strides, u.stride(0), u.stride(1), *out_strides, *origin,
        *epilogue_args, **epilogue_flags,
        TH=th, TW=tw, ACC_DTYPE=acc, PRECISION=precision, USE_INT64=use_int64, LONG=twiddles is not None,
    )
