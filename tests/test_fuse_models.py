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
from kernels.core.launcher import TunedKernel
from launches import SPLIT_REDUCE
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

    def opaque(self, name, fn, counted=True):
        """``fn`` counted as one launch (unless not ``counted``); what it does inside is not seen
        (Triton's interpreter runs its kernels with torch ops of its own)."""
        def wrapped(*args, **kwargs):
            if counted:
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
                                lambda self, grid: counter.opaque(self.name, original(self, grid),
                                                                  counted=self.name != SPLIT_REDUCE))
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


def check_fused_model(model, x, monkeypatch, *, spec, unfused_bns=0):
    """Fuse, compare with the original eval model, check the original is untouched; returns
    (fused model, launches before, launches after). ``unfused_bns``: BatchNorms that follow no
    convolution (they stay)."""
    small_vgg_head(model)
    randomise_batch_norms(model)
    state = copy.deepcopy(model.state_dict())
    bns = batch_norms(model)
    fused = fuse(model)
    assert batch_norms(fused) == unfused_bns
    assert len(fused_modules(fused)) == bns - unfused_bns
    assert not fused.training
    assert batch_norms(model) == bns and not model.training
    before, ref = count_launches(model, x, monkeypatch, spec=spec)
    after, y = count_launches(fused, x, monkeypatch, spec=spec)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    assert relative_error(y, ref) < 1e-4
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), f"fuse modified the original model's {key}"
    assert after.launches < before.launches or bns == 0
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


def test_fused_blocks_on_triton_kernels(monkeypatch, device):
    """End to end on the real kernels (channels_last, as benchmarked): same output, fewer launches."""
    torchvision = import_torchvision()
    torch.manual_seed(0)
    model = small_block_network(torchvision).to(device, memory_format=torch.channels_last)
    x = torch.randn(2, 3, 8, 8).to(device, memory_format=torch.channels_last)
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


# --- GoogLeNet, Inception v3, EfficientNet, ShuffleNet V2, MNASNet, DenseNet ------------------------

# name: (builder arguments, input size, fused convs per activation, residual adds fused, BNs left),
# counted from the architectures: GoogLeNet 3 stem convs + 9 modules x 6; Inception v3 5 stem +
# 3 A x 7 + B 4 + 4 C x 10 + D 6 + 2 E x 9; EfficientNet-B0 16 MBConvs (15 with an expansion, 9
# with a residual) between a SiLU stem and head; ShuffleNet V2 3 stride-2 units (branch1: dw +
# 1x1 ReLU; branch2: 1x1 ReLU, dw, 1x1 ReLU) and 13 stride-1 units (branch2 only) between a ReLU
# stem and conv5; MNASNet a separable stem (ReLU, ReLU, linear) and 16 inverted residuals (ReLU,
# ReLU, linear; 10 with a residual) and a ReLU head; DenseNet-121 its stem and the 58 layers'
# 1x1 conv -> norm2 -> ReLU fuse, while 58 norm1 + 3 transition norms + norm5 stay.
FAMILIES = {
    "googlenet": ({"aux_logits": False}, 32, {"relu": 3 + 9 * 6}, 0, 0),
    "inception_v3": ({"aux_logits": False}, 75, {"relu": 5 + 3 * 7 + 4 + 4 * 10 + 6 + 2 * 9}, 0, 0),
    "efficientnet_b0": ({}, 32, {"silu": 1 + 15 + 16 + 1, None: 16}, 9, 0),
    "shufflenet_v2_x0_5": ({}, 32, {"relu": 1 + 3 * 3 + 13 * 2 + 1, None: 3 * 2 + 13}, 0, 0),
    "mnasnet0_5": ({}, 32, {"relu": 2 + 16 * 2 + 1, None: 1 + 16}, 10, 0),
    "densenet121": ({}, 32, {"relu": 1 + 58}, 0, 58 + 3 + 1),
}
# torchvision's own definitions of the families whose traced graphs differ from ours (its
# stochastic_depth function, DenseNet's list-or-tensor forward, its channel_shuffle).
FROM_TORCHVISION = ["efficientnet_b0", "densenet121", "shufflenet_v2_x0_5"]


def fused_residual_adds(fused):
    """How many fused convolutions also add a residual (called with two arguments in the graph)."""
    count = 0
    for graph_module in fused.modules():
        if isinstance(graph_module, torch.fx.GraphModule):
            count += sum(node.op == "call_module" and len(node.args) == 2
                         and isinstance(graph_module.get_submodule(node.target), FusedConv2dBN)
                         for node in graph_module.graph.nodes)
    return count


def fused_activations(fused):
    acts = {}
    for m in fused_modules(fused):
        acts[m.activation] = acts.get(m.activation, 0) + 1
    return acts


# Inception v3 fuses the same BasicConv2d unit as GoogLeNet: its rewrite is checked on the meta
# device (a 75x75 float64 forward of the fused spec costs seconds); the others also run.
NUMERIC = [("cnn", n) for n in FAMILIES if n != "inception_v3"] + [("torchvision", n) for n in FROM_TORCHVISION]


