"""R x S convolutions on Hopper's data path: R*S shifted GEMMs whose operands arrive by TMA.

With the output tile taken as a spatial block of BLOCK_H x BLOCK_W pixels of one image, the A tile of
kernel tap (r, s) of a stride-1 forward is ONE box [1, BLOCK_H, BLOCK_W, 1, BLOCK_K] of the NHWC input,
viewed as the 5-D tensor [N, H, W, groups, C/groups] in its own strides, at (n, h0 + r*dil_h - pad_top,
w0 + s*dil_w - pad_left, g, c0): the copy engine's zero fill of coordinates outside the image IS the
padding, and its zero fill past C/groups the channel tail. The weight (K, R, S, C/groups) is the 4-D
descriptor [groups, K/groups, R*S, C/groups]. No per-row address, no padding predicate, no mask in
the loop. A stride-2 forward (groups 1, even sizes) reads the phase view [N, H/2, 2, W/2, 2C] of the
input, where a strided tap's pixels are again one box (``_phase_view``).

The dgrad (``DGRAD``) is the same kernel on sub-pixel stride phases (``ops/phases.py``): input rows h
with the same (h + pad) mod stride are reached by the same taps r0, r0 + tap_step, ..., each moving the
dy row by -row_step, so for one phase (a grid axis) and tap, the rows of a block of the phase's grid
read ONE box of dy [N, P, Q, groups, K/groups] at (n, i0 + base - ii*row_step, ...); the weight tile
[k, c] is taken as it lies. Stride 1 is its one-phase case.

Main loop: ONE software-pipelined loop over every (tap, channel block) of the program's split, the
(r, s, c0) digits advanced as counters (``tiles.carry``): no division in it. Split-K from the
planner, parts added in a fixed order (``splitk``): deterministic. The tile ends in the shared
epilogue (``epilogue.store_conv_tile``). The wgrad (``_conv_tma_wgrad_kernel``) walks each tap's
pixels as the same spatial blocks. Where a descriptor rule fails (``tma.py``), or a strided forward /
wgrad does not fit the phase view, the cp.async kernels serve the call.
"""
from __future__ import annotations

from typing import Optional

import triton
import triton.language as tl

from ...core.launcher import TunedKernel
from ...core.params import ConvParams
from ..common import acc_dtype, dot_precision, folded_strides, needs_int64
from ..epilogue import epilogue_arguments, store_conv_tile
from ..phases import first_tap, stride_phase, tap_steps
from ..tiles import carry, grouped_tile, split_range
from . import plan as gemm_plan
from . import tma
from .splitk import new_partials, reduce_if_split, splitk_store_partial


