"""The depthwise kernels: MobileNet shapes (stride 1 and 2, channel multiplier, 5x5 / non-square,
dilation) forward and backward in every dtype and layout, determinism, and the fused epilogue; the
large-kernel (halo) forward at ConvNeXt's 7x7 and RepLKNet's 13x13 and 31x31, with halos wider than
the 16-column tile, padding strings, dilation, stride and the channel multiplier; its gradients (the
halo dgrad at stride 1, the halo wgrad)."""
import pytest
import torch

import kernels
from kernels.core.launcher import LAUNCHES
from cases import DTYPES, LAYOUTS
from reference import Case, random_inputs
from test_backward import _check_backward
from test_direct import check_fused_epilogue
from test_forward import _check_forward

MOBILENET_S1 = Case(2, 6, 7, 9, 6, 3, 3, padding=1, groups=6)
MOBILENET_S2_MULT = Case(1, 3, 9, 10, 6, 3, 3, stride=2, padding=1, groups=3)
FIVE_BY_THREE = Case(1, 2, 8, 9, 6, 5, 3, stride=(2, 1), padding=(2, 2), dilation=(1, 2), groups=2, bias=False)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_depthwise_forward(dtype, layout, device):
    _check_forward("depthwise", MOBILENET_S1, getattr(torch, dtype), layout, device)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_depthwise_backward_stride2_multiplier(dtype, layout, device):
    _check_backward("depthwise", MOBILENET_S2_MULT, getattr(torch, dtype), layout, device)


def test_depthwise_non_square_dilated_backward_int64(device, monkeypatch):
    from kernels.ops import common

    monkeypatch.setattr(common, "FORCE_INT64", True)
    _check_backward("depthwise", FIVE_BY_THREE, torch.float32, "channels_last", device)


def test_depthwise_gradcheck(device):
    case = Case(1, 2, 5, 6, 4, 3, 2, stride=(2, 1), padding=(1, 0), groups=2)
    x, w, b = random_inputs(case, torch.float64, device, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: kernels.conv2d(x, w, b, **case.conv_args(), algorithm="depthwise"), (x, w, b),
        fast_mode=True)


def test_depthwise_backward_bitwise_deterministic(device):
    x, w, b = random_inputs(MOBILENET_S2_MULT, torch.float16, device, "channels_last", requires_grad=True)
    grads = []
    grad_output = torch.randn(kernels.conv2d(x, w, b, **MOBILENET_S2_MULT.conv_args()).shape, dtype=torch.float16, device=device)
    for _ in range(2):
        x.grad = w.grad = b.grad = None
        y = kernels.conv2d(x, w, b, **MOBILENET_S2_MULT.conv_args(), algorithm="depthwise")
        y.backward(grad_output)
        grads.append((y.detach().clone(), x.grad.clone(), w.grad.clone()))
    for first, second in zip(*grads):
        assert torch.equal(first, second)


def test_depthwise_fused_epilogue(device):
    check_fused_epilogue("depthwise", MOBILENET_S2_MULT, "relu6", device, torch.bfloat16)


# Large kernels (the halo forward). Few channels keep the interpreter cheap; widths past 16 put output
# tiles beside each other, so a tile's window reaches into its neighbour's columns and past the image.
CONVNEXT_7X7 = Case(2, 3, 9, 19, 3, 7, 7, padding=3, groups=3)
REPLK_13X13 = Case(1, 2, 7, 18, 2, 13, 13, padding="same", groups=2)
REPLK_31X31 = Case(1, 2, 5, 33, 2, 31, 31, padding=15, groups=2, bias=False)
LARGE_VARIANTS = [
    Case(1, 2, 11, 20, 4, 7, 9, stride=(1, 2), padding=(3, 4), dilation=(2, 3), groups=2),  # multiplier 2
    Case(2, 2, 6, 17, 2, 3, 13, stride=2, padding="valid", groups=2),  # non-square, valid
    Case(1, 3, 8, 8, 3, 7, 7, padding="same", dilation=2, groups=3, unbatched=True),
]


def _check_halo(case, dtype, layout, device):
    before = LAUNCHES["_depthwise_halo_kernel"]
    _check_forward("depthwise", case, dtype, layout, device)
    assert LAUNCHES["_depthwise_halo_kernel"] == before + 1  # the large-kernel path, not the direct kernel


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_depthwise_13x13_forward(dtype, layout, device):
    _check_halo(REPLK_13X13, getattr(torch, dtype), layout, device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [CONVNEXT_7X7, REPLK_31X31], ids=["7x7", "31x31"])
def test_depthwise_large_kernel_forward(case, dtype, device):
    _check_halo(case, getattr(torch, dtype), "channels_last", device)


