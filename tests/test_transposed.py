"""kernels.conv_transpose2d against F.conv_transpose2d in float64: a sweep of argument forms over
the registry, dtypes and layouts, gradcheck and gradgradcheck, forward mode, vmap,
torch.compile, fake and meta tensors, autocast, and bad input beside PyTorch's own errors."""
import pytest
import torch
import torch.nn.functional as F

import cnn
import kernels
from kernels.core.launcher import LAUNCHES
from launches import launched_since
from reference import as_reference, assert_close
from variant_cases import algorithm_cases, case, check, memory_format, random_inputs

T = "conv_transpose2d"

# (N, C_in, H, W), weight (C_in, C_out/groups, kH, kW): decoder upsamplers, every argument form,
# output_padding below stride and (the crop case) below dilation only, groups, bias or not.
SWEEP = [
    case(T, (2, 4, 5, 5), (4, 3, 3, 3), stride=2, padding=1, output_padding=1),  # the U-Net / FPN 3x3 upsampler
    case(T, (1, 4, 4, 3), (4, 2, 4, 4), stride=2, padding=1),  # DCGAN: 4x4, stride 2, padding 1
    case(T, (2, 6, 3, 3), (6, 4, 2, 2), stride=2),  # U-Net: 2x2 stride 2
    case(T, (1, 2, 1, 1), (2, 4, 4, 4)),  # DCGAN's first layer: a 1x1 latent to 4x4
    case(T, (1, 4, 5, 6), (4, 3, 3, 3), groups=2, bias=False),
    case(T, (1, 3, 4, 5), (3, 5, 2, 3), stride=(2, 3), padding=(0, 1), output_padding=(1, 2)),
    case(T, (1, 2, 4, 4), (2, 3, 3, 3), dilation=2, padding=1, output_padding=1),  # output_padding >= stride
    case(T, (1, 2, 3, 3), (2, 3, 1, 1), dilation=(3, 2), output_padding=(2, 1)),  # cropped rows and columns
    case(T, (1, 4, 5, 5), (4, 1, 3, 3), stride=2, padding=1, output_padding=1, groups=4),  # depthwise
    case(T, (1, 8, 4, 4), (8, 1, 3, 3), padding=1, groups=4),  # depthwise, channel multiplier 2
    case(T, (1, 20, 3, 3), (20, 18, 1, 1), stride=2),  # 1x1, channel blocks > 1
    case(T, (3, 4, 5), (3, 2, 3, 3), padding=1),  # unbatched
    case(T, (0, 4, 4, 4), (4, 3, 3, 3), stride=2),  # batch 0
]
CORE = [SWEEP[0], SWEEP[8]]
# fp32 in every layout, the half types channels_last (and bf16 NCHW too).
SETTINGS = [("float32", "nchw"), ("float32", "channels_last"), ("float32", "strided"), ("float16", "channels_last"),
            ("bfloat16", "channels_last"), ("bfloat16", "nchw")]


@pytest.mark.parametrize("c", SWEEP, ids=str)
def test_conv_transpose2d_sweep(c, device):
    check(c, "auto", torch.float64, "nchw", device)


@pytest.mark.parametrize("algorithm,c", algorithm_cases(SWEEP[:1] + SWEEP[4:], per_algorithm=1))
def test_conv_transpose2d_every_algorithm(algorithm, c, device):
    """The algorithm's grad_input computes the forward, its forward the input gradient."""
    check(c, algorithm, torch.float64, "nchw", device)


@pytest.mark.parametrize("dtype,layout", SETTINGS)
@pytest.mark.parametrize("c", CORE, ids=str)
def test_conv_transpose2d_dtypes_layouts(c, dtype, layout, device):
    check(c, "auto", getattr(torch, dtype), layout, device)


def test_forward_is_one_dgrad_launch(device):
    """No zero insertion and no col2im: the forward is one launch of the dgrad kernel."""
    c = SWEEP[0]
    x, w, b = random_inputs(c, torch.float32, device)
    before = LAUNCHES.copy()
    with torch.no_grad():
        c.ours(x, w, None)
    assert dict(launched_since(before)) == {"_dgrad_kernel": 1}


