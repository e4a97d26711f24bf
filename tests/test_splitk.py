"""The implicit-GEMM planner (tiles, split-K, vector width) and the split-K paths of every GEMM kernel.

Under the interpreter the planner plans for ``gemm_plan.INTERPRETER_SMS`` SMs (1: nothing splits);
these tests give it 64, so the small problems below run split (forward with the fused epilogue,
dgrad, wgrad, pointwise, stem) and must still equal F.conv2d, and the split-K reduce must have run.
"""
import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels.ops.gemm import plan as gemm_plan
from kernels.core.launcher import LAUNCHES
from reference import Case, as_reference, assert_close, random_inputs

# Each splits its forward and at least one backward GEMM (dgrad: 9+ iterations over taps x
# output-channel blocks; wgrad: 8+ blocks of pixels).
SPLIT_CASES = [
    ("im2col", Case(2, 16, 8, 8, 32, 3, 3, padding=1)),
    ("im2col", Case(4, 16, 9, 8, 32, 3, 3, stride=(2, 1), padding=2, dilation=2, groups=2)),
    ("pointwise", Case(2, 128, 8, 8, 24, 1, 1)),
    ("stem", Case(4, 3, 12, 12, 8, 7, 7, stride=2, padding=3)),
]


@pytest.fixture
def many_sms(monkeypatch):
    monkeypatch.setattr(gemm_plan, "INTERPRETER_SMS", 64)


