"""Drop-in paths of ``F.conv2d`` beyond plain forward/backward (PyTorch's test_convolution.py
and OpInfo cover them): operands in any stride or layout, forward-mode AD, double backward,
vmap and per-sample gradients, the gradients' memory format, integer-like arguments and meta
tensors. Every check is against ``F.conv2d`` on float64 copies of fresh random data.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import forward_ad as fwAD

import kernels
from cases import algorithm_cases
from kernels.core.launcher import LAUNCHES
from reference import Case, assert_close, random_inputs

ALGORITHMS = list(kernels.REGISTRY)

# One small case per algorithm (the first each applies to): groups, stride, dilation, padding
# and bias where the algorithm takes them.
CASES = [
    Case(1, 4, 6, 5, 4, 3, 3, stride=2, padding=(1, 2), dilation=(1, 2), groups=2),
    Case(2, 3, 5, 5, 4, 3, 3, padding=1),
    Case(1, 4, 5, 6, 6, 1, 1, stride=2, padding=1, groups=2),
    Case(1, 4, 6, 6, 8, 3, 3, stride=2, padding=1, groups=4),
]
PER_ALGORITHM = algorithm_cases(CASES, per_algorithm=1)


def _double(*tensors):
    return tuple(None if t is None else t.detach().double() for t in tensors)


# --- 1. every operand through its own strides --------------------------------------------------

def _vector_layouts(v: torch.Tensor):
    """The same per-channel values as a strided view, and an expand (stride 0) where all are equal."""
    k = v.numel()
    strided = torch.randn(k, 3, dtype=v.dtype, device=v.device)
    strided[:, 1] = v
    return {"stride3": strided[:, 1], "expanded": v[:1].expand(k)}


@pytest.mark.parametrize("algorithm,case", PER_ALGORITHM)
def test_operands_in_any_stride(algorithm, case, device):
    x, w, b = random_inputs(case, torch.float64, device)
    for name, bias in _vector_layouts(torch.randn(case.k, dtype=torch.float64, device=device)).items():
        y = kernels.conv2d(x, w, bias, **case.conv_args(), algorithm=algorithm)
        ref = F.conv2d(*_double(x, w, bias), **case.conv_args())
        assert_close(y, ref, torch.float64, case.reduction, f"output with bias {name}")
    # Input and weight broadcast by expand (stride 0 over the batch / the output channels).
    x_expanded = x[:1].expand(x.shape)
    w_expanded = w[:1].expand(w.shape)
    y = kernels.conv2d(x_expanded, w_expanded, b, **case.conv_args(), algorithm=algorithm)
    ref = F.conv2d(*_double(x_expanded, w_expanded, b), **case.conv_args())
    assert_close(y, ref, torch.float64, case.reduction, "expanded input and weight")


def _residual_layouts(shape, device):
    """A residual of the output's shape in several layouts, all with fresh values except the expand."""
    plain = torch.randn(shape, dtype=torch.float64, device=device)
    return {
        "channels_last": plain.contiguous(memory_format=torch.channels_last),
        "transposed_hw": torch.randn(shape[0], shape[1], shape[3], shape[2], dtype=torch.float64,
                                     device=device).transpose(2, 3),
        "sliced": torch.randn(shape[0], shape[1] * 2, shape[2], shape[3], dtype=torch.float64, device=device)[:, 1::2],
        "broadcast_channel": torch.randn(1, shape[1], 1, 1, dtype=torch.float64, device=device).expand(shape),
    }


