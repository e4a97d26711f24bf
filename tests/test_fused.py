"""kernels.conv2d_bn and kernels.fold_bn against the eager composition, in float64.

Reference: ``act(F.batch_norm(F.conv2d(x), training=False, eps) + residual)`` on float64 copies.
Every registered algorithm x activation x residual, and x dtype x layout; BN statistics random
(an identity BN would hide a missing or misplaced scale/shift).
"""
import gc
import math

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import fused
from kernels.core.launcher import LAUNCHES
from launches import convolution_launches_since
from cases import DTYPES, LAYOUTS
from reference import Case, as_reference, assert_close, make_layout, random_inputs, reference_conv

ALGORITHMS = list(kernels.REGISTRY)
ACTIVATIONS = [None, "relu", "relu6", "silu", "hardswish", "hardsigmoid", "sigmoid"]
EAGER_ACTIVATIONS = {
    None: lambda t: t, "relu": F.relu, "relu6": F.relu6, "silu": F.silu,
    "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid, "sigmoid": torch.sigmoid,
}

# Each algorithm is tested on the first of these it applies to (3x3, 1x1, depthwise, strided depthwise).
CANDIDATES = [
    Case(2, 4, 6, 6, 6, 3, 3, padding=1),
    Case(2, 6, 5, 6, 8, 1, 1),
    Case(2, 6, 6, 5, 6, 3, 3, padding=1, groups=6),
    Case(1, 6, 7, 7, 12, 3, 3, stride=2, padding=1, groups=6),
]


def case_for(algorithm):
    for case in CANDIDATES:
        params = kernels.ConvParams.from_shapes(case.input_shape, case.weight_shape, **case.conv_args())
        if kernels.REGISTRY[algorithm].eligible(params):
            return case
    pytest.skip(f"{algorithm} applies to none of the fused test shapes")


def random_bn(k, dtype, device, affine=True):
    """Running statistics and affine parameters far from identity; variances include small ones."""
    mean = torch.randn(k, dtype=dtype, device=device)
    var = (torch.rand(k, dtype=dtype, device=device) * 1.5 + 0.05)
    weight = torch.randn(k, dtype=dtype, device=device) if affine else None
    bias = torch.randn(k, dtype=dtype, device=device) if affine else None
    return mean, var, weight, bias


def reference(x, w, b, bn, eps, case, residual=None, activation=None):
    mean, var, gamma, beta = (as_reference(t) for t in bn)
    y = F.conv2d(as_reference(x), as_reference(w), as_reference(b), **case.conv_args())
    unbatched = y.dim() == 3
    y = F.batch_norm(y.unsqueeze(0) if unbatched else y, mean, var, gamma, beta, training=False, eps=eps)
    y = y.squeeze(0) if unbatched else y
    if residual is not None:
        y = y + as_reference(residual)
    return EAGER_ACTIVATIONS[activation](y)


def bn_gain(bn, eps) -> torch.Tensor:
    """Per-channel |gamma| / sqrt(var + eps), in float64 on the CPU: BN multiplies the conv's error by it."""
    mean, var, gamma, _ = bn
    g = torch.ones_like(var) if gamma is None else gamma
    return (g.double().abs() / (var.double() + eps).sqrt()).cpu()


def assert_fused_close(y, ref, conv_error, gain, dtype, reduction):
    """|y - ref| within the epilogue's rounding budget plus the algorithm's own conv error through BN.

    ``conv_error`` is |kernels.conv2d - F.conv2d| of the same algorithm on the same data (held to
    its own tolerance by test_forward.py; Winograd F(4x4) in fp16 is looser than im2col). BN
    scales it by ``gain`` per channel and the activations' slope is at most 1.5 (hardswish).
    A missing or misplaced scale, shift, residual or activation is O(1), far above both.
    """
    from reference import tolerance

    atol, rtol = tolerance(dtype, reduction)
    assert y.shape == ref.shape and y.dtype == dtype
    got = y.detach().to("cpu", torch.float64)
    assert not torch.isnan(got).any(), "NaN: an element was never written"
    scale = max([1.0] + ([ref.abs().max().item()] if ref.numel() else []))
    channel_gain = gain.view(1, -1, 1, 1) if y.dim() == 4 else gain.view(-1, 1, 1)
    bound = atol * scale + rtol * ref.abs() + 1.5 * channel_gain * conv_error
    err = (got - ref).abs()
    worst = (err - bound).max().item() if err.numel() else 0.0
    assert worst <= 0, f"max abs error {err.max().item():.3e} exceeds tolerance by {worst:.3e} for {dtype}"


