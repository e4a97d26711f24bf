"""Which Winograd path runs a layer, and what memory traffic each path adds.

Two paths compute the same F(m x m, 3x3) convolution:

* ``THREE_STAGE`` (``stages.py``): input transform -> one wgmma GEMM per tile
  position -> output transform. Large tensor-core tiles, but the transformed input V
  ([alpha^2, T, C_pad], input dtype) and the GEMM's result M ([alpha^2, T, K], fp32) each go
  through HBM once out and once back: (alpha/m)^2 = 4 (F2) / 2.25 (F4) elements per output
  pixel and channel.
* ``FUSED`` (``fused.py``): all three stages in one kernel; nothing transformed but
  the (cached) filter touches memory, but its 3-D ``tl.dot`` lowers to mma.sync with small
  tiles.

``choose_path`` is the one place that picks between them: the path with the smaller predicted
time on the target device (``core.device``: an H100 under the interpreter, the GPU in use on one)
under the static model below. It is a prediction, NOT a measurement: no GPU has
timed either path. The model puts layers with few channels (where the GEMM per position is
memory-bound and V/M traffic dominates: VGG-16 conv1-conv2, ResNet-50 layer1 at F(2x2)) on
the fused kernel and the wide layers on the three-stage path. Replace the constants (or the
rule) with a committed GPU measurement when one exists.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import triton

from ...core import device
from ...core.params import ConvParams
from .transforms import WinogradTile, padded_channels

THREE_STAGE = "three_stage"
FUSED = "fused"
PATHS = (THREE_STAGE, FUSED)

# Sustained fractions of the device's datasheet peaks, assumed (typical, not measured here):
HBM_FRACTION = 3.0 / 3.35  # ~90%: 3.0 TB/s sustained of an H100's 3.35
GEMM_FRACTION = 600 / 989  # ~60%: a Triton wgmma GEMM at 600 of an H100's 989 TFLOP/s dense fp16
# The fused kernel's direct-equivalent rate from issue 13's static model of it (130-230
# TFLOP/s "at best" on mma.sync with 16-32 wide tiles): the middle of that range.
FUSED_DIRECT_FLOPS_PER_S = 180e12
LAUNCH_SECONDS = 4e-6  # per kernel launch


def tile_grid(tile: WinogradTile, params: ConvParams) -> Tuple[int, int, int]:
    """(tile rows, tile columns, tiles T = N * rows * columns) covering the P x Q output."""
    tiles_h, tiles_w = triton.cdiv(params.p, tile.m), triton.cdiv(params.q, tile.m)
    return tiles_h, tiles_w, params.n * tiles_h * tiles_w


def transformed_output_dtype(dtype: torch.dtype) -> torch.dtype:
    """M's dtype: the GEMM's fp32 accumulators (fp64 for fp64), stored unrounded."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def transformed_bytes(tile: WinogradTile, params: ConvParams, path: str) -> Dict[str, int]:
    """HBM bytes of the transformed tensors on ``path``, beyond reading x and writing y.

    ``transformed_input_bytes``: V written by the input transform and read by the GEMM (once
    each; the GEMM's re-reads across its K blocks are assumed to hit L2).
    ``transformed_output_bytes``: M written by the GEMM and read by the output transform.
    ``transformed_filter_bytes``: U read once (the fused kernel reads U too; computing U
    when it is not cached costs one more write of it). Element sizes are ``params.dtype``'s.
    """
    _, _, tiles = tile_grid(tile, params)
    element = _itemsize(params.dtype)
    c_pad = padded_channels(params.c)
    filter_bytes = tile.positions * params.k * c_pad * element
    if path == FUSED:
        return {"transformed_input_bytes": 0, "transformed_output_bytes": 0, "transformed_filter_bytes": filter_bytes}
    return {
        "transformed_input_bytes": 2 * tile.positions * tiles * c_pad * element,
        "transformed_output_bytes": 2 * tile.positions * tiles * params.k * _itemsize(
            transformed_output_dtype(params.dtype)),
        "transformed_filter_bytes": filter_bytes,
    }


def predicted_seconds(tile: WinogradTile, params: ConvParams) -> Dict[str, float]:
    """The static model's time for each path on the target device (see the module docstring)."""
    gpu = device.target()
    hbm_bytes_per_s = HBM_FRACTION * gpu.hbm_bytes_per_s
    gemm_flops_per_s = GEMM_FRACTION * gpu.dense_fp16_flops_per_s
    element = _itemsize(params.dtype)
    io = (params.n * params.c * params.h * params.w + params.n * params.k * params.p * params.q) * element
    _, _, tiles = tile_grid(tile, params)
    three = transformed_bytes(tile, params, THREE_STAGE)
    half_v, half_m = three["transformed_input_bytes"] / 2, three["transformed_output_bytes"] / 2
    gemm_flops = 2 * tile.positions * tiles * padded_channels(params.c) * params.k
    input_transform = (io / 2 + half_v) / hbm_bytes_per_s
    gemm = max((half_v + half_m + three["transformed_filter_bytes"]) / hbm_bytes_per_s,
               gemm_flops / gemm_flops_per_s)
    output_transform = (half_m + io / 2) / hbm_bytes_per_s
    fused = max(2 * params.macs / FUSED_DIRECT_FLOPS_PER_S,
                (io + three["transformed_filter_bytes"]) / hbm_bytes_per_s)
    return {THREE_STAGE: input_transform + gemm + output_transform + 3 * LAUNCH_SECONDS,
            FUSED: fused + LAUNCH_SECONDS}


def choose_path(tile: WinogradTile, params: ConvParams) -> str:
    """The Winograd path for this layer: the one the static model predicts faster."""
    times = predicted_seconds(tile, params)
    return THREE_STAGE if times[THREE_STAGE] <= times[FUSED] else FUSED
