"""Generic backward kernels: grad_input (dgrad), grad_weight (wgrad) and grad_bias.

* dgrad is an implicit-GEMM transposed convolution. Strides are handled by sub-pixel
  phases instead of a zero-inserted gradient: input rows h with the same (h + pad) mod stride
  are reached by the same kernel taps, so each program serves one phase (a grid axis) and
  skips the taps that cannot reach it. No tap is multiplied by an inserted zero.
* wgrad is a GEMM (output channels x input channels, per kernel tap) reduced over N*P*Q.
  The reduction is split into a fixed number of chunks written to an fp32 buffer and summed
  in a fixed order: deterministic, no atomics.
* grad_bias is a deterministic per-channel reduction over N*P*Q, split the same way.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..params import ConvParams
from ..tuning import TunedKernel, config, grouped_tile
from ..prepack import channels_last_weight
from .common import GEMM_CONFIGS, GEMM_TILES, acc_dtype, dot_precision, needs_int64, new_buffer, reduction_splits
from .phases import stride_phase


@triton.jit
def _dgrad_kernel(
    dy_ptr, w_ptr, dx_ptr,
    N, H, W, P, Q, C_PER_GROUP, K_PER_GROUP, H_PER_PHASE, W_PER_PHASE,
    sd_n, sd_k, sd_p, sd_q,
    sw_k, sw_c, sw_r, sw_s,
    sx_n, sx_c, sx_h, sx_w,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    R: tl.constexpr, S: tl.constexpr,
    ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Each program computes dx for BLOCK_M input pixels of one stride phase x BLOCK_N channels.

    Grid: (tiles of (N*H_PER_PHASE*W_PER_PHASE) x C_PER_GROUP, groups, stride_h*stride_w).
    dx[n, c, h, w] = sum over taps (r, s) with (h + pad_h - r*dil_h) divisible by stride_h
    (likewise for w) and over k of dy[n, k, p, q] * weight[k, c, r, s].
    """
    pid = tl.program_id(0)
    group = tl.program_id(1)
    phase = tl.program_id(2)
    phase_h, phase_w, h_first, w_first = stride_phase(phase, stride_h, stride_w, pad_h, pad_w)

    M = N * H_PER_PHASE * W_PER_PHASE
    pid_m, pid_n = grouped_tile(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(C_PER_GROUP, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if USE_INT64:
        offs_m = offs_m.to(tl.int64)
    n = offs_m // (H_PER_PHASE * W_PER_PHASE)
    ij = offs_m % (H_PER_PHASE * W_PER_PHASE)
    h = h_first + (ij // W_PER_PHASE) * stride_h
    w = w_first + (ij % W_PER_PHASE) * stride_w
    mask_m = (offs_m < M) & (h < H) & (w < W)
    mask_n = offs_n < C_PER_GROUP
    c = group * C_PER_GROUP + offs_n
    if USE_INT64:
        c = c.to(tl.int64)

    dy_group = dy_ptr + group * K_PER_GROUP * sd_k
    w_group = w_ptr + group * K_PER_GROUP * sw_k
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for r in range(R):
        if (phase_h - r * dil_h) % stride_h == 0:
            p = (h + pad_h - r * dil_h) // stride_h
            for s in range(S):
                if (phase_w - s * dil_w) % stride_w == 0:
                    q = (w + pad_w - s * dil_w) // stride_w
                    row_ok = mask_m & (p >= 0) & (p < P) & (q >= 0) & (q < Q)
                    dy_rows = n * sd_n + p * sd_p + q * sd_q
                    for k0 in range(0, K_PER_GROUP, BLOCK_K):
                        kk = k0 + offs_k
                        k_ok = kk < K_PER_GROUP
                        a = tl.load(dy_group + dy_rows[:, None] + kk[None, :] * sd_k,
                                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
                        b = tl.load(w_group + kk[:, None] * sw_k + offs_n[None, :] * sw_c + r * sw_r + s * sw_s,
                                    mask=k_ok[:, None] & mask_n[None, :], other=0.0)
                        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)

    dx_rows = n * sx_n + h * sx_h + w * sx_w
    mask = mask_m[:, None] & mask_n[None, :]
    tl.store(dx_ptr + dx_rows[:, None] + c[None, :] * sx_c, acc.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _wgrad_kernel(
    x_ptr, dy_ptr, part_ptr,
    N, H, W, P, Q, C_PER_GROUP, K_PER_GROUP, K, CHUNK,
    sx_n, sx_c, sx_h, sx_w,
    sd_n, sd_k, sd_p, sd_q,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    R: tl.constexpr, S: tl.constexpr,
    ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Each program computes a partial dw[BLOCK_M out-channels, BLOCK_N in-channels] for one
    kernel tap (r, s) over one CHUNK of the N*P*Q reduction.

    Grid: (tiles of K_PER_GROUP x C_PER_GROUP, R*S*splits, groups). Partial results go to
    part[split, k, c, r, s] (contiguous); the launcher sums the splits in a fixed order.
    """
    pid = tl.program_id(0)
    tap_split = tl.program_id(1)
    group = tl.program_id(2)
    tap = tap_split % (R * S)
    split = tap_split // (R * S)
    r = tap // S
    s = tap % S

    pid_m, pid_n = grouped_tile(pid, tl.cdiv(K_PER_GROUP, BLOCK_M), tl.cdiv(C_PER_GROUP, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < K_PER_GROUP
    mask_n = offs_n < C_PER_GROUP
    k = group * K_PER_GROUP + offs_m
    c = group * C_PER_GROUP + offs_n
    if USE_INT64:
        k = k.to(tl.int64)
        c = c.to(tl.int64)

    NPQ = N * P * Q
    start = split * CHUNK
    offs_r = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for j0 in range(start, tl.minimum(start + CHUNK, NPQ), BLOCK_K):
        j = j0 + offs_r
        if USE_INT64:
            j = j.to(tl.int64)
        j_ok = j < tl.minimum(start + CHUNK, NPQ)
        n = j // (P * Q)
        pq = j % (P * Q)
        p = pq // Q
        q = pq % Q
        h = p * stride_h - pad_h + r * dil_h
        w = q * stride_w - pad_w + s * dil_w
        x_ok = j_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        a = tl.load(dy_ptr + (n * sd_n + p * sd_p + q * sd_q)[None, :] + k[:, None] * sd_k,
                    mask=mask_m[:, None] & j_ok[None, :], other=0.0)
        b = tl.load(x_ptr + (n * sx_n + h * sx_h + w * sx_w)[:, None] + c[None, :] * sx_c,
                    mask=x_ok[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)

    # part[split, k, c_in_group, r, s], contiguous.
    out_offs = (((split * K + k[:, None]) * C_PER_GROUP + offs_n[None, :]) * R + r) * S + s
    tl.store(part_ptr + out_offs, acc, mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _bias_grad_kernel(
    dy_ptr, part_ptr, N, K, P, Q, CHUNK,
    sd_n, sd_k, sd_p, sd_q,
    ACC_DTYPE: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Each program sums dy over one CHUNK of N*P*Q for BLOCK_N channels: part[split, k].

    Grid: (channel blocks, splits).
    """
    pid_k = tl.program_id(0)
    split = tl.program_id(1)
    k = pid_k * BLOCK_N + tl.arange(0, BLOCK_N)
    k_ok = k < K
    if USE_INT64:
        k = k.to(tl.int64)
    NPQ = N * P * Q
    start = split * CHUNK
    end = tl.minimum(start + CHUNK, NPQ)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for j0 in range(start, end, BLOCK_M):
        j = j0 + tl.arange(0, BLOCK_M)
        if USE_INT64:
            j = j.to(tl.int64)
        n = j // (P * Q)
        pq = j % (P * Q)
        rows = n * sd_n + (pq // Q) * sd_p + (pq % Q) * sd_q
        v = tl.load(dy_ptr + rows[:, None] + k[None, :] * sd_k, mask=(j < end)[:, None] & k_ok[None, :], other=0.0)
        acc += v.to(ACC_DTYPE)
    tl.store(part_ptr + split * K + k, tl.sum(acc, axis=0), mask=k_ok)


_COMMON_EXAMPLE = dict(R=3, S=3, ACC_DTYPE=tl.float32, DOT_PRECISION="ieee", USE_INT64=False)

DGRAD = TunedKernel(
    _dgrad_kernel,
    configs=GEMM_CONFIGS,
    key=["N", "H", "W", "P", "Q", "C_PER_GROUP", "K_PER_GROUP", "R", "S", "stride_h", "stride_w",
         "ACC_DTYPE", "DOT_PRECISION", "USE_INT64"],
    interpreter_config=config(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16, GROUP_M=2, num_stages=1),
    tile_operands=GEMM_TILES,
    examples=[dict(constexprs=_COMMON_EXAMPLE, dtype="fp16", ones=("sd_k", "sw_c", "sx_c"), aligned=True),
              dict(constexprs=dict(_COMMON_EXAMPLE, USE_INT64=True), dtype="bf16"),
              dict(constexprs=dict(_COMMON_EXAMPLE, R=1, S=1), dtype="fp32")],
)

# The wgrad GEMM reduces over CHUNK-sized slices; CHUNK is a multiple of every BLOCK_K.
WGRAD = TunedKernel(
    _wgrad_kernel,
    configs=GEMM_CONFIGS,
    key=["N", "H", "W", "P", "Q", "C_PER_GROUP", "K_PER_GROUP", "CHUNK", "R", "S", "stride_h", "stride_w",
         "ACC_DTYPE", "DOT_PRECISION", "USE_INT64"],
    interpreter_config=config(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2, num_stages=1),
    tile_operands=GEMM_TILES,
    examples=[dict(constexprs=_COMMON_EXAMPLE, dtype="fp16", pointer_dtypes=dict(part_ptr="fp32"),
                   ones=("sd_k", "sx_c"), aligned=True),
              dict(constexprs=dict(_COMMON_EXAMPLE, USE_INT64=True), dtype="bf16", pointer_dtypes=dict(part_ptr="fp32")),
              dict(constexprs=dict(_COMMON_EXAMPLE, R=7, S=7), dtype="fp32", pointer_dtypes=dict(part_ptr="fp32"))],
)

BIAS_GRAD = TunedKernel(
    _bias_grad_kernel,
    configs=[config(BLOCK_M=64, BLOCK_N=64, num_stages=2), config(BLOCK_M=128, BLOCK_N=32, num_stages=2)],
    key=["N", "K", "P", "Q", "CHUNK", "ACC_DTYPE", "USE_INT64"],
    interpreter_config=config(BLOCK_M=16, BLOCK_N=16, num_stages=1),
    examples=[dict(constexprs=dict(ACC_DTYPE=tl.float32, USE_INT64=False), dtype="fp16",
                   pointer_dtypes=dict(part_ptr="fp32"))],
)

def grad_input(dy: torch.Tensor, w: torch.Tensor, params: ConvParams, channels_last: bool) -> torch.Tensor:
    """dx for ``params``, in channels_last or contiguous layout as asked."""
    dx = new_buffer((params.n, params.c, params.h, params.w), dy.dtype, dy.device, channels_last)
    if dx.numel() == 0:
        return dx
    sh, sw = params.stride
    h_per_phase = triton.cdiv(params.h, sh)
    w_per_phase = triton.cdiv(params.w, sw)
    M = params.n * h_per_phase * w_per_phase
    w = channels_last_weight(w)
    grid = lambda meta: (
        triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(params.c_per_group, meta["BLOCK_N"]),
        params.groups,
        sh * sw,
    )
    DGRAD[grid](
        dy, w, dx,
        params.n, params.h, params.w, params.p, params.q, params.c_per_group, params.k_per_group,
        h_per_phase, w_per_phase,
        *dy.stride(), *w.stride(), *dx.stride(),
        *params.geometry,
        R=params.r, S=params.s,
        ACC_DTYPE=acc_dtype(dy.dtype), DOT_PRECISION=dot_precision(dy.dtype),
        USE_INT64=needs_int64(dy, w, dx),
    )
    return dx


def grad_weight(dy: torch.Tensor, x: torch.Tensor, params: ConvParams, channels_last: bool) -> torch.Tensor:
    """dw for ``params`` (K, C/groups, R, S), deterministic."""
    shape = (params.k, params.c_per_group, params.r, params.s)
    npq = params.n * params.p * params.q
    if npq == 0 or params.c_per_group == 0:
        dw = new_buffer(shape, dy.dtype, dy.device, channels_last)
        return dw.zero_()
    tiles = triton.cdiv(params.k_per_group, 64) * triton.cdiv(params.c_per_group, 64) * params.r * params.s * params.groups
    splits, chunk = reduction_splits(npq, tiles)
    part_dtype = torch.float64 if dy.dtype == torch.float64 else torch.float32
    part = new_buffer((splits,) + shape, part_dtype, dy.device)
    grid = lambda meta: (
        triton.cdiv(params.k_per_group, meta["BLOCK_M"]) * triton.cdiv(params.c_per_group, meta["BLOCK_N"]),
        params.r * params.s * splits,
        params.groups,
    )
    WGRAD[grid](
        x, dy, part,
        params.n, params.h, params.w, params.p, params.q, params.c_per_group, params.k_per_group, params.k, chunk,
        *x.stride(), *dy.stride(),
        *params.geometry,
        R=params.r, S=params.s,
        ACC_DTYPE=acc_dtype(dy.dtype), DOT_PRECISION=dot_precision(dy.dtype),
        USE_INT64=needs_int64(x, dy, part),
    )
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return part.sum(0).to(dtype=dy.dtype, memory_format=fmt)


def grad_bias(dy: torch.Tensor, params: ConvParams) -> torch.Tensor:
    """db = dy summed over N, P, Q, deterministic."""
    npq = params.n * params.p * params.q
    if npq == 0:
        return torch.zeros(params.k, dtype=dy.dtype, device=dy.device)
    splits, chunk = reduction_splits(npq, triton.cdiv(params.k, 64))
    part_dtype = torch.float64 if dy.dtype == torch.float64 else torch.float32
    part = new_buffer((splits, params.k), part_dtype, dy.device)
    grid = lambda meta: (triton.cdiv(params.k, meta["BLOCK_N"]), splits)
    BIAS_GRAD[grid](
        dy, part, params.n, params.k, params.p, params.q, chunk, *dy.stride(),
        ACC_DTYPE=acc_dtype(dy.dtype), USE_INT64=needs_int64(dy),
    )
    return part.sum(0).to(dy.dtype)
