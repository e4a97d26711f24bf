"""The public functional API: ``kernels.conv2d``, a drop-in for ``torch.nn.functional.conv2d``."""
from __future__ import annotations

from typing import Optional, Union

import torch

from .autograd import conv_forward
from .dispatch import resolve
from .params import ConvParams, IntOrPair
from .tuning import interpreting


def check_device(*tensors: Optional[torch.Tensor]) -> None:
    """Our kernels run on CUDA tensors, or on CPU tensors under Triton's interpreter; meta tensors
    only compute shapes (nothing is launched)."""
    for t in tensors:
        if t is not None and t.device.type not in ("cuda", "meta") and not interpreting():
            raise RuntimeError(
                f"kernels: Triton kernels need CUDA tensors, got a tensor on {t.device} "
                "(set TRITON_INTERPRET=1 before importing triton to run them on the CPU interpreter)"
            )


def autocast_inputs(*tensors: Optional[torch.Tensor]):
    """Cast floating inputs to the autocast dtype when autocast is on, as F.conv2d does."""
    device_type = next(t for t in tensors if t is not None).device.type
    if device_type not in ("cuda", "cpu") or not torch.is_autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(
        t.to(dtype) if t is not None and t.is_floating_point() and t.dtype != torch.float64 else t
        for t in tensors
    )


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
    if isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor):
        input, weight, bias = autocast_inputs(input, weight, bias)
    params = ConvParams.from_tensors(input, weight, bias, stride, padding, dilation, groups)
    resolve(algorithm, params)  # ineligible algorithms fail here, before any tracing
    check_device(input, weight, bias)
    batched = input.unsqueeze(0) if params.unbatched else input
    geometry = (list(params.stride), list(params.padding), list(params.dilation), params.groups, algorithm)
    out = conv_forward(batched, weight, bias, geometry)
    return out.squeeze(0) if params.unbatched else out