@pytest.mark.parametrize("algorithm,case", PER_ALGORITHM)
def test_conv2d_bn_vectors_and_residual_in_any_stride(algorithm, case, device):
    x, w, b = random_inputs(case, torch.float64, device)
    k = case.k
    base = dict(bias=b, running_mean=torch.randn(k, dtype=torch.float64, device=device),
                running_var=torch.rand(k, dtype=torch.float64, device=device) + 0.5,
                bn_weight=torch.randn(k, dtype=torch.float64, device=device),
                bn_bias=torch.randn(k, dtype=torch.float64, device=device))
    out_shape = F.conv2d(*_double(x, w), **case.conv_args()).shape

    def reference(vectors, residual):
        y = F.conv2d(*_double(x, w, vectors["bias"]), **case.conv_args())
        y = F.batch_norm(y, *_double(vectors["running_mean"], vectors["running_var"], vectors["bn_weight"],
                                     vectors["bn_bias"]), training=False, eps=1e-5)
        return torch.relu(y + residual.double())

    residuals = _residual_layouts(out_shape, device)
    for name in ("bias", "running_mean", "running_var", "bn_weight", "bn_bias"):
        for layout, vector in _vector_layouts(base[name]).items():
            vectors = dict(base, **{name: vector})
            residual = residuals["channels_last"]
            with torch.no_grad():
                y = kernels.conv2d_bn(x, w, **vectors, **case.conv_args(), residual=residual, activation="relu",
                                      algorithm=algorithm)
            assert_close(y, reference(vectors, residual), torch.float64, case.reduction, f"{name} {layout}")
    for layout, residual in residuals.items():
        with torch.no_grad():
            y = kernels.conv2d_bn(x, w, **base, **case.conv_args(), residual=residual, activation="relu",
                                  algorithm=algorithm)
        assert_close(y, reference(base, residual), torch.float64, case.reduction, f"residual {layout}")


# --- 2. forward-mode AD ----------------------------------------------------------------------

@pytest.mark.parametrize("algorithm,case", PER_ALGORITHM)
def test_forward_mode_ad_matches_pytorch(algorithm, case, device):
    x, w, b = random_inputs(case, torch.float64, device)
    tangents = tuple(torch.randn_like(t) for t in (x, w, b))

    def ours(x, w, b):
        return kernels.conv2d(x, w, b, **case.conv_args(), algorithm=algorithm)

    def theirs(x, w, b):
        return F.conv2d(x, w, b, **case.conv_args())

    y, ty = torch.func.jvp(ours, (x, w, b), tangents)
    ref, ref_t = torch.func.jvp(theirs, _double(x, w, b), _double(*tangents))
    assert_close(y, ref, torch.float64, case.reduction, "primal")
    assert ref_t.abs().max() > 0.1
    assert_close(ty, ref_t, torch.float64, 3 * case.reduction, "tangent (jvp)")

    # Dual tensors, tangent on the input only.
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, tangents[0])
        tangent = fwAD.unpack_dual(ours(dual, w, b)).tangent
    assert tangent is not None, "forward AD lost the tangent"
    ref_t = torch.func.jvp(lambda x: theirs(x, *_double(w, b)), _double(x), _double(tangents[0]))[1]
    assert_close(tangent, ref_t, torch.float64, case.reduction, "tangent (dual tensor)")


def test_conv2d_bn_under_forward_ad_raises_instead_of_a_zero_tangent(device):
    case = CASES[1]
    x, w, b = random_inputs(case, torch.float64, device)
    bn = (torch.randn(case.k, dtype=torch.float64), torch.rand(case.k, dtype=torch.float64) + 0.5)

    def fused(x):
        return kernels.conv2d_bn(x, w, b, *bn, padding=1)

    with torch.no_grad():
        with pytest.raises(RuntimeError, match="inference-only.*forward-mode"):
            torch.func.jvp(fused, (x,), (torch.randn_like(x),))
        with fwAD.dual_level(), pytest.raises(RuntimeError, match="inference-only.*forward-mode"):
            fused(fwAD.make_dual(x, torch.randn_like(x)))


def test_forward_over_reverse_hessian_vector_product(device):
    """jvp of a gradient: the backward ops have forward-mode formulas too."""
    case = CASES[1]
    x, w, b = random_inputs(case, torch.float64, device)
    v = torch.randn_like(w)

    def grad_w(conv):
        return torch.func.grad(lambda w: (conv(x.double(), w, b.double(), padding=1) ** 2).sum())

    hvp = torch.func.jvp(grad_w(kernels.conv2d), (w,), (v,))[1]
    ref = torch.func.jvp(grad_w(F.conv2d), _double(w), _double(v))[1]
    assert_close(hvp, ref, torch.float64, 400, "Hessian-vector product")


# --- 3. double backward ----------------------------------------------------------------------

# Smaller still: gradgradcheck launches each kernel a few dozen times.
GRADGRAD_CASES = [
    Case(1, 2, 5, 4, 2, 3, 3, stride=2, padding=(1, 2), dilation=(1, 2), groups=2),
    Case(1, 2, 4, 4, 2, 3, 3, padding=1),
    Case(1, 2, 4, 5, 2, 1, 1, stride=2, padding=1, groups=2),
    Case(1, 2, 5, 5, 4, 3, 3, stride=2, padding=1, groups=2),
]