@pytest.mark.parametrize("case", LARGE_VARIANTS, ids=["dilated-stride-multiplier", "valid-1x13-stride2", "same-unbatched"])
def test_depthwise_large_kernel_geometry(case, device):
    _check_halo(case, torch.float32, "channels_last", device)


def test_depthwise_large_kernel_fused_epilogue_int64(device, monkeypatch):
    from kernels.ops import common

    monkeypatch.setattr(common, "FORCE_INT64", True)
    before = LAUNCHES["_depthwise_halo_kernel"]
    check_fused_epilogue("depthwise", CONVNEXT_7X7, "silu", device, torch.float16)
    assert LAUNCHES["_depthwise_halo_kernel"] == before + 1


@pytest.mark.parametrize("case,halo_dgrad", [
    (Case(1, 2, 5, 18, 2, 13, 13, padding=6, groups=2), True),
    (Case(1, 2, 6, 17, 2, 7, 9, padding=(7, 9), dilation=(1, 2), groups=2), True),  # pad 7 > R-1: pad_h -1 for dx
    (Case(1, 2, 7, 12, 4, 7, 7, stride=2, padding=3, groups=2), False),  # stride 2, multiplier 2: phases
])
def test_depthwise_large_kernel_backward(case, halo_dgrad, device):
    before, wgrad = LAUNCHES["_depthwise_halo_kernel"], LAUNCHES["_depthwise_halo_wgrad_kernel"]
    _check_backward("depthwise", case, torch.float32, "channels_last", device)
    assert LAUNCHES["_depthwise_halo_kernel"] - before == (2 if halo_dgrad else 1)  # forward (+ grad_input)
    assert LAUNCHES["_depthwise_halo_wgrad_kernel"] - wgrad == 1


def test_depthwise_31x31_backward_fp16(device):
    """The halo wgrad over two column tiles and three output rows (and the halo dgrad) at 31x31, NCHW."""
    _check_backward("depthwise", Case(1, 2, 3, 34, 2, 31, 31, padding=15, groups=2), torch.float16, "nchw", device)


@pytest.mark.parametrize("gpu", [False, True])
def test_halo_plan(gpu, monkeypatch):
    """Small kernels stay on the direct kernel; every halo candidate's chunks cover its window (the
    GPU menu too), and its dot dimensions are 16 or more."""
    from kernels.ops import depthwise
    from kernels.core.params import ConvParams

    plan_halo = depthwise.plan_halo
    if gpu:
        monkeypatch.setattr(depthwise, "interpreting", lambda: False)

    def params(r, s, stride=1, dilation=1, h=56):
        x = torch.empty(32, 128, h, h, device="meta")
        w = torch.empty(128, 1, r, s, device="meta")
        return ConvParams.from_tensors(x, w, None, stride, (r // 2 * dilation, s // 2 * dilation), dilation, 128)

    assert plan_halo(params(3, 3)) is None and plan_halo(params(7, 5)) is None
    for p, candidates in [(params(31, 31), 2), (params(13, 13, h=7), 2), (params(7, 7, stride=2, dilation=3), 2)]:
        plan = plan_halo(p)
        assert plan
        for cfg in plan:
            m = cfg.kwargs
            assert m["CHUNKS"] * m["CHUNK"] >= (m["BLOCK_Q"] - 1) * p.stride[1] + (p.s - 1) * p.dilation[1] + 1
            assert min(m["BLOCK_P"], m["BLOCK_Q"], m["CHUNK"]) >= 16
            assert cfg.num_warps <= 4  # a flattened loop at 8 warps: pytorch#173068
        assert len(plan) == (candidates if gpu else 1)


def test_halo_wgrad_plan_keeps_fp32_nchw_at_one_stage(monkeypatch):
    """The sm_90 compile spilled 16 B on two stages of fp32 NCHW blocks at 31x31: that plan has one
    stage; 16-bit and channels_last keep both candidates."""
    from kernels.ops import depthwise
    from kernels.core.params import ConvParams

    monkeypatch.setattr(depthwise, "interpreting", lambda: False)

    def stages(dtype, channels_last):
        x = torch.empty(32, 128, 56, 56, dtype=dtype, device="meta")
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        w = torch.empty(128, 1, 31, 31, dtype=dtype, device="meta")
        p = ConvParams.from_tensors(x, w, None, 1, 15, 1, 128)
        return sorted(cfg.num_stages for cfg in depthwise.plan_halo_grad_weight(p))

    assert stages(torch.float32, False) == [1]
    assert stages(torch.float32, True) == stages(torch.float16, False) == [1, 2]
