"""The small-channel stem (C <= 8, e.g. the RGB 7x7 / 3x3 first layer) on tensor cores.

With 3 input channels the implicit GEMM's reduction block over channels would be 3/16 full. The
stem instead reduces along the contiguous run of one padded NHWC input row: for a fixed kernel
row r, the S taps x C channels an output pixel reads are S*C_PAD consecutive elements of the
input (C padded to C_PAD = 4 or 8 zeros-filled channels, so a run starts on an 8- or 16-byte
boundary and loads asynchronously). So

    out[pixel, k] = sum over r of  x_pad[n, p*sh + r*dh, (q*sw) .. (q*sw + S - 1), 0 .. C_PAD-1]
                                   . w_pad[k, r, 0 .. S-1, 0 .. C_PAD-1]

is a GEMM with a reduction of R runs of S*C_PAD (7x7, C=3: 7 runs of 28 elements in a 32-wide
block). The input is copied once into a zero-padded NHWC buffer (spatial padding included, so no
load is masked for padding); that copy is also what an NCHW image needs anyway.

grad_weight is the same idea transposed: per kernel row r, dw_pad[k, r, run] is a GEMM of dyᵀ and
the runs, reduced over the pixels. grad_input is the generic dgrad (an image rarely needs one).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ...core.launcher import TunedKernel
from ...core.layout import finish, memory_format, nhwc
from ...core.params import ConvParams
from ..common import acc_dtype, dot_precision, needs_int64, new_buffer
from ..epilogue import epilogue_arguments
from ..tiles import advance_pixels, carry, gemm_tile, pixel_walk, split_range
from . import plan as gemm_plan
from .splitk import new_partials, reduce_if_split, splitk_store_partial, store_output_or_partial

MAX_CHANNELS = 8


@triton.jit
def _stem_forward_kernel(
    # pointers: padded input, padded weight, output, split-K partials
    x_ptr, w_ptr, out_ptr, part_ptr,
    # sizes (HP, WP: the padded input's)
    N, P, Q, K, HP, WP,
    # strides of the output
    so_n, so_k, so_p, so_q,
    # geometry
    stride_h, stride_w, dil_h,
    # the epilogue (``epilogue.store_conv_tile``): per-channel vectors, residual and its strides, flags
    bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr,
    # meta-parameters
    R: tl.constexpr, RUN: tl.constexpr, C_PAD: tl.constexpr,
    ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """Each program computes a [BLOCK_M pixels x BLOCK_N output channels] tile over its part of
    the kernel rows (and of the RUN-long runs, in BLOCK_K blocks).

    Grid: (tiles of the N*P*Q x K GEMM, 1, SPLIT_K). x: the zero-padded input, contiguous
    [N, HP, WP, C_PAD]; w: contiguous [K, R, RUN] (RUN = S*C_PAD, padded channels zero).
    """
    pid = tl.program_id(0)
    split = tl.program_id(2)
    M = N * P * Q
    offs_m, offs_n, mask_m, mask_n = gemm_tile(pid, M, K, BLOCK_M, BLOCK_N, GROUP_M)
    if USE_INT64:
        offs_m = offs_m.to(tl.int64)
    n = offs_m // (P * Q)
    p = (offs_m // Q) % P
    q = offs_m % Q
    k = offs_n
    # The run of pixel (n, p, q) at kernel row 0 starts at x_pad[n, p*sh, q*sw, 0].
    x_rows = ((n * HP + p * stride_h) * WP + q * stride_w) * C_PAD
    w_cols = k * (R * RUN)
    offs_j = tl.arange(0, BLOCK_K)

    runs = tl.cdiv(RUN, BLOCK_K)
    first, last = split_range(R * runs, split, SPLIT_K)
    r = first // runs
    j0 = (first % runs) * BLOCK_K
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for _ in range(first, last):
        j = j0 + offs_j
        j_ok = j < RUN
        a = tl.load(x_ptr + (x_rows[:, None] + (r * dil_h * WP * C_PAD + j)[None, :]),
                    mask=mask_m[:, None] & j_ok[None, :], other=0.0)
        b = tl.load(w_ptr + (w_cols[None, :] + (r * RUN + j)[:, None]),
                    mask=j_ok[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
        j0, r = carry(j0 + BLOCK_K, RUN, r)

    store_output_or_partial(
        acc, n, p, q, k, offs_m, mask_m, mask_n,
        (out_ptr, so_n, so_k, so_p, so_q),
        (bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
         HAS_BIAS, HAS_SCALE, HAS_RESIDUAL, ACTIVATION),
        part_ptr, split, M, K, SPLIT_K,
    )


@triton.jit
def _stem_wgrad_kernel(
    # pointers: padded input, grad_output, padded grad_weight, split-K partials
    x_ptr, dy_ptr, dw_ptr, part_ptr,
    # sizes (HP, WP: the padded input's)
    N, P, Q, K, HP, WP,
    # strides of grad_output
    sd_n, sd_p, sd_q,
    # geometry
    stride_h, stride_w, dil_h,
    # meta-parameters
    R: tl.constexpr, RUN: tl.constexpr, C_PAD: tl.constexpr,
    ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """Each program computes dw_pad[BLOCK_M out-channels, r, BLOCK_N run elements] for one kernel
    row r over its part of the N*P*Q pixels.

    Grid: (tiles of K x RUN, R * SPLIT_K, 1). x as in the forward; dy has unit channel stride;
    dw_pad is contiguous [K, R, RUN] (or, split, part[split, k, r*RUN + j]).
    """
    pid = tl.program_id(0)
    r = tl.program_id(1) // SPLIT_K
    split = tl.program_id(1) % SPLIT_K
    offs_m, offs_n, mask_m, mask_n = gemm_tile(pid, K, RUN, BLOCK_M, BLOCK_N, GROUP_M)
    k = offs_m
    if USE_INT64:
        k = k.to(tl.int64)

    NPQ = N * P * Q
    first, last = split_range(tl.cdiv(NPQ, BLOCK_K), split, SPLIT_K)
    n, p, q, step_n, step_p, step_q = pixel_walk(first * BLOCK_K, BLOCK_K, P, Q, USE_INT64)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for _ in range(first, last):
        pix_ok = n < N
        a = tl.load(dy_ptr + ((n * sd_n + p * sd_p + q * sd_q)[None, :] + k[:, None]),
                    mask=mask_m[:, None] & pix_ok[None, :], other=0.0)
        x_rows = ((n * HP + p * stride_h + r * dil_h) * WP + q * stride_w) * C_PAD
        b = tl.load(x_ptr + (x_rows[:, None] + offs_n[None, :]), mask=pix_ok[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
        n, p, q = advance_pixels(n, p, q, step_n, step_p, step_q, P, Q)

    cols = r * RUN + offs_n
    if SPLIT_K == 1:
        tl.store(dw_ptr + k[:, None] * (R * RUN) + cols[None, :], acc.to(dw_ptr.dtype.element_ty),
                 mask=mask_m[:, None] & mask_n[None, :])
    else:
        splitk_store_partial(acc, part_ptr, split, k, cols, mask_m, mask_n, K, R * RUN)


_KEY = ["N", "P", "Q", "K", "HP", "WP", "stride_h", "stride_w", "dil_h", "R", "RUN", "C_PAD",
        "ACC_DTYPE", "DOT_PRECISION", "USE_INT64"]
STEM_FORWARD = TunedKernel(_stem_forward_kernel, configs=gemm_plan.static_menu(flattened=True), key=_KEY,
                           interpreter_config=gemm_plan.INTERPRETER_CONFIG, tile_operands=gemm_plan.TILE_OPERANDS)
STEM_WGRAD = TunedKernel(_stem_wgrad_kernel, configs=gemm_plan.static_menu(flattened=False), key=_KEY,
                         interpreter_config=gemm_plan.INTERPRETER_CONFIG, tile_operands=gemm_plan.TILE_OPERANDS)


def channel_padding(c: int, element_bytes: int) -> int:
    """C_PAD: the power of two >= c whose channel run of one pixel is at least 4 bytes (cp.async's
    smallest copy), so every run starts aligned."""
    return max(triton.next_power_of_2(c), 4 // element_bytes, 1)


def padded_input(x: torch.Tensor, params: ConvParams, c_pad: int) -> torch.Tensor:
    """x as a contiguous zero-padded [N, H + pads, W + pads, C_PAD] buffer (one copy)."""
    xp = torch.zeros((params.n, params.h + params.pad_top + params.pad_bottom,
                      params.w + params.pad_left + params.pad_right, c_pad), dtype=x.dtype, device=x.device)
    xp[:, params.pad_top:params.pad_top + params.h, params.pad_left:params.pad_left + params.w, :params.c].copy_(
        x.permute(0, 2, 3, 1))
    return xp


def padded_weight(w: torch.Tensor, c_pad: int) -> torch.Tensor:
    """w as a contiguous [K, R, S*C_PAD] buffer, padded channels zero."""
    k, c, r, s = w.shape
    wp = torch.zeros((k, r, s, c_pad), dtype=w.dtype, device=w.device)
    wp[..., :c].copy_(w.permute(0, 2, 3, 1))
    return wp.view(k, r, s * c_pad)


def _problem(params: ConvParams, run: int, element_bytes: int, wgrad: bool) -> gemm_plan.GemmProblem:
    if wgrad:
        return gemm_plan.GemmProblem(m=params.k, n=run, reduction_block=params.n * params.p * params.q,
                                     outer_blocks=1, programs=params.r, element_bytes=element_bytes, flattened=False)
    return gemm_plan.GemmProblem(m=params.n * params.p * params.q, n=params.k, reduction_block=run,
                                 outer_blocks=params.r, programs=1, element_bytes=element_bytes, flattened=True)


def stem_forward(x, w, bias, params: ConvParams, *, scale=None, shift=None, residual=None, activation=0):
    """Launch the stem forward; returns the output in PyTorch's memory format."""
    out = new_buffer(params.output_shape, params.dtype, x.device, channels_last=True)
    if out.numel() == 0:
        return finish(out, params.channels_last)
    c_pad = channel_padding(params.c, x.element_size())
    xp, wp = padded_input(x, params, c_pad), padded_weight(w, c_pad)
    run = params.s * c_pad
    candidates = gemm_plan.plan(_problem(params, run, x.element_size(), wgrad=False))
    m = params.n * params.p * params.q
    splits = gemm_plan.largest_split(candidates)
    part = new_partials(splits, m, params.k, params.dtype, x.device) if splits > 1 else out
    epilogue = epilogue_arguments(out, bias, scale, shift, residual, activation)
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(params.k, meta["BLOCK_N"]), 1,
                         meta["SPLIT_K"])
    chosen = STEM_FORWARD.launch(
        grid, candidates,
        xp, wp, out, part,
        params.n, params.p, params.q, params.k, xp.shape[1], xp.shape[2],
        *out.stride(),
        *params.stride, params.dilation[0],
        *epilogue.args, **epilogue.flags,
        R=params.r, RUN=run, C_PAD=c_pad,
        ACC_DTYPE=acc_dtype(params.dtype), DOT_PRECISION=dot_precision(params.dtype),
        USE_INT64=needs_int64(xp, wp, out, part, epilogue.residual_or_out),
    )
    reduce_if_split(chosen, part, out, (params.p, params.q), out.stride(), bias=bias, scale=scale, shift=shift,
                    residual=residual, activation=activation)
    return finish(out, params.channels_last)


