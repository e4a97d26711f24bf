"""Hopper's TMA data path (tensor descriptors) of the implicit GEMM, run under the interpreter, whose
descriptors are emulated with the same zero fill: the descriptor rules, the pointwise (stride-1 1x1)
forward / dgrad / wgrad kernel, grouped, split-K and persistent, the stride-1 R x S forward / dgrad
kernel and its wgrad kernel (padding = zero fill), stride 2 through the phase view, the strided dgrad by
stride phases, against float64 PyTorch; and the calls the rules refuse (fp16 channels not a multiple
of 8, fp64, odd sizes, grouped or stride-3 strided forward / wgrad), which the cp.async kernels serve.

Each test asserts which kernel ran (``LAUNCHES``), so a test of the TMA path cannot pass on the
cp.async kernels, and the other way round.
"""
import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels.core.launcher import LAUNCHES
from kernels.ops.gemm import plan as gemm_plan
from kernels.ops.gemm import tma
from reference import Case, as_reference, assert_close, random_inputs

TMA_KERNEL = "_pointwise_tma_kernel"
CONV_TMA = "_conv_tma_kernel"
CONV_TMA_WGRAD = "_conv_tma_wgrad_kernel"
CPASYNC = ("_im2col_forward_kernel", "_dgrad_kernel", "_wgrad_kernel")


def _launches():
    return {name: LAUNCHES[name] for name in (TMA_KERNEL, CONV_TMA, CONV_TMA_WGRAD, "_split_reduce_kernel") + CPASYNC}


def _ran(before, name):
    return LAUNCHES[name] - before[name]


