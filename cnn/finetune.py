"""Transfer learning end to end on real data, no download: ``python -m cnn.finetune``.

scikit-learn's digits (8x8 grey images) are split by class: a small ResNet is pretrained on
digits 0-4, then three ways of learning digits 5-9 from a few labels are compared on held-out
images: linear probing (frozen backbone, new head), full fine-tuning, and training from scratch.
Every convolution, forward and backward, runs on ``kernels`` (on the CPU through Triton's
interpreter when there is no GPU, so the defaults are small; raise them on a GPU).

``--model NAME`` runs any ``cnn`` builder instead (``cnn.MODELS``: ``resnet18``, ``densenet121``,
``efficientnet_b0``, ``lenet5``, ...): the digits are resized to ``--image`` pixels (default 32,
or the model's minimum input size when larger) and repeated to 3 channels (LeNet-5 takes them
grey), and GoogLeNet / Inception v3 are built without their auxiliary classifiers. Full-width
networks are for a GPU; under the interpreter they take hours.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def _require_a_device() -> None:
    """Our kernels need a GPU or Triton's CPU interpreter, which must be switched on before triton
    is imported; library code never switches it on itself (``make demo`` does on CPU machines)."""
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return
    sys.exit("cnn.finetune: no GPU. Run it under Triton's CPU interpreter: "
             "`TRITON_INTERPRET=1 python -m cnn.finetune` (or `make demo`).")


class SmallResNet(nn.Module):
    """A ResNet for 8x8 images: 3x3/2 stem, two BasicBlock stages (the second strided), pooled ``fc``."""

    def __init__(self, num_classes: int, width: int = 8):
        super().__init__()
        from .layers import ConvNormActivation, init_weights
        from .resnet import BasicBlock, conv1x1

        self.stem = ConvNormActivation(1, width, kernel_size=3, stride=2)
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2, downsample=nn.Sequential(
            conv1x1(width, 2 * width, stride=2), nn.BatchNorm2d(2 * width)))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)
        init_weights(self, linear_std=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# Builder arguments the demo passes by model name (the main head is the one it trains).
DEMO_ARGUMENTS = {"googlenet": {"aux_logits": False}, "inception_v3": {"aux_logits": False}}


def build_model(name: Optional[str], num_classes: int, width: int = 8) -> nn.Module:
    """``SmallResNet`` (``name=None``) or the ``cnn`` builder ``name`` with ``num_classes`` outputs."""
    from importlib import import_module

    from . import MODELS

    if name is None:
        return SmallResNet(num_classes, width)
    if name not in MODELS:
        raise ValueError(f"finetune: unknown model={name!r}; expected one of {list(MODELS)}")
    builder = getattr(import_module(__package__), name)
    return builder(num_classes=num_classes, **DEMO_ARGUMENTS.get(name, {}))


def input_format(name: Optional[str], image: Optional[int] = None) -> Tuple[int, int]:
    """(channels, size) of the images model ``name`` is fed: the digits' own 1 x 8 x 8 for the small
    ResNet, else ``image`` (default 32) raised to the model's minimum, 3 channels (1 for LeNet-5)."""
    from . import MIN_INPUT_SIZE

    if name is None:
        return 1, image or 8
    size = max(image or 32, MIN_INPUT_SIZE.get(name, 1))
    return (1 if name == "lenet5" else 3), size


def load_digits_split(device, channels: int = 1, size: int = 8) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """Digits 0-4 (labels 0-4) and 5-9 (relabelled 0-4), each split in half into train and test,
    as ``channels`` x ``size`` x ``size`` images (bilinear resize, grey repeated)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = (images - images.mean()) / images.std()
    if size != images.shape[-1]:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images.expand(-1, channels, -1, -1).contiguous()
    labels = torch.tensor(data.target)
    generator = torch.Generator().manual_seed(0)
    out = {}
    for task, low in (("source", 0), ("target", 5)):
        idx = torch.nonzero((labels >= low) & (labels < low + 5)).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        half = len(idx) // 2
        for split, part in (("train", idx[:half]), ("test", idx[half:])):
            out[f"{task}_{split}"] = (images[part].to(device), (labels[part] - low).to(device))
    return out


def few_labels(x: torch.Tensor, y: torch.Tensor, per_class: int) -> Tuple[torch.Tensor, torch.Tensor]:
    keep = torch.cat([torch.nonzero(y == c).flatten()[:per_class] for c in range(int(y.max()) + 1)])
    return x[keep], y[keep]


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch: int) -> float:
    """SGD with momentum on the trainable parameters; returns the seconds it took."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(1)
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for i in range(0, len(x), batch):
            part = order[i:i + batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[part]), y[part]).backward()
            opt.step()
    return time.perf_counter() - start


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    model.eval()
    correct = sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item() for i in range(0, len(x), batch))
    return correct / len(x)


