"""The public contract around the kernels: tracing, autocast, determinism, counts, routing."""
import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels.dispatch import REGISTRY, Algorithm
from kernels.dispatch.algorithm import direct_macs
from reference import Case, as_reference, assert_close, random_inputs

CASE = Case(2, 4, 7, 7, 6, 3, 3, stride=2, padding=1, groups=2)


def test_torch_compile_fullgraph_forward_and_backward(device):
    x, w, b = random_inputs(CASE, torch.float32, device, "channels_last", requires_grad=True)

    def f(x, w, b):
        return torch.relu(kernels.conv2d(x, w, b, **CASE.conv_args())) * 2

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    y = compiled(x, w, b)
    y.sum().backward()
    rx, rw, rb = as_reference(x), as_reference(w), as_reference(b)
    ref = torch.relu(F.conv2d(rx, rw, rb, **CASE.conv_args())) * 2
    ref.sum().backward()
    assert_close(y, ref, torch.float32, CASE.reduction)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close(x.grad, rx.grad, torch.float32, 27, "grad_input")
    assert_close(w.grad, rw.grad, torch.float32, 32, "grad_weight")


def test_fake_tensor_strides_match_real(device):
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, w, b = random_inputs(CASE, torch.float32, device, "channels_last")
    real = kernels.conv2d(x, w, b, **CASE.conv_args())
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = kernels.conv2d(mode.from_tensor(x), mode.from_tensor(w), mode.from_tensor(b), **CASE.conv_args())
    assert fake.shape == real.shape and fake.stride() == real.stride() and fake.dtype == real.dtype


def test_inputs_unmodified_and_bitwise_deterministic(device):
    x, w, b = random_inputs(CASE, torch.float16, device, "channels_last", requires_grad=True)
    copies = [t.detach().clone() for t in (x, w, b)]
    grad = torch.randn(kernels.conv2d(x, w, b, **CASE.conv_args()).shape, dtype=torch.float16, device=device)
    results = []
    for _ in range(2):
        for t in (x, w, b):
            t.grad = None
        y = kernels.conv2d(x, w, b, **CASE.conv_args())
        y.backward(grad)
        results.append([y.detach().clone(), x.grad.clone(), w.grad.clone(), b.grad.clone()])
    for first, second in zip(*results):
        assert torch.equal(first, second)
    for original, t in zip(copies, (x, w, b)):
        assert torch.equal(original, t.detach())


def test_autocast_runs_in_autocast_dtype(device):
    x, w, b = random_inputs(CASE, torch.float32, device)
    dtype = torch.bfloat16
    with torch.autocast(device_type=device, dtype=dtype):
        y = kernels.conv2d(x, w, b, **CASE.conv_args())
        expected = F.conv2d(x, w, b, **CASE.conv_args())
    assert y.dtype == expected.dtype == dtype
    ref = F.conv2d(as_reference(x.to(dtype)), as_reference(w.to(dtype)), as_reference(b.to(dtype)), **CASE.conv_args())
    assert_close(y, ref, dtype, CASE.reduction)


def test_conv2d_function_matches_functional(device):
    case = Case(1, 3, 6, 5, 4, 3, 3, padding=1, unbatched=True)
    x, w, b = random_inputs(case, torch.float64, device, requires_grad=True)
    y = kernels.Conv2dFunction.apply(x, w, b, 1, 1, 1, 1, "auto")
    y.sum().backward()
    rx, rw, rb = as_reference(x), as_reference(w), as_reference(b)
    ref = F.conv2d(rx, rw, rb, padding=1)
    ref.sum().backward()
    assert y.shape == ref.shape == (4, 6, 5)
    assert_close(y, ref, torch.float64, case.reduction)
    assert_close(x.grad, rx.grad, torch.float64, 36, "grad_input")


def test_unbatched_with_channels_last_weight_follows_pytorch(device):
    case = Case(1, 4, 6, 6, 5, 3, 3, padding=1, unbatched=True)
    x, w, b = random_inputs(case, torch.float32, device)
    w = w.contiguous(memory_format=torch.channels_last)
    y = kernels.conv2d(x, w, b, padding=1)
    expected = F.conv2d(x.cpu(), w.cpu(), b.cpu(), padding=1)
    assert y.shape == expected.shape and y.stride() == expected.stride()


def test_tf32_mode_follows_cudnn_flag(device):
    """With cudnn.allow_tf32 on, fp32 runs as TF32 (like cuDNN): within TF32's tolerance."""
    torch.backends.cudnn.allow_tf32 = True
    case = Case(1, 32, 6, 6, 16, 3, 3, padding=1)
    x, w, b = random_inputs(case, torch.float32, device, "channels_last")
    y = kernels.conv2d(x, w, b, padding=1)
    assert_close(y, F.conv2d(as_reference(x), as_reference(w), as_reference(b), padding=1),
                 torch.float32, case.reduction, tf32=True)


def test_conv2d_flops_counts_macs():
    counts = kernels.conv2d_flops((32, 64, 56, 56), (128, 32, 3, 3), stride=2, padding=1, groups=2)
    assert counts["macs"] == 32 * 128 * 28 * 28 * 32 * 9
    assert counts["multiplies"] == counts["macs"]
    assert counts["flops"] == 2 * counts["macs"]
    assert counts["algorithm"] == "im2col"
    same = kernels.conv2d_flops((1, 3, 224, 224), (64, 3, 7, 7), padding="same")
    assert same["macs"] == 64 * 224 * 224 * 3 * 49


def test_algorithms_list_the_registry():
    assert kernels.ALGORITHMS[0] == "auto"
    assert set(kernels.ALGORITHMS[1:]) == set(REGISTRY) | set(kernels.ALIASES)
    assert "im2col" in kernels.ALGORITHMS


def test_ineligible_algorithm_names_condition(device, monkeypatch):
    only_3x3 = Algorithm(
        name="only3x3", unsupported=lambda p: None if (p.r, p.s) == (3, 3) else f"needs a 3x3 kernel, got {p.r}x{p.s}",
        forward=REGISTRY["im2col"].forward, count=direct_macs, grad_input=REGISTRY["im2col"].grad_input,
        grad_weight=REGISTRY["im2col"].grad_weight)
    monkeypatch.setitem(REGISTRY, "only3x3", only_3x3)
    x = torch.randn(1, 2, 6, 6, device=device)
    with pytest.raises(ValueError, match=r"only3x3.*needs a 3x3 kernel, got 5x5"):
        kernels.conv2d(x, torch.randn(2, 2, 5, 5, device=device), algorithm="only3x3")
    with pytest.raises(ValueError, match="only3x3"):
        kernels.conv2d_flops((1, 2, 6, 6), (2, 2, 5, 5), algorithm="only3x3")


def test_cpu_tensors_without_interpreter_raise(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="CUDA"):
        kernels.conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3))
