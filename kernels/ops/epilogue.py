"""The one fused epilogue every forward kernel ends with.

A forward kernel computes a [BLOCK_M, BLOCK_N] tile of accumulators whose rows are output
pixels (n, p, q) and whose columns are output channels k. ``store_conv_tile`` applies, in
fp32 and in this order: bias, per-channel scale/shift (folded BatchNorm), residual add
(read in the residual's own strides), activation, cast to the output dtype, and the store
in the output's strides (so NCHW, channels_last or any layout costs the same code).

Optionally (``quant``, the low-precision forward's ``output_scale``) the finished fp32 value is
divided by a per-tensor scale and stored quantized, saturating: float8 e4m3 clamps to +-448 and
rounds to nearest even in the cast; int8 clamps to [-128, 127] and rounds to nearest even with the
1.5 * 2^23 trick (exact for |v| < 2^22; the clamp between the multiply and the add keeps ptxas
from contracting them into one FMA, so the GPU rounds as the interpreter does).
"""
from typing import Dict, NamedTuple, Tuple

import triton
import triton.language as tl

from .common import foldable, folded_strides

# Activation codes (tl.constexpr ints) shared with the Python side.
ACTIVATIONS = {
    None: 0,
    "relu": 1,
    "relu6": 2,
    "silu": 3,
    "hardswish": 4,
    "hardsigmoid": 5,
    "sigmoid": 6,
}


def activation_code(activation) -> int:
    try:
        return ACTIVATIONS[activation]
    except KeyError:
        raise ValueError(
            f"activation={activation!r} is not supported; expected one of {list(ACTIVATIONS)}"
        ) from None


@triton.jit
def apply_activation(v, ACTIVATION: tl.constexpr):
    """Elementwise activation on an fp32 tile; ACTIVATION is a code from ``ACTIVATIONS``."""
    if ACTIVATION == 1:
        v = tl.maximum(v, 0.0)
    elif ACTIVATION == 2:
        v = tl.minimum(tl.maximum(v, 0.0), 6.0)
    elif ACTIVATION == 3:
        v = v / (1.0 + tl.exp(-v))
    elif ACTIVATION == 4:
        v = v * tl.minimum(tl.maximum(v + 3.0, 0.0), 6.0) / 6.0
    elif ACTIVATION == 5:
        v = tl.minimum(tl.maximum(v + 3.0, 0.0), 6.0) / 6.0
    elif ACTIVATION == 6:
        v = 1.0 / (1.0 + tl.exp(-v))
    return v



@triton.jit
def quantize_tile(v, dtype: tl.constexpr):
    """fp32 tile -> ``dtype`` (float8e4nv or int8), saturating, round to nearest even."""
    if dtype == tl.int8:
        v = tl.minimum(tl.maximum(v, -128.0), 127.0)
        v = (v + 12582912.0) - 12582912.0
        return v.to(tl.int8)
    else:
        v = tl.minimum(tl.maximum(v, -448.0), 448.0)
        return v.to(dtype, fp_downcast_rounding="rtne")


@triton.jit
def store_conv_tile(acc, n, p, q, k, mask_m, mask_n, output, epilogue, quant=None):
    """Finish and store one output tile.

    acc: [BM, BN] accumulators; n, p, q: [BM] output pixel coordinates (int64 where the
    caller needs 64-bit offsets); k: [BN] absolute output channels; mask_m / mask_n: valid
    rows / columns. ``output`` = (out_ptr, so_n, so_k, so_p, so_q): the output and its strides;
    ``epilogue`` = (bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q, HAS_BIAS,
    HAS_SCALE, HAS_RESIDUAL, ACTIVATION): the operands a forward kernel receives from
    ``epilogue_arguments`` (the flags constexpr), grouped as every forward kernel passes them on.
    out = act((acc + bias) * scale + shift + residual). bias, scale and shift are contiguous
    per-channel vectors (``epilogue_arguments`` makes them so). ``quant`` = (oscale_ptr, QUANTIZE),
    given only by the low-precision forward: with QUANTIZE, ``out / oscale[0]`` is stored as the
    output's 8-bit type (``quantize_tile``); an integer ``acc`` (int8 operands' int32 sums) is
    converted to fp32 first.
    """
    out_ptr, so_n, so_k, so_p, so_q = output
    bias_ptr, scale_ptr, shift_ptr, res_ptr, sr_n, sr_k, sr_p, sr_q, HAS_BIAS, HAS_SCALE, HAS_RESIDUAL, ACTIVATION = \
        epilogue
    mask = mask_m[:, None] & mask_n[None, :]
    v = acc.to(tl.float32) if acc.dtype != tl.float64 else acc
    if HAS_BIAS:
        v += tl.load(bias_ptr + k, mask=mask_n, other=0.0).to(v.dtype)[None, :]
    if HAS_SCALE:
        scale = tl.load(scale_ptr + k, mask=mask_n, other=0.0).to(v.dtype)
        shift = tl.load(shift_ptr + k, mask=mask_n, other=0.0).to(v.dtype)
        v = v * scale[None, :] + shift[None, :]
    if HAS_RESIDUAL:
        res_rows = n * sr_n + p * sr_p + q * sr_q
        res = tl.load(res_ptr + res_rows[:, None] + k[None, :] * sr_k, mask=mask, other=0.0)
        v += res.to(v.dtype)
    v = apply_activation(v, ACTIVATION)
    out_rows = n * so_n + p * so_p + q * so_q
    out_ptrs = out_ptr + out_rows[:, None] + k[None, :] * so_k
    if quant is not None:
        # The stores stay inside the branches: a value changing type across an `if` does not compile.
        oscale_ptr, QUANTIZE = quant
        if QUANTIZE:
            tl.store(out_ptrs, quantize_tile(v / tl.load(oscale_ptr), out_ptr.dtype.element_ty), mask=mask)
        else:
            tl.store(out_ptrs, v.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(out_ptrs, v.to(out_ptr.dtype.element_ty), mask=mask)


class EpilogueArguments(NamedTuple):
    """The launch-side arguments of ``store_conv_tile`` for one output tensor.

    Every forward kernel takes the epilogue as one group after its geometry: ``args`` (the
    pointers ``bias_ptr, scale_ptr, shift_ptr, res_ptr`` and the residual's four strides,
    positional) then ``flags`` (HAS_BIAS, HAS_SCALE, HAS_RESIDUAL, ACTIVATION, keywords). An absent
    operand is passed as the output itself, never read: its HAS_* flag is off.
    """

    args: Tuple
    flags: Dict[str, int]
    residual_or_out: "object"


def epilogue_arguments(out, bias=None, scale=None, shift=None, residual=None, activation=0) -> EpilogueArguments:
    """The per-channel vectors are made contiguous here (``store_conv_tile`` reads element k at
    ``ptr + k``): a strided or expanded (stride 0) bias reads the right values. The residual is
    read through its own strides (a 5-D one with its (N, D) folded: ``common.folded_strides``)."""
    if residual is not None and residual.dim() == 5:
        residual = foldable(residual)
    res = residual if residual is not None else out
    vectors = tuple(out if t is None else t.contiguous() for t in (bias, scale, shift))
    residual_strides = folded_strides(res) if residual is not None else (0, 0, 0, 0)
    return EpilogueArguments(
        args=vectors + (res,) + residual_strides,
        flags=dict(HAS_BIAS=bias is not None, HAS_SCALE=scale is not None,
                   HAS_RESIDUAL=residual is not None, ACTIVATION=activation),
        residual_or_out=res,
    )
