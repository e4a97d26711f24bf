"""Forward equivalence: every registered algorithm against F.conv2d in float64."""
import pytest
import torch
import torch.nn.functional as F

import kernels
from cases import CORE, DTYPES, LAYOUTS, SWEEP, algorithm_cases, first_applicable
from reference import assert_close, random_inputs, reference_conv

ALGORITHMS = list(kernels.REGISTRY)


def _check_forward(algorithm, case, dtype, layout, device):
    x, w, b = random_inputs(case, dtype, device, layout)
    y = kernels.conv2d(x, w, b, **case.conv_args(), algorithm=algorithm)
    ref = reference_conv(x, w, b, case)
    assert_close(y, ref, dtype, case.reduction, error_ratio=kernels.REGISTRY[algorithm].error_ratio(dtype))
    # Memory format follows PyTorch's rule for the same call.
    expected = F.conv2d(x.detach().cpu().double(), w.detach().cpu().double(), **case.conv_args())
    assert y.is_contiguous() == expected.is_contiguous()
    assert y.is_contiguous(memory_format=torch.channels_last) == expected.is_contiguous(
        memory_format=torch.channels_last)


@pytest.mark.parametrize("algorithm,case", algorithm_cases(SWEEP))
def test_forward_shapes(algorithm, case, device):
    _check_forward(algorithm, case, torch.float32, "nchw", device)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm,case", algorithm_cases(CORE))
def test_forward_dtypes_layouts(algorithm, case, dtype, layout, device):
    _check_forward(algorithm, case, getattr(torch, dtype), layout, device)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_forward_int64_offsets(algorithm, device, monkeypatch):
    """The 64-bit offset path computes the same numbers (forced on a small tensor)."""
    from kernels.ops import common

    case = first_applicable(algorithm, CORE[1:] + CORE[:1])
    monkeypatch.setattr(common, "FORCE_INT64", True)
    _check_forward(algorithm, case, torch.float32, "channels_last", device)


def test_needs_int64_threshold():
    from kernels.ops.common import needs_int64

    small = torch.empty(4, 4)
    assert not needs_int64(small)
    # A stride-only view: the offsets exceed 2**31 without allocating that much memory.
    huge = torch.empty((2, 2), device="meta").as_strided((2, 2), (2**31, 1))
    assert needs_int64(huge)
