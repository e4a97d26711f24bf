"""Benchmark cases derived from real networks: the conv layers a model runs, found by running
it once with forward hooks, each unique layer once with its count in the network.

Nothing here is typed by hand: the shapes come from the ``cnn`` models (ResNet-50, VGG-16,
MobileNetV2, EfficientNet-B0 and DenseNet-121 at 224x224), and ``conv_layers`` works on any
``nn.Module``. EfficientNet-B0 brings 5x5 depthwise and squeeze-and-excitation (1x1 convolutions
on 1x1 maps), DenseNet-121 many narrow 1x1 bottlenecks over ever wider concatenations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

Pair = Union[int, Tuple[int, int]]


def _compact(value):
    """(a, a) -> a, so reports read like the layer definitions."""
    if isinstance(value, (tuple, list)):
        value = tuple(int(v) for v in value)
        return value[0] if len(set(value)) == 1 else value
    return value


@dataclass(frozen=True)
class ConvCase:
    """One unique conv layer of a network (batch ``n``) and how often the network runs it."""

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

    @property
    def input_shape(self):
        return (self.n, self.c, self.h, self.w)

    @property
    def weight_shape(self):
        return (self.k, self.c // self.groups, self.r, self.s)

    def conv_args(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    @property
    def shape_key(self):
        return (self.c, self.h, self.w, self.k, self.r, self.s, self.stride, self.padding, self.dilation,
                self.groups, self.bias)

    def with_batch(self, n: int) -> "ConvCase":
        return replace(self, n=n)

    def describe(self) -> str:
        text = f"{self.c}x{self.h}x{self.w}->{self.k} {self.r}x{self.s}"
        if self.stride != 1:
            text += f" s{self.stride}"
        if self.groups != 1:
            text += " dw" if self.groups == self.c == self.k else f" g{self.groups}"
        return text


def _shape_only_forward(module: nn.Conv2d):
    """A forward that only needs the module's configuration (runs on the meta device, and
    does not depend on how a subclass such as ``cnn.Conv2d`` computes)."""

    def forward(x):
        if module.padding_mode != "zeros":
            raise ValueError(f"benchmarks: padding_mode={module.padding_mode!r} is not a benchmark case")
        return F.conv2d(x, module.weight, module.bias, module.stride, module.padding, module.dilation, module.groups)

    return forward


def conv_layers(model: nn.Module, input_size=(1, 3, 224, 224), suite: str = "model") -> List[ConvCase]:
    """The unique ``nn.Conv2d`` layers ``model`` runs on an input of ``input_size``, in order of
    first use, with counts. The model should be built on the meta device (cheap, nothing
    allocated); it is run once on a meta input and is not modified after the call."""
    seen: Dict[tuple, ConvCase] = {}
    handles, saved = [], []

    def record(name):
        def hook(module, args):
            x = args[0]
            case = ConvCase(
                suite=suite, layer=name, count=1, n=x.shape[0], c=x.shape[1], h=x.shape[2], w=x.shape[3],
                k=module.out_channels, r=module.kernel_size[0], s=module.kernel_size[1],
                stride=_compact(module.stride), padding=_compact(module.padding),
                dilation=_compact(module.dilation), groups=module.groups, bias=module.bias is not None,
            )
            known = seen.get(case.shape_key)
            seen[case.shape_key] = case if known is None else replace(known, count=known.count + 1)

        return hook

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
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


# Suite name -> builder of the network (a cnn model: its convs are cnn.Conv2d, i.e. kernels.conv2d).
SUITES: Dict[str, Callable[..., nn.Module]] = {
    "resnet50": _cnn_builder("resnet50"),
    "vgg16": _cnn_builder("vgg16"),
    "mobilenet_v2": _cnn_builder("mobilenet_v2"),
    "efficientnet_b0": _cnn_builder("efficientnet_b0"),
    "densenet121": _cnn_builder("densenet121"),
}
IMAGE = 224


def suite_cases(suite: str, batch: int = 1, image: int = IMAGE) -> List[ConvCase]:
    """The unique conv layers of suite ``suite`` at ``image``x``image``, batch ``batch``."""
    with torch.device("meta"):
        model = SUITES[suite]()
    return [case.with_batch(batch) for case in conv_layers(model, (1, 3, image, image), suite)]


def scaled_down(case: ConvCase, channel_div: int, spatial_div: int) -> ConvCase:
    """The same layer with fewer channels and pixels, for the interpreter: kernel size, stride,
    padding, dilation and the group structure (dense, depthwise, grouped) are kept, so the
    same algorithms are eligible."""
    if channel_div == 1 and spatial_div == 1:
        return case
    if case.groups == 1:
        # Layers with more channels than the stem algorithm takes keep more than it takes.
        from kernels.ops.stem import MAX_CHANNELS

        floor = MAX_CHANNELS + 1 if case.c > MAX_CHANNELS else 3
        c = min(case.c, max(math.ceil(case.c / channel_div), floor))
        k = max(math.ceil(case.k / channel_div), 4)
        groups = 1
    else:
        groups = max(math.ceil(case.groups / channel_div), 2 if case.groups > 1 else 1)
        c = groups * (case.c // case.groups)
        k = groups * (case.k // case.groups)
    reach_h = (case.dilation if isinstance(case.dilation, int) else case.dilation[0]) * (case.r - 1) + 1
    reach_w = (case.dilation if isinstance(case.dilation, int) else case.dilation[1]) * (case.s - 1) + 1
    h = min(case.h, max(math.ceil(case.h / spatial_div), reach_h, 4))
    w = min(case.w, max(math.ceil(case.w / spatial_div), reach_w, 4))
    return replace(case, c=c, k=k, h=h, w=w, groups=groups)