def run(pretrain_images: int = 75, pretrain_epochs: int = 2, labels_per_class: int = 5, epochs: int = 5,
        test_images: int = 100, width: int = 8, batch: int = 15, seed: int = 0, device=None,
        model: Optional[str] = None, image: Optional[int] = None) -> Dict[str, dict]:
    """The whole demo; returns {method: {"accuracy", "seconds", "trainable"}} and prints a table.

    ``model``: a ``cnn`` builder's name instead of the small ResNet (``width`` then unused);
    ``image``: the input size it is fed (see ``input_format``).
    """
    from . import conv, transfer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    channels, size = input_format(model, image)
    data = load_digits_split(device, channels, size)
    x_src, y_src = (t[:pretrain_images] for t in data["source_train"])
    x_tgt, y_tgt = few_labels(*data["target_train"], labels_per_class)
    x_test, y_test = (t[:test_images] for t in data["target_test"])

    backbone = build_model(model, num_classes=5, width=width).to(device)
    convs = sum(isinstance(m, nn.Conv2d) for m in backbone.modules())
    if conv.count_converted(backbone) != convs:
        raise RuntimeError("finetune: every convolution of the demo model should be a cnn.Conv2d")
    pretrain_s = train(backbone, x_src, y_src, pretrain_epochs, lr=0.05, batch=batch)
    source_acc = accuracy(backbone, *(t[:test_images] for t in data["source_test"]))
    print(f"pretrained {model or 'a small ResNet'} on digits 0-4 ({channels}x{size}x{size}): "
          f"{len(x_src)} images x {pretrain_epochs} epochs in {pretrain_s:.1f} s, "
          f"held-out accuracy {source_acc:.1%}")
    print(f"target task: digits 5-9 from {labels_per_class} labels per class ({len(x_tgt)} images), "
          f"{epochs} epochs ({3 * epochs} for the linear probe), tested on {len(x_test)} held-out images\n")

    results = {}
    for method in ("linear probe", "fine-tune", "from scratch"):
        torch.manual_seed(seed + 1)
        if method == "from scratch":
            learner = build_model(model, num_classes=5, width=width).to(device)
        else:
            learner = transfer.replace_head(copy.deepcopy(backbone), 5)
            if method == "linear probe":
                transfer.freeze(learner)
        # A probe trains only the head: no backward through the convolutions, so it affords more epochs.
        lr, method_epochs = (0.5, 3 * epochs) if method == "linear probe" else (0.05, epochs)
        seconds = train(learner, x_tgt, y_tgt, method_epochs, lr=lr, batch=batch)
        results[method] = {"accuracy": accuracy(learner, x_test, y_test), "seconds": seconds,
                           "trainable": transfer.trainable_parameters(learner)}
    print(f"{'method':<14} {'trainable params':>16} {'train s':>8} {'accuracy':>9}")
    for method, r in results.items():
        print(f"{method:<14} {r['trainable']:>16,} {r['seconds']:>8.1f} {r['accuracy']:>9.1%}")
    results["pretrain"] = {"accuracy": source_acc, "seconds": pretrain_s, "trainable": None}
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-images", type=int, default=75)
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--labels-per-class", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--test-images", type=int, default=100)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--batch", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="a cnn builder's name (cnn.MODELS) instead of the small ResNet")
    parser.add_argument("--image", type=int, help="input size for --model (default 32, or the model's minimum)")
    args = parser.parse_args(argv)
    start, cpu_start = time.perf_counter(), time.process_time()
    mode = "GPU" if torch.cuda.is_available() else "CPU, Triton interpreter"
    print(f"cnn.finetune on {mode}\n")
    run(args.pretrain_images, args.pretrain_epochs, args.labels_per_class, args.epochs, args.test_images,
        args.width, args.batch, args.seed, model=args.model, image=args.image)
    print(f"\ntotal {time.perf_counter() - start:.1f} s wall, {time.process_time() - cpu_start:.1f} s CPU")


if __name__ == "__main__":
    _require_a_device()
    main()
