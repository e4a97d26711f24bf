"""kernels.conv2d_scaled: float8 e4m3 / int8 convolution against the dequantized float64 reference.

The reference is F.conv2d in float64 of ``input.double() * input_scale`` and
``weight.double() * weight_scale``: the quantized operands' exact values, so the only difference
allowed is the kernel's fp32 accumulation (float8) and fp32 dequantization (int8, whose int32 sums
are exact: in fp32 output they are bit-exact).
"""
import math

import pytest
import torch
import torch.nn.functional as F

import kernels
from reference import Case, make_layout

DTYPES = [torch.float8_e4m3fn, torch.int8]
DTYPE_IDS = ["fp8", "int8"]
LAYOUTS = ["nchw", "channels_last", "strided"]
# One problem per groups class: dense 3x3 (stride, padding, dilation), a strided 1x1 (pointwise),
# grouped, depthwise (multiplier 2), the C=3 stem.
CLASSES = {
    "dense": Case(2, 5, 7, 6, 6, 3, 3, stride=(1, 2), padding=1, dilation=(2, 1)),
    "pointwise": Case(2, 20, 5, 6, 18, 1, 1, stride=2),
    "grouped": Case(1, 6, 7, 7, 4, 3, 3, stride=2, padding=1, groups=2),
    "depthwise": Case(1, 4, 6, 6, 8, 3, 3, padding=1, groups=4),
    "stem": Case(1, 3, 10, 10, 8, 7, 7, stride=2, padding=3),
}


def quantized(shape, dtype, layout="nchw"):
    """Random operands covering the type's range (float8: normal and subnormal values)."""
    if dtype == torch.int8:
        t = torch.randint(-127, 128, shape, dtype=torch.int8)
    else:
        t = (torch.randn(shape) * 8).to(dtype)
    return make_layout(t, layout)


def reference(x, w, xs, ws, b, case, **kw):
    ws = ws.double().reshape(-1, 1, 1, 1) if ws.numel() > 1 else ws.double()
    return F.conv2d(x.double() * xs.double(), w.double() * ws, None if b is None else b.double(),
                    **case.conv_args(), **kw)


def assert_fp32_close(out, ref, case):
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert not torch.isnan(out).any()
    scale = max(1.0, ref.abs().max().item())
    err = (out.double() - ref).abs().max().item()
    assert err <= 8 * 2.0**-23 * math.sqrt(case.reduction) * scale + 2 * 2.0**-23 * ref.abs().max().item(), err


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cls", list(CLASSES))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matches_dequantized_reference(dtype, cls, layout):
    case = CLASSES[cls]
    x = quantized(case.input_shape, dtype, layout)
    w = quantized(case.weight_shape, dtype, layout)
    xs = torch.rand(1) + 0.01
    # per-channel weight scales on two layouts, per-tensor on the third
    ws = torch.rand(case.k) * 0.1 if layout != "strided" else torch.rand(1) * 0.1
    b = torch.randn(case.k)
    with torch.no_grad():
        out = kernels.conv2d_scaled(x, w, xs, ws, b, **case.conv_args(), out_dtype=torch.float32)
    ref = reference(x, w, xs, ws, b, case)
    assert_fp32_close(out, ref, case)
    # PyTorch's memory-format rule, as kernels.conv2d follows it
    expected_cl = F.conv2d(x.float(), w.float(), None, **case.conv_args()).is_contiguous(
        memory_format=torch.channels_last) and layout == "channels_last"
    assert out.is_contiguous(memory_format=torch.channels_last) == expected_cl or out.is_contiguous()


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_out_dtype_is_the_rounded_result(dtype, out_dtype):
    case = CLASSES["dense"]
    x, w = quantized(case.input_shape, dtype), quantized(case.weight_shape, dtype)
    xs, ws = torch.tensor([0.02]), torch.rand(case.k) * 0.05
    out = kernels.conv2d_scaled(x, w, xs, ws, out_dtype=out_dtype, **case.conv_args())
    ref = reference(x, w, xs, ws, None, case)
    assert out.dtype == out_dtype
    eps = 2.0**-10 if out_dtype == torch.float16 else 2.0**-7
    err = (out.double() - ref).abs()
    assert (err <= eps * ref.abs() + 1e-5 * ref.abs().max()).all(), err.max()


