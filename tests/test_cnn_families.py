"""AlexNet, GoogLeNet, Inception v3, DenseNet, SqueezeNet, EfficientNet, ShuffleNet V2, MNASNet and
LeNet-5 against torchvision's definitions (the oracle; LeNet-5 against its own definition).

(Keys, shapes and hyperparameters of every builder are in ``test_cnn_models.py``.)

* the same network: one model of each family, full width, ours and torchvision's holding the
  same random weights and BN statistics, give the same outputs in float64 (PyTorch's
  convolutions: the interpreter cannot afford full widths), in eval and in training mode;
* on our kernels: every block class of these families runs through ``kernels.conv2d`` (Triton's
  interpreter on CPU) at a few channels and pixels and matches torchvision's block in float64.
  The Inception v3 modules fix their widths, so both sides are built with a ``conv_block`` that
  divides every width by 16 (torchvision's own hook for replacing the conv unit): the branch
  structure, kernel shapes, paddings and strides are the real ones;
* what checkpoints and callers rely on: DenseNet's old-style keys, MNASNet's version-1 layout,
  auxiliary outputs, minimum input sizes, LeNet-5's parameter count.
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cnn
from cnn import densenet, efficientnet, inception, mnasnet, shufflenet_v2, squeezenet
from cnn.googlenet import Inception as GoogLeNetInception, InceptionAux as GoogLeNetAux
from cnn.layers import BasicConv2d
from cnn_checks import assert_outputs_close, on_pytorch_convs, random_float64_model, randomise
from torchvision_oracle import import_torchvision

pytestmark = pytest.mark.filterwarnings("ignore:The default weight initialization:FutureWarning")


@pytest.fixture(scope="module")
def tv():
    return import_torchvision().models


def holding_weights_of(ours, build_theirs):
    """torchvision's module built on the meta device (no initialisation), given copies of ours' tensors."""
    with torch.device("meta"):
        theirs = build_theirs()
    theirs.load_state_dict(copy.deepcopy(ours.state_dict()), strict=True, assign=True)
    return theirs.train(ours.training)


# --- the same network, float64, PyTorch convolutions ---------------------------------------------

# (builder, arguments, input size): one network per family, at its minimum input size or 32x32.
WIRING = [
    ("alexnet", {}, 63),
    ("inception_v3", {"transform_input": True}, 75),
    ("densenet121", {}, 32),
    ("squeezenet1_0", {}, 21),
    ("squeezenet1_1", {}, 32),
    ("efficientnet_b0", {}, 16),
    ("shufflenet_v2_x0_5", {}, 32),
    ("mnasnet0_5", {}, 32),
]


@pytest.mark.parametrize("name,kwargs,size", WIRING, ids=[w[0] for w in WIRING])
def test_same_network_as_torchvision(tv, name, kwargs, size):
    ours = random_float64_model(lambda: getattr(cnn, name)(num_classes=10, **kwargs))
    theirs = holding_weights_of(ours, lambda: getattr(tv, name)(num_classes=10, **kwargs))
    x = torch.randn(1, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        assert_outputs_close(ours(x), theirs(x), rtol=1e-10)


def test_googlenet_same_network_and_auxiliary_outputs(tv):
    """Eval mode returns the logits; training mode (logits, aux_logits2, aux_logits1), with batch statistics."""
    kwargs = dict(num_classes=10, transform_input=True, dropout=0.0, dropout_aux=0.0)
    ours = random_float64_model(lambda: cnn.googlenet(**kwargs))
    theirs = holding_weights_of(ours, lambda: tv.googlenet(**kwargs))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert_outputs_close(ours(x), theirs(x), rtol=1e-10)
        out, ref = ours.train()(x), theirs.train()(x)
    assert isinstance(out, cnn.GoogLeNetOutputs) and out._fields == ref._fields
    for a, b in zip(out, ref):
        assert_outputs_close(a, b, rtol=1e-10)
    with torch.device("meta"):
        assert cnn.googlenet(aux_logits=False).aux1 is None


def test_inception_v3_auxiliary_head_and_outputs(tv):
    from torchvision.models import inception as tv_inception

    ours = on_pytorch_convs(randomise(inception.InceptionAux(32, 10))).double().train()
    theirs = holding_weights_of(ours, lambda: tv_inception.InceptionAux(32, 10))
    x = torch.randn(2, 32, 17, 17, dtype=torch.float64)  # the Mixed_6e grid at 299x299
    with torch.no_grad():
        assert_outputs_close(ours(x), theirs(x), rtol=1e-10)
    with torch.device("meta"):  # shapes only: a 299x299 float64 forward costs seconds
        model = on_pytorch_convs(cnn.inception_v3(num_classes=10, init_weights=False)).train()
        out = model(torch.empty(2, 3, 299, 299))
    assert isinstance(out, cnn.InceptionOutputs) and out.logits.shape == out.aux_logits.shape == (2, 10)


def test_densenet_memory_efficient_gives_the_same_gradients():
    kwargs = dict(growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=2, num_classes=3)
    plain = on_pytorch_convs(randomise(cnn.DenseNet(**kwargs))).double().train()
    efficient = on_pytorch_convs(cnn.DenseNet(memory_efficient=True, **kwargs)).double().train()
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    for model in (plain, efficient):
        model(x).square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), efficient.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


# --- checkpoints, arguments, sizes ---------------------------------------------------------------

def test_densenet_loads_torchvision_checkpoint_with_old_keys(tv):
    """The published DenseNet files name a dense layer's modules "norm.1", "conv.2", ...; they load strict."""
    from torchvision.models import densenet as tv_densenet

    kwargs = dict(growth_rate=4, block_config=(2, 1), num_init_features=8, bn_size=2, num_classes=3)
    theirs = randomise(tv_densenet.DenseNet(**kwargs))
    old = {}
    for key, value in theirs.state_dict().items():
        for module in ("norm1", "relu1", "conv1", "norm2", "relu2", "conv2"):
            key = key.replace(f".{module}.", f".{module[:-1]}.{module[-1]}.")
        old[key] = value
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    ours = cnn.DenseNet(**kwargs)
    ours.load_state_dict(old, strict=True)
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


