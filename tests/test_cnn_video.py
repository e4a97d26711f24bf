"""The video ResNets (``cnn.r3d_18``, ``mc3_18``, ``r2plus1d_18``) and the 3-D modules under them
(``cnn.Conv3d``, ``cnn.ConvTranspose3d``), against torchvision's ``models.video`` (the oracle) and
PyTorch's 3-D convolutions in float64.

* keys, order, shapes and hyperparameters equal torchvision's (built on the meta device); a
  torchvision ``state_dict`` loads with ``strict=True``; ``cnn.profile``'s totals are torchvision's
  published GMACs (``_ops``) and parameter counts;
* the same network: ours and torchvision's, full width, holding the same random weights and BN
  statistics, on PyTorch's convolutions in float64 (the interpreter cannot afford a video network),
  in eval and training mode; ``cnn.convert`` / ``cnn.fuse`` rewrite them as they do 2-D models (the
  fused chains run as ``conv3d_bn``'s specification, eager float64, for the same reason);
* on our kernels (``kernels.conv3d``, ``conv_transpose3d``, ``conv3d_bn``): ``cnn.Conv3d`` /
  ``ConvTranspose3d`` against ``nn.Conv3d`` / ``nn.ConvTranspose3d``, every block class and both
  stems at a few channels on a 1x4x16x16 clip, a fused block network; the full-size networks on CUDA only.
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import cnn
import kernels
from cnn import video_resnet
from cnn.fuse import FusedConv3dBN
from cnn_checks import architecture, assert_outputs_close, layout, on_pytorch_convs, random_float64_model, randomise
from reference import as_reference, assert_close
from test_fuse_models import ACTIVATIONS
from torchvision_oracle import import_torchvision

CUDA = torch.cuda.is_available()
# One Kinetics clip as torchvision's weights are published at: 16 frames of 112x112.
CLIP = (3, 16, 112, 112)


@pytest.fixture(scope="module")
def tv_video():
    import_torchvision()
    from torchvision.models import video

    return video


def holding_weights_of(ours, build_theirs):
    """torchvision's module built on the meta device, given copies of ours' tensors."""
    with torch.device("meta"):
        theirs = build_theirs()
    theirs.load_state_dict(copy.deepcopy(ours.state_dict()), strict=True, assign=True)
    return theirs.train(ours.training)


def spec_conv3d_bn(input, weight, bias, running_mean, running_var, bn_weight=None, bn_bias=None, eps=1e-5,
                   stride=1, padding=0, dilation=1, groups=1, *, residual=None, activation=None, algorithm="auto"):
    """``kernels.conv3d_bn``'s contract (``conv2d_bn``'s, in 3-D), in float64 eager PyTorch."""
    d = lambda t: None if t is None else t.double()  # noqa: E731
    y = F.conv3d(d(input), d(weight), d(bias), stride, padding, dilation, groups)
    y = F.batch_norm(y, d(running_mean), d(running_var), d(bn_weight), d(bn_bias), training=False, eps=eps)
    if residual is not None:
        y = y + d(residual)
    return ACTIVATIONS[activation](y).to(input.dtype)


# --- keys, order, shapes; checkpoints; published totals ------------------------------------------

VARIANTS = [(name, {}) for name in cnn.VIDEO_MODELS] + [
    ("r3d_18", {"num_classes": 10}),
    ("mc3_18", {"num_classes": 3, "zero_init_residual": True}),
    ("r2plus1d_18", {"num_classes": 7}),
]


@pytest.mark.parametrize("name,kwargs", VARIANTS, ids=[f"{n}-{k}" if k else n for n, k in VARIANTS])
def test_state_dict_layout_matches_torchvision(tv_video, name, kwargs):
    with torch.device("meta"):
        ours, theirs = getattr(cnn, name)(**kwargs), getattr(tv_video, name)(**kwargs)
    assert layout(ours) == layout(theirs)
    assert architecture(ours) == architecture(theirs)
    assert all(isinstance(m, cnn.Conv3d) for m in ours.modules() if isinstance(m, nn.Conv3d))
    assert sum(isinstance(m, nn.Conv3d) for m in ours.modules()) > 0


def test_bottleneck_video_resnet_layout_matches_torchvision(tv_video):
    """VideoResNet takes Bottleneck blocks and a builder per stage, as torchvision's does."""
    from torchvision.models.video import resnet as tv

    def build(module):
        makers = [module.Conv3DSimple, module.Conv3DNoTemporal, module.Conv2Plus1D, module.Conv3DSimple]
        return (cnn.VideoResNet if module is video_resnet else tv.VideoResNet)(
            module.Bottleneck, makers, [1, 2, 1, 1], module.BasicStem, num_classes=5)

    with torch.device("meta"):
        ours, theirs = build(video_resnet), build(tv)
    assert layout(ours) == layout(theirs)
    assert architecture(ours) == architecture(theirs)


