"""cnn builders against torchvision's model definitions (the oracle), and cnn.convert.

* every builder: ``state_dict`` keys, order and shapes equal torchvision's, and so do the
  hyperparameters the state_dict does not hold (strides, paddings, groups, BN eps, pooling,
  dropout), built on the meta device (nothing is computed), also with non-default arguments;
* the same network: our module tree and torchvision's, sharing weights and randomised BN
  statistics, give the same outputs in float64 (convolutions by PyTorch here, to compare the
  wiring of every family at a size the interpreter could not afford);
* on our kernels: representative models and every residual block run through ``kernels.conv2d``
  and match torchvision in float64 on fresh random inputs.
"""
import copy

import pytest
import torch
import torch.nn as nn

import cnn
from cnn import resnet, vgg
from cnn.mobilenet_v1 import MobileNetV1
from cnn_checks import architecture, assert_outputs_close, layout, on_pytorch_convs, randomise
from torchvision_oracle import import_torchvision


pytestmark = pytest.mark.filterwarnings("ignore:The default weight initialization:FutureWarning")


@pytest.fixture(scope="module")
def tv():
    return import_torchvision().models


# --- keys, order and shapes --------------------------------------------------------------------

VARIANTS = [(name, {}) for name in cnn.TORCHVISION_MODELS] + [
    ("resnet50", {"num_classes": 10, "replace_stride_with_dilation": [False, True, True]}),
    ("vgg16_bn", {"num_classes": 7}),
    ("mobilenet_v2", {"width_mult": 0.35, "num_classes": 3}),
    ("mobilenet_v2", {"width_mult": 1.4}),
    ("mobilenet_v3_large", {"width_mult": 0.75, "reduced_tail": True, "dilated": True}),
    ("mobilenet_v3_small", {"width_mult": 0.5, "num_classes": 11}),
    ("googlenet", {"aux_logits": False, "transform_input": True, "num_classes": 10, "dropout": 0.1}),
    ("inception_v3", {"aux_logits": False, "num_classes": 10}),
    ("densenet121", {"num_classes": 7, "drop_rate": 0.1, "bn_size": 2}),
    ("squeezenet1_1", {"num_classes": 6, "dropout": 0.1}),
    ("efficientnet_b3", {"num_classes": 5, "stochastic_depth_prob": 0.1, "dropout": 0.1}),
    ("shufflenet_v2_x1_5", {"num_classes": 3}),
    ("mnasnet0_75", {"num_classes": 4, "dropout": 0.1}),
]


@pytest.mark.parametrize("name,kwargs", VARIANTS, ids=[f"{n}-{k}" if k else n for n, k in VARIANTS])
def test_state_dict_layout_matches_torchvision(tv, name, kwargs):
    with torch.device("meta"):
        ours, theirs = getattr(cnn, name)(**kwargs), getattr(tv, name)(**kwargs)
    assert layout(ours) == layout(theirs)
    assert architecture(ours) == architecture(theirs)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert all(isinstance(m, cnn.Conv2d) for m in ours.modules() if isinstance(m, nn.Conv2d))


def test_torchvision_checkpoint_loads_strict(tv):
    theirs = tv.resnet18(num_classes=10)
    ours = cnn.resnet18(num_classes=10)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()), strict=True)
    for (k, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("name,params,paper", [
    ("mobilenet_v1", 4_231_976, 4.2e6), ("se_resnet50", None, 28.1e6), ("se_resnext50_32x4d", None, 27.6e6),
])
def test_models_torchvision_lacks_match_their_papers(name, params, paper):
    with torch.device("meta"):
        model = getattr(cnn, name)()
    count = sum(p.numel() for p in model.parameters())
    if params is not None:
        assert count == params
    assert abs(count - paper) <= 0.01 * paper


def test_se_sits_after_the_last_bn_before_the_addition():
    with torch.device("meta"):
        model = cnn.se_resnet50()
    block = model.layer1[0]
    names = [n for n, _ in block.named_children()]
    assert names.index("se") == names.index("bn3") + 1
    assert (block.se.fc1.in_channels, block.se.fc1.out_channels) == (256, 16)  # r = 16


def test_mobilenet_v1_width_mult_and_arguments():
    with torch.device("meta"):
        half = cnn.mobilenet_v1(width_mult=0.5, num_classes=10)
    assert half.features[0][0].out_channels == 16 and half.classifier[-1].in_features == 512
    assert half.classifier[-1].out_features == 10
    with pytest.raises(ValueError, match="never download"):
        cnn.resnet18(weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="groups is fixed to 32"):
        cnn.resnext50_32x4d(groups=8)


# --- the same network (wiring), float64, PyTorch convolutions ----------------------------------

WIRING = ["resnet18", "resnet50", "resnext50_32x4d", "mobilenet_v2", "mobilenet_v3_large",
          "mobilenet_v3_small"]


@pytest.mark.parametrize("name", WIRING)
def test_same_network_as_torchvision(tv, name):
    ours = on_pytorch_convs(randomise(getattr(cnn, name)(num_classes=10))).double()
    theirs = getattr(tv, name)(num_classes=10).eval().double()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert_outputs_close(ours(x), theirs(x), rtol=1e-10)


# --- on our kernels ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,kwargs,size", [
    ("mobilenet_v3_small", {"width_mult": 0.25}, 16),
    ("mobilenet_v2", {"width_mult": 0.25}, 16),
])
def test_model_on_kernels_matches_torchvision(tv, device, name, kwargs, size):
    ours = randomise(getattr(cnn, name)(num_classes=10, **kwargs))
    theirs = getattr(tv, name)(num_classes=10, **kwargs).eval().double()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        actual = ours.to(device)(x.to(device)).cpu()
        assert_outputs_close(actual, theirs(x.double()), rtol=1e-4)