def test_mnasnet_loads_a_version_1_checkpoint(tv):
    """Version 1 of torchvision's MNASNet had a fixed 32/16-channel stem for every alpha; such a
    checkpoint still loads (strict) into ours, which then computes what torchvision's computes."""
    from torchvision.models import mnasnet as tv_mnasnet

    old = tv.mnasnet0_5()
    for i, layer in enumerate(tv.mnasnet1_0().layers[:8]):  # alpha 1.0's stem is the version-1 stem
        old.layers[i] = layer
    old.layers[8] = tv_mnasnet._stack(16, 16, 3, 2, 3, 3, tv_mnasnet._BN_MOMENTUM)
    state = randomise(old).state_dict()
    state._metadata[""]["version"] = 1

    ours = cnn.mnasnet0_5()
    with pytest.warns(UserWarning, match="version-1"):
        ours.load_state_dict(state, strict=True)
    assert ours.layers[0].out_channels == 32 and ours.layers[8][0].layers[0].in_channels == 16
    ours, old = on_pytorch_convs(ours).double().eval(), old.double().eval()
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        assert_outputs_close(ours(x), old(x), rtol=1e-10)


def test_minimum_input_sizes_are_torchvisions(tv):
    from torchvision.models import get_model_weights

    for name in cnn.TORCHVISION_MODELS:
        published = get_model_weights(name).DEFAULT.meta["min_size"]
        assert (cnn.MIN_INPUT_SIZE.get(name, 1),) * 2 == published, name
    for name in ("alexnet", "googlenet", "inception_v3", "densenet121", "squeezenet1_0", "squeezenet1_1",
                 "efficientnet_b0", "shufflenet_v2_x0_5", "mnasnet0_5", "lenet5"):
        size = cnn.MIN_INPUT_SIZE.get(name, 1)
        with torch.device("meta"):  # shapes only: kernels.conv2d on meta tensors launches nothing
            model = getattr(cnn, name)().eval()
            assert model(torch.empty(1, 1 if name == "lenet5" else 3, size, size)).shape[1] in (10, 1000)


