"""AlexNet (Krizhevsky et al. 2012) as torchvision has it: the single-tower "one weird trick" variant.

Five convolutions (11x11/4, 5x5, three 3x3) with ReLU and three 3x3/2 max-pools, then three
linear layers with dropout. torchvision's (and so ours) has 64, 192, 384, 256, 256 filters,
not the paper's 96, 256, 384, 384, 256 split over two GPUs: its CONV1 holds 23,296 parameters
(the paper's 96-filter CONV1 on 227x227 holds 34,944). 61,100,840 parameters and 0.714 GMACs
at 224x224; inputs of at least 63x63.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .conv import Conv2d
from .layers import no_pretrained_weights


class AlexNet(nn.Module):
    """``features`` (conv/ReLU/max-pool), adaptive average pool to 6x6, ``classifier`` (9216-4096-4096-classes)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def alexnet(*, weights=None, progress: bool = True, **kwargs) -> AlexNet:
    no_pretrained_weights(weights, "alexnet")
    return AlexNet(**kwargs)
