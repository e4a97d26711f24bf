"""Helpers of the model tests: fresh random weights, PyTorch-convolution copies, comparisons."""
import re

import torch
import torch.nn as nn

from cnn.conv import FAMILIES


def layout(model):
    """``state_dict`` keys, in order, with shapes."""
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def randomise(model, seed=0):
    """Fresh weights and BN statistics of unit-scale activations, so no layer is an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.zero_()
    return model.eval()


def random_float64_model(build):
    """``build()``'s network in float64 on PyTorch's convolutions with ``randomise``'s values, built on
    the meta device first (the builders' own initialisation of millions of weights is skipped)."""
    with torch.device("meta"):
        model = build()
    return randomise(on_pytorch_convs(model).to_empty(device="cpu").double())


def on_pytorch_convs(model):
    """The same module tree with its convolutions computed by PyTorch's (nn.Conv2d for a cnn.Conv2d,
    nn.Conv3d for a cnn.Conv3d, ...: for wiring checks only)."""
    for m in model.modules():
        for torch_class, (ours, _) in FAMILIES.items():
            if isinstance(m, ours):
                m.__class__ = torch_class
    return model


def assert_outputs_close(actual, expected, rtol):
    """Compare to the float64 oracle relative to the output's scale (errors accumulate over depth)."""
    assert actual.shape == expected.shape
    assert torch.isfinite(actual).all()
    scale = expected.abs().max().item()
    assert scale > 1e-3, "degenerate oracle output"
    err = (actual.double() - expected).abs().max().item()
    assert err <= rtol * scale, f"max error {err:.3e} vs output scale {scale:.3e}"


def architecture(model):
    """Every leaf module by name: its kind and hyperparameters (kernel, stride, padding, groups,
    BN eps and momentum, pooling settings, dropout and stochastic-depth rates), which the
    ``state_dict`` does not record; in-place flags and our convolutions' algorithm aside."""
    leaves = {}
    for name, m in model.named_modules():
        if next(m.children(), None) is not None:
            continue
        kind = "Conv2d" if isinstance(m, nn.Conv2d) else type(m).__name__
        if kind == "StochasticDepth":  # torchvision's prints itself without extra_repr
            text = f"p={m.p}, mode={m.mode}"
        else:
            text = re.sub(r",?\s*\b(inplace|algorithm)=[^,]*", "", m.extra_repr())
        leaves[name] = (kind, text)
    return leaves
