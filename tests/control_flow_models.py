"""Small models with control flow for the tests, shaped like ExecuTorch's own Arm tests
(backends/arm/test/ops/test_while.py): named by `model.factory._target_` in test configs."""

from __future__ import annotations

import torch


class HalveUntilSmall(torch.nn.Module):
    """A 1x1 convolution, then halve the activations while their sum exceeds `limit`: inputs
    whose features are already small never run the loop body."""

    def __init__(self, limit: float = 8.0):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 1)
        self.register_buffer("limit", torch.tensor((limit,)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def cond_fn(value: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
            return torch.gt(value.sum(), limit).squeeze()

        def body_fn(value: torch.Tensor, limit: torch.Tensor):
            return torch.mul(value, 0.5), limit.clone()

        value, _ = torch.ops.higher_order.while_loop(cond_fn, body_fn, (torch.relu(self.conv(x)), self.limit), ())
        return value


def halve_until_small(limit: float = 8.0):
    return HalveUntilSmall(limit).eval()