def test_lenet5_is_the_relu_max_pool_form():
    with torch.device("meta"):
        model = cnn.lenet5()
    # C1 6x(1x5x5 + 1), C3 16x(6x5x5 + 1), C5 120x(16x5x5 + 1), F6 84x(120 + 1), output 10x(84 + 1).
    per_layer = [6 * 26, 16 * 151, 120 * 401, 84 * 121, 10 * 85]
    assert [sum(p.numel() for p in m.parameters()) for m in model.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))] == per_layer
    assert sum(per_layer) == sum(p.numel() for p in model.parameters()) == 61_706
    assert [type(m) for m in model.features if not isinstance(m, nn.Conv2d)] == [
        nn.ReLU, nn.MaxPool2d, nn.ReLU, nn.MaxPool2d, nn.ReLU]
    with pytest.raises(ValueError, match="never download"):
        cnn.lenet5(weights="MNIST")


def test_lenet5_on_kernels_matches_its_definition(device):
    model = randomise(cnn.lenet5(num_classes=10))
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        actual = model.to(device)(x.to(device)).cpu()
        ref = on_pytorch_convs(copy.deepcopy(model).cpu()).double()
        c1, c3, c5 = (m for m in ref.features if isinstance(m, nn.Conv2d))
        h = F.max_pool2d(torch.relu(F.conv2d(x.double(), c1.weight, c1.bias)), 2)  # 6 x 14 x 14
        h = F.max_pool2d(torch.relu(F.conv2d(h, c3.weight, c3.bias)), 2)  # 16 x 5 x 5
        h = torch.relu(F.conv2d(h, c5.weight, c5.bias)).flatten(1)  # 120
        f6, out = ref.classifier[0], ref.classifier[2]
        expected = out(torch.relu(f6(h)))
    assert_outputs_close(actual, expected, rtol=1e-4)


# --- every block class on our kernels --------------------------------------------------------------

