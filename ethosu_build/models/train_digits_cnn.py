"""Train DigitsCNN (or DigitsGated) on the digits train split and write the weights to --out.

    python -m ethosu_build.models.train_digits_cnn --out digits_cnn.pt [--model cnn|gated]

Seeded and single-threaded, so a rerun on the same machine and torch writes the same file; on
another machine the floats may differ in the last bits, so the shipped weights are never
overwritten: every digits build's bytes (and the published recipe shas) rest on them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from ethosu_build.data import digits
from ethosu_build.models import DIGITS_CNN_WEIGHTS, DIGITS_GATED_WEIGHTS
from ethosu_build.models.digits_net import DigitsCNN, DigitsGated

SEED, EPOCHS, BATCH, LR = 0, 30, 64, 3e-3


def _loss(model, x, y):
    if isinstance(model, DigitsGated):  # both heads learn every image; the gate only routes
        f = torch.flatten(model.blocks(x), 1)
        return nn.functional.cross_entropy(model.head_low(f), y) + nn.functional.cross_entropy(model.head_high(f), y)
    return nn.functional.cross_entropy(model(x), y)


def train(gated: bool = False) -> tuple[nn.Module, float]:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    train_set, test_set = digits("train"), digits("test")
    model = DigitsGated() if gated else DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(train_set), generator=gen).split(BATCH):
            opt.zero_grad()
            _loss(model, train_set.x[idx], train_set.y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        if gated:
            model.threshold.copy_(model.gate_values(train_set.x).median())
        acc = (model(test_set.x).argmax(1) == test_set.y).float().mean().item()
    return model, acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("cnn", "gated"), default="cnn")
    parser.add_argument("--out", required=True, help="where to write the weights (never the shipped file)")
    args = parser.parse_args()
    shipped = {DIGITS_CNN_WEIGHTS.resolve(), DIGITS_GATED_WEIGHTS.resolve()}
    if Path(args.out).resolve() in shipped:
        parser.error(f"--out {args.out}: the shipped weights; accepted: any other path (they key every digits build)")
    model, acc = train(args.model == "gated")
    torch.save(model.state_dict(), args.out)
    print(f"wrote {args.out}; float top-1 on the test split: {acc:.4f}")


if __name__ == "__main__":
    main()
