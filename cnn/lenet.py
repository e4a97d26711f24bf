"""LeNet-5 (LeCun et al. 1998) in its modern form: ReLU and 2x2 max-pooling; torchvision has none.

On a 32x32 single-channel image: C1 5x5 conv to 6 maps (28x28), pool, C3 5x5 conv to 16 maps
(10x10, every map connected to all six inputs), pool, C5 5x5 conv to 120 (1x1), F6 linear to 84,
and a linear output layer. 61,706 parameters and 416,520 multiply-accumulates for 10 classes.
The 1998 original differs: scaled tanh, trainable sub-sampling, C3's sparse connection table and
RBF outputs (about 60,000 parameters); this is the form the lectures and most code use.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .conv import Conv2d
from .layers import no_pretrained_weights


class LeNet5(nn.Module):
    """``features`` (C1, pool, C3, pool, C5, each conv followed by ReLU), ``classifier`` (F6, output).

    ``in_channels`` = 3 takes colour images (CIFAR-10); the input must be 32x32 (C5 reduces 5x5 to 1x1).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            Conv2d(in_channels, 6, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            Conv2d(6, 16, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            Conv2d(16, 120, kernel_size=5),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def lenet5(*, weights=None, progress: bool = True, **kwargs) -> LeNet5:
    no_pretrained_weights(weights, "lenet5")
    return LeNet5(**kwargs)
