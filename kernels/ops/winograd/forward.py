"""Winograd F(2x2,3x3) and F(4x4,3x3) forward convolution: scope, path and counts.

Two paths compute it (``plan.py`` picks one per layer):

* the three-stage path (``stages.py``): input transform, the elementwise stage as
  one 2-D GEMM per tile position on wgmma with 128x128x64-class tiles, output transform
  ending in the shared epilogue;
* the fused kernel (``fused.py``): all stages in one launch, small mma.sync tiles,
  no transformed tensor in memory.

The filter transform U = G g G^T is cached for frozen weights (``transforms.py``).
Scope: 3x3 kernels, stride 1, dilation 1, groups 1, any padding. Gradients use the generic
backward kernels. F(4x4,3x3) multiplies 4x fewer times than the definition but its
transforms amplify rounding error (docs/winograd.md's error study). A NaN or Inf in the input
spreads over the output tile(s) whose transform reads it, not just the pixels it reaches.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from ...core.params import ConvParams
from .fused import fused_forward
from .plan import FUSED, THREE_STAGE, choose_path, tile_grid, transformed_bytes
from .stages import three_stage_forward
from .transforms import F2, F4, WinogradTile, nonzeros, padded_channels

_PATHS = {THREE_STAGE: three_stage_forward, FUSED: fused_forward}


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
                     scale=None, shift=None, residual=None, activation=0, path: Optional[str] = None):
    """Run the path ``choose_path`` picks (or ``path``, for tests and the error study);
    returns a new output in PyTorch's memory format."""
    launch = _PATHS[path or choose_path(tile, params)]
    return launch(tile, x, w, bias, params, scale=scale, shift=shift, residual=residual, activation=activation)


def winograd_counts(tile: WinogradTile, params: ConvParams) -> Dict:
    """Direct MACs, the elementwise stage's true multiplies, the transforms separately, and
    the transformed tensors' memory traffic, for the path that runs (``path``).

    ``multiplies``: (m+2)^2 per m x m output tile per (c, k), tiles covering P x Q (edge
    tiles count whole). ``*_transform_flops``: adds and multiplies of the separable
    transforms (one per nonzero matrix entry, applied to rows then columns).
    ``kernel_multiplies``: what the path's kernels issue for the elementwise stage: the
    three-stage GEMMs run over C padded to a multiple of 64; the fused kernel runs the
    positions in power-of-two slot groups (F(4x4): 32 + 16 slots for 36 positions).
    ``transformed_*_bytes``: see ``plan.transformed_bytes`` (in ``params.dtype``).
    """
    path = choose_path(tile, params)
    _, _, tiles = tile_grid(tile, params)
    a, m = tile.alpha, tile.m
    if path == THREE_STAGE:
        kernel_multiplies = tiles * tile.positions * padded_channels(params.c) * params.k
    else:
        kernel_multiplies = tiles * sum(tile.slot_groups) * params.c * params.k
    return {
        "macs": params.macs,
        "multiplies": tiles * tile.positions * params.c * params.k,
        "input_transform_flops": tiles * params.c * 2 * a * nonzeros(tile.BT),
        "filter_transform_flops": params.c * params.k * (3 + a) * nonzeros(tile.G),
        "output_transform_flops": tiles * params.k * (a + m) * nonzeros(tile.AT),
        "kernel_multiplies": kernel_multiplies,
        "path": path,
        **transformed_bytes(tile, params, path),
    }


# Worst ||out - ref|| ratio to im2col's in the error study (docs/winograd.md), per tile and dtype
# (interpreter, scaled-down VGG-16 / ResNet-50 layers), the worse of the two paths (they agree
# to one decimal except F(4x4) fp32: three-stage 11.9, fused 13.0); fp64 behaves like fp32.
MEASURED_ERROR_RATIO = {
    F2.name: {torch.float32: 2.0, torch.float64: 2.0, torch.float16: 2.4, torch.bfloat16: 1.9},
    F4.name: {torch.float32: 13.0, torch.float64: 13.0, torch.float16: 14.9, torch.bfloat16: 8.0},
}


def choose_tile(params: ConvParams) -> str:
    """F(2x2) or F(4x4) for ``algorithm="winograd"``, from the error study (docs/winograd.md).

    fp16/bf16: F(2x2). Its error is about 2x im2col's; F(4x4)'s is 8-15x (fp16 2.7e-3,
    bf16 2.4e-2 relative), more than those formats' own rounding. fp32/fp64: F(4x4) (up to
    13x im2col's error, still ~1e-6 relative in fp32) for 4x fewer multiplies, unless the
    output is smaller than one 4x4 tile, where most of its work would be padding.
    """
    if params.dtype in (torch.float16, torch.bfloat16) or min(params.p, params.q) < F4.m:
        return F2.name
    return F4.name

