"""cnn.fuse on real architectures: torchvision's models, the cnn models, and blocks in user code.

Two kinds of check:

* Full-size models (ResNet-50, ResNeXt-50, MobileNetV2, MobileNetV3-Large, VGG-16-BN, from
  torchvision and from ``cnn``) are too wide for Triton's CPU interpreter, so there the fused
  model runs with ``kernels.conv2d_bn`` replaced by its specification (the eager composition in
  float64, ``spec_conv2d_bn`` below). That checks the graph rewrite - which conv pairs with which
  BN and eps, where residuals and activations go, that no BatchNorm is left and the original is
  untouched - and counts launches per forward before and after fusing. ``test_fused.py`` holds
  ``conv2d_bn`` itself to that specification for every algorithm.
* Small networks made of the same block classes (torchvision's Bottleneck, BasicBlock,
  Conv2dNormActivation, MobileNetV2/V3 InvertedResidual with SqueezeExcitation) run end to end
  on the real Triton kernels and are compared with the original eval model.

BatchNorm statistics and affine parameters are randomised everywhere: identity BNs hide bugs.
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

import cnn
import kernels
from cnn.fuse import FusedConv2dBN, fuse
from kernels.ops import common
from kernels.tuning import TunedKernel
from torchvision_oracle import import_torchvision

ACTIVATIONS = {
    None: lambda t: t, "relu": F.relu, "relu6": F.relu6, "silu": F.silu,
    "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid, "sigmoid": torch.sigmoid,
}


def spec_conv2d_bn(input, weight, bias, running_mean, running_var, bn_weight=None, bn_bias=None, eps=1e-5,
                   stride=1, padding=0, dilation=1, groups=1, *, residual=None, activation=None, algorithm="auto"):
    """conv2d_bn's contract, in float64 eager PyTorch (the oracle of test_fused.py)."""
    d = lambda t: None if t is None else t.double()
    y = F.conv2d(d(input), d(weight), d(bias), stride, padding, dilation, groups)
    y = F.batch_norm(y, d(running_mean), d(running_var), d(bn_weight), d(bn_bias), training=False, eps=eps)
    if residual is not None:
        y = y + d(residual)
    return ACTIVATIONS[activation](y).to(input.dtype)


class LaunchCounter(TorchDispatchMode):
    """Counts the kernels a forward launches: every ATen op that computes (views and
    allocations excluded) and every Triton launch, or ``conv2d_bn`` call when it is the spec."""

    FREE = {"empty", "empty_strided", "empty_like", "detach", "alias", "lift_fresh", "as_strided_", "resize_"}

    def __init__(self):
        super().__init__()
        self.launches = 0
        self.ops = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not func.is_view and name not in self.FREE:
            self.count(name)
        return func(*args, **(kwargs or {}))

    def count(self, name):
        self.launches += 1
        self.ops[name] = self.ops.get(name, 0) + 1

    def opaque(self, name, fn):
        """``fn`` counted as one launch; what it does inside is not seen (Triton's interpreter
        runs its kernels with torch ops of its own)."""
        def wrapped(*args, **kwargs):
            self.count(name)
            with _disable_current_modes():
                return fn(*args, **kwargs)
        return wrapped


def count_launches(model, x, monkeypatch, spec=False):
    """(counter, output): launches of a second forward (the first may fill caches), the first's output.

    ``spec``: ``kernels.conv2d`` / ``conv2d_bn`` run as their specification (eager PyTorch, one
    launch each), for models too wide for the interpreter; else Triton launches are counted.
    """
    counter = LaunchCounter()
    plain_conv = lambda x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, algorithm="auto": F.conv2d(
        x, w, b, stride, padding, dilation, groups)
    with torch.no_grad():
        if spec:
            monkeypatch.setattr(kernels, "conv2d", plain_conv)
            monkeypatch.setattr(kernels, "conv2d_bn", spec_conv2d_bn)
        y = model(x)
        # NaN-poisoning new buffers is test instrumentation, not a launch of the product.
        monkeypatch.setattr(common, "POISON_OUTPUTS", False)
        if spec:
            monkeypatch.setattr(kernels, "conv2d", counter.opaque("conv2d", plain_conv))
            monkeypatch.setattr(kernels, "conv2d_bn", counter.opaque("conv2d_bn", spec_conv2d_bn))
        else:
            original = TunedKernel.__getitem__
            monkeypatch.setattr(TunedKernel, "__getitem__",
                                lambda self, grid: counter.opaque(self.name, original(self, grid)))
        with counter:
            model(x)
    monkeypatch.undo()
    return counter, y


