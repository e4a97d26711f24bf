"""The ``torch.nn.functional`` drop-ins: ``conv2d``, ``conv_transpose2d``, ``conv1d``, ``conv_transpose1d``.

Each has its namesake's arguments, output (shape, dtype, memory format) and derivatives (reverse
mode of any order, forward mode, vmap), on our kernels:

* ``conv2d``: the ``convkernels::conv2d`` op under ``autograd.functions.ConvForward``;
* ``conv_transpose2d``: the input gradient (dgrad) of the convolution that maps its output back to
  its input (``TransposedParams.conv``): stride phases, no zero insertion; its derivatives are
  ``ConvGradInput``'s (grad_input is a conv2d of the gradient with the same weight, grad_weight a
  wgrad with input and grad_output swapped);
* ``conv1d`` / ``conv_transpose1d``: the 2-D ones over (N, C, 1, L) views (no copy). A depthwise
  conv1d runs on the depthwise kernel with a 1 x kW filter; causal (left-only) padding is
  ``F.pad(x, (k - 1, 0))`` before the call. The output's memory format is the 2-D rule applied to
  those views: contiguous for contiguous operands, (N, C, L) with the channels innermost when the
  input or weight has them innermost.

``algorithm`` is one of ``kernels.ALGORITHMS``; one that does not apply raises ``ValueError`` before
anything is traced or launched.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Union

import torch

from .autograd.functions import ConvForward, conv_forward, conv_transpose_forward
from .core.checks import autocast_inputs, check_device
from .core.layout import op_output_channels_last
from .core.params import ConvParams, IntOrPair
from .core.variant_params import TransposedParams, lift_1d
from .dispatch import resolve


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntOrPair = 1,
    padding: Union[IntOrPair, str] = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    *,
    algorithm: str = "auto",
) -> torch.Tensor:
    """2-D convolution with the semantics of ``torch.nn.functional.conv2d``, on Triton kernels.

    Same arguments, same output (shape, dtype, memory format), same derivatives (reverse mode of
    any order, forward mode, vmap); ``algorithm`` is one of ``kernels.ALGORITHMS``.
    """
    return _convolution("conv2d", input, weight, bias, stride, padding, dilation, groups, algorithm)


def conv3d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntOrPair = 1,
    padding: Union[IntOrPair, str] = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    *,
    algorithm: str = "auto",
) -> torch.Tensor:
    """3-D convolution with the semantics of ``torch.nn.functional.conv3d``, on the implicit GEMM over
    NDHWC operands (reduction over (t, r, s, c), 1x1x1 as the pointwise GEMM).

    Same arguments, output (channels_last_3d when input or weight is, as PyTorch's rule) and
    derivatives as ``conv2d``; ``algorithm`` is "auto" or an algorithm with 3-D kernels
    (``im2col``, ``pointwise``).
    """
    return _convolution("conv3d", input, weight, bias, stride, padding, dilation, groups, algorithm)


def _convolution(op, input, weight, bias, stride, padding, dilation, groups, algorithm):
    """``conv2d`` / ``conv3d``: validate, resolve the algorithm, then the differentiable forward."""
    if isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor):
        input, weight, bias = autocast_inputs(input, weight, bias)
    params = ConvParams.from_tensors(input, weight, bias, stride, padding, dilation, groups, op=op)
    resolve(algorithm, params)  # ineligible algorithms fail here, before any tracing
    check_device(input, weight, bias)
    batched = input.unsqueeze(0) if params.unbatched else input
    geometry = (list(params.strides), list(params.padding), list(params.dilations), params.groups, algorithm)
    out = conv_forward(batched, weight, bias, geometry)
    return out.squeeze(0) if params.unbatched else out


def conv_transpose2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
    groups: int = 1,
    dilation: IntOrPair = 1,
    *,
    algorithm: str = "auto",
) -> torch.Tensor:
    """2-D transposed convolution with the semantics of ``torch.nn.functional.conv_transpose2d``.

    Same arguments (in the same order: output_padding, groups, then dilation), output and
    derivatives. ``algorithm`` is one of ``kernels.ALGORITHMS``, chosen for (and checked against)
    the convolution this is the dgrad of: its ``grad_input`` computes the forward, its forward
    the input gradient.
    """
    return _transposed("conv_transpose2d", input, weight, bias, stride, padding, output_padding, groups, dilation,
                       algorithm)


def conv_transpose3d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
    groups: int = 1,
    dilation: IntOrPair = 1,
    *,
    algorithm: str = "auto",
) -> torch.Tensor:
    """3-D transposed convolution with the semantics of ``torch.nn.functional.conv_transpose3d``: the
    3-D dgrad (depth, height and width stride phases) of the convolution it transposes, as
    ``conv_transpose2d`` is the 2-D one's."""
    return _transposed("conv_transpose3d", input, weight, bias, stride, padding, output_padding, groups, dilation,
                       algorithm)


def _transposed(op, input, weight, bias, stride, padding, output_padding, groups, dilation, algorithm):
    """``conv_transpose2d`` / ``conv_transpose3d``: validate, resolve, then the differentiable dgrad."""
    if isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor):
        input, weight, bias = autocast_inputs(input, weight, bias)
    params = TransposedParams.from_tensors(input, weight, bias, stride, padding, output_padding, groups, dilation,
                                           op=op)
    resolve(algorithm, params.conv)  # ineligible algorithms fail here, before any tracing
    check_device(input, weight, bias)
    x = input.unsqueeze(0) if params.unbatched else input
    out = conv_transpose_forward(x, weight, params.conv_input_shape, op_output_channels_last(x, weight),
                                 params.op_geometry(algorithm))
    out = params.finish(out, bias)
    return out.squeeze(0) if params.unbatched else out


