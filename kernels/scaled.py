"""Low-precision inference convolution: ``kernels.conv2d_scaled`` (float8 e4m3 or int8 operands).

    conv2d_scaled(input, weight, input_scale, weight_scale, bias)
        = the float convolution of (input * input_scale) by (weight * weight_scale[k]) for each
          output channel k, plus bias

with the products summed in fp32 (float8) or int32 (int8: exact), cast to ``out_dtype``. It runs on
the implicit-GEMM forward kernel (``ops/gemm/forward.py``: the im2col kernel, whose 1x1 form is
``pointwise``) for every shape, stride, padding, dilation and groups value ``F.conv2d`` takes:
the 8-bit tiles go to ``tl.dot`` as loaded (e4m3 / s8 wgmma on sm_90). Grouped and depthwise
convolutions run there too (groups are a grid axis; a depthwise group is a 1 x 1 channel GEMM,
padded to the 16-wide dot: correct, but wasteful on a GPU), and so does a C=3 stem (its 3 channels
padded to the dot's BLOCK_K). The depthwise and stem kernels of the float path are not used.

The dequantization is a per-output-channel fp32 scale, ``input_scale * weight_scale[k]`` (times the
folded BatchNorm's scale), applied by the shared epilogue to the fp32 conversion of each sum,
followed by the shift (bias, BN), residual and activation of ``conv2d_bn``. ``output_scale``
stores ``result / output_scale`` quantized (saturating, round to nearest even) as fp8 or int8, the
input of the next quantized layer.

Argument rules after ``torch._scaled_mm``: both operands float8_e4m3fn or both int8; scales are
float32 tensors, the input's one element (per tensor), the weight's one element or one per output
channel (contiguous); anything else raises RuntimeError naming the argument. Nothing is computed
in another precision than the one asked for. Inference only (no backward).
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from .core.checks import check_device, check_inference
from .core.layout import output_channels_last
from .core.params import ConvParams, IntOrPair
from .fused import _bn_vector, _check_residual, bn_scale_shift, cached_scale_shift
from .ops.epilogue import activation_code
from .ops.gemm.forward import im2col_forward

OP = "conv2d_scaled"
OPERAND_DTYPES = (torch.float8_e4m3fn, torch.int8)
OUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
FLOAT_RESIDUALS = (torch.float16, torch.bfloat16, torch.float32)
# What ``algorithm=`` may name: the implicit GEMM (its 1x1 form is "pointwise").
ALGORITHMS = ("auto", "im2col", "pointwise")


def _scale(t, name: str, sizes) -> torch.Tensor:
    """A float32 scale with one element, or (for the weight) one per output channel."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{OP}: {name} must be a float32 Tensor, got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise RuntimeError(f"{OP}: {name} must be a float (fp32) tensor, got {name}.dtype={t.dtype}")
    if t.numel() == 1:
        return t.reshape(1)
    if len(sizes) > 1 and t.dim() == 1 and t.numel() == sizes[1]:
        if not t.is_contiguous():
            raise RuntimeError(f"{OP}: {name} must be contiguous for per-channel scaling")
        return t
    allowed = "one element" + (f" or ({sizes[1]},), one per output channel" if len(sizes) > 1 else " (per tensor)")
    raise RuntimeError(f"{OP}: {name} must have {allowed}, got {name} of size {list(t.shape)}")


