"""``cnn.quantize(model, calibration, dtype, observer)``: post-training fp8 (e4m3) / int8 inference.

The model is first fused by ``cnn.fuse`` (its matching, unchanged: every conv -> BN (-> add)
(-> act) chain becomes one ``FusedConv2dBN``); each of those becomes a ``QuantizedConv2dBN``,
one ``kernels.conv2d_scaled`` call with the same BN, residual and activation epilogue:

* weights: symmetric, per output channel, ``weight_scale[k] = max|W[k]| / qmax`` (qmax = 127 for
  int8, 448 for e4m3); the BatchNorm is not folded into the 8-bit weight but applied in fp32 in
  the epilogue, as ``conv2d_bn`` does;
* activations: symmetric, per tensor, ``input_scale = amax / qmax``, amax observed on the layer's
  float input over the ``calibration`` batches: ``observer="max"`` the largest |x| seen,
  ``"percentile"`` the mean over batches of the 99.99th percentile of |x| (clips rare outliers);
* between layers: where a quantized layer's output feeds exactly one quantized layer (and nothing
  else) in the traced graph, it is stored there already quantized with that layer's input scale
  (``conv2d_scaled``'s ``output_scale``): 1 byte per activation. Elsewhere (a block's input that is
  also its residual, pooling, the classifier) the output stays in the model's float dtype.

What stays in floating point, by default: the stem (a fused conv with <= 4 input channels, i.e.
one reading the image: its 3 (or 1) channels make a reduction of 27-147 terms that gains nothing
from 8-bit tensor cores, and the first layer's error propagates through the whole network:
``keep_stem=False`` quantizes it too); every layer ``cnn.fuse`` does not fuse (the classifier
``nn.Linear``, convolutions without a following BatchNorm, pre-activation BatchNorms, pooling,
squeeze-excitation); 3-D convolutions (``conv2d_scaled`` is 2-D). Inference only; the original
model is not modified.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Optional

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

import kernels

from .fuse import FusedConv2dBN, fuse

QMAX = {torch.int8: 127.0, torch.float8_e4m3fn: 448.0}
OBSERVERS = ("max", "percentile")
PERCENTILE = 99.99
_QUANTILE_SAMPLES = 1 << 20  # torch.quantile's input limit is 2^24: subsample larger activations


def quantize_tensor(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x / scale`` as ``dtype``: saturating, round to nearest even (int8 at [-128, 127], e4m3 at
    +-448), as ``conv2d_scaled``'s quantized store does."""
    v = x.float() / scale
    if dtype == torch.int8:
        return torch.round(v).clamp_(-128, 127).to(torch.int8)
    return v.clamp_(-448.0, 448.0).to(dtype)


def weight_quantization(weight: torch.Tensor, dtype: torch.dtype):
    """(8-bit weight, per-output-channel float32 scale): symmetric, max|W[k]| maps to qmax."""
    w = weight.detach().float()
    amax = w.abs().amax(dim=tuple(range(1, w.dim())))
    scale = torch.where(amax > 0, amax / QMAX[dtype], torch.ones_like(amax))
    q = (w / scale.view(-1, *[1] * (w.dim() - 1)))
    q = torch.round(q).clamp_(-127, 127).to(torch.int8) if dtype == torch.int8 else q.to(dtype)
    return q, scale.contiguous()


class _Observer:
    """The amax of a layer's float input over the calibration batches."""

    def __init__(self, kind: str):
        self.kind = kind
        self.values = []
        self.dtype = None

    def __call__(self, module, args):
        x = args[0].detach()
        self.dtype = x.dtype
        a = x.abs().float().flatten()
        if self.kind == "max":
            self.values.append(a.max() if a.numel() else torch.zeros(()))
        else:
            if a.numel() > _QUANTILE_SAMPLES:
                a = a[torch.randint(a.numel(), (_QUANTILE_SAMPLES,), generator=torch.Generator().manual_seed(0))
                      .to(a.device)]
            self.values.append(torch.quantile(a, PERCENTILE / 100))

    def amax(self) -> float:
        if not self.values:
            raise RuntimeError("cnn.quantize: a fused layer saw no calibration batch (calibration is empty, "
                               "or the layer is not on the path the batches take)")
        stacked = torch.stack([v.cpu() for v in self.values])
        return float(stacked.max() if self.kind == "max" else stacked.mean())


