"""Pointwise (1x1, stride 1, no padding) convolutions on Hopper's data path: one persistent GEMM kernel
whose operands arrive by TMA (tensor descriptors, ``tma.py``), for the forward, dgrad and wgrad.

On NHWC operands a stride-1 1x1 convolution is a plain GEMM per group, and so are both its gradients:

    forward  out[m, g*Kg + k] = sum_c  x[m, g*Cg + c]  * w[g*Kg + k, c]      (m: the N*H*W pixels)
    dgrad    dx[m, g*Cg + c]  = sum_k  dy[m, g*Kg + k] * w[g*Kg + k, c]
    wgrad    dw[g*Kg + k, c]  = sum_m  dy[m, g*Kg + k] * x[m, g*Cg + c]

Each operand is one 3-D descriptor [groups, rows, columns of one group] over the tensor as it lies
(x as [G, N*H*W, Cg] with strides (Cg, C, 1), the weight as [G, Kg, Cg]): a box never reads across a
group, and the channel / pixel tails of every box are TMA's zero fill, so the main loop has no mask
and no address arithmetic. Where a descriptor rule fails (``tma.descriptor_unsupported``: fp16
channels not a multiple of 8, a strided view, fp64 ...) the cp.async kernels serve the call.

One program per SM walks the tiles of every (group, split) GEMM in grouped order (Triton's
persistent-matmul recipe); ``tl.range(..., flatten=True)`` fuses the tile walk and the reduction into
one software-pipelined loop (one pipeline fill per program, not per tile; the per-tile set-up and
epilogue run under a condition inside it). The tile ends in the shared epilogue
(``epilogue.store_conv_tile``: bias, BN, residual, activation, the store in the output's strides),
or, split-K, in the fp32 partial that ``splitk.split_reduce`` adds in a fixed order (deterministic).
The output is stored with pointers, not by TMA: the epilogue reads a residual through its own
strides and stores in any output layout, which a TMA store box cannot.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ...core.launcher import TunedKernel
from ...core.params import ConvParams
from ..common import acc_dtype, dot_precision, folded_strides, needs_int64
from ..epilogue import epilogue_arguments, store_conv_tile
from ..tiles import grouped_tile, split_range
from . import plan as gemm_plan
from . import tma
from .splitk import new_partials, reduce_if_split, splitk_store_partial


@triton.jit
def _operand_tile(desc, group, outer, red, BLOCK_OUTER: tl.constexpr, BLOCK_RED: tl.constexpr,
                  TRANSPOSED: tl.constexpr):
    """The [BLOCK_OUTER, BLOCK_RED] tile at (outer, red) of one group's operand: a box of the descriptor
    [G, outer, reduction], or (TRANSPOSED) of [G, reduction, outer], transposed in shared memory."""
    if TRANSPOSED:
        return desc.load([group, red, outer]).reshape(BLOCK_RED, BLOCK_OUTER).T
    return desc.load([group, outer, red]).reshape(BLOCK_OUTER, BLOCK_RED)


@triton.jit
def _pointwise_tma_kernel(
    # descriptors of the two operands (``tma.py``), the output, split-K partials
    a_desc, b_desc, out_ptr, part_ptr,
    # one group's GEMM: ROWS x COLS, reduced over REDUCTION; where group g's tile lands in the output
    # (its rows + g*ROW_GROUP, its columns + g*COL_GROUP); the partials' extent; the output's (P, Q)
    ROWS, COLS, REDUCTION, GROUPS, ROW_GROUP, COL_GROUP, PART_ROWS, PART_COLS, P, Q,
    # strides of the output (n, column, p, q)
    so_n, so_k, so_p, so_q,
    # the epilogue (``epilogue.store_conv_tile``): per-channel vectors, residual and its strides, flags
    bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr,
    # meta-parameters
    A_TRANSPOSED: tl.constexpr, B_TRANSPOSED: tl.constexpr, ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """Each program computes [BLOCK_M x BLOCK_N] output tiles, the tiles program_id, program_id +
    num_programs, ... of the GROUPS * SPLIT_K GEMMs in (group, split, grouped tile) order, each over
    its split's part of the reduction: out = A[g] @ B[g] with A[g] a ROWS x REDUCTION operand (the
    descriptor [G, ROWS, REDUCTION], or [G, REDUCTION, ROWS] when A_TRANSPOSED) and B[g] a
    REDUCTION x COLS one ([G, REDUCTION, COLS], or [G, COLS, REDUCTION] when B_TRANSPOSED).

    Grid: (persistent programs,), one per SM at most. Output row = g*ROW_GROUP + tile row, decoded as
    the pixel (n, p, q) of a (P, Q) image for the epilogue (P = Q = 1 for a weight gradient's rows);
    column = g*COL_GROUP + tile column. SPLIT_K == 1 ends in the shared epilogue, else the fp32 partial
    goes to part[split, row, column] of a PART_ROWS x PART_COLS result.
    """
    num_pid_m = tl.cdiv(ROWS, BLOCK_M)
    num_pid_n = tl.cdiv(COLS, BLOCK_N)
    per_gemm = num_pid_m * num_pid_n
    blocks = tl.cdiv(REDUCTION, BLOCK_K)
    for tile in tl.range(tl.program_id(0), per_gemm * GROUPS * SPLIT_K, tl.num_programs(0), flatten=True):
        gemm = tile // per_gemm
        group = gemm // SPLIT_K
        split = gemm % SPLIT_K
        pid_m, pid_n = grouped_tile(tile % per_gemm, num_pid_m, num_pid_n, GROUP_M)
        m0 = pid_m * BLOCK_M
        n0 = pid_n * BLOCK_N
        first, last = split_range(blocks, split, SPLIT_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
        for block in range(first, last):
            red = block * BLOCK_K
            a = _operand_tile(a_desc, group, m0, red, BLOCK_M, BLOCK_K, A_TRANSPOSED)
            b = _operand_tile(b_desc, group, n0, red, BLOCK_N, BLOCK_K, not B_TRANSPOSED).T
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)

        offs_m = m0 + tl.arange(0, BLOCK_M)
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_m = offs_m < ROWS
        mask_n = offs_n < COLS
        rows = group * ROW_GROUP + offs_m
        cols = group * COL_GROUP + offs_n
        if SPLIT_K == 1:
            store_conv_tile(acc, rows // (P * Q), (rows // Q) % P, rows % Q, cols, mask_m, mask_n,
                            (out_ptr, so_n, so_k, so_p, so_q),
                            (bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
                             HAS_BIAS, HAS_SCALE, HAS_RESIDUAL, ACTIVATION))
        else:
            splitk_store_partial(acc, part_ptr, split, rows, cols, mask_m, mask_n, PART_ROWS, PART_COLS)


def _boxes(a_transposed: bool, b_transposed: bool) -> tma.BoxSpec:
    """The descriptor boxes of each operand orientation, in the config's meta-parameters."""
    return {"a_desc": (1, "BLOCK_K", "BLOCK_M") if a_transposed else (1, "BLOCK_M", "BLOCK_K"),
            "b_desc": (1, "BLOCK_N", "BLOCK_K") if b_transposed else (1, "BLOCK_K", "BLOCK_N")}


def _set_boxes(nargs: dict) -> None:
    """Every config's pre_hook: the boxes of this launch's orientation at this config's tile."""
    tma.set_blocks(nargs, _boxes(nargs["A_TRANSPOSED"], nargs["B_TRANSPOSED"]), nargs)


# The plain channel loop of a 1x1 (tile walk and reduction flattened by the compiler) may take 8 warps.
POINTWISE_TMA = TunedKernel(
    _pointwise_tma_kernel,
    configs=tma.with_pre_hook(gemm_plan.static_menu(flattened=False), _set_boxes),
    key=["ROWS", "COLS", "REDUCTION", "GROUPS", "HAS_BIAS", "HAS_SCALE", "HAS_RESIDUAL", "ACTIVATION",
         "A_TRANSPOSED", "B_TRANSPOSED", "ACC_DTYPE", "DOT_PRECISION"],
    interpreter_config=gemm_plan.INTERPRETER_CONFIG,
    tile_operands=gemm_plan.TILE_OPERANDS,
)


def _operands_unsupported(params: ConvParams, operands, others=()) -> Optional[str]:
    """Why the TMA kernel cannot serve this call: not a stride-1 1x1, 64-bit offsets, or an operand
    (read by descriptor) not dense channels-innermost; ``others`` are only addressed by pointers."""
    if not tma.available():
        return "no tensor descriptors on this target (sm_90 and Triton >= 3.4 needed)"
    if (params.t, params.r, params.s) != (1, 1, 1) or params.strides != (1,) * params.spatial_dims or any(params.padding):
        return "TMA pointwise needs a 1x1 kernel, stride 1, no padding"
    if needs_int64(*operands, *others):
        return "offsets past 2^30 elements (TMA coordinates and the epilogue's offsets are 32-bit here)"
    for t in operands:
        if tma.rows_view(t) is None:
            return "an operand is not dense channels-innermost"
    return None


def _gemm_views(x: torch.Tensor, params: ConvParams):
    """(rows, C, C/groups): x as N*H*W rows of C channels."""
    return x.numel() // params.c, params.c, params.c_per_group


def forward_unsupported(params: ConvParams, x, w, out, residual=None) -> Optional[str]:
    """Why the TMA forward cannot serve this call (x NHWC, w (K, R, S, C), ``out`` channels_last), or None."""
    why = _operands_unsupported(params, (x, w), (out, residual))
    if why:
        return why
    m, c, cg = _gemm_views(x, params)
    return (tma.descriptor_unsupported(x, (params.groups, m, cg), (cg, c, 1))
            or tma.descriptor_unsupported(w, (params.groups, params.k_per_group, cg), (params.k_per_group * cg, cg, 1))
            or tma.boxes_unsupported(gemm_plan.plan(_forward_problem(params, x)), _boxes(False, True), x.element_size()))


def _forward_problem(params: ConvParams, x) -> gemm_plan.GemmProblem:
    return gemm_plan.GemmProblem(m=_gemm_views(x, params)[0], n=params.k_per_group, reduction_block=params.c_per_group,
                                 outer_blocks=1, programs=params.groups, element_bytes=x.element_size(), flattened=False,
                                 persistent=True)


def _launch(problem: gemm_plan.GemmProblem, a, b, out, part, a_transposed, b_transposed, sizes, out_strides,
            epilogue_args, epilogue_flags, dtype):
    candidates = tma.with_pre_hook(gemm_plan.plan(problem), _set_boxes)
    tma.set_blocks({"a_desc": a, "b_desc": b}, _boxes(a_transposed, b_transposed), candidates[0].kwargs)
    sms = gemm_plan.device_sms()
    rows, cols = problem.m, problem.n
    grid = lambda meta: (min(sms, triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(cols, meta["BLOCK_N"])
                             * problem.programs * meta["SPLIT_K"]),)
    return POINTWISE_TMA.launch(
        grid, candidates,
        a, b, out, part,
        *sizes, *out_strides, *epilogue_args, **epilogue_flags,
        A_TRANSPOSED=a_transposed, B_TRANSPOSED=b_transposed,
        ACC_DTYPE=acc_dtype(dtype), DOT_PRECISION=dot_precision(dtype),
    )


def forward(x, w, out, bias, params: ConvParams, *, scale=None, shift=None, residual=None, activation=0):
    """out = epilogue(x @ w^T) per group, into the channels_last buffer ``out`` (rules checked by
    ``forward_unsupported``)."""
    m, c, cg = _gemm_views(x, params)
    kg = params.k_per_group
    problem = _forward_problem(params, x)
    splits = gemm_plan.largest_split(gemm_plan.plan(problem))
    part = new_partials(splits, m, params.k, params.dtype, x.device) if splits > 1 else out
    epilogue = epilogue_arguments(out, bias, scale, shift, residual, activation)
    a = tma.descriptor(x, (params.groups, m, cg), (cg, c, 1))
    b = tma.descriptor(w, (params.groups, kg, cg), (kg * cg, cg, 1))
    # A row decodes as (n, p, q) with n the (N, D) fold of a 3-D output (the depth's stride first).
    out_strides, pixels = folded_strides(out), (params.p, params.q)
    chosen = _launch(problem, a, b, out, part, False, True,
                     (m, kg, cg, params.groups, 0, kg, m, params.k, *pixels), out_strides,
                     epilogue.args, epilogue.flags, params.dtype)
    reduce_if_split(chosen, part, out, pixels, out_strides, bias=bias, scale=scale, shift=shift,
                    residual=residual, activation=activation)
    return out


def _backward_problem(params: ConvParams, dy, weight_grad: bool) -> gemm_plan.GemmProblem:
    m = dy.numel() // params.k
    if weight_grad:
        return gemm_plan.GemmProblem(m=params.k_per_group, n=params.c_per_group, reduction_block=m, outer_blocks=1,
                                     programs=params.groups, element_bytes=dy.element_size(), flattened=False,
                                     persistent=True)
    return gemm_plan.GemmProblem(m=m, n=params.c_per_group, reduction_block=params.k_per_group, outer_blocks=1,
                                 programs=params.groups, element_bytes=dy.element_size(), flattened=False,
                                     persistent=True)


def _backward_unsupported(params: ConvParams, dy, other, grad, weight_grad: bool) -> Optional[str]:
    why = _operands_unsupported(params, (dy, other), (grad,))
    if why:
        return why
    m, k, kg, cg = dy.numel() // params.k, params.k, params.k_per_group, params.c_per_group
    other_view = (params.groups, m, cg), (cg, params.c, 1)  # x for wgrad
    if not weight_grad:
        other_view = (params.groups, kg, cg), (kg * cg, cg, 1)  # the weight for dgrad
    return (tma.descriptor_unsupported(dy, (params.groups, m, kg), (kg, k, 1))
            or tma.descriptor_unsupported(other, *other_view)
            or tma.boxes_unsupported(gemm_plan.plan(_backward_problem(params, dy, weight_grad)),
                                     _boxes(weight_grad, False), dy.element_size()))


def grad_input_unsupported(params: ConvParams, dy, w, dx) -> Optional[str]:
    """Why the TMA dgrad cannot serve this call (dy NHWC, w (K, R, S, C), ``dx`` channels_last), or None."""
    return _backward_unsupported(params, dy, w, dx, weight_grad=False)


def grad_weight_unsupported(params: ConvParams, dy, x, dw) -> Optional[str]:
    """Why the TMA wgrad cannot serve this call (dy and x NHWC, ``dw`` channels_last), or None."""
    return _backward_unsupported(params, dy, x, dw, weight_grad=True)


def grad_input(dy, w, dx, params: ConvParams):
    """dx = dy @ w per group, into the channels_last buffer ``dx`` (``grad_input_unsupported`` holds)."""
    m, kg, cg = dy.numel() // params.k, params.k_per_group, params.c_per_group
    problem = _backward_problem(params, dy, weight_grad=False)
    splits = gemm_plan.largest_split(gemm_plan.plan(problem))
    part = new_partials(splits, m, params.c, dy.dtype, dy.device) if splits > 1 else dx
    a = tma.descriptor(dy, (params.groups, m, kg), (kg, params.k, 1))
    b = tma.descriptor(w, (params.groups, kg, cg), (kg * cg, cg, 1))
    nothing = epilogue_arguments(dx)
    dx_strides, pixels = folded_strides(dx), (params.h, params.w)
    chosen = _launch(problem, a, b, dx, part, False, False,
                     (m, cg, kg, params.groups, 0, cg, m, params.c, *pixels), dx_strides,
                     nothing.args, nothing.flags, dy.dtype)
    reduce_if_split(chosen, part, dx, pixels, dx_strides)
    return dx


def grad_weight(dy, x, dw, params: ConvParams):
    """dw = dy^T @ x per group, into the (K, C/groups, 1, 1) channels_last buffer ``dw``
    (``grad_weight_unsupported`` holds): rows k, columns c, reduced over the N*H*W pixels."""
    m, kg, cg = dy.numel() // params.k, params.k_per_group, params.c_per_group
    problem = _backward_problem(params, dy, weight_grad=True)
    splits = gemm_plan.largest_split(gemm_plan.plan(problem))
    part = new_partials(splits, params.k, cg, dy.dtype, dy.device) if splits > 1 else dw
    a = tma.descriptor(dy, (params.groups, m, kg), (kg, params.k, 1))
    b = tma.descriptor(x, (params.groups, m, cg), (cg, params.c, 1))
    nothing = epilogue_arguments(dw)
    dw_strides = (cg, 1, 0, 0)  # row k, column c of a (K, C/groups) matrix
    chosen = _launch(problem, a, b, dw, part, True, False,
                     (kg, cg, m, params.groups, kg, 0, params.k, cg, 1, 1), dw_strides,
                     nothing.args, nothing.flags, dy.dtype)
    reduce_if_split(chosen, part, dw, (1, 1), dw_strides)
    return dw