def randomise_batch_norms(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.5)
                m.running_var.uniform_(0.3, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.3)
    return model.eval()


def batch_norms(model):
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def fused_modules(model):
    return [m for m in model.modules() if isinstance(m, FusedConv2dBN)]


def relative_error(y, ref):
    return ((y.double() - ref.double()).norm() / ref.double().norm()).item()


def small_vgg_head(model):
    """VGG's classifier (no conv, no BN, 120M parameters) made small, so the copies stay cheap."""
    if hasattr(model, "classifier") and isinstance(model.classifier, nn.Sequential) and \
            isinstance(model.classifier[0], nn.Linear) and model.classifier[0].in_features == 512 * 7 * 7:
        model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 16), nn.ReLU(True), nn.Linear(16, 10))
    return model


def check_fused_model(model, x, monkeypatch, *, spec):
    """Fuse, compare with the original eval model, check the original is untouched; returns
    (fused model, launches before, launches after)."""
    small_vgg_head(model)
    randomise_batch_norms(model)
    state = copy.deepcopy(model.state_dict())
    bns = batch_norms(model)
    fused = fuse(model)
    assert batch_norms(fused) == 0
    assert len(fused_modules(fused)) == bns
    assert not fused.training
    assert batch_norms(model) == bns and not model.training
    before, ref = count_launches(model, x, monkeypatch, spec=spec)
    after, y = count_launches(fused, x, monkeypatch, spec=spec)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    assert relative_error(y, ref) < 1e-4
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), f"fuse modified the original model's {key}"
    assert after.launches < before.launches
    return fused, before, after


TORCHVISION_MODELS = ["resnet50", "resnext50_32x4d", "mobilenet_v2", "mobilenet_v3_large", "vgg16_bn"]
CNN_MODELS = ["resnet50", "mobilenet_v2", "mobilenet_v3_large", "vgg16_bn", "se_resnet50", "mobilenet_v1"]


def _expected_activations(name):
    """How many fused convs end in each activation: from the architecture, not from the code."""
    if name.startswith("resnet50") or name.startswith("resnext50") or name.startswith("se_resnet50"):
        # 16 bottlenecks: conv1/conv2 + ReLU, bn3 + add + ReLU (or the downsample conv plain), 1 stem.
        return {"relu": 1 + 16 * 3, None: 4}
    return None


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_fuse_torchvision_models(name, monkeypatch):
    torchvision = import_torchvision()
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)()
    fused, before, after = check_fused_model(model, torch.randn(1, 3, 32, 32), monkeypatch, spec=True)
    acts = {}
    for m in fused_modules(fused):
        acts[m.activation] = acts.get(m.activation, 0) + 1
    expected = _expected_activations(name)
    if expected is not None:
        assert acts == expected
    if name == "mobilenet_v3_large":
        assert set(acts) == {None, "relu", "hardswish"}
        assert {m.eps for m in fused_modules(fused)} == {1e-3}  # MobileNetV3's own BN eps
    print(f"{name}: launches per forward {before.launches} -> {after.launches}; {acts}")


@pytest.mark.parametrize("name", CNN_MODELS)
def test_fuse_cnn_models(name, monkeypatch):
    torch.manual_seed(0)
    model = getattr(cnn, name)()
    fused, before, after = check_fused_model(model, torch.randn(1, 3, 32, 32), monkeypatch, spec=True)
    algorithms = {m.algorithm for m in fused_modules(fused)}
    assert algorithms, "no fused conv"
    print(f"cnn.{name}: launches per forward {before.launches} -> {after.launches}")


