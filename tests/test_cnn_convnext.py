"""ConvNeXt against torchvision's (the oracle): outputs in float64 (the whole convnext_tiny on PyTorch's
convolutions, its first two stages and a narrow full ConvNeXt on our kernels), a strict checkpoint
load, stochastic depth's "row" semantics in training, cnn.fuse, and cnn.profile's rows (its totals
against torchvision's published figures are in test_cnn_profile.py). Keys, shapes and
hyperparameters of all four builders are checked with the other builders' in test_cnn_models.py
(``cnn.TORCHVISION_MODELS``)."""
import copy

import pytest
import torch
import torch.nn as nn

import cnn
from cnn.convnext import CNBlock, CNBlockConfig, ConvNeXt
from cnn_checks import assert_outputs_close, random_float64_model, randomise
from kernels.core.launcher import LAUNCHES
from torchvision_oracle import import_torchvision

@pytest.fixture(scope="module")
def tv():
    return import_torchvision()


def randomise_convnext(model, seed=0):
    """``randomise`` plus the LayerNorms' affine parameters and the layer scales (1e-6 at
    initialisation, which would hide every block's branch)."""
    randomise(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_scale"):
                p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    return model.eval()


def narrow_setting(module):
    """Tiny's four stages and downsamplings at a sixth of its width, one or two blocks each."""
    return [module.CNBlockConfig(16, 32, 1), module.CNBlockConfig(32, 48, 1), module.CNBlockConfig(48, 64, 2),
            module.CNBlockConfig(64, None, 1)]


def _torchvision_twin(tv, name, ours):
    """torchvision's ``name`` holding ``ours``' tensors (built on the meta device: no initialisation)."""
    with torch.device("meta"):
        theirs = getattr(tv.models, name)(num_classes=10)
    theirs.load_state_dict(ours.state_dict(), strict=True, assign=True)
    return theirs.eval()


def test_convnext_tiny_same_network_as_torchvision(tv):
    ours = randomise_convnext(random_float64_model(lambda: cnn.convnext_tiny(num_classes=10)))
    theirs = _torchvision_twin(tv, "convnext_tiny", ours)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert_outputs_close(ours(x), theirs(x), rtol=1e-10)


def test_convnext_tiny_stages_on_kernels_match_torchvision(tv, device):
    """The stem, stage 1 (three 7x7 depthwise blocks at 96 channels), the downsampling and stage 2."""
    with torch.device("meta"):
        ours = cnn.convnext_tiny(num_classes=10)
    ours = randomise_convnext(ours.to_empty(device="cpu"))
    theirs = _torchvision_twin(tv, "convnext_tiny", copy.deepcopy(ours).double())
    x = torch.randn(1, 3, 32, 32)
    before = LAUNCHES["_depthwise_halo_kernel"]
    with torch.no_grad():
        actual = ours.features[:4].to(device)(x.to(device)).cpu()
        assert_outputs_close(actual, theirs.features[:4](x.double()), rtol=1e-4)
    assert LAUNCHES["_depthwise_halo_kernel"] - before == 6


def test_narrow_convnext_on_kernels_matches_torchvision(tv, device):
    from torchvision.models import convnext as tv_convnext
    from cnn import convnext

    ours = randomise_convnext(ConvNeXt(narrow_setting(convnext), num_classes=7))
    theirs = tv_convnext.ConvNeXt(narrow_setting(tv_convnext), num_classes=7).eval().double()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        actual = ours.to(device)(x.to(device)).cpu()
        assert_outputs_close(actual, theirs(x.double()), rtol=1e-4)


def test_torchvision_convnext_checkpoint_loads_strict(tv):
    theirs = tv.models.convnext_tiny()
    ours = cnn.convnext_tiny()
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()), strict=True)
    for (k, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), k


def test_stochastic_depth_rates_and_row_semantics(tv, device):
    with torch.device("meta"):
        model = cnn.convnext_tiny()
    rates = [m.stochastic_depth.p for m in model.modules() if isinstance(m, CNBlock)]
    assert len(rates) == 18 and rates[0] == 0.0 and rates[-1] == pytest.approx(0.1)
    assert rates == pytest.approx([0.1 * i / 17 for i in range(18)])

    from torchvision.models.convnext import CNBlock as TVBlock

    ours = CNBlock(8, layer_scale=0.7, stochastic_depth_prob=0.5)
    theirs = TVBlock(8, layer_scale=0.7, stochastic_depth_prob=0.5).double()
    theirs.load_state_dict(randomise_convnext(ours).state_dict())
    x = torch.randn(8, 8, 9, 9)
    ours.train().to(device)
    theirs.train()
    with torch.no_grad():
        torch.manual_seed(5)
        actual = ours(x.to(device)).cpu()
        torch.manual_seed(5)
        expected = theirs(x.double())
        kept = [not torch.equal(expected[i], x[i].double()) for i in range(8)]
        assert 0 < sum(kept) < 8  # some samples' branches dropped, others kept (and scaled by 2)
        assert_outputs_close(actual, expected, rtol=1e-4)
        ours.eval()
        theirs.eval()
        assert_outputs_close(ours(x.to(device)).cpu(), theirs(x.double()), rtol=1e-4)  # the identity in eval


def test_fuse_leaves_convnext_computing_the_same(device):
    """No BatchNorm to fold: cnn.fuse traces ConvNeXt and returns the same computation."""
    from cnn import convnext

    model = randomise_convnext(ConvNeXt(narrow_setting(convnext), num_classes=5))
    fused = cnn.fuse(copy.deepcopy(model))
    assert not any(isinstance(m, cnn.FusedConv2dBN) for m in fused.modules())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fused.to(device)(x.to(device)), model.to(device)(x.to(device)))


def test_profile_rows_of_convnext_tiny(tv):
    """Totals against torchvision's published GMACs are in test_cnn_profile.py; here: one 7x7 depthwise
    row per block, on the depthwise algorithm, and the MACs split torchvision's way (the MLPs' Linears
    hold 93% of them)."""
    with torch.device("meta"):
        model = cnn.convnext_tiny()
    profile = cnn.profile(model, (3, 224, 224))
    depthwise = [r for r in profile.rows if r.kind == "conv" and r.algorithm == "depthwise"]
    assert len(depthwise) == 18
    assert sum(r.macs for r in depthwise) == sum(n * c * 49 * (56 // 2 ** i) ** 2
                                                 for i, (c, n) in enumerate(zip((96, 192, 384, 768), (3, 3, 9, 3))))
    linear = sum(r.macs for r in profile.rows if r.kind == "linear")
    assert linear == 768 * 1000 + sum(n * 8 * c * c * (56 // 2 ** i) ** 2
                                      for i, (c, n) in enumerate(zip((96, 192, 384, 768), (3, 3, 9, 3))))


def test_convnext_builders_refuse_weights_and_accept_arguments():
    with pytest.raises(ValueError, match="never download"):
        cnn.convnext_tiny(weights="IMAGENET1K_V1")
    with torch.device("meta"):
        model = cnn.convnext_small(num_classes=3, stochastic_depth_prob=0.2, layer_scale=0.5)
    assert model.classifier[-1].out_features == 3
    assert model.features[1][0].layer_scale.shape == (96, 1, 1)
    assert max(m.stochastic_depth.p for m in model.modules() if isinstance(m, CNBlock)) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="empty"):
        ConvNeXt([])
    with pytest.raises(TypeError, match="CNBlockConfig"):
        ConvNeXt([(96, None, 3)])
    assert isinstance(CNBlockConfig(8, None, 1), CNBlockConfig)