def check(algorithm, case, dtype, layout, residual_layout, activation, device, eps=1e-5):
    x, w, b = random_inputs(case, dtype, device, layout)
    bn = random_bn(case.k, dtype, device)
    residual = None
    if residual_layout is not None:
        out_shape = F.conv2d(x[:1].cpu().float(), w.cpu().float(), **case.conv_args()).shape[1:]
        residual = make_layout(torch.randn((x.shape[0],) + tuple(out_shape), dtype=dtype, device=device),
                               residual_layout)
    copies = [t.clone() for t in (x, w, b, *bn, residual) if t is not None]
    with torch.no_grad():
        y = kernels.conv2d_bn(x, w, b, *bn, eps, **case.conv_args(),
                              residual=residual, activation=activation, algorithm=algorithm)
        plain = kernels.conv2d(x, w, b, **case.conv_args(), algorithm=algorithm)
    conv_error = (plain.double().cpu() - reference_conv(x, w, b, case)).abs()
    ref = reference(x, w, b, bn, eps, case, residual, activation)
    gain = bn_gain(bn, eps)
    assert_fused_close(y, ref, conv_error, gain, dtype, math.ceil(case.reduction * gain.max().item() ** 2) + 2)
    # F.conv2d's memory format for the same input and weight.
    assert y.stride() == plain.stride()
    expected = F.conv2d(x.detach().cpu().double(), w.detach().cpu().double(), **case.conv_args())
    assert y.is_contiguous(memory_format=torch.channels_last) == expected.is_contiguous(
        memory_format=torch.channels_last)
    assert y.is_contiguous() == expected.is_contiguous()
    for original, t in zip(copies, [t for t in (x, w, b, *bn, residual) if t is not None]):
        assert torch.equal(original, t), "conv2d_bn modified one of its arguments"


@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_conv2d_bn_activations_and_residual(algorithm, activation, with_residual, device):
    check(algorithm, case_for(algorithm), torch.float32, "nchw",
          "channels_last" if with_residual else None, activation, device)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_conv2d_bn_dtypes_and_layouts(algorithm, dtype, layout, device):
    # The residual in another layout than the input: the epilogue reads it through its own strides.
    residual_layout = LAYOUTS[(LAYOUTS.index(layout) + 1) % len(LAYOUTS)]
    activation = ACTIVATIONS[1 + (DTYPES.index(dtype) + LAYOUTS.index(layout)) % (len(ACTIVATIONS) - 1)]
    check(algorithm, case_for(algorithm), getattr(torch, dtype), layout, residual_layout, activation, device)


def test_fold_bn_gives_the_equivalent_plain_conv(device):
    case = Case(2, 4, 7, 6, 5, 3, 3, stride=2, padding=1)
    for affine, has_bias in ((True, True), (False, False)):
        x, w, b = random_inputs(Case(**{**case.__dict__, "bias": has_bias}), torch.float64, device)
        bn = random_bn(case.k, torch.float64, device, affine=affine)
        folded_w, folded_b = kernels.fold_bn(w, b, *bn, eps=1e-3)
        assert folded_w.dtype == folded_b.dtype == torch.float64
        got = F.conv2d(as_reference(x), as_reference(folded_w), as_reference(folded_b), **case.conv_args())
        assert_close(got, reference(x, w, b, bn, 1e-3, case), torch.float64, case.reduction)
    half_w, half_b = kernels.fold_bn(w.half(), None, *(t.half() for t in bn if t is not None))
    assert half_w.dtype == half_b.dtype == torch.float32  # folded in fp32, not in the weight's fp16


def test_each_bn_eps_is_honoured(device):
    """MobileNetV3 uses eps=1e-3: with small running variances the result depends on it."""
    case = CANDIDATES[0]
    x, w, b = random_inputs(case, torch.float32, device)
    mean, var, gamma, beta = random_bn(case.k, torch.float32, device)
    var = var * 1e-3
    with torch.no_grad():
        y3 = kernels.conv2d_bn(x, w, b, mean, var, gamma, beta, 1e-3, **case.conv_args())
        y5 = kernels.conv2d_bn(x, w, b, mean, var, gamma, beta, 1e-5, **case.conv_args())
    bn = (mean, var, gamma, beta)
    assert_close(y3, reference(x, w, b, bn, 1e-3, case), torch.float32, case.reduction * 1000)
    assert_close(y5, reference(x, w, b, bn, 1e-5, case), torch.float32, case.reduction * 10000)
    assert not torch.allclose(y3, y5, rtol=1e-2, atol=1e-2)