def test_int8_is_bit_exact_in_fp32():
    """int32 sums are exact: the fp32 output is the float64 integer convolution rounded once to
    fp32, times the fp32 dequantization scale, bit for bit. Sums past 2^24 (every term 127 * 127,
    1440 of them) would lose bits in an fp32 accumulator."""
    case = Case(1, 160, 4, 4, 16, 3, 3, padding=1)
    x = torch.randint(-127, 128, case.input_shape, dtype=torch.int8)
    x[:, 1:] = 127  # with w[:4] = 127 below, the centre pixels' sums are about 127 * 127 * 1440
    w = torch.randint(-127, 128, case.weight_shape, dtype=torch.int8)
    w[:4] = 127
    xs, ws = torch.tensor([0.0173]), torch.rand(case.k) + 0.5
    out = kernels.conv2d_scaled(x, w, xs, ws, padding=1, out_dtype=torch.float32)
    exact = F.conv2d(x.double(), w.double(), padding=1)  # integers < 2^53: exact
    assert exact.abs().max() > 2**24
    expected = exact.float() * (xs * ws).view(1, -1, 1, 1)
    assert torch.equal(out, expected)
    # unit scales: the integer sums themselves
    ones = torch.ones(1)
    assert torch.equal(kernels.conv2d_scaled(x, w, ones, ones, padding=1, out_dtype=torch.float32), exact.float())


ACTIVATIONS = {None: lambda v: v, "relu": F.relu, "relu6": F.relu6, "silu": F.silu, "hardswish": F.hardswish,
               "hardsigmoid": F.hardsigmoid, "sigmoid": torch.sigmoid}


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_fused_bn_residual_activation(activation):
    dtype = torch.float8_e4m3fn if activation in (None, "silu", "hardsigmoid") else torch.int8
    case = Case(2, 6, 5, 5, 8, 3, 3, padding=1)
    x, w = quantized(case.input_shape, dtype, "channels_last"), quantized(case.weight_shape, dtype)
    xs, ws = torch.tensor([0.03]), torch.rand(case.k) * 0.02
    b = torch.randn(case.k)
    mean, var = torch.randn(case.k), torch.rand(case.k) + 0.5
    gamma, beta = torch.randn(case.k), torch.randn(case.k)
    residual = torch.randn(2, 8, 5, 5)
    out = kernels.conv2d_scaled(x, w, xs, ws, b, padding=1, out_dtype=torch.float32, running_mean=mean,
                                running_var=var, bn_weight=gamma, bn_bias=beta, eps=1e-3, residual=residual,
                                activation=activation)
    conv = reference(x, w, xs, ws, b, case)
    bn = F.batch_norm(conv, mean.double(), var.double(), gamma.double(), beta.double(), False, 0.0, 1e-3)
    ref = ACTIVATIONS[activation](bn + residual.double())
    assert_fp32_close(out, ref, case)


def test_int8_output_scale_saturates_and_rounds_half_to_even():
    """Integer sums (unit scales) divided by 2: every odd sum is an exact tie, which must round to
    even; sums past 2 * 127 saturate."""
    case = Case(1, 8, 5, 5, 16, 3, 3, padding=1)
    x = torch.randint(-6, 7, case.input_shape, dtype=torch.int8)
    w = torch.randint(-6, 7, case.weight_shape, dtype=torch.int8)
    ones = torch.ones(1)
    out = kernels.conv2d_scaled(x, w, ones, ones, padding=1, out_dtype=torch.int8, output_scale=torch.tensor([2.0]))
    exact = F.conv2d(x.double(), w.double(), padding=1) / 2
    assert (exact.frac().abs() == 0.5).any() and (exact.abs() > 128).any()
    assert out.dtype == torch.int8
    assert torch.equal(out, torch.round(exact).clamp(-128, 127).to(torch.int8))  # torch.round: half to even


def test_fp8_output_scale_matches_torch_cast():
    """Small integer operands (exact in e4m3) make exact fp32 sums; divided by a power of two, the
    kernel's e4m3 store must be PyTorch's round-to-nearest-even cast, saturated at +-448."""
    case = Case(1, 4, 6, 6, 16, 3, 3, padding=1)
    x = torch.randint(-16, 17, case.input_shape).float().to(torch.float8_e4m3fn)
    w = torch.randint(-16, 17, case.weight_shape).float().to(torch.float8_e4m3fn)
    ones = torch.ones(1)
    out = kernels.conv2d_scaled(x, w, ones, ones, padding=1, out_dtype=torch.float8_e4m3fn,
                                output_scale=torch.tensor([0.5]), activation="relu")
    exact = F.relu(F.conv2d(x.double(), w.double(), padding=1)) / 0.5
    ties = ((exact >= 16) & (exact < 32) & (exact % 4 == 1)) | ((exact >= 32) & (exact < 64) & (exact % 8 == 2))
    assert ties.any()  # halfway between two e4m3 values: only round-half-even gets them all right
    assert (exact > 448).any()
    expected = exact.clamp(max=448).float().to(torch.float8_e4m3fn)
    assert out.dtype == torch.float8_e4m3fn
    assert torch.equal(out.view(torch.uint8), expected.view(torch.uint8))


