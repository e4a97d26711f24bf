"""algorithm="fft": large kernels, long 1-D filters, kernel chunks, the fused epilogue, scope,
workspace bound, counts, non-finite inputs, and that auto never routes to it.

The registry sweeps (test_forward / test_backward / test_dropin) cover fft on their stride-1
cases (groups, dilation, padding strings, dtypes, layouts, gradcheck, gradgradcheck, jvp, vmap).
Here: the shapes fft is for, each against F.conv2d / F.conv1d in float64 on fresh random data.
"""
import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels.dispatch import auto as dispatch
from kernels.ops.fft import forward as fft
from kernels.ops.fft.plan import TILED, DEPTHWISE, make_plan, workspace_budget
from reference import Case, as_reference, assert_close, random_inputs

ERROR_RATIO = fft.MEASURED_ERROR_RATIO

CASES = [
    # (case, what the plan must be: path, kernel passes)
    (Case(1, 3, 14, 13, 4, 7, 7, padding=3), TILED, 1),  # a 7x7 on a 16x16 tile
    (Case(1, 2, 20, 19, 3, 11, 9, padding=(5, 2)), TILED, 1),  # 11x9: 32-point tiles
    (Case(1, 4, 18, 17, 8, 13, 13, padding="same", groups=4), DEPTHWISE, 1),  # large-kernel depthwise, x2
    (Case(1, 2, 21, 9, 3, 7, 1, padding=(3, 0)), TILED, 1),  # 7x1: runs transposed
]


@pytest.mark.parametrize("case,path,passes", CASES, ids=[str(c[0]) for c in CASES])
def test_large_kernels_match_pytorch(case, path, passes, device):
    params = kernels.ConvParams.from_shapes(case.input_shape, case.weight_shape, **case.conv_args())
    plan = make_plan(params)
    assert (plan.path, plan.kernel_chunks[0] * plan.kernel_chunks[1]) == (path, passes)
    for dtype in (torch.float64, torch.float32) if case.r <= 9 else (torch.float64,):
        x, w, b = random_inputs(case, dtype, device, "channels_last" if dtype == torch.float32 else "nchw")
        y = kernels.conv2d(x, w, b, **case.conv_args(), algorithm="fft")
        ref = F.conv2d(as_reference(x), as_reference(w), as_reference(b), **case.conv_args())
        assert_close(y, ref, dtype, case.reduction, error_ratio=ERROR_RATIO[dtype])


@pytest.mark.parametrize("length,chunks", [(160, 1), (2500, 2)])
def test_hyena_causal_long_convolution(length, chunks, device):
    """kernels.conv1d(u, k, padding=L-1, groups=D)[..., :L], the filter as long as the sequence, on the
    decomposed full-length DFT (LONG: N = 64 x N2 points; 2500 taps: past N / 2 = 2048, two chunks)."""
    d = 2
    params = kernels.ConvParams.from_shapes((2, d, 1, length), (d, 1, 1, length), padding=(0, length - 1), groups=d)
    plan = make_plan(params)
    assert plan.long and plan.kernel_chunks == (1, chunks) and plan.th * plan.tw >= 1024
    u = torch.randn(2, d, length, dtype=torch.float64, device=device)
    k = torch.randn(d, 1, length, dtype=torch.float64, device=device) / length ** 0.5
    y = kernels.conv1d(u, k, padding=length - 1, groups=d, algorithm="fft")[..., :length]
    ref = F.conv1d(as_reference(u), as_reference(k), padding=length - 1, groups=d)[..., :length]
    assert_close(y, ref, torch.float64, length)
    # The same with torch.fft, the way users write it today, agrees too.
    n = 2 * length
    spectral = torch.fft.irfft(torch.fft.rfft(u.cpu(), n=n) * torch.fft.rfft(k.cpu()[:, 0].flip(-1), n=n), n=n)
    assert_close(y, spectral[..., :length], torch.float64, length)