def test_torchvision_checkpoint_loads_strict(tv_video):
    theirs = tv_video.r2plus1d_18(num_classes=10)
    ours = cnn.r2plus1d_18(num_classes=10)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()), strict=True)
    for (key, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), key


def test_builders_refuse_downloads_and_zero_init_residual_zeroes_each_branch_end():
    with pytest.raises(ValueError, match="never download"):
        cnn.r3d_18(weights="KINETICS400_V1")
    with torch.device("meta"):
        plain = cnn.mc3_18()
    model = cnn.mc3_18(zero_init_residual=True)
    blocks = [m for m in model.modules() if isinstance(m, video_resnet.BasicBlock)]
    assert len(blocks) == 8 and all(torch.count_nonzero(b.conv2[1].weight) == 0 for b in blocks)
    assert all(torch.count_nonzero(b.conv1[1].weight) > 0 for b in blocks)
    assert layout(plain) == layout(model)


# torchvision's published figures (its weights' meta: ``_ops`` GMACs of conv + linear on one
# 16x112x112 clip, ``num_params``).
PUBLISHED = {"r3d_18": (40.697, 33_371_472), "mc3_18": (43.343, 11_695_440), "r2plus1d_18": (40.519, 31_505_325)}


def test_published_figures_are_torchvisions(tv_video):
    weights = {"r3d_18": tv_video.R3D_18_Weights, "mc3_18": tv_video.MC3_18_Weights,
               "r2plus1d_18": tv_video.R2Plus1D_18_Weights}
    for name, (gmacs, params) in PUBLISHED.items():
        meta = weights[name].KINETICS400_V1.meta
        assert (meta["_ops"], meta["num_params"]) == (gmacs, params), name


@pytest.mark.parametrize("name", cnn.VIDEO_MODELS)
def test_profile_totals_match_published_figures(name):
    gmacs, params = PUBLISHED[name]
    with torch.device("meta"):
        model = getattr(cnn, name)()
    result = cnn.profile(model, CLIP, spatial_dims=3)
    assert round(result.total_macs / 1e9, 3) == gmacs
    assert result.total_params == params
    assert result.total_multiplies == result.total_macs  # GEMM-like algorithms: the definition's products
    assert all(r.algorithm in kernels.REGISTRY for r in result.rows if r.kind == "conv")


