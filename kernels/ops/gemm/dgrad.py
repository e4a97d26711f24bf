"""grad_input (dgrad) of a convolution: an implicit-GEMM transposed convolution on NHWC operands.

Strides are handled by sub-pixel phases instead of a zero-inserted gradient: input rows h with the
same (h + pad) mod stride are reached by the same kernel taps, so each program serves one phase (a
grid axis) and visits only the taps that reach it. ONE pipelined loop runs over every (tap of the
phase, block of output channels); tap indices advance as counters, the row offsets of a tap are the
first tap's minus a scalar: no division in the loop. Split-K from the planner (``plan``) when the
tile grid is under a wave; parts are added in a fixed order (``splitk``): deterministic, no atomics.
A transposed convolution's forward is this kernel too.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...core.launcher import TunedKernel
from ...core.layout import channels_last_weight, finish, nhwc
from ...core.params import ConvParams
from ..common import acc_dtype, depth_stride, dot_precision, folded_strides, needs_int64, new_buffer
from ..epilogue import store_conv_tile
from ..phases import first_tap, stride_phase, tap_steps
from ..tiles import aligned, grouped_tile, split_range
from . import plan as gemm_plan
from . import conv_tma, pointwise_tma
from .plan import row_strides, vector_width_for
from .splitk import new_partials, reduce_if_split, splitk_store_partial


@triton.jit
def _dgrad_kernel(
    # pointers: grad_output, weight, grad_input, split-K partials
    dy_ptr, w_ptr, dx_ptr, part_ptr,
    # sizes (H_PER_PHASE, W_PER_PHASE: input rows / columns of one stride phase)
    N, H, W, P, Q, C_PER_GROUP, K_PER_GROUP, H_PER_PHASE, W_PER_PHASE,
    # strides of grad_output, the weight and grad_input
    sd_n, sd_p, sd_q,
    sw_k, sw_r, sw_s,
    sx_n, sx_c, sx_h, sx_w,
    # geometry, and the tap / grad_output row steps of a phase (``phases.tap_steps``)
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    tap_step_h, tap_step_w, row_step_h, row_step_w,
    # the depth of a 3-D convolution (read only when DEPTH): input / output depth, input depths of one
    # phase, the depth strides of grad_output and the weight, the depth's geometry and tap / row steps
    D, O, D_PER_PHASE, sd_o, sw_t, stride_d, pad_d, dil_d, tap_step_d, row_step_d,
    # meta-parameters
    R: tl.constexpr, S: tl.constexpr, T: tl.constexpr, DEPTH: tl.constexpr, VEC: tl.constexpr,
    ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """Each program computes dx for BLOCK_M input pixels of one stride phase x BLOCK_N channels of
    one group, over its part of the reduction.

    Grid: (tiles of (N*H_PER_PHASE*W_PER_PHASE) x C_PER_GROUP, groups, phases * SPLIT_K).
    dx[n, c, h, w] = sum over the taps (r, s) with (h + pad_h - r*dil_h) divisible by stride_h
    (likewise w) and over k of dy[n, k, p, q] * weight[k, c, r, s]. A phase's taps are
    r = r0 + i*tap_step_h (tap_step_h = stride_h / gcd(stride_h, dil_h)); each step moves the dy row
    by row_step_h = tap_step_h*dil_h/stride_h. dy and weight have unit channel stride.

    DEPTH (3-D): phases are (depth, height, width) residues, the depth's outermost; a row's first
    coordinate is (image * D_PER_PHASE + depth index of the phase), and dx is stored with (N, D) folded
    (the launcher passes dx's depth stride as ``sx_n``). The loop counter gains the depth tap digit.
    """
    pid = tl.program_id(0)
    group = tl.program_id(1)
    phase = tl.program_id(2) // SPLIT_K
    split = tl.program_id(2) % SPLIT_K
    if DEPTH:
        phase_d = phase // (stride_h * stride_w)
        phase = phase % (stride_h * stride_w)
        d_first = ((phase_d - pad_d) % stride_d + stride_d) % stride_d
    phase_h, phase_w, h_first, w_first = stride_phase(phase, stride_h, stride_w, pad_h, pad_w)
    K = aligned(K_PER_GROUP, VEC)
    sd_n, sd_p, sd_q = aligned(sd_n, VEC), aligned(sd_p, VEC), aligned(sd_q, VEC)
    sw_k, sw_r, sw_s = aligned(sw_k, VEC), aligned(sw_r, VEC), aligned(sw_s, VEC)
    if USE_INT64:
        sd_p, sd_q, sw_k = sd_p.to(tl.int64), sd_q.to(tl.int64), sw_k.to(tl.int64)

    M = N * H_PER_PHASE * W_PER_PHASE
    if DEPTH:
        M = M * D_PER_PHASE
        sd_o, sw_t = aligned(sd_o, VEC), aligned(sw_t, VEC)
        if USE_INT64:
            sd_o, sw_t = sd_o.to(tl.int64), sw_t.to(tl.int64)
    # Not ``tiles.gemm_tile``: its row mask, shared with the ``offs_m < M`` below, would stay live
    # across the loop.
    pid_m, pid_n = grouped_tile(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(C_PER_GROUP, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if USE_INT64:
        offs_m = offs_m.to(tl.int64)
    n = offs_m // (H_PER_PHASE * W_PER_PHASE)
    ij = offs_m % (H_PER_PHASE * W_PER_PHASE)
    h = h_first + (ij // W_PER_PHASE) * stride_h
    w = w_first + (ij % W_PER_PHASE) * stride_w
    if DEPTH:
        d = d_first + (n % D_PER_PHASE) * stride_d
        n = n // D_PER_PHASE
    mask_n = offs_n < C_PER_GROUP
    c = group * C_PER_GROUP + offs_n
    if USE_INT64:
        c = c.to(tl.int64)

    # The phase's first tap and its dy row for each pixel (exact divisions, once per program).
    r0 = first_tap(phase_h, R, dil_h, stride_h)
    s0 = first_tap(phase_w, S, dil_w, stride_w)
    taps_h = tl.maximum(tl.cdiv(R - r0, tap_step_h), 0)
    taps_w = tl.maximum(tl.cdiv(S - s0, tap_step_w), 0)
    p0 = (h + pad_h - r0 * dil_h) // stride_h
    q0 = (w + pad_w - s0 * dil_w) // stride_w
    dy_rows = n * sd_n + p0 * sd_p + q0 * sd_q + group * K
    w_cols = group * K * sw_k + r0 * sw_r + s0 * sw_s + offs_n
    if DEPTH:
        t0 = first_tap(phase_d, T, dil_d, stride_d)
        taps_d = tl.maximum(tl.cdiv(T - t0, tap_step_d), 0)
        o0 = (d + pad_d - t0 * dil_d) // stride_d
        dy_rows += o0 * sd_o
        w_cols += t0 * sw_t
    # Rows past the GEMM fail every p0 >= dp test. Rows of the phase grid past the image (h >= H)
    # read real dy rows and are not stored. No row predicate stays live across the loop: a
    # vector of them ends on the stack in ptxas.
    p0 = tl.where(offs_m < M, p0, -(1 << 24))
    offs_k = tl.arange(0, BLOCK_K)

    k_blocks = tl.cdiv(K, BLOCK_K)
    iterations = taps_h * taps_w * k_blocks
    if DEPTH:
        iterations = taps_d * iterations
    first, last = split_range(iterations, split, SPLIT_K)
    tap = first // tl.maximum(k_blocks, 1)
    k0 = (first % tl.maximum(k_blocks, 1)) * BLOCK_K
    i = tap // tl.maximum(taps_w, 1)
    j = tap % tl.maximum(taps_w, 1)
    if DEPTH:
        i_d = i // tl.maximum(taps_h, 1)
        i = i % tl.maximum(taps_h, 1)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for _ in range(first, last):
        dp = i * row_step_h
        dq = j * row_step_w
        row_ok = (p0 >= dp) & (p0 < P + dp) & (q0 >= dq) & (q0 < Q + dq)
        kk = k0 + offs_k
        k_ok = kk < K
        # The 2-D statements stay as they were, in their order: ptxas allocates registers by it.
        if DEPTH:
            do = i_d * row_step_d
            row_ok = row_ok & (o0 >= do) & (o0 < O + do)
            a = tl.load(dy_ptr + (dy_rows[:, None] + (kk - dp * sd_p - dq * sd_q - do * sd_o)[None, :]),
                        mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w_tap = (i * tap_step_h) * sw_r + (j * tap_step_w) * sw_s + (i_d * tap_step_d) * sw_t
        else:
            a = tl.load(dy_ptr + (dy_rows[:, None] + (kk - dp * sd_p - dq * sd_q)[None, :]),
                        mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w_tap = (i * tap_step_h) * sw_r + (j * tap_step_w) * sw_s
        b = tl.load(w_ptr + (w_cols[None, :] + (kk * sw_k + w_tap)[:, None]),
                    mask=k_ok[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
        # The (tap, channel block) counter of ``tiles.carry``, written out: through the helper,
        # ptxas allocates this loop differently (242 -> 218 registers at 128x128), and the sm_90
        # report is kept as it was until a GPU says which is faster.
        k0 += BLOCK_K
        wrap = (k0 >= K).to(tl.int32)
        k0 *= 1 - wrap
        j += wrap
        wrap = (j >= taps_w).to(tl.int32)
        j *= 1 - wrap
        i += wrap
        if DEPTH:
            wrap = (i >= taps_h).to(tl.int32)
            i *= 1 - wrap
            i_d += wrap

    mask_m = (n < N) & (h < H) & (w < W)
    if DEPTH:
        mask_m = mask_m & (d < D)
        n = n * D + d  # dx's folded (N, D) row
    if SPLIT_K == 1:
        store_conv_tile(acc, n, h, w, c, mask_m, mask_n, (dx_ptr, sx_n, sx_c, sx_h, sx_w),
                        (dx_ptr, dx_ptr, dx_ptr, dx_ptr, 0, 0, 0, 0, False, False, False, 0))  # no epilogue
    else:
        pixel = (n * H + h) * W + w
        rows = N * H * W
        if DEPTH:
            rows = rows * D
        splitk_store_partial(acc, part_ptr, split, pixel, c, mask_m, mask_n, rows, C_PER_GROUP * tl.num_programs(1))


DGRAD = TunedKernel(
    _dgrad_kernel, configs=gemm_plan.static_menu(flattened=True), key=gemm_plan.BACKWARD_KEY,
    interpreter_config=gemm_plan.INTERPRETER_CONFIG, tile_operands=gemm_plan.TILE_OPERANDS,
)

def grad_input(dy: torch.Tensor, w: torch.Tensor, params: ConvParams, channels_last: bool,
               data_path=None) -> torch.Tensor:
    """dx for ``params``, in channels_last (channels_last_3d) or contiguous layout as asked; a TMA
    kernel first where one serves the call (timed against this one on a GPU, as ``im2col_forward``)."""
    dx = new_buffer(params.input_shape, dy.dtype, dy.device, channels_last=True)
    if dx.numel() == 0:
        return finish(dx, channels_last)
    dy = nhwc(dy)
    w = channels_last_weight(w)
    tma = next((f for f in (pointwise_tma, conv_tma) if f.grad_input_unsupported(params, dy, w, dx) is None), None)
    if tma is not None and data_path is None:
        return gemm_plan.run_on_fastest_path(
            "grad_input", (params, dy.stride(), w.stride(), channels_last),
            lambda: finish(tma.grad_input(dy, w, dx, params), channels_last),
            lambda: grad_input(dy, w, params, channels_last, data_path="cp.async"))
    sd, sh, sw = params.stride_d, *params.stride
    d_per_phase, h_per_phase, w_per_phase = triton.cdiv(params.d, sd), triton.cdiv(params.h, sh), triton.cdiv(params.w, sw)
    (tap_step_d, row_step_d), (tap_step_h, row_step_h), (tap_step_w, row_step_w) = (
        tap_steps(sd, params.dil_d), tap_steps(sh, params.dilation[0]), tap_steps(sw, params.dilation[1]))
    rows = params.n * d_per_phase * h_per_phase * w_per_phase
    taps = triton.cdiv(params.t, tap_step_d) * triton.cdiv(params.r, tap_step_h) * triton.cdiv(params.s, tap_step_w)
    candidates = gemm_plan.plan(gemm_plan.GemmProblem(
        m=rows, n=params.c_per_group, reduction_block=params.k_per_group, outer_blocks=taps,
        programs=params.groups * sd * sh * sw, element_bytes=dy.element_size(),
        flattened=params.t * params.r * params.s > 1))
    splits = gemm_plan.largest_split(candidates)
    part = new_partials(splits, params.n * params.d * params.h * params.w, params.c, dy.dtype, dy.device) \
        if splits > 1 else dx
    dy_strides, w_strides = row_strides(dy), row_strides(w)
    dy_depth, w_depth = depth_stride(dy), depth_stride(w)
    vec = vector_width_for(dy.dtype, params.k_per_group, *dy_strides, *w_strides, dy_depth, w_depth, tensors=(dy, w))
    dx_strides = folded_strides(dx)
    grid = lambda meta: (
        triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(params.c_per_group, meta["BLOCK_N"]),
        params.groups,
        sd * sh * sw * meta["SPLIT_K"],
    )
    chosen = DGRAD.launch(
        grid, candidates,
        dy, w, dx, part,
        params.n, params.h, params.w, params.p, params.q, params.c_per_group, params.k_per_group,
        h_per_phase, w_per_phase,
        *dy_strides, *w_strides, *dx_strides,
        *params.geometry, tap_step_h, tap_step_w, row_step_h, row_step_w,
        params.d, params.o, d_per_phase, dy_depth, w_depth, *params.depth_geometry, tap_step_d, row_step_d,
        R=params.r, S=params.s, T=params.t, DEPTH=params.spatial_dims == 3, VEC=vec,
        ACC_DTYPE=acc_dtype(dy.dtype), DOT_PRECISION=dot_precision(dy.dtype),
        USE_INT64=needs_int64(dy, w, dx, part),
    )
    reduce_if_split(chosen, part, dx, (params.h, params.w), dx_strides)
    return finish(dx, channels_last)
