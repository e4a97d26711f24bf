"""cnn.Conv2d is an nn.Conv2d computed by our kernels: same keys, numbers and gradients; models
built from it train; transfer-learning helpers; the fine-tuning demo runs."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cnn
from cnn.resnet import BasicBlock
from reference import as_reference, assert_close


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, groups=2),
    dict(in_channels=3, out_channels=4, kernel_size=(3, 2), padding="same", bias=False, dilation=2),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
])
def test_conv2d_matches_nn_conv2d(device, kwargs):
    ours = cnn.Conv2d(**kwargs, device=device, dtype=torch.float64)
    assert ours.algorithm == "auto" and "algorithm='auto'" in repr(ours)
    reference = nn.Conv2d(**kwargs, dtype=torch.float64)
    reference.load_state_dict({k: v.cpu() for k, v in ours.state_dict().items()}, strict=True)
    assert list(ours.state_dict()) == list(reference.state_dict())
    x = torch.randn(2, kwargs["in_channels"], 7, 6, dtype=torch.float64, device=device, requires_grad=True)
    y = ours(x)
    rx = as_reference(x)
    ry = reference(rx)
    grad = torch.randn_like(ry)
    y.backward(grad.to(device))
    ry.backward(grad)
    reduction = kwargs["in_channels"] * 9
    assert_close(y, ry, torch.float64, reduction)
    assert_close(x.grad, rx.grad, torch.float64, reduction, "grad_input")
    assert_close(ours.weight.grad, reference.weight.grad, torch.float64, 2 * 7 * 6, "grad_weight")


def test_conv2d_passes_its_algorithm(device):
    conv = cnn.Conv2d(3, 4, 5, algorithm="winograd", device=device)
    with pytest.raises(ValueError, match="winograd"):
        conv(torch.randn(1, 3, 8, 8, device=device))


def tiny_resnet(num_classes=3):
    return nn.Sequential(
        cnn.ConvNormActivation(1, 8, stride=2), BasicBlock(8, 8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )


def test_sgd_steps_through_kernels_lower_the_loss(device):
    model = tiny_resnet().to(device)
    x = torch.randn(12, 1, 6, 6, device=device)
    y = torch.arange(12, device=device) % 3
    x = x + y.view(-1, 1, 1, 1).float()  # a learnable signal
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def _widths(layer):
    return (layer.in_features, layer.out_features) if isinstance(layer, nn.Linear) else \
        (layer.in_channels, layer.out_channels)


@pytest.mark.parametrize("name,head", [
    ("resnet18", "fc"), ("vgg11", "classifier.6"), ("mobilenet_v2", "classifier.1"),
    ("mobilenet_v3_small", "classifier.3"), ("mobilenet_v1", "classifier.1"), ("alexnet", "classifier.6"),
    ("googlenet", "fc"), ("inception_v3", "fc"), ("densenet121", "classifier"),
    ("squeezenet1_1", "classifier.1"),  # a 1x1 convolution to the classes
    ("efficientnet_b0", "classifier.1"), ("shufflenet_v2_x0_5", "fc"), ("mnasnet0_5", "classifier.1"),
    ("lenet5", "classifier.2"),
])
def test_replace_head_per_family(name, head):
    with torch.device("meta"):
        model = getattr(cnn, name)()
    old = model.get_submodule(head)
    assert cnn.replace_head(model, 7) is model
    new = model.get_submodule(head)
    assert new is not old and type(new) is type(old) and _widths(new) == (_widths(old)[0], 7)
    assert cnn.find_head(model) == (head, new)
    with pytest.raises(ValueError, match="num_classes"):
        cnn.replace_head(model, 0)
    with pytest.raises(ValueError, match="classifier head"):
        cnn.replace_head(nn.Sequential(nn.Conv2d(1, 1, 1)), 3)
    sequential = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    assert cnn.replace_head(sequential, 5)[1].out_features == 5


def test_freeze_and_unfreeze(device):
    model = cnn.resnet18(num_classes=4)
    frozen = cnn.freeze(model, up_to="layer2")
    assert frozen[0] == "conv1.weight" and frozen[-1].startswith("layer2.")
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.startswith(("layer1", "bn1")))
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith(("layer3", "fc")))
    with pytest.raises(ValueError, match="up_to"):
        cnn.freeze(model, up_to="layer9")
    cnn.unfreeze(model)
    assert cnn.trainable_parameters(model) == sum(p.numel() for p in model.parameters())

    # Linear probing: only the head trains, and a frozen BN keeps its statistics under train().
    small = tiny_resnet().to(device)
    cnn.freeze(small)
    assert cnn.trainable_parameters(small) == 8 * 3 + 3
    bn = small[0][1]
    before = bn.running_mean.clone()
    small.train()
    small(torch.randn(4, 1, 6, 6, device=device)).sum().backward()
    assert torch.equal(bn.running_mean, before) and bn.weight.grad is None
    assert small[-1].weight.grad is not None
    cnn.unfreeze(small)
    small.train()
    small(torch.randn(4, 1, 6, 6, device=device))
    assert not torch.equal(bn.running_mean, before)


def test_finetune_demo_runs(device):
    pytest.importorskip("sklearn")
    from cnn import finetune

    results = finetune.run(pretrain_images=10, pretrain_epochs=1, labels_per_class=1, epochs=1,
                           test_images=5, width=4, batch=10, device=device)
    assert set(results) == {"linear probe", "fine-tune", "from scratch", "pretrain"}
    for r in results.values():
        assert 0.0 <= r["accuracy"] <= 1.0 and math.isfinite(r["seconds"])
    assert results["linear probe"]["trainable"] < results["fine-tune"]["trainable"]


@pytest.mark.parametrize("name,image,fed", [("lenet5", None, "1x32x32"), ("squeezenet1_1", 17, "3x17x17")])
def test_finetune_demo_takes_a_model_by_name(name, image, fed, monkeypatch, capsys):
    """The demo's plumbing for named builders: grey 32x32 input for LeNet-5, resized 3-channel input
    for the rest, SqueezeNet's convolutional head replaced, GoogLeNet without auxiliary heads. Its
    convolutions run as F.conv2d here (full widths under the interpreter take minutes; kernels.conv2d
    is held to F.conv2d by its own tests)."""
    pytest.importorskip("sklearn")
    import kernels
    from cnn import finetune

    monkeypatch.setattr(kernels, "conv2d", lambda x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *,
                        algorithm="auto": F.conv2d(x, w, b, stride, padding, dilation, groups))
    assert finetune.input_format(name) == ((1, 32) if name == "lenet5" else (3, 32))
    results = finetune.run(pretrain_images=10, pretrain_epochs=1, labels_per_class=2, epochs=1, test_images=10,
                           batch=10, model=name, image=image, device="cpu")
    assert f"pretrained {name} on digits 0-4 ({fed})" in capsys.readouterr().out
    for r in results.values():
        assert 0.0 <= r["accuracy"] <= 1.0 and math.isfinite(r["seconds"])
    assert results["linear probe"]["trainable"] < results["fine-tune"]["trainable"]
    with pytest.raises(ValueError, match="unknown model"):
        finetune.build_model("resnet7", 5)
    with torch.device("meta"):
        assert finetune.build_model("googlenet", 5).aux1 is None
        assert finetune.build_model("inception_v3", 5).AuxLogits is None
    assert finetune.input_format("alexnet") == (3, 63) and finetune.input_format("inception_v3", 96) == (3, 96)
