"""DigitsCNN: three conv blocks and a linear head for 1x8x8 digit images."""

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


def load_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