class QuantizedConv2dBN(nn.Module):
    """``act(bn(conv(x)) [+ residual])`` as one ``kernels.conv2d_scaled``: 8-bit weight with
    per-channel scales, the input quantized with its calibrated per-tensor scale (unless it arrives
    quantized from the layer before), BN / residual / activation in the fp32 epilogue. With
    ``output_scale`` set the output is stored quantized for the one quantized layer it feeds."""

    def __init__(self, fused: FusedConv2dBN, dtype: torch.dtype, input_amax: float, float_dtype: torch.dtype):
        super().__init__()
        q, scale = weight_quantization(fused.weight, dtype)
        self.register_buffer("qweight", q)
        self.register_buffer("weight_scale", scale)
        amax = input_amax if input_amax > 0 and math.isfinite(input_amax) else 1.0
        self.register_buffer("input_scale", torch.tensor([amax / QMAX[dtype]], dtype=torch.float32,
                                                         device=fused.weight.device))
        self.register_buffer("bias", None if fused.bias is None else fused.bias.detach().float().clone())
        self.register_buffer("running_mean", fused.running_mean.detach().clone())
        self.register_buffer("running_var", fused.running_var.detach().clone())
        self.register_buffer("bn_weight", None if fused.bn_weight is None else fused.bn_weight.detach().clone())
        self.register_buffer("bn_bias", None if fused.bn_bias is None else fused.bn_bias.detach().clone())
        self.register_buffer("output_scale", None)
        self.eps = fused.eps
        self.stride, self.padding, self.dilation, self.groups = fused.stride, fused.padding, fused.dilation, fused.groups
        self.padding_mode = fused.padding_mode
        self._reversed_padding_repeated_twice = fused._reversed_padding_repeated_twice
        self.activation = fused.activation
        self.dtype = dtype
        # The float layer's input dtype (calibration's): the output's, unless stored quantized.
        self.float_dtype = float_dtype if float_dtype in (torch.float16, torch.bfloat16) else torch.float32

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        padding = self.padding
        if x.dtype != self.dtype:
            if self.padding_mode != "zeros":
                x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
                padding = 0
            x = quantize_tensor(x, self.input_scale, self.dtype)
        quantized_out = self.output_scale is not None
        return kernels.conv2d_scaled(
            x, self.qweight, self.input_scale, self.weight_scale, self.bias, self.stride, padding, self.dilation,
            self.groups, out_dtype=self.dtype if quantized_out else self.float_dtype,
            running_mean=self.running_mean, running_var=self.running_var, bn_weight=self.bn_weight,
            bn_bias=self.bn_bias, eps=self.eps, residual=residual, activation=self.activation,
            output_scale=self.output_scale)

    def extra_repr(self) -> str:
        return (f"{self.qweight.shape[1] * self.groups}, {self.qweight.shape[0]}, "
                f"kernel_size={tuple(self.qweight.shape[2:])}, stride={self.stride}, padding={self.padding}, "
                f"groups={self.groups}, dtype={self.dtype}, activation={self.activation!r}, "
                f"output={'quantized' if self.output_scale is not None else self.float_dtype}")


def _is_stem(module: FusedConv2dBN) -> bool:
    return module.weight.shape[1] * module.groups <= 4