@pytest.mark.parametrize("source,name", NUMERIC)
def test_fuse_new_families(source, name, monkeypatch):
    kwargs, size, activations, residuals, unfused = FAMILIES[name]
    builders = cnn if source == "cnn" else import_torchvision().models
    torch.manual_seed(0)
    model = getattr(builders, name)(**kwargs)
    fused, before, after = check_fused_model(model, torch.randn(1, 3, size, size), monkeypatch, spec=True,
                                             unfused_bns=unfused)
    acts = fused_activations(fused)
    assert acts == activations
    assert fused_residual_adds(fused) == residuals
    if name == "densenet121":  # what stays is the pre-activation BN of every layer, transition and norm5
        left = {n.rsplit(".", 1)[-1] for n, m in fused.named_modules() if isinstance(m, nn.BatchNorm2d)}
        assert left == {"norm1", "norm", "norm5"}
    print(f"{source}.{name}: launches per forward {before.launches} -> {after.launches}; {acts}")


def test_fuse_inception_v3_rewrite():
    kwargs, _, activations, residuals, unfused = FAMILIES["inception_v3"]
    with torch.device("meta"):
        model = cnn.inception_v3(**kwargs)
    fused = fuse(model)
    assert batch_norms(fused) == unfused and fused_activations(fused) == activations
    assert fused_residual_adds(fused) == residuals
    assert {m.eps for m in fused_modules(fused)} == {1e-3}  # BasicConv2d's BN eps
    shapes = {tuple(m.weight.shape[2:]) for m in fused_modules(fused)}
    assert {(1, 7), (7, 1), (1, 3), (3, 1), (5, 5)} <= shapes


@pytest.mark.parametrize("name,size", [("alexnet", 63), ("squeezenet1_1", 17), ("lenet5", 32)])
def test_fuse_leaves_networks_without_batch_norm_as_they_are(name, size, monkeypatch):
    torch.manual_seed(0)
    model = getattr(cnn, name)(num_classes=10)
    x = torch.randn(1, 1 if name == "lenet5" else 3, size, size)
    fused, before, after = check_fused_model(model, x, monkeypatch, spec=True)
    assert fused_modules(fused) == [] and after.launches == before.launches


def new_block_network():
    """One of each new block class (ours), at a width the interpreter runs in seconds: 3x3 -> 2x2 pixels."""
    from cnn.densenet import DenseBlock, Transition
    from cnn.efficientnet import MBConv, MBConvConfig
    from cnn.googlenet import Inception
    from cnn.layers import BasicConv2d
    from cnn.mnasnet import MNASInvertedResidual
    from cnn.shufflenet_v2 import InvertedResidual as ShuffleUnit

    return nn.Sequential(
        BasicConv2d(3, 8, kernel_size=3, stride=2, padding=1),  # conv-BN(eps 1e-3)-ReLU: 6x6 -> 3x3
        ShuffleUnit(8, 8, 1),  # channel split (a strided slice), branch2, shuffle
        ShuffleUnit(8, 16, 2),  # both branches, stride 2: 3x3 -> 2x2
        MBConv(MBConvConfig(2, 5, 1, 16, 16, 1), 0.2, nn.BatchNorm2d),  # SiLU, 5x5 dw, SE, residual
        MNASInvertedResidual(16, 16, 3, 1, 2),  # ReLU, linear projection + residual
        Inception(16, 4, 4, 8, 2, 4, 4),  # four branches, concatenated: 20 channels
        DenseBlock(2, 20, 2, 4, 0.0),  # BN-ReLU-conv layers on concatenations: 28 channels
        Transition(28, 14),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(14, 10),
    )


def test_fused_new_blocks_on_triton_kernels(monkeypatch, device):
    """End to end on the real kernels, channels_last: same output; one launch per convolution, and the
    BatchNorms, adds and activations of every fused chain gone."""
    torch.manual_seed(0)
    model = new_block_network().to(device, memory_format=torch.channels_last)
    x = torch.randn(1, 3, 6, 6).to(device, memory_format=torch.channels_last)
    # Unfused BNs: the two dense layers' norm1 and the transition's norm (pre-activation).
    fused, before, after = check_fused_model(model, x, monkeypatch, spec=False, unfused_bns=3)
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    # Chains: stem 1, units 3 + 5, MBConv 3, MNASNet 3, Inception 6, dense layers' conv1 2; not
    # fused: the SE block's two convs, the dense layers' 3x3 conv2 (no BN after it), the transition conv.
    assert len(fused_modules(fused)) == 23 and convs == 23 + 2 + 2 + 1
    triton = lambda counter: sum(n for op, n in counter.ops.items() if op.startswith("_"))  # noqa: E731
    assert triton(before) == triton(after) == convs  # every convolution one Triton launch, fused or not
    assert after.launches < before.launches
    print(f"new blocks: launches per forward {before.launches} -> {after.launches}: {after.ops}")
