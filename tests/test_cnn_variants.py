"""cnn.convert and cnn.profile on transposed and 1-D convolutions: nn.ConvTranspose2d, nn.Conv1d
and nn.ConvTranspose1d become cnn classes in place (keys, parameters and outputs kept), and the
profile counts their MACs as PyTorch's FlopCounterMode does."""
import copy

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import cnn
from reference import assert_close
from test_enable import Sequence1d, UNet


def test_convert_swaps_transposed_and_1d_convolutions(device):
    class Plain(nn.ConvTranspose2d):
        pass

    class OwnForward(nn.Conv1d):
        def forward(self, x):
            return super().forward(x) * 2

    image = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1),
                          Plain(4, 2, 3, stride=2, padding=1, output_padding=1)).double()
    sequence = nn.Sequential(nn.Conv1d(4, 4, 3, padding=1, groups=2), nn.ConvTranspose1d(4, 3, 2, stride=2),
                             OwnForward(3, 3, 1), nn.Conv3d(3, 3, 1)).double()
    references = copy.deepcopy(image), copy.deepcopy(sequence[:2])
    keys = [list(m.state_dict()) for m in (image, sequence)]
    weights = [list(m.parameters()) for m in (image, sequence)]
    cnn.convert(image, algorithm="direct")
    with pytest.warns(UserWarning, match="OwnForward"):
        cnn.convert(sequence, algorithm="direct")
    assert [type(m) for m in image][:2] == [cnn.Conv2d, cnn.ConvTranspose2d]
    assert isinstance(image[2], Plain) and isinstance(image[2], cnn.ConvTranspose2d)
    assert [type(m) for m in sequence] == [cnn.Conv1d, cnn.ConvTranspose1d, OwnForward, cnn.Conv3d]
    assert all(m.algorithm == "direct" for m in list(image) + list(sequence[:2]) + [sequence[3]])
    assert [list(m.state_dict()) for m in (image, sequence)] == keys
    assert [list(m.parameters()) for m in (image, sequence)] == weights  # the same tensors
    assert cnn.count_converted(image) == 3 and cnn.count_converted(sequence) == 3
    for model, reference, x in ((image, references[0], torch.randn(1, 3, 5, 5)),
                                (sequence[:2], references[1], torch.randn(2, 4, 6))):
        with torch.no_grad():
            got = model.to(device)(x.double().to(device))
        assert_close(got, reference(x.double()), torch.float64, 100)


@pytest.mark.parametrize("name", ["unet", "sequence1d"])
def test_profile_counts_like_flop_counter_mode(name):
    model, size, dims = (UNet(), (3, 16, 16), 2) if name == "unet" else (Sequence1d(), (8, 32), 1)
    result = cnn.profile(model, size, spatial_dims=dims)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn((1,) + size))
    assert result.total_macs == counter.get_total_flops() // 2
    kinds = [r.kind for r in result.rows]
    assert kinds.count("conv_transpose") == sum(isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d))
                                                 for m in model.modules()) > 0
    up = next(r for r in result.rows if r.kind == "conv_transpose")
    assert up.output_shape == tuple(getattr(model, "up2" if name == "unet" else "up")(
        torch.empty(up.input_shape)).shape)
