"""cnn.quantize: a conv-BN-ReLU-residual network in fp8 / int8 against the float model (float64
reference on fresh inputs drawn like the calibration batches)."""
import copy

import pytest
import torch
import torch.nn as nn

import cnn
from cnn.finetune import SmallResNet
from cnn.quantize import QuantizedConv2dBN, layer_sqnr, sqnr


def _network(width=8):
    """cnn.finetune's small ResNet (stem, two BasicBlocks, the second strided with a 1x1
    downsample) with BatchNorm statistics of real activations (a few train-mode batches)."""
    model = SmallResNet(5, width)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 1, 8, 8))
    return model.eval()


def _float64_output(model, x):
    reference = copy.deepcopy(model).double()
    for module in reference.modules():  # the float64 oracle is PyTorch's own convolution
        if isinstance(module, nn.Conv2d):
            module.__class__ = nn.Conv2d
    with torch.no_grad():
        return reference(x.double())


@pytest.mark.parametrize("observer", ["max", "percentile"])
@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.int8], ids=["fp8", "int8"])
def test_quantized_network_output_sqnr(dtype, observer):
    model = _network()
    state = copy.deepcopy(model.state_dict())
    calibration = [torch.randn(6, 1, 8, 8) for _ in range(2)]
    quantized = cnn.quantize(model, calibration, dtype, observer)

    layers = {name: m for name, m in quantized.named_modules() if isinstance(m, QuantizedConv2dBN)}
    # every fused chain but the stem (1 input channel: kept in float) is quantized
    assert sorted(layers) == ["layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.conv2", "layer2.downsample.0"]
    assert all(m.dtype == dtype for m in layers.values())
    assert isinstance(quantized.get_submodule("stem.0"), cnn.FusedConv2dBN)
    # conv1 feeds only conv2 in each block: its output travels as 1 byte
    seen = {}
    def record(name):
        def hook(module, args, out):
            seen[name] = out.dtype
        return hook

    hooks = [layers[n].register_forward_hook(record(n)) for n in ("layer1.conv1", "layer1.conv2")]
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        out = quantized(x)
    for h in hooks:
        h.remove()
    assert seen == {"layer1.conv1": dtype, "layer1.conv2": torch.float32}

    db = sqnr(_float64_output(model, x), out)
    assert db >= 20, f"{dtype} {observer}: output SQNR {db:.1f} dB"
    # the original is untouched
    assert model.training is False and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not any(isinstance(m, QuantizedConv2dBN) for m in model.modules())


def test_layer_sqnr_and_stem_option():
    model = _network()
    calibration = [torch.randn(6, 1, 8, 8)]
    per_layer = layer_sqnr(model, calibration, torch.int8, keep_stem=False)
    assert "stem.0" in per_layer and len(per_layer) == 6
    assert all(db > 25 for db in per_layer.values()), per_layer  # int8: ~6 dB per bit, 8 bits minus clipping


def test_arguments():
    model = _network()
    with pytest.raises(ValueError, match="dtype"):
        cnn.quantize(model, [torch.randn(1, 1, 8, 8)], torch.float16)
    with pytest.raises(ValueError, match="observer"):
        cnn.quantize(model, [torch.randn(1, 1, 8, 8)], torch.int8, observer="mse")
    with pytest.raises(RuntimeError, match="calibration"):
        cnn.quantize(model, [], torch.int8)
