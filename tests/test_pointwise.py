"""The pointwise (1x1 GEMM) kernel: strided / padded / grouped 1x1 in every dtype and layout,
its GEMM backward, and the fused epilogue."""
import pytest
import torch

from cases import DTYPES, LAYOUTS
from reference import Case
from test_backward import _check_backward
from test_direct import check_fused_epilogue
from test_forward import _check_forward

# ResNet's strided 1x1 downsample, shrunk; 36 channels = three reduction blocks of 16.
DOWNSAMPLE = Case(2, 36, 7, 6, 20, 1, 1, stride=2)
PADDED_GROUPED = Case(1, 32, 5, 6, 24, 1, 1, stride=(1, 3), padding=(1, 2), groups=2)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pointwise_downsample_forward(dtype, layout, device):
    _check_forward("pointwise", DOWNSAMPLE, getattr(torch, dtype), layout, device)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_pointwise_backward(dtype, layout, device):
    _check_backward("pointwise", DOWNSAMPLE, getattr(torch, dtype), layout, device)


def test_pointwise_padded_grouped_backward_int64(device, monkeypatch):
    from kernels.ops import common

    monkeypatch.setattr(common, "FORCE_INT64", True)
    _check_backward("pointwise", PADDED_GROUPED, torch.float16, "channels_last", device)


def test_pointwise_tf32_follows_cudnn_flag(device):
    torch.backends.cudnn.allow_tf32 = True
    import kernels
    from reference import as_reference, assert_close, random_inputs
    import torch.nn.functional as F

    x, w, b = random_inputs(DOWNSAMPLE, torch.float32, device, "channels_last")
    y = kernels.conv2d(x, w, b, stride=2, algorithm="pointwise")
    ref = F.conv2d(as_reference(x), as_reference(w), as_reference(b), stride=2)
    assert_close(y, ref, torch.float32, DOWNSAMPLE.reduction, tf32=True)


def test_pointwise_fused_epilogue(device):
    check_fused_epilogue("pointwise", PADDED_GROUPED, "silu", device, torch.float16)
