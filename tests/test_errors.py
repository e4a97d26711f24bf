"""Bad input: the same exception type as F.conv2d, a message naming the argument, nothing modified."""
import pytest
import torch
import torch.nn.functional as F

import kernels


def _base(device):
    x = torch.randn(2, 4, 8, 8, device=device)
    w = torch.randn(6, 4, 3, 3, device=device)
    b = torch.randn(6, device=device)
    return x, w, b


# name -> (builder(x, w, b) -> (args, kwargs), words the message must contain)
BAD_CALLS = {
    "channel mismatch": (lambda x, w, b: ((x, w[:, :3]), {}), ["channels", "4"]),
    "groups do not divide channels": (lambda x, w, b: ((x, w[:, :1]), {"groups": 3}), ["groups=3"]),
    "groups do not divide out channels": (lambda x, w, b: ((x, w[:5, :2]), {"groups": 2}), ["groups=2"]),
    "kernel larger than padded input": (lambda x, w, b: ((x, torch.randn(6, 4, 9, 9, device=x.device)), {}),
                                        ["Kernel size"]),
    "negative padding": (lambda x, w, b: ((x, w), {"padding": -1}), ["padding", "-1"]),
    "zero stride": (lambda x, w, b: ((x, w), {"stride": 0}), ["stride", "0"]),
    "negative stride": (lambda x, w, b: ((x, w), {"stride": (1, -2)}), ["stride", "-2"]),
    "zero dilation": (lambda x, w, b: ((x, w), {"dilation": 0}), ["dilation", "0"]),
    "zero groups": (lambda x, w, b: ((x, w), {"groups": 0}), ["groups", "0"]),
    "bad padding string": (lambda x, w, b: ((x, w), {"padding": "full"}), ["padding", "full"]),
    "same with stride": (lambda x, w, b: ((x, w), {"padding": "same", "stride": 2}), ["same", "stride"]),
    "weight rank": (lambda x, w, b: ((x, w[..., 0]), {}), ["weight"]),
    "input rank 2": (lambda x, w, b: ((x[0, 0], w), {}), ["input", "8, 8"]),
    "input rank 5": (lambda x, w, b: ((x[None], w), {}), ["input"]),
    "dtype mismatch": (lambda x, w, b: ((x.double(), w), {}), ["input", "weight", "float64"]),
    "bias dtype": (lambda x, w, b: ((x, w, b.double()), {}), ["bias", "float64"]),
    "bias size": (lambda x, w, b: ((x, w, b[:5]), {}), ["bias", "5"]),
    "bias rank": (lambda x, w, b: ((x, w, b[:, None]), {}), ["bias", "6, 1"]),
    "stride of 3 values": (lambda x, w, b: ((x, w), {"stride": (1, 1, 1)}), ["stride", "[1, 1, 1]"]),
    "padding of 3 values": (lambda x, w, b: ((x, w), {"padding": (1, 1, 1)}), ["padding", "[1, 1, 1]"]),
    "zero out channels": (lambda x, w, b: ((x, w[:0]), {}), ["weight", "0, 4, 3, 3"]),
    "float stride": (lambda x, w, b: ((x, w), {"stride": 1.5}), ["stride", "1.5"]),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_input_matches_pytorch(name, device):
    x, w, b = _base(device)
    build, words = BAD_CALLS[name]
    args, kwargs = build(x, w, b)
    snapshot = [a.clone() for a in args]
    with pytest.raises(Exception) as torch_error:
        F.conv2d(*[a.cpu() for a in args], **kwargs)
    with pytest.raises(Exception) as our_error:
        kernels.conv2d(*args, **kwargs)
    assert type(our_error.value) is type(torch_error.value), (
        f"PyTorch raises {type(torch_error.value).__name__}, we raise {type(our_error.value).__name__}: "
        f"{our_error.value}")
    message = str(our_error.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    for before, after in zip(snapshot, args):
        assert torch.equal(before, after), "a caller's tensor was modified"


@pytest.mark.parametrize("algorithm", ["winograd_f9", "fft2", ""])
def test_unknown_algorithm(algorithm, device):
    x, w, b = _base(device)
    with pytest.raises(ValueError, match="algorithm"):
        kernels.conv2d(x, w, b, algorithm=algorithm)


def test_unsupported_dtype_is_named(device):
    x, w, b = _base(device)
    with pytest.raises(RuntimeError, match="int64"):
        kernels.conv2d(x.long(), w.long())


def test_non_tensor_input():
    with pytest.raises(TypeError, match="input"):
        kernels.conv2d([1.0, 2.0], torch.randn(1, 1, 1, 1))