def _splits_ran(before: int) -> bool:
    return LAUNCHES["_split_reduce_kernel"] > before


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("algorithm,case", SPLIT_CASES, ids=[f"{a}-{c}" for a, c in SPLIT_CASES])
def test_split_k_forward_and_backward(algorithm, case, dtype, device, many_sms):
    dtype = getattr(torch, dtype)
    x, w, b = random_inputs(case, dtype, device, "channels_last", requires_grad=True)
    before = LAUNCHES["_split_reduce_kernel"]
    y = kernels.conv2d(x, w, b, **case.conv_args(), algorithm=algorithm)
    assert _splits_ran(before), "the forward did not split"
    grad = torch.randn_like(y)
    before = LAUNCHES["_split_reduce_kernel"]
    gx, gw = torch.autograd.grad(y, (x, w), grad)
    assert _splits_ran(before), "the backward did not split"
    rx, rw, rb = as_reference(x), as_reference(w), as_reference(b)
    ref = F.conv2d(rx, rw, rb, **case.conv_args())
    ref_gx, ref_gw = torch.autograd.grad(ref, (rx, rw), as_reference(grad))
    assert_close(y, ref, dtype, case.reduction)
    assert_close(gx, ref_gx, dtype, case.k // case.groups * case.r * case.s, "grad_input")
    assert_close(gw, ref_gw, dtype, ref.numel() // case.k, "grad_weight")


def test_split_k_fused_epilogue(device, many_sms):
    """bias, BN scale/shift, residual and activation applied once, after the parts are added."""
    case = SPLIT_CASES[0][1]
    x, w, b = random_inputs(case, torch.float32, device)
    k = case.k
    mean, var = torch.randn(k, device=device), torch.rand(k, device=device) + 0.5
    gamma, beta = torch.randn(k, device=device), torch.randn(k, device=device)
    residual = torch.randn(F.conv2d(x, w, b, **case.conv_args()).shape, device=device)
    before = LAUNCHES["_split_reduce_kernel"]
    with torch.no_grad():
        y = kernels.conv2d_bn(x, w, b, mean, var, gamma, beta, **case.conv_args(), residual=residual,
                              activation="silu", algorithm="im2col")
    assert _splits_ran(before)
    ref = F.conv2d(*(as_reference(t) for t in (x, w, b)), **case.conv_args())
    ref = F.batch_norm(ref, *(as_reference(t) for t in (mean, var, gamma, beta)), training=False)
    ref = F.silu(ref + as_reference(residual))
    assert_close(y, ref, torch.float32, 4 * case.reduction)


def test_split_k_is_deterministic(device, many_sms):
    case = SPLIT_CASES[0][1]
    x, w, b = random_inputs(case, torch.float16, device, "channels_last", requires_grad=True)
    results = []
    for _ in range(2):
        y = kernels.conv2d(x, w, b, **case.conv_args())
        results.append((y,) + torch.autograd.grad(y, (x, w), torch.ones_like(y)))
    for first, second in zip(*results):
        assert torch.equal(first, second)


# --- the planner's rules -------------------------------------------------------------------------

def test_block_k_follows_the_channel_run():
    assert gemm_plan.block_k(64, 2) == 64
    assert gemm_plan.block_k(512, 2) == 64
    assert gemm_plan.block_k(24, 2) == 32  # not 64: most of the block would be padding
    assert gemm_plan.block_k(144, 2) == 32  # 5 blocks of 32 pad 11%, 3 of 64 pad 33%
    assert gemm_plan.block_k(16, 2) == 16
    assert gemm_plan.block_k(512, 4) == 32  # fp32 tiles stop at 32


def test_split_rule_fills_a_wave_and_keeps_long_parts():
    assert gemm_plan.splits_for(tiles=200, iterations=100, sms=132) == 1
    for tiles, iterations, resident in [(52, 72, 2), (9, 1568, 2), (9, 1568, 1), (66, 392, 1), (4, 360, 3)]:
        split = gemm_plan.splits_for(tiles, iterations, 132, resident)
        ctas, capacity = tiles * split, 132 * resident
        assert ctas >= 132, (tiles, split)
        assert iterations // split >= gemm_plan.MIN_ITERATIONS_PER_SPLIT
        last_wave = ctas - (-(-ctas // capacity) - 1) * capacity
        assert last_wave >= 0.75 * capacity or ctas <= capacity, (tiles, split, last_wave)  # no near-empty wave
    assert gemm_plan.splits_for(tiles=1, iterations=9, sms=132) == 4  # >= 2 iterations per part
    assert gemm_plan.splits_for(tiles=1, iterations=3, sms=132) == 1


def test_plan_prunes_by_shape_and_warps(monkeypatch):
    monkeypatch.setattr(gemm_plan, "interpreting", lambda: False)
    monkeypatch.setattr(gemm_plan, "device_sms", lambda: 132)
    # ResNet-50 layer4 3x3 at batch 32: M = 1568, 512 channels, a flattened tap loop.
    layer4 = gemm_plan.GemmProblem(m=1568, n=512, reduction_block=512, outer_blocks=9, programs=1, element_bytes=2)
    for cfg in gemm_plan.plan(layer4):
        assert cfg.num_warps <= gemm_plan.FLATTENED_LOOP_MAX_WARPS
        assert cfg.kwargs["BLOCK_K"] == 64
        tiles = -(-1568 // cfg.kwargs["BLOCK_M"]) * -(-512 // cfg.kwargs["BLOCK_N"])
        assert tiles * cfg.kwargs["SPLIT_K"] >= 132, cfg
        smem = (cfg.kwargs["BLOCK_M"] + cfg.kwargs["BLOCK_N"]) * 64 * 2 * cfg.num_stages
        assert 2 <= cfg.num_stages <= 5 and smem <= 227 * 1024
    # 16 output channels: no tile wider than the GEMM.
    narrow = gemm_plan.GemmProblem(m=100352, n=16, reduction_block=32, outer_blocks=1, programs=1, element_bytes=2,
                                   flattened=False)
    assert {cfg.kwargs["BLOCK_N"] for cfg in gemm_plan.plan(narrow)} == {16}
    # A 1x1 GEMM (no tap loop) may use the 8-warp 128x256 tiles.
    pointwise = gemm_plan.GemmProblem(m=25088, n=1024, reduction_block=512, outer_blocks=1, programs=1,
                                      element_bytes=2, flattened=False)
    assert any(cfg.num_warps == 8 for cfg in gemm_plan.plan(pointwise))


def test_vector_width_divides_every_stride():
    assert gemm_plan.vector_width(2, 64, 3584, 64) == 8
    assert gemm_plan.vector_width(2, 24, 1344, 24) == 8  # 24 channels still load as 16-byte vectors
    assert gemm_plan.vector_width(2, 12, 672) == 4
    assert gemm_plan.vector_width(2, 3, 672) == 1
    assert gemm_plan.vector_width(4, 64, 128) == 4
