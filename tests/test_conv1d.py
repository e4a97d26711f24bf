"""kernels.conv1d and kernels.conv_transpose1d against F.conv1d / F.conv_transpose1d in float64:
argument forms, the depthwise case on a long sequence with "same" and causal padding, every
algorithm, dtypes and layouts, gradcheck, forward mode and vmap, and bad input beside PyTorch's."""
import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels.core.launcher import LAUNCHES
from reference import assert_close
from variant_cases import algorithm_cases, case, check, random_inputs

C1, T1 = "conv1d", "conv_transpose1d"

CONV1D = [
    case(C1, (2, 4, 9), (6, 4, 3), padding=1),
    case(C1, (1, 4, 11), (6, 2, 3), stride=2, dilation=2, groups=2, bias=False),
    case(C1, (2, 3, 8), (4, 3, 4), padding="same"),  # even kernel: the extra pixel on the right, as PyTorch
    case(C1, (1, 4, 7), (5, 4, 3), stride=3, padding="valid"),
    case(C1, (1, 4, 9), (8, 1, 3), stride=2, padding=1, groups=4),  # depthwise, channel multiplier 2
    case(C1, (1, 8, 160), (8, 1, 4), padding="same", groups=8),  # depthwise "short convolution", long sequence
    case(C1, (1, 20, 5), (18, 20, 1), stride=2),  # 1x1
    case(C1, (3, 6), (4, 3, 3), padding=1),  # unbatched
    case(C1, (0, 4, 6), (5, 4, 3)),  # batch 0
]
TRANSPOSED1D = [
    case(T1, (2, 4, 5), (4, 3, 3), stride=2, padding=1, output_padding=1),
    case(T1, (1, 4, 6), (4, 2, 4), stride=2, padding=1, groups=2),
    case(T1, (1, 2, 4), (2, 3, 3), dilation=2, output_padding=1),  # output_padding >= stride
    case(T1, (3, 5), (3, 2, 3)),  # unbatched
]


@pytest.mark.parametrize("c", CONV1D + TRANSPOSED1D, ids=str)
def test_sweep(c, device):
    check(c, "auto", torch.float64, "nchw", device)


@pytest.mark.parametrize("algorithm,c", algorithm_cases(CONV1D + TRANSPOSED1D, per_algorithm=1))
def test_every_algorithm(algorithm, c, device):
    check(c, algorithm, torch.float64, "nchw", device)


@pytest.mark.parametrize("c,dtype,layout", [
    (CONV1D[5], "float16", "channels_last"), (CONV1D[4], "bfloat16", "nchw"), (CONV1D[0], "float32", "strided"),
    (CONV1D[0], "bfloat16", "channels_last"), (TRANSPOSED1D[0], "float16", "nchw"),
    (TRANSPOSED1D[0], "float32", "channels_last"),
], ids=str)
def test_dtypes_layouts(c, dtype, layout, device):
    """"channels_last" for 1-D: (N, C, L) with the channels innermost."""
    check(c, "auto", getattr(torch, dtype), layout, device)


def test_depthwise_causal_padding_by_the_caller(device):
    """A causal depthwise conv (left padding only, as in Mamba / Hyena "short convolutions") runs
    on the depthwise kernel with a 1 x k filter: one launch forward."""
    c = case(C1, (2, 8, 64), (8, 1, 4), groups=8)
    x, w, b = random_inputs(c, torch.float64, device)
    before = LAUNCHES.copy()
    y = kernels.conv1d(F.pad(x, (3, 0)), w, b, groups=8)
    assert dict(LAUNCHES - before) == {"_depthwise_forward_kernel": 1}
    ref = F.conv1d(F.pad(x, (3, 0)), w, b, groups=8)
    assert y.shape == x.shape
    assert_close(y, ref, torch.float64, 4)
    # causal: changing the future does not change the past
    later = x.clone()
    later[..., 40:] += 1
    assert torch.equal(kernels.conv1d(F.pad(later, (3, 0)), w, b, groups=8)[..., :40], y[..., :40])


@pytest.mark.parametrize("c", [CONV1D[1], TRANSPOSED1D[2]], ids=str)
def test_gradcheck(c, device):
    x, w, b = random_inputs(c, torch.float64, device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: c.ours(x, w, b), (x, w, b), fast_mode=True)


def test_forward_mode_and_vmap(device):
    c = CONV1D[0]
    x, w, b = random_inputs(c, torch.float64, device)
    tangents = tuple(torch.randn_like(t) for t in (x, w, b))
    _, ours = torch.func.jvp(lambda *a: c.ours(*a), (x, w, b), tangents)
    _, theirs = torch.func.jvp(lambda *a: c.theirs(*a), (x, w, b), tangents)
    assert_close(ours, theirs, torch.float64, 3 * c.reduction, "tangent")
    xs = torch.randn((3,) + tuple(x.shape), dtype=torch.float64, device=device)
    got = torch.func.vmap(lambda x: c.ours(x, w, b))(xs)
    assert_close(got, torch.func.vmap(lambda x: c.theirs(x, w, b))(xs), torch.float64, c.reduction, "vmap")


BAD_CALLS = {
    "conv1d stride of 2 values": (C1, dict(stride=(1, 2)), ["stride", "[1, 2]"]),
    "conv1d bad padding string": (C1, dict(padding="full"), ["padding", "full"]),
    "conv1d same with stride": (C1, dict(padding="same", stride=2), ["same", "stride"]),
    "conv1d negative padding": (C1, dict(padding=-1), ["padding", "-1"]),
    "conv1d float dilation": (C1, dict(dilation=1.0), ["dilation", "1.0"]),
    "conv1d groups": (C1, dict(groups=3), ["groups=3"]),
    "conv1d weight rank": (C1, "weight_4d", ["weight"]),
    "conv1d input rank": (C1, "input_1d", ["input", "[5]"]),
    "conv1d channels": (C1, "channels", ["channels", "5"]),
    "conv1d kernel larger than input": (C1, "short", ["Kernel size"]),
    "conv_transpose1d output_padding": (T1, dict(stride=2, output_padding=2), ["output_padding", "[0, 2]"]),
    "conv_transpose1d stride of 2 values": (T1, dict(stride=(2, 2)), ["stride", "[2, 2]"]),
    "conv_transpose1d padding string": (T1, dict(padding="same"), ["padding", "same"]),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_input_matches_pytorch(name, device):
    op, change, words = BAD_CALLS[name]
    x = torch.randn(2, 4, 6)
    w = torch.randn(6, 4, 3) if op == C1 else torch.randn(4, 3, 3)
    kwargs = change if isinstance(change, dict) else {}
    if change == "weight_4d":
        w = w[..., None]
    elif change == "input_1d":
        x = torch.randn(5)
    elif change == "channels":
        x = torch.randn(2, 5, 6)
    elif change == "short":
        x = torch.randn(2, 4, 2)
    with pytest.raises(Exception) as theirs:
        getattr(F, op)(x, w, **kwargs)
    with pytest.raises(Exception) as ours:
        getattr(kernels, op)(x.to(device), w.to(device), **kwargs)
    assert type(ours.value) is type(theirs.value), f"PyTorch: {theirs.value!r}, ours: {ours.value!r}"
    for word in words:
        assert word in str(ours.value), f"{word!r} not in {ours.value}"