def test_chunked_kernel_with_bn_residual_activation_and_gradients(device):
    """A kernel in chunks (3x3 dilated by 20: reach 41, past half the largest tile: 2 x 2 passes): bias,
    BN scale/shift and the residual once, the activation last; the gradients (grad_input on the fft
    kernels, in chunks too) as F.conv2d's."""
    case = Case(1, 2, 12, 11, 3, 3, 3, padding=20, dilation=20)
    params = kernels.ConvParams.from_shapes(case.input_shape, case.weight_shape, **case.conv_args())
    assert make_plan(params).kernel_chunks == (2, 2)
    args = case.conv_args()
    x, w, b = random_inputs(case, torch.float64, device)
    vectors = [torch.randn(3, dtype=torch.float64, device=device) for _ in range(4)]
    vectors[1] = vectors[1].abs() + 0.5
    ref = F.conv2d(*map(as_reference, (x, w, b)), **args)
    residual = torch.randn_like(ref)
    with torch.no_grad():
        y = kernels.conv2d_bn(x, w, b, *vectors, **args, residual=residual, activation="silu", algorithm="fft")
    bn = F.batch_norm(ref, *map(as_reference, vectors), training=False, eps=1e-5)
    assert_close(y, F.silu(bn + residual), torch.float64, case.reduction)

    x.requires_grad_(True)
    w.requires_grad_(True)
    grad = torch.randn_like(ref)
    kernels.conv2d(x, w, b, **args, algorithm="fft").backward(grad)
    rx, rw = as_reference(x).requires_grad_(True), as_reference(w).requires_grad_(True)
    F.conv2d(rx, rw, as_reference(b), **args).backward(grad)
    assert_close(x.grad, rx.grad, torch.float64, 3 * 9, "grad_input")
    assert_close(w.grad, rw.grad, torch.float64, 12 * 11, "grad_weight")


WEIGHT_GRAD_CASES = [
    # (input, weight, arguments): dense 7x7, grouped, depthwise x2, dilated in 2 x 2 chunks, 7x1 (transposed)
    ((2, 3, 14, 13), (4, 3, 7, 7), dict(padding=3)),
    ((2, 4, 12, 11), (6, 2, 5, 3), dict(padding=(2, 1), groups=2)),
    ((1, 3, 9, 10), (6, 1, 9, 9), dict(padding="same", groups=3)),
    ((1, 2, 12, 11), (3, 2, 3, 3), dict(padding=20, dilation=20)),
    ((1, 2, 21, 9), (3, 2, 7, 1), dict(padding=(3, 0))),
]


@pytest.mark.parametrize("input_shape,weight_shape,args", WEIGHT_GRAD_CASES,
                         ids=[f"{w}-{a}" for _, w, a in WEIGHT_GRAD_CASES])
