"""``cnn.profile``: per-layer MACs, shapes and algorithms of a model by shape propagation.

Nothing is computed: parameters and activations are meta tensors, and every convolution (1-D,
2-D and 3-D, transposed or not) is replaced (for the duration of the call) by a function that asks
``kernels`` which algorithm runs it and how many multiplies that algorithm performs. PyTorch's
FlopCounterMode would count our custom ops as zero; this sees them (and counts a transposed
convolution's MACs the way FlopCounterMode counts aten's).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from kernels.dispatch import resolve
from kernels.core.params import ConvParams
from kernels.core.variant_params import TransposedParams, lift_1d
from kernels.dispatch import REGISTRY

Shape = Tuple[int, ...]


@dataclass(frozen=True)
class LayerProfile:
    """One convolution or linear layer: MACs of the definition, multiplies of the chosen algorithm."""

    name: str
    kind: str  # "conv" (1-D, 2-D or 3-D), "conv_transpose" (1-D, 2-D or 3-D) or "linear"
    input_shape: Shape
    output_shape: Shape
    algorithm: str  # the registered algorithm the layer's ``algorithm`` resolves to; "linear" for nn.Linear
    # MACs: of the definition; for transposed convolutions as FlopCounterMode counts them (see _conv_row)
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


CONVOLUTIONS_3D = (nn.Conv3d, nn.ConvTranspose3d)
CONVOLUTIONS = (nn.Conv2d, nn.Conv1d, nn.ConvTranspose2d, nn.ConvTranspose1d) + CONVOLUTIONS_3D


def _channels_last(x: torch.Tensor) -> bool:
    if x.dim() == 5:
        return x.is_contiguous(memory_format=torch.channels_last_3d) and x.shape[1] > 1
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1


def conv3d_algorithm(algorithm: str, in_channels: int, kernel_size: Tuple[int, ...], groups: int) -> str:
    """The registered algorithm a 3-D convolution with ``algorithm=`` runs on (for a transposed
    one: the convolution it is the dgrad of, whose input has ``in_channels``): ``kernels.dispatch``'s
    resolution, which for 3-D depends on the channels, groups and kernel only. Raises ValueError
    where ``kernels.conv3d`` would."""
    if algorithm != "auto" and algorithm not in REGISTRY:
        raise ValueError(f"profile: a 3-D convolution's algorithm must be 'auto' or one of {list(REGISTRY)}, "
                         f"got {algorithm!r}")
    kernel = tuple(kernel_size)
    params = ConvParams.from_shapes((1, in_channels, *kernel), (groups, in_channels // groups, *kernel),
                                    groups=groups, op="conv3d")
    return resolve(algorithm, params).name


def _conv3d_row(name: str, module: nn.Module, x: torch.Tensor, output_size=None) -> Tuple[LayerProfile, Shape, bool]:
    """A 3-D convolution's row: the output as PyTorch's meta kernel gives it (shape and memory
    format), MACs of the definition (a transposed one's as FlopCounterMode counts them: every input
    voxel times every tap), which the implicit-GEMM, pointwise and depthwise kernels all perform."""
    transposed = isinstance(module, nn.ConvTranspose3d)
    weight = torch.empty_like(module.weight, device="meta")
    args = dict(stride=module.stride, padding=module.padding, dilation=module.dilation, groups=module.groups)
    if transposed:
        args["output_padding"] = module._output_padding(x, output_size, module.stride, module.padding,
                                                        module.kernel_size, 3, module.dilation)
        out = F.conv_transpose3d(x, weight, **args)
        macs = x.numel() * (module.out_channels // module.groups) * weight[0, 0].numel()
        conv_input_channels = module.out_channels
    else:
        out = F.conv3d(x, weight, **args)
        macs = out.numel() * weight[0].numel()
        conv_input_channels = module.in_channels
    algorithm = conv3d_algorithm(getattr(module, "algorithm", "auto"), conv_input_channels, module.kernel_size,
                                 module.groups)
    row = LayerProfile(name, "conv_transpose" if transposed else "conv", tuple(x.shape), tuple(out.shape),
                       algorithm, int(macs), int(macs), sum(p.numel() for p in module.parameters(recurse=False)))
    return row, tuple(out.shape), _channels_last(out)


def _conv_row(name: str, module: nn.Module, x: torch.Tensor, output_size=None) -> Tuple[LayerProfile, Shape, bool]:
    """The row of one convolution, its output shape and memory format.

    1-D convolutions are counted as the 2-D ones over (N, C, 1, L) they run as. A transposed
    convolution's MACs are counted as ``torch.utils.flop_counter.FlopCounterMode`` counts them
    (FLOPs / 2: every input pixel times every tap, including taps that land in the padding); it
    runs as the dgrad of a convolution, so ``algorithm`` is the registered algorithm whose
    ``grad_input`` computes it and ``multiplies`` is that MAC count (the dgrad kernel performs
    the definition's products, skipping those that land in the padding). 3-D ones: ``_conv3d_row``.
    """
    if isinstance(module, CONVOLUTIONS_3D):
        return _conv3d_row(name, module, x, output_size)
    one_d = isinstance(module, (nn.Conv1d, nn.ConvTranspose1d))
    transposed = isinstance(module, (nn.ConvTranspose2d, nn.ConvTranspose1d))
    op = ("conv_transpose" if transposed else "conv") + ("1d" if one_d else "2d")
    weight = module.weight
    args = dict(stride=module.stride, padding=module.padding, dilation=module.dilation)
    if transposed:
        args["output_padding"] = module._output_padding(x, output_size, module.stride, module.padding,
                                                        module.kernel_size, 1 if one_d else 2, module.dilation)
    if one_d:
        args = lift_1d(op, x, weight, **args)
        x_shape, w_shape = x.unsqueeze(-2).shape, weight.unsqueeze(-2).shape
    else:
        x_shape, w_shape = x.shape, weight.shape
    if transposed:
        problem = TransposedParams.from_shapes(x_shape, w_shape, groups=module.groups, dtype=x.dtype,
                                               channels_last=_channels_last(x), **args)
        entry = resolve(getattr(module, "algorithm", "auto"), problem.conv)
        macs = multiplies = problem.macs
        output_shape, unbatched = problem.output_shape, problem.unbatched
    else:
        problem = ConvParams.from_shapes(x_shape, w_shape, groups=module.groups, dtype=x.dtype,
                                         has_bias=module.bias is not None, channels_last=_channels_last(x), **args)
        entry = resolve(getattr(module, "algorithm", "auto"), problem)
        counts = entry.count(problem)
        macs, multiplies = counts["macs"], counts["multiplies"]
        output_shape, unbatched = problem.output_shape, problem.unbatched
    if unbatched:
        output_shape = output_shape[1:]
    if one_d:
        output_shape = output_shape[:-2] + output_shape[-1:]
    row = LayerProfile(name, "conv_transpose" if transposed else "conv", tuple(x.shape), tuple(output_shape),
                       entry.name, int(macs), int(multiplies), sum(p.numel() for p in module.parameters(recurse=False)))
    return row, tuple(output_shape), problem.channels_last


def profile(model: nn.Module, input_size: Sequence[int], *, dtype: Optional[torch.dtype] = None,
            channels_last: bool = False, spatial_dims: int = 2) -> Profile:
    """Profile ``model`` on an input of ``input_size`` without computing: (C, H, W) means batch 1,
    (N, C, H, W) is batched; with ``spatial_dims=1`` (a sequence model), (C, L) or (N, C, L); with
    ``spatial_dims=3`` (a video or volume model), (C, T, H, W) or (N, C, T, H, W).

    Each ``nn.Conv1d/2d/3d`` and ``nn.ConvTranspose1d/2d/3d`` (ours or not) reports the algorithm
    its ``algorithm`` attribute (``"auto"`` when it has none) resolves to for that shape, with
    ``kernels``' MAC and multiply counts (transposed ones as ``_conv_row`` says); each
    ``nn.Linear`` its MACs. ``dtype`` defaults to the model's parameter dtype.
    """
    expected = {1: "(C, L) or (N, C, L)", 2: "(C, H, W) or (N, C, H, W)", 3: "(C, T, H, W) or (N, C, T, H, W)"}
    if spatial_dims not in expected:
        raise ValueError(f"profile: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    size = tuple(int(d) for d in input_size)
    if len(size) == spatial_dims + 1:
        size = (1,) + size
    if len(size) != spatial_dims + 2:
        raise ValueError(f"profile: input_size must be {expected[spatial_dims]}, got {tuple(input_size)}")
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    rows: List[LayerProfile] = []

    def shape_only_conv(name, module):
        def forward(x, output_size=None):
            row, shape, channels_last = _conv_row(name, module, x, output_size)
            rows.append(row)
            formats = {4: torch.channels_last, 5: torch.channels_last_3d}
            fmt = formats.get(len(shape), torch.contiguous_format) if channels_last else torch.contiguous_format
            return torch.empty(shape, dtype=x.dtype, device="meta", memory_format=fmt)
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
            if isinstance(module, CONVOLUTIONS):
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
            x = x.contiguous(memory_format=torch.channels_last_3d if spatial_dims == 3 else torch.channels_last)
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
