"""grad_weight (wgrad) of a convolution: one GEMM per kernel tap on NHWC operands.

Per tap (r, s): dw[k, c, r, s] = sum over the N*P*Q output pixels of dy[pixel, k] * x[tap pixel, c],
a (K/groups x C/groups) GEMM reduced over pixels, whose coordinates advance by a mixed-radix add
(``tiles.advance_pixels``), not a division. Split-K from the planner (``plan``) when the tile grid is
under a wave; parts are added in a fixed order (``splitk``): deterministic, no atomics.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...core.launcher import TunedKernel
from ...core.layout import finish, nhwc
from ...core.params import ConvParams
from ..common import acc_dtype, depth_stride, dot_precision, needs_int64, new_buffer
from ..tiles import advance_pixels, advance_voxels, aligned, gemm_tile, pixel_walk, split_range, voxel_walk
from . import plan as gemm_plan
from . import conv_tma, pointwise_tma
from .plan import row_strides, vector_width_for
from .splitk import new_partials, reduce_if_split, splitk_store_partial


@triton.jit
def _wgrad_kernel(
    # pointers: input, grad_output, grad_weight, split-K partials
    x_ptr, dy_ptr, dw_ptr, part_ptr,
    # sizes
    N, H, W, P, Q, C_PER_GROUP, K_PER_GROUP,
    # strides of the input and of grad_output
    sx_n, sx_h, sx_w,
    sd_n, sd_p, sd_q,
    # geometry
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # the depth of a 3-D convolution (read only when DEPTH): input / output depth, the depth strides of
    # the input and grad_output, the depth's stride, padding and dilation
    D, O, sx_d, sd_o, stride_d, pad_d, dil_d,
    # meta-parameters
    R: tl.constexpr, S: tl.constexpr, T: tl.constexpr, DEPTH: tl.constexpr, VEC: tl.constexpr,
    ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """Each program computes dw[BLOCK_M out-channels, BLOCK_N in-channels] of one group for one
    kernel tap (r, s), over its part of the N*P*Q reduction.

    Grid: (tiles of K_PER_GROUP x C_PER_GROUP, R*S*SPLIT_K, groups). x and dy have unit channel
    stride. dw is written (K, R, S, C_PER_GROUP)-contiguous (or, split, as
    part[split, k, (r*S + s)*C_PER_GROUP + c] for ``splitk.split_reduce``).

    DEPTH (3-D): the tap axis is (t, r, s), T*R*S*SPLIT_K programs; the pixels reduced over are
    (n, output depth, p, q), walked by a four-digit counter (``tiles.voxel_walk``); dw is (K, T, R, S, C_PER_GROUP).
    """
    pid = tl.program_id(0)
    tap = tl.program_id(1) // SPLIT_K
    split = tl.program_id(1) % SPLIT_K
    group = tl.program_id(2)
    r = tap // S
    s = tap % S
    if DEPTH:
        t = r // R
        r = r % R
    Cg = aligned(C_PER_GROUP, VEC)
    Kg = aligned(K_PER_GROUP, VEC)
    sx_n, sx_h, sx_w = aligned(sx_n, VEC), aligned(sx_h, VEC), aligned(sx_w, VEC)
    sd_n, sd_p, sd_q = aligned(sd_n, VEC), aligned(sd_p, VEC), aligned(sd_q, VEC)

    offs_m, offs_n, mask_m, mask_n = gemm_tile(pid, Kg, Cg, BLOCK_M, BLOCK_N, GROUP_M)
    k = group * Kg + offs_m
    c = group * Cg + offs_n
    if USE_INT64:
        k = k.to(tl.int64)
        c = c.to(tl.int64)

    NPQ = N * P * Q
    if DEPTH:
        NPQ = NPQ * O
        sx_d, sd_o = aligned(sx_d, VEC), aligned(sd_o, VEC)
        d_tap = t * dil_d - pad_d
    first, last = split_range(tl.cdiv(NPQ, BLOCK_K), split, SPLIT_K)
    # Pixel coordinates of the first reduction block (divisions once), then a constant stride.
    if DEPTH:
        n, o, p, q, step_n, step_o, step_p, step_q = voxel_walk(first * BLOCK_K, BLOCK_K, O, P, Q, USE_INT64)
    else:
        n, p, q, step_n, step_p, step_q = pixel_walk(first * BLOCK_K, BLOCK_K, P, Q, USE_INT64)
    h_tap = r * dil_h - pad_h
    w_tap = s * dil_w - pad_w
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for _ in range(first, last):
        j_ok = n < N
        h = p * stride_h + h_tap
        w = q * stride_w + w_tap
        x_ok = j_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        if DEPTH:
            d = o * stride_d + d_tap
            x_ok = x_ok & (d >= 0) & (d < D)
            a = tl.load(dy_ptr + ((n * sd_n + o * sd_o + p * sd_p + q * sd_q)[None, :] + k[:, None]),
                        mask=mask_m[:, None] & j_ok[None, :], other=0.0)
            b = tl.load(x_ptr + ((n * sx_n + d * sx_d + h * sx_h + w * sx_w)[:, None] + c[None, :]),
                        mask=x_ok[:, None] & mask_n[None, :], other=0.0)
        else:  # the 2-D statements as they were, in their order (ptxas allocates registers by it)
            a = tl.load(dy_ptr + ((n * sd_n + p * sd_p + q * sd_q)[None, :] + k[:, None]),
                        mask=mask_m[:, None] & j_ok[None, :], other=0.0)
            b = tl.load(x_ptr + ((n * sx_n + h * sx_h + w * sx_w)[:, None] + c[None, :]),
                        mask=x_ok[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
        if DEPTH:
            n, o, p, q = advance_voxels(n, o, p, q, step_n, step_o, step_p, step_q, O, P, Q)
        else:
            n, p, q = advance_pixels(n, p, q, step_n, step_p, step_q, P, Q)

    cols = (r * S + s) * Cg + offs_n
    if DEPTH:
        cols = tap * Cg + offs_n  # tap = (t*R + r)*S + s
    if SPLIT_K == 1:
        offs = k[:, None] * (R * S * T * Cg) + cols[None, :]
        tl.store(dw_ptr + offs, acc.to(dw_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])
    else:
        splitk_store_partial(acc, part_ptr, split, k, cols, mask_m, mask_n, Kg * tl.num_programs(2), R * S * T * Cg)


# One GEMM per tap: the loop walks pixels only, so 8-warp tiles are allowed.
WGRAD = TunedKernel(
    _wgrad_kernel, configs=gemm_plan.static_menu(flattened=False), key=gemm_plan.BACKWARD_KEY,
    interpreter_config=gemm_plan.INTERPRETER_CONFIG, tile_operands=gemm_plan.TILE_OPERANDS,
)

def grad_weight(dy: torch.Tensor, x: torch.Tensor, params: ConvParams, channels_last: bool,
                data_path=None) -> torch.Tensor:
    """dw for ``params`` (K, C/groups, R, S), or (K, C/groups, T, R, S) in 3-D, deterministic; a TMA
    kernel first where one serves the call (timed against this one on a GPU, as ``im2col_forward``)."""
    shape = params.weight_shape
    # The kernels write (K, R, S, C/groups) order: a channels_last weight.
    dw = new_buffer(shape, dy.dtype, dy.device, channels_last=True)
    npq = params.n * params.o * params.p * params.q
    if npq == 0:
        return finish(dw.zero_(), channels_last)
    dy, x = nhwc(dy), nhwc(x)
    tma = next((f for f in (pointwise_tma, conv_tma) if f.grad_weight_unsupported(params, dy, x, dw) is None), None)
    if tma is not None and data_path is None:
        return gemm_plan.run_on_fastest_path(
            "grad_weight", (params, dy.stride(), x.stride(), channels_last),
            lambda: finish(tma.grad_weight(dy, x, dw, params), channels_last),
            lambda: grad_weight(dy, x, params, channels_last, data_path="cp.async"))
    taps = params.t * params.r * params.s
    candidates = gemm_plan.plan(gemm_plan.GemmProblem(
        m=params.k_per_group, n=params.c_per_group, reduction_block=npq, outer_blocks=1,
        programs=params.groups * taps, element_bytes=dy.element_size(), flattened=False))
    splits = gemm_plan.largest_split(candidates)
    cols = taps * params.c_per_group
    part = new_partials(splits, params.k, cols, dy.dtype, dy.device) if splits > 1 else dw
    x_strides, dy_strides = row_strides(x), row_strides(dy)
    x_depth, dy_depth = depth_stride(x), depth_stride(dy)
    vec = vector_width_for(dy.dtype, params.k_per_group, params.c_per_group, *x_strides, *dy_strides, x_depth,
                           dy_depth, tensors=(x, dy))
    grid = lambda meta: (
        triton.cdiv(params.k_per_group, meta["BLOCK_M"]) * triton.cdiv(params.c_per_group, meta["BLOCK_N"]),
        taps * meta["SPLIT_K"],
        params.groups,
    )
    chosen = WGRAD.launch(
        grid, candidates,
        x, dy, dw, part,
        params.n, params.h, params.w, params.p, params.q, params.c_per_group, params.k_per_group,
        *x_strides, *dy_strides,
        *params.geometry,
        params.d, params.o, x_depth, dy_depth, *params.depth_geometry,
        R=params.r, S=params.s, T=params.t, DEPTH=params.spatial_dims == 3, VEC=vec,
        ACC_DTYPE=acc_dtype(dy.dtype), DOT_PRECISION=dot_precision(dy.dtype),
        USE_INT64=needs_int64(x, dy, dw, part),
    )
    # dw viewed as rows k x columns (r, s, c): row stride R*S*C/groups, column stride 1.
    reduce_if_split(chosen, part, dw, (1, 1), (cols, 1, 0, 0))
    return finish(dw, channels_last)
