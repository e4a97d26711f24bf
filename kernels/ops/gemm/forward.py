"""Implicit-GEMM ("im2col" without the column buffer) forward convolution, on NHWC operands.

The GEMM: rows = the N*P*Q output pixels, columns = the output channels of one group,
reduction = (r, s, c) with c innermost. A row of the virtual im2col matrix is gathered straight
from the NHWC input (a channel run of one input pixel per tap); padding is a masked load; the
weight is read in (K, R, S, C) order. Groups are a grid axis, split-K parts another.

Main loop: ONE software-pipelined loop over every (tap, channel block) of the reduction, so the
pipeline fills once per program (not once per tap). Row offsets and padding tests are formed once
per program; each iteration adds a scalar tap offset, and (r, s, c0) advance as counters, with no
division in the loop. 1x1 kernels (``pointwise``) run the same kernel, whose loop is then a plain
channel loop.

NCHW or strided inputs are served through one copy to NHWC (``core.layout.nhwc``); the output is
written NHWC and copied out when PyTorch's rule says NCHW (``core.layout.finish``).

Pointwise (1x1) convolutions are this kernel with R = S = 1: out[pixels, k] = x[pixels, c] @ w[c, k]
per group; stride and padding only change which input pixel a row reads (ResNet's strided 1x1
downsample reads every second pixel by indexing, nothing is copied), and the plain channel loop may
use 8-warp 128x256 tiles.
"""
from __future__ import annotations

import functools

import triton
import triton.language as tl

from typing import Optional

from ...core.launcher import TunedKernel
from ...core.layout import channels_last_weight, finish, nhwc
from ...core.params import ConvParams
from ..common import acc_dtype, depth_stride, dot_precision, folded_strides, needs_int64, new_buffer
from ..epilogue import epilogue_arguments, store_conv_tile
from ..tiles import aligned, carry, gemm_tile, split_range
from . import plan as gemm_plan
from . import conv_tma, pointwise_tma
from .plan import row_strides, vector_width_for
from .splitk import new_partials, reduce_if_split, store_output_or_partial


@triton.jit
def _gather_tiles(x_ptr, w_ptr, x_rows, w_cols, h0, w0, mask_m, mask_n, r, s, c0, offs_c, C, H, W,
                  dil_h, dil_w, sx_h, sx_w, sw_r, sw_s):
    """The A tile x[rows, tap (r, s), c0:c0+BLOCK_K] (zeros in the padding) and the B tile
    w[k, r, s, c0:c0+BLOCK_K]^T of one reduction step."""
    h_off = r * dil_h
    w_off = s * dil_w
    row_ok = mask_m & (h0 >= -h_off) & (h0 < H - h_off) & (w0 >= -w_off) & (w0 < W - w_off)
    c = c0 + offs_c
    c_ok = c < C
    a = tl.load(x_ptr + (x_rows[:, None] + (h_off * sx_h + w_off * sx_w + c)[None, :]),
                mask=row_ok[:, None] & c_ok[None, :], other=0.0)
    b = tl.load(w_ptr + (w_cols[None, :] + (r * sw_r + s * sw_s + c)[:, None]),
                mask=c_ok[:, None] & mask_n[None, :], other=0.0)
    return a, b