def test_one_launch_per_call_and_no_refold(device, monkeypatch):
    case = CANDIDATES[0]
    x, w, b = random_inputs(case, torch.float32, device, "channels_last")
    bn = random_bn(case.k, torch.float32, device)
    r = torch.randn(2, case.k, 6, 6, device=device)
    folds = []
    original = fused.bn_scale_shift
    monkeypatch.setattr(fused, "bn_scale_shift", lambda *a: folds.append(1) or original(*a))
    with torch.no_grad():
        for _ in range(3):
            before = LAUNCHES.copy()
            y = kernels.conv2d_bn(x, w, b, *bn, **case.conv_args(), residual=r, activation="relu")
            assert convolution_launches_since(before) == 1
    assert len(folds) == 1, "the BN scale/shift was refolded on repeated inference"
    assert_close(y, reference(x, w, b, bn, 1e-5, case, r, "relu"), torch.float32, case.reduction * 4)


def test_in_place_updates_invalidate_the_fold_cache(device):
    """A version-keyed cache must see every in-place update that goes through the tensor."""
    conv = torch.nn.Conv2d(4, 6, 3, padding=1).to(device)
    bn = torch.nn.BatchNorm2d(6, eps=1e-3).to(device).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.2, 1.5)
        bn.weight.normal_()
        bn.bias.normal_()
    x = torch.randn(2, 4, 6, 6, device=device)
    case = Case(2, 4, 6, 6, 6, 3, 3, padding=1)

    def fused_and_eager():
        with torch.no_grad():
            got = kernels.conv2d_bn(x, conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                    bn.weight, bn.bias, bn.eps, padding=1, activation="silu")
            expected = F.silu(bn.double().cpu()(conv.double().cpu()(x.double().cpu())))
        conv.float().to(device), bn.float().to(device)
        return got, expected

    got, expected = fused_and_eager()
    assert_close(got, expected, torch.float32, case.reduction * 8)
    updates = [
        lambda: bn.running_var.add_(0.7),
        lambda: bn.running_mean.mul_(-2.0),
        lambda: bn.weight.add_(1.0),
        lambda: bn.bias.sub_(0.5),
        lambda: conv.bias.add_(0.3),
        lambda: conv.weight.add_(0.1),
        lambda: bn.load_state_dict({**bn.state_dict(), "running_var": torch.rand(6) + 0.1}),
    ]
    for update in updates:
        with torch.no_grad():
            update()
        new_got, expected = fused_and_eager()
        assert not torch.allclose(new_got, got), "result unchanged after an in-place update"
        assert_close(new_got, expected, torch.float32, case.reduction * 8)
        got = new_got


def test_fold_cache_forgets_dead_tensors(device):
    case = CANDIDATES[0]
    x, w, b = random_inputs(case, torch.float32, device)
    fused.clear_fold_cache()
    bn = random_bn(case.k, torch.float32, device)
    with torch.no_grad():
        kernels.conv2d_bn(x, w, b, *bn, padding=1)
    assert len(fused._FOLD_CACHE) == 1
    del bn
    gc.collect()
    assert len(fused._FOLD_CACHE) == 0


def test_inference_mode_tensors_are_never_cached(device):
    case = CANDIDATES[0]
    with torch.inference_mode():
        x, w, b = random_inputs(case, torch.float32, device)
        bn = random_bn(case.k, torch.float32, device)
        for _ in range(2):
            y = kernels.conv2d_bn(x, w, b, *bn, padding=1, activation="hardswish")
            bn[1].add_(0.5)  # allowed on inference tensors, invisible to a version counter
        bn[1].sub_(0.5)
    assert_close(y, reference(x, w, b, bn, 1e-5, case, None, "hardswish"), torch.float32, case.reduction * 8)


@pytest.mark.parametrize("needs_grad", ["input", "weight", "bias", "bn_weight", "bn_bias", "residual"])
def test_grad_mode_with_inputs_requiring_grad_raises(needs_grad, device):
    case = CANDIDATES[0]
    x, w, b = random_inputs(case, torch.float32, device)
    mean, var, gamma, beta = random_bn(case.k, torch.float32, device)
    r = torch.randn(2, case.k, 6, 6, device=device)
    args = dict(input=x, weight=w, bias=b, bn_weight=gamma, bn_bias=beta, residual=r)
    args[needs_grad] = args[needs_grad].clone().requires_grad_(True)
    call = lambda: kernels.conv2d_bn(args["input"], args["weight"], args["bias"], mean, var,
                                     args["bn_weight"], args["bn_bias"], padding=1, residual=args["residual"])
    with pytest.raises(RuntimeError, match=f"inference-only.*{needs_grad} requires grad.*no_grad"):
        call()
    with torch.no_grad():
        y = call()
    assert not y.requires_grad
    assert_close(y, reference(x, w, b, (mean, var, gamma, beta), 1e-5, case, r), torch.float32, case.reduction * 8)


