"""``cnn.profile``: per-layer MACs, shapes and algorithms of a model by shape propagation.

Nothing is computed: parameters and activations are meta tensors, and every convolution is
replaced (for the duration of the call) by a function that asks ``kernels`` which algorithm
runs it and how many multiplies that algorithm performs. PyTorch's FlopCounterMode would
count our custom ops as zero; this sees them.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from kernels.dispatch import resolve
from kernels.params import ConvParams

Shape = Tuple[int, ...]


@dataclass(frozen=True)
class LayerProfile:
    """One convolution or linear layer: MACs of the definition, multiplies of the chosen algorithm."""

    name: str
    kind: str  # "conv" or "linear"
    input_shape: Shape
    output_shape: Shape
    algorithm: str  # the registered algorithm the layer's ``algorithm`` resolves to; "linear" for nn.Linear
    macs: int
    multiplies: int
    params: int


@dataclass(frozen=True)
class Profile:
    rows: List[LayerProfile]
    total_params: int  # every parameter of the model, as torchvision counts them
    input_size: Shape

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def total_multiplies(self) -> int:
        return sum(r.multiplies for r in self.rows)

    def macs_by_algorithm(self) -> dict:
        out: dict = {}
        for r in self.rows:
            out[r.algorithm] = out.get(r.algorithm, 0) + r.macs
        return out

    def __str__(self) -> str:
        header = ("layer", "input", "output", "algorithm", "MMACs", "Mmults", "params")
        lines = [
            (r.name, "x".join(map(str, r.input_shape)), "x".join(map(str, r.output_shape)), r.algorithm,
             f"{r.macs / 1e6:.2f}", f"{r.multiplies / 1e6:.2f}", f"{r.params:,}")
            for r in self.rows
        ]
        widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
        fmt = lambda row: "  ".join(  # noqa: E731
            str(v).ljust(w) if i < 4 else str(v).rjust(w) for i, (v, w) in enumerate(zip(row, widths))
        )
        rule = "-" * len(fmt(header))
        total = (f"total at input {'x'.join(map(str, self.input_size))}: {self.total_macs / 1e9:.3f} GMACs "
                 f"(conv + linear), {self.total_multiplies / 1e9:.3f} G multiplies, "
                 f"{self.total_params:,} parameters")
        return "\n".join([fmt(header), rule, *map(fmt, lines), rule, total])


def _conv_row(name: str, module: nn.Conv2d, x: torch.Tensor) -> Tuple[LayerProfile, ConvParams]:
    params = ConvParams.from_shapes(
        x.shape, module.weight.shape, module.stride, module.padding, module.dilation, module.groups,
        dtype=x.dtype, has_bias=module.bias is not None,
        channels_last=x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1,
    )
    entry = resolve(getattr(module, "algorithm", "auto"), params)
    counts = entry.count(params)
    row = LayerProfile(
        name, "conv", tuple(x.shape), tuple(params.output_shape[1:] if params.unbatched else params.output_shape),
        entry.name, int(counts["macs"]), int(counts["multiplies"]),
        sum(p.numel() for p in module.parameters(recurse=False)),
    )
    return row, params


def profile(model: nn.Module, input_size: Sequence[int], *, dtype: Optional[torch.dtype] = None,
            channels_last: bool = False) -> Profile:
    """Profile ``model`` on an input of ``input_size`` ((C, H, W) means batch 1), without computing.

    Each ``nn.Conv2d`` (``cnn.Conv2d`` or not) reports the algorithm its ``algorithm`` attribute
    (``"auto"`` when it has none) resolves to for that shape, with ``kernels``' MAC and multiply
    counts; each ``nn.Linear`` its MACs. ``dtype`` defaults to the model's parameter dtype.
    """
    size = tuple(int(d) for d in input_size)
    if len(size) == 3:
        size = (1,) + size
    if len(size) != 4:
        raise ValueError(f"profile: input_size must be (C, H, W) or (N, C, H, W), got {tuple(input_size)}")
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    rows: List[LayerProfile] = []

    def shape_only_conv(name, module):
        def forward(x):
            row, params = _conv_row(name, module, x)
            rows.append(row)
            fmt = torch.channels_last if params.channels_last else torch.contiguous_format
            return torch.empty(params.output_shape, dtype=x.dtype, device="meta", memory_format=fmt)
        return forward

    def record_linear(name):
        def hook(module, inputs, output):
            x = inputs[0]
            macs = output.numel() * module.in_features
            rows.append(LayerProfile(name, "linear", tuple(x.shape), tuple(output.shape), "linear", macs, macs,
                                     sum(p.numel() for p in module.parameters(recurse=False))))
        return hook

    modes = {m: m.training for m in model.modules()}
    patched, hooks = [], []
    try:
        model.eval()
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                module.forward = shape_only_conv(name, module)
                patched.append(module)
            elif isinstance(module, nn.Linear):
                hooks.append(module.register_forward_hook(record_linear(name)))
        meta_state = {
            key: torch.empty_like(t, device="meta")
            for key, t in chain(model.named_parameters(), model.named_buffers())
        }
        x = torch.empty(size, dtype=dtype, device="meta")
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            torch.func.functional_call(model, meta_state, (x,))
    finally:
        for module in patched:
            del module.forward
        for handle in hooks:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    total_params = sum(p.numel() for p in model.parameters())
    return Profile(rows, total_params, size)
