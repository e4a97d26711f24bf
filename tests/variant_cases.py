"""Problems for the convolutions built on conv2d's kernels (conv_transpose2d, conv1d,
conv_transpose1d) and their check against ``torch.nn.functional`` in float64."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels.core.variant_params import TransposedParams, lift_1d
from reference import as_reference, assert_close, make_layout


@dataclass(frozen=True)
class VariantCase:
    """``op`` (a name in both ``kernels`` and ``F``) on an input and weight of these shapes."""

    op: str
    input_shape: Tuple[int, ...]
    weight_shape: Tuple[int, ...]
    kwargs: Tuple[Tuple[str, object], ...] = ()
    bias: bool = True

    @property
    def transposed(self) -> bool:
        return self.op.startswith("conv_transpose")

    @property
    def args(self) -> dict:
        return dict(self.kwargs)

    @property
    def groups(self) -> int:
        return self.args.get("groups", 1)

    @property
    def bias_size(self) -> int:
        return self.weight_shape[1] * self.groups if self.transposed else self.weight_shape[0]

    @property
    def reduction(self) -> int:
        """Terms per output: input channels per group x taps (an upper bound for transposed ones)."""
        per_group = self.weight_shape[0] // self.groups if self.transposed else self.weight_shape[1]
        return max(1, per_group * math.prod(self.weight_shape[2:]))

    @property
    def grad_input_reduction(self) -> int:
        per_group = self.weight_shape[1] if self.transposed else self.weight_shape[0] // self.groups
        return max(1, per_group * math.prod(self.weight_shape[2:]))

    def conv_params(self) -> kernels.ConvParams:
        """The 2-D convolution our kernels run (for the algorithms' eligibility)."""
        args = self.args
        groups = args.pop("groups", 1)
        x, w = torch.empty(self.input_shape, device="meta"), torch.empty(self.weight_shape, device="meta")
        if self.op.endswith("1d"):
            args = lift_1d(self.op, x, w, **{"padding": 0, **args})
            x, w = x.unsqueeze(-2), w.unsqueeze(-2)
        if self.transposed:
            return TransposedParams.from_shapes(x.shape, w.shape, groups=groups, **args).conv
        return kernels.ConvParams.from_shapes(x.shape, w.shape, groups=groups, **args)

    def ours(self, x, w, b, algorithm="auto"):
        return getattr(kernels, self.op)(x, w, b, **self.args, algorithm=algorithm)

    def theirs(self, x, w, b):
        return getattr(F, self.op)(x, w, b, **self.args)

    def __str__(self):
        parts = ["x".join(map(str, self.input_shape)), "w" + "x".join(map(str, self.weight_shape))]
        parts += [f"{k[:3]}{v}".replace(" ", "") for k, v in self.kwargs]
        return "-".join(parts) + ("" if self.bias else "-nobias")


def case(op, input_shape, weight_shape, bias=True, **kwargs) -> VariantCase:
    return VariantCase(op, tuple(input_shape), tuple(weight_shape), tuple(kwargs.items()), bias)


def applies(algorithm: str, c: VariantCase) -> bool:
    return kernels.REGISTRY[algorithm].eligible(c.conv_params())


def algorithm_cases(cases, per_algorithm=None):
    """(algorithm, case) for every registered algorithm and the cases it applies to."""
    params = []
    for name in kernels.REGISTRY:
        chosen = [c for c in cases if applies(name, c)][:per_algorithm]
        params += [pytest.param(name, c, id=f"{name}-{c}") for c in chosen]
    return params


def channels_innermost(t: torch.Tensor) -> torch.Tensor:
    """A 3-D (N, C, L) tensor with the channels contiguous: the 1-D analogue of channels_last."""
    return t.transpose(1, 2).contiguous().transpose(1, 2) if t.dim() == 3 else t


def random_inputs(c: VariantCase, dtype, device, layout="nchw", requires_grad=False):
    arrange = channels_innermost if layout == "channels_last" and c.op.endswith("1d") else (
        lambda t: make_layout(t, layout))
    x = arrange(torch.randn(c.input_shape, dtype=dtype, device=device))
    w = arrange(torch.randn(c.weight_shape, dtype=dtype, device=device) / math.sqrt(c.reduction))
    b = torch.randn(c.bias_size, dtype=dtype, device=device) if c.bias else None
    for t in (x, w, b):
        if t is not None and requires_grad:
            t.requires_grad_(True)
    return x, w, b


def memory_format(t: torch.Tensor) -> str:
    if t.is_contiguous():
        return "contiguous"
    return "channels_last" if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) else "strided"


def check(c: VariantCase, algorithm, dtype, layout, device, backward=True):
    """Output (and gradients) against F's in float64; 2-D layouts of output and gradients as PyTorch's."""
    x, w, b = random_inputs(c, dtype, device, layout, requires_grad=backward)
    y = c.ours(x, w, b, algorithm)
    rx, rw, rb = as_reference(x), as_reference(w), as_reference(b)
    ref = c.theirs(rx, rw, rb)
    assert_close(y, ref, dtype, c.reduction)
    two_d = len(c.input_shape) == 4 or (len(c.input_shape) == 3 and not c.op.endswith("1d"))
    if two_d:
        assert memory_format(y) == memory_format(c.theirs(*(t.detach().cpu() for t in (x, w)), None))
    if not backward:
        return
    grad = torch.randn_like(y)
    y.backward(grad)
    ref.backward(as_reference(grad))
    assert_close(x.grad, rx.grad, dtype, c.grad_input_reduction, "grad_input")
    channel_dim = 1 if len(c.input_shape) == len(c.weight_shape) else 0
    pixels = max(t.numel() // max(1, t.shape[channel_dim]) for t in (rx, ref))
    assert_close(w.grad, rw.grad, dtype, max(1, pixels), "grad_weight")
    if b is not None:
        assert_close(b.grad, rb.grad, dtype, max(1, ref.numel() // c.bias_size), "grad_bias")
    if two_d:
        cx, cw = (t.detach().cpu().requires_grad_(True) for t in (x, w))
        expected = [memory_format(g) for g in torch.autograd.grad(c.theirs(cx, cw, None), (cx, cw), grad.cpu())]
        assert [memory_format(x.grad), memory_format(w.grad)] == expected
