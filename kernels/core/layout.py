"""Memory formats: PyTorch's rules for what a convolution returns, and the kernels' operand layout.

The kernels compute on channels-innermost operands (NHWC input, (K, R, S, C) weight) and write
channels_last; ``nhwc`` / ``channels_last_weight`` bring operands there and ``finish`` gives the
result the memory format PyTorch's rule asks for.
"""
from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format


# The channels-innermost formats of 4-D and 5-D tensors.
CHANNELS_LAST = (torch.channels_last, torch.channels_last_3d)


def output_channels_last(input: torch.Tensor, weight: torch.Tensor) -> bool:
    """PyTorch's rule for a convolution's output, and for the raw gradients of its input and weight
    (whatever grad_output's layout): channels_last if input or weight suggests it."""
    return (
        suggest_memory_format(input) in CHANNELS_LAST
        or suggest_memory_format(weight) in CHANNELS_LAST
    )


def op_output_channels_last(input: torch.Tensor, weight: torch.Tensor) -> bool:
    """``output_channels_last`` with PyTorch's meta-device exception, for the custom ops' fake
    implementations: F.conv2d on meta tensors is always contiguous (no backend to ask), while fake
    tensors under torch.compile follow the real rule."""
    if input.device.type == "meta":
        return False
    return output_channels_last(input, weight)


def memory_format(channels_last: bool, ndim: int = 4) -> torch.memory_format:
    """channels_last (channels_last_3d for a 5-D tensor) or contiguous."""
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last_3d if ndim == 5 else torch.channels_last


def nhwc(t: torch.Tensor) -> torch.Tensor:
    """``t`` with channels contiguous (itself when it already is): the GEMM kernels' operand layout.

    NCHW and strided callers are served by the channels_last kernels through this one copy
    (the planner's layout decision; a GPU measurement showing a strided path faster would
    change it here). Other strides stay as they are: the vector width follows them.
    """
    return t if t.size(1) == 1 or t.stride(1) == 1 else t.contiguous(memory_format=memory_format(True, t.dim()))


def channels_last_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` with c contiguous, (K, R, S, C) order: itself when it already is, else a copy.

    With c contiguous, a kernel's weight tile loads as 16-byte vectors and its loop can be
    software-pipelined (cp.async needs provably contiguous >= 4-byte loads). A weight that is
    already channels_last (``model.to(memory_format=torch.channels_last)`` makes it so) is used
    as is; any other is copied per call. The copy is deliberately not cached: a cache keyed on
    the tensor's version counter returns stale weights after ``weight.data`` is updated in place
    (gradcheck and older training code do that), a silent wrong answer.
    """
    return weight.contiguous(memory_format=memory_format(True, weight.dim()))


def finish(result: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """The kernels write channels_last; PyTorch's rule may ask for NCHW (one copy out). An empty
    tensor counts as contiguous in every format, so it is made anew in NCHW strides."""
    if channels_last:
        return result
    if result.numel() == 0:
        return torch.empty(result.shape, dtype=result.dtype, device=result.device)
    return result.contiguous()
