"""Pointwise (1x1) convolution as a GEMM over channels, forward and backward.

A 1x1 convolution has no taps: out[pixels, k] = x[pixels, c] @ w[c, k] per group, with
rows = the N*P*Q output pixels, reduction = C/groups, columns = K/groups. Stride and padding
only change which input pixel a row reads (the strided 1x1 downsample of ResNet reads every
second pixel by indexing, nothing is copied); in channels_last the rows are contiguous channel
vectors, so both operands load as 16-byte vectors and the loop pipelines on tensor cores.

One kernel serves the forward and grad_input: it reads operand A at pixel
(p*a_stride - a_pad, q*a_stride - a_pad) and writes at (p*o_stride - o_pad, ...):
* forward: A = x read strided / padded, B = w^T, output written densely;
* grad_input: A = dy read densely, B = w, dx written at the strided positions (the pixels a
  stride skips get zeros; nothing else is touched twice).
grad_weight is the GEMM dw = dy^T @ x over N*P*Q, the generic split-reduction wgrad kernel
specialised to R = S = 1 (``ops/backward.py``): deterministic, no atomics.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..epilogue import epilogue_arguments, store_conv_tile
from ..params import ConvParams
from ..prepack import channels_last_weight
from ..registry import Algorithm, direct_macs, register
from ..tuning import TunedKernel, config, grouped_tile
from . import backward
from .common import GEMM_CONFIGS, GEMM_TILES, acc_dtype, dot_precision, needs_int64, new_buffer, new_output


@triton.jit
def _pointwise_gemm_kernel(
    a_ptr, b_ptr, out_ptr, bias_ptr, scale_ptr, shift_ptr, res_ptr,
    N, P, Q, A_H, A_W, OUT_H, OUT_W, RED_PER_GROUP, COL_PER_GROUP,
    sa_n, sa_c, sa_h, sa_w,
    sb_g, sb_k, sb_n,
    so_n, so_k, so_p, so_q,
    sr_n, sr_k, sr_p, sr_q,
    a_stride_h, a_stride_w, a_pad_h, a_pad_w,
    o_stride_h, o_stride_w, o_pad_h, o_pad_w,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    ACTIVATION: tl.constexpr, ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Each program computes a [BLOCK_M pixels x BLOCK_N columns] tile of one group of

        out[n, g*COL + j, p*o_stride - o_pad, ...] =
            sum over i < RED_PER_GROUP of a[n, g*RED + i, p*a_stride - a_pad, ...] * b[g, i, j]

    for the pixels (n, p, q) of an N x P x Q grid. Grid: (tiles of N*P*Q x COL_PER_GROUP,
    groups). A pixel outside A (padding) reads zeros; one outside the output is not stored.
    B[g, i, j] is at b_ptr + g*sb_g + i*sb_k + j*sb_n.
    """
    pid = tl.program_id(0)
    group = tl.program_id(1)
    M = N * P * Q
    pid_m, pid_n = grouped_tile(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(COL_PER_GROUP, BLOCK_N), GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    in_m = offs_m < M
    mask_n = offs_n < COL_PER_GROUP
    red_first = group * RED_PER_GROUP
    if USE_INT64:
        offs_m = offs_m.to(tl.int64)
        red_first = red_first.to(tl.int64)
    n = offs_m // (P * Q)
    pq = offs_m % (P * Q)
    p = pq // Q
    q = pq % Q
    col = group * COL_PER_GROUP + offs_n
    if USE_INT64:
        col = col.to(tl.int64)

    a_h = p * a_stride_h - a_pad_h
    a_w = q * a_stride_w - a_pad_w
    a_ok = in_m & (a_h >= 0) & (a_h < A_H) & (a_w >= 0) & (a_w < A_W)
    o_h = p * o_stride_h - o_pad_h
    o_w = q * o_stride_w - o_pad_w
    mask_m = in_m & (o_h >= 0) & (o_h < OUT_H) & (o_w >= 0) & (o_w < OUT_W)

    a_rows = a_ptr + red_first * sa_c + (n * sa_n + a_h * sa_h + a_w * sa_w)
    b_cols = b_ptr + group * sb_g + offs_n * sb_n
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for k0 in range(0, RED_PER_GROUP, BLOCK_K):
        i = k0 + offs_k
        i_ok = i < RED_PER_GROUP
        a = tl.load(a_rows[:, None] + i[None, :] * sa_c, mask=a_ok[:, None] & i_ok[None, :], other=0.0)
        b = tl.load(b_cols[None, :] + i[:, None] * sb_k, mask=i_ok[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)

    store_conv_tile(
        acc, n, o_h, o_w, col, mask_m, mask_n,
        out_ptr, so_n, so_k, so_p, so_q,
        bias_ptr, scale_ptr, shift_ptr,
        res_ptr, sr_n, sr_k, sr_p, sr_q,
        HAS_BIAS, HAS_SCALE, HAS_RESIDUAL, ACTIVATION,
    )


_EXAMPLE = dict(HAS_BIAS=False, HAS_SCALE=False, HAS_RESIDUAL=False, ACTIVATION=0,
                ACC_DTYPE=tl.float32, DOT_PRECISION="ieee", USE_INT64=False)

POINTWISE_GEMM = TunedKernel(
    _pointwise_gemm_kernel,
    configs=GEMM_CONFIGS,
    key=["N", "P", "Q", "A_H", "A_W", "RED_PER_GROUP", "COL_PER_GROUP", "a_stride_h", "a_stride_w",
         "o_stride_h", "o_stride_w", "ACC_DTYPE", "DOT_PRECISION", "USE_INT64"],
    interpreter_config=config(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16, GROUP_M=2, num_stages=1),
    tile_operands=GEMM_TILES,
    examples=[
        # forward in channels_last: x rows and w^T columns contiguous in the reduction (c).
        dict(constexprs=dict(_EXAMPLE, HAS_BIAS=True), dtype="fp16", ones=("sa_c", "sb_k", "so_k"), aligned=True),
        # grad_input in channels_last: dy rows contiguous in k, w rows contiguous in c.
        dict(constexprs=_EXAMPLE, dtype="fp16", ones=("sa_c", "sb_n", "so_k"), aligned=True),
        dict(constexprs=dict(_EXAMPLE, HAS_BIAS=True, HAS_SCALE=True, HAS_RESIDUAL=True, ACTIVATION=3,
                             USE_INT64=True), dtype="bf16"),
        dict(constexprs=dict(_EXAMPLE, DOT_PRECISION="tf32"), dtype="fp32"),
    ],
)


def _launch(a, b, out, pixels, *, a_geometry, out_geometry, b_strides, red, cols, groups, dtype,
            bias=None, scale=None, shift=None, residual=None, activation=0):
    """Run the GEMM over the ``pixels`` = (N, P, Q) grid of output pixels."""
    n, p, q = pixels
    epilogue = epilogue_arguments(out, bias, scale, shift, residual, activation)
    M = n * p * q
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(cols, meta["BLOCK_N"]), groups)
    POINTWISE_GEMM[grid](
        a, b, out,
        *epilogue.pointers,
        n, p, q, a_geometry[0], a_geometry[1], out_geometry[0], out_geometry[1], red, cols,
        *a.stride(), *b_strides, *out.stride(), *epilogue.residual_strides,
        *a_geometry[2:], *out_geometry[2:],
        **epilogue.flags,
        ACC_DTYPE=acc_dtype(dtype), DOT_PRECISION=dot_precision(dtype),
        USE_INT64=needs_int64(a, b, out, epilogue.residual_or_out),
    )


def pointwise_forward(x, w, bias, params: ConvParams, *, scale=None, shift=None, residual=None, activation=0):
    """Launch the 1x1 forward GEMM; returns a new output in PyTorch's memory format."""
    out = new_output(params, x.device)
    w = channels_last_weight(w)
    if out.numel() == 0:
        return out
    sw_k, sw_c = w.stride(0), w.stride(1)
    _launch(
        x, w, out, (params.n, params.p, params.q),
        # A = x at (p*stride - pad); the output is written densely at (p, q).
        a_geometry=(params.h, params.w, *params.stride, params.pad_top, params.pad_left),
        out_geometry=(params.p, params.q, 1, 1, 0, 0),
        b_strides=(params.k_per_group * sw_k, sw_c, sw_k),  # B[g, c, k] = w[g*K + k, c]
        red=params.c_per_group, cols=params.k_per_group, groups=params.groups, dtype=params.dtype,
        bias=bias, scale=scale, shift=shift, residual=residual, activation=activation,
    )
    return out


def pointwise_grad_input(dy: torch.Tensor, w: torch.Tensor, params: ConvParams, channels_last: bool) -> torch.Tensor:
    """dx = dy @ w per group, scattered to the input pixels the stride reached; zeros elsewhere."""
    dx = new_buffer((params.n, params.c, params.h, params.w), dy.dtype, dy.device, channels_last)
    if dx.numel() == 0:
        return dx
    if params.stride != (1, 1):
        dx.zero_()  # input pixels between the strided ones get no gradient
    if params.n * params.p * params.q == 0:
        return dx
    w = channels_last_weight(w)
    sw_k, sw_c = w.stride(0), w.stride(1)
    _launch(
        dy, w, dx, (params.n, params.p, params.q),
        a_geometry=(params.p, params.q, 1, 1, 0, 0),
        out_geometry=(params.h, params.w, *params.stride, params.pad_top, params.pad_left),
        b_strides=(params.k_per_group * sw_k, sw_k, sw_c),  # B[g, k, c] = w[g*K + k, c]
        red=params.k_per_group, cols=params.c_per_group, groups=params.groups, dtype=dy.dtype,
    )
    return dx


def _unsupported(params: ConvParams):
    if (params.r, params.s) != (1, 1):
        return f"pointwise needs a 1x1 kernel, got {params.r}x{params.s}"
    return None


register(Algorithm(
    name="pointwise",
    unsupported=_unsupported,
    forward=pointwise_forward,
    count=direct_macs,
    # dw = dy^T @ x: the generic split-reduction wgrad with R = S = 1 is exactly that GEMM.
    grad_input=pointwise_grad_input,
    grad_weight=backward.grad_weight,
    description="1x1 as a GEMM: N*P*Q x K/groups x C/groups, stride by indexing",
))