@contextlib.contextmanager
def _as_2d(op: str):
    """Errors of the 2-D call, re-raised (same type) saying that the shapes they name are the
    lifted ones."""
    try:
        yield
    except (RuntimeError, TypeError, ValueError) as error:
        raise type(error)(f"{op} (computed as a 2-D convolution over (N, C, 1, L)): {error}") from error


def _lifted(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return t if not isinstance(t, torch.Tensor) else t.unsqueeze(-2)


def conv1d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntOrPair = 1,
    padding: Union[IntOrPair, str] = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    *,
    algorithm: str = "auto",
) -> torch.Tensor:
    """1-D convolution with the semantics of ``torch.nn.functional.conv1d``, on our kernels."""
    args = lift_1d("conv1d", input, weight, padding=padding, stride=stride, dilation=dilation)
    with _as_2d("conv1d"):
        out = conv2d(_lifted(input), _lifted(weight), bias, args["stride"], args["padding"], args["dilation"], groups,
                     algorithm=algorithm)
    return out.squeeze(-2)


def conv_transpose1d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
    groups: int = 1,
    dilation: IntOrPair = 1,
    *,
    algorithm: str = "auto",
) -> torch.Tensor:
    """1-D transposed convolution with the semantics of ``torch.nn.functional.conv_transpose1d``."""
    args = lift_1d("conv_transpose1d", input, weight, padding=padding, stride=stride, output_padding=output_padding,
                   dilation=dilation)
    with _as_2d("conv_transpose1d"):
        out = conv_transpose2d(_lifted(input), _lifted(weight), bias, args["stride"], args["padding"],
                               args["output_padding"], groups, args["dilation"], algorithm=algorithm)
    return out.squeeze(-2)


class Conv2dFunction(ConvForward):
    """``Conv2dFunction.apply(input, weight, bias, stride, padding, dilation, groups, algorithm)``.

    The autograd Function form of ``kernels.conv2d``, for code that composes Functions: the
    arguments are those of ``F.conv2d`` (validated and normalised exactly as in
    ``kernels.conv2d``, unbatched input included), and the result has every derivative of
    ``autograd.functions.ConvForward``.
    """

    @classmethod
    def apply(cls, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, algorithm="auto"):
        return conv2d(input, weight, bias, stride, padding, dilation, groups, algorithm=algorithm)
