"""cnn.profile against torchvision's published figures (GMACs of conv + linear at 224x224, and
exact parameter counts) and the MobileNet v1 paper; models are built on the meta device."""
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
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_totals_match_published_figures(name):
    gmacs, params = PUBLISHED[name]
    with torch.device("meta"):
        model = getattr(cnn, name)()
    result = cnn.profile(model, (3, 224, 224))
    decimals = len(str(gmacs).split(".")[1])
    assert round(result.total_macs / 1e9, decimals) == gmacs
    assert result.total_params == params
    assert sum(r.params for r in result.rows) <= params  # BN parameters are not in conv/linear rows
    assert all(r.algorithm in kernels.REGISTRY for r in result.rows if r.kind == "conv")


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