@pytest.mark.parametrize("algorithm,case", algorithm_cases(GRADGRAD_CASES, per_algorithm=1))
def test_gradgradcheck(algorithm, case, device):
    x, w, b = random_inputs(case, torch.float64, device, requires_grad=True)

    def f(x, w, b):
        return kernels.conv2d(x, w, b, **case.conv_args(), algorithm=algorithm)

    assert torch.autograd.gradgradcheck(f, (x, w, b), fast_mode=True)


@pytest.mark.parametrize("wanted", [("x",), ("w",), ("x", "w"), ("b",), ("x", "w", "b")])
def test_create_graph_gradients_and_penalty_as_pytorch(wanted, device):
    """First-order gradients taken with create_graph=True carry requires_grad as F.conv2d's do, and a
    gradient penalty (their squared norm) differentiates to PyTorch's numbers."""
    case = CASES[1]

    def first_and_second(conv, x, w, b):
        leaves = {"x": x, "w": w, "b": b}
        chosen = [leaves[name].requires_grad_(True) for name in wanted]
        y = conv(x, w, b, padding=1)
        first = torch.autograd.grad((y * y).sum(), chosen, create_graph=True)
        second = torch.autograd.grad(sum((g ** 2).sum() for g in first), chosen)
        return [g.requires_grad for g in first], second

    x, w, b = random_inputs(case, torch.float64, device)
    flags, second = first_and_second(kernels.conv2d, x, w, b)
    ref_flags, ref_second = first_and_second(F.conv2d, *_double(x, w, b))
    assert flags == ref_flags
    for got, ref, name in zip(second, ref_second, wanted):
        assert ref.abs().max() > 0
        assert_close(got, ref, torch.float64, 2000, f"d(penalty)/d{name}")


# --- 4. vmap and per-sample gradients --------------------------------------------------------

@pytest.mark.parametrize("algorithm,case", PER_ALGORITHM)
def test_vmap_over_inputs_and_weights(algorithm, case, device):
    x, w, b = random_inputs(case, torch.float64, device)
    xs = torch.randn((3,) + tuple(x.shape), dtype=torch.float64, device=device)
    ws = torch.randn((3,) + tuple(w.shape), dtype=torch.float64, device=device)

    def ours(x, w):
        return kernels.conv2d(x, w, b, **case.conv_args(), algorithm=algorithm)

    def theirs(x, w):
        return F.conv2d(x, w, b.double(), **case.conv_args())

    for in_dims, args in (((0, None), (xs, w)), ((None, 0), (x, ws)), ((0, 0), (xs, ws))):
        y = torch.func.vmap(ours, in_dims=in_dims)(*args)
        ref = torch.func.vmap(theirs, in_dims=in_dims)(*_double(*args))
        assert_close(y, ref, torch.float64, case.reduction, f"vmap in_dims={in_dims}")


@pytest.mark.parametrize("algorithm,case", PER_ALGORITHM)
def test_per_sample_gradients(algorithm, case, device):
    """torch.func.vmap(torch.func.grad(loss)) over samples, as DP-SGD libraries compute it."""
    x, w, b = random_inputs(case, torch.float64, device)
    targets = torch.randn_like(F.conv2d(*_double(x, w, b), **case.conv_args()))

    def loss(conv, w, b, x, t):
        y = conv(x[None], w, b, **case.conv_args())
        return ((y - t[None]) ** 2).sum()

    ours = torch.func.vmap(torch.func.grad(lambda w, b, x, t: loss(
        lambda *a, **k: kernels.conv2d(*a, **k, algorithm=algorithm), w, b, x, t), argnums=(0, 1)),
        in_dims=(None, None, 0, 0))(w, b, x, targets)
    ref = torch.func.vmap(torch.func.grad(lambda w, b, x, t: loss(F.conv2d, w, b, x, t), argnums=(0, 1)),
                          in_dims=(None, None, 0, 0))(*_double(w, b, x), targets)
    assert_close(ours[0], ref[0], torch.float64, 200, "per-sample grad_weight")
    assert_close(ours[1], ref[1], torch.float64, 200, "per-sample grad_bias")


# --- 5. the gradients' memory format ---------------------------------------------------------

