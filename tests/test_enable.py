"""kernels.enable() / disable() / enabled(): unmodified PyTorch code (F.conv*, nn.Conv*,
nn.ConvTranspose*, a torchvision ResNet-18, a U-Net) runs its convolutions on our kernels,
forward and backward, through PyTorch's dispatcher, with PyTorch's results; what we do not
implement passes through to PyTorch untouched. References are computed with it disabled."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
from kernels.aten import ROUTED, current_algorithm, is_enabled
from kernels.core.launcher import LAUNCHES
from launches import convolution_launches_since, launched_since
from reference import assert_close
from test_cnn_models import randomise
from torchvision_oracle import import_torchvision
from variant_cases import case, random_inputs

CALLS = [
    case("conv2d", (2, 4, 6, 6), (6, 2, 3, 3), stride=2, padding=1, groups=2),
    case("conv2d", (1, 3, 6, 5), (4, 3, 2, 2), padding="same"),  # PyTorch pads asymmetrically, then convolves
    case("conv1d", (2, 4, 9), (6, 4, 3), padding=1, dilation=2),
    case("conv_transpose2d", (2, 4, 5, 5), (4, 3, 3, 3), stride=2, padding=1, output_padding=1),
    case("conv_transpose1d", (1, 4, 6), (4, 2, 4), stride=2, padding=1, groups=2),
]


def _forward_backward(c, x, w, b):
    y = getattr(F, c.op)(x, w, b, **c.args)
    return (y, *torch.autograd.grad((y * y).sum(), (x, w, b)))


@pytest.fixture(autouse=True)
def _always_disabled_after():
    yield
    kernels.disable()


@pytest.mark.parametrize("c", CALLS, ids=str)
def test_functional_calls_run_on_our_kernels(c, device):
    x, w, b = random_inputs(c, torch.float64, device, requires_grad=True)
    expected = _forward_backward(c, *(t.detach().cpu().requires_grad_(True) for t in (x, w, b)))
    routed, launches = ROUTED.copy(), LAUNCHES.copy()
    with kernels.enabled():
        got = _forward_backward(c, x, w, b)
    assert ROUTED - routed == {"convolution": 1, "convolution_backward": 1}
    assert convolution_launches_since(launches) == 4  # forward, grad_input, grad_weight, grad_bias
    for g, e, what in zip(got, expected, ("output", "grad_input", "grad_weight", "grad_bias")):
        assert_close(g, e, torch.float64, 100, what)
        assert g.stride() == e.stride() or c.op.endswith("1d"), what


def test_pytorch_again_after_disable_and_on_exit(device):
    x, w = torch.randn(1, 2, 5, 5, device=device), torch.randn(3, 2, 3, 3, device=device)
    kernels.enable()
    assert is_enabled()
    kernels.disable()
    launches = sum(LAUNCHES.values())
    with kernels.enabled("im2col"):
        with kernels.enabled("direct"):
            F.conv2d(x, w)
            assert current_algorithm() == "direct"
        assert current_algorithm() == "im2col"
        before = LAUNCHES.copy()
        F.conv2d(x, w)
        assert dict(launched_since(before)) == {"_im2col_forward_kernel": 1}
    assert not is_enabled() and current_algorithm() is None
    launches = sum(LAUNCHES.values())
    F.conv2d(x.cpu(), w.cpu())
    assert sum(LAUNCHES.values()) == launches
    with pytest.raises(ValueError, match="fft2"):
        kernels.enable("fft2")


def test_3d_convolutions_are_ours_and_complex_ones_three_real_ones(device):
    """3-D convolutions run on our kernels, forward and backward (issue 24; they used to pass through).
    A complex F.conv2d never reaches the op as complex: PyTorch computes it as three real
    convolutions, which are ours."""
    x = torch.randn(1, 2, 4, 4, 4, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(3, 2, 2, 2, 2, dtype=torch.float64, device=device, requires_grad=True)
    expected = F.conv3d(x, w, padding=1)
    expected_grad = torch.autograd.grad(expected.sum(), x)[0]
    routed, launches = ROUTED.copy(), sum(LAUNCHES.values())
    with kernels.enabled():
        got = F.conv3d(x, w, padding=1)
        got_grad = torch.autograd.grad(got.sum(), x)[0]
    assert ROUTED - routed == {"convolution": 1, "convolution_backward": 1}
    assert sum(LAUNCHES.values()) > launches
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-12, atol=1e-12)

    xc, wc = torch.randn(1, 2, 5, 5, dtype=torch.complex128), torch.randn(3, 2, 3, 3, dtype=torch.complex128)
    routed = ROUTED.copy()
    with kernels.enabled():
        got = F.conv2d(xc.to(device), wc.to(device))
    assert ROUTED - routed == {"convolution": 3}
    torch.testing.assert_close(got.cpu(), F.conv2d(xc, wc), rtol=1e-12, atol=1e-12)


def test_bad_input_raises_pytorchs_own_error(device):
    x, w = torch.randn(1, 4, 5, 5), torch.randn(3, 2, 3, 3)
    with pytest.raises(RuntimeError) as theirs:
        F.conv2d(x, w)
    with kernels.enabled(), pytest.raises(RuntimeError) as ours:
        F.conv2d(x.to(device), w.to(device))
    assert str(ours.value) == str(theirs.value)


def test_double_backward_forward_mode_vmap_and_autocast(device):
    """PyTorch's own derivative formulas, batching rules and autocast, dispatching to our kernels."""
    c = CALLS[0]
    x, w, b = random_inputs(c, torch.float64, device)
    v = torch.randn_like(w)

    def results():
        penalty = torch.func.grad(lambda w: (torch.func.grad(
            lambda x: (F.conv2d(x, w, b, **c.args) ** 2).sum())(x) ** 2).sum())(w)
        tangent = torch.func.jvp(lambda w: F.conv2d(x, w, b, **c.args), (w,), (v,))[1]
        per_sample = torch.func.vmap(torch.func.grad(lambda w, x: F.conv2d(x[None], w, b, **c.args).square().sum()),
                                     in_dims=(None, 0))(w, x)
        return penalty, tangent, per_sample

    expected = results()
    routed = ROUTED.copy()
    with kernels.enabled():
        got = results()
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            low = F.conv2d(x.float(), w.float(), b.float(), **c.args)
    routed = ROUTED - routed
    assert routed["convolution"] >= 5 and routed["convolution_backward"] >= 2 and not routed["passed_through"]
    for g, e, what in zip(got, expected, ("gradient penalty", "jvp", "per-sample grad")):
        assert e.abs().max() > 0
        assert_close(g, e, torch.float64, 500, what)
    assert low.dtype == torch.bfloat16
    assert_close(low, F.conv2d(*(t.to(torch.bfloat16).double() for t in (x, w, b)), **c.args), torch.bfloat16, 18)