@pytest.mark.parametrize("c", [SWEEP[5], SWEEP[7]], ids=str)
def test_gradcheck(c, device):
    x, w, b = random_inputs(c, torch.float64, device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: c.ours(x, w, b), (x, w, b), fast_mode=True)


def test_gradgradcheck(device):
    c = case(T, (1, 2, 2, 3), (2, 1, 3, 2), stride=2, padding=1, output_padding=1)
    x, w, _ = random_inputs(c, torch.float64, device, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, w: c.ours(x, w, None), (x, w), fast_mode=True)


def test_forward_mode_and_vmap_match_pytorch(device):
    c = SWEEP[0]
    x, w, b = random_inputs(c, torch.float64, device)
    tangents = tuple(torch.randn_like(t) for t in (x, w, b))
    y, ty = torch.func.jvp(lambda *a: c.ours(*a), (x, w, b), tangents)
    ref, ref_t = torch.func.jvp(lambda *a: c.theirs(*a), *(tuple(t.double() for t in ts)
                                                            for ts in ((x, w, b), tangents)))
    assert_close(y, ref, torch.float64, c.reduction, "primal")
    assert_close(ty, ref_t, torch.float64, 3 * c.reduction, "tangent")
    xs = torch.randn((3,) + tuple(x.shape), dtype=torch.float64, device=device)
    ws = torch.randn((3,) + tuple(w.shape), dtype=torch.float64, device=device)
    rb = as_reference(b).detach()
    for in_dims, args in (((0, None), (xs, w)), ((0, 0), (xs, ws))):
        got = torch.func.vmap(lambda x, w: c.ours(x, w, b), in_dims=in_dims)(*args)
        expected = torch.func.vmap(lambda x, w: c.theirs(x, w, rb), in_dims=in_dims)(*(a.double() for a in args))
        assert_close(got, expected, torch.float64, c.reduction, f"vmap {in_dims}")


def test_torch_compile_fullgraph_and_fake_strides(device):
    from torch._subclasses.fake_tensor import FakeTensorMode

    c = SWEEP[0]
    x, w, b = random_inputs(c, torch.float32, device, "channels_last", requires_grad=True)
    compiled = torch.compile(lambda x, w, b: torch.relu(c.ours(x, w, b)) * 2, fullgraph=True, backend="aot_eager")
    y = compiled(x, w, b)
    y.sum().backward()
    rx, rw, rb = as_reference(x), as_reference(w), as_reference(b)
    ref = torch.relu(c.theirs(rx, rw, rb)) * 2
    ref.sum().backward()
    assert_close(y, ref, torch.float32, c.reduction)
    assert_close(x.grad, rx.grad, torch.float32, c.grad_input_reduction, "grad_input")
    assert_close(w.grad, rw.grad, torch.float32, 50, "grad_weight")
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = c.ours(*(mode.from_tensor(t.detach()) for t in (x, w, b)))
    real = c.ours(*(t.detach() for t in (x, w, b)))
    assert (fake.shape, fake.stride(), fake.dtype) == (real.shape, real.stride(), real.dtype)


def test_meta_tensors_and_autocast(device):
    c = SWEEP[0]
    x, w, b = (torch.empty(s, device="meta") for s in (c.input_shape, c.weight_shape, (c.bias_size,)))
    before = sum(LAUNCHES.values())
    y, ref = c.ours(x, w, b), c.theirs(x, w, b)
    assert (y.shape, y.stride()) == (ref.shape, ref.stride()) and sum(LAUNCHES.values()) == before
    x, w, b = random_inputs(c, torch.float32, device)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        y, expected = c.ours(x, w, b), c.theirs(x, w, b)
    assert y.dtype == expected.dtype == torch.bfloat16
    assert_close(y, c.theirs(*(as_reference(t.to(torch.bfloat16)) for t in (x, w, b))), torch.bfloat16, c.reduction)


@pytest.mark.parametrize("x_layout,w_layout,g_layout", [("nchw", "nchw", "channels_last"),
                                                        ("channels_last", "nchw", "nchw"),
                                                        ("nchw", "channels_last", "nchw")])
