"""The forward-DFT kernel: spectra of input patches (and of the filter) into memory.

The same kernel transforms every operand of the tiled path: the input's TH x TW patches of a
batch of tiles (V), and the filter, read as one patch per output channel at the origin with its
dilation's holes and multiplied by 1 / (TH*TW), through the conjugate DFT matrices (U). For
grad_weight (``weight_grad.py``) it also transforms grad_output's MH x MW output tiles, zero-padded
to TH x TW (``EXTENT_H`` x ``EXTENT_W`` of each patch read), through the conjugate matrices.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ...core.launcher import TunedKernel, config
from .dft import forward_dft, load_patches, load_sequences, tile_origin


@triton.jit
def _fft_forward_transform_kernel(
    # pointers: the source (input or weight), the DFT matrices (width: forward_real, height:
    # forward_complex), the twiddles (LONG), the spectra
    src_ptr, fr_ptr, fc_ptr, tc_ptr, ts_ptr, spec_ptr,
    # the tiles of this batch (first: TILE0) and the source's channels and size
    TILES, TILE0, C, H, W, TILES_H, TILES_W, MH, MW,
    # strides of the source (n, c, h, w: for the weight k, c, r, s) and of the spectra (part, f, t, c:
    # channels contiguous, or tiles for the tiled grad_weight's GEMM)
    s_n, s_c, s_h, s_w,
    sp_part, sp_f, sp_t, sp_c,
    # geometry: patch origin offset, the dilation of the source's taps, the rows and columns of each
    # patch read (LONG: EXTENT_W samples); scale of the result
    pad_h, pad_w, dil_h, dil_w, EXTENT_H, EXTENT_W, scale,
    # meta-parameters
    TH: tl.constexpr, TW: tl.constexpr, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
    USE_INT64: tl.constexpr, LONG: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Each program writes spec[part, f, t, c] for BLOCK_T tiles t (of the batch) x BLOCK_C
    channels c, every frequency f and both parts: scale * DFT(patch of tile TILE0 + t, channel c).

    Grid: (ceil(TILES / BLOCK_T), ceil(C / BLOCK_C)). The DFT is two GEMMs (``dft.forward_dft``).
    """
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    t_ok = t < TILES
    c_ok = c < C
    tile = TILE0 + t
    if USE_INT64:
        tile = tile.to(tl.int64)
        t = t.to(tl.int64)
    n, _p0, _q0, h0, w0 = tile_origin(tile, TILES_H, TILES_W, MH, MW, pad_h, pad_w)
    if LONG:
        d = load_sequences(src_ptr, n, w0, t_ok, c, c_ok, W, s_n, s_c, s_w, dil_w, EXTENT_W, TH, TW)
    else:
        d = load_patches(src_ptr, n, h0, w0, t_ok, c, c_ok, H, W, s_n, s_c, s_h, s_w, dil_h, dil_w, EXTENT_H,
                         EXTENT_W, TH, TW)
    x = forward_dft(d, fr_ptr, fc_ptr, tc_ptr, ts_ptr, BLOCK_T * BLOCK_C, TH, TW, ACC_DTYPE, PRECISION, LONG) * scale
    x = tl.reshape(x, (BLOCK_T, BLOCK_C, TW, 2, TH))
    v = tl.arange(0, TW)
    part = tl.arange(0, 2)
    u = tl.arange(0, TH)
    f = (v[:, None, None] * TH + u[None, None, :]) * sp_f + part[None, :, None] * sp_part
    ptrs = spec_ptr + t[:, None, None, None, None] * sp_t + c[None, :, None, None, None] * sp_c + f[None, None, :, :, :]
    ok = (t_ok[:, None, None, None, None] & c_ok[None, :, None, None, None])
    tl.store(ptrs, x.to(spec_ptr.dtype.element_ty), mask=ok)


# Static configs: the compile check's fallbacks; every launch runs the planner's blocks (``plan.transform_blocks``),
# which depend on the tile and channel counts and the spectra's layout: all three are in the key.
SPECTRUM = TunedKernel(
    _fft_forward_transform_kernel, configs=[config(BLOCK_T=1, BLOCK_C=2, num_stages=1, num_warps=8), config(BLOCK_T=1, BLOCK_C=4, num_stages=1, num_warps=8)],
    key=["TILES", "C", "sp_c", "ACC_DTYPE", "TH", "TW"], interpreter_config=config(BLOCK_T=1, BLOCK_C=16, num_stages=1),
)


def spectrum(src, src_strides, spec, *, tiles, tile0, channels, size, tile_grid, tile_step, origin, dilation,
             scale, width, height, th, tw, acc, precision, use_int64, blocks, twiddles=None, extent=None):
    """Launch ``_fft_forward_transform_kernel`` with the planner's blocks (BLOCK_T, BLOCK_C) into ``spec``
    (part, frequency, tile, channel: any strides); ``width`` and
    ``height`` are the ``DFTMatrices`` of TW and TH points (the conjugate ones for the filter);
    ``twiddles`` (cos, sin tables): the full-length DFT of TW * TH points (LONG); ``extent``: the
    (rows, columns) of each patch read (default: the whole TH x TW patch; LONG: columns = samples)."""
    block_t, block_c = blocks
    if extent is None:
        extent = (th, tw) if twiddles is None else (1, th * tw)
    cfg = config(BLOCK_T=block_t, BLOCK_C=block_c, num_stages=1, num_warps=8)
    SPECTRUM.launch(
        lambda meta: (triton.cdiv(tiles, meta["BLOCK_T"]), triton.cdiv(channels, meta["BLOCK_C"])), [cfg],
        src, width.forward_real, height.forward_complex, *(twiddles or (width.forward_real,) * 2), spec,
        tiles, tile0, channels, *size, *tile_grid, *tile_step,
        *src_strides, spec.stride(0), spec.stride(1), spec.stride(2), spec.stride(3),
        *origin, *dilation, *extent, scale,
        TH=th, TW=tw, ACC_DTYPE=acc, PRECISION=precision, USE_INT64=use_int64, LONG=twiddles is not None,
    )