def _calibrate(fused: nn.Module, targets: Dict[str, FusedConv2dBN], calibration: Iterable, observer: str):
    observers = {name: _Observer(observer) for name in targets}
    handles = [module.register_forward_pre_hook(observers[name]) for name, module in targets.items()]
    try:
        with torch.no_grad():
            for batch in calibration:
                fused(batch)
    finally:
        for h in handles:
            h.remove()
    return observers


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _chain(root: nn.Module) -> int:
    """Store quantized the outputs that feed exactly one quantized layer as its input; returns how many."""
    chained = 0
    for graph_module in [m for m in root.modules() if isinstance(m, fx.GraphModule)]:
        for node in graph_module.graph.nodes:
            if node.op != "call_module":
                continue
            producer = graph_module.get_submodule(node.target)
            if not isinstance(producer, QuantizedConv2dBN) or len(node.users) != 1:
                continue
            user = next(iter(node.users))
            if user.op != "call_module" or user.args[:1] != (node,) or node in user.args[1:] or user.kwargs:
                continue
            consumer = graph_module.get_submodule(user.target)
            if (isinstance(consumer, QuantizedConv2dBN) and consumer.dtype == producer.dtype
                    and consumer.padding_mode == "zeros"):
                producer.output_scale = consumer.input_scale.clone()
                chained += 1
    return chained


def quantize(model: nn.Module, calibration: Iterable[torch.Tensor], dtype: torch.dtype = torch.float8_e4m3fn,
             observer: str = "max", *, keep_stem: bool = True) -> nn.Module:
    """An eval-mode copy of ``model`` whose ``cnn.fuse`` chains run on ``kernels.conv2d_scaled``.

    ``calibration``: an iterable of input batches (each ``model(batch)``-able), run through the
    fused float model once to observe every quantized layer's input range. ``dtype``:
    ``torch.float8_e4m3fn`` or ``torch.int8``. ``observer``: "max" or "percentile" (see the module
    docstring). ``keep_stem``: leave the layers reading the image (<= 4 input channels) in float.
    The original model is untouched; the copy is for inference only.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"cnn.quantize: model must be an nn.Module, got {type(model).__name__}")
    if dtype not in QMAX:
        raise ValueError(f"cnn.quantize: dtype must be torch.float8_e4m3fn or torch.int8, got {dtype}")
    if observer not in OBSERVERS:
        raise ValueError(f"cnn.quantize: observer must be one of {list(OBSERVERS)}, got {observer!r}")
    fused = fuse(model)
    targets = {name: m for name, m in fused.named_modules()
               if isinstance(m, FusedConv2dBN) and not (keep_stem and _is_stem(m))}
    observers = _calibrate(fused, targets, calibration, observer)
    for name, module in targets.items():
        obs = observers[name]
        _set(fused, name, QuantizedConv2dBN(module, dtype, obs.amax(), obs.dtype))
    _chain(fused)
    return fused.eval()


def sqnr(reference: torch.Tensor, actual: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(sum ref^2 / sum (ref - actual)^2)."""
    ref = reference.detach().double()
    noise = (ref - actual.detach().double()).pow(2).sum().item()
    signal = ref.pow(2).sum().item()
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def layer_sqnr(model: nn.Module, calibration: Iterable[torch.Tensor], dtype: torch.dtype = torch.float8_e4m3fn,
               observer: str = "max", batches: Optional[Iterable[torch.Tensor]] = None,
               keep_stem: bool = True) -> Dict[str, float]:
    """Per fused layer: SQNR (dB) of its quantized form against the float layer, both fed the float
    layer's own inputs (and residual) captured on ``batches`` (default: ``calibration``), scales
    calibrated on ``calibration``. Isolates each layer's own error (no propagation)."""
    calibration = list(calibration)
    quantized = quantize(model, calibration, dtype, observer, keep_stem=keep_stem)
    fused = fuse(model)
    names = [name for name, m in quantized.named_modules() if isinstance(m, QuantizedConv2dBN)]
    captured: Dict[str, list] = {name: [] for name in names}

    def hook(name):
        def capture(module, args, output):
            captured[name].append((args, output))
        return capture

    handles = [fused.get_submodule(name).register_forward_hook(hook(name)) for name in names]
    try:
        with torch.no_grad():
            for batch in (calibration if batches is None else batches):
                fused(batch)
    finally:
        for h in handles:
            h.remove()
    result = {}
    with torch.no_grad():
        for name in names:
            layer = quantized.get_submodule(name)
            layer.output_scale = None  # compare in float: this copy is not returned
            refs, outs = [], []
            for args, output in captured[name]:
                refs.append(output.flatten())
                outs.append(layer(*args).flatten())
            result[name] = sqnr(torch.cat(refs), torch.cat(outs))
    return result