def narrow(conv_class, factor=16):
    """A conv block factory with every channel count divided by ``factor`` (the image's 3 kept)."""
    return lambda cin, cout, **kwargs: conv_class(cin if cin == 3 else cin // factor, cout // factor, **kwargs)


def _tv(module_name, cls):
    """A class of torchvision's model modules (imported when a test runs, after the oracle's import)."""
    import importlib

    import_torchvision()
    return getattr(importlib.import_module(f"torchvision.models.{module_name}"), cls)


def _inception_v3_block(cls, *args):
    """(ours, theirs) builders of an Inception v3 module at 1/16 width."""
    return (lambda: getattr(inception, cls)(*args, conv_block=narrow(BasicConv2d)),
            lambda: _tv("inception", cls)(*args, conv_block=narrow(_tv("inception", "BasicConv2d"))))


def _mbconv(*config):
    return (lambda: efficientnet.MBConv(efficientnet.MBConvConfig(*config), 0.2, nn.BatchNorm2d),
            lambda: _tv("efficientnet", "MBConv")(_tv("efficientnet", "MBConvConfig")(*config), 0.2, nn.BatchNorm2d))


def _pair(ours_cls, tv_module, tv_cls, *args):
    return (lambda: ours_cls(*args), lambda: _tv(tv_module, tv_cls)(*args))


# id: ((ours builder, torchvision builder), input shape)
BLOCKS = {
    "googlenet-inception": (_pair(GoogLeNetInception, "googlenet", "Inception", 8, 4, 4, 8, 2, 4, 4), (2, 8, 7, 7)),
    "googlenet-aux": (_pair(GoogLeNetAux, "googlenet", "InceptionAux", 8, 10), (2, 8, 6, 6)),
    "inception-a": (_inception_v3_block("InceptionA", 128, 64), (1, 8, 7, 7)),
    "inception-b": (_inception_v3_block("InceptionB", 128), (1, 8, 7, 7)),
    "inception-c": (_inception_v3_block("InceptionC", 128, 64), (1, 8, 7, 7)),
    "inception-d": (_inception_v3_block("InceptionD", 128), (1, 8, 7, 7)),
    "inception-e": (_inception_v3_block("InceptionE", 128), (1, 8, 5, 5)),
    "densenet-block": (_pair(densenet.DenseBlock, "densenet", "_DenseBlock", 3, 8, 2, 4, 0.0), (2, 8, 6, 6)),
    "densenet-transition": (_pair(densenet.Transition, "densenet", "_Transition", 12, 6), (2, 12, 6, 6)),
    "squeezenet-fire": (_pair(squeezenet.Fire, "squeezenet", "Fire", 8, 4, 8, 8), (2, 8, 6, 6)),
    "mbconv-k3-s2-no-expansion": (_mbconv(1, 3, 2, 8, 16, 1), (2, 8, 7, 7)),
    "mbconv-k5-expand6-residual": (_mbconv(6, 5, 1, 8, 8, 1), (1, 8, 4, 4)),
    "shufflenet-s2": (_pair(shufflenet_v2.InvertedResidual, "shufflenetv2", "InvertedResidual", 8, 16, 2),
                      (2, 8, 7, 7)),
    "shufflenet-s1": (_pair(shufflenet_v2.InvertedResidual, "shufflenetv2", "InvertedResidual", 16, 16, 1),
                      (2, 16, 6, 6)),
    "mnasnet-k5-residual": (_pair(mnasnet.MNASInvertedResidual, "mnasnet", "_InvertedResidual", 8, 8, 5, 1, 3),
                            (1, 8, 4, 5)),
    "mnasnet-k3-s2": (_pair(mnasnet.MNASInvertedResidual, "mnasnet", "_InvertedResidual", 8, 16, 3, 2, 6),
                      (1, 8, 7, 7)),
}


@pytest.mark.parametrize("block", list(BLOCKS))
def test_blocks_on_kernels_match_torchvision(tv, device, block):
    (build_ours, build_theirs), shape = BLOCKS[block]
    ours = randomise(build_ours())
    theirs = holding_weights_of(ours, build_theirs).double()
    x = torch.randn(shape)
    with torch.no_grad():
        assert_outputs_close(ours.to(device)(x.to(device)).cpu(), theirs(x.double()), rtol=1e-4)


def test_shufflenet_unit_keeps_channels_last(tv, device):
    """The stride-1 unit convolves a channel slice (a strided view); the shuffle keeps channels_last."""
    from torchvision.models.shufflenetv2 import InvertedResidual as TvUnit

    ours = randomise(shufflenet_v2.InvertedResidual(16, 16, 1))
    theirs = holding_weights_of(ours, lambda: TvUnit(16, 16, 1)).double()
    x = torch.randn(2, 16, 5, 5).to(memory_format=torch.channels_last)
    with torch.no_grad():
        out = ours.to(device)(x.to(device))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_outputs_close(out.cpu(), theirs(x.double()), rtol=1e-4)
    y = torch.arange(2 * 6 * 1 * 1.0).view(2, 6, 1, 1)
    assert shufflenet_v2.channel_shuffle(y, 2)[0].flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_stems_on_kernels_match_torchvision(tv, device):
    """SqueezeNet 1.1's 3x3/2 unpadded stem with its ceil-mode pool; AlexNet's 11x11 stride-4 stem,
    ReLU and max-pool with 16 of its 64 filters (the interpreter runs each filter block per tap)."""
    model = randomise(cnn.squeezenet1_1(num_classes=10))
    theirs = holding_weights_of(model, lambda: tv.squeezenet1_1(num_classes=10)).double()
    x = torch.randn(1, 3, 11, 11)
    with torch.no_grad():
        assert_outputs_close(model.features[:3].to(device)(x.to(device)).cpu(), theirs.features[:3](x.double()),
                             rtol=1e-4)
    with torch.device("meta"):
        alexnet = cnn.alexnet()
    conv = alexnet.features[0]
    stem = randomise(nn.Sequential(cnn.Conv2d(3, 16, conv.kernel_size, conv.stride, conv.padding),
                                   *alexnet.features[1:3]))
    x = torch.randn(2, 3, 23, 23)
    with torch.no_grad():
        expected = F.max_pool2d(F.relu(F.conv2d(x.double(), stem[0].weight.double(), stem[0].bias.double(),
                                                stride=4, padding=2)), 3, 2)
        assert_outputs_close(stem.to(device)(x.to(device)).cpu(), expected, rtol=1e-4)


def test_squeezenet_classifier_on_kernels_matches_torchvision(tv, device):
    """The 1x1-convolution classifier (no Linear layer), ReLU and global pool."""
    model = randomise(cnn.squeezenet1_1(num_classes=10))
    theirs = holding_weights_of(model, lambda: tv.squeezenet1_1(num_classes=10)).double()
    x = torch.randn(2, 512, 3, 3)
    with torch.no_grad():
        actual = model.classifier.to(device)(x.to(device)).cpu()
        assert_outputs_close(actual, theirs.classifier(x.double()), rtol=1e-4)
