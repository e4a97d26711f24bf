"""Benchmark cases derived from real networks: the conv layers a model runs, found by running
it once with forward hooks, each unique layer once with its count in the network.

Nothing here is typed by hand: the shapes come from the ``cnn`` models (ResNet-50, VGG-16,
MobileNetV2, EfficientNet-B0, DenseNet-121 and ConvNeXt-Tiny at 224x224; R3D-18 on 16-frame 112x112
clips), from ``RepLKNet31BLargeKernels`` (RepLKNet-31B's large-kernel depthwise layers) and
from the decoder / sequence networks of ``variant_networks`` (DCGAN's generator, U-Net's
up-convolutions, Mamba's depthwise conv1d), and ``conv_layers`` works on any ``nn.Module`` (its
Conv1d/2d/3d and ConvTranspose1d/2d/3d layers). EfficientNet-B0 brings 5x5 depthwise and
squeeze-and-excitation (1x1 convolutions on 1x1 maps), DenseNet-121 many narrow 1x1 bottlenecks
over ever wider concatenations, R3D-18 the 3x3x3 video convolutions, ConvNeXt-Tiny a 7x7 depthwise
convolution in every block, RepLKNet-31B depthwise kernels of 31x31 down to 13x13.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
from kernels.core.variant_params import TransposedParams, lift_1d

from .variant_networks import VARIANT_SUITES

Pair = Union[int, Tuple[int, ...]]  # one value per spatial axis (or one for all)

# Module type -> the functional op (the same name in torch.nn.functional and in kernels).
CONV_OPS = {nn.Conv2d: "conv2d", nn.Conv1d: "conv1d", nn.Conv3d: "conv3d", nn.ConvTranspose2d: "conv_transpose2d",
            nn.ConvTranspose1d: "conv_transpose1d", nn.ConvTranspose3d: "conv_transpose3d"}


def _compact(value):
    """(a, a) -> a, so reports read like the layer definitions."""
    if isinstance(value, (tuple, list)):
        value = tuple(int(v) for v in value)
        return value[0] if len(set(value)) == 1 else value
    return value


@dataclass(frozen=True)
class ConvCase:
    """One unique conv layer of a network (batch ``n``) and how often the network runs it.

    ``op`` is one of ``CONV_OPS``' values. 1-D layers have h = r = 1 (stride, padding and
    dilation are the length's); 3-D ones a depth (frames) ``d`` and kernel depth ``t`` (1 for
    the others), and stride, padding and dilation over (d, h, w); transposed ones have c input
    and k output channels as well, and an ``output_padding``.
    """

    suite: str
    layer: str  # the first module with this shape, e.g. "layer1.0.conv2"
    count: int
    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: Pair = 1
    padding: Union[Pair, str] = 0
    dilation: Pair = 1
    groups: int = 1
    bias: bool = False
    op: str = "conv2d"
    output_padding: Pair = 0
    d: int = 1  # input depth (frames), 3-D layers
    t: int = 1  # kernel depth, 3-D layers

    @property
    def one_d(self) -> bool:
        return self.op.endswith("1d")

    @property
    def three_d(self) -> bool:
        return self.op.endswith("3d")

    @property
    def transposed(self) -> bool:
        return self.op.startswith("conv_transpose")

    @property
    def input_shape(self):
        if self.one_d:
            return (self.n, self.c, self.w)
        return (self.n, self.c, self.d, self.h, self.w) if self.three_d else (self.n, self.c, self.h, self.w)

    @property
    def weight_shape(self):
        shape = (self.c, self.k // self.groups) if self.transposed else (self.k, self.c // self.groups)
        if self.one_d:
            return shape + (self.s,)
        return shape + ((self.t, self.r, self.s) if self.three_d else (self.r, self.s))

    @property
    def output_shape(self) -> Tuple[int, ...]:
        """The layer's output shape (PyTorch's, on the meta device)."""
        if not self.three_d:
            return tuple(self.problem()[1])
        x, w = torch.empty(self.input_shape, device="meta"), torch.empty(self.weight_shape, device="meta")
        return tuple(self.functional(x, w, **self.conv_args()).shape)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the definition (a transposed layer's as FlopCounterMode counts
        them: every input element times every tap), as ``problem()``'s ConvParams counts them."""
        if not self.three_d:
            return self.problem()[0].macs
        taps = self.t * self.r * self.s
        if self.transposed:
            return math.prod(self.input_shape) * (self.k // self.groups) * taps
        return math.prod(self.output_shape) * (self.c // self.groups) * taps

    def conv_args(self) -> dict:
        args = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)
        if self.transposed:
            args["output_padding"] = self.output_padding
        return args

    @property
    def functional(self) -> Callable:
        """PyTorch's function for this layer (``F.conv2d``, ``F.conv_transpose2d``, ...)."""
        return getattr(F, self.op)

    @property
    def ours(self) -> Callable:
        """Our function for it (``kernels.conv2d``, ``kernels.conv_transpose2d``, ...)."""
        return getattr(kernels, self.op)

    def problem(self):
        """(the ConvParams our kernels run, the output shape): a transposed layer runs as the
        dgrad of that convolution, a 1-D one as a 2-D one over (N, C, 1, L), a 3-D one as itself."""
        args = self.conv_args()
        groups = args.pop("groups")
        x, w = torch.empty(self.input_shape, device="meta"), torch.empty(self.weight_shape, device="meta")
        if self.one_d:
            args = lift_1d(self.op, x, w, **args)
            x, w = x.unsqueeze(-2), w.unsqueeze(-2)
        if self.transposed:
            transposed = TransposedParams.from_shapes(x.shape, w.shape, groups=groups, **args,
                                                      op="conv_transpose3d" if self.three_d else "conv_transpose2d")
            params, shape = transposed.conv, transposed.output_shape
        else:
            params = kernels.ConvParams.from_shapes(x.shape, w.shape, groups=groups, has_bias=self.bias, **args,
                                                    op="conv3d" if self.three_d else "conv2d")
            shape = params.output_shape
        return params, (shape[:2] + shape[3:] if self.one_d else shape)

    @property
    def shape_key(self):
        return (self.op, self.c, self.d, self.h, self.w, self.k, self.t, self.r, self.s, self.stride, self.padding,
                self.dilation, self.groups, self.bias, self.output_padding)

    def with_batch(self, n: int) -> "ConvCase":
        return replace(self, n=n)

    def describe(self) -> str:
        if self.one_d:
            text = f"{self.c}x{self.w}->{self.k} k{self.s}"
        elif self.three_d:
            text = f"{self.c}x{self.d}x{self.h}x{self.w}->{self.k} {self.t}x{self.r}x{self.s}"
        else:
            text = f"{self.c}x{self.h}x{self.w}->{self.k} {self.r}x{self.s}"
        if self.stride != 1:
            text += f" s{self.stride}"
        if self.groups != 1:
            text += " dw" if self.groups == self.c == self.k else f" g{self.groups}"
        return text + (" transposed" if self.transposed else "")


def _op(module: nn.Module) -> Optional[str]:
    return next((op for cls, op in CONV_OPS.items() if isinstance(module, cls)), None)


def _output_padding(module: nn.Module, args) -> tuple:
    """A transposed layer's output_padding for this call (nn.ConvTranspose*d's own rule)."""
    spatial = len(module.kernel_size)
    return module._output_padding(args[0], args[1] if len(args) > 1 else None, module.stride, module.padding,
                                  module.kernel_size, spatial, module.dilation)


def _shape_only_forward(module: nn.Module):
    """A forward that only needs the module's configuration (runs on the meta device, and
    does not depend on how a subclass such as ``cnn.Conv2d`` computes)."""
    op = _op(module)

    def forward(x, *rest):
        if module.padding_mode != "zeros":
            raise ValueError(f"benchmarks: padding_mode={module.padding_mode!r} is not a benchmark case")
        args = [module.stride, module.padding]
        if op.startswith("conv_transpose"):
            args += [_output_padding(module, (x, *rest)), module.groups, module.dilation]
        else:
            args += [module.dilation, module.groups]
        return getattr(F, op)(x, module.weight, module.bias, *args)

    return forward


def conv_layers(model: nn.Module, input_size=(1, 3, 224, 224), suite: str = "model",
                only: Optional[Tuple[str, ...]] = None) -> List[ConvCase]:
    """The unique convolution layers (``nn.Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d``; those of
    the ops in ``only`` if given) ``model`` runs on an input of
    ``input_size``, in order of first use, with counts. The model should be built on the meta
    device (cheap, nothing allocated); it is run once on a meta input and is not modified after
    the call."""
    seen: Dict[tuple, ConvCase] = {}
    handles, saved = [], []

    def record(name):
        def hook(module, args):
            x = args[0]
            op = _op(module)
            one_d, three_d = op.endswith("1d"), op.endswith("3d")
            pick = (lambda v: v[0]) if one_d else _compact  # noqa: E731
            case = ConvCase(
                suite=suite, layer=name, count=1, n=x.shape[0], c=x.shape[1], h=1 if one_d else x.shape[-2],
                w=x.shape[-1], k=module.out_channels, r=1 if one_d else module.kernel_size[-2],
                s=module.kernel_size[-1], stride=pick(module.stride),
                padding=module.padding if isinstance(module.padding, str) else pick(module.padding),
                dilation=pick(module.dilation), groups=module.groups, bias=module.bias is not None, op=op,
                output_padding=pick(_output_padding(module, args)) if op.startswith("conv_transpose") else 0,
                d=x.shape[2] if three_d else 1, t=module.kernel_size[0] if three_d else 1,
            )
            known = seen.get(case.shape_key)
            seen[case.shape_key] = case if known is None else replace(known, count=known.count + 1)

        return hook

    for name, module in model.named_modules():
        op = _op(module)
        if op is not None and (only is None or op in only):
            handles.append(module.register_forward_pre_hook(record(name)))
            saved.append((module, module.__dict__.get("forward")))
            module.forward = _shape_only_forward(module)
    device = next(iter(model.parameters()), torch.empty(0, device="meta")).device
    try:
        with torch.no_grad():
            model.eval()(torch.empty(input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
        for module, forward in saved:
            if forward is None:
                del module.forward
            else:
                module.forward = forward
    return list(seen.values())


def _cnn_builder(name: str) -> Callable[..., nn.Module]:
    def build(**kwargs):
        import cnn

        return getattr(cnn, name)(**kwargs)

    return build


class RepLKNet31BLargeKernels(nn.Module):
    """The large-kernel depthwise convolutions of RepLKNet-31B (Ding et al. 2022; the official
    ``create_RepLKNet31B``: channels 128 / 256 / 512 / 1024, 2 / 2 / 18 / 2 blocks, large kernels
    31 / 29 / 27 / 13, "same" padding, with bias after re-parameterisation) at its stage sizes for a
    224x224 image: 56^2, 28^2, 14^2, 7^2. Only those layers: between the stages the input is halved
    spatially (average pooling) and its channels repeated, where the real network has its BN, 1x1
    and transition convolutions, so the suite's layers are exactly the network's 24 large-kernel ones."""

    CHANNELS = (128, 256, 512, 1024)
    BLOCKS = (2, 2, 18, 2)
    KERNELS = (31, 29, 27, 13)

    def __init__(self):
        super().__init__()
        from cnn import Conv2d

        self.stages = nn.ModuleList(
            nn.Sequential(*[Conv2d(c, c, k, padding=k // 2, groups=c) for _ in range(n)])
            for c, n, k in zip(self.CHANNELS, self.BLOCKS, self.KERNELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x, 4).repeat(1, self.CHANNELS[0] // x.shape[1] + 1, 1, 1)[:, :self.CHANNELS[0]]
        for i, stage in enumerate(self.stages):
            if i:
                x = F.avg_pool2d(x, 2).repeat(1, 2, 1, 1)
            x = stage(x)
        return x


# Suite name -> builder of the network (a cnn model: its convs are cnn.Conv2d / cnn.Conv3d, i.e. kernels').
SUITES: Dict[str, Callable[..., nn.Module]] = {
    "resnet50": _cnn_builder("resnet50"),
    "vgg16": _cnn_builder("vgg16"),
    "mobilenet_v2": _cnn_builder("mobilenet_v2"),
    "efficientnet_b0": _cnn_builder("efficientnet_b0"),
    "densenet121": _cnn_builder("densenet121"),
    "r3d_18": _cnn_builder("r3d_18"),
    "convnext_tiny": _cnn_builder("convnext_tiny"),
    "replknet31b": lambda **kwargs: RepLKNet31BLargeKernels(**kwargs),
}
# Suites whose first layer reads an activation, not the image (its grad_input is part of training).
ACTIVATION_INPUT = {"replknet31b"}
# Suites a CPU run leaves out unless named in --suites: under the interpreter im2col and direct take
# over two minutes each on one 2-channel 31x31 layer (961 taps), for no speed figure.
NOT_ON_INTERPRETER_BY_DEFAULT = {"replknet31b"}
IMAGE = 224
# One sample's input where it is not a (3, IMAGE, IMAGE) image: R3D-18's 16-frame 112x112 clip
# (torchvision's Kinetics-400 recipe).
INPUT_SIZES: Dict[str, Tuple[int, ...]] = {"r3d_18": (3, 16, 112, 112)}
# The batch a suite is benchmarked at on a GPU when no --batches is given, where not the run's
# default: 8 clips (R3D-18 is 41 GMACs per clip); the long convolutions at batch 8 (FlashFFTConv's).
SUITE_BATCHES: Dict[str, int] = {"r3d_18": 8, "longconv": 8}


def input_size(suite: str, image: int = IMAGE) -> Tuple[int, ...]:
    """One sample's input size for ``suite``'s network: its own (``INPUT_SIZES``, a variant's), else a 3 x ``image``^2 image."""
    if suite in VARIANT_SUITES:
        return tuple(VARIANT_SUITES[suite].input_size)
    return INPUT_SIZES.get(suite, (3, image, image))


def all_suites() -> List[str]:
    """The classification networks' suites, then the transposed / 1-D ones."""
    return list(SUITES) + list(VARIANT_SUITES)


def suite_cases(suite: str, batch: int = 1, image: int = IMAGE) -> List[ConvCase]:
    """The unique conv layers of suite ``suite`` at batch ``batch``: an image classifier's at
    ``image``x``image``; a video network's or a ``VARIANT_SUITES`` network's at its own input size."""
    variant = VARIANT_SUITES.get(suite)
    with torch.device("meta"):
        model = variant.build() if variant else SUITES[suite]()
    cases = conv_layers(model, (1, *input_size(suite, image)), suite, only=variant.only if variant else None)
    return [case.with_batch(batch) for case in cases]


def interpreter_scale(suite: str, default: Tuple[int, int]) -> Tuple[int, int]:
    """(channel_div, spatial_div) for ``scaled_down`` under the interpreter: the suite's own, or ``default``."""
    variant = VARIANT_SUITES.get(suite)
    return tuple(variant.interpreter_scale) if variant and variant.interpreter_scale else tuple(default)


def scaled_down(case: ConvCase, channel_div: int, spatial_div: int) -> ConvCase:
    """The same layer with fewer channels and pixels, for the interpreter: kernel size, stride,
    padding, dilation and the group structure (dense, depthwise, grouped) are kept, so the
    same algorithms are eligible."""
    if channel_div == 1 and spatial_div == 1:
        return case
    if case.groups == 1:
        # Layers with more channels than the stem algorithm takes keep more than it takes (a
        # transposed convolution's input is its convolution's output: both sides count).
        from kernels.ops.gemm.stem import MAX_CHANNELS

        c = min(case.c, max(math.ceil(case.c / channel_div), MAX_CHANNELS + 1 if case.c > MAX_CHANNELS else 3))
        k = max(math.ceil(case.k / channel_div), MAX_CHANNELS + 1 if case.k > MAX_CHANNELS else 4)
        groups = 1
    else:
        groups = max(math.ceil(case.groups / channel_div), 2 if case.groups > 1 else 1)
        c = groups * (case.c // case.groups)
        k = groups * (case.k // case.groups)
    dims = 3 if case.three_d else 2
    dilation = (case.dilation,) * dims if isinstance(case.dilation, int) else tuple(case.dilation)
    kernel = (case.t, case.r, case.s)[-dims:]
    sizes = (case.d, case.h, case.w)[-dims:]
    # Each axis keeps at least the kernel's reach (and 4 pixels / frames).
    scaled = [min(size, max(math.ceil(size / spatial_div), dil * (taps - 1) + 1, 4))
              for size, dil, taps in zip(sizes, dilation, kernel)]
    if case.three_d:
        return replace(case, c=c, k=k, d=scaled[0], h=scaled[1], w=scaled[2], groups=groups)
    if case.one_d and case.s == case.w > 16 and case.padding == case.s - 1:
        # A causal long convolution (filter as long as the sequence) keeps that structure at 1 / spatial_div.
        length = max(16, case.w // spatial_div)
        return replace(case, c=c, k=k, w=length, s=length, padding=length - 1, groups=groups)
    return replace(case, c=c, k=k, h=scaled[0], w=scaled[1], groups=groups)
