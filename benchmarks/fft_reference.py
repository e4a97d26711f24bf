"""A torch.fft convolution "written the way users do it today": the baseline ``torch_fft`` of every
benchmark case ``algorithm="fft"`` applies to (stride 1).

As Hyena / FlashFFTConv's reference and the usual blog recipes do it: pad, ``torch.fft.rfftn`` of input
and filter at the padded size (16-bit inputs go to fp32 first: cuFFT's half precision takes powers of
two only), the product summed over input channels (``einsum``, complex), ``irfftn``, crop, add the bias,
cast back. For a correlation the filter's spectrum is conjugated; dilation inserts zeros into the
filter. No plan cache, no fusion: the point of the comparison.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F


def _tuple(value, dims: int) -> tuple:
    return tuple(value) if isinstance(value, Sequence) else (value,) * dims


def fft_conv(x: torch.Tensor, w: torch.Tensor, b=None, stride=1, padding: Union[int, str, Sequence[int]] = 0,
             dilation=1, groups: int = 1) -> torch.Tensor:
    """``F.conv1d`` / ``F.conv2d`` (stride 1) by torch.fft."""
    dims = x.dim() - 2
    if any(s != 1 for s in _tuple(stride, dims)):
        raise ValueError("fft_conv: stride 1 only")
    dilation = _tuple(dilation, dims)
    kernel = w.shape[2:]
    reach = [d * (k - 1) for d, k in zip(dilation, kernel)]
    if padding == "valid":
        pads = [(0, 0)] * dims
    elif padding == "same":
        pads = [(r // 2, r - r // 2) for r in reach]
    else:
        pads = [(p, p) for p in _tuple(padding, dims)]
    dtype = x.dtype
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    x, w = x.to(work), w.to(work)
    if any(d > 1 for d in dilation):
        dilated = torch.zeros(*w.shape[:2], *[r + 1 for r in reach], dtype=work, device=w.device)
        dilated[(slice(None), slice(None)) + tuple(slice(None, None, d) for d in dilation)] = w
        w = dilated
    x = F.pad(x, [p for pair in reversed(pads) for p in pair])
    sizes = list(x.shape[2:])
    axes = list(range(2, 2 + dims))
    spectrum_x = torch.fft.rfftn(x, s=sizes, dim=axes)
    spectrum_w = torch.fft.rfftn(w, s=sizes, dim=axes).conj()
    n, k = x.shape[0], w.shape[0]
    spectrum_x = spectrum_x.reshape(n, groups, x.shape[1] // groups, *spectrum_x.shape[2:])
    spectrum_w = spectrum_w.reshape(groups, k // groups, w.shape[1], *spectrum_w.shape[2:])
    spectrum_y = torch.einsum("ngc...,gkc...->ngk...", spectrum_x, spectrum_w).reshape(n, k, *spectrum_x.shape[3:])
    y = torch.fft.irfftn(spectrum_y, s=sizes, dim=axes)
    y = y[(slice(None), slice(None)) + tuple(slice(0, s - r) for s, r in zip(sizes, reach))]
    if b is not None:
        y = y + b.to(work).view(1, -1, *[1] * dims)
    return y.to(dtype)