def test_vgg_on_kernels_matches_torchvision(tv, device):
    config = [8, "M", 512]  # VGG's head needs 512 channels; a short feature stack keeps it cheap
    ours = randomise(vgg.VGG(vgg.make_features(config, batch_norm=True), num_classes=10))
    from torchvision.models import vgg as tv_vgg

    theirs = tv_vgg.VGG(tv_vgg.make_layers(config, batch_norm=True), num_classes=10).eval().double()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert_outputs_close(ours.to(device)(x.to(device)).cpu(), theirs(x.double()), rtol=1e-4)


BLOCKS = [
    ("basic", dict(inplanes=8, planes=16, stride=2)),
    ("basic", dict(inplanes=16, planes=16, stride=1)),
    ("bottleneck", dict(inplanes=16, planes=8, stride=2, groups=4, base_width=8)),
    ("bottleneck", dict(inplanes=32, planes=8, stride=1, dilation=2)),
]


@pytest.mark.parametrize("kind,args", BLOCKS, ids=[f"{k}-{a}" for k, a in BLOCKS])
def test_residual_blocks_on_kernels_match_torchvision(tv, device, kind, args):
    from torchvision.models import resnet as tv_resnet

    ours_cls, theirs_cls = {"basic": (resnet.BasicBlock, tv_resnet.BasicBlock),
                            "bottleneck": (resnet.Bottleneck, tv_resnet.Bottleneck)}[kind]
    out = args["planes"] * ours_cls.expansion

    def downsample(conv1x1):
        if args["stride"] == 1 and args["inplanes"] == out:
            return None
        return nn.Sequential(conv1x1(args["inplanes"], out, args["stride"]), nn.BatchNorm2d(out))

    ours = randomise(ours_cls(downsample=downsample(resnet.conv1x1), **args))
    theirs = theirs_cls(downsample=downsample(tv_resnet.conv1x1), **args).eval().double()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, args["inplanes"], 6, 6)
    with torch.no_grad():
        assert_outputs_close(ours.to(device)(x.to(device)).cpu(), theirs(x.double()), rtol=1e-4)


def test_se_bottleneck_on_kernels_matches_its_definition(device):
    block = randomise(resnet.Bottleneck(16, 4, se_reduction=4))  # 16 output channels, squeeze to 4
    x = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        actual = block.to(device)(x.to(device)).cpu()
        ref = on_pytorch_convs(copy.deepcopy(block).cpu()).double()
        xd = x.double()
        out = ref.relu(ref.bn1(ref.conv1(xd)))
        out = ref.relu(ref.bn2(ref.conv2(out)))
        out = ref.bn3(ref.conv3(out))
        squeeze = out.mean(dim=(2, 3), keepdim=True)  # squeeze, excite (ReLU, sigmoid), rescale, then add
        gate = torch.sigmoid(ref.se.fc2(torch.relu(ref.se.fc1(squeeze))))
        expected = torch.relu(out * gate + xd)
    assert_outputs_close(actual, expected, rtol=1e-4)


def test_mobilenet_v1_on_kernels_matches_its_definition(device):
    model = randomise(MobileNetV1(num_classes=10, width_mult=0.25))
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        actual = model.to(device)(x.to(device)).cpu()
        ref = on_pytorch_convs(copy.deepcopy(model).cpu()).double()
        h = x.double()
        for i, layer in enumerate(ref.features):  # conv-BN-ReLU stem, then depthwise / pointwise pairs
            for cba in ([layer] if i == 0 else [layer.depthwise, layer.pointwise]):
                conv, bn = cba[0], cba[1]
                assert conv.groups == (1 if i == 0 or cba is layer.pointwise else conv.in_channels)
                h = torch.relu(bn(conv(h)))
        expected = ref.classifier[-1](h.mean(dim=(2, 3)))
    assert_outputs_close(actual, expected, rtol=1e-4)


# --- convert -----------------------------------------------------------------------------------

def test_convert_torchvision_model_in_place(tv, device):
    model = randomise(tv.mobilenet_v3_small(num_classes=10, width_mult=0.25))
    reference = copy.deepcopy(model).double()
    before = {k: v for k, v in model.state_dict().items()}
    weights = [p for p in model.parameters()]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]

    assert cnn.convert(model, algorithm="auto") is model
    assert all(type(m) is cnn.Conv2d and m.algorithm == "auto" for m in convs)
    assert cnn.count_converted(model) == len(convs) > 0
    assert [p for p in model.parameters()] == weights  # the same tensors: an optimizer keeps working
    assert list(model.state_dict()) == list(before)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert_outputs_close(model.to(device)(x.to(device)).cpu(), reference(x.double()), rtol=1e-4)


def test_convert_subclasses():
    class Plain(nn.Conv2d):
        pass

    class OwnForward(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    model = nn.Sequential(Plain(3, 4, 3), OwnForward(4, 4, 1), cnn.Conv2d(4, 4, 1))
    with pytest.warns(UserWarning, match="OwnForward"):
        cnn.convert(model, algorithm="im2col")
    assert isinstance(model[0], Plain) and isinstance(model[0], cnn.Conv2d)
    assert type(model[1]) is OwnForward
    assert model[2].algorithm == "im2col"
    with pytest.raises(ValueError, match="algorithm"):
        cnn.convert(model, algorithm="fft2")