def test_profile_rows_of_a_video_network():
    model = cnn.r3d_18(num_classes=10)
    model.layer1[0].conv1[0].algorithm = "im2col"
    result = cnn.profile(model, (2, 3, 8, 32, 32), spatial_dims=3)
    by_name = {r.name: r for r in result.rows}
    stem = by_name["stem.0"]
    assert stem.input_shape == (2, 3, 8, 32, 32) and stem.output_shape == (2, 64, 8, 16, 16)
    assert stem.macs == 2 * 64 * 8 * 16 * 16 * (3 * 3 * 7 * 7) and stem.params == 64 * 3 * 3 * 7 * 7
    assert (stem.algorithm, by_name["layer1.0.conv1.0"].algorithm) == ("im2col", "im2col")
    down = by_name["layer2.0.downsample.0"]  # 1x1x1, stride 2 in time and space
    assert (down.algorithm, down.output_shape) == ("pointwise", (2, 128, 4, 8, 8))
    assert by_name["fc"].input_shape == (2, 512) and by_name["fc"].macs == 2 * 512 * 10
    assert len(result.rows) == 1 + 16 + 3 + 1  # stem, two convs per block, three projections, fc
    assert "layer4.1.conv2.0" in str(result)
    with pytest.raises(ValueError, match="input_size"):
        cnn.profile(model, (3, 32, 32), spatial_dims=3)
    model.layer1[0].conv1[0].algorithm = "direct"  # no 3-D kernels: kernels.conv3d would refuse it too
    with pytest.raises(ValueError, match="direct has no 3-D kernels"):
        cnn.profile(model, (2, 3, 8, 32, 32), spatial_dims=3)
    with pytest.raises(ValueError, match="spatial_dims"):
        cnn.profile(model, CLIP, spatial_dims=4)