def stem_grad_weight(dy: torch.Tensor, x: torch.Tensor, params: ConvParams, channels_last: bool) -> torch.Tensor:
    """dw (K, C, R, S) through the padded runs; deterministic."""
    c_pad = channel_padding(params.c, x.element_size())
    run = params.s * c_pad
    dw_pad = new_buffer((params.k, params.r, run), dy.dtype, dy.device)
    if params.n * params.p * params.q == 0:
        dw_pad.zero_()
    else:
        dy = nhwc(dy)
        xp = padded_input(x, params, c_pad)
        candidates = gemm_plan.plan(_problem(params, run, x.element_size(), wgrad=True))
        splits = gemm_plan.largest_split(candidates)
        part = new_partials(splits, params.k, params.r * run, dy.dtype, dy.device) if splits > 1 else dw_pad
        grid = lambda meta: (triton.cdiv(params.k, meta["BLOCK_M"]) * triton.cdiv(run, meta["BLOCK_N"]),
                             params.r * meta["SPLIT_K"], 1)
        chosen = STEM_WGRAD.launch(
            grid, candidates,
            xp, dy, dw_pad, part,
            params.n, params.p, params.q, params.k, xp.shape[1], xp.shape[2],
            dy.stride(0), dy.stride(2), dy.stride(3),
            *params.stride, params.dilation[0],
            R=params.r, RUN=run, C_PAD=c_pad,
            ACC_DTYPE=acc_dtype(dy.dtype), DOT_PRECISION=dot_precision(dy.dtype),
            USE_INT64=needs_int64(xp, dy, dw_pad, part),
        )
        reduce_if_split(chosen, part, dw_pad, (1, 1), (params.r * run, 1, 0, 0))
    dw = dw_pad.view(params.k, params.r, params.s, c_pad)[..., :params.c].permute(0, 3, 1, 2)
    return dw.contiguous(memory_format=memory_format(channels_last))


def unsupported(params: ConvParams) -> Optional[str]:
    """Why the stem does not apply to ``params``, or None."""
    if params.groups != 1:
        return f"stem needs groups=1, got groups={params.groups}"
    if params.c > MAX_CHANNELS:
        return f"stem is for at most {MAX_CHANNELS} input channels, got {params.c}"
    if params.dilation[1] != 1:
        return f"stem needs a horizontal dilation of 1 (its reduction runs along input rows), got dilation={list(params.dilation)}"
    return None

