"""Study for issue 13: a full-resolution boundary refiner on top of the frozen shipped brain model.

The shipped brain network runs on a 128 px grid for 256 px slices and its logits are up-sampled
bilinearly (``clickadapt.models.resized``); even the expert mask loses 1.3 Dice points through that grid,
and 78 % of the pixels still wrong after 10 clicks lie within 2 px of the expert outline
(bench/results/brain_errors.md). Cascade refiners (CascadePSP, FocalClick's refiner, SegFix) fix such
boundary errors at full resolution with a small network that sees the coarse prediction and the image.

Here: a head of a few 3 × 3 convolutions (dilations 1, 2, 4, 1) at the slice's 256 px, fed the image
channel, the click maps and the shipped model's lesion probability, adds a residual to the shipped logits
(last layer zero-initialised, so the refined model starts as the shipped one). Only the head trains; the
base stays frozen. Training data, augmentation, loss and click sampler settings are
``configs/train_brain.yaml``'s, the clicks placed by the frozen base (``sample_clicks_in_rounds``, the last
``--rounds`` clicks one round at a time on the largest error).

Measured 2026-12-03 (Intel Xeon 2-core VM, torch 2 threads; ``train`` with its defaults, stopped after 2 epochs
for the MONAI-network candidates' training): validation (200 slices / 15 patients, ``oaims``, click seed 0)
Dice@1/5/10 after epoch 0: 81.8 / 88.9 / 91.0, after epoch 1: 81.7 / 88.4 / 91.0; the shipped model alone, same
seed: 91.0 at click 10. The head learnt nothing that moves the Dice (loss 0.0519 → 0.0508); the refined
forward costs 15 ms against the shipped 9 ms (256 px slice).

Run: ``python bench/brain_refiner.py train`` (``runs/brain-refiner``; the epoch with the best validation
Dice@10 of click seed 0 is kept), then
``python bench/brain_refiner.py evaluate --set validation --seeds 0,1,2`` (also ``train``, ``HT``).
Nothing here is shipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))

from brain_candidates import evaluation_samples, lesion_dice, print_dice
from clickadapt.clicks.encoding import model_input
from clickadapt.models.checkpoint import load_checkpoint
from clickadapt.training.augment import build_augmentation
from clickadapt.training.click_rounds import sample_clicks_in_rounds
from clickadapt.training.config import load_training_config
from clickadapt.training.trainer import AugmentedSamples, load_datasets
from models import BRAIN_V2

CONFIG = Path("configs/train_brain.yaml")
OUTPUT = Path("runs/brain-refiner")


class BoundaryRefiner(nn.Module):
    """The base model's logits plus a residual from a small full-resolution head."""

    def __init__(self, base: nn.Module, in_channels: int, width: int = 16, dilations: tuple[int, ...] = (1, 2, 4, 1)):
        super().__init__()
        self.base = base
        layers: list[nn.Module] = []
        channels = in_channels + 1
        for dilation in dilations:
            layers += [nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
            channels = width
        last = nn.Conv2d(width, 2, 1)
        nn.init.zeros_(last.weight)
        assert last.bias is not None
        nn.init.zeros_(last.bias)
        self.head = nn.Sequential(*layers, last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.base(x)
        probability = logits.softmax(1)[:, 1:2]
        residual: torch.Tensor = self.head(torch.cat([x, probability], 1))
        return logits + residual


def build(width: int) -> tuple[BoundaryRefiner, float]:
    """The refiner around the frozen shipped model, and the click sigma."""
    loaded = load_checkpoint(BRAIN_V2)
    base = loaded.model.eval()
    for parameter in base.parameters():
        parameter.requires_grad_(False)
    channels = 1 + loaded.task.num_classes
    return BoundaryRefiner(base, channels, width), loaded.meta.preprocessing.click_sigma


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(2)
    config = load_training_config(CONFIG)
    task = load_checkpoint(BRAIN_V2).task
    model, sigma = build(args.width)
    samples = load_datasets(config.train_data)
    validation = evaluation_samples("validation")
    augmentation = build_augmentation(config.augmentation, colour=False)
    dataset = AugmentedSamples(samples, augmentation)
    criterion = config.loss.build()
    optimiser = torch.optim.Adam(model.head.parameters(), lr=args.lr)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    log = OUTPUT / "train_log.jsonl"
    log.write_text("")
    best, started = -1.0, time.perf_counter()
    for epoch in range(args.epochs):
        augmentation.set_random_state(seed=epoch)
        rng = np.random.default_rng([0, epoch])
        loader = DataLoader(
            dataset, batch_size=8, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(epoch)
        )
        losses = []
        for images, labels in loader:
            with torch.no_grad():
                clicks = sample_clicks_in_rounds(
                    model.base,
                    images,
                    labels,
                    task.num_classes,
                    rng,
                    max_clicks=config.clicks.max_clicks,
                    click_sigma=sigma,
                    split_area=config.clicks.split_area,
                    largest_error_share=args.largest_share,
                    iterative_clicks=args.rounds,
                )
            inputs = torch.stack(
                [model_input(i, c, task.num_classes, sigma) for i, c in zip(images, clicks, strict=True)]
            )
            model.head.train()
            loss = criterion(model(inputs), labels, clicks)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.item()))
            if time.perf_counter() - started > 60 * args.max_minutes:
                break
        model.eval()
        dice = lesion_dice(model, task, validation, 0, sigma)
        record = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "dice@1/5/10": dice,
            "minutes": (time.perf_counter() - started) / 60,
        }
        print(record, flush=True)
        with log.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if dice[2] > best:
            best = dice[2]
            torch.save({"head": model.head.state_dict(), "epoch": epoch, "width": args.width}, OUTPUT / "best.pt")
        if time.perf_counter() - started > 60 * args.max_minutes:
            break


def evaluate(args: argparse.Namespace) -> None:
    torch.set_num_threads(2)
    state = torch.load(Path(args.checkpoint), weights_only=False)
    model, sigma = build(int(state["width"]))
    model.head.load_state_dict(state["head"])
    model.eval()
    print(f"epoch {state['epoch']}")
    print_dice(model, load_checkpoint(BRAIN_V2).task, args.set, args.seeds, sigma)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    training = commands.add_parser("train")
    training.add_argument("--epochs", type=int, default=12)
    training.add_argument("--lr", type=float, default=1e-3)
    training.add_argument("--width", type=int, default=16)
    training.add_argument("--rounds", type=int, default=3)
    training.add_argument("--largest-share", type=float, default=0.5)
    training.add_argument("--max-minutes", type=float, default=60)
    scoring = commands.add_parser("evaluate")
    scoring.add_argument("--set", choices=("train", "validation", "HT"), default="validation")
    scoring.add_argument("--seeds", default="0")
    scoring.add_argument("--checkpoint", default=str(OUTPUT / "best.pt"))
    args = parser.parse_args()
    train(args) if args.command == "train" else evaluate(args)


if __name__ == "__main__":
    main()