class VolumeNet(nn.Module):
    """A 3-D encoder-decoder (as volumetric U-Nets are): strided conv, channel-wise conv,
    transposed convs with an output_padding and with an output_size."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv3d(2, 8, 3, stride=2, padding=1)
        self.channelwise = nn.Conv3d(8, 8, 3, padding=1, groups=8)
        self.up = nn.ConvTranspose3d(8, 4, 3, stride=2, padding=1, output_padding=1)
        self.up2 = nn.ConvTranspose3d(4, 2, 2, stride=(1, 2, 2), groups=2, bias=False)

    def forward(self, x):
        y = self.up(self.channelwise(self.down(x)))
        return self.up2(y, output_size=(y.shape[2] + 1, 2 * y.shape[3] + 1, 2 * y.shape[4]))


def test_profile_counts_3d_layers_like_flop_counter_mode():
    model = VolumeNet()
    size = (2, 4, 6, 8)
    result = cnn.profile(model, size, spatial_dims=3)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = model(torch.randn((1,) + size))
    assert result.total_macs == counter.get_total_flops() // 2
    assert [r.kind for r in result.rows] == ["conv", "conv", "conv_transpose", "conv_transpose"]
    assert [r.algorithm for r in result.rows][:2] == ["im2col", "depthwise"]
    assert result.rows[-1].output_shape == tuple(out.shape) == (1, 2, 5, 13, 16)  # output_size honoured (H: 12 + 1)
    assert cnn.profile(model, size, spatial_dims=3, channels_last=True).total_macs == result.total_macs


# --- the same network, float64, PyTorch convolutions ---------------------------------------------

@pytest.mark.parametrize("name", cnn.VIDEO_MODELS)
def test_same_network_as_torchvision(tv_video, name):
    ours = random_float64_model(lambda: getattr(cnn, name)(num_classes=10))
    theirs = holding_weights_of(ours, lambda: getattr(tv_video, name)(num_classes=10))
    x = torch.randn(2, 3, 4, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        assert_outputs_close(ours(x), theirs(x), rtol=1e-10)
        assert_outputs_close(ours.train()(x), theirs.train()(x), rtol=1e-10)  # batch statistics


def test_convert_swaps_torchvisions_3d_convolutions_in_place(tv_video):
    with torch.device("meta"):
        model = tv_video.r2plus1d_18()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    weights, keys = list(model.parameters()), list(model.state_dict())
    cnn.convert(model, algorithm="im2col")
    assert all(isinstance(m, cnn.Conv3d) and m.algorithm == "im2col" for m in convs)
    assert cnn.count_converted(model) == len(convs) == 1 + 1 + 8 * 2 * 2 + 3  # stem pair, 16 (2+1)D pairs, 3 projections
    assert list(model.parameters()) == weights and list(model.state_dict()) == keys


def fused_3d(model):
    return [m for m in model.modules() if isinstance(m, FusedConv3dBN)]


def fused_residual_adds(fused):
    return sum(node.op == "call_module" and len(node.args) == 2
               and isinstance(graph.get_submodule(node.target), FusedConv3dBN)
               for graph in fused.modules() if isinstance(graph, torch.fx.GraphModule) for node in graph.graph.nodes)


# name: fused convolutions per activation, counted from the architecture: R3D / MC3 a stem and 8
# blocks (conv1 + ReLU; conv2 + the shortcut + ReLU), 3 projection shortcuts without one; R(2+1)D
# the same with every convolution a (spatial + BN-ReLU, temporal) pair.
FUSED = {"r3d_18": {"relu": 1 + 16, None: 3}, "mc3_18": {"relu": 1 + 16, None: 3},
         "r2plus1d_18": {"relu": 2 + 32, None: 3}}


@pytest.mark.parametrize("source", ["cnn", "torchvision"])
@pytest.mark.parametrize("name", cnn.VIDEO_MODELS)
def test_fuse_video_networks(tv_video, monkeypatch, name, source):
    """Every conv3d -> BatchNorm3d (-> add) (-> ReLU) becomes one conv3d_bn (its specification here):
    no BatchNorm left, the 8 residual adds inside, the original eval model's output."""
    build = (lambda: getattr(cnn, name)(num_classes=10)) if source == "cnn" else \
        (lambda: getattr(tv_video, name)(num_classes=10))
    model = random_float64_model(build)
    state = copy.deepcopy(model.state_dict())
    fused = cnn.fuse(model)
    acts = {}
    for m in fused_3d(fused):
        acts[m.activation] = acts.get(m.activation, 0) + 1
    assert acts == FUSED[name] and fused_residual_adds(fused) == 8
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    monkeypatch.setattr(kernels, "conv3d_bn", spec_conv3d_bn, raising=False)
    x = torch.randn(1, 3, 4, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        assert_outputs_close(fused(x), model(x), rtol=1e-10)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


# --- on our kernels ------------------------------------------------------------------------------

CONV3D = [
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
    dict(in_channels=4, out_channels=4, kernel_size=(3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0)),
    dict(in_channels=4, out_channels=8, kernel_size=1, stride=2, bias=False),
    dict(in_channels=4, out_channels=6, kernel_size=3, dilation=2, groups=2, padding="same"),
    dict(in_channels=6, out_channels=6, kernel_size=3, groups=6, padding=1),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
]


@pytest.mark.parametrize("kwargs", CONV3D, ids=lambda k: "-".join(f"{a}{v}" for a, v in k.items()))
def test_conv3d_module_matches_nn_conv3d(device, kwargs):
    ours = cnn.Conv3d(**kwargs, device=device, dtype=torch.float64)
    assert ours.algorithm == "auto" and "algorithm='auto'" in repr(ours)
    reference = nn.Conv3d(**kwargs, dtype=torch.float64)
    reference.load_state_dict({k: v.cpu() for k, v in ours.state_dict().items()}, strict=True)
    x = torch.randn(2, kwargs["in_channels"], 5, 6, 7, dtype=torch.float64, device=device, requires_grad=True)
    y = ours(x)
    rx = as_reference(x)
    ry = reference(rx)
    grad = torch.randn_like(ry)
    y.backward(grad.to(device))
    ry.backward(grad)
    reduction = ours.weight[0].numel()
    assert_close(y, ry, torch.float64, reduction)
    assert_close(x.grad, rx.grad, torch.float64, reduction, "grad_input")
    assert_close(ours.weight.grad, reference.weight.grad, torch.float64, y[:, 0].numel(), "grad_weight")


def test_conv3d_module_float32_channels_last_3d_and_unbatched(device):
    ours = cnn.Conv3d(4, 8, 3, stride=(1, 2, 2), padding=1, device=device)
    reference = copy.deepcopy(ours).double().cpu()
    on_pytorch_convs(reference)
    x = torch.randn(2, 4, 4, 8, 8, device=device).contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        y = ours(x)
        assert y.is_contiguous(memory_format=torch.channels_last_3d)  # PyTorch's rule
        assert_close(y, reference(as_reference(x)), torch.float32, 4 * 27)
        single = ours(x[0])  # unbatched (C, T, H, W)
        assert_close(single, reference(as_reference(x[0])), torch.float32, 4 * 27)


@pytest.mark.parametrize("kwargs,output_size", [
    (dict(in_channels=4, out_channels=3, kernel_size=3, stride=2, padding=1, output_padding=1), None),
    (dict(in_channels=4, out_channels=6, kernel_size=(2, 3, 3), stride=(1, 2, 2), groups=2, bias=False), (6, 12, 13)),
    (dict(in_channels=3, out_channels=3, kernel_size=2, dilation=2), None),
])
def test_conv_transpose3d_module_matches_nn_conv_transpose3d(device, kwargs, output_size):
    ours = cnn.ConvTranspose3d(**kwargs, device=device, dtype=torch.float64)
    reference = nn.ConvTranspose3d(**kwargs, dtype=torch.float64)
    reference.load_state_dict({k: v.cpu() for k, v in ours.state_dict().items()}, strict=True)
    x = torch.randn(2, kwargs["in_channels"], 5, 5, 6, dtype=torch.float64, device=device)
    with torch.no_grad():
        y = ours(x, output_size=output_size)
        expected = reference(as_reference(x), output_size=output_size)
    assert_close(y, expected, torch.float64, ours.weight[0].numel())


def test_modules_pass_their_arguments_and_algorithm(monkeypatch):
    """What the modules hand to kernels (recorded, not computed): torchvision's conv arguments,
    the output_padding nn.ConvTranspose3d derives from output_size, the algorithm attribute."""
    calls = []
    plain = lambda args: tuple(tuple(a) if isinstance(a, list) else a for a in args)  # noqa: E731
    record = lambda name: lambda *args, **kwargs: calls.append((name, plain(args[3:]), kwargs))  # noqa: E731
    monkeypatch.setattr(kernels, "conv3d", record("conv3d"), raising=False)
    monkeypatch.setattr(kernels, "conv_transpose3d", record("conv_transpose3d"), raising=False)
    conv = cnn.Conv3d(2, 4, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), dilation=(1, 2, 1), groups=2,
                      algorithm="im2col")
    conv(torch.randn(1, 2, 3, 8, 8))
    up = cnn.ConvTranspose3d(2, 2, 3, stride=2, padding=1, algorithm="pointwise")
    up(torch.randn(1, 2, 3, 4, 4), output_size=[6, 8, 7])
    assert calls == [
        ("conv3d", ((1, 2, 2), (0, 1, 1), (1, 2, 1), 2), {"algorithm": "im2col"}),
        ("conv_transpose3d", ((2, 2, 2), (1, 1, 1), (1, 1, 0), 1, (1, 1, 1)), {"algorithm": "pointwise"}),
    ]
    with pytest.raises(ValueError, match="zeros"):
        cnn.ConvTranspose3d(2, 2, 3, padding_mode="reflect")(torch.randn(1, 2, 3, 4, 4))