def _format(t):
    if t.is_contiguous():
        return "contiguous"
    return "channels_last" if t.is_contiguous(memory_format=torch.channels_last) else "strided"


@pytest.mark.parametrize("x_layout,w_layout", [("nchw", "channels_last"), ("channels_last", "nchw"),
                                               ("channels_last", "channels_last"), ("nchw", "nchw")])
def test_gradient_memory_formats_follow_pytorch(x_layout, w_layout, device):
    case = Case(2, 4, 6, 6, 6, 3, 3, padding=1, groups=2)
    fmt = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
    x, w, b = random_inputs(case, torch.float64, device)
    x = x.contiguous(memory_format=fmt[x_layout]).requires_grad_(True)
    w = w.contiguous(memory_format=fmt[w_layout]).requires_grad_(True)
    rx, rw = (t.detach().cpu().requires_grad_(True) for t in (x, w))
    grad = torch.randn(2, 6, 6, 6, dtype=torch.float64, device=device)  # contiguous, whatever the output is
    ours = torch.autograd.grad(kernels.conv2d(x, w, padding=1, groups=2), (x, w), grad)
    theirs = torch.autograd.grad(F.conv2d(rx, rw, padding=1, groups=2), (rx, rw), grad.cpu())
    assert [_format(g) for g in ours] == [_format(g) for g in theirs]
    for got, ref, what in zip(ours, theirs, ("grad_input", "grad_weight")):
        assert_close(got, ref, torch.float64, 100, what)


# --- 6. integer-like arguments ---------------------------------------------------------------

ACCEPTED = [
    dict(stride=np.int64(2)), dict(groups=np.int64(1)), dict(stride=torch.tensor(2)),
    dict(padding=(np.int32(1), torch.tensor(0))), dict(dilation=[np.int64(2), 1]), dict(groups=torch.tensor(1)),
]
REJECTED = [dict(stride=1.0), dict(stride=np.float64(2.0)), dict(stride=True), dict(groups=True),
            dict(padding=torch.tensor(1.0)), dict(stride=None), dict(dilation=(1, "1"))]


@pytest.mark.parametrize("kwargs", ACCEPTED, ids=lambda kw: repr(kw))
def test_integer_like_arguments_accepted(kwargs, device):
    x, w, b = random_inputs(Case(1, 2, 6, 6, 2, 3, 3), torch.float64, device)
    y = kernels.conv2d(x, w, b, **kwargs)
    assert_close(y, F.conv2d(*_double(x, w, b), **kwargs), torch.float64, 18)


@pytest.mark.parametrize("kwargs", REJECTED, ids=lambda kw: repr(kw))
def test_non_integer_arguments_rejected_like_pytorch(kwargs, device):
    x, w, b = random_inputs(Case(1, 2, 6, 6, 2, 3, 3), torch.float64, device)
    with pytest.raises(Exception) as theirs:
        F.conv2d(*_double(x, w, b), **kwargs)
    with pytest.raises(Exception) as ours:
        kernels.conv2d(x, w, b, **kwargs)
    assert type(ours.value) is type(theirs.value)
    assert next(iter(kwargs)) in str(ours.value)


# --- 7. meta tensors -------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_meta_tensors_give_pytorchs_meta_output_without_a_launch(layout):
    x = torch.empty(2, 4, 9, 8, device="meta")
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.empty(6, 2, 3, 3, device="meta")
    b = torch.empty(6, device="meta")
    before = sum(LAUNCHES.values())
    y = kernels.conv2d(x, w, b, stride=2, padding=1, groups=2)
    ref = F.conv2d(x, w, b, stride=2, padding=1, groups=2)
    assert (y.device, y.shape, y.stride(), y.dtype) == (ref.device, ref.shape, ref.stride(), ref.dtype)
    assert sum(LAUNCHES.values()) == before


def test_cnn_model_builds_on_meta_and_materialises(device):
    import cnn

    with torch.device("meta"):
        model = cnn.resnet18(num_classes=10)
    assert model(torch.empty(2, 3, 32, 32, device="meta")).shape == (2, 10)
    model = model.to_empty(device=device)
    reference = cnn.resnet18(num_classes=10).to(device)
    model.load_state_dict(reference.state_dict())
    x = torch.randn(1, 3, 16, 16, device=device)
    with torch.no_grad():
        assert torch.equal(model.conv1(x), reference.conv1(x))
