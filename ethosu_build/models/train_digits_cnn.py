"""Train DigitsCNN on the digits train split and write the shipped weights.

    python -m ethosu_build.models.train_digits_cnn [--out PATH]

Seeded and single-threaded, so a rerun with the same torch writes the same file.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from ethosu_build.data import digits
from ethosu_build.models import DIGITS_CNN_WEIGHTS
from ethosu_build.models.digits_net import DigitsCNN

SEED, EPOCHS, BATCH, LR = 0, 30, 64, 3e-3


def train() -> tuple[DigitsCNN, float]:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    train_set, test_set = digits("train"), digits("test")
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(train_set), generator=gen).split(BATCH):
            opt.zero_grad()
            nn.functional.cross_entropy(model(train_set.x[idx]), train_set.y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(test_set.x).argmax(1) == test_set.y).float().mean().item()
    return model, acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DIGITS_CNN_WEIGHTS))
    args = parser.parse_args()
    model, acc = train()
    torch.save(model.state_dict(), args.out)
    print(f"wrote {args.out}; float top-1 on the test split: {acc:.4f}")


if __name__ == "__main__":
    main()
