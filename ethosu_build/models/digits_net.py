"""DigitsCNN: three conv blocks and a linear head for 1x8x8 digit images; DigitsGated: the
same trunk with two heads, one chosen per image by torch.cond; DigitsMasked: DigitsCNN with a
second, bool input masking the classes."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, pool: bool):
        layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)


class DigitsCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.blocks = nn.Sequential(
            ConvBlock(1, 16, pool=False),  # 16x8x8
            ConvBlock(16, 32, pool=True),  # 32x4x4
            ConvBlock(32, 32, pool=True),  # 32x2x2
        )
        self.head = nn.Linear(32 * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.blocks(x), 1))


class DigitsGated(nn.Module):
    """DigitsCNN's trunk, then one of two linear heads chosen by `torch.cond` on the trunk's
    mean activation: a data-dependent branch, so calibration must reach both heads.

    The deployed program (batch 1) holds the cond. At batch > 1 the same choice is made per
    image with torch.where, so evaluation and training can run in batches; both forms compute
    the same function. Nothing stateful (BatchNorm) sits inside the branches: the quantizer's
    submodule path cannot fold it there."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.blocks = DigitsCNN(num_classes).blocks
        self.head_low = nn.Linear(32 * 2 * 2, num_classes)
        self.head_high = nn.Linear(32 * 2 * 2, num_classes)
        # Set after training to the median gate value of the training images, so about half
        # of them take each branch.
        self.register_buffer("threshold", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.flatten(self.blocks(x), 1)
        if f.shape[0] == 1:
            return torch.cond(f.mean() > self.threshold, self.head_high, self.head_low, (f,))
        gate = f.mean(1, keepdim=True) > self.threshold
        return torch.where(gate, self.head_high(f), self.head_low(f))

    def gate_values(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.blocks(x), 1).mean(1)


class DigitsMasked(nn.Module):
    """DigitsCNN with a second input of another dtype: a bool mask of the classes allowed
    for this image (a model taking a mask). A class the mask rules out gets the logit
    `floor`, so it cannot win."""

    def __init__(self, num_classes: int = 10, floor: float = -8.0):
        super().__init__()
        self.net = DigitsCNN(num_classes)
        self.floor = floor

    def forward(self, image: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        logits = self.net(image)
        return torch.where(allowed, logits, torch.full_like(logits, self.floor))


def load_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
