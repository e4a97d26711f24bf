"""``kernels.conv3d``, ``conv_transpose3d`` and ``conv3d_bn`` against PyTorch's 3-D convolutions.

The spec is ``F.conv3d`` / ``F.conv_transpose3d`` in float64 on fresh random data: values, the three
gradients, the output's memory format (channels_last_3d in -> channels_last_3d out), argument forms
(padding strings, unbatched input, batch 0, groups, depthwise, dilation, 1x1x1), every dtype,
gradcheck / gradgradcheck, jvp, vmap, torch.compile(fullgraph=True), meta tensors, PyTorch's
exception types for bad input, ``enable()`` for 3-D ``aten::convolution``, and the 64-bit offset
variant for a video batch past 2^31 elements (chosen on meta tensors, run small with FORCE_INT64).
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
from kernels.aten import ROUTED
from kernels.ops import common
from kernels.ops.gemm import dgrad, forward, wgrad
from launches import convolution_launches_since, launched_since
from kernels.core.launcher import LAUNCHES
from reference import assert_close

CL3D = torch.channels_last_3d

# (input shape, weight shape, arguments, layout): small clips, every argument form, both layouts.
CONV3D = [
    ((1, 4, 4, 5, 5), (6, 2, 3, 3, 3), dict(stride=(2, 1, 1), padding=1, groups=2), "ncdhw"),
    ((1, 3, 4, 5, 4), (4, 3, 3, 1, 1), dict(padding=(1, 0, 0)), "channels_last_3d"),  # R(2+1)D's temporal conv
    ((1, 4, 3, 5, 5), (6, 4, 1, 3, 3), dict(stride=(1, 2, 2), padding=(0, 1, 1)), "ncdhw"),  # its spatial conv
    ((2, 4, 3, 4, 4), (6, 4, 1, 1, 1), dict(stride=2), "channels_last_3d"),  # 1x1x1 downsample
    ((1, 4, 5, 4, 4), (6, 4, 2, 3, 3), dict(stride=(2, 2, 1), padding=(1, 1, 0), dilation=(2, 1, 1)),
     "channels_last_3d"),
    ((1, 4, 5, 5, 4), (4, 2, 3, 3, 3), dict(dilation=2, groups=2, padding="same"), "ncdhw"),
    ((1, 2, 4, 5, 4), (4, 2, 2, 2, 2), dict(padding="same"), "channels_last_3d"),  # asymmetric 'same'
    ((1, 4, 3, 4, 4), (4, 1, 3, 3, 3), dict(padding=1, groups=4), "channels_last_3d"),  # channel-wise (X3D)
    ((2, 4, 4, 5), (4, 2, 3, 3, 3), dict(padding="valid"), "ncdhw"),  # unbatched
]
ids = [f"{x}-{w}-{'-'.join(f'{k}{v}' for k, v in a.items())}-{layout}" for x, w, a, layout in CONV3D]


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


def _values_and_grads(ours, theirs, x, w, b, **kwargs):
    """(our output, our grads), (PyTorch's output, its grads) for the same upstream gradient."""
    x1, w1, b1 = _leaves(x, w, b)
    x2, w2, b2 = _leaves(x, w, b)
    y, ref = ours(x1, w1, b1, **kwargs), theirs(x2, w2, b2, **kwargs)
    g = torch.randn_like(ref)
    return (y, torch.autograd.grad(y, (x1, w1, b1), g)), (ref, torch.autograd.grad(ref, (x2, w2, b2), g))


@pytest.mark.parametrize("x_shape,w_shape,kwargs,layout", CONV3D, ids=ids)
def test_conv3d_values_and_gradients_match_f_conv3d(device, x_shape, w_shape, kwargs, layout):
    x = torch.randn(x_shape, dtype=torch.float64, device=device)
    if layout == "channels_last_3d" and x.dim() == 5:
        x = x.contiguous(memory_format=CL3D)
    w = torch.randn(w_shape, dtype=torch.float64, device=device)
    b = torch.randn(w_shape[0], dtype=torch.float64, device=device)
    (y, grads), (ref, ref_grads) = _values_and_grads(kernels.conv3d, F.conv3d, x, w, b, **kwargs)
    reduction = w[0].numel()
    assert_close(y, ref, torch.float64, reduction)
    assert ref.abs().max() > 0
    for name, g, rg in zip(("grad_input", "grad_weight", "grad_bias"), grads, ref_grads):
        assert_close(g, rg, torch.float64, reduction * 8, what=name)
    if x.dim() == 5:
        # PyTorch's rule (cuDNN's, and mkldnn's for float32): channels_last_3d in -> channels_last_3d out.
        assert y.is_contiguous(memory_format=CL3D) == (layout == "channels_last_3d")


@pytest.mark.parametrize("weight_layout", [False, True])
def test_memory_format_follows_pytorchs_rule(device, weight_layout):
    """Against F.conv3d in float32 (its CPU float64 kernel ignores memory formats; cuDNN's do not)."""
    x = torch.randn(2, 4, 4, 5, 5, device=device)
    w = torch.randn(6, 4, 3, 3, 3, device=device)
    if weight_layout:
        w = w.contiguous(memory_format=CL3D)
    else:
        x = x.contiguous(memory_format=CL3D)
    y, ref = kernels.conv3d(x, w, padding=1), F.conv3d(x.cpu(), w.cpu(), padding=1)
    assert y.is_contiguous(memory_format=CL3D) and ref.is_contiguous(memory_format=CL3D)
    assert_close(y, ref, torch.float32, w[0].numel())


@pytest.mark.parametrize("layout", ["ncdhw", "channels_last_3d"])
def test_channel_wise_3d_on_the_depthwise_kernel(device, layout):
    """X3D's channel-wise 3x3x3 (and a channel multiplier of 2): ``auto`` picks the depthwise kernel."""
    x = torch.randn(2, 4, 4, 5, 5, dtype=torch.float64, device=device)
    if layout == "channels_last_3d":
        x = x.contiguous(memory_format=CL3D)
    w = torch.randn(8, 1, 3, 3, 3, dtype=torch.float64, device=device)
    b = torch.randn(8, dtype=torch.float64, device=device)
    kwargs = dict(stride=(1, 2, 2), padding=(1, 1, 0), dilation=(2, 1, 1), groups=4)
    before = LAUNCHES.copy()
    (y, grads), (ref, ref_grads) = _values_and_grads(kernels.conv3d, F.conv3d, x, w, b, **kwargs)
    assert launched_since(before)["_depthwise_forward_kernel"] == 1
    assert_close(y, ref, torch.float64, 27)
    assert y.is_contiguous(memory_format=CL3D) == (layout == "channels_last_3d")
    for g, rg in zip(grads, ref_grads):
        assert_close(g, rg, torch.float64, 400)


@pytest.mark.parametrize("algorithm", ["im2col", "pointwise"])
def test_explicit_algorithms_with_3d_kernels(device, algorithm):
    kernel = (1, 1, 1) if algorithm == "pointwise" else (3, 3, 3)
    x = torch.randn(2, 4, 4, 5, 5, dtype=torch.float64, device=device)
    w = torch.randn(6, 4, *kernel, dtype=torch.float64, device=device)
    assert_close(kernels.conv3d(x, w, algorithm=algorithm), F.conv3d(x.cpu(), w.cpu()), torch.float64, w[0].numel())


@pytest.mark.parametrize("algorithm", ["direct", "stem", "winograd_f2", "winograd"])
def test_algorithms_without_3d_kernels_raise_value_error(device, algorithm):
    x = torch.randn(1, 4, 4, 5, 5, device=device)
    w = torch.randn(4, 1, 3, 3, 3, device=device)
    with pytest.raises(ValueError, match="conv3d: algorithm="):
        kernels.conv3d(x, w, groups=4, algorithm=algorithm)


def test_pointwise_refuses_a_temporal_kernel(device):
    with pytest.raises(ValueError, match="pointwise needs a 1x1x1 kernel, got 3x1x1"):
        kernels.conv3d(torch.randn(1, 4, 4, 5, 5, device=device), torch.randn(4, 4, 3, 1, 1, device=device),
                       algorithm="pointwise")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_conv3d_dtypes(device, dtype):
    x = torch.randn(2, 8, 4, 6, 6, device=device).to(dtype).contiguous(memory_format=CL3D)
    w = (0.2 * torch.randn(16, 8, 3, 3, 3, device=device)).to(dtype)
    b = torch.randn(16, device=device).to(dtype)
    y = kernels.conv3d(x, w, b, stride=(1, 2, 2), padding=1)
    ref = F.conv3d(*(t.cpu().double() for t in (x, w, b)), stride=(1, 2, 2), padding=1)
    assert_close(y, ref, dtype, w[0].numel())


def test_batch_zero_and_unbatched(device):
    w = torch.randn(6, 4, 3, 3, 3, device=device)
    empty = kernels.conv3d(torch.randn(0, 4, 4, 5, 5, device=device), w, padding=1)
    assert empty.shape == F.conv3d(torch.randn(0, 4, 4, 5, 5), w.cpu(), padding=1).shape
    x = torch.randn(4, 4, 5, 5, dtype=torch.float64, device=device)
    w = w.double()
    assert_close(kernels.conv3d(x, w, padding=1), F.conv3d(x.cpu(), w.cpu(), padding=1), torch.float64, 108)


CONV_TRANSPOSE3D = [
    ((1, 4, 3, 3, 4), (4, 3, 3, 3, 3), dict(stride=2, padding=1, output_padding=1), "channels_last_3d"),
    ((1, 4, 2, 3, 3), (4, 2, 2, 3, 3), dict(stride=(1, 2, 2), groups=2, dilation=(2, 1, 1)), "ncdhw"),
    ((1, 4, 3, 3, 3), (4, 3, 3, 1, 1), dict(stride=(2, 1, 1), padding=(1, 0, 0), output_padding=(1, 0, 0)),
     "channels_last_3d"),
    ((4, 3, 4, 4), (4, 3, 1, 1, 1), dict(), "ncdhw"),  # unbatched 1x1x1
]


@pytest.mark.parametrize("x_shape,w_shape,kwargs,layout", CONV_TRANSPOSE3D,
                         ids=[f"{x}-{w}-{a}-{layout}" for x, w, a, layout in CONV_TRANSPOSE3D])
def test_conv_transpose3d_values_and_gradients(device, x_shape, w_shape, kwargs, layout):
    x = torch.randn(x_shape, dtype=torch.float64, device=device)
    if layout == "channels_last_3d" and x.dim() == 5:
        x = x.contiguous(memory_format=CL3D)
    w = torch.randn(w_shape, dtype=torch.float64, device=device)
    b = torch.randn(w_shape[1] * kwargs.get("groups", 1), dtype=torch.float64, device=device)
    (y, grads), (ref, ref_grads) = _values_and_grads(kernels.conv_transpose3d, F.conv_transpose3d, x, w, b, **kwargs)
    reduction = w.shape[0] * w[0, 0].numel()
    assert_close(y, ref, torch.float64, reduction)
    for name, g, rg in zip(("grad_input", "grad_weight", "grad_bias"), grads, ref_grads):
        assert_close(g, rg, torch.float64, reduction * 8, what=name)


def test_gradcheck_and_gradgradcheck(device):
    """Tiny: gradgradcheck launches each kernel a few dozen times (fast mode, as test_dropin's)."""
    x = torch.randn(1, 2, 2, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(2, 1, 2, 2, 1, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, device=device, requires_grad=True)
    conv = lambda x, w, b: kernels.conv3d(x, w, b, stride=(2, 1, 1), padding=(1, 1, 0), groups=2)
    assert torch.autograd.gradcheck(conv, (x, w, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(conv, (x, w, b), fast_mode=True)
    transposed = lambda x, w: kernels.conv_transpose3d(x, w, stride=(1, 2, 1), padding=(0, 1, 0))
    assert torch.autograd.gradcheck(transposed, (x, w), fast_mode=True)


def test_jvp_and_vmap(device):
    x = torch.randn(1, 3, 3, 4, 4, dtype=torch.float64, device=device)
    w = torch.randn(4, 3, 2, 3, 3, dtype=torch.float64, device=device)
    tx, tw = torch.randn_like(x), torch.randn_like(w)
    _, ours = torch.func.jvp(lambda x, w: kernels.conv3d(x, w, padding=1), (x, w), (tx, tw))
    _, theirs = torch.func.jvp(lambda x, w: F.conv3d(x, w, padding=1), (x.cpu(), w.cpu()), (tx.cpu(), tw.cpu()))
    assert_close(ours, theirs, torch.float64, 3 * w[0].numel())
    xs = torch.randn(2, *x.shape, dtype=torch.float64, device=device)
    ws = torch.randn(2, *w.shape, dtype=torch.float64, device=device)
    for in_dims in ((0, None), (None, 0), (0, 0)):
        args = (xs if in_dims[0] == 0 else x, ws if in_dims[1] == 0 else w)
        ours = torch.func.vmap(lambda x, w: kernels.conv3d(x, w, padding=1), in_dims=in_dims)(*args)
        theirs = torch.func.vmap(lambda x, w: F.conv3d(x, w, padding=1), in_dims=in_dims)(*(a.cpu() for a in args))
        assert_close(ours, theirs, torch.float64, w[0].numel(), what=f"vmap {in_dims}")


def test_torch_compile_fullgraph(device):
    x = torch.randn(1, 2, 3, 4, 4, device=device, requires_grad=True)
    w = torch.randn(3, 2, 2, 3, 3, device=device, requires_grad=True)
    f = lambda x, w: kernels.conv3d(x, w, padding=1).sum()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    gx, gw = torch.autograd.grad(compiled(x, w), (x, w))
    rx, rw = torch.autograd.grad(F.conv3d(x, w, padding=1).sum(), (x, w))
    assert_close(gx, rx, torch.float32, 200)
    assert_close(gw, rw, torch.float32, 200)


@pytest.mark.parametrize("layout", ["ncdhw", "channels_last_3d"])
def test_meta_tensors_without_a_launch(layout):
    x = torch.empty(2, 4, 5, 9, 8, device="meta")
    if layout == "channels_last_3d":
        x = x.contiguous(memory_format=CL3D)
    w, b = torch.empty(6, 2, 3, 3, 3, device="meta"), torch.empty(6, device="meta")
    before = LAUNCHES.copy()
    y, ref = kernels.conv3d(x, w, b, stride=2, padding=1, groups=2), F.conv3d(x, w, b, stride=2, padding=1, groups=2)
    assert (y.device, y.shape, y.stride(), y.dtype) == (ref.device, ref.shape, ref.stride(), ref.dtype)
    assert convolution_launches_since(before) == 0


def test_one_launch_forward_two_backward(device):
    x = torch.randn(2, 4, 4, 5, 5, device=device, requires_grad=True)
    w = torch.randn(6, 4, 3, 3, 3, device=device, requires_grad=True)
    before = LAUNCHES.copy()
    y = kernels.conv3d(x, w, padding=1)
    assert launched_since(before) == {"_im2col_forward_kernel": 1}
    before = LAUNCHES.copy()
    y.sum().backward()
    assert launched_since(before) == {"_dgrad_kernel": 1, "_wgrad_kernel": 1}


BAD_CONV3D = [
    dict(weight=torch.randn(6, 4, 3, 3)),  # a 4-D weight
    dict(input=torch.randn(2, 3, 4, 5, 5)),  # channels do not match
    dict(padding=-1),
    dict(stride=0),
    dict(dilation=(1, 0, 1)),
    dict(padding="full"),
    dict(padding="same", stride=2),
    dict(input=torch.randn(2, 4, 2, 5, 5)),  # kernel deeper than the padded clip
    dict(stride=(1, 2)),  # two values for three dimensions
    dict(groups=3),
    dict(bias=torch.randn(5)),
    dict(weight=torch.randn(6, 4, 3, 3, 3, dtype=torch.float64)),
]


@pytest.mark.parametrize("bad", BAD_CONV3D, ids=[next(iter(b)) + str(i) for i, b in enumerate(BAD_CONV3D)])
def test_bad_input_raises_pytorchs_exception_type(bad):
    args = dict(input=torch.randn(2, 4, 4, 5, 5), weight=torch.randn(6, 4, 3, 3, 3), bias=None, stride=1, padding=0,
                dilation=1, groups=1)
    args.update(bad)
    with pytest.raises(Exception) as theirs:
        F.conv3d(**args)
    with pytest.raises(Exception) as ours:
        kernels.conv3d(**args)
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value).startswith("conv3d:")


def test_bad_transposed_input_raises_pytorchs_exception_type():
    x, w = torch.randn(2, 4, 3, 4, 4), torch.randn(4, 3, 3, 3, 3)
    for kwargs in (dict(output_padding=2, stride=2), dict(stride=(1, 2)), dict(padding=-1)):
        with pytest.raises(Exception) as theirs:
            F.conv_transpose3d(x, w, **kwargs)
        with pytest.raises(Exception) as ours:
            kernels.conv_transpose3d(x, w, **kwargs)
        assert type(ours.value) is type(theirs.value), kwargs
        assert str(ours.value).startswith("conv_transpose3d:")


def test_conv3d_bn_matches_eager_batch_norm_and_refuses_autograd(device):
    conv = nn.Conv3d(4, 6, 3, padding=1, stride=(1, 2, 2)).double().to(device)
    bn = nn.BatchNorm3d(6).double().to(device).eval()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 4, 3, 5, 5, dtype=torch.float64, device=device).contiguous(memory_format=CL3D)
    residual = torch.randn(1, 6, 3, 3, 3, dtype=torch.float64, device=device)  # broadcast over the batch
    with torch.no_grad():
        expected = F.hardswish(bn(conv(x)) + residual)
        before = LAUNCHES.copy()
        y = kernels.conv3d_bn(x, conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps,
                              conv.stride, conv.padding, residual=residual, activation="hardswish")
        assert convolution_launches_since(before) == 1
    assert_close(y, expected, torch.float64, 108)
    assert y.is_contiguous(memory_format=CL3D)
    with pytest.raises(RuntimeError, match="inference"):
        kernels.conv3d_bn(x, conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias)


def test_enable_routes_3d_convolutions_forward_and_backward(device):
    conv = nn.Conv3d(4, 6, 3, padding=1, stride=(1, 2, 2)).double().to(device)
    up = nn.ConvTranspose3d(6, 4, 3, stride=2, padding=1, output_padding=1).double().to(device)
    x = torch.randn(2, 4, 3, 5, 5, dtype=torch.float64, device=device, requires_grad=True)
    expected = up(conv(x))
    g = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, (x, conv.weight, up.weight), g)
    ROUTED.clear()
    with kernels.enabled():
        y = up(conv(x))
        grads = torch.autograd.grad(y, (x, conv.weight, up.weight), g)
    assert ROUTED == {"convolution": 2, "convolution_backward": 2}
    assert_close(y, expected, torch.float64, 162)
    for got, want in zip(grads, expected_grads):
        assert_close(got, want, torch.float64, 1000)
    ROUTED.clear()
    up(conv(x))
    assert not ROUTED  # nothing of ours runs after the context exits


def _capture_launch(monkeypatch, tuned):
    """Replace ``tuned.launch`` by a recorder: the launcher's arguments, nothing run."""
    seen = {}

    def launch(grid, candidates, *args, **kwargs):
        seen.update(kwargs)
        return candidates[0]

    monkeypatch.setattr(tuned, "launch", launch)
    return seen


def test_a_video_batch_past_2_31_elements_takes_the_64_bit_offsets(monkeypatch):
    """48 clips of 16x112x112 with 256 channels (2^31.2 elements), on meta tensors: the launcher of each
    pass picks the int64 variant; 16 clips (2^29.6 elements, under the 2^30 margin ``needs_int64`` keeps)
    stay in int32."""
    for batch, want in ((48, True), (16, False)):
        x = torch.empty(batch, 256, 16, 112, 112, device="meta", dtype=torch.float16).contiguous(memory_format=CL3D)
        w = torch.empty(256, 256, 3, 3, 3, device="meta", dtype=torch.float16)
        assert (x.numel() > 2**31) == want
        params = kernels.ConvParams.from_tensors(x, w, padding=1, op="conv3d")
        seen = [_capture_launch(monkeypatch, k) for k in (forward.IM2COL_FORWARD, dgrad.DGRAD, wgrad.WGRAD)]
        y = forward.im2col_forward(x, w, None, params)
        dgrad.grad_input(y, w, params, channels_last=True)
        wgrad.grad_weight(y, x, params, channels_last=True)
        assert [s["USE_INT64"] for s in seen] == [want] * 3
        assert all(s["DEPTH"] and s["T"] == 3 for s in seen)


def test_the_64_bit_path_is_correct(device, monkeypatch):
    monkeypatch.setattr(common, "FORCE_INT64", True)
    x = torch.randn(2, 4, 3, 4, 4, dtype=torch.float64, device=device)
    w = torch.randn(4, 2, 3, 3, 3, dtype=torch.float64, device=device)
    b = torch.randn(4, dtype=torch.float64, device=device)
    kwargs = dict(stride=(2, 1, 2), padding=1, groups=2)
    (y, grads), (ref, ref_grads) = _values_and_grads(kernels.conv3d, F.conv3d, x, w, b, **kwargs)
    assert_close(y, ref, torch.float64, 54)
    for g, rg in zip(grads, ref_grads):
        assert_close(g, rg, torch.float64, 400)