def test_grad_weight_runs_on_the_fft_kernels(input_shape, weight_shape, args, device, monkeypatch):
    """grad_weight is the correlation of the input with grad_output per tile, summed over tiles in the
    frequency domain (``weight_grad.py``): F.conv2d's in float64, through autograd, with the
    frequency-domain reduction (not the implicit GEMM's wgrad) doing the work."""
    from kernels.ops.fft import weight_grad

    reductions = []
    reduce = weight_grad.weight_product
    monkeypatch.setattr(weight_grad, "weight_product", lambda *a, **k: reductions.append(k["depthwise"]) or reduce(*a, **k))
    assert kernels.REGISTRY["fft"].grad_weight is weight_grad.fft_grad_weight
    x = torch.randn(*input_shape, dtype=torch.float64, device=device)
    w = torch.randn(*weight_shape, dtype=torch.float64, device=device, requires_grad=True)
    y = kernels.conv2d(x, w, **args, algorithm="fft")
    grad = torch.randn_like(y)
    y.backward(grad)
    ref = torch.nn.grad.conv2d_weight(as_reference(x), weight_shape, as_reference(grad), **{
        key: (value if key != "padding" or value != "same" else weight_shape[-1] // 2) for key, value in args.items()})
    params = kernels.ConvParams.from_shapes(input_shape, weight_shape, **args, dtype=torch.float64)
    plan = make_plan(params)
    assert reductions and set(reductions) == {plan.path == DEPTHWISE}
    assert len(reductions) == plan.kernel_chunks[0] * plan.kernel_chunks[1]
    assert_close(w.grad, ref, torch.float64, input_shape[0] * y.shape[-2] * y.shape[-1], "grad_weight")


def test_grad_weight_of_a_long_filter_in_tile_batches(monkeypatch, device):
    """The long 1-D path (2500 taps: two chunks of a 4096-point DFT) and, under a small workspace bound,
    a dense layer's tiles in batches whose frequency-domain sums accumulate: both as F.conv's."""
    from kernels.ops.fft import plan as fft_plan

    length, d = 2500, 2
    u = torch.randn(1, d, length, dtype=torch.float64, device=device)
    k = (torch.randn(d, 1, length, dtype=torch.float64, device=device) / length ** 0.5).requires_grad_(True)
    y = kernels.conv1d(u, k, padding=length - 1, groups=d, algorithm="fft")[..., :length]
    grad = torch.randn_like(y)
    y.backward(grad)
    rk = as_reference(k).detach().requires_grad_(True)
    F.conv1d(as_reference(u), rk, padding=length - 1, groups=d)[..., :length].backward(as_reference(grad))
    assert_close(k.grad, rk.grad, torch.float64, length, "grad_weight")

    monkeypatch.setattr(fft_plan, "WORKSPACE_MULTIPLE", 0)
    monkeypatch.setattr(fft_plan, "WORKSPACE_FLOOR", 3 * 16384)  # fp64 16x16 spectra: DW, and V and G of 2 tiles
    monkeypatch.setattr(fft_plan, "MIN_TILE_BATCH", 2)
    params = kernels.ConvParams.from_shapes((2, 2, 30, 30), (2, 2, 3, 3), padding=1, dtype=torch.float64)
    plan = make_plan(params)
    assert fft_plan.weight_grad_tile_batch(plan, params) == 2 < 2 * plan.tiles_h * plan.tiles_w
    x = torch.randn(2, 2, 30, 30, dtype=torch.float64, device=device)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    y = kernels.conv2d(x, w, padding=1, algorithm="fft")
    grad = torch.randn_like(y)
    y.backward(grad)
    ref = torch.nn.grad.conv2d_weight(as_reference(x), w.shape, as_reference(grad), padding=1)
    assert_close(w.grad, ref, torch.float64, 2 * 30 * 30, "grad_weight")


def test_gradcheck_depthwise_large_kernel(device):
    case = Case(1, 2, 5, 5, 2, 5, 4, padding=(2, 1), groups=2)
    x, w, b = random_inputs(case, torch.float64, device, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: kernels.conv2d(x, w, b, padding=(2, 1), groups=2, algorithm="fft"), (x, w, b),
        fast_mode=True)


@pytest.mark.parametrize("call,words", [
    (lambda: kernels.conv2d(torch.randn(1, 2, 8, 8), torch.randn(2, 2, 3, 3), stride=2, algorithm="fft"),
     ["fft", "stride"]),
    (lambda: kernels.conv1d(torch.randn(1, 2, 9), torch.randn(2, 2, 3), stride=3, algorithm="fft"), ["fft"]),
    (lambda: kernels.conv3d(torch.randn(1, 2, 4, 4, 4), torch.randn(2, 2, 3, 3, 3), algorithm="fft"),
     ["fft", "3-D"]),
])
def test_out_of_scope_raises_value_error_naming_fft(call, words):
    with pytest.raises(ValueError) as error:
        call()
    for word in words:
        assert word in str(error.value)


def test_layer_beyond_the_workspace_bound_is_rejected_before_allocating():
    """A 3x3 kernel dilated by 15 over 512 -> 512 channels: its filter spectrum alone (2 GB at 32x32
    tiles) is far past the bound (1 GiB here); resolving it fails on shapes alone (no tensor exists)."""
    params = kernels.ConvParams.from_shapes((1, 512, 64, 64), (512, 512, 3, 3), padding=15, dilation=15,
                                            dtype=torch.float16)
    reason = kernels.REGISTRY["fft"].why_not(params)
    assert reason is not None and "workspace" in reason and str(workspace_budget(params)) in reason
    with pytest.raises(ValueError, match="fft"):
        kernels.conv2d_flops((1, 512, 64, 64), (512, 512, 3, 3), padding=15, dilation=15, algorithm="fft")


def test_tile_batches_keep_the_workspace_bounded(monkeypatch, device):
    """Under a small bound the tiles run in batches (tile offsets in every kernel) whose transformed
    tensors fit it, with the same numbers; a large layer's counts report a workspace within it."""
    counts = kernels.conv2d_flops((64, 256, 112, 112), (256, 256, 7, 7), padding=3, algorithm="fft")
    params = kernels.ConvParams.from_shapes((64, 256, 112, 112), (256, 256, 7, 7), padding=3)
    assert 0 < counts["workspace_bytes"] <= workspace_budget(params)
    from kernels.ops.fft import plan as fft_plan

    case = Case(2, 2, 30, 30, 2, 3, 3, padding=1)
    params = kernels.ConvParams.from_shapes(case.input_shape, case.weight_shape, **case.conv_args(),
                                            dtype=torch.float64)
    monkeypatch.setattr(fft_plan, "WORKSPACE_MULTIPLE", 0)
    monkeypatch.setattr(fft_plan, "WORKSPACE_FLOOR", 4 * 16384)  # fp64 spectra: U and 3 tiles, 16 KiB each
    monkeypatch.setattr(fft_plan, "MIN_TILE_BATCH", 2)
    plan = make_plan(params)
    assert (plan.th, plan.tw, plan.tiles_h * plan.tiles_w * 2, plan.tile_batch) == (16, 16, 18, 3)
    assert fft_plan.workspace_bytes(plan, params)["workspace_bytes"] <= 4 * 16384
    x, w, b = random_inputs(case, torch.float64, device)
    y = kernels.conv2d(x, w, b, padding=1, algorithm="fft")
    assert_close(y, F.conv2d(*map(as_reference, (x, w, b)), padding=1), torch.float64, case.reduction)


def test_counts_products_below_direct_for_large_kernels():
    counts = kernels.conv2d_flops((8, 128, 56, 56), (128, 128, 9, 9), padding=4, algorithm="fft")
    assert counts["algorithm"] == "fft" and counts["macs"] == 8 * 128 * 56 * 56 * 128 * 81
    assert counts["multiplies"] * 4 < counts["macs"]
    transforms = [counts[k] for k in ("input_transform_multiplies", "filter_transform_multiplies",
                                      "output_transform_multiplies")]
    assert min(transforms) > 0 and sum(transforms) + counts["multiplies"] < counts["macs"]
    for key in ("transformed_input_bytes", "transformed_output_bytes", "transformed_filter_bytes"):
        assert counts[key] > 0


def test_non_finite_input_spreads_over_its_tiles_only(device):
    """An Inf reaches every output of the tiles whose patch reads it (docs/semantics.md), a superset
    of F.conv2d's, and no output outside those tiles."""
    x = torch.randn(1, 2, 9, 9, dtype=torch.float64, device=device)
    w = torch.randn(8, 2, 3, 3, dtype=torch.float64, device=device)
    x[0, 0, 4, 4] = float("inf")
    ours = ~torch.isfinite(kernels.conv2d(x, w, padding=1, algorithm="fft").cpu())
    theirs = ~torch.isfinite(F.conv2d(x.cpu(), w.cpu(), padding=1))
    assert theirs.sum() == 72 and bool((ours | ~theirs).all())
    assert ours.sum() == 8 * 81  # 9x9 output in one 14x14 tile: the whole tile


def test_auto_never_routes_to_a_transform_algorithm_without_a_committed_measurement(monkeypatch):
    shapes = [((8, 64, 56, 56), (64, 64, 7, 7), 3, 1), ((8, 768, 1, 4096), (768, 1, 1, 4096), (0, 4095), 768),
              ((8, 256, 28, 28), (256, 256, 3, 3), 1, 1), ((1, 512, 14, 14), (512, 1, 31, 31), 15, 512)]
    assert dispatch.TRANSFORM_ALGORITHMS >= {"fft", "winograd_f2", "winograd_f4"}
    assert not any(name in dispatch.TRANSFORM_ALGORITHMS for name, _, _ in dispatch.ROUTES)
    assert not any(path.suffix == ".json" for path in dispatch.ROUTING_TABLES.iterdir())
    timed = []
    monkeypatch.setattr(dispatch.autotune_cache, "enabled", lambda: True)
    monkeypatch.setattr(dispatch.autotune_cache, "choose", lambda params, names: timed.append(names))
    for dtype in (torch.float16, torch.float32):
        for x, w, padding, groups in shapes:
            params = kernels.ConvParams.from_shapes(x, w, padding=padding, groups=groups, dtype=dtype)
            assert kernels.REGISTRY["fft"].eligible(params)
            assert dispatch.choose_auto(params) not in dispatch.TRANSFORM_ALGORITHMS
    assert timed and not any(set(names) & dispatch.TRANSFORM_ALGORITHMS for names in timed)
