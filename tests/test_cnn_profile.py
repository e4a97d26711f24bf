"""cnn.profile against torchvision's published figures (GMACs of conv + linear at each model's
input size, 224x224 unless noted, and exact parameter counts), the MobileNet v1 paper and
LeNet-5's layer arithmetic; models are built on the meta device."""
import pytest
import torch
import torch.nn as nn

import cnn
import kernels

# name: (GMACs as published, rounded as published; parameters)
PUBLISHED = {
    "vgg16": (15.47, 138_357_544),
    "resnet18": (1.814, 11_689_512),
    "resnet50": (4.089, 25_557_032),
    "resnet152": (11.514, 60_192_808),
    "resnext50_32x4d": (4.23, 25_028_904),
    "mobilenet_v2": (0.301, 3_504_872),
    "mobilenet_v3_large": (0.217, 5_483_032),
    "mobilenet_v1": (0.569, 4_231_976),
    "alexnet": (0.714, 61_100_840),
    "googlenet": (1.498, 6_624_904),  # as published: without the auxiliary heads (aux_logits=False)
    "inception_v3": (5.713, 27_161_264),  # at 299x299; the parameters include the auxiliary head
    "densenet121": (2.834, 7_978_856),
    "densenet161": (7.728, 28_681_000),
    "densenet169": (3.36, 14_149_480),
    "densenet201": (4.291, 20_013_928),
    "squeezenet1_0": (0.819, 1_248_424),
    "squeezenet1_1": (0.349, 1_235_496),
    "efficientnet_b0": (0.386, 5_288_548),
    "efficientnet_b1": (0.687, 7_794_184),  # at 240x240
    "efficientnet_b2": (1.088, 9_109_994),  # 288
    "efficientnet_b3": (1.827, 12_233_232),  # 300
    "efficientnet_b4": (4.394, 19_341_616),  # 380
    "efficientnet_b5": (10.266, 30_389_784),  # 456
    "efficientnet_b6": (19.068, 43_040_704),  # 528
    "efficientnet_b7": (37.746, 66_347_960),  # 600
    "shufflenet_v2_x0_5": (0.04, 1_366_792),
    "shufflenet_v2_x1_0": (0.145, 2_278_604),
    "shufflenet_v2_x1_5": (0.296, 3_503_624),
    "shufflenet_v2_x2_0": (0.583, 7_393_996),
    "mnasnet0_5": (0.104, 2_218_512),
    "mnasnet0_75": (0.215, 3_170_208),
    "mnasnet1_0": (0.314, 4_383_312),
    "mnasnet1_3": (0.526, 6_282_256),
    "convnext_tiny": (4.456, 28_589_128),
    "convnext_small": (8.684, 50_223_688),
    "convnext_base": (15.355, 88_591_464),
    "convnext_large": (34.361, 197_767_336),
}
# The input each figure is published at, where not 224x224, and builder arguments.
IMAGE = {"inception_v3": 299, "efficientnet_b1": 240, "efficientnet_b2": 288, "efficientnet_b3": 300,
         "efficientnet_b4": 380, "efficientnet_b5": 456, "efficientnet_b6": 528, "efficientnet_b7": 600}
ARGUMENTS = {"googlenet": {"aux_logits": False}}


@pytest.mark.parametrize("name", PUBLISHED)
def test_totals_match_published_figures(name):
    gmacs, params = PUBLISHED[name]
    with torch.device("meta"):
        model = getattr(cnn, name)(**ARGUMENTS.get(name, {}))
    size = IMAGE.get(name, 224)
    result = cnn.profile(model, (3, size, size))
    decimals = len(str(gmacs).split(".")[1])
    assert round(result.total_macs / 1e9, decimals) == gmacs
    assert result.total_params == params
    assert sum(r.params for r in result.rows) <= params  # BN parameters are not in conv/linear rows
    assert all(r.algorithm in kernels.REGISTRY for r in result.rows if r.kind == "conv")


def test_lenet5_totals_from_its_layers():
    """LeNet-5 on a 32x32 image: MACs = outputs x reduction per layer, by hand."""
    c1 = 6 * 28 * 28 * (1 * 5 * 5)
    c3 = 16 * 10 * 10 * (6 * 5 * 5)
    c5 = 120 * 1 * 1 * (16 * 5 * 5)
    f6, output = 84 * 120, 10 * 84
    result = cnn.profile(cnn.lenet5(), (1, 32, 32))
    assert [r.macs for r in result.rows] == [c1, c3, c5, f6, output]
    assert result.total_macs == 416_520 and result.total_params == 61_706


def test_rows_shapes_algorithms_and_counts():
    model = cnn.resnet18(num_classes=10)
    model.layer1[0].conv1.algorithm = "im2col"
    result = cnn.profile(model, (2, 3, 64, 64))
    by_name = {r.name: r for r in result.rows}
    stem = by_name["conv1"]
    assert stem.input_shape == (2, 3, 64, 64) and stem.output_shape == (2, 64, 32, 32)
    assert stem.macs == 2 * 64 * 32 * 32 * 3 * 7 * 7 and stem.params == 64 * 3 * 7 * 7
    expected = kernels.conv2d_flops((2, 3, 64, 64), (64, 3, 7, 7), stride=2, padding=3, algorithm="auto")
    assert (stem.algorithm, stem.multiplies) == (expected["algorithm"], expected["multiplies"])
    assert by_name["layer1.0.conv1"].algorithm == "im2col"
    fc = by_name["fc"]
    assert (fc.kind, fc.input_shape, fc.output_shape, fc.macs) == ("linear", (2, 512), (2, 10), 2 * 512 * 10)
    assert [r.name for r in result.rows][:3] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]  # run order
    assert len(result.rows) == 21
    table = str(result)
    assert "layer1.0.conv1" in table and "im2col" in table and f"{result.total_params:,}" in table


def test_profile_leaves_the_model_as_it_was():
    model = cnn.mobilenet_v3_small(num_classes=10)
    model.train()
    model.features[1].eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    cnn.profile(model, (3, 32, 32))
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all("forward" not in vars(m) for m in model.modules())


def test_profile_counts_plain_pytorch_convolutions():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 5 * 5, 4))
    result = cnn.profile(model, (3, 5, 5))
    assert [r.kind for r in result.rows] == ["conv", "linear"]
    assert result.total_macs == 8 * 25 * 27 + 200 * 4
    with pytest.raises(ValueError, match="input_size"):
        cnn.profile(model, (5, 5))
