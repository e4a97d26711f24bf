"""Backward equivalence: gradients of every algorithm against F.conv2d's in float64, and gradcheck."""
import pytest
import torch
import torch.nn.functional as F

import kernels
from cases import CORE, DTYPES, LAYOUTS, SWEEP, algorithm_cases, first_applicable
from reference import Case, as_reference, assert_close, random_inputs

ALGORITHMS = list(kernels.REGISTRY)


def _check_backward(algorithm, case, dtype, layout, device):
    x, w, b = random_inputs(case, dtype, device, layout, requires_grad=True)
    y = kernels.conv2d(x, w, b, **case.conv_args(), algorithm=algorithm)
    grad = torch.randn_like(y)
    y.backward(grad)

    rx, rw, rb = as_reference(x), as_reference(w), as_reference(b)
    ref = F.conv2d(rx, rw, rb, **case.conv_args())
    ref.backward(as_reference(grad))

    stride = case.stride if isinstance(case.stride, int) else max(case.stride)
    dgrad_reduction = max(1, case.k // case.groups * case.r * case.s // stride**2)
    wgrad_reduction = max(1, ref.numel() // max(1, case.k))
    assert_close(x.grad, rx.grad, dtype, dgrad_reduction, "grad_input")
    assert_close(w.grad, rw.grad, dtype, wgrad_reduction, "grad_weight")
    if b is not None:
        assert_close(b.grad, rb.grad, dtype, wgrad_reduction, "grad_bias")
    # Gradients come back in their parameter's memory format, as with PyTorch.
    for t in (x, w):
        if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
            assert t.grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("algorithm,case", algorithm_cases(SWEEP))
def test_backward_shapes(algorithm, case, device):
    _check_backward(algorithm, case, torch.float32, "nchw", device)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm,case", algorithm_cases(CORE, per_algorithm=2))
def test_backward_dtypes_layouts(algorithm, case, dtype, layout, device):
    _check_backward(algorithm, case, getattr(torch, dtype), layout, device)


GRADCHECK_CASES = [
    Case(1, 4, 6, 6, 4, 3, 3, stride=2, padding=(1, 2), dilation=(1, 2), groups=2),
    Case(2, 3, 5, 6, 2, 2, 3, padding="same"),
]


@pytest.mark.parametrize("algorithm,case", algorithm_cases(GRADCHECK_CASES))
def test_gradcheck(algorithm, case, device):
    x, w, b = random_inputs(case, torch.float64, device, requires_grad=True)

    def f(x, w, b):
        return kernels.conv2d(x, w, b, **case.conv_args(), algorithm=algorithm)

    assert torch.autograd.gradcheck(f, (x, w, b), fast_mode=True)


def test_only_weight_requires_grad(device):
    case = CORE[0]
    x, w, b = random_inputs(case, torch.float32, device)
    w.requires_grad_(True)
    kernels.conv2d(x, w, b, **case.conv_args()).sum().backward()
    rx, rw, rb = as_reference(x), as_reference(w), as_reference(b)
    F.conv2d(rx, rw, rb, **case.conv_args()).sum().backward()
    assert x.grad is None
    assert_close(w.grad, rw.grad, torch.float32, 2 * 8 * 8, "grad_weight")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_backward_int64_offsets(algorithm, device, monkeypatch):
    """The 64-bit offset path of the backward kernels computes the same gradients."""
    from kernels.ops import common

    monkeypatch.setattr(common, "FORCE_INT64", True)
    _check_backward(algorithm, first_applicable(algorithm, CORE[1:] + CORE[:1]), torch.float32, "channels_last", device)
