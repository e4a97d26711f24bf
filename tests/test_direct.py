"""The direct kernel: the shapes it is for (C=3 stems, narrow groups) in every dtype and layout,
and the fused epilogue its forward shares with conv2d_bn."""
import pytest
import torch
import torch.nn.functional as F

import kernels
from cases import DTYPES, LAYOUTS
from kernels.ops.epilogue import activation_code
from kernels.core.params import ConvParams
from reference import Case, as_reference, assert_close, random_inputs
from test_backward import _check_backward
from test_forward import _check_forward

STEM = Case(2, 3, 9, 9, 8, 7, 7, stride=2, padding=3)  # ResNet's stem, shrunk
NARROW_GROUPS = Case(1, 8, 7, 6, 4, 3, 3, stride=(1, 2), padding=1, dilation=(2, 1), groups=4)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_direct_stem_forward(dtype, layout, device):
    _check_forward("direct", STEM, getattr(torch, dtype), layout, device)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_direct_narrow_groups_backward(dtype, device):
    _check_backward("direct", NARROW_GROUPS, getattr(torch, dtype), "channels_last", device)


def test_direct_int64_offsets(device, monkeypatch):
    from kernels.ops import common

    monkeypatch.setattr(common, "FORCE_INT64", True)
    _check_forward("direct", NARROW_GROUPS, torch.float32, "nchw", device)


def check_fused_epilogue(algorithm, case, activation, device, dtype=torch.float32):
    """forward(..., scale, shift, residual, activation) == act((conv + bias) * scale + shift + residual),
    the contract conv2d_bn relies on; the residual arrives in the other layout than the output."""
    x, w, b = random_inputs(case, dtype, device, "channels_last")
    params = ConvParams.from_tensors(x, w, b, **case.conv_args())
    scale = torch.randn(case.k, device=device, dtype=torch.float32)
    shift = torch.randn(case.k, device=device, dtype=torch.float32)
    residual = torch.randn(params.output_shape, device=device, dtype=dtype)  # NCHW, output is NHWC
    forward = kernels.REGISTRY[algorithm].forward
    y = forward(x, w, b, params, scale=scale, shift=shift, residual=residual,
                activation=activation_code(activation))
    conv = F.conv2d(as_reference(x), as_reference(w), as_reference(b), **case.conv_args())
    ref = conv * as_reference(scale)[:, None, None] + as_reference(shift)[:, None, None] + as_reference(residual)
    ref = {"relu6": F.relu6, "silu": F.silu, "hardswish": F.hardswish}[activation](ref)
    assert_close(y, ref, dtype, 4 * case.reduction)
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_direct_fused_epilogue(device):
    check_fused_epilogue("direct", NARROW_GROUPS, "hardswish", device)
