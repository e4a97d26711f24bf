"""The custom ops behind every convolution of ``kernels``, launching the Triton kernels.

``convkernels::conv2d``, ``conv2d_grad_input``, ``conv2d_grad_weight``, ``conv2d_grad_bias`` and
``conv2d_fused`` carry validated, normalised arguments (4-D input, padding as (top, bottom, left,
right)), are opaque to ``torch.compile`` (fake implementations reproduce the real output's
strides, so ``fullgraph=True`` traces through them), run on meta tensors without a launch, and
have vmap rules (``batching.py``). ``functions.py`` gives them their derivatives.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from ..core.layout import memory_format, op_output_channels_last, output_channels_last
from ..core.params import ConvParams
from ..dispatch import resolve
from ..ops.bias_grad import grad_bias
from .batching import register_vmap_rules

LIBRARY = "convkernels"


def op_params(input_shape, weight_shape, stride, padding, dilation, groups, dtype, channels_last=False,
              has_bias=False) -> ConvParams:
    """ConvParams from the ops' normalised arguments (padding: top, bottom, left, right, after front,
    back for a 3-D convolution, which a 5-D weight makes)."""
    return ConvParams.from_shapes(
        input_shape, weight_shape, stride, dilation=dilation, groups=groups, pads=padding,
        dtype=dtype, channels_last=channels_last, has_bias=has_bias, op="conv3d" if len(weight_shape) == 5 else "conv2d",
    )


def _empty_like_layout(shape, like: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format(channels_last, len(shape)))


@torch.library.custom_op(f"{LIBRARY}::conv2d", mutates_args=())
def conv2d_op(
    input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
    stride: List[int], padding: List[int], dilation: List[int], groups: int, algorithm: str,
) -> torch.Tensor:
    params = op_params(input.shape, weight.shape, stride, padding, dilation, groups, input.dtype,
                     output_channels_last(input, weight), bias is not None)
    return resolve(algorithm, params).forward(input, weight, bias, params)


@conv2d_op.register_fake
def _(input, weight, bias, stride, padding, dilation, groups, algorithm):
    params = op_params(input.shape, weight.shape, stride, padding, dilation, groups, input.dtype)
    return _empty_like_layout(params.output_shape, input, op_output_channels_last(input, weight))


@torch.library.custom_op(f"{LIBRARY}::conv2d_fused", mutates_args=())
def conv2d_fused_op(
    input: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
    residual: Optional[torch.Tensor], stride: List[int], padding: List[int], dilation: List[int],
    groups: int, activation: int, algorithm: str,
) -> torch.Tensor:
    """Inference only: act(conv(input, weight) * scale + shift + residual) in one launch."""
    params = op_params(input.shape, weight.shape, stride, padding, dilation, groups, input.dtype,
                     output_channels_last(input, weight))
    return resolve(algorithm, params).forward(
        input, weight, None, params, scale=scale, shift=shift, residual=residual, activation=activation)


@conv2d_fused_op.register_fake
def _(input, weight, scale, shift, residual, stride, padding, dilation, groups, activation, algorithm):
    params = op_params(input.shape, weight.shape, stride, padding, dilation, groups, input.dtype)
    return _empty_like_layout(params.output_shape, input, op_output_channels_last(input, weight))


@torch.library.custom_op(f"{LIBRARY}::conv2d_grad_input", mutates_args=())
def conv2d_grad_input_op(
    grad_output: torch.Tensor, weight: torch.Tensor, input_shape: List[int], channels_last: bool,
    stride: List[int], padding: List[int], dilation: List[int], groups: int, algorithm: str,
) -> torch.Tensor:
    params = op_params(input_shape, weight.shape, stride, padding, dilation, groups, grad_output.dtype)
    return resolve(algorithm, params).grad_input(grad_output, weight, params, channels_last)


@conv2d_grad_input_op.register_fake
def _(grad_output, weight, input_shape, channels_last, stride, padding, dilation, groups, algorithm):
    return _empty_like_layout(tuple(input_shape), grad_output, channels_last)


@torch.library.custom_op(f"{LIBRARY}::conv2d_grad_weight", mutates_args=())
def conv2d_grad_weight_op(
    grad_output: torch.Tensor, input: torch.Tensor, weight_shape: List[int], channels_last: bool,
    stride: List[int], padding: List[int], dilation: List[int], groups: int, algorithm: str,
) -> torch.Tensor:
    params = op_params(input.shape, weight_shape, stride, padding, dilation, groups, grad_output.dtype)
    return resolve(algorithm, params).grad_weight(grad_output, input, params, channels_last)


@conv2d_grad_weight_op.register_fake
def _(grad_output, input, weight_shape, channels_last, stride, padding, dilation, groups, algorithm):
    return _empty_like_layout(tuple(weight_shape), grad_output, channels_last)


@torch.library.custom_op(f"{LIBRARY}::conv2d_grad_bias", mutates_args=())
def conv2d_grad_bias_op(grad_output: torch.Tensor) -> torch.Tensor:
    if grad_output.dim() == 5:  # a 3-D convolution's: (depth, height) as one dimension
        grad_output = grad_output.flatten(2, 3)
    n, k, p, q = grad_output.shape
    params = ConvParams.from_shapes((n, k, p, q), (k, 1, 1, 1), groups=k, dtype=grad_output.dtype)
    return grad_bias(grad_output, params)


@conv2d_grad_bias_op.register_fake
def _(grad_output):
    return grad_output.new_empty((grad_output.shape[1],))


register_vmap_rules(conv2d_op, conv2d_grad_input_op, conv2d_grad_weight_op, conv2d_grad_bias_op)
