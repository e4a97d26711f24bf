"""Implicit-GEMM ("im2col" without the column buffer) forward convolution.

The GEMM: rows = the N*P*Q output pixels, columns = the output channels of one group,
reduction = (r, s, c) with c innermost. Columns of the virtual im2col matrix are gathered
straight from the input with its own strides (NCHW, NHWC or any view), so nothing is
materialised; padding is a masked load. Groups are a grid axis.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..epilogue import store_conv_tile
from ..params import ConvParams
from ..tuning import TunedKernel, config, grouped_tile
from ..prepack import channels_last_weight
from ..registry import Algorithm, direct_macs, register
from .common import GEMM_CONFIGS, GEMM_TILES, dot_precision, launch_pixel_channel_forward


@triton.jit
def _im2col_forward_kernel(
    x_ptr, w_ptr, out_ptr, bias_ptr, scale_ptr, shift_ptr, res_ptr,
    N, H, W, P, Q, C_PER_GROUP, K_PER_GROUP,
    sx_n, sx_c, sx_h, sx_w,
    sw_k, sw_c, sw_r, sw_s,
    so_n, so_k, so_p, so_q,
    sr_n, sr_k, sr_p, sr_q,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    R: tl.constexpr, S: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    ACTIVATION: tl.constexpr, ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Each program computes a [BLOCK_M pixels x BLOCK_N output channels] tile of one group.

    Grid: (tiles of the N*P*Q x K_PER_GROUP GEMM, groups). The reduction loops over kernel
    taps (r, s) and, innermost, channel blocks: row addresses and padding masks are formed
    once per tap, and the pipelined inner loop only steps through channels. (A single
    flattened tap x channel loop has been miscompiled with num_warps=8.)
    """
    pid = tl.program_id(0)
    group = tl.program_id(1)
    M = N * P * Q
    pid_m, pid_n = grouped_tile(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(K_PER_GROUP, BLOCK_N), GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < K_PER_GROUP
    if USE_INT64:
        offs_m = offs_m.to(tl.int64)
    n = offs_m // (P * Q)
    pq = offs_m % (P * Q)
    p = pq // Q
    q = pq % Q
    k = group * K_PER_GROUP + offs_n
    if USE_INT64:
        k = k.to(tl.int64)

    h_base = p * stride_h - pad_h
    w_base = q * stride_w - pad_w
    x_group = x_ptr + group * C_PER_GROUP * sx_c
    offs_c = tl.arange(0, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for r in range(R):
        h = h_base + r * dil_h
        h_ok = mask_m & (h >= 0) & (h < H)
        for s in range(S):
            w = w_base + s * dil_w
            row_ok = h_ok & (w >= 0) & (w < W)
            x_rows = x_group + (n * sx_n + h * sx_h + w * sx_w)
            w_tap = w_ptr + k * sw_k + r * sw_r + s * sw_s
            for c0 in range(0, C_PER_GROUP, BLOCK_K):
                c = c0 + offs_c
                c_ok = c < C_PER_GROUP
                a = tl.load(x_rows[:, None] + c[None, :] * sx_c, mask=row_ok[:, None] & c_ok[None, :], other=0.0)
                b = tl.load(w_tap[None, :] + c[:, None] * sw_c, mask=c_ok[:, None] & mask_n[None, :], other=0.0)
                acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)

    store_conv_tile(
        acc, n, p, q, k, mask_m, mask_n,
        out_ptr, so_n, so_k, so_p, so_q,
        bias_ptr, scale_ptr, shift_ptr,
        res_ptr, sr_n, sr_k, sr_p, sr_q,
        HAS_BIAS, HAS_SCALE, HAS_RESIDUAL, ACTIVATION,
    )


IM2COL_FORWARD = TunedKernel(
    _im2col_forward_kernel,
    configs=GEMM_CONFIGS,
    key=["N", "H", "W", "P", "Q", "C_PER_GROUP", "K_PER_GROUP", "R", "S", "stride_h", "stride_w",
         "ACC_DTYPE", "DOT_PRECISION", "USE_INT64"],
    interpreter_config=config(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16, GROUP_M=2, num_stages=1),
    tile_operands=GEMM_TILES,
    examples=[
        # channels_last activations and prepacked weights: the unit strides the JIT specialises on.
        dict(constexprs=dict(R=3, S=3, HAS_BIAS=True, HAS_SCALE=False, HAS_RESIDUAL=False, ACTIVATION=0,
                             ACC_DTYPE=tl.float32, DOT_PRECISION="ieee", USE_INT64=False), dtype="fp16",
             ones=("sx_c", "sw_c", "so_k"), aligned=True),
        dict(constexprs=dict(R=3, S=3, HAS_BIAS=True, HAS_SCALE=False, HAS_RESIDUAL=False, ACTIVATION=0,
                             ACC_DTYPE=tl.float32, DOT_PRECISION="ieee", USE_INT64=False), dtype="fp16"),
        dict(constexprs=dict(R=3, S=3, HAS_BIAS=True, HAS_SCALE=True, HAS_RESIDUAL=True, ACTIVATION=1,
                             ACC_DTYPE=tl.float32, DOT_PRECISION="ieee", USE_INT64=True), dtype="bf16"),
        dict(constexprs=dict(R=7, S=7, HAS_BIAS=False, HAS_SCALE=False, HAS_RESIDUAL=False, ACTIVATION=0,
                             ACC_DTYPE=tl.float32, DOT_PRECISION="ieee", USE_INT64=False), dtype="fp32"),
        dict(constexprs=dict(R=1, S=1, HAS_BIAS=False, HAS_SCALE=False, HAS_RESIDUAL=False, ACTIVATION=0,
                             ACC_DTYPE=tl.float32, DOT_PRECISION="tf32", USE_INT64=False), dtype="fp32"),
    ],
)


def im2col_forward(x, w, bias, params: ConvParams, *, scale=None, shift=None, residual=None, activation=0):
    """Launch the implicit-GEMM forward; returns a new output in PyTorch's memory format."""
    return launch_pixel_channel_forward(
        IM2COL_FORWARD, x, channels_last_weight(w), bias, params, scale=scale, shift=shift,
        residual=residual, activation=activation, DOT_PRECISION=dot_precision(params.dtype))


register(Algorithm(
    name="im2col",
    unsupported=lambda params: None,  # implicit GEMM serves every shape F.conv2d accepts
    forward=im2col_forward,
    count=direct_macs,
    description="implicit GEMM: N*P*Q x K/groups x (R*S*C/groups), no column buffer",
))