# Block classes at a few channels: (block, inplanes, planes, builder, stride).
BLOCKS = [
    ("basic", 8, 8, "Conv3DSimple", 1),
    ("basic", 8, 16, "Conv3DSimple", 2),
    ("basic", 8, 16, "Conv3DNoTemporal", 2),
    ("basic", 8, 8, "Conv2Plus1D", 1),
    ("basic", 8, 16, "Conv2Plus1D", 2),
    ("bottleneck", 16, 4, "Conv3DSimple", 2),
]


@pytest.mark.parametrize("kind,inplanes,planes,builder,stride", BLOCKS, ids=lambda v: str(v))
def test_blocks_on_kernels_match_torchvision(tv_video, device, kind, inplanes, planes, builder, stride):
    from torchvision.models.video import resnet as tv

    def build(module):
        block = module.BasicBlock if kind == "basic" else module.Bottleneck
        maker = getattr(module, builder)
        out = planes * block.expansion
        downsample = None
        if stride != 1 or inplanes != out:
            conv = video_resnet.Conv3d if module is video_resnet else nn.Conv3d
            downsample = nn.Sequential(conv(inplanes, out, 1, stride=maker.get_downsample_stride(stride), bias=False),
                                       nn.BatchNorm3d(out))
        return block(inplanes, planes, maker, stride, downsample)

    ours = randomise(build(video_resnet))
    theirs = holding_weights_of(ours, lambda: build(tv)).double().eval()
    x = torch.randn(1, inplanes, 4, 8, 8)
    with torch.no_grad():
        assert_outputs_close(ours.to(device)(x.to(device)).cpu(), theirs(x.double()), rtol=1e-4)


