"""Direct convolution: the definition, one multiply-accumulate per (c, r, s), no ``tl.dot``.

out[n, k, p, q] = sum over c, r, s of x[n, c, p*stride - pad + r*dil, q*stride - pad + s*dil]
* w[k, c, r, s]. Each reduction step is an outer product of a column of input pixels and a
row of output-channel weights, so every loaded input value feeds BLOCK_N multiply-adds.

It serves every shape ``F.conv2d`` accepts and is the readable reference kernel of the
package; ``auto`` never routes to it (the stem and narrow groups run on tensor cores through the
implicit GEMM), so it runs only when asked for by name.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..core.launcher import TunedKernel, config
from ..core.params import ConvParams
from .common import acc_dtype, needs_int64, new_output
from .epilogue import epilogue_arguments, store_conv_tile
from .tiles import gemm_tile


@triton.jit
def _direct_forward_kernel(
    # pointers: input, weight, output
    x_ptr, w_ptr, out_ptr,
    # sizes
    N, H, W, P, Q, C_PER_GROUP, K_PER_GROUP,
    # strides of the input, the weight and the output
    sx_n, sx_c, sx_h, sx_w,
    sw_k, sw_c, sw_r, sw_s,
    so_n, so_k, so_p, so_q,
    # geometry
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # the epilogue (``epilogue.store_conv_tile``): per-channel vectors, residual and its strides, flags
    bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr,
    # meta-parameters
    R: tl.constexpr, S: tl.constexpr, ACC_DTYPE: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Each program computes a [BLOCK_M output pixels x BLOCK_N output channels] tile of one group.

    Grid: (tiles of N*P*Q x K_PER_GROUP, groups). Loops: kernel taps (r, s) outside, input
    channels of the group inside; each step adds x[pixels, c] (outer) w[c, channels].
    """
    pid = tl.program_id(0)
    group = tl.program_id(1)
    M = N * P * Q
    offs_m, offs_n, mask_m, mask_n = gemm_tile(pid, M, K_PER_GROUP, BLOCK_M, BLOCK_N, GROUP_M)
    c_first = group * C_PER_GROUP
    if USE_INT64:
        offs_m = offs_m.to(tl.int64)
        c_first = c_first.to(tl.int64)
    n = offs_m // (P * Q)
    pq = offs_m % (P * Q)
    p = pq // Q
    q = pq % Q
    k = group * K_PER_GROUP + offs_n
    if USE_INT64:
        k = k.to(tl.int64)

    h_base = p * stride_h - pad_h
    w_base = q * stride_w - pad_w
    x_group = x_ptr + c_first * sx_c
    # Offsets, not pointer vectors, stay live across the loops: half the registers.
    w_chan = k * sw_k
    # Accumulated transposed, [channels, pixels]: Triton spreads a tile's last dimension over
    # the lanes of a warp, so a thread holds few pixels and weights that are uniform across
    # its warp. As [pixels, channels] every thread held 32 row pointers and spilled.
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=ACC_DTYPE)
    for r in range(R):
        h = h_base + r * dil_h
        h_ok = mask_m & (h >= 0) & (h < H)
        for s in range(S):
            w = w_base + s * dil_w
            row_ok = h_ok & (w >= 0) & (w < W)
            x_rows = n * sx_n + h * sx_h + w * sx_w
            w_tap = r * sw_r + s * sw_s
            for c in range(0, C_PER_GROUP):
                a = tl.load(x_group + (x_rows + c * sx_c), mask=row_ok, other=0.0).to(ACC_DTYPE)
                b = tl.load(w_ptr + (w_chan + (w_tap + c * sw_c)), mask=mask_n, other=0.0).to(ACC_DTYPE)
                acc += b[:, None] * a[None, :]

    store_conv_tile(
        tl.trans(acc), n, p, q, k, mask_m, mask_n,
        (out_ptr, so_n, so_k, so_p, so_q),
        (bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
         HAS_BIAS, HAS_SCALE, HAS_RESIDUAL, ACTIVATION),
    )


DIRECT_FORWARD = TunedKernel(
    _direct_forward_kernel,
    # Outer-product tiles of at most 32 fp32 accumulators per thread: larger ones spill on sm_90.
    configs=[
        config(BLOCK_M=64, BLOCK_N=64, GROUP_M=8, num_warps=4, num_stages=2),
        config(BLOCK_M=128, BLOCK_N=32, GROUP_M=8, num_warps=4, num_stages=2),
        config(BLOCK_M=256, BLOCK_N=32, GROUP_M=8, num_warps=8, num_stages=2),
        config(BLOCK_M=256, BLOCK_N=16, GROUP_M=8, num_warps=4, num_stages=2),
        config(BLOCK_M=128, BLOCK_N=16, GROUP_M=8, num_warps=2, num_stages=2),
    ],
    key=["N", "H", "W", "P", "Q", "C_PER_GROUP", "K_PER_GROUP", "R", "S", "stride_h", "stride_w",
         "ACC_DTYPE", "USE_INT64"],
    interpreter_config=config(BLOCK_M=64, BLOCK_N=16, GROUP_M=2, num_stages=1),
)


def direct_forward(x, w, bias, params: ConvParams, *, scale=None, shift=None, residual=None, activation=0):
    """Launch the direct forward over the (N*P*Q pixels x K/groups channels) output of each group
    (grid: tiles, groups); returns a new output in PyTorch's memory format."""
    out = new_output(params, x.device)
    if out.numel() == 0:
        return out
    epilogue = epilogue_arguments(out, bias, scale, shift, residual, activation)
    M = params.n * params.p * params.q
    grid = lambda meta: (
        triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(params.k_per_group, meta["BLOCK_N"]),
        params.groups,
    )
    DIRECT_FORWARD[grid](
        x, w, out,
        params.n, params.h, params.w, params.p, params.q, params.c_per_group, params.k_per_group,
        *x.stride(), *w.stride(), *out.stride(),
        *params.geometry,
        *epilogue.args, **epilogue.flags,
        R=params.r, S=params.s,
        ACC_DTYPE=acc_dtype(params.dtype),
        USE_INT64=needs_int64(x, w, out, epilogue.residual_or_out),
    )
    return out
