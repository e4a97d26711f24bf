"""The oracle: PyTorch in float64 on the CPU, and per-dtype tolerances scaled by reduction length."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple, Union

import torch
import torch.nn.functional as F

EPS = {
    torch.float64: 2.0**-52,
    torch.float32: 2.0**-23,
    torch.float16: 2.0**-10,
    torch.bfloat16: 2.0**-7,
}
TF32_EPS = 2.0**-10


@dataclass(frozen=True)
class Case:
    """One convolution problem of the sweep."""

    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: Union[int, Tuple[int, int]] = 1
    padding: Union[int, Tuple[int, int], str] = 0
    dilation: Union[int, Tuple[int, int]] = 1
    groups: int = 1
    bias: bool = True
    unbatched: bool = False

    @property
    def input_shape(self):
        return (self.c, self.h, self.w) if self.unbatched else (self.n, self.c, self.h, self.w)

    @property
    def weight_shape(self):
        return (self.k, self.c // self.groups, self.r, self.s)

    @property
    def reduction(self) -> int:
        return max(1, self.c // self.groups * self.r * self.s)

    def conv_args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def __str__(self):
        parts = [f"{self.n}x{self.c}x{self.h}x{self.w}", f"k{self.k}", f"{self.r}x{self.s}"]
        for name in ("stride", "padding", "dilation", "groups"):
            value = getattr(self, name)
            if value not in (1, 0) or (name == "padding" and value != 0):
                parts.append(f"{name[:3]}{value}")
        if not self.bias:
            parts.append("nobias")
        if self.unbatched:
            parts.append("unbatched")
        return "-".join(str(p).replace(" ", "") for p in parts)


def make_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``t`` in the named memory layout."""
    if layout == "nchw":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
    if layout == "strided":  # a non-contiguous view into a larger buffer
        big = torch.zeros(*t.shape[:-1], t.shape[-1] * 2 + 1, dtype=t.dtype, device=t.device)
        view = big[..., 1::2]
        view.copy_(t)
        return view
    raise ValueError(layout)


def random_inputs(case: Case, dtype, device, layout="nchw", requires_grad=False):
    x = make_layout(torch.randn(case.input_shape, dtype=dtype, device=device), layout)
    w = make_layout(torch.randn(case.weight_shape, dtype=dtype, device=device) / math.sqrt(case.reduction), layout)
    b = torch.randn(case.k, dtype=dtype, device=device) if case.bias else None
    if requires_grad:
        for t in (x, w, b):
            if t is not None:
                t.requires_grad_(True)
    return x, w, b


def as_reference(t):
    return None if t is None else t.detach().to("cpu", torch.float64).requires_grad_(t.requires_grad)


def tolerance(dtype: torch.dtype, reduction: int, tf32: bool = False) -> Tuple[float, float]:
    """(atol, rtol) for outputs of unit scale from a ``reduction``-term fp32-accumulated sum.

    rtol covers rounding the result to ``dtype``; atol the accumulation error, which grows
    like sqrt(reduction) for random terms (a generous factor covers the worst case seen).
    """
    eps_out = EPS[dtype]
    eps_acc = TF32_EPS if tf32 else (EPS[torch.float64] if dtype == torch.float64 else EPS[torch.float32])
    if dtype in (torch.float16, torch.bfloat16):
        eps_acc = max(eps_acc, EPS[torch.float32])
    atol = 8 * eps_acc * math.sqrt(reduction) + 2 * eps_out
    rtol = 2 * eps_out
    return atol, rtol


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype, reduction, what="output", tf32=False,
                 error_ratio: float = 1.0):
    """``error_ratio``: an algorithm's measured error relative to a GEMM's (Algorithm.error_ratio)."""
    atol, rtol = tolerance(dtype, reduction, tf32)
    atol *= error_ratio
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype} != {dtype}"
    got = actual.detach().to("cpu", torch.float64)
    expected = expected.detach().to("cpu", torch.float64)  # a reference may be computed on the GPU
    assert not torch.isnan(got).any(), f"{what}: NaN (an element was never written)"
    scale = max([1.0] + ([expected.abs().max().item()] if expected.numel() else []))
    err = (got - expected).abs()
    bound = atol * scale + rtol * expected.abs()
    worst = (err - bound).max().item() if err.numel() else 0.0
    assert worst <= 0, (
        f"{what}: max abs error {err.max().item():.3e} exceeds tolerance "
        f"(atol {atol * scale:.2e}, rtol {rtol:.1e}) for {dtype}, reduction {reduction}"
    )


def reference_conv(x, w, b, case: Case):
    return F.conv2d(as_reference(x), as_reference(w), as_reference(b), **case.conv_args())
