"""Conv layers of real networks, derived from the architecture (each unique layer once, with its count)."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Layer:
    name: str
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: int = 1
    padding: int = 0
    groups: int = 1

    @property
    def weight_shape(self):
        return (self.k, self.c // self.groups, self.r, self.s)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def resnet50_layers(image: int = 224):
    """(layer, count) for ResNet-50's convolutions at ``image``x``image`` input (torchvision's
    v1.5: the stride sits on each bottleneck's 3x3)."""
    unique: "OrderedDict[tuple, list]" = OrderedDict()

    def add(name, c, size, k, kernel, stride, padding):
        layer = Layer(name, c, size, size, k, kernel, kernel, stride, padding)
        shape = (c, size, k, kernel, stride, padding)
        unique.setdefault(shape, [layer, 0])[1] += 1
        return _conv_out(size, kernel, stride, padding)

    size = add("conv1", 3, image, 64, 7, 2, 3)
    size = _conv_out(size, 3, 2, 1)  # max pool
    in_ch = 64
    for stage, (width, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=1):
        for block in range(blocks):
            s = stride if block == 0 else 1
            prefix = f"layer{stage}.{block}"
            add(f"{prefix}.conv1", in_ch, size, width, 1, 1, 0)
            out = add(f"{prefix}.conv2", width, size, width, 3, s, 1)
            add(f"{prefix}.conv3", width, out, width * 4, 1, 1, 0)
            if block == 0:
                add(f"{prefix}.downsample", in_ch, size, width * 4, 1, s, 0)
            in_ch = width * 4
            size = out
    return [(layer, count) for layer, count in unique.values()]
