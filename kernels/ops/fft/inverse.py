"""The output stage of the tiled path: inverse DFT of the products, crop, shared epilogue.

grad_weight (``weight_grad.py``) ends here too: its spectra [2, F, K, C/groups] are "tiles" K of
C/groups channels whose crop is the filter's taps (LONG: of a full-length 1-D filter).
"""
from __future__ import annotations

import triton
import triton.language as tl

from ...core.launcher import TunedKernel, config
from .dft import inverse_dft, store_output, tile_origin


@triton.jit
def _fft_inverse_transform_kernel(
    # pointers: products Y [2, F, tiles, K], inverse DFT matrices (height: inverse_complex,
    # width: inverse_real), the conjugate twiddles (LONG), output
    y_ptr, ic_ptr, ir_ptr, tc_ptr, ts_ptr, out_ptr,
    # the tiles of this batch (first: TILE0), output size and tiling
    TILES, TILE0, K, P, Q, TILES_H, TILES_W, MH, MW,
    # strides of Y (part, frequency, tile; channels contiguous) and of the output
    sy_part, sy_f, sy_t,
    so_n, so_k, so_p, so_q,
    # the epilogue (``epilogue.store_conv_tile``): per-channel vectors, residual and its strides, flags
    bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr,
    # meta-parameters
    TH: tl.constexpr, TW: tl.constexpr, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
    USE_INT64: tl.constexpr, LONG: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Each program finishes BLOCK_T tiles x BLOCK_N output channels: the inverse DFT of their
    products (two GEMMs, ``dft.inverse_dft``), the crop to the MH x MW valid pixels, then bias, BN
    scale/shift, residual, activation and the store (``store_conv_tile``).

    Grid: (ceil(TILES / BLOCK_T), ceil(K / BLOCK_N)). LONG: each tile is one full-length 1-D inverse DFT
    of TW * TH samples (``dft.py``), stored as a sequence.
    """
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    k = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    t_ok = t < TILES
    k_ok = k < K
    tile = TILE0 + t
    if USE_INT64:
        tile = tile.to(tl.int64)
        t = t.to(tl.int64)
        k = k.to(tl.int64)
    v = tl.arange(0, TW)
    part = tl.arange(0, 2)
    u = tl.arange(0, TH)
    f = (v[:, None, None] * TH + u[None, None, :]) * sy_f + part[None, :, None] * sy_part
    ptrs = y_ptr + t[:, None, None, None, None] * sy_t + k[None, :, None, None, None] + f[None, None, :, :, :]
    y = tl.load(ptrs, mask=t_ok[:, None, None, None, None] & k_ok[None, :, None, None, None], other=0.0)
    real = inverse_dft(tl.reshape(y, (BLOCK_T * BLOCK_N, TW, 2, TH)), ic_ptr, ir_ptr, tc_ptr, ts_ptr, BLOCK_T * BLOCK_N,
                       TH, TW, ACC_DTYPE, PRECISION, LONG)
    real = tl.reshape(real, (BLOCK_T, BLOCK_N, TH, TW))
    n, p0, q0, _h0, _w0 = tile_origin(tile, TILES_H, TILES_W, MH, MW, 0, 0)
    output = (out_ptr, so_n, so_k, so_p, so_q)
    epilogue = (bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q, HAS_BIAS, HAS_SCALE, HAS_RESIDUAL,
                ACTIVATION)
    store_output(real, n, p0, q0, t_ok, k, k_ok, P, Q, MH, MW, output, epilogue, BLOCK_T, BLOCK_N, TH, TW, LONG)


# Static configs: the compile check's fallbacks; every launch runs the planner's blocks (``plan.transform_blocks``).
INVERSE = TunedKernel(
    _fft_inverse_transform_kernel, configs=[config(BLOCK_T=1, BLOCK_N=2, num_stages=1, num_warps=8), config(BLOCK_T=2, BLOCK_N=1, num_stages=1, num_warps=8)],
    key=["TILES", "K", "P", "Q", "ACC_DTYPE", "TH", "TW"], interpreter_config=config(BLOCK_T=1, BLOCK_N=16, num_stages=1),
)


def inverse(y, out, out_strides, epilogue_args, epilogue_flags, *, tiles, tile0, k, size, tile_grid, tile_step,
            width, height, th, tw, acc, precision, use_int64, blocks, inverse_twiddles=None):
    """Launch ``_fft_inverse_transform_kernel`` with the planner's blocks (BLOCK_T, BLOCK_N);
    ``inverse_twiddles`` (the conjugate cos, sin tables): the full-length 1-D inverse DFT (LONG)."""
    block_t, block_n = blocks
    cfg = config(BLOCK_T=block_t, BLOCK_N=block_n, num_stages=1, num_warps=8)
    INVERSE.launch(
        lambda meta: (triton.cdiv(tiles, meta["BLOCK_T"]), triton.cdiv(k, meta["BLOCK_N"])), [cfg],
        y, height.inverse_complex, width.inverse_real, *(inverse_twiddles or (y, y)), out,
        tiles, tile0, k, *size, *tile_grid, *tile_step,
        y.stride(0), y.stride(1), y.stride(2), *out_strides,
        *epilogue_args, **epilogue_flags,
        TH=th, TW=tw, ACC_DTYPE=acc, PRECISION=precision, USE_INT64=use_int64, LONG=inverse_twiddles is not None,
    )