def test_gradient_memory_formats_follow_pytorch(x_layout, w_layout, g_layout, device):
    """PyTorch gives a transposed convolution's gradients in the forward's format, whatever the
    upstream gradient's."""
    fmt = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
    c = SWEEP[0]
    x, w, _ = random_inputs(c, torch.float64, device)
    x = x.contiguous(memory_format=fmt[x_layout]).requires_grad_(True)
    w = w.contiguous(memory_format=fmt[w_layout]).requires_grad_(True)
    y = c.ours(x, w, None)
    grad = torch.randn_like(y).contiguous(memory_format=fmt[g_layout])
    ours = torch.autograd.grad(y, (x, w), grad)
    rx, rw = (t.detach().cpu().requires_grad_(True) for t in (x, w))
    theirs = torch.autograd.grad(c.theirs(rx, rw, None), (rx, rw), grad.cpu())
    assert [memory_format(g) for g in ours] == [memory_format(g) for g in theirs]


def test_module_output_size(device):
    """cnn.ConvTranspose2d takes nn.ConvTranspose2d's output_size (it picks output_padding)."""
    ours = cnn.ConvTranspose2d(4, 3, 3, stride=2, padding=1).double().to(device)
    theirs = torch.nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 4, 4, 5, dtype=torch.float64, device=device)
    got = ours(x, output_size=[8, 10])
    assert_close(got, theirs(x.cpu(), output_size=[8, 10]), torch.float64, 36)
    assert got.shape == (1, 3, 8, 10)


# name -> (kwargs or a weight/input change, words our message must contain)
BAD_CALLS = {
    "output_padding not below stride or dilation": (dict(stride=2, output_padding=2), ["output_padding", "[2, 2]"]),
    "negative output_padding": (dict(stride=2, output_padding=-1), ["output_padding", "-1"]),
    "negative padding": (dict(padding=-1), ["padding", "-1"]),
    "zero stride": (dict(stride=0), ["stride", "0"]),
    "zero groups": (dict(groups=0), ["groups", "0"]),
    "groups do not divide in_channels": (dict(groups=3), ["groups=3"]),
    "padding string": (dict(padding="same"), ["padding", "same"]),
    "float stride": (dict(stride=1.5), ["stride", "1.5"]),
    "bool output_padding": (dict(output_padding=True), ["output_padding", "True"]),
    "stride of 3 values": (dict(stride=(1, 1, 1)), ["stride", "[1, 1, 1]"]),
    "output_padding of 3 values": (dict(output_padding=(0, 0, 0)), ["output_padding", "[0, 0, 0]"]),
    "output too small": (dict(padding=4), ["output size", "too small"]),
    "input channels": ("x_channels", ["channels", "5"]),
    "bias size": ("bias", ["bias", "4"]),
    "bias dtype": ("bias_dtype", ["bias", "float64"]),
    "weight dtype": ("weight_dtype", ["weight", "float64"]),
    "input rank": ("rank", ["input", "5, 5"]),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_input_matches_pytorch(name, device):
    change, words = BAD_CALLS[name]
    x, w, b = torch.randn(2, 4, 5, 5), torch.randn(4, 3, 3, 3), torch.randn(3)
    kwargs = change if isinstance(change, dict) else {}
    if change == "x_channels":
        x = torch.randn(2, 5, 5, 5)
    elif change == "bias":
        b = torch.randn(4)
    elif change == "bias_dtype":
        b = b.double()
    elif change == "weight_dtype":
        w = w.double()
    elif change == "rank":
        x = x[0, 0]
    with pytest.raises(Exception) as theirs:
        F.conv_transpose2d(x, w, b, **kwargs)
    snapshot = [t.clone() for t in (x, w, b)]
    args = [t.to(device) for t in (x, w, b)]
    with pytest.raises(Exception) as ours:
        kernels.conv_transpose2d(*args, **kwargs)
    assert type(ours.value) is type(theirs.value), f"PyTorch: {theirs.value!r}, ours: {ours.value!r}"
    for word in words:
        assert word in str(ours.value), f"{word!r} not in {ours.value}"
    assert all(torch.equal(s, t.cpu()) for s, t in zip(snapshot, args))


def test_ineligible_algorithm_names_it(device):
    x, w = torch.randn(1, 4, 5, 5, device=device), torch.randn(4, 3, 3, 3, device=device)
    with pytest.raises(ValueError, match="winograd_f2"):
        kernels.conv_transpose2d(x, w, stride=2, algorithm="winograd_f2")  # its convolution has stride 2
