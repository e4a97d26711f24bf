"""``kernels.conv1d`` and ``kernels.conv_transpose1d``: the 1-D convolutions as 2-D ones over
(N, C, 1, L) (views, no copy), so they run on the same kernels with every derivative of
``kernels.conv2d`` / ``kernels.conv_transpose2d``. A depthwise conv1d (groups == channels) runs
on the depthwise kernel with a 1 x kW filter. "same" padding is the caller's string, as in
``F.conv1d``; causal (left-only) padding is ``F.pad(x, (k - 1, 0))`` before the call.

The output's memory format is the 2-D rule applied to those views: contiguous for contiguous
operands, and (N, C, L) with the channels innermost when the input or weight has them innermost.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Union

import torch

from .functional import conv2d
from .params import IntOrPair
from .transposed import conv_transpose2d
from .variant_params import lift_1d


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