def _check_operands(input, weight) -> None:
    for name, t in (("input", input), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{OP}: {name} must be a Tensor, got {type(t).__name__}")
        if t.dtype not in OPERAND_DTYPES:
            raise RuntimeError(
                f"{OP}: expected {name} to be torch.float8_e4m3fn or torch.int8 (quantized), got {t.dtype}; "
                f"quantize it first (or use kernels.conv2d for floating-point operands)"
            )
    if input.dtype != weight.dtype:
        raise RuntimeError(
            f"{OP}: input type ({input.dtype}) and weight type ({weight.dtype}) should be the same "
            f"(both float8_e4m3fn or both int8)"
        )


def _check_out_dtype(out_dtype, output_scale) -> None:
    if not isinstance(out_dtype, torch.dtype):
        raise TypeError(f"{OP}: out_dtype must be a torch.dtype, got {type(out_dtype).__name__}")
    if output_scale is None and out_dtype not in OUT_DTYPES:
        raise RuntimeError(
            f"{OP}: out_dtype must be one of {[str(d) for d in OUT_DTYPES]} without output_scale, got {out_dtype}"
            + (" (a quantized output needs output_scale)" if out_dtype in OPERAND_DTYPES else "")
        )
    if output_scale is not None and out_dtype not in OPERAND_DTYPES:
        raise RuntimeError(
            f"{OP}: output_scale writes a quantized output: out_dtype must be torch.float8_e4m3fn or torch.int8, "
            f"got {out_dtype}"
        )


def conv2d_scaled(
    input: torch.Tensor,
    weight: torch.Tensor,
    input_scale: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntOrPair = 1,
    padding: Union[IntOrPair, str] = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    *,
    out_dtype: torch.dtype = torch.bfloat16,
    algorithm: str = "auto",
    running_mean: Optional[torch.Tensor] = None,
    running_var: Optional[torch.Tensor] = None,
    bn_weight: Optional[torch.Tensor] = None,
    bn_bias: Optional[torch.Tensor] = None,
    eps: float = 1e-5,
    residual: Optional[torch.Tensor] = None,
    activation: Optional[str] = None,
    output_scale: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``act(bn(conv2d(input * input_scale, weight * weight_scale, bias)) + residual)`` from 8-bit
    operands, in one implicit-GEMM launch.

    input (N, C, H, W) or (C, H, W) and weight (K, C/groups, R, S): both ``torch.float8_e4m3fn`` or
    both ``torch.int8``, any layout. input_scale: one-element float32; weight_scale: one element or
    (K,) float32. bias: None or (K,) float32 / ``out_dtype``. Sums in fp32 (float8) or int32
    (int8), dequantized in fp32, the output in ``out_dtype`` (float16, bfloat16, float32) with
    ``F.conv2d``'s shape and memory format.

    Fused, as ``kernels.conv2d_bn``: ``running_mean`` / ``running_var`` (with optional
    ``bn_weight`` / ``bn_bias`` and ``eps``) apply an inference BatchNorm; ``residual`` (a floating
    tensor of, or broadcasting to, the output's shape) is added after it; ``activation`` is one of
    None, "relu", "relu6", "silu", "hardswish", "hardsigmoid", "sigmoid". ``output_scale`` (one-element
    float32) stores ``result / output_scale`` as ``out_dtype`` = float8_e4m3fn (clamped to +-448) or
    int8 (clamped to [-128, 127]), rounded to nearest even.

    ``algorithm``: "auto", "im2col" or "pointwise" (1x1 only): the implicit GEMM either way.
    Inference only: raises when grad mode is on and an argument requires grad.
    """
    _check_operands(input, weight)
    code = activation_code(activation)
    _check_out_dtype(out_dtype, output_scale)
    if not isinstance(algorithm, str):
        raise TypeError(f"{OP}: algorithm must be a str, got {type(algorithm).__name__}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{OP}: algorithm={algorithm!r} does not run 8-bit operands; expected one of {list(ALGORITHMS)}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"{OP}: bias must be a Tensor or None, got {type(bias).__name__}")
        if bias.dtype not in (torch.float32, out_dtype):
            raise RuntimeError(f"{OP}: bias must be float32 or out_dtype ({out_dtype}), got bias.dtype={bias.dtype}")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps < 0:
        raise TypeError(f"{OP}: eps must be a non-negative float, got {eps!r}")

    batched_input = input if input.dim() != 3 else input.unsqueeze(0)
    params = ConvParams.from_shapes(
        input.shape, weight.shape, stride, padding, dilation, groups, dtype=input.dtype,
        bias_shape=None if bias is None else bias.shape,
        channels_last=input.dim() in (3, 4) and weight.dim() == 4 and output_channels_last(batched_input, weight),
        op=OP)
    if algorithm == "pointwise" and (params.r, params.s) != (1, 1):
        raise ValueError(f"{OP}: algorithm='pointwise' needs a 1x1 kernel, got {params.r}x{params.s}")
    x_scale = _scale(input_scale, "input_scale", (1,))
    w_scale = _scale(weight_scale, "weight_scale", (1, params.k))
    o_scale = None if output_scale is None else _scale(output_scale, "output_scale", (1,))
    has_bn = running_mean is not None or running_var is not None
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("bn_weight", bn_weight), ("bn_bias", bn_bias)):
        _bn_vector(t, name, params.k, required=has_bn and name.startswith("running"), op=OP)
    if not has_bn and (bn_weight is not None or bn_bias is not None):
        raise RuntimeError(f"{OP}: bn_weight / bn_bias need running_mean and running_var")
    if residual is not None:
        if not isinstance(residual, torch.Tensor):
            raise TypeError(f"{OP}: residual must be a Tensor or None, got {type(residual).__name__}")
        if residual.dtype not in FLOAT_RESIDUALS:
            raise RuntimeError(f"{OP}: residual must be float16, bfloat16 or float32, got {residual.dtype}")
    tensors = (("input", input), ("weight", weight), ("input_scale", input_scale), ("weight_scale", weight_scale),
               ("bias", bias), ("running_mean", running_mean), ("running_var", running_var),
               ("bn_weight", bn_weight), ("bn_bias", bn_bias), ("residual", residual), ("output_scale", output_scale))
    devices = {t.device for _, t in tensors if t is not None}
    if len(devices) > 1:
        raise RuntimeError(f"{OP}: all tensors must be on the same device, got {sorted(map(str, devices))}")
    check_inference(OP, tensors)
    check_device(input, weight)

    batched = input.unsqueeze(0) if params.unbatched else input
    if residual is not None:
        out_shape = params.output_shape[1:] if params.unbatched else params.output_shape
        residual = _check_residual(residual, out_shape, residual.dtype, input.device, OP)
        if params.unbatched:
            residual = residual.unsqueeze(0)
    with torch.no_grad():
        # One fp32 per-channel scale and shift: dequantization x BN scale, then (bias, BN) shift.
        dequant = (x_scale * w_scale).expand(params.k)
        if has_bn:
            fold = bn_scale_shift if torch.compiler.is_compiling() else cached_scale_shift
            bn_scale, shift = fold(None if bias is None else bias.float(), running_mean, running_var, bn_weight,
                                   bn_bias, eps, torch.float32)
            scale = dequant * bn_scale
        else:
            scale = dequant
            shift = torch.zeros(params.k, dtype=torch.float32, device=input.device) if bias is None else bias.float()
        out = im2col_forward(batched, weight, None, params, scale=scale.contiguous(), shift=shift.contiguous(),
                             residual=residual, activation=code, out_dtype=out_dtype, output_scale=o_scale)
    return out.squeeze(0) if params.unbatched else out