def _forward_and_grads(case, dtype, device, layout, algorithm="pointwise"):
    x, w, b = random_inputs(case, dtype, device, layout, requires_grad=True)
    y = kernels.conv2d(x, w, b, **case.conv_args(), algorithm=algorithm)
    dy = torch.randn_like(y)
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), dy)
    rx, rw, rb = as_reference(x), as_reference(w), as_reference(b)
    ref = F.conv2d(rx, rw, rb, **case.conv_args())
    rgx, rgw, rgb = torch.autograd.grad(ref, (rx, rw, rb), as_reference(dy))
    assert_close(y, ref, dtype, case.reduction)
    assert_close(gx, rgx, dtype, case.k // case.groups, "grad_input")
    assert_close(gw, rgw, dtype, ref.numel() // case.k, "grad_weight")
    assert_close(gb, rgb, dtype, ref.numel() // case.k, "grad_bias")
    return y, gx, gw


# Channels per group multiples of 8: every descriptor of forward, dgrad and wgrad is legal in 16 bits.
PLAIN = Case(2, 16, 5, 6, 24, 1, 1)
GROUPED = Case(1, 32, 4, 5, 48, 1, 1, groups=2)
# fp16 rows of 36 channels are 72 B: not 16-byte strides, so the cp.async kernels serve it (fp32: 144 B, TMA).
UNALIGNED = Case(2, 36, 3, 4, 20, 1, 1)


def test_descriptor_rules():
    x = torch.empty(4, 24, dtype=torch.float16)
    assert tma.descriptor_unsupported(x, (1, 4, 24), (24, 24, 1)) is None
    assert "stride 12" in tma.descriptor_unsupported(x, (2, 4, 12), (12, 24, 1))  # 24 B group stride
    assert "aligned" in tma.descriptor_unsupported(x.view(-1)[4:].view(4, 23)[:, :8], (4, 8), (23, 1))
    assert "contiguous" in tma.descriptor_unsupported(x, (4, 24), (24, 2))
    assert "dtype" in tma.descriptor_unsupported(x.double(), (4, 24), (24, 1))
    assert "stride 0" in tma.descriptor_unsupported(x.expand(2, 4, 24), (2, 4, 24), (0, 24, 1))  # a broadcast
    assert tma.descriptor_unsupported(x[:1], (1, 1, 24), (0, 3, 1)) is None  # size-1 strides never stepped along
    assert tma.box_unsupported((1, 512, 64), 2) and tma.box_unsupported((1, 64, 4), 2)
    assert tma.box_unsupported((1, 256, 16), 2) is None
    assert gemm_plan.data_paths(None) == ["tma", "cp.async"]
    assert gemm_plan.data_paths("no") == ["cp.async"]


@pytest.mark.parametrize("dtype,case", [("float32", PLAIN), ("float16", GROUPED), ("bfloat16", PLAIN)],
                         ids=["fp32-plain", "fp16-grouped", "bf16-plain"])
def test_pointwise_tma_forward_and_backward(dtype, case, device):
    before = _launches()
    y, gx, gw = _forward_and_grads(case, getattr(torch, dtype), device, "channels_last")
    assert _ran(before, TMA_KERNEL) == 3, "forward, dgrad and wgrad all by TMA"
    assert not any(_ran(before, name) for name in CPASYNC)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert gx.is_contiguous(memory_format=torch.channels_last)


def test_pointwise_tma_nchw_and_im2col_name(device):
    """NCHW callers reach the TMA kernel through the one NHWC copy, and ``im2col`` on a 1x1 too."""
    before = _launches()
    y, gx, _ = _forward_and_grads(PLAIN, torch.float16, device, "nchw", algorithm="im2col")
    assert _ran(before, TMA_KERNEL) == 3 and not any(_ran(before, name) for name in CPASYNC)
    assert y.is_contiguous() and gx.is_contiguous()


@pytest.mark.parametrize("dtype,tma_count", [("float16", 0), ("float32", 3)])
def test_unaligned_channels_served_by_cp_async(dtype, tma_count, device):
    before = _launches()
    _forward_and_grads(UNALIGNED, getattr(torch, dtype), device, "channels_last")
    assert _ran(before, TMA_KERNEL) == tma_count
    assert sum(_ran(before, name) for name in CPASYNC) == 3 - tma_count


def test_strided_and_fp64_served_by_cp_async(device):
    """A strided 1x1 on an odd image and every fp64 call stay on the cp.async kernels (the dgrad, by
    stride phases, goes by TMA); fp64 gradcheck holds there."""
    before = _launches()
    _forward_and_grads(Case(1, 16, 5, 6, 16, 1, 1, stride=2), torch.float16, device, "channels_last")
    assert _ran(before, CONV_TMA) == 1
    before = _launches()
    x, w, b = random_inputs(Case(1, 8, 2, 2, 4, 1, 1), torch.float64, device, "channels_last", requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: kernels.conv2d(x, w, b, algorithm="pointwise"), (x, w, b))
    assert _ran(before, TMA_KERNEL) == 0


def test_pointwise_tma_split_k_persistent(device, monkeypatch):
    """Planned for 4 SMs: the forward (3 tiles of 32 x 16, 4 channel blocks) splits in 2, the parts
    added in a fixed order; 4 persistent programs walk its 6 (tile, split) GEMM tiles and the dgrad's 12."""
    monkeypatch.setattr(gemm_plan, "INTERPRETER_SMS", 4)
    case = Case(2, 64, 6, 6, 16, 1, 1)
    before, splits = _launches(), LAUNCHES["_split_reduce_kernel"]
    _forward_and_grads(case, torch.float32, device, "channels_last")
    assert _ran(before, TMA_KERNEL) == 3
    assert LAUNCHES["_split_reduce_kernel"] > splits, "the forward did not split"


def test_pointwise_tma_fused_epilogue(device):
    """conv2d_bn with a residual in the other layout and an activation, through the TMA forward."""
    case = Case(2, 16, 4, 4, 16, 1, 1)
    x, w, b = random_inputs(case, torch.float16, device, "channels_last")
    k = case.k
    mean, var = torch.randn(k, device=device), torch.rand(k, device=device) + 0.5
    gamma, beta = torch.randn(k, device=device), torch.randn(k, device=device)
    residual = torch.randn(2, k, 4, 4, device=device, dtype=torch.float16)  # NCHW
    before = _launches()
    y = kernels.conv2d_bn(x, w, b, mean, var, gamma, beta, residual=residual, activation="relu", algorithm="pointwise")
    assert _ran(before, TMA_KERNEL) == 1
    conv = F.conv2d(as_reference(x), as_reference(w), as_reference(b))
    bn = F.batch_norm(conv, as_reference(mean), as_reference(var), as_reference(gamma), as_reference(beta))
    assert_close(y, F.relu(bn + as_reference(residual)), torch.float16, 4 * case.reduction)


def test_pointwise_tma_conv3d(device):
    """A 1x1x1 3-D convolution: rows are the N*D*H*W voxels, the output's (N, D) folded."""
    x = torch.randn(2, 16, 3, 4, 5, device=device, dtype=torch.float16).to(memory_format=torch.channels_last_3d)
    w = torch.randn(24, 16, 1, 1, 1, device=device, dtype=torch.float16) / 4
    before = _launches()
    y = kernels.conv3d(x, w)
    assert _ran(before, TMA_KERNEL) == 1
    assert_close(y, F.conv3d(as_reference(x), as_reference(w)), torch.float16, 16)


def test_group_boxes_do_not_read_across_groups(device):
    """A non-finite input channel of one group leaves the other group's outputs finite: each box is
    zero-filled at its group's channel end (12 channels of a 16-wide block), not read from the next."""
    case = Case(1, 48, 3, 3, 16, 1, 1, groups=2, bias=False)  # 24 channels per group: blocks of 16 cross
    x, w, _ = random_inputs(case, torch.float32, device, "channels_last")
    x = x.detach().clone()
    x[:, 24 + 1] = float("inf")  # group 1's second channel
    before = _launches()
    y = kernels.conv2d(x, w, groups=2, algorithm="pointwise")
    assert _ran(before, TMA_KERNEL) == 1
    ref = F.conv2d(as_reference(x), as_reference(w), groups=2)
    assert torch.isfinite(y[:, :8]).all()
    assert_close(y[:, :8], ref[:, :8], torch.float32, 24)


# R x S stride 1: padding by zero fill of negative / past-the-end box coordinates, dilation, groups,
# "same" padding of an even kernel (asymmetric), a 5x5 without padding.
RXS_CASES = [
    ("float16", Case(2, 16, 5, 6, 24, 3, 3, padding=1)),
    ("float32", Case(1, 32, 6, 5, 32, 3, 2, padding=(2, 1), dilation=(2, 1), groups=2)),
    ("bfloat16", Case(1, 16, 5, 6, 16, 4, 2, padding="same")),
    ("float32", Case(1, 8, 7, 7, 16, 5, 5)),
]


@pytest.mark.parametrize("dtype,case", RXS_CASES, ids=[f"{d}-{c}" for d, c in RXS_CASES])
def test_conv_tma_forward_dgrad_wgrad(dtype, case, device):
    before = _launches()
    _forward_and_grads(case, getattr(torch, dtype), device, "channels_last", algorithm="im2col")
    assert _ran(before, CONV_TMA) == 2, "forward and dgrad by TMA"
    assert _ran(before, CONV_TMA_WGRAD) == 1, "wgrad by TMA"
    assert not any(_ran(before, name) for name in CPASYNC)


def test_conv_tma_split_k(device, monkeypatch):
    """Planned for 64 SMs the forward and dgrad split over (tap, channel block), the wgrad over pixel
    blocks; parts added in a fixed order."""
    monkeypatch.setattr(gemm_plan, "INTERPRETER_SMS", 64)
    before = _launches()
    _forward_and_grads(Case(2, 32, 4, 8, 16, 3, 3, padding=1), torch.float32, device, "nchw", algorithm="im2col")
    assert _ran(before, CONV_TMA) == 2 and _ran(before, CONV_TMA_WGRAD) == 1
    assert _ran(before, "_split_reduce_kernel") == 3


# Stride 2 through the phase view [N, H/2, 2, W/2, 2C]: ResNet's strided 3x3 and 1x1 downsample, a
# dilated one with asymmetric padding, a 7x7 (padding 3 = rounded to 4, the taps' rows shifted).
PHASED = [
    ("float16", Case(2, 16, 6, 8, 24, 3, 3, stride=2, padding=1)),
    ("float32", Case(1, 32, 8, 6, 16, 1, 1, stride=2)),
    ("bfloat16", Case(1, 16, 8, 8, 16, 3, 3, stride=2, padding=(2, 0), dilation=2)),
    ("float32", Case(1, 16, 10, 10, 16, 7, 7, stride=2, padding=3)),
]


@pytest.mark.parametrize("dtype,case", PHASED, ids=[f"{d}-{c}" for d, c in PHASED])
def test_phase_view_forward_and_wgrad(dtype, case, device):
    """The forward and the wgrad by TMA boxes of the phase view, the dgrad by TMA per stride phase
    (the 1x1's odd phases reached by no tap: zeros)."""
    before = _launches()
    _forward_and_grads(case, getattr(torch, dtype), device, "channels_last", algorithm="im2col")
    assert _ran(before, CONV_TMA) == 2 and _ran(before, CONV_TMA_WGRAD) == 1
    assert not any(_ran(before, name) for name in CPASYNC)


@pytest.mark.parametrize("case", [Case(1, 16, 5, 6, 16, 3, 3, stride=2, padding=1),  # odd height
                                  Case(1, 16, 6, 6, 16, 3, 3, stride=2, padding=1, groups=2),
                                  Case(1, 16, 6, 6, 16, 3, 3, stride=3, padding=1)],
                         ids=["odd-height", "grouped", "stride3"])
def test_strided_rxs_outside_the_phase_view(case, device):
    """Forward and wgrad on the cp.async kernels where the phase view does not fit; the dgrad's stride
    phases need no view: TMA."""
    before = _launches()
    _forward_and_grads(case, torch.float16, device, "channels_last", algorithm="im2col")
    assert _ran(before, CONV_TMA) == 1 and not _ran(before, CONV_TMA_WGRAD) and not _ran(before, "_dgrad_kernel")
    assert _ran(before, "_im2col_forward_kernel") == _ran(before, "_wgrad_kernel") == 1


def test_gpu_times_both_data_paths_and_keeps_the_faster(device, monkeypatch):
    """On a GPU each TMA-eligible launch is timed on both data paths once per problem and the faster
    is kept (``launcher.run_fastest``). Here the timer is faked to report cp.async faster: the first
    call times both paths, the second runs cp.async only, and both give PyTorch's numbers."""
    import triton.testing

    from kernels.core import launcher

    timed = []

    def fake_do_bench(fn, **kwargs):
        before = _launches()
        fn()
        tma_ran = any(_ran(before, name) for name in (TMA_KERNEL, CONV_TMA, CONV_TMA_WGRAD))
        timed.append("tma" if tma_ran else "cp.async")
        return 2.0 if tma_ran else 1.0

    monkeypatch.setattr(launcher, "_can_time", lambda: True)
    monkeypatch.setattr(triton.testing, "do_bench", fake_do_bench)
    monkeypatch.setattr(launcher, "FASTEST_PATHS", {})
    for call in range(2):
        timed.clear()
        before = _launches()
        _forward_and_grads(PLAIN, torch.float32, device, "channels_last")
        assert timed == (["tma", "cp.async"] * 3 if call == 0 else [])
        assert _ran(before, TMA_KERNEL) == (3 if call == 0 else 0)  # forward, dgrad, wgrad: timed once each
        assert all(_ran(before, name) == (2 if call == 0 else 1) for name in CPASYNC)  # timed once, then run
    assert sorted(family for family, _ in launcher.FASTEST_PATHS) == ["forward", "grad_input", "grad_weight"]
    assert set(launcher.FASTEST_PATHS.values()) == {"cp.async"}
