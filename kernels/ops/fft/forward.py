"""``algorithm="fft"``: scope, the forward launch sequence, grad_input and the counts.

Scope: every stride-1 convolution (any kernel size, dilation, padding, groups; every floating
dtype), unless its workspace cannot be bounded (``plan.make_plan``). Paths (``plan.py``):

* tiled (groups with more than one input channel): filter spectrum U and, per batch of tiles, the
  input spectra V (``spectrum.py``), one complex GEMM per frequency (``product.py``), inverse DFT +
  crop + epilogue (``inverse.py``);
* depthwise (one input channel per group): U, then one fused kernel per tile (``depthwise.py``).

A kernel split into chunks (``plan._chunk_taps``) runs one pass per chunk; pass j adds its
correlation to pass j-1's fp32 partial output through the epilogue's residual (bias, shift and the
caller's residual in the first pass, the BN scale in every pass, the activation in the last).

Precision: fp64 in fp64; fp32 in IEEE fp32 (TF32 when ``torch.backends.cudnn.allow_tf32``);
fp16 / bf16 with fp32 spectra and every GEMM in TF32 (docs/fft.md's error study).
grad_input is the stride-1 correlation of grad_output with the flipped, transposed weight and runs on
these forward kernels; grad_weight, the correlation of the input with grad_output, on the same
transforms with a reduction over tiles (``weight_grad.py``).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import torch

from ...core.params import ConvParams
from ..common import acc_dtype, dot_precision, needs_int64, new_buffer, new_output
from ..epilogue import epilogue_arguments
from .depthwise import depthwise
from .inverse import inverse
from .matrices import dft_matrices, twiddles
from .plan import DEPTHWISE, DoesNotFit, FFTPlan, make_plan, product_macs, transform_blocks, transform_macs, \
    workspace_bytes
from .product import product
from .spectrum import spectrum


def unsupported(params: ConvParams) -> Optional[str]:
    """None when ``algorithm="fft"`` applies, else the failed condition."""
    if params.stride != (1, 1):
        return f"fft needs stride 1, got stride={list(params.stride)}"
    try:
        make_plan(params)
    except DoesNotFit as error:
        return str(error)
    return None


def precision(dtype: torch.dtype) -> str:
    if dtype in (torch.float16, torch.bfloat16):
        return "tf32"
    return dot_precision(dtype)


def oriented_view(t: Optional[torch.Tensor], transposed: bool) -> Optional[torch.Tensor]:
    return t.transpose(-1, -2) if t is not None and transposed else t


def fft_forward(x, w, bias, params: ConvParams, *, scale=None, shift=None, residual=None, activation=0):
    """Run the plan's passes; returns a new output in PyTorch's memory format."""
    plan = make_plan(params)
    out = new_output(params, x.device)
    if out.numel() == 0:
        return out
    t = plan.transposed
    xo, wo, outo, reso = (oriented_view(v, t) for v in (x, w, out, residual))
    g = plan.geometry
    chunks_r, chunks_s = plan.kernel_chunks
    passes = [(i * plan.chunk_r, j * plan.chunk_s) for i in range(chunks_r) for j in range(chunks_s)]
    partial = None
    if len(passes) > 1:
        partial = new_buffer(params.output_shape, plan.spectrum_dtype, x.device, params.channels_last)
        partial = oriented_view(partial, t)
        if scale is not None:
            zero_shift = torch.zeros_like(shift)
    for index, (r0, s0) in enumerate(passes):
        first, last = index == 0, index == len(passes) - 1
        target = outo if last else partial
        epilogue = epilogue_arguments(
            target, bias if first else None, scale, shift if first or scale is None else zero_shift,
            reso if first else partial, activation if last else 0)
        chunk = wo[:, :, r0:r0 + plan.chunk_r, s0:s0 + plan.chunk_s]
        _run_pass(plan, params, xo, chunk, target, epilogue, (g.pad_h - r0 * g.dil_h, g.pad_w - s0 * g.dil_w))
    return out


def _run_pass(plan: FFTPlan, params: ConvParams, x, w, out, epilogue, origin):
    """One overlap-save pass of the kernel chunk ``w`` (oriented views), its patches offset by ``origin``."""
    g, th, tw, f = plan.geometry, plan.th, plan.tw, plan.frequencies
    sdt, dev = plan.spectrum_dtype, x.device
    acc, prec = acc_dtype(params.dtype), precision(params.dtype)
    width, height = dft_matrices(tw, sdt, dev), dft_matrices(th, sdt, dev)
    width_c, height_c = dft_matrices(tw, sdt, dev, conjugate=True), dft_matrices(th, sdt, dev, conjugate=True)
    cg, k = params.c_per_group, params.k
    tiles = params.n * plan.tiles_h * plan.tiles_w
    tile_grid, tile_step = (plan.tiles_h, plan.tiles_w), (plan.mh, plan.mw)
    u = torch.empty((2, f, k, cg), dtype=sdt, device=dev)
    use_int64 = needs_int64(x, w, out, epilogue.residual_or_out) or tiles * f * max(params.c, k) * 2 >= 2**31 - 1
    long = dict(twiddles=twiddles(th, tw, sdt, dev), inverse_twiddles=twiddles(th, tw, sdt, dev, conjugate=True)) \
        if plan.long else {}
    spectrum(w, w.stride(), u, tiles=k, tile0=0, channels=cg, size=(w.size(2), w.size(3)), tile_grid=(1, 1),
             tile_step=(1, 1), origin=(0, 0), dilation=(g.dil_h, g.dil_w), scale=1.0 / f, width=width_c,
             height=height_c, th=th, tw=tw, acc=acc, precision=prec, use_int64=use_int64,
             blocks=transform_blocks(th, tw, cg, k), twiddles=long.get("inverse_twiddles"))
    epilogue_args, flags = epilogue.args, epilogue.flags
    if plan.path == DEPTHWISE:
        depthwise(x, x.stride(), u, out, out.stride(), epilogue_args, flags, tiles=tiles, size=(g.h, g.w), k=k,
                  multiplier=k // params.c, out_size=(g.p, g.q), tile_grid=tile_grid, tile_step=tile_step,
                  origin=origin, width=width, height=height, th=th, tw=tw, acc=acc, precision=prec,
                  use_int64=use_int64, blocks=transform_blocks(th, tw, k, tiles, fused=True), **long)
        return
    batch = plan.tile_batch
    v = torch.empty((2, f, min(batch, tiles), params.c), dtype=sdt, device=dev)
    y = torch.empty((2, f, min(batch, tiles), k), dtype=sdt, device=dev)
    for tile0 in range(0, tiles, batch):
        count = min(batch, tiles - tile0)
        spectrum(x, x.stride(), v, tiles=count, tile0=tile0, channels=params.c, size=(g.h, g.w),
                 tile_grid=tile_grid, tile_step=tile_step, origin=origin, dilation=(1, 1), scale=1.0,
                 width=width, height=height, th=th, tw=tw, acc=acc, precision=prec, use_int64=use_int64,
                 blocks=transform_blocks(th, tw, params.c, count))
        product(v, u, y, count, f, cg, k // params.groups, params.groups, acc, prec, use_int64)
        inverse(y, out, out.stride(), epilogue_args, flags, tiles=count, tile0=tile0, k=k, size=(g.p, g.q),
                tile_grid=tile_grid, tile_step=tile_step, width=width, height=height, th=th, tw=tw, acc=acc,
                precision=prec, use_int64=use_int64, blocks=transform_blocks(th, tw, k, count))


def fft_grad_input(dy: torch.Tensor, w: torch.Tensor, params: ConvParams, channels_last: bool) -> torch.Tensor:
    """dx: the stride-1 correlation of dy with the flipped weight, its (in, out) channels swapped per
    group, padded by reach - 1 - pad (negative: the patches start inside dy), on ``fft_forward``."""
    gr, kg, cg = params.groups, params.k_per_group, params.c_per_group
    flipped = (w.reshape(gr, kg, cg, params.r, params.s).transpose(1, 2)
               .reshape(params.c, kg, params.r, params.s).flip(2, 3))
    reach_h = params.dilation[0] * (params.r - 1)
    reach_w = params.dilation[1] * (params.s - 1)
    transposed = dataclasses.replace(
        params, n=params.n, c=params.k, h=params.p, w=params.q, k=params.c, p=params.h, q=params.w,
        pad_top=reach_h - params.pad_top, pad_bottom=reach_h - params.pad_bottom,
        pad_left=reach_w - params.pad_left, pad_right=reach_w - params.pad_right,
        has_bias=False, unbatched=False, channels_last=channels_last)
    return fft_forward(dy, flipped, None, transposed)


def fft_counts(params: ConvParams) -> Dict:
    """Direct MACs, the frequency-domain products' real multiplies (``multiplies``), the transforms'
    under their own keys, and the transformed tensors' bytes (the workspace).

    Every count is what the kernels issue: the DFT GEMMs of ``plan.transform_macs`` per patch and
    channel, 4 real multiplies per complex product, once per kernel chunk; tiles covering P x Q whole.
    """
    plan = make_plan(params)
    tiles = params.n * plan.tiles_h * plan.tiles_w
    passes = plan.kernel_chunks[0] * plan.kernel_chunks[1]
    forward, inverse_ = transform_macs(plan.th, plan.tw)
    return {
        "macs": params.macs,
        "multiplies": passes * tiles * product_macs(plan.th, plan.tw, params, plan.path),
        "input_transform_multiplies": passes * tiles * params.c * forward,
        "filter_transform_multiplies": passes * params.k * params.c_per_group * forward,
        "output_transform_multiplies": passes * tiles * params.k * inverse_,
        "tile": [plan.th, plan.tw] if not plan.transposed else [plan.tw, plan.th],
        "output_tile": [plan.mh, plan.mw] if not plan.transposed else [plan.mw, plan.mh],
        "kernel_passes": passes,
        "path": plan.path,
        **workspace_bytes(plan, params),
    }


# The tolerance multiple the test sweeps scale by (Algorithm.error_ratio), from the error study
# (docs/fft.md, CPU interpreter): worst ||out - ref|| ratio to im2col's 2.1 (fp32, also used for fp64),
# 2.05 (bf16), 1.0 (fp16); twice that, and 3 for fp16 because the interpreter computes TF32 dots in
# fp32: TF32's rounding on a GPU is not in the measurement.
MEASURED_ERROR_RATIO = {torch.float32: 4.5, torch.float64: 4.5, torch.float16: 3.0, torch.bfloat16: 4.5}
