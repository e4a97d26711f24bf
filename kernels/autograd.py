"""The torch.library custom ops behind ``kernels.conv2d`` and their autograd.

``convkernels::conv2d`` carries already-validated, normalised arguments (4-D input, padding
as (top, bottom, left, right)); its fake implementation reproduces the real output's shape
and strides, so ``torch.compile(fullgraph=True)`` traces through it. The backward runs the
``conv2d_grad_input`` / ``conv2d_grad_weight`` / ``conv2d_grad_bias`` ops, themselves custom
ops with fake implementations, so compiled training graphs keep our Triton kernels too.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from .dispatch import resolve
from .ops import backward
from .params import ConvParams, output_channels_last

_LIB = "convkernels"


def _params(input_shape, weight_shape, stride, padding, dilation, groups, dtype, channels_last=False, has_bias=False):
    return ConvParams.from_shapes(
        input_shape, weight_shape, stride, dilation=dilation, groups=groups, pads=padding,
        dtype=dtype, channels_last=channels_last, has_bias=has_bias,
    )


def _empty_like_layout(shape, like: torch.Tensor, channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)


@torch.library.custom_op(f"{_LIB}::conv2d", mutates_args=())
def conv2d_op(
    input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
    stride: List[int], padding: List[int], dilation: List[int], groups: int, algorithm: str,
) -> torch.Tensor:
    params = _params(input.shape, weight.shape, stride, padding, dilation, groups, input.dtype,
                     output_channels_last(input, weight), bias is not None)
    return resolve(algorithm, params).forward(input, weight, bias, params)


@conv2d_op.register_fake
def _(input, weight, bias, stride, padding, dilation, groups, algorithm):
    params = _params(input.shape, weight.shape, stride, padding, dilation, groups, input.dtype)
    return _empty_like_layout(params.output_shape, input, output_channels_last(input, weight))


@torch.library.custom_op(f"{_LIB}::conv2d_fused", mutates_args=())
def conv2d_fused_op(
    input: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
    residual: Optional[torch.Tensor], stride: List[int], padding: List[int], dilation: List[int],
    groups: int, activation: int, algorithm: str,
) -> torch.Tensor:
    """Inference only: act(conv(input, weight) * scale + shift + residual) in one launch."""
    params = _params(input.shape, weight.shape, stride, padding, dilation, groups, input.dtype,
                     output_channels_last(input, weight))
    return resolve(algorithm, params).forward(
        input, weight, None, params, scale=scale, shift=shift, residual=residual, activation=activation)


@conv2d_fused_op.register_fake
def _(input, weight, scale, shift, residual, stride, padding, dilation, groups, activation, algorithm):
    params = _params(input.shape, weight.shape, stride, padding, dilation, groups, input.dtype)
    return _empty_like_layout(params.output_shape, input, output_channels_last(input, weight))


@torch.library.custom_op(f"{_LIB}::conv2d_grad_input", mutates_args=())
def conv2d_grad_input_op(
    grad_output: torch.Tensor, weight: torch.Tensor, input_shape: List[int], channels_last: bool,
    stride: List[int], padding: List[int], dilation: List[int], groups: int, algorithm: str,
) -> torch.Tensor:
    params = _params(input_shape, weight.shape, stride, padding, dilation, groups, grad_output.dtype)
    entry = resolve(algorithm, params)
    launch = entry.grad_input or backward.grad_input
    return launch(grad_output, weight, params, channels_last)


@conv2d_grad_input_op.register_fake
def _(grad_output, weight, input_shape, channels_last, stride, padding, dilation, groups, algorithm):
    return _empty_like_layout(tuple(input_shape), grad_output, channels_last)


@torch.library.custom_op(f"{_LIB}::conv2d_grad_weight", mutates_args=())
def conv2d_grad_weight_op(
    grad_output: torch.Tensor, input: torch.Tensor, weight_shape: List[int], channels_last: bool,
    stride: List[int], padding: List[int], dilation: List[int], groups: int, algorithm: str,
) -> torch.Tensor:
    params = _params(input.shape, weight_shape, stride, padding, dilation, groups, grad_output.dtype)
    entry = resolve(algorithm, params)
    launch = entry.grad_weight or backward.grad_weight
    return launch(grad_output, input, params, channels_last)


@conv2d_grad_weight_op.register_fake
def _(grad_output, input, weight_shape, channels_last, stride, padding, dilation, groups, algorithm):
    return _empty_like_layout(tuple(weight_shape), grad_output, channels_last)


@torch.library.custom_op(f"{_LIB}::conv2d_grad_bias", mutates_args=())
def conv2d_grad_bias_op(grad_output: torch.Tensor) -> torch.Tensor:
    n, k, p, q = grad_output.shape
    params = ConvParams.from_shapes((n, k, p, q), (k, 1, 1, 1), groups=k, dtype=grad_output.dtype)
    return backward.grad_bias(grad_output, params)


@conv2d_grad_bias_op.register_fake
def _(grad_output):
    return grad_output.new_empty((grad_output.shape[1],))


def _setup_context(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups, algorithm = inputs
    ctx.save_for_backward(input, weight)
    ctx.args = (list(stride), list(padding), list(dilation), groups, algorithm)
    ctx.has_bias = bias is not None


def _is_channels_last(t: torch.Tensor) -> bool:
    from torch._prims_common import suggest_memory_format
    return suggest_memory_format(t) == torch.channels_last


def _backward(ctx, grad_output):
    input, weight = ctx.saved_tensors
    stride, padding, dilation, groups, algorithm = ctx.args
    grad_input = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_input = conv2d_grad_input_op(
            grad_output, weight, list(input.shape), _is_channels_last(input),
            stride, padding, dilation, groups, algorithm)
    if ctx.needs_input_grad[1]:
        grad_weight = conv2d_grad_weight_op(
            grad_output, input, list(weight.shape), _is_channels_last(weight),
            stride, padding, dilation, groups, algorithm)
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_bias = conv2d_grad_bias_op(grad_output)
    return grad_input, grad_weight, grad_bias, None, None, None, None, None


conv2d_op.register_autograd(_backward, setup_context=_setup_context)


class Conv2dFunction(torch.autograd.Function):
    """``Conv2dFunction.apply(input, weight, bias, stride, padding, dilation, groups, algorithm)``.

    The autograd Function form of the same computation, for code that composes Functions;
    arguments are validated and normalised exactly as in ``kernels.conv2d``.
    """

    @staticmethod
    def forward(ctx, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, algorithm="auto"):
        params = ConvParams.from_tensors(input, weight, bias, stride, padding, dilation, groups)
        batched = input if input.dim() == 4 else input.unsqueeze(0)
        args = (list(params.stride), list(params.padding), list(params.dilation), params.groups, algorithm)
        ctx.save_for_backward(batched, weight)
        ctx.args = args
        ctx.has_bias = bias is not None
        ctx.unbatched = params.unbatched
        with torch.no_grad():
            out = conv2d_op(batched, weight, bias, *args)
        return out.squeeze(0) if params.unbatched else out

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.unbatched:
            grad_output = grad_output.unsqueeze(0)
        grads = _backward(ctx, grad_output)
        grad_input = grads[0]
        if grad_input is not None and ctx.unbatched:
            grad_input = grad_input.squeeze(0)
        return (grad_input,) + tuple(grads[1:])