# --- whole models -----------------------------------------------------------------------------

def narrowed(model: nn.Module, div: int) -> nn.Module:
    """The same module graph with every channel count (not the RGB input's) divided by ``div``:
    the interpreter runs full-width ResNet-18 convolutions far too slowly for the test suite."""
    if div == 1:
        return model
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                c_in = child.in_channels if child.in_channels == 3 else child.in_channels // div
                new = nn.Conv2d(c_in, child.out_channels // div, child.kernel_size, child.stride, child.padding,
                                child.dilation, child.groups, child.bias is not None)
            elif isinstance(child, nn.BatchNorm2d):
                new = nn.BatchNorm2d(child.num_features // div)
            elif isinstance(child, nn.Linear):
                new = nn.Linear(child.in_features // div, child.out_features)
            else:
                continue
            setattr(parent, name, new)
    return model


class UNet(nn.Module):
    """A small U-Net: two encoder levels, a 2x2 stride-2 and a DCGAN-style 4x4 stride-2
    ConvTranspose2d upsampler, skip connections, a 1x1 head; one convolution pads by
    reflection (nn.Conv2d pads explicitly, then convolves unpadded)."""

    def __init__(self, c=4):
        super().__init__()

        def block(i, o, mode="zeros"):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, padding_mode=mode), nn.BatchNorm2d(o), nn.ReLU())

        self.enc1, self.enc2, self.bottom = block(3, c), block(c, 2 * c), block(2 * c, 4 * c, "reflect")
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.dec2 = block(4 * c, 2 * c)
        self.up1 = nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1)
        self.dec1 = block(2 * c, c)
        self.head = nn.Conv2d(c, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        d2 = self.dec2(torch.cat([self.up2(self.bottom(F.max_pool2d(e2, 2))), e2], 1))
        return self.head(self.dec1(torch.cat([self.up1(d2), e1], 1)))


class Sequence1d(nn.Module):
    """A causal depthwise Conv1d, a pointwise Conv1d and a ConvTranspose1d upsampler."""

    def __init__(self, c=8):
        super().__init__()
        self.short = nn.Conv1d(c, c, 4, groups=c)
        self.mix = nn.Conv1d(c, c, 1)
        self.up = nn.ConvTranspose1d(c, 4, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x):
        return self.up(torch.relu(self.mix(self.short(F.pad(x, (3, 0))))))


def build(name: str, device: str):
    if name == "resnet18":
        model = narrowed(import_torchvision().models.resnet18(num_classes=10), 1 if device == "cuda" else 16)
        return randomise(model), torch.randn(2, 3, 32, 32) if device == "cuda" else torch.randn(1, 3, 16, 16)
    if name == "unet":
        return randomise(UNet()), torch.randn(1, 3, 8, 8)
    return Sequence1d(), torch.randn(2, 8, 12)


CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)


@pytest.mark.parametrize("name", ["resnet18", "unet", "sequence1d"])
def test_models_run_every_convolution_on_our_kernels(name, device):
    """torchvision's ResNet-18 (full width on a GPU; under the interpreter every width / 16, same
    graph), a U-Net with ConvTranspose2d and a 1-D model: PyTorch's outputs and gradients, and
    every convolution forward and backward on our kernels, counted in launches."""
    model, x = build(name, device)
    model = model.double()
    reference = copy.deepcopy(model)
    x = x.double()
    expected = reference(x)
    expected.square().sum().backward()

    model = model.to(device)
    convs = []  # (input requires grad, has bias) per convolution call
    hooks = [m.register_forward_pre_hook(lambda m, args: convs.append((args[0].requires_grad, m.bias is not None)))
             for m in model.modules() if isinstance(m, CONVOLUTIONS)]
    routed, launches = ROUTED.copy(), LAUNCHES.copy()
    with kernels.enabled():
        got = model(x.to(device))
        got.square().sum().backward()
    for h in hooks:
        h.remove()
    assert len(convs) == sum(isinstance(m, CONVOLUTIONS) for m in model.modules()) > 0
    assert ROUTED - routed == {"convolution": len(convs), "convolution_backward": len(convs)}
    # One launch per forward, per grad_input (not for the image's), per grad_weight, per grad_bias.
    assert convolution_launches_since(launches) == sum(2 + needs_dx + bias for needs_dx, bias in convs)
    assert_close(got, expected, torch.float64, 1000)
    for (key, p), ref in zip(model.named_parameters(), reference.parameters()):
        assert_close(p.grad, ref.grad, torch.float64, 1000, f"grad of {key}")