def small_block_network(torchvision):
    """torchvision's own block classes at a width the interpreter runs in seconds."""
    from functools import partial

    from torchvision.models.mobilenetv2 import InvertedResidual as V2Block
    from torchvision.models.mobilenetv3 import InvertedResidual as V3Block, InvertedResidualConfig
    from torchvision.models.resnet import BasicBlock, Bottleneck
    from torchvision.ops.misc import Conv2dNormActivation

    downsample = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
    return nn.Sequential(
        Conv2dNormActivation(3, 8, activation_layer=nn.ReLU6),
        Bottleneck(8, 4, stride=2, downsample=downsample),  # bn3 + downsample + ReLU
        BasicBlock(16, 16),  # bn2 + identity + ReLU
        V2Block(16, 16, stride=1, expand_ratio=2),  # linear bottleneck + residual
        V3Block(InvertedResidualConfig(16, 3, 32, 16, True, "HS", 1, 1, 1.0),
                norm_layer=partial(nn.BatchNorm2d, eps=1e-3)),  # Hardswish, SE, residual, eps 1e-3
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def test_fused_blocks_on_triton_kernels(monkeypatch):
    """End to end on the real kernels (channels_last, as benchmarked): same output, fewer launches."""
    torchvision = import_torchvision()
    torch.manual_seed(0)
    model = small_block_network(torchvision).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last)
    fused, before, after = check_fused_model(model, x, monkeypatch, spec=False)
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    fused_convs = len(fused_modules(fused))
    assert fused_convs == 13 and convs == fused_convs + 2  # the SE block's two convs have no BN
    # One Triton launch per fused chain; the rest are the eager ops the fusion does not touch.
    assert sum(n for name, n in after.ops.items() if name.startswith("_")) == fused_convs
    assert after.launches == fused_convs + sum(n for name, n in after.ops.items() if not name.startswith("_"))
    assert "native_batch_norm" not in after.ops and "add" not in after.ops and "add_" not in after.ops
    print(f"blocks: launches per forward {before.launches} -> {after.launches}: {after.ops}")


class UserConv(nn.Conv2d):
    """A subclass, as cnn.Conv2d is: exact-type matching would miss it."""


class UserBatchNorm(nn.BatchNorm2d):
    pass


class UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = UserConv(3, 8, 3, padding=1)
        self.stem_bn = UserBatchNorm(8)
        self.shared = nn.Conv2d(8, 8, 3, padding=1, bias=False)  # called twice, with two BNs
        self.bn_a = nn.BatchNorm2d(8)
        self.bn_b = nn.BatchNorm2d(8, eps=1e-2)
        self.branch = nn.Conv2d(8, 8, 1)
        self.branch_bn = nn.BatchNorm2d(8)
        self.lonely_bn = nn.BatchNorm2d(8)  # follows no convolution: stays
        self.reflect = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")
        self.reflect_bn = nn.BatchNorm2d(8)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))  # functional activation
        a = self.bn_a(self.shared(x)).sigmoid()  # method activation
        b = torch.add(self.bn_b(self.shared(a)), x)  # residual via torch.add, no activation
        y = self.branch(b)
        c = self.branch_bn(y) + y  # the conv output has another user: not fusable
        return F.hardswish(self.reflect_bn(self.reflect(self.lonely_bn(c))))


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, its children are fused instead."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.SiLU())

    def forward(self, x):
        y = self.body(x)
        return y if y.sum() > 0 else -y


def test_fuse_user_code_subclasses_and_untraceable_models(monkeypatch):
    torch.manual_seed(0)
    model = UserNet()
    fused, _, _ = check_fused_model_allowing_leftovers(model, monkeypatch)
    by_path = {name: m for name, m in fused.named_modules() if isinstance(m, FusedConv2dBN)}
    activations = sorted((m.activation or "-", m.eps) for m in by_path.values())
    assert activations == [("-", 1e-2), ("hardswish", 1e-5), ("relu", 1e-5), ("sigmoid", 1e-5)]
    assert batch_norms(fused) == 2  # branch_bn (its conv output is reused) and lonely_bn

    model = Untraceable()
    randomise_batch_norms(model)
    fused = fuse(model)
    assert type(fused) is Untraceable and isinstance(fused.body, torch.fx.GraphModule)
    assert [m.activation for m in fused_modules(fused)] == ["silu"]
    x = torch.randn(1, 3, 6, 6)
    monkeypatch.setattr(kernels, "conv2d_bn", spec_conv2d_bn)
    with torch.no_grad():
        assert relative_error(fused(x), model(x)) < 1e-4


def check_fused_model_allowing_leftovers(model, monkeypatch):
    randomise_batch_norms(model)
    fused = fuse(model)
    x = torch.randn(2, 3, 6, 6)
    before, ref = count_launches(model, x, monkeypatch, spec=True)
    after, y = count_launches(fused, x, monkeypatch, spec=True)
    assert relative_error(y, ref) < 1e-4
    assert after.launches < before.launches
    return fused, before, after


def test_fuse_rejects_non_modules():
    with pytest.raises(TypeError, match="nn.Module"):
        fuse(lambda x: x)
