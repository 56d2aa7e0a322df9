"""Small models for the lowering-option tests, named by `model.factory._target_`."""

from __future__ import annotations

import torch


class PoolHead(torch.nn.Module):
    """Conv features, an average pool whose one window skips the map's last row (ds_cnn's
    pattern: an (11, 6) kernel on a 12x6 map), and a classifier. The pool's kernel is over
    8 and ExecuTorch pads/crops it, so on Ethos-U55 it stays on the CPU unless rewritten."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.pool = torch.nn.AvgPool2d((11, 6))
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


class ConvFeatures(torch.nn.Module):
    """Convolutions only: a 4-D output, which follows the input's layout."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


def pool_head():
    torch.manual_seed(0)
    return PoolHead().eval()


def conv_features():
    torch.manual_seed(0)
    return ConvFeatures().eval()


class StridedFirstConv(torch.nn.Module):
    """A keyword-spotting style first layer: a strided convolution over a 1-channel map."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, (6, 4), stride=2, padding=(3, 1))
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 11 * 5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


def strided_first_conv():
    torch.manual_seed(0)
    model = StridedFirstConv()
    with torch.no_grad():  # statistics as a trained network has, so the fold matters
        model.bn.running_mean.uniform_(-0.1, 0.1)
        model.bn.running_var.uniform_(0.5, 1.5)
    return model.eval()
