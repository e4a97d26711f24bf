"""fft's grad_weight: the correlation of the input with grad_output, on the FFT kernels.

dw[k, c, r, s] = sum over n, p, q of dy[n, k, p, q] x[n, c, p + r*dil_h - pad, q + s*dil_w - pad]. Cut
the output into the forward's MH x MW tiles: each tile's share is the correlation of its TH x TW input
patch with its grad_output tile zero-padded to TH x TW, which the circular correlation gives exactly at
lags 0 .. reach - 1 (a lag l <= reach - 1 and a row p < MH stay inside the patch: p + l < TH). So,
per tile batch (``plan.weight_grad_tile_batch`` bounds the workspace):

1. ``spectrum.py``: V = DFT(input patches) and G = conj(DFT(grad_output tiles)) / (TH*TW) (the
   conjugate DFT matrices on the MH x MW tile, zero-padded);
2. ``weight_product.py``: DW[f, k, c] += sum over the batch's tiles of G[f, t, k] V[f, t, c] (a complex
   GEMM per frequency reducing over tiles; depthwise: elementwise per channel);

then ``inverse.py`` once: dw = IDFT(DW) cropped to the lags (r*dil_h, s*dil_w) of the taps. A kernel in
chunks (``plan._chunk_taps``) runs one such pass per chunk of taps, writing its own slice of dw, the
patches offset as the forward's passes are. The result is deterministic (fixed sum order).
"""
from __future__ import annotations

import torch
import triton

from ...core.params import ConvParams
from ..common import acc_dtype, needs_int64, new_buffer
from ..epilogue import epilogue_arguments
from .forward import precision, oriented_view
from .inverse import inverse
from .matrices import dft_matrices, twiddles
from .plan import DEPTHWISE, FFTPlan, make_plan, transform_blocks, weight_grad_tile_batch
from .spectrum import spectrum
from .weight_product import weight_product


def fft_grad_weight(dy: torch.Tensor, x: torch.Tensor, params: ConvParams, channels_last: bool) -> torch.Tensor:
    """dw (K, C/groups, R, S) of the stride-1 convolution ``params`` from grad_output ``dy`` and ``x``."""
    plan = make_plan(params)
    dw = new_buffer(params.weight_shape, dy.dtype, dy.device, channels_last)
    if dw.numel() == 0:
        return dw
    if params.n * params.p * params.q == 0:
        return dw.zero_()
    batch = weight_grad_tile_batch(plan, params)
    xo, dyo, dwo = (oriented_view(t, plan.transposed) for t in (x, dy, dw))
    g = plan.geometry
    for r0 in range(0, g.r, plan.chunk_r):
        for s0 in range(0, g.s, plan.chunk_s):
            taps = dwo[:, :, r0:r0 + plan.chunk_r, s0:s0 + plan.chunk_s]
            _weight_pass(plan, params, xo, dyo, taps, batch, (g.pad_h - r0 * g.dil_h, g.pad_w - s0 * g.dil_w))
    return dw


def _weight_pass(plan: FFTPlan, params: ConvParams, x, dy, taps, batch: int, origin):
    """The taps ``taps`` (an oriented view of dw) from every tile, the input patches offset by ``origin``."""
    g, th, tw, f = plan.geometry, plan.th, plan.tw, plan.frequencies
    sdt, dev = plan.spectrum_dtype, x.device
    acc, prec = acc_dtype(params.dtype), precision(params.dtype)
    width, height = dft_matrices(tw, sdt, dev), dft_matrices(th, sdt, dev)
    width_c, height_c = dft_matrices(tw, sdt, dev, conjugate=True), dft_matrices(th, sdt, dev, conjugate=True)
    forward_twiddles = twiddles(th, tw, sdt, dev) if plan.long else None
    conjugate_twiddles = twiddles(th, tw, sdt, dev, conjugate=True) if plan.long else None
    c, k, cg = params.c, params.k, params.c_per_group
    depthwise = plan.path == DEPTHWISE
    tiles = params.n * plan.tiles_h * plan.tiles_w
    tile_grid, tile_step = (plan.tiles_h, plan.tiles_w), (plan.mh, plan.mw)
    rows = triton.cdiv(tiles, triton.cdiv(tiles, batch))  # equal batches, not a full one and a remainder
    if depthwise:  # channels contiguous: the elementwise reduction reads rows of channels
        v = torch.empty((2, f, rows, c), dtype=sdt, device=dev)
        spectra_g = torch.empty((2, f, rows, k), dtype=sdt, device=dev)
    else:  # tiles contiguous: the GEMM's operands K-major
        v = torch.empty((2, f, c, rows), dtype=sdt, device=dev).transpose(2, 3)
        spectra_g = torch.empty((2, f, k, rows), dtype=sdt, device=dev).transpose(2, 3)
    dw_spectrum = torch.empty((2, f, k, cg), dtype=sdt, device=dev)
    use_int64 = needs_int64(x, dy, taps) or 2 * f * rows * max(c, k) >= 2**31 - 1
    common = dict(tile_grid=tile_grid, tile_step=tile_step, dilation=(1, 1), th=th, tw=tw, acc=acc, precision=prec,
                  use_int64=use_int64)
    for tile0 in range(0, tiles, rows):
        count = min(rows, tiles - tile0)
        spectrum(x, x.stride(), v, tiles=count, tile0=tile0, channels=c, size=(g.h, g.w), origin=origin, scale=1.0,
                 width=width, height=height, blocks=_blocks(th, tw, c, count, depthwise), twiddles=forward_twiddles,
                 **common)
        spectrum(dy, dy.stride(), spectra_g, tiles=count, tile0=tile0, channels=k, size=(g.p, g.q), origin=(0, 0),
                 scale=1.0 / f, width=width_c, height=height_c, blocks=_blocks(th, tw, k, count, depthwise),
                 twiddles=conjugate_twiddles, extent=(plan.mh, plan.mw), **common)
        weight_product(spectra_g, v, dw_spectrum, tiles=count, frequencies=f, c_per_group=cg,
                       k_per_group=params.k_per_group, groups=params.groups, multiplier=k // c if depthwise else 1,
                       depthwise=depthwise, accumulate=tile0 > 0, acc=acc, precision=prec, use_int64=use_int64)
    reach_h = g.dil_h * (taps.size(2) - 1) + 1
    reach_w = g.dil_w * (taps.size(3) - 1) + 1
    dilated = (g.dil_h, g.dil_w) != (1, 1)
    # Dilated taps are every dil-th lag: the inverse writes all lags, the taps are read out of them.
    target = torch.empty((k, cg, reach_h, reach_w), dtype=sdt, device=dev) if dilated else taps
    epilogue = epilogue_arguments(target)
    inverse(dw_spectrum, target, target.stride(), epilogue.args, epilogue.flags, tiles=k, tile0=0, k=cg,
            size=(reach_h, reach_w), tile_grid=(1, 1), tile_step=(reach_h, reach_w), width=width, height=height,
            th=th, tw=tw, acc=acc, precision=prec, use_int64=use_int64, blocks=transform_blocks(th, tw, cg, k),
            inverse_twiddles=conjugate_twiddles)
    if dilated:
        taps.copy_(target[:, :, ::g.dil_h, ::g.dil_w])


def _blocks(th: int, tw: int, channels: int, tiles: int, depthwise: bool):
    """The transform's blocks; into tiles-contiguous spectra (the tiled path) a program takes tiles of
    one channel (contiguous stores) rather than channels of one tile."""
    return transform_blocks(th, tw, channels if depthwise else 1, tiles)