@triton.jit
def _im2col_forward_kernel(
    # pointers: input, weight, output, split-K partials
    x_ptr, w_ptr, out_ptr, part_ptr,
    # sizes
    N, H, W, P, Q, C_PER_GROUP, K_PER_GROUP,
    # strides of the input, the weight and the output
    sx_n, sx_h, sx_w,
    sw_k, sw_r, sw_s,
    so_n, so_k, so_p, so_q,
    # geometry
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # the depth of a 3-D convolution (read only when DEPTH): input / output depth, the depth strides of
    # the input and the weight, the depth's stride, padding and dilation
    D, O, sx_d, sw_t, stride_d, pad_d, dil_d,
    # the epilogue (``epilogue.store_conv_tile``): per-channel vectors, residual and its strides, flags
    bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr,
    # the quantized store of an 8-bit forward (``kernels.conv2d_scaled``'s output_scale): its scale, the flag
    oscale_ptr, QUANTIZE: tl.constexpr,
    # meta-parameters
    R: tl.constexpr, S: tl.constexpr, T: tl.constexpr, DEPTH: tl.constexpr, VEC: tl.constexpr,
    ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """Each program computes a [BLOCK_M pixels x BLOCK_N output channels] tile of one group,
    over its part of the (r, s, c) reduction ((t, r, s, c) for a 3-D convolution).

    DEPTH (3-D, NDHWC input, (K, T, R, S, C) weight): a row is an output voxel, and its first
    coordinate ``n`` is (image * O + output depth), the output's row index along its folded
    (N, O) dimension: the launcher passes the output's depth stride as ``so_n``. T == 1 keeps the
    2-D loops (the depth is then one test per row, made once).

    Grid: (tiles of the N*P*Q x K_PER_GROUP GEMM, groups, SPLIT_K). Input and weight have unit
    channel stride (NHWC input, (K, R, S, C) weight); VEC divides every channel count and row
    stride. SPLIT_K == 1 ends in the shared epilogue; otherwise the fp32 partial goes to
    part[split, pixel, channel] for ``splitk.split_reduce``.

    8-bit operands (``kernels.conv2d_scaled``): float8 e4m3 or int8 tiles go to ``tl.dot`` as they
    are loaded (e4m3 / s8 wgmma on sm_90), ACC_DTYPE fp32 or int32 (exact integer sums); the
    dequantization (input scale x per-channel weight scale, times a folded BN's scale) is the
    epilogue's per-channel ``scale``, applied to the fp32 conversion of the sums; with QUANTIZE the
    result is stored as fp8 / int8 (``epilogue.quantize_tile``). Such launches are never split
    (an int32 sum would lose exactness in fp32 partials).
    """
    pid = tl.program_id(0)
    group = tl.program_id(1)
    split = tl.program_id(2)
    C = aligned(C_PER_GROUP, VEC)
    M = N * P * Q
    if DEPTH:
        M = M * O
    offs_m, offs_n, mask_m, mask_n = gemm_tile(pid, M, K_PER_GROUP, BLOCK_M, BLOCK_N, GROUP_M)
    if USE_INT64:
        offs_m = offs_m.to(tl.int64)
    n = offs_m // (P * Q)
    pq = offs_m % (P * Q)
    p = pq // Q
    q = pq % Q
    k = group * K_PER_GROUP + offs_n
    if USE_INT64:
        k = k.to(tl.int64)

    sx_n, sx_h, sx_w = aligned(sx_n, VEC), aligned(sx_h, VEC), aligned(sx_w, VEC)
    sw_k, sw_r, sw_s = aligned(sw_k, VEC), aligned(sw_r, VEC), aligned(sw_s, VEC)
    if USE_INT64:
        sx_h, sx_w, sw_r, sw_s = sx_h.to(tl.int64), sx_w.to(tl.int64), sw_r.to(tl.int64), sw_s.to(tl.int64)

    # Once per program: each row's input pixel at tap (0, 0) and its channel-run offset.
    h0 = p * stride_h - pad_h
    w0 = q * stride_w - pad_w
    x_rows = n * sx_n + h0 * sx_h + w0 * sx_w + group * C
    w_cols = k * sw_k
    offs_c = tl.arange(0, BLOCK_K)
    if DEPTH:
        sx_d, sw_t = aligned(sx_d, VEC), aligned(sw_t, VEC)
        if USE_INT64:
            sx_d, sw_t = sx_d.to(tl.int64), sw_t.to(tl.int64)
        d0 = (n % O) * stride_d - pad_d
        x_rows = (n // O) * sx_n + d0 * sx_d + h0 * sx_h + w0 * sx_w + group * C
        if T == 1:
            # A row whose one input frame is padding fails every tap's row test (as past-the-image rows
            # do): no second row predicate stays live across the loop (ptxas spills one).
            h0 = tl.where((d0 >= 0) & (d0 < D), h0, -(1 << 24))

    c_blocks = tl.cdiv(C, BLOCK_K)
    first, last = split_range(T * R * S * c_blocks, split, SPLIT_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    if R * S * T == 1:
        # 1x1: the reduction is the channels alone, a plain loop (8 warps are safe here).
        for c0 in range(first * BLOCK_K, last * BLOCK_K, BLOCK_K):
            a, b = _gather_tiles(x_ptr, w_ptr, x_rows, w_cols, h0, w0, mask_m, mask_n, 0, 0, c0, offs_c, C, H, W,
                                 dil_h, dil_w, sx_h, sx_w, sw_r, sw_s)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
    elif T > 1:
        # 3-D: one loop over every (t, r, s, channel block); a depth tap moves both base pointers.
        tap = first // c_blocks
        c0 = (first % c_blocks) * BLOCK_K
        s = tap % S
        r = (tap // S) % R
        t = tap // (R * S)
        for _ in range(first, last):
            d_off = t * dil_d
            tap_in = mask_m & (d0 >= -d_off) & (d0 < D - d_off)
            a, b = _gather_tiles(x_ptr + d_off * sx_d, w_ptr + t * sw_t, x_rows, w_cols, h0, w0, tap_in, mask_n,
                                 r, s, c0, offs_c, C, H, W, dil_h, dil_w, sx_h, sx_w, sw_r, sw_s)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
            c0, s = carry(c0 + BLOCK_K, C, s)
            s, r = carry(s, S, r)
            r, t = carry(r, R, t)
    else:
        # One loop over every (tap, channel block); (r, s, c0) of the first iteration, then counters.
        tap = first // c_blocks
        c0 = (first % c_blocks) * BLOCK_K
        r = tap // S
        s = tap % S
        for _ in range(first, last):
            a, b = _gather_tiles(x_ptr, w_ptr, x_rows, w_cols, h0, w0, mask_m, mask_n, r, s, c0, offs_c, C, H, W,
                                 dil_h, dil_w, sx_h, sx_w, sw_r, sw_s)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
            c0, s = carry(c0 + BLOCK_K, C, s)
            s, r = carry(s, S, r)

    epilogue = (bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
                HAS_BIAS, HAS_SCALE, HAS_RESIDUAL, ACTIVATION)
    if QUANTIZE:
        store_conv_tile(acc, n, p, q, k, mask_m, mask_n, (out_ptr, so_n, so_k, so_p, so_q), epilogue,
                        (oscale_ptr, QUANTIZE))
    else:
        store_output_or_partial(
            acc, n, p, q, k, offs_m, mask_m, mask_n, (out_ptr, so_n, so_k, so_p, so_q), epilogue,
            part_ptr, split, M, K_PER_GROUP * tl.num_programs(1), SPLIT_K,
        )


IM2COL_FORWARD = TunedKernel(
    _im2col_forward_kernel,
    configs=gemm_plan.static_menu(flattened=True),
    key=["N", "H", "W", "P", "Q", "C_PER_GROUP", "K_PER_GROUP", "R", "S", "stride_h", "stride_w", "dil_h", "dil_w",
         "D", "O", "T", "stride_d", "dil_d", "VEC", "HAS_BIAS", "HAS_SCALE", "HAS_RESIDUAL", "ACTIVATION", "QUANTIZE", "ACC_DTYPE", "DOT_PRECISION", "USE_INT64"],
    interpreter_config=gemm_plan.INTERPRETER_CONFIG,
    tile_operands=gemm_plan.TILE_OPERANDS,
)


def forward_problem(params: ConvParams, element_bytes: int) -> gemm_plan.GemmProblem:
    taps = params.t * params.r * params.s
    return gemm_plan.GemmProblem(
        m=params.n * params.o * params.p * params.q, n=params.k_per_group, reduction_block=params.c_per_group,
        outer_blocks=taps, programs=params.groups, element_bytes=element_bytes, flattened=taps > 1)


def im2col_forward(x, w, bias, params: ConvParams, *, scale=None, shift=None, residual=None, activation=0,
                   out_dtype=None, output_scale=None, data_path=None):
    """Launch the implicit-GEMM forward (split-K when planned); returns the output in PyTorch's
    memory format. Where a TMA kernel can serve the call it is the first of the data paths
    (``plan.run_on_fastest_path``: timed against this cp.async kernel on a GPU); ``data_path="cp.async"``
    forces the cp.async kernel. ``out_dtype`` / ``output_scale``: the 8-bit forward's
    (``kernels.scaled``), whose output type differs from its operands' and which never splits (the
    TMA kernels take no 8-bit operands: ``tma.TMA_DTYPES``)."""
    x = nhwc(x)
    w = channels_last_weight(w)
    out = new_buffer(params.output_shape, out_dtype or params.dtype, x.device, channels_last=True)
    if out.numel() == 0:
        return finish(out, params.channels_last)
    epilogue_kw = dict(scale=scale, shift=shift, residual=residual, activation=activation)
    tma = next((f for f in (pointwise_tma, conv_tma) if f.forward_unsupported(params, x, w, out, residual) is None), None)
    if tma is not None and data_path is None:
        def on_tma():
            tma.forward(x, w, out, bias, params, **epilogue_kw)
            return finish(out, params.channels_last)
        key = (params, x.stride(), w.stride(), bias is not None, scale is not None, residual is not None, activation)
        return gemm_plan.run_on_fastest_path("forward", key, on_tma, functools.partial(
            im2col_forward, x, w, bias, params, **epilogue_kw, data_path="cp.async"))
    candidates = gemm_plan.plan(forward_problem(params, x.element_size()))
    if x.element_size() == 1:
        # A residual read in the epilogue of an unsplit 128x128 tile spilled 150-570 B on sm_90.
        candidates = gemm_plan.unsplit(candidates, max_tile=128 * 64 if residual is not None else 128 * 128)
    splits = gemm_plan.largest_split(candidates)
    m = params.n * params.o * params.p * params.q
    part = new_partials(splits, m, params.k, params.dtype, x.device) if splits > 1 else out
    epilogue = epilogue_arguments(out, bias, scale, shift, residual, activation)
    x_strides, w_strides = row_strides(x), row_strides(w)
    x_depth, w_depth = depth_stride(x), depth_stride(w)
    vec = vector_width_for(params.dtype, params.c_per_group, *x_strides, *w_strides, x_depth, w_depth,
                           tensors=(x, w))
    out_strides = folded_strides(out)
    grid = lambda meta: (
        triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(params.k_per_group, meta["BLOCK_N"]),
        params.groups,
        meta["SPLIT_K"],
    )
    chosen = IM2COL_FORWARD.launch(
        grid, candidates,
        x, w, out, part,
        params.n, params.h, params.w, params.p, params.q, params.c_per_group, params.k_per_group,
        *x_strides, *w_strides, *out_strides,
        *params.geometry,
        params.d, params.o, x_depth, w_depth, *params.depth_geometry,
        *epilogue.args, **epilogue.flags,
        oscale_ptr=output_scale if output_scale is not None else out, QUANTIZE=output_scale is not None,
        R=params.r, S=params.s, T=params.t, DEPTH=params.spatial_dims == 3, VEC=vec,
        ACC_DTYPE=acc_dtype(params.dtype), DOT_PRECISION=dot_precision(params.dtype),
        USE_INT64=needs_int64(x, w, out, part, epilogue.residual_or_out),
    )
    reduce_if_split(chosen, part, out, (params.p, params.q), out_strides, bias=bias, scale=scale, shift=shift,
                    residual=residual, activation=activation)
    return finish(out, params.channels_last)


def pointwise_unsupported(params: ConvParams) -> Optional[str]:
    """Why the ``pointwise`` entry (this kernel on a 1x1, whose loop is then a plain channel loop)
    does not apply, or None."""
    if (params.t, params.r, params.s) != (1, 1, 1):
        size = "x".join(map(str, params.weight_shape[2:]))
        return f"pointwise needs a {'1x1x1' if params.spatial_dims == 3 else '1x1'} kernel, got {size}"
    return None