@pytest.mark.parametrize("stem", ["BasicStem", "R2Plus1dStem"])
def test_stems_on_kernels_match_torchvision(tv_video, device, stem):
    from torchvision.models.video import resnet as tv

    ours = randomise(getattr(video_resnet, stem)())
    theirs = holding_weights_of(ours, getattr(tv, stem)).double().eval()
    x = torch.randn(1, 3, 4, 16, 16)
    with torch.no_grad():
        assert_outputs_close(ours.to(device)(x.to(device)).cpu(), theirs(x.double()), rtol=1e-4)


def test_fused_video_blocks_on_kernels(device):
    """A narrow network of the video block classes, fused: every convolution one conv3d_bn, no
    BatchNorm or add left, the eval model's output (channels_last_3d, as benchmarked)."""
    def downsample(c_in, c_out, stride):
        return nn.Sequential(cnn.Conv3d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm3d(c_out))

    model = randomise(nn.Sequential(
        nn.Sequential(cnn.Conv3d(3, 8, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2), bias=False),
                      nn.BatchNorm3d(8), nn.ReLU(inplace=True)),
        video_resnet.BasicBlock(8, 16, video_resnet.Conv3DSimple, 2, downsample(8, 16, 2)),
        video_resnet.BasicBlock(16, 16, video_resnet.Conv2Plus1D),
        video_resnet.BasicBlock(16, 16, video_resnet.Conv3DNoTemporal),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(16, 10),
    ))
    reference = on_pytorch_convs(copy.deepcopy(model)).double()
    fused = cnn.fuse(model)
    assert len(fused_3d(fused)) == 1 + 3 + 2 * 2 + 2  # stem; block 1 and its projection; two (2+1)D pairs; block 3
    assert not any(isinstance(m, (nn.BatchNorm3d, cnn.Conv3d)) for m in fused.modules())
    x = torch.randn(1, 3, 4, 16, 16)
    with torch.no_grad():
        expected = reference(x.double())
        fused = fused.to(device, memory_format=torch.channels_last_3d)
        actual = fused(x.to(device).contiguous(memory_format=torch.channels_last_3d)).cpu()
    assert_outputs_close(actual, expected, rtol=1e-4)


@pytest.mark.skipif(not CUDA, reason="full-size video networks on our kernels: CUDA only (hours under the interpreter)")
@pytest.mark.parametrize("name", cnn.VIDEO_MODELS)
def test_full_size_network_on_kernels_matches_torchvision_cuda(tv_video, name):
    ours = randomise(getattr(cnn, name)()).cuda()
    theirs = holding_weights_of(ours, lambda: getattr(tv_video, name)()).double().eval().cuda()
    x = torch.randn((2,) + CLIP, device="cuda")
    with torch.no_grad():
        expected = theirs(x.double())
        assert_outputs_close(ours(x), expected, rtol=1e-4)
        assert_outputs_close(cnn.fuse(ours)(x.contiguous(memory_format=torch.channels_last_3d)), expected, rtol=1e-4)
