"""Depthwise convolution (groups == in_channels, any channel multiplier), forward and backward.

Output channel k filters input channel k // MULT with its own R x S taps (MULT = K / C, the
channel multiplier). There is no reduction over channels: the work is R*S multiply-adds per
output element. For small filters the kernels are direct and vectorised over channels, which are
contiguous in channels_last (NHWC) and simply strided in NCHW; programs tile a BLOCK_P x BLOCK_Q
patch of one image, so the R x S taps of neighbouring pixels hit the same cache lines. For large
filters the reduction along a filter row becomes a banded matrix product (the halo kernels below).

* forward: out[n, k, p, q] = sum over (r, s) of x[n, k//MULT, p*sh - ph + r*dh, q*sw - pw + s*dw] * w[k, 0, r, s].
* grad_input is the depthwise transposed convolution, by stride phases like the generic dgrad:
  input pixels with the same (h + pad) mod stride are reached by the same taps, so a program
  serves one phase and skips the taps that cannot reach it (nothing multiplies an inserted zero).
* grad_weight is a per-channel, per-tap reduction over N*P*Q, split into a fixed number of
  chunks whose partial sums are added in a fixed order: deterministic, no atomics.
* large kernels (``plan_halo``: S >= 7 taps along a row, 2-D): the forward runs the halo kernel
  instead. A program keeps its output tile's input window, the tile plus the (S-1)*dil column halo,
  on chip and applies every tap of a filter row to it as one batched ``tl.dot`` with the row's
  banded (Toeplitz) weight matrix, so a window column is loaded once per filter row instead of once
  per tap and output (docs/algorithms.md, "Large kernels"). At stride 1 without a channel multiplier
  grad_input runs on it too (the forward of dy with the flipped filter); grad_weight of such filters
  runs on the halo wgrad (all R*S taps of a row band per batched dot, instead of a pass per tap).
* 3-D (channel-wise, as X3D's): the forward adds the depth taps to the same kernel (``DEPTH``); its
  gradients run on the implicit GEMM's 3-D dgrad and wgrad with one channel per group.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from typing import List, Optional

from ..core import device
from ..core.interpreter import interpreting
from ..core.launcher import TunedKernel, config
from ..core.layout import memory_format
from ..core.params import ConvParams
from ..core.layout import finish
from .common import acc_dtype, folded_strides, needs_int64, new_buffer, new_output, reduction_splits
from .gemm.dgrad import grad_input as gemm_grad_input
from .gemm.wgrad import grad_weight as gemm_grad_weight
from .epilogue import epilogue_arguments, store_conv_tile
from .phases import first_tap, stride_phase, tap_steps
from .tiles import advance_pixels, pixel_walk


@triton.jit
def _depthwise_forward_kernel(
    # pointers: input, weight, output
    x_ptr, w_ptr, out_ptr,
    # sizes (MULT: output channels per input channel)
    H, W, P, Q, K, MULT,
    # strides of the input, the weight and the output
    sx_n, sx_c, sx_h, sx_w,
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
    # meta-parameters
    R: tl.constexpr, S: tl.constexpr, T: tl.constexpr, DEPTH: tl.constexpr, ACC_DTYPE: tl.constexpr,
    USE_INT64: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Each program computes a [BLOCK_P x BLOCK_Q output pixels of one image] x [BLOCK_N
    output channels] tile.

    Grid: (N * pixel tiles, channel blocks). Per tap (r, s): load the input tile
    [pixels, k // MULT] and the weights w[k, r, s], multiply-add elementwise.

    DEPTH (channel-wise 3-D): an "image" is one output frame, ``n`` = image * O + frame, the output's
    folded (N, D) row (the launcher passes a channels_last_3d output's depth stride as ``so_n``); the
    taps are (t, r, s), a frame of padding a scalar test per t.
    """
    pid_pix = tl.program_id(0)
    pid_k = tl.program_id(1)
    tiles_q = tl.cdiv(Q, BLOCK_Q)
    tiles_per_image = tl.cdiv(P, BLOCK_P) * tiles_q
    n = pid_pix // tiles_per_image
    tile = pid_pix % tiles_per_image
    i = tl.arange(0, BLOCK_P * BLOCK_Q)
    p = (tile // tiles_q) * BLOCK_P + i // BLOCK_Q
    q = (tile % tiles_q) * BLOCK_Q + i % BLOCK_Q
    mask_m = (p < P) & (q < Q)
    k = pid_k * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = k < K
    if USE_INT64:
        n = n.to(tl.int64)
        k = k.to(tl.int64)
    c = k // MULT

    x_image = x_ptr + n * sx_n
    x_chan = (c * sx_c)[None, :]
    w_chan = w_ptr + k * sw_k
    h_base = p * stride_h - pad_h
    w_base = q * stride_w - pad_w
    acc = tl.zeros((BLOCK_P * BLOCK_Q, BLOCK_N), dtype=ACC_DTYPE)
    if DEPTH:
        d_base = (n % O) * stride_d - pad_d
        x_image = x_ptr + (n // O) * sx_n
        for t in range(T):
            d = d_base + t * dil_d
            x_frame = x_image + d * sx_d
            frame = d + 0 * p  # the frame as a row vector: the interpreter mistypes scalar-vector masks
            frame_ok = mask_m & (frame >= 0) & (frame < D)
            for r in range(R):
                h = h_base + r * dil_h
                h_ok = frame_ok & (h >= 0) & (h < H)
                for s in range(S):
                    w = w_base + s * dil_w
                    row_ok = h_ok & (w >= 0) & (w < W)
                    x_tile = tl.load(x_frame + (h * sx_h + w * sx_w)[:, None] + x_chan,
                                     mask=row_ok[:, None] & mask_n[None, :], other=0.0)
                    tap = tl.load(w_chan + t * sw_t + r * sw_r + s * sw_s, mask=mask_n, other=0.0)
                    acc += x_tile.to(ACC_DTYPE) * tap.to(ACC_DTYPE)[None, :]
    else:
        for r in range(R):
            h = h_base + r * dil_h
            h_ok = mask_m & (h >= 0) & (h < H)
            for s in range(S):
                w = w_base + s * dil_w
                row_ok = h_ok & (w >= 0) & (w < W)
                x_tile = tl.load(x_image + (h * sx_h + w * sx_w)[:, None] + x_chan,
                                 mask=row_ok[:, None] & mask_n[None, :], other=0.0)
                tap = tl.load(w_chan + r * sw_r + s * sw_s, mask=mask_n, other=0.0)
                acc += x_tile.to(ACC_DTYPE) * tap.to(ACC_DTYPE)[None, :]

    store_conv_tile(
        acc, n, p, q, k, mask_m, mask_n,
        (out_ptr, so_n, so_k, so_p, so_q),
        (bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
         HAS_BIAS, HAS_SCALE, HAS_RESIDUAL, ACTIVATION),
    )


@triton.jit
def _depthwise_halo_kernel(
    # pointers: input, weight, output
    x_ptr, w_ptr, out_ptr,
    # sizes (MULT: output channels per input channel)
    H, W, P, Q, K, MULT,
    # strides of the input, the weight and the output
    sx_n, sx_c, sx_h, sx_w,
    sw_k, sw_r, sw_s,
    so_n, so_k, so_p, so_q,
    # geometry
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # the epilogue (``epilogue.store_conv_tile``)
    bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr,
    # meta-parameters (CHUNKS * CHUNK >= the window's width, (BLOCK_Q - 1) * stride_w + (S - 1) * dil_w + 1)
    R: tl.constexpr, S: tl.constexpr, ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    USE_INT64: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr,
    CHUNK: tl.constexpr, CHUNKS: tl.constexpr,
):
    """Each program computes a [BLOCK_P x BLOCK_Q output pixels of one image] x [BLOCK_C output
    channels] tile of a large-kernel depthwise forward.

    Grid: (N * pixel tiles, channel blocks). For each filter row r, the program loads the input rows
    p*sh - ph + r*dh of its BLOCK_P output rows across the whole window width (its BLOCK_Q columns
    plus the (S-1)*dw halo), CHUNK columns at a time as a [BLOCK_C, BLOCK_P, CHUNK] block, and
    multiplies it (batched over channels) by the row's banded weight block
    T[k, j, q] = w[k, r, (j - q*sw) / dw] (zero off the band): one ``tl.dot`` applies all S taps of
    the row to every loaded column, so each input element is loaded R times per program, not R*S.
    """
    pid_pix = tl.program_id(0)
    pid_k = tl.program_id(1)
    tiles_q = tl.cdiv(Q, BLOCK_Q)
    tiles_per_image = tl.cdiv(P, BLOCK_P) * tiles_q
    n = pid_pix // tiles_per_image
    tile = pid_pix % tiles_per_image
    p0 = (tile // tiles_q) * BLOCK_P
    q0 = (tile % tiles_q) * BLOCK_Q
    k = pid_k * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_k = k < K
    if USE_INT64:
        n = n.to(tl.int64)
        k = k.to(tl.int64)
    c = k // MULT

    x_chan = x_ptr + n * sx_n + (c * sx_c)[:, None, None]
    w_chan = w_ptr + (k * sw_k)[:, None, None]
    k_ok = mask_k[:, None, None]
    h_base = (p0 + tl.arange(0, BLOCK_P)) * stride_h - pad_h
    w_first = q0 * stride_w - pad_w
    j = tl.arange(0, CHUNK)
    q_offset = tl.arange(0, BLOCK_Q) * stride_w
    acc = tl.zeros((BLOCK_C, BLOCK_P, BLOCK_Q), dtype=ACC_DTYPE)
    # One flat loop over (filter row r, window chunk): the dot's loop is entered once per program.
    for step in range(R * CHUNKS):
        r = step // CHUNKS
        col = (step % CHUNKS) * CHUNK + j  # window column
        h = h_base + r * dil_h
        w_in = w_first + col
        a = tl.load(x_chan + (h * sx_h)[None, :, None] + (w_in * sx_w)[None, None, :],
                    mask=k_ok & ((h >= 0) & (h < H))[None, :, None] & ((w_in >= 0) & (w_in < W))[None, None, :],
                    other=0.0)
        # Window column ``col`` meets output column q through tap s = (col - q*sw) / dw.
        offset = col[:, None] - q_offset[None, :]
        s = offset // dil_w
        on_band = (offset >= 0) & (s * dil_w == offset) & (s < S)
        t = tl.load(w_chan + r * sw_r + (s * sw_s)[None, :, :], mask=k_ok & on_band[None, :, :], other=0.0)
        acc = tl.dot(a, t, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)

    i = tl.arange(0, BLOCK_P * BLOCK_Q)
    p = p0 + i // BLOCK_Q
    q = q0 + i % BLOCK_Q
    store_conv_tile(
        tl.reshape(tl.permute(acc, (1, 2, 0)), (BLOCK_P * BLOCK_Q, BLOCK_C)), n, p, q, k, (p < P) & (q < Q), mask_k,
        (out_ptr, so_n, so_k, so_p, so_q),
        (bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
         HAS_BIAS, HAS_SCALE, HAS_RESIDUAL, ACTIVATION),
    )


@triton.jit
def _depthwise_dgrad_kernel(
    # pointers: grad_output, weight, grad_input
    dy_ptr, w_ptr, dx_ptr,
    # sizes (MULT: output channels per input channel; H/W_PER_PHASE: rows / columns of a phase)
    H, W, P, Q, C, MULT, H_PER_PHASE, W_PER_PHASE,
    # strides of grad_output, the weight and grad_input
    sd_n, sd_k, sd_p, sd_q,
    sw_k, sw_r, sw_s,
    sx_n, sx_c, sx_h, sx_w,
    # geometry, and the tap / grad_output row steps of a phase (``phases.tap_steps``)
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    tap_step_h, tap_step_w, row_step_h, row_step_w,
    # meta-parameters
    R: tl.constexpr, S: tl.constexpr, ACC_DTYPE: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Each program computes dx for a [BLOCK_P x BLOCK_Q patch of one stride phase of one
    image] x [BLOCK_N input channels] tile.

    Grid: (N * patch tiles of the H_PER_PHASE x W_PER_PHASE phase grid, channel blocks,
    stride_h * stride_w phases). dx[n, c, h, w] = sum over the taps (r, s) that reach (h, w)
    and over j < MULT of dy[n, c*MULT + j, p, q] * w[c*MULT + j, 0, r, s]. The phase's taps are
    r = r0 + i*tap_step_h (``phases``), each moving the dy row by row_step_h: no division per tap.
    """
    pid_pix = tl.program_id(0)
    pid_c = tl.program_id(1)
    phase = tl.program_id(2)
    phase_h, phase_w, h_first, w_first = stride_phase(phase, stride_h, stride_w, pad_h, pad_w)

    tiles_q = tl.cdiv(W_PER_PHASE, BLOCK_Q)
    tiles_per_image = tl.cdiv(H_PER_PHASE, BLOCK_P) * tiles_q
    n = pid_pix // tiles_per_image
    tile = pid_pix % tiles_per_image
    i = tl.arange(0, BLOCK_P * BLOCK_Q)
    h = h_first + ((tile // tiles_q) * BLOCK_P + i // BLOCK_Q) * stride_h
    w = w_first + ((tile % tiles_q) * BLOCK_Q + i % BLOCK_Q) * stride_w
    mask_m = (h < H) & (w < W)
    c = pid_c * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = c < C
    if USE_INT64:
        n = n.to(tl.int64)
        c = c.to(tl.int64)

    # The phase's first tap and its dy row for each pixel (exact divisions, once per program).
    r0 = first_tap(phase_h, R, dil_h, stride_h)
    s0 = first_tap(phase_w, S, dil_w, stride_w)
    p0 = (h + pad_h - r0 * dil_h) // stride_h
    q0 = (w + pad_w - s0 * dil_w) // stride_w
    dy_image = dy_ptr + n * sd_n
    acc = tl.zeros((BLOCK_P * BLOCK_Q, BLOCK_N), dtype=ACC_DTYPE)
    for i in range(tl.maximum(tl.cdiv(R - r0, tap_step_h), 0)):
        p = p0 - i * row_step_h
        p_ok = mask_m & (p >= 0) & (p < P)
        w_row = (r0 + i * tap_step_h) * sw_r
        for j in range(tl.maximum(tl.cdiv(S - s0, tap_step_w), 0)):
            q = q0 - j * row_step_w
            row_ok = p_ok & (q >= 0) & (q < Q)
            dy_rows = (p * sd_p + q * sd_q)[:, None]
            w_tap = w_row + (s0 + j * tap_step_w) * sw_s
            for m in range(0, MULT):
                k = c * MULT + m
                g = tl.load(dy_image + dy_rows + (k * sd_k)[None, :],
                            mask=row_ok[:, None] & mask_n[None, :], other=0.0)
                tap = tl.load(w_ptr + k * sw_k + w_tap, mask=mask_n, other=0.0)
                acc += g.to(ACC_DTYPE) * tap.to(ACC_DTYPE)[None, :]

    dx_rows = n * sx_n + h * sx_h + w * sx_w
    tl.store(dx_ptr + dx_rows[:, None] + (c * sx_c)[None, :], acc.to(dx_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _depthwise_wgrad_kernel(
    # pointers: input, grad_output, per-chunk partial grad_weight
    x_ptr, dy_ptr, part_ptr,
    # sizes (CHUNK: output pixels per reduction part)
    N, H, W, P, Q, K, MULT, CHUNK,
    # strides of the input and of grad_output
    sx_n, sx_c, sx_h, sx_w,
    sd_n, sd_k, sd_p, sd_q,
    # geometry
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # meta-parameters
    R: tl.constexpr, S: tl.constexpr, ACC_DTYPE: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Each program sums dy[n, k, p, q] * x[n, k//MULT, p*sh - ph + r*dh, q*sw - pw + s*dw] over
    one CHUNK of the N*P*Q pixels, for one tap (r, s) and BLOCK_N output channels k.

    Grid: (channel blocks, R*S*splits). Writes part[split, k, r, s] (contiguous); the
    launcher adds the splits in a fixed order.
    """
    pid_k = tl.program_id(0)
    tap_split = tl.program_id(1)
    tap = tap_split % (R * S)
    split = tap_split // (R * S)
    r = tap // S
    s = tap % S
    k = pid_k * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = k < K
    if USE_INT64:
        k = k.to(tl.int64)
    dy_chan = (k * sd_k)[None, :]
    x_chan = ((k // MULT) * sx_c)[None, :]

    start = split * CHUNK
    end = tl.minimum(start + CHUNK, N * P * Q)
    # Pixel coordinates of the first block (divisions once), then a mixed-radix add per block.
    n, p, q, step_n, step_p, step_q = pixel_walk(start, BLOCK_M, P, Q, USE_INT64)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for j0 in range(start, end, BLOCK_M):
        j_ok = (j0 + tl.arange(0, BLOCK_M)) < end
        h = p * stride_h - pad_h + r * dil_h
        w = q * stride_w - pad_w + s * dil_w
        x_ok = j_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        g = tl.load(dy_ptr + (n * sd_n + p * sd_p + q * sd_q)[:, None] + dy_chan,
                    mask=j_ok[:, None] & mask_n[None, :], other=0.0)
        v = tl.load(x_ptr + (n * sx_n + h * sx_h + w * sx_w)[:, None] + x_chan,
                    mask=x_ok[:, None] & mask_n[None, :], other=0.0)
        acc += g.to(ACC_DTYPE) * v.to(ACC_DTYPE)
        n, p, q = advance_pixels(n, p, q, step_n, step_p, step_q, P, Q)
    tl.store(part_ptr + ((split * K + k) * R + r) * S + s, tl.sum(acc, axis=0), mask=mask_n)


@triton.jit
def _depthwise_halo_wgrad_kernel(
    # pointers: input, grad_output, per-split partial grad_weight
    x_ptr, dy_ptr, part_ptr,
    # sizes (ITEMS_PER_SPLIT: (image, output row, BLOCK_Q columns) items per reduction part)
    N, H, W, P, Q, K, MULT, ITEMS_PER_SPLIT,
    # strides of the input and of grad_output
    sx_n, sx_c, sx_h, sx_w,
    sd_n, sd_k, sd_p, sd_q,
    # geometry
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # meta-parameters (R_PAD, S_PAD: the filter padded to a power of two, 16 or more)
    R: tl.constexpr, S: tl.constexpr, R_PAD: tl.constexpr, S_PAD: tl.constexpr, ACC_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr, USE_INT64: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr,
    CHUNK: tl.constexpr, CHUNKS: tl.constexpr,
):
    """Each program sums dw[k, r, s] = sum of dy[n, k, p, q] * x[n, k//MULT, p*sh - ph + r*dh, q*sw - pw + s*dw]
    for BLOCK_C output channels k and every tap (r, s), over ITEMS_PER_SPLIT items of the N * P *
    cdiv(Q, BLOCK_Q) (image, output row, column tile) items.

    Grid: (channel blocks, splits). Per item and chunk of CHUNK window columns j (the tile's
    columns plus the (S-1)*dw halo): the input rows of all R taps as one [BLOCK_C, R_PAD, CHUNK]
    block, times the dy row's banded block T[k, j, s] = dy[n, k, p, q0 + (j - s*dw) / sw] (zero
    off the band), one batched ``tl.dot`` into the [BLOCK_C, R_PAD, S_PAD] filter gradient: each
    loaded element serves every tap that reaches it. Writes part[split, k, r, s] (contiguous); the
    launcher adds the splits in a fixed order.
    """
    pid_k = tl.program_id(0)
    split = tl.program_id(1)
    k = pid_k * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_k = k < K
    if USE_INT64:
        k = k.to(tl.int64)
    k_ok = mask_k[:, None, None]
    x_chan = x_ptr + ((k // MULT) * sx_c)[:, None, None]
    dy_chan = dy_ptr + (k * sd_k)[:, None, None]
    tiles_q = tl.cdiv(Q, BLOCK_Q)
    start = split * ITEMS_PER_SPLIT
    end = tl.minimum(start + ITEMS_PER_SPLIT, N * P * tiles_q)
    r = tl.arange(0, R_PAD)
    taps_s = tl.arange(0, S_PAD)
    j = tl.arange(0, CHUNK)
    r_ok = r < R
    acc = tl.zeros((BLOCK_C, R_PAD, S_PAD), dtype=ACC_DTYPE)
    for step in range(start * CHUNKS, end * CHUNKS):  # flat over (item, chunk): one dot loop per program
        item = step // CHUNKS
        col = (step % CHUNKS) * CHUNK + j  # window column
        n = item // (P * tiles_q)
        p = (item // tiles_q) % P
        q0 = (item % tiles_q) * BLOCK_Q
        if USE_INT64:
            n = n.to(tl.int64)
            p = p.to(tl.int64)
        h = p * stride_h - pad_h + r * dil_h
        w_in = q0 * stride_w - pad_w + col
        a = tl.load(x_chan + n * sx_n + (h * sx_h)[None, :, None] + (w_in * sx_w)[None, None, :],
                    mask=k_ok & (r_ok & (h >= 0) & (h < H))[None, :, None] & ((w_in >= 0) & (w_in < W))[None, None, :],
                    other=0.0)
        # Window column ``col`` meets tap s at output column q0 + (col - s*dw) / sw.
        offset = col[:, None] - taps_s[None, :] * dil_w
        qi = offset // stride_w
        on_band = (offset >= 0) & (qi * stride_w == offset) & (qi < BLOCK_Q) & (q0 + qi < Q) & (taps_s < S)[None, :]
        t = tl.load(dy_chan + n * sd_n + p * sd_p + ((q0 + qi) * sd_q)[None, :, :], mask=k_ok & on_band[None, :, :],
                    other=0.0)
        acc = tl.dot(a, t, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
    part = part_ptr + ((split * K + k)[:, None, None] * R + r[None, :, None]) * S + taps_s[None, None, :]
    tl.store(part, acc, mask=k_ok & r_ok[None, :, None] & (taps_s < S)[None, None, :])


# Spatial patch x channel tiles; channels innermost, so a channels_last row loads as vectors.
_PATCH_CONFIGS = [  # none spills in the fp16 channels_last sm_90 compile (4x4x128 did: 8 B)
    config(BLOCK_P=4, BLOCK_Q=8, BLOCK_N=64, num_warps=4, num_stages=2),
    config(BLOCK_P=8, BLOCK_Q=8, BLOCK_N=32, num_warps=4, num_stages=2),
    config(BLOCK_P=2, BLOCK_Q=16, BLOCK_N=64, num_warps=4, num_stages=2),
    config(BLOCK_P=2, BLOCK_Q=8, BLOCK_N=128, num_warps=8, num_stages=2),
]
_PATCH_INTERPRETER_CONFIG = config(BLOCK_P=4, BLOCK_Q=4, BLOCK_N=8, num_stages=1)

DEPTHWISE_FORWARD = TunedKernel(
    _depthwise_forward_kernel,
    configs=_PATCH_CONFIGS,
    key=["H", "W", "P", "Q", "K", "MULT", "R", "S", "stride_h", "stride_w", "D", "O", "T", "stride_d", "ACC_DTYPE",
         "USE_INT64"],
    interpreter_config=_PATCH_INTERPRETER_CONFIG,
)

DEPTHWISE_DGRAD = TunedKernel(
    _depthwise_dgrad_kernel,
    configs=_PATCH_CONFIGS,
    key=["H", "W", "P", "Q", "C", "MULT", "R", "S", "stride_h", "stride_w", "ACC_DTYPE", "USE_INT64"],
    interpreter_config=_PATCH_INTERPRETER_CONFIG,
)

DEPTHWISE_WGRAD = TunedKernel(
    _depthwise_wgrad_kernel,
    # Few pixel rows per tile: each thread then keeps few row offsets live (64 rows: 255 registers).
    configs=[
        config(BLOCK_M=8, BLOCK_N=256, num_warps=4, num_stages=2),
        config(BLOCK_M=16, BLOCK_N=128, num_warps=4, num_stages=2),
        config(BLOCK_M=32, BLOCK_N=64, num_warps=4, num_stages=2),
        config(BLOCK_M=16, BLOCK_N=64, num_warps=2, num_stages=2),
    ],
    key=["N", "H", "W", "P", "Q", "K", "MULT", "CHUNK", "R", "S", "stride_h", "stride_w",
         "ACC_DTYPE", "USE_INT64"],
    interpreter_config=config(BLOCK_M=16, BLOCK_N=8, num_stages=1),
)


# The halo kernel's tiles (BLOCK_P, BLOCK_Q, BLOCK_C, CHUNK, num_warps[, num_stages]): every tl.dot dimension 16
# or more (M = BLOCK_P rows, N = BLOCK_Q columns, K = CHUNK window columns), batched over BLOCK_C channels
# (16 fp16 channels: one 32-byte sector per pixel in channels_last). None spills in the sm_90 compile at
# 31x31, 13x13 and 7x7 in fp16, bf16 and fp32 (32x32 tiles at 8 warps spilled 24-32 B in fp32, 32x16 and
# 16x32 at 4 warps 208-248 B).
# 8-warp tiles (16x32 and 32x16 at 8 warps load fewer elements per output and do not spill) stay out until
# a GPU test shows this flattened (filter row x chunk) loop correct at 8 warps: such a loop has been
# miscompiled by Triton at num_warps=8 (pytorch#173068), gemm/plan.py's FLATTENED_LOOP_MAX_WARPS.
_HALO_TILES = [
    (16, 16, 16, 16, 4, 1),
    (16, 16, 16, 16, 4),
]
_HALO_INTERPRETER_CHANNELS = 64  # the interpreter runs the grid one program at a time: few, wide programs
HALO_MIN_TAPS = 7  # filter-row taps from which the halo kernel serves the forward (ConvNeXt's 7x7 up)


def _halo_config(s: int, stride_w: int, dil_w: int, bp: int, bq: int, bc: int, chunk: int, warps: int,
                 stages: int = 2):
    width = (bq - 1) * stride_w + (s - 1) * dil_w + 1
    return config(BLOCK_P=bp, BLOCK_Q=bq, BLOCK_C=bc, CHUNK=chunk, CHUNKS=triton.cdiv(width, chunk),
                  num_warps=warps, num_stages=stages)


def _halo_loads_per_output(cfg) -> float:
    """Elements one filter row loads per output element: the window block (CHUNKS*CHUNK columns for
    BLOCK_Q outputs) and the banded weights (CHUNKS*CHUNK x BLOCK_Q, shared by BLOCK_P rows)."""
    m = cfg.kwargs
    columns = m["CHUNKS"] * m["CHUNK"]
    return columns / m["BLOCK_Q"] + columns / m["BLOCK_P"]


def plan_halo(params: ConvParams) -> Optional[List[triton.Config]]:
    """The halo kernel's candidate configs for a depthwise forward, fewest loads per output first
    (ties: the order of ``_HALO_TILES``), or None when the direct kernel serves it: 3-D, or fewer than
    ``HALO_MIN_TAPS`` taps along a filter row (3x3 and 5x5 stay on the direct kernel, whose taps are
    all but free once the tile is in cache). Tiles twice as wide or tall as the output are dropped."""
    if params.spatial_dims != 2:
        return None
    return _plan(params.s, params.stride[1], params.dilation[1], params.p, params.q)


def plan_halo_grad_input(params: ConvParams) -> Optional[List[triton.Config]]:
    """The halo kernel's configs for grad_input as the forward of dy with the flipped filter (stride 1,
    one output channel per input channel: then dx is a depthwise convolution of dy), or None."""
    if params.spatial_dims != 2 or params.stride != (1, 1) or params.k != params.c:
        return None
    return _plan(params.s, 1, params.dilation[1], params.h, params.w)


def _plan(s: int, stride_w: int, dil_w: int, p: int, q: int) -> Optional[List[triton.Config]]:
    if s < HALO_MIN_TAPS:
        return None
    if interpreting():
        return [_halo_config(s, stride_w, dil_w, 16, 16, _HALO_INTERPRETER_CHANNELS, 16, 4)]
    fitting = [t for t in _HALO_TILES if (t[0] <= 16 or t[0] < 2 * p) and (t[1] <= 16 or t[1] < 2 * q)]
    return sorted((_halo_config(s, stride_w, dil_w, *t) for t in fitting), key=_halo_loads_per_output)


DEPTHWISE_HALO = TunedKernel(
    _depthwise_halo_kernel,
    configs=[_halo_config(31, 1, 1, *t) for t in _HALO_TILES],  # the planner's menu, for RepLKNet's 31x31
    key=["H", "W", "P", "Q", "K", "MULT", "R", "S", "stride_h", "stride_w", "dil_h", "dil_w", "ACC_DTYPE",
         "DOT_PRECISION", "USE_INT64"],
    interpreter_config=_halo_config(31, 1, 1, 16, 16, _HALO_INTERPRETER_CHANNELS, 16, 4),
)


# The halo wgrad's tiles (BLOCK_C, CHUNK, num_warps[, num_stages]), the dot's M = R_PAD, N = S_PAD, K = CHUNK;
# BLOCK_Q is the planner's (one per problem: the split of the items must not depend on the config).
_HALO_WGRAD_TILES = [  # at most 4 warps, as _HALO_TILES
    (8, 16, 4, 1),
    (8, 16, 4, 2),
]


def _halo_wgrad_config(s: int, stride_w: int, dil_w: int, bq: int, bc: int, chunk: int, warps: int,
                       stages: int = 2):
    width = (bq - 1) * stride_w + (s - 1) * dil_w + 1
    return config(BLOCK_Q=bq, BLOCK_C=bc, CHUNK=chunk, CHUNKS=triton.cdiv(width, chunk), num_warps=warps,
                  num_stages=stages)


def plan_halo_grad_weight(params: ConvParams) -> Optional[List[triton.Config]]:
    """The halo wgrad's candidate configs (2-D, filter rows of ``HALO_MIN_TAPS`` or more taps), or None
    when the per-tap reduction serves it. Column tiles of 32 where the output is wider than 16."""
    if params.spatial_dims != 2 or params.s < HALO_MIN_TAPS:
        return None
    geometry = (params.s, params.stride[1], params.dilation[1], 32 if params.q > 16 else 16)
    if interpreting():
        return [_halo_wgrad_config(*geometry, _HALO_INTERPRETER_CHANNELS, 16, 4)]
    # Two stages of fp32 NCHW blocks (4-byte copies, one per element) spilled 16 B on sm_90 at 31x31.
    one_stage = params.dtype.itemsize > 2 and not params.channels_last
    return [_halo_wgrad_config(*geometry, *t) for t in _HALO_WGRAD_TILES if not (one_stage and t[3:] == (2,))]


DEPTHWISE_HALO_WGRAD = TunedKernel(
    _depthwise_halo_wgrad_kernel,
    configs=[_halo_wgrad_config(31, 1, 1, 32, *t) for t in _HALO_WGRAD_TILES],  # the planner's menu, for 31x31
    key=["N", "H", "W", "P", "Q", "K", "MULT", "ITEMS_PER_SPLIT", "R", "S", "stride_h", "stride_w", "dil_h",
         "dil_w", "ACC_DTYPE", "DOT_PRECISION", "USE_INT64"],
    interpreter_config=_halo_wgrad_config(31, 1, 1, 32, _HALO_INTERPRETER_CHANNELS, 16, 4),
)


def _weight_taps(w: torch.Tensor):
    """(sw_k, sw_r, sw_s) of a (K, 1, R, S) depthwise weight in any layout."""
    return w.stride(0), w.stride(2), w.stride(3)


def _patch_grid(n: int, rows: int, cols: int, channels: int, phases: int = 0):
    def grid(meta):
        tiles = triton.cdiv(rows, meta["BLOCK_P"]) * triton.cdiv(cols, meta["BLOCK_Q"])
        blocks = (n * tiles, triton.cdiv(channels, meta["BLOCK_N"]))
        return blocks + (phases,) if phases else blocks
    return grid


def depthwise_forward(x, w, bias, params: ConvParams, *, scale=None, shift=None, residual=None, activation=0):
    """Launch the depthwise forward; returns a new output in PyTorch's memory format (a 3-D one is
    written channels_last_3d, its (N, D) folded, and copied out when the rule says NCDHW)."""
    three_d = params.spatial_dims == 3
    out = new_buffer(params.output_shape, params.dtype, x.device, channels_last=True) if three_d \
        else new_output(params, x.device)
    if out.numel() == 0:
        return finish(out, params.channels_last)
    epilogue = epilogue_arguments(out, bias, scale, shift, residual, activation)
    if three_d:
        depth = (params.d, params.o, x.stride(2), w.stride(2), *params.depth_geometry)
        x_strides = (x.stride(0), x.stride(1), x.stride(3), x.stride(4))
        w_taps, out_strides, images = (w.stride(0), w.stride(3), w.stride(4)), folded_strides(out), params.n * params.o
    else:
        plan = plan_halo(params)
        if plan is not None:
            _halo_forward(x, w, out, params, epilogue, plan)
            return out
        depth = (1, 1, 0, 0, 1, 0, 1)
        x_strides, w_taps, out_strides, images = x.stride(), _weight_taps(w), out.stride(), params.n
    DEPTHWISE_FORWARD[_patch_grid(images, params.p, params.q, params.k)](
        x, w, out,
        params.h, params.w, params.p, params.q, params.k, params.k // params.c,
        *x_strides, *w_taps, *out_strides,
        *params.geometry,
        *depth,
        *epilogue.args, **epilogue.flags,
        R=params.r, S=params.s, T=params.t, DEPTH=three_d,
        ACC_DTYPE=acc_dtype(params.dtype),
        USE_INT64=needs_int64(x, w, out, epilogue.residual_or_out),
    )
    return finish(out, params.channels_last) if three_d else out


def _halo_forward(x, w, out, params: ConvParams, epilogue, plan) -> None:
    _launch_halo(x, w, out, (params.n, params.h, params.w, params.p, params.q, params.k, params.k // params.c),
                 params.geometry, params.r, params.s, epilogue, plan)


def _launch_halo(x, w, out, sizes, geometry, r: int, s: int, epilogue, plan) -> None:
    """``sizes`` = (N, H, W, P, Q, K, MULT) of the problem the kernel sees; ``geometry`` its
    (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w)."""
    n, _, _, p, q, k, _ = sizes
    grid = lambda meta: (n * triton.cdiv(p, meta["BLOCK_P"]) * triton.cdiv(q, meta["BLOCK_Q"]),
                         triton.cdiv(k, meta["BLOCK_C"]))
    DEPTHWISE_HALO.launch(
        grid, plan,
        x, w, out,
        *sizes[1:],
        *x.stride(), *_weight_taps(w), *out.stride(),
        *geometry,
        *epilogue.args, **epilogue.flags,
        # fp32 stays IEEE whatever cudnn.allow_tf32 says: the direct kernel it replaces is exact FMA.
        R=r, S=s, ACC_DTYPE=acc_dtype(x.dtype), DOT_PRECISION="ieee",
        USE_INT64=needs_int64(x, w, out, epilogue.residual_or_out),
    )


def depthwise_grad_input(dy: torch.Tensor, w: torch.Tensor, params: ConvParams, channels_last: bool) -> torch.Tensor:
    """dx: the depthwise transposed convolution of dy, by stride phases (3-D: the implicit GEMM's dgrad,
    one channel per group)."""
    if params.spatial_dims == 3:
        return gemm_grad_input(dy, w, params, channels_last)
    dx = new_buffer((params.n, params.c, params.h, params.w), dy.dtype, dy.device, channels_last)
    if dx.numel() == 0:
        return dx
    plan = plan_halo_grad_input(params)
    if plan is not None:
        # dx[h] = sum_r dy[h + pad - r*dil] w[r] = sum_r' dy[h - ((R-1)*dil - pad) + r'*dil] w[R-1-r']: the
        # halo forward of dy with the flipped filter and padding (R-1)*dil - pad (negative pads are masked).
        _, _, ph, pw, dh, dw = params.geometry
        geometry = (1, 1, (params.r - 1) * dh - ph, (params.s - 1) * dw - pw, dh, dw)
        sizes = (params.n, params.p, params.q, params.h, params.w, params.c, 1)
        _launch_halo(dy, w.flip(2, 3), dx, sizes, geometry, params.r, params.s, epilogue_arguments(dx), plan)
        return dx
    sh, sw = params.stride
    h_per_phase = triton.cdiv(params.h, sh)
    w_per_phase = triton.cdiv(params.w, sw)
    (tap_step_h, row_step_h), (tap_step_w, row_step_w) = (tap_steps(sh, params.dilation[0]),
                                                          tap_steps(sw, params.dilation[1]))
    DEPTHWISE_DGRAD[_patch_grid(params.n, h_per_phase, w_per_phase, params.c, sh * sw)](
        dy, w, dx,
        params.h, params.w, params.p, params.q, params.c, params.k // params.c, h_per_phase, w_per_phase,
        *dy.stride(), *_weight_taps(w), *dx.stride(),
        *params.geometry, tap_step_h, tap_step_w, row_step_h, row_step_w,
        R=params.r, S=params.s, ACC_DTYPE=acc_dtype(dy.dtype), USE_INT64=needs_int64(dy, w, dx),
    )
    return dx


def _item_splits(items: int, channel_blocks: int):
    """(splits, items per split) of the halo wgrad: two waves of programs for the widest channel block
    (each item is a whole row tile, so no pixel quantum applies); two splits under the interpreter."""
    wanted = 2 if interpreting() else triton.cdiv(2 * device.target().sms, channel_blocks)
    per_split = triton.cdiv(items, max(1, min(items, wanted)))
    return triton.cdiv(items, per_split), per_split


def depthwise_grad_weight(dy: torch.Tensor, x: torch.Tensor, params: ConvParams, channels_last: bool) -> torch.Tensor:
    """dw (K, 1, R, S): per channel and tap, a deterministic reduction over N*P*Q (3-D: the implicit
    GEMM's wgrad, one channel per group)."""
    if params.spatial_dims == 3:
        return gemm_grad_weight(dy, x, params, channels_last)
    shape = (params.k, 1, params.r, params.s)
    npq = params.n * params.p * params.q
    if npq == 0:
        return new_buffer(shape, dy.dtype, dy.device, channels_last).zero_()
    part_dtype = torch.float64 if dy.dtype == torch.float64 else torch.float32
    plan = plan_halo_grad_weight(params)
    if plan is not None:
        items = params.n * params.p * triton.cdiv(params.q, plan[0].kwargs["BLOCK_Q"])
        splits, per_split = _item_splits(items, triton.cdiv(params.k, max(c.kwargs["BLOCK_C"] for c in plan)))
        part = new_buffer((splits,) + shape, part_dtype, dy.device)
        DEPTHWISE_HALO_WGRAD.launch(
            lambda meta: (triton.cdiv(params.k, meta["BLOCK_C"]), splits), plan,
            x, dy, part,
            params.n, params.h, params.w, params.p, params.q, params.k, params.k // params.c, per_split,
            *x.stride(), *dy.stride(),
            *params.geometry,
            R=params.r, S=params.s, R_PAD=max(16, triton.next_power_of_2(params.r)),
            S_PAD=max(16, triton.next_power_of_2(params.s)), ACC_DTYPE=acc_dtype(dy.dtype), DOT_PRECISION="ieee",
            USE_INT64=needs_int64(x, dy, part),
        )
        return part.sum(0).to(dtype=dy.dtype, memory_format=memory_format(channels_last))
    # Splits for the widest channel block of the configs, so every config fills the GPU.
    widest = max(cfg.kwargs["BLOCK_N"] for cfg in DEPTHWISE_WGRAD.configs)
    splits, chunk = reduction_splits(npq, triton.cdiv(params.k, widest) * params.r * params.s)
    part = new_buffer((splits,) + shape, part_dtype, dy.device)
    grid = lambda meta: (triton.cdiv(params.k, meta["BLOCK_N"]), params.r * params.s * splits)
    DEPTHWISE_WGRAD[grid](
        x, dy, part,
        params.n, params.h, params.w, params.p, params.q, params.k, params.k // params.c, chunk,
        *x.stride(), *dy.stride(),
        *params.geometry,
        R=params.r, S=params.s, ACC_DTYPE=acc_dtype(dy.dtype), USE_INT64=needs_int64(x, dy, part),
    )
    return part.sum(0).to(dtype=dy.dtype, memory_format=memory_format(channels_last))


def unsupported(params: ConvParams) -> Optional[str]:
    """Why the depthwise kernels do not apply to ``params``, or None."""
    if params.groups != params.c:
        return (f"depthwise needs groups == in_channels (one input channel per group), "
                f"got groups={params.groups} with {params.c} input channels")
    return None
