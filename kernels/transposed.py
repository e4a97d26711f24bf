"""``kernels.conv_transpose2d``: ``torch.nn.functional.conv_transpose2d`` on our kernels.

A transposed convolution is the input gradient of the convolution that maps its output back to
its input (``TransposedParams.conv``). So its forward is that convolution's dgrad kernel
(``convkernels::conv2d_grad_input``: stride phases, no zero insertion; the algorithm's own
``grad_input`` where the registry has one), and its derivatives are the ones ``ConvGradInput``
already has: grad_input is a conv2d forward of the gradient with the same weight, grad_weight
a wgrad with the roles of input and grad_output swapped (the transposed input is the
convolution's grad_output), and every higher order, forward mode and vmap follow.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .autograd import ConvGradInput, ConvGradInputTraced, _apply, _output_channels_last, grad_input_backward
from .dispatch import resolve
from .functional import autocast_inputs, check_device
from .params import IntOrPair
from .variant_params import TransposedParams


def _memory_format(channels_last: bool):
    return torch.channels_last if channels_last else torch.contiguous_format


class ConvTransposeForward(ConvGradInput):
    """``ConvGradInput`` as a transposed convolution's forward. Only the layout of the input's
    gradient differs: PyTorch gives a transposed convolution's input gradient in the forward's
    memory format (channels_last when input or weight is), not in the upstream gradient's."""

    @staticmethod
    def backward(ctx, grad):
        g_input, *rest = grad_input_backward(ctx, grad)
        if g_input is not None:
            g_input = g_input.contiguous(memory_format=_memory_format(ctx.channels_last))
        return (g_input, *rest)


ConvTransposeForwardTraced = type("ConvTransposeForwardTraced", (ConvGradInputTraced,),
                                  {"backward": staticmethod(ConvTransposeForward.backward)})


def geometry(params: TransposedParams, algorithm: str):
    """The custom ops' geometry arguments of ``params.conv``."""
    c = params.conv
    return (list(c.stride), list(c.padding), list(c.dilation), c.groups, algorithm)


def finish_output(out: torch.Tensor, bias: Optional[torch.Tensor], params: TransposedParams) -> torch.Tensor:
    """dgrad's result -> the transposed convolution's output: the cropped rows and columns back
    (zeros; see ``TransposedParams.crop``), then the bias (dgrad has no bias epilogue)."""
    crop_h, crop_w = params.crop
    if crop_h or crop_w:
        out = F.pad(out, (0, crop_w, 0, crop_h))
    return out if bias is None else out + bias.view(1, -1, 1, 1)


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
    if isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor):
        input, weight, bias = autocast_inputs(input, weight, bias)
    params = TransposedParams.from_tensors(input, weight, bias, stride, padding, output_padding, groups, dilation)
    resolve(algorithm, params.conv)  # ineligible algorithms fail here, before any tracing
    check_device(input, weight, bias)
    x = input.unsqueeze(0) if params.unbatched else input
    out = _apply(ConvTransposeForward, ConvTransposeForwardTraced, x, None, weight, list(params.conv_input_shape),
                 _output_channels_last(x, weight), *geometry(params, algorithm))
    out = finish_output(out, bias, params)
    return out.squeeze(0) if params.unbatched else out