def test_unbatched_and_algorithms():
    case = Case(1, 20, 5, 6, 18, 1, 1, stride=2, unbatched=True)
    x, w = quantized(case.input_shape, torch.int8), quantized(case.weight_shape, torch.int8)
    xs, ws = torch.tensor([0.5]), torch.tensor([0.25])
    ref = reference(x.unsqueeze(0), w, xs, ws, None, case)[0]
    for algorithm in ("auto", "im2col", "pointwise"):
        out = kernels.conv2d_scaled(x, w, xs, ws, stride=2, algorithm=algorithm, out_dtype=torch.float32)
        assert torch.equal(out.double(), ref)  # |sums| * 1/8 are exact in fp32
    with pytest.raises(ValueError, match="winograd_f2"):
        kernels.conv2d_scaled(x, w, xs, ws, algorithm="winograd_f2")


ERROR_CASE = Case(1, 4, 5, 5, 6, 3, 3)


def _operands():
    """Fresh random int8 operands and positive scales of the shapes the argument checks see."""
    x = quantized(ERROR_CASE.input_shape, torch.int8)
    w = quantized(ERROR_CASE.weight_shape, torch.int8)
    return x, w, torch.rand(1) + 0.01, torch.rand(6) + 0.01


@pytest.mark.parametrize("change, name", [
    (lambda a: dict(a, weight=a["weight"].to(torch.float8_e4m3fn)), "weight type"),
    (lambda a: dict(a, input=a["input"].float(), weight=a["weight"].float()), "input"),
    (lambda a: dict(a, input=a["input"].half()), "input"),
    (lambda a: dict(a, input_scale=torch.rand(1, dtype=torch.float64)), "input_scale"),
    (lambda a: dict(a, input_scale=torch.rand(2)), "input_scale"),
    (lambda a: dict(a, weight_scale=torch.rand(5)), "weight_scale"),
    (lambda a: dict(a, weight_scale=torch.rand(6, 1)), "weight_scale"),
    (lambda a: dict(a, weight_scale=torch.rand(12)[::2]), "weight_scale"),
    (lambda a: dict(a, weight_scale=torch.rand(6, dtype=torch.bfloat16)), "weight_scale"),
    (lambda a: dict(a, out_dtype=torch.int8), "out_dtype"),
    (lambda a: dict(a, out_dtype=torch.float64), "out_dtype"),
    (lambda a: dict(a, output_scale=torch.rand(1) + 0.5), "out_dtype"),
    (lambda a: dict(a, output_scale=torch.rand(1, dtype=torch.float16), out_dtype=torch.int8), "output_scale"),
    (lambda a: dict(a, bias=torch.randn(6, dtype=torch.float64)), "bias"),
    (lambda a: dict(a, bias=torch.randn(5)), "bias"),
    (lambda a: dict(a, running_mean=torch.randn(6)), "running_var"),
    (lambda a: dict(a, residual=quantized((1, 6, 3, 3), torch.int8)), "residual"),
    (lambda a: dict(a, residual=torch.randn(1, 6, 4, 3)), "residual"),
])
def test_bad_arguments_raise_runtime_error_naming_them(change, name):
    x, w, xs, ws = _operands()
    args = change(dict(input=x, weight=w, input_scale=xs, weight_scale=ws))
    before = {k: v.clone() for k, v in args.items() if isinstance(v, torch.Tensor)}
    with pytest.raises(RuntimeError, match=name):
        kernels.conv2d_scaled(**args)
    for k, v in before.items():
        assert torch.equal(args[k].view(torch.uint8) if args[k].element_size() == 1 else args[k],
                           v.view(torch.uint8) if v.element_size() == 1 else v)


def test_inference_only():
    x, w, xs, ws = _operands()
    bias = torch.randn(6, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference-only.*bias"):
        kernels.conv2d_scaled(x, w, xs, ws, bias)
    with torch.no_grad():
        out = kernels.conv2d_scaled(x, w, xs, ws, bias, out_dtype=torch.float32)
    assert_fp32_close(out, reference(x, w, xs, ws, bias.detach(), ERROR_CASE), ERROR_CASE)
