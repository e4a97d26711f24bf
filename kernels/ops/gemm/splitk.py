"""Split-K: the fp32 partial sums of a split reduction, added in a fixed order, then the epilogue.

A GEMM kernel launched with SPLIT_K > 1 (``plan.splits_for``) writes, for each part of its
reduction, ``part[split, row, col]`` (fp32, contiguous) instead of its output. Rows are output
pixels (n, p, q) in order (or, for wgrad, output channels), columns all output channels (or a
weight row). ``split_reduce`` sums the parts in order 0, 1, ... (deterministic, no atomics) and
ends in the shared epilogue: bias, BN scale/shift, residual, activation, the store in the
output's own strides.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...core.launcher import TunedKernel, config
from ..common import needs_int64, new_buffer
from ..epilogue import epilogue_arguments, store_conv_tile


@triton.jit
def splitk_store_partial(acc, part_ptr, split, rows, cols, mask_rows, mask_cols, ROWS, COLS):
    """part[split, rows, cols] = acc (fp32, or fp64 under gradcheck), the partial of one split."""
    offs = (split * ROWS + rows)[:, None] * COLS + cols[None, :]
    tl.store(part_ptr + offs, acc.to(part_ptr.dtype.element_ty), mask=mask_rows[:, None] & mask_cols[None, :])


@triton.jit
def store_output_or_partial(acc, n, p, q, k, rows, mask_m, mask_n, output, epilogue,
                            part_ptr, split, ROWS, COLS, SPLIT_K: tl.constexpr):
    """A forward GEMM tile's end: unsplit, the shared epilogue and the store (``store_conv_tile``,
    whose ``output`` and ``epilogue`` groups these are); split, the partial at part[split, rows, k]
    (``rows``: output pixel indices), whose epilogue ``split_reduce`` applies after the parts are
    added."""
    if SPLIT_K == 1:
        store_conv_tile(acc, n, p, q, k, mask_m, mask_n, output, epilogue)
    else:
        splitk_store_partial(acc, part_ptr, split, rows, k, mask_m, mask_n, ROWS, COLS)


@triton.jit
def _split_reduce_kernel(
    # pointers: partials, output
    part_ptr, out_ptr,
    # sizes
    ROWS, COLS, SPLITS, P, Q,
    # strides of the output
    so_n, so_k, so_p, so_q,
    # the epilogue (``epilogue.store_conv_tile``): per-channel vectors, residual and its strides, flags
    bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr,
    # meta-parameters
    USE_INT64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Each program sums the SPLITS partials of a [BLOCK_M rows x BLOCK_N cols] tile in order and
    stores act((sum + bias) * scale + shift + residual) at out[n, col, p, q], row = (n*P + p)*Q + q.

    Grid: (row tiles, column tiles).
    """
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = rows < ROWS
    mask_n = cols < COLS
    if USE_INT64:
        rows = rows.to(tl.int64)
        cols = cols.to(tl.int64)
    mask = mask_m[:, None] & mask_n[None, :]
    offs = rows[:, None] * COLS + cols[None, :]
    acc = tl.load(part_ptr + offs, mask=mask, other=0.0)
    for split in range(1, SPLITS):
        acc += tl.load(part_ptr + split * ROWS * COLS + offs, mask=mask, other=0.0)
    n = rows // (P * Q)
    p = (rows // Q) % P
    q = rows % Q
    store_conv_tile(
        acc, n, p, q, cols, mask_m, mask_n,
        (out_ptr, so_n, so_k, so_p, so_q),
        (bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
         HAS_BIAS, HAS_SCALE, HAS_RESIDUAL, ACTIVATION),
    )


SPLIT_REDUCE = TunedKernel(
    _split_reduce_kernel,
    configs=[config(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=1),
             config(BLOCK_M=32, BLOCK_N=128, num_warps=4, num_stages=1)],
    key=["ROWS", "COLS", "SPLITS", "HAS_BIAS", "HAS_SCALE", "HAS_RESIDUAL", "ACTIVATION", "USE_INT64"],
    interpreter_config=config(BLOCK_M=32, BLOCK_N=16, num_stages=1),
)


def new_partials(splits: int, rows: int, cols: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The fp32 (fp64 for fp64) buffer of ``splits`` partial [rows, cols] results, unwritten."""
    part_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    return new_buffer((splits, rows, cols), part_dtype, device)


def split_reduce(part: torch.Tensor, out: torch.Tensor, pixels, out_strides, *, bias=None, scale=None, shift=None,
                 residual=None, activation=0) -> None:
    """out[...] = epilogue(sum over part's splits). ``pixels`` = (P, Q) decodes a row into (n, p, q);
    ``out_strides`` = (so_n, so_col, so_p, so_q), the strides of those coordinates in ``out``."""
    splits, rows, cols = part.shape
    epilogue = epilogue_arguments(out, bias, scale, shift, residual, activation)
    grid = lambda meta: (triton.cdiv(rows, meta["BLOCK_M"]), triton.cdiv(cols, meta["BLOCK_N"]))
    SPLIT_REDUCE[grid](
        part, out,
        rows, cols, splits, *pixels,
        *out_strides,
        *epilogue.args, **epilogue.flags,
        USE_INT64=needs_int64(part, out, epilogue.residual_or_out),
    )


def reduce_if_split(chosen, part, out, pixels, out_strides, **epilogue) -> None:
    """After a planned launch: add the split-K partials into ``out`` when the chosen config split."""
    splits = chosen.kwargs["SPLIT_K"]
    if splits > 1:
        split_reduce(part[:splits], out, pixels, out_strides, **epilogue)
