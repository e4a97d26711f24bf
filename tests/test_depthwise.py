"""The depthwise kernels: MobileNet shapes (stride 1 and 2, channel multiplier, 5x5 / non-square,
dilation) forward and backward in every dtype and layout, determinism, and the fused epilogue."""
import pytest
import torch

import kernels
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