def test_bad_input_raises_like_pytorch(device):
    case = CANDIDATES[0]
    x, w, b = random_inputs(case, torch.float32, device)
    mean, var, gamma, beta = random_bn(case.k, torch.float32, device)
    conv_out = F.conv2d(x.cpu(), w.cpu(), b.cpu(), padding=1)
    with torch.no_grad():
        # Wrong BN vector length: F.batch_norm raises RuntimeError too.
        with pytest.raises(RuntimeError):
            F.batch_norm(conv_out, mean.cpu()[:5], var.cpu(), training=False)
        with pytest.raises(RuntimeError, match="running_mean should contain 6 elements not 5"):
            kernels.conv2d_bn(x, w, b, mean[:5], var, gamma, beta, padding=1)
        with pytest.raises(RuntimeError, match="bn_weight"):
            kernels.conv2d_bn(x, w, b, mean, var, gamma[:4], beta, padding=1)
        # A residual that does not match: eager `+` raises RuntimeError.
        bad_residual = torch.randn(2, 6, 5, 6, device=device)
        with pytest.raises(RuntimeError):
            conv_out + bad_residual.cpu()
        with pytest.raises(RuntimeError, match="residual of size"):
            kernels.conv2d_bn(x, w, b, mean, var, gamma, beta, padding=1, residual=bad_residual)
        with pytest.raises(RuntimeError, match="residual type"):
            kernels.conv2d_bn(x, w, b, mean, var, gamma, beta, padding=1,
                              residual=torch.randn(2, 6, 6, 6, dtype=torch.float64, device=device))
        with pytest.raises(ValueError, match="activation='gelu'"):
            kernels.conv2d_bn(x, w, b, mean, var, gamma, beta, padding=1, activation="gelu")
        # Conv argument errors are kernels.conv2d's own (ConvParams).
        with pytest.raises(RuntimeError, match="stride"):
            kernels.conv2d_bn(x, w, b, mean, var, gamma, beta, stride=0)
        with pytest.raises(ValueError, match="unknown algorithm"):
            kernels.conv2d_bn(x, w, b, mean, var, gamma, beta, algorithm="nope")


def test_unbatched_broadcast_residual_and_no_affine(device):
    case = Case(1, 3, 6, 5, 4, 3, 3, padding=1, unbatched=True, bias=False)
    x, w, b = random_inputs(case, torch.float32, device)
    bn = random_bn(case.k, torch.float32, device, affine=False)
    per_channel = torch.randn(case.k, 1, 1, device=device)  # broadcasts over (K, P, Q)
    with torch.no_grad():
        y = kernels.conv2d_bn(x, w, None, *bn, padding=1, residual=per_channel, activation="relu")
    assert y.shape == (4, 6, 5)
    assert_close(y, reference(x, w, None, bn, 1e-5, case, per_channel, "relu"), torch.float32, case.reduction * 8)
    empty = torch.randn(0, 3, 6, 5, device=device)
    with torch.no_grad():
        assert kernels.conv2d_bn(empty, w, None, *bn, padding=1).shape == (0, 4, 6, 5)


def test_conv2d_bn_compiles_without_graph_break(device):
    """conv2d_bn is a custom op too: torch.compile(fullgraph=True) keeps it in the graph."""
    x = torch.randn(1, 4, 6, 6, device=device)
    w = torch.randn(6, 4, 3, 3, device=device) / 6
    mean, var = torch.randn(6, device=device), torch.rand(6, device=device) + 0.5
    gamma, beta = torch.randn(6, device=device), torch.randn(6, device=device)
    res = torch.randn(1, 6, 6, 6, device=device)

    def f(x):
        return kernels.conv2d_bn(x, w, None, mean, var, gamma, beta, padding=1, residual=res, activation="relu")

    with torch.no_grad():
        y = torch.compile(f, fullgraph=True, backend="aot_eager")(x)
    ref = torch.relu(F.batch_norm(F.conv2d(x.double(), w.double(), padding=1), mean.double(), var.double(),
                                  gamma.double(), beta.double()) + res.double())
    torch.testing.assert_close(y.double().cpu(), ref.cpu(), rtol=1e-4, atol=1e-4)