@triton.jit
def _conv_tma_kernel(
    # descriptors: the activation [N, H, W, G, C/G] (x, or dy for a dgrad), the weight [G, K/G, R*S, C/G];
    # the output and split-K partials
    a_desc, w_desc, out_ptr, part_ptr,
    # sizes: images, the tile grid's rows and columns (the output's, or a dgrad's rows / columns of one
    # stride phase), the output's height and width, one group's output columns and reduction channels
    N, P, Q, OUT_H, OUT_W, COLS, REDUCTION,
    # strides of the output (n, column, p, q)
    so_n, so_k, so_p, so_q,
    # the input row of output row 0 at tap 0 (-pad for a forward, +pad for a dgrad; with PHASES > 1 the
    # padding rounded up to a multiple of the stride, minus the padding, and that multiple / stride in
    # row_h), the taps' dilation
    off_h, off_w, row_h, row_w, dil_h, dil_w,
    # DGRAD: the stride, padding, and the tap / dy row steps of a phase (``phases.tap_steps``)
    stride_h, stride_w, pad_h, pad_w, tap_step_h, tap_step_w, row_step_h, row_step_w,
    # the epilogue (``epilogue.store_conv_tile``): per-channel vectors, residual and its strides, flags
    bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr,
    # meta-parameters
    R: tl.constexpr, S: tl.constexpr, DGRAD: tl.constexpr, PHASES: tl.constexpr,
    ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_W: tl.constexpr,
    SPLIT_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Each program computes a [BLOCK_M = BLOCK_H x BLOCK_W output pixels of one image x BLOCK_N
    columns] tile of one group, over its part of the (r, s, channel block) reduction:
    out[n, p, q, g*COLS + j] = sum over (r, s, c) of A[n, p + off_h + r*dil_h, q + off_w + s*dil_w, g, c]
    * W[g, j, r*S + s, c]. DGRAD: out = dx at rows h = h_first + p*stride_h of the program's phase,
    columns likewise, summed over the phase's taps (r0 + ii*tap_step_h, s0 + jj*tap_step_w) and k of
    dy[n, p + base_h - ii*row_step_h, q + base_w - jj*row_step_w, g, k] * W[g, k, tap, j].

    PHASES > 1 (a forward of that stride, groups 1): A is the phase view [N, H/PHASES, PHASES, W/PHASES,
    PHASES*C] of the input (``_phase_view``), input row PHASES*i + a at (i, a); a tap's box is at
    (n, p0 + t // PHASES + row_h, t % PHASES, ...) with t = r*dil_h + off_h >= 0 (a shift and a mask
    by the constexpr power of two, no division).

    Grid: (N * cdiv(P, BLOCK_H) * cdiv(Q, BLOCK_W) * cdiv(COLS, BLOCK_N), groups, phases * SPLIT_K).
    SPLIT_K == 1 ends in the shared epilogue, else the fp32 partial goes to part[split, pixel, column].
    """
    BLOCK_H: tl.constexpr = BLOCK_M // BLOCK_W
    group = tl.program_id(1)
    split = tl.program_id(2) % SPLIT_K
    tiles_h = tl.cdiv(P, BLOCK_H)
    tiles_w = tl.cdiv(Q, BLOCK_W)
    pid_m, pid_n = grouped_tile(tl.program_id(0), N * tiles_h * tiles_w, tl.cdiv(COLS, BLOCK_N), GROUP_M)
    n = pid_m // (tiles_h * tiles_w)
    p0 = (pid_m // tiles_w) % tiles_h * BLOCK_H
    q0 = pid_m % tiles_w * BLOCK_W
    n0 = pid_n * BLOCK_N
    if DGRAD:
        # The phase's first input row / column, first taps and tap counts (exact divisions, once).
        phase_h, phase_w, h_first, w_first = stride_phase(tl.program_id(2) // SPLIT_K, stride_h, stride_w,
                                                          pad_h, pad_w)
        r0 = first_tap(phase_h, R, dil_h, stride_h)
        s0 = first_tap(phase_w, S, dil_w, stride_w)
        taps_h = tl.maximum(tl.cdiv(R - r0, tap_step_h), 0)
        taps_w = tl.maximum(tl.cdiv(S - s0, tap_step_w), 0)
        h0 = p0 + (h_first + pad_h - r0 * dil_h) // stride_h
        w0 = q0 + (w_first + pad_w - s0 * dil_w) // stride_w
        step_h = -row_step_h
        step_w = -row_step_w
    else:
        h_first = 0
        w_first = 0
        r0 = 0
        s0 = 0
        taps_h = R
        taps_w = S
        h0 = p0 + off_h
        w0 = q0 + off_w
        step_h = dil_h
        step_w = dil_w

    c_blocks = tl.cdiv(REDUCTION, BLOCK_K)
    first, last = split_range(taps_h * taps_w * c_blocks, split, SPLIT_K)
    tap = first // c_blocks
    c0 = (first % c_blocks) * BLOCK_K
    ii = tap // tl.maximum(taps_w, 1)
    jj = tap % tl.maximum(taps_w, 1)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for _ in range(first, last):
        if PHASES == 1:
            a = a_desc.load([n, h0 + ii * step_h, w0 + jj * step_w, group, c0])
        else:
            t_h = ii * dil_h + off_h
            t_w = jj * dil_w + off_w
            a = a_desc.load([n, p0 + t_h // PHASES + row_h, t_h % PHASES, q0 + t_w // PHASES + row_w,
                             (t_w % PHASES) * REDUCTION + c0])
        a = a.reshape(BLOCK_M, BLOCK_K)
        if DGRAD:
            b = w_desc.load([group, c0, (r0 + ii * tap_step_h) * S + s0 + jj * tap_step_w, n0])
            b = b.reshape(BLOCK_K, BLOCK_N)
        else:
            b = w_desc.load([group, n0, ii * S + jj, c0]).reshape(BLOCK_N, BLOCK_K).T
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
        c0, jj = carry(c0 + BLOCK_K, REDUCTION, jj)
        jj, ii = carry(jj, taps_w, ii)

    offs_m = tl.arange(0, BLOCK_M)
    p = p0 + offs_m // BLOCK_W
    q = q0 + offs_m % BLOCK_W
    if DGRAD:
        p = h_first + p * stride_h
        q = w_first + q * stride_w
    offs_n = n0 + tl.arange(0, BLOCK_N)
    mask_m = (p < OUT_H) & (q < OUT_W)
    mask_n = offs_n < COLS
    cols = group * COLS + offs_n
    if SPLIT_K == 1:
        store_conv_tile(acc, n, p, q, cols, mask_m, mask_n, (out_ptr, so_n, so_k, so_p, so_q),
                        (bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q,
                         HAS_BIAS, HAS_SCALE, HAS_RESIDUAL, ACTIVATION))
    else:
        splitk_store_partial(acc, part_ptr, split, (n * OUT_H + p) * OUT_W + q, cols, mask_m, mask_n,
                             N * OUT_H * OUT_W, COLS * tl.num_programs(1))


def _boxes(dgrad: bool, phases: int = 1) -> tma.BoxSpec:
    """The descriptor boxes, in the config's meta-parameters (BLOCK_H = BLOCK_M / BLOCK_W)."""
    return {"a_desc": (1, "BLOCK_H", 1, "BLOCK_W", "BLOCK_K") if phases > 1 else (1, "BLOCK_H", "BLOCK_W", 1, "BLOCK_K"),
            "w_desc": (1, "BLOCK_K", 1, "BLOCK_N") if dgrad else (1, "BLOCK_N", 1, "BLOCK_K")}


def _meta(cfg_kwargs: dict) -> dict:
    return dict(cfg_kwargs, BLOCK_H=cfg_kwargs["BLOCK_M"] // cfg_kwargs["BLOCK_W"])


def _set_boxes(nargs: dict) -> None:
    """Every config's pre_hook: this launch's boxes at this config's tile."""
    tma.set_blocks(nargs, _boxes(nargs["DGRAD"], nargs["PHASES"]), _meta(nargs))


def block_w(bm: int, p: int, q: int) -> int:
    """The tile's width in pixels (a power of two, BLOCK_M / it <= 256): the one that wastes the fewest
    rows on a P x Q output (the widest among equals)."""
    choices = [w for w in (64, 32, 16, 8, 4, 2, 1) if w <= bm and bm // w <= 256]
    return min(choices, key=lambda w: (triton.cdiv(q, w) * w * triton.cdiv(p, bm // w) * (bm // w), -w))


def _with_block_w(configs, p: int, q: int):
    return [triton.Config(dict(c.kwargs, BLOCK_W=block_w(c.kwargs["BLOCK_M"], p, q)), num_warps=c.num_warps,
                          num_stages=c.num_stages, pre_hook=_set_boxes) for c in configs]


CONV_TMA = TunedKernel(
    _conv_tma_kernel,
    configs=_with_block_w(gemm_plan.static_menu(flattened=True), 56, 56),
    key=["N", "P", "Q", "OUT_H", "OUT_W", "COLS", "REDUCTION", "off_h", "off_w", "dil_h", "dil_w", "stride_h",
         "stride_w", "pad_h", "pad_w", "R", "S", "DGRAD", "PHASES",
         "HAS_BIAS", "HAS_SCALE", "HAS_RESIDUAL", "ACTIVATION", "ACC_DTYPE", "DOT_PRECISION"],
    interpreter_config=_with_block_w([gemm_plan.INTERPRETER_CONFIG], 4, 4)[0],
    tile_operands=gemm_plan.TILE_OPERANDS,
)


def _views(t, groups: int):
    """The 5-D [N, H, W, G, C/G] shape and strides of an NHWC activation (channel stride 1)."""
    n, c, h, w = t.shape
    cg = c // groups
    return (n, h, w, groups, cg), (t.stride(0), t.stride(2), t.stride(3), cg, 1)


def _phase_view(t, stride: int):
    """The 5-D [N, H/stride, stride, W/stride, stride*C] shape and strides of an NHWC activation whose
    rows hold their pixels' channels back to back (W stride C): a strided tap's pixels are then a box."""
    n, c, h, w = t.shape
    return ((n, h // stride, stride, w // stride, stride * c),
            (t.stride(0), stride * t.stride(2), t.stride(2), stride * t.stride(3), 1))


def _phases(params: ConvParams, t) -> int:
    """The stride the phase view serves (2: ResNet's strided 3x3 and 1x1), or 1 (stride 1, or a shape
    the view does not fit: groups, odd sizes, pixels not back to back)."""
    sh, sw = params.stride
    if (sh, sw) != (2, 2) or params.groups != 1 or params.h % 2 or params.w % 2 or params.w > 1 and t.stride(3) != params.c:
        return 1
    return 2


def _activation_view(t, params: ConvParams, phases: int):
    return _phase_view(t, phases) if phases > 1 else _views(t, params.groups)


def _phase_offsets(pad: int, phases: int):
    """(off, row): t = r*dil + off >= 0 for every tap, and row = -(padding rounded up to the stride) / stride."""
    rounded = -(-pad // phases) * phases
    return rounded - pad, -rounded // phases


def _geometry(params: ConvParams, phases: int):
    """((off_h, row_h), (off_w, row_w)) of a forward or wgrad: the tap offset and row offset."""
    if phases > 1:
        return _phase_offsets(params.pad_top, phases), _phase_offsets(params.pad_left, phases)
    return (-params.pad_top, 0), (-params.pad_left, 0)


def _weight_view(w, groups: int):
    """The 4-D [G, K/G, R*S, C/G] shape and strides of a (K, R, S, C/G)-ordered weight."""
    k, cg, r, s = w.shape
    return (groups, k // groups, r * s, cg), (k // groups * w.stride(0), w.stride(0), cg, 1)


def _problem(rows: int, cols: int, reduction: int, taps: int, groups: int, element_bytes: int):
    return gemm_plan.GemmProblem(m=rows, n=cols, reduction_block=reduction, outer_blocks=taps, programs=groups,
                                 element_bytes=element_bytes, flattened=True)


def _candidates(problem, p: int, q: int):
    return _with_block_w(gemm_plan.plan(problem), p, q)


def _unsupported(params: ConvParams, activation, w, others, problem, p, q, dgrad, phases=1) -> Optional[str]:
    if not tma.available():
        return "no tensor descriptors on this target (sm_90 and Triton >= 3.4 needed)"
    if params.spatial_dims != 2:
        return "TMA R x S serves 2-D convolutions"
    if not dgrad and phases == 1 and (params.stride != (1, 1) or params.r * params.s == 1):
        return ("TMA R x S needs stride 1 and more than one tap (1x1: pointwise_tma), or stride 2 with groups 1, "
                "even sizes and the channels of a row's pixels back to back (the phase view)")
    if dgrad and params.stride == (1, 1) and params.r * params.s == 1:
        return "a stride-1 1x1 dgrad is pointwise_tma's"
    if phases > 1 and any(params.c % cfg.kwargs["BLOCK_K"] for cfg in _candidates(problem, p, q)):
        return "the phase view needs channel blocks dividing C (a box must not cross into the next phase)"
    if needs_int64(activation, w, *others):
        return "offsets past 2^30 elements (TMA coordinates and the epilogue's offsets are 32-bit here)"
    if w.stride(1) != 1 or (params.s > 1 and w.stride(3) != params.c_per_group) or (
            params.r > 1 and w.stride(2) != params.s * params.c_per_group):
        return "the weight's taps are not (R, S, C) ordered"
    element_bytes = activation.element_size()
    return (tma.descriptor_unsupported(activation, *_activation_view(activation, params, phases))
            or tma.descriptor_unsupported(w, *_weight_view(w, params.groups))
            or next((why for cfg in _candidates(problem, p, q) for why in [
                tma.box_unsupported(tma.box(spec, _meta(cfg.kwargs)), element_bytes)
                for spec in _boxes(dgrad, phases).values()] if why), None))


def _forward_problem(params: ConvParams, x):
    return _problem(params.n * params.p * params.q, params.k_per_group, params.c_per_group, params.r * params.s,
                    params.groups, x.element_size())


def forward_unsupported(params: ConvParams, x, w, out, residual=None) -> Optional[str]:
    """Why the TMA R x S forward cannot serve this call (x NHWC, w (K, R, S, C), ``out`` channels_last)."""
    return _unsupported(params, x, w, (out, residual), _forward_problem(params, x), params.p, params.q, False,
                        _phases(params, x))


def _dgrad_phases(params: ConvParams):
    """(rows, columns of one stride phase; (tap step, dy row step) per dimension)."""
    (sh, sw), (dh, dw) = params.stride, params.dilation
    return triton.cdiv(params.h, sh), triton.cdiv(params.w, sw), tap_steps(sh, dh), tap_steps(sw, dw)


def _dgrad_problem(params: ConvParams, dy):
    rows, cols, (tap_h, _), (tap_w, _) = _dgrad_phases(params)
    taps = triton.cdiv(params.r, tap_h) * triton.cdiv(params.s, tap_w)
    return _problem(params.n * rows * cols, params.c_per_group, params.k_per_group, taps,
                    params.groups * params.stride[0] * params.stride[1], dy.element_size())


def grad_input_unsupported(params: ConvParams, dy, w, dx) -> Optional[str]:
    """Why the TMA dgrad cannot serve this call (dy NHWC, w (K, R, S, C), ``dx`` channels_last), or None."""
    rows, cols, _, _ = _dgrad_phases(params)
    return _unsupported(params, dy, w, (dx,), _dgrad_problem(params, dy), rows, cols, True)


def _launch(problem, p, q, a, b, out, part, sizes, geometry, epilogue, dgrad, params: ConvParams, dtype,
            phases=1):
    candidates = _candidates(problem, p, q)
    tma.set_blocks({"a_desc": a, "w_desc": b}, _boxes(dgrad, phases), _meta(candidates[0].kwargs))
    n = sizes[0]
    stride_phases = params.stride[0] * params.stride[1] if dgrad else 1
    grid = lambda meta: (n * triton.cdiv(p, meta["BLOCK_M"] // meta["BLOCK_W"]) * triton.cdiv(q, meta["BLOCK_W"])
                         * triton.cdiv(problem.n, meta["BLOCK_N"]), params.groups, stride_phases * meta["SPLIT_K"])
    return CONV_TMA.launch(
        grid, candidates,
        a, b, out, part,
        *sizes, *folded_strides(out), *geometry, *epilogue.args, **epilogue.flags,
        R=params.r, S=params.s, DGRAD=dgrad, PHASES=phases,
        ACC_DTYPE=acc_dtype(dtype), DOT_PRECISION=dot_precision(dtype),
    )


def forward(x, w, out, bias, params: ConvParams, *, scale=None, shift=None, residual=None, activation=0):
    """out = epilogue(conv(x, w)) into the channels_last buffer ``out`` (``forward_unsupported`` holds)."""
    problem = _forward_problem(params, x)
    splits = gemm_plan.largest_split(gemm_plan.plan(problem))
    part = new_partials(splits, params.n * params.p * params.q, params.k, params.dtype, x.device) if splits > 1 else out
    epilogue = epilogue_arguments(out, bias, scale, shift, residual, activation)
    phases = _phases(params, x)
    a = tma.descriptor(x, *_activation_view(x, params, phases))
    b = tma.descriptor(w, *_weight_view(w, params.groups))
    (off_h, row_h), (off_w, row_w) = _geometry(params, phases)
    chosen = _launch(problem, params.p, params.q, a, b, out, part,
                     (params.n, params.p, params.q, params.p, params.q, params.k_per_group, params.c_per_group),
                     (off_h, off_w, row_h, row_w, *params.dilation, 1, 1, 0, 0, 1, 1, 0, 0),
                     epilogue, False, params, params.dtype, phases)
    reduce_if_split(chosen, part, out, (params.p, params.q), folded_strides(out), bias=bias, scale=scale, shift=shift,
                    residual=residual, activation=activation)
    return out


def grad_input(dy, w, dx, params: ConvParams):
    """dx into the channels_last buffer ``dx``, one stride phase per grid slice (``grad_input_unsupported``
    holds)."""
    problem = _dgrad_problem(params, dy)
    rows, cols, (tap_h, row_h), (tap_w, row_w) = _dgrad_phases(params)
    splits = gemm_plan.largest_split(gemm_plan.plan(problem))
    part = new_partials(splits, params.n * params.h * params.w, params.c, dy.dtype, dy.device) if splits > 1 else dx
    a = tma.descriptor(dy, *_views(dy, params.groups))
    b = tma.descriptor(w, *_weight_view(w, params.groups))
    chosen = _launch(problem, rows, cols, a, b, dx, part,
                     (params.n, rows, cols, params.h, params.w, params.c_per_group, params.k_per_group),
                     (0, 0, 0, 0, *params.dilation, *params.stride, params.pad_top, params.pad_left,
                      tap_h, tap_w, row_h, row_w),
                     epilogue_arguments(dx), True, params, dy.dtype)
    reduce_if_split(chosen, part, dx, (params.h, params.w), folded_strides(dx))
    return dx


@triton.jit
def _conv_tma_wgrad_kernel(
    # descriptors: grad_output [N, P, Q, G, K/G] and the input [N, H, W, G, C/G]; grad_weight, partials
    dy_desc, x_desc, dw_ptr, part_ptr,
    # sizes: images, the output's height and width, output / input channels of one group
    N, P, Q, K_PER_GROUP, C_PER_GROUP,
    # geometry: t = r*dil + off (>= 0 with PHASES > 1), its row offset (``_phase_offsets``), dilation
    off_h, off_w, row_h, row_w, dil_h, dil_w,
    # meta-parameters
    R: tl.constexpr, S: tl.constexpr, PHASES: tl.constexpr, ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_W: tl.constexpr,
    SPLIT_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Each program computes dw[BLOCK_M output channels x BLOCK_N input channels] of one group for one
    kernel tap (r, s), over its part of the N*P*Q pixels, walked as spatial blocks of BLOCK_K =
    BLOCK_H x BLOCK_W pixels of one image: per block, the dy box at (n, p0, q0) (transposed in shared
    memory) times the x box at (n, p0 + r*dil_h - pad_h, q0 + s*dil_w - pad_w), whose zero fill is
    the padding (and dy's past the output's edge, the block's tail).

    PHASES > 1 (stride PHASES, groups 1): x is the phase view [N, H/PHASES, PHASES, W/PHASES,
    PHASES*C] and the tap's box sits at (n, p0 + t_h // PHASES + row_h, t_h % PHASES, ...), fixed per
    program (columns past C in a box are other pixels' channels, never stored).

    Grid: (tiles of K_PER_GROUP x C_PER_GROUP, R*S*SPLIT_K, groups). dw is written (K, R, S,
    C_PER_GROUP)-contiguous (or, split, part[split, k, (r*S + s)*C_PER_GROUP + c]).
    """
    BLOCK_H: tl.constexpr = BLOCK_K // BLOCK_W
    tap = tl.program_id(1) // SPLIT_K
    split = tl.program_id(1) % SPLIT_K
    group = tl.program_id(2)
    r = tap // S
    s = tap % S
    pid_m, pid_n = grouped_tile(tl.program_id(0), tl.cdiv(K_PER_GROUP, BLOCK_M), tl.cdiv(C_PER_GROUP, BLOCK_N), GROUP_M)
    k0 = pid_m * BLOCK_M
    c0 = pid_n * BLOCK_N
    t_h = r * dil_h + off_h
    t_w = s * dil_w + off_w
    if PHASES > 1:
        h_tap = t_h // PHASES + row_h
        w_tap = t_w // PHASES + row_w
        channel = (t_w % PHASES) * C_PER_GROUP + c0
    else:
        h_tap = t_h
        w_tap = t_w

    tiles_h = tl.cdiv(P, BLOCK_H)
    tiles_w = tl.cdiv(Q, BLOCK_W)
    first, last = split_range(N * tiles_h * tiles_w, split, SPLIT_K)
    n = first // (tiles_h * tiles_w)
    th = (first // tiles_w) % tiles_h
    tw = first % tiles_w
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for _ in range(first, last):
        p0 = th * BLOCK_H
        q0 = tw * BLOCK_W
        a = dy_desc.load([n, p0, q0, group, k0]).reshape(BLOCK_K, BLOCK_M).T
        if PHASES > 1:
            b = x_desc.load([n, p0 + h_tap, t_h % PHASES, q0 + w_tap, channel]).reshape(BLOCK_K, BLOCK_N)
        else:
            b = x_desc.load([n, p0 + h_tap, q0 + w_tap, group, c0]).reshape(BLOCK_K, BLOCK_N)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
        tw, th = carry(tw + 1, tiles_w, th)
        th, n = carry(th, tiles_h, n)

    offs_m = k0 + tl.arange(0, BLOCK_M)
    offs_n = c0 + tl.arange(0, BLOCK_N)
    mask_m = offs_m < K_PER_GROUP
    mask_n = offs_n < C_PER_GROUP
    k = group * K_PER_GROUP + offs_m
    cols = tap * C_PER_GROUP + offs_n
    if SPLIT_K == 1:
        tl.store(dw_ptr + k[:, None] * (R * S * C_PER_GROUP) + cols[None, :], acc.to(dw_ptr.dtype.element_ty),
                 mask=mask_m[:, None] & mask_n[None, :])
    else:
        splitk_store_partial(acc, part_ptr, split, k, cols, mask_m, mask_n, K_PER_GROUP * tl.num_programs(2),
                             R * S * C_PER_GROUP)


def _wgrad_boxes(phases: int) -> tma.BoxSpec:
    return {"dy_desc": (1, "BLOCK_H", "BLOCK_W", 1, "BLOCK_M"),
            "x_desc": (1, "BLOCK_H", 1, "BLOCK_W", "BLOCK_N") if phases > 1 else (1, "BLOCK_H", "BLOCK_W", 1, "BLOCK_N")}


def _wgrad_meta(cfg_kwargs: dict) -> dict:
    return dict(cfg_kwargs, BLOCK_H=cfg_kwargs["BLOCK_K"] // cfg_kwargs["BLOCK_W"])


def _set_wgrad_boxes(nargs: dict) -> None:
    tma.set_blocks(nargs, _wgrad_boxes(nargs["PHASES"]), _wgrad_meta(nargs))


def _wgrad_with_block_w(configs, p: int, q: int):
    return [triton.Config(dict(c.kwargs, BLOCK_W=block_w(c.kwargs["BLOCK_K"], p, q)), num_warps=c.num_warps,
                          num_stages=c.num_stages, pre_hook=_set_wgrad_boxes) for c in configs]


# The loop walks pixel blocks only (no tap decoding), as the cp.async wgrad: 8-warp tiles allowed.
CONV_TMA_WGRAD = TunedKernel(
    _conv_tma_wgrad_kernel,
    configs=_wgrad_with_block_w(gemm_plan.static_menu(flattened=False), 56, 56),
    key=["N", "P", "Q", "K_PER_GROUP", "C_PER_GROUP", "off_h", "off_w", "dil_h", "dil_w", "R", "S", "PHASES", "ACC_DTYPE",
         "DOT_PRECISION"],
    interpreter_config=_wgrad_with_block_w([gemm_plan.INTERPRETER_CONFIG], 4, 4)[0],
    tile_operands=gemm_plan.TILE_OPERANDS,
)


def _wgrad_problem(params: ConvParams, dy):
    return gemm_plan.GemmProblem(m=params.k_per_group, n=params.c_per_group, reduction_block=params.n * params.p * params.q,
                                 outer_blocks=1, programs=params.groups * params.r * params.s,
                                 element_bytes=dy.element_size(), flattened=False)


def grad_weight_unsupported(params: ConvParams, dy, x, dw) -> Optional[str]:
    """Why the TMA stride-1 wgrad cannot serve this call (dy and x NHWC, ``dw`` channels_last), or None."""
    if not tma.available():
        return "no tensor descriptors on this target (sm_90 and Triton >= 3.4 needed)"
    phases = _phases(params, x)
    if params.spatial_dims != 2 or (phases == 1 and (params.stride != (1, 1) or params.r * params.s == 1)):
        return ("TMA R x S wgrad needs a 2-D convolution of stride 1 with more than one tap (1x1: pointwise_tma), "
                "or stride 2 where the phase view fits")
    if needs_int64(dy, x, dw):
        return "offsets past 2^30 elements (TMA coordinates and the kernel's offsets are 32-bit here)"
    candidates = _wgrad_with_block_w(gemm_plan.plan(_wgrad_problem(params, dy)), params.p, params.q)
    return (tma.descriptor_unsupported(dy, *_views(dy, params.groups))
            or tma.descriptor_unsupported(x, *_activation_view(x, params, phases))
            or next((why for cfg in candidates for why in [
                tma.box_unsupported(tma.box(spec, _wgrad_meta(cfg.kwargs)), dy.element_size())
                for spec in _wgrad_boxes(phases).values()] if why), None))


def grad_weight(dy, x, dw, params: ConvParams):
    """dw of a stride-1 convolution into the channels_last buffer ``dw`` (``grad_weight_unsupported`` holds)."""
    problem = _wgrad_problem(params, dy)
    candidates = _wgrad_with_block_w(gemm_plan.plan(problem), params.p, params.q)
    splits = gemm_plan.largest_split(candidates)
    taps = params.r * params.s
    cols = taps * params.c_per_group
    part = new_partials(splits, params.k, cols, dy.dtype, dy.device) if splits > 1 else dw
    a = tma.descriptor(dy, *_views(dy, params.groups))
    phases = _phases(params, x)
    b = tma.descriptor(x, *_activation_view(x, params, phases))
    tma.set_blocks({"dy_desc": a, "x_desc": b}, _wgrad_boxes(phases), _wgrad_meta(candidates[0].kwargs))
    (off_h, row_h), (off_w, row_w) = _geometry(params, phases)
    grid = lambda meta: (triton.cdiv(params.k_per_group, meta["BLOCK_M"]) * triton.cdiv(params.c_per_group, meta["BLOCK_N"]),
                         taps * meta["SPLIT_K"], params.groups)
    chosen = CONV_TMA_WGRAD.launch(
        grid, candidates,
        a, b, dw, part,
        params.n, params.p, params.q, params.k_per_group, params.c_per_group,
        off_h, off_w, row_h, row_w, *params.dilation,
        R=params.r, S=params.s, PHASES=phases, ACC_DTYPE=acc_dtype(dy.dtype), DOT_PRECISION=dot_precision(dy.dtype),
    )
    reduce_if_split(chosen, part, dw, (1, 1), (cols, 1, 0, 0))
    return dw
