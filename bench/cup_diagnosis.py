"""Why does the fundus cup barely answer clicks? Evidence for the source-models issue.

For a fundus checkpoint and the ``r2_`` images of RIM-ONE DL's test split (the source validation
images), with the ``oaims`` simulated user (seed 0, 10 clicks, no adaptation):

- how large the predicted cup is against the expert cup after the first click (over-segmentation);
- which classes the user's clicks carry, and what each kind of click does to the cup Dice (the
  *response*: mean change of cup Dice caused by that click);
- for the training-time click sampler on the training images: the share of clicks of each class and
  how many of them are *rim clicks inside the predicted cup* (the only clicks that teach the network to
  shrink a cup).

Usage: ``python bench/cup_diagnosis.py CHECKPOINT [--limit N] [--output FILE.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.adaptation.strategies import make_strategy
from clickadapt.clicks.click import Click
from clickadapt.clicks.encoding import model_input
from clickadapt.clicks.simulators import make_simulated_user
from clickadapt.clicks.training_sampler import sample_training_clicks
from clickadapt.data.registry import DatasetConfig, load_samples
from clickadapt.evaluation.metrics import region_dice
from clickadapt.models.checkpoint import load_checkpoint

RIM, CUP = 1, 2


def user_response(checkpoint: Path, limit: int | None, budget: int = 10) -> dict[str, Any]:
    """Cup size after click 1 and the cup-Dice change caused by each class of click."""
    loaded = load_checkpoint(checkpoint)
    sigma = loaded.meta.preprocessing.click_sigma
    size = loaded.meta.preprocessing.image_size(loaded.task.name)
    samples = load_samples(
        DatasetConfig(reader="rimone-dl", split="test", domains=["r2"], size=size, limit=limit),
        cache_dir=Path(".cache/clickadapt"),
    )
    state = ModelState(loaded.model, loaded.task, make_strategy("frozen", loaded.task), "cpu")
    ratios, first_cup = [], []
    response: dict[str, list[float]] = {"background": [], "rim": [], "cup": [], "rim inside predicted cup": []}
    click_classes: Counter[str] = Counter()
    names = {0: "background", RIM: "rim", CUP: "cup"}
    for sample in samples:
        user = make_simulated_user("oaims", 0)
        session = InteractiveSession(state, click_sigma=sigma, undo_depth=0)
        session.set_image(sample.image, image_id=sample.key)
        click: Click | None = user.first_click(sample.label)
        previous: np.ndarray | None = None
        while click is not None and len(session.clicks) < budget:
            prediction = session.add_click(click)
            cup = region_dice(prediction, sample.label, loaded.task)["cup"]
            if previous is None:
                ratios.append(float((prediction == CUP).sum()) / max(1, int((sample.label == CUP).sum())))
                first_cup.append(cup)
            else:
                before = region_dice(previous, sample.label, loaded.task)["cup"]
                response[names[click.label]].append(cup - before)
                click_classes[names[click.label]] += 1
                if click.label == RIM and previous[click.row, click.col] == CUP:
                    response["rim inside predicted cup"].append(cup - before)
            previous = prediction
            click = user.next_click(sample.label, prediction)
    return {
        "images": len(samples),
        "cup_dice@1": float(np.mean(first_cup)),
        "cup_area_ratio@1_median": float(np.median(ratios)),
        "cup_area_ratio@1_share_over_1.5": float(np.mean(np.asarray(ratios) > 1.5)),
        "correction_clicks": dict(click_classes),
        "cup_dice_change_per_click": {k: (float(np.mean(v)) if v else None, len(v)) for k, v in response.items()},
    }


def sampler_clicks(checkpoint: Path, batches: int = 20) -> dict[str, Any]:
    """Class shares of the training-time click sampler, and rim clicks that land inside the predicted cup."""
    loaded = load_checkpoint(checkpoint)
    sigma = loaded.meta.preprocessing.click_sigma
    size = loaded.meta.preprocessing.image_size(loaded.task.name)
    samples = load_samples(
        DatasetConfig(reader="rimone-dl", split="train", domains=["r2"], size=size), cache_dir=Path(".cache/clickadapt")
    )
    rng = np.random.default_rng(0)
    counts: Counter[str] = Counter()
    for batch in range(batches):
        chosen = [samples[(batch * 8 + i) % len(samples)] for i in range(8)]
        images = torch.stack([torch.as_tensor(s.image) for s in chosen])
        labels = torch.stack([torch.as_tensor(s.label) for s in chosen]).long()
        clicks = sample_training_clicks(loaded.model, images, labels, 3, rng, click_sigma=sigma)
        with torch.no_grad():
            first = torch.stack([model_input(images[i], clicks[i][:1], 3, sigma) for i in range(8)])
            predictions = loaded.model(first).argmax(1).numpy()
        for index, element in enumerate(clicks):
            for click in element[1:]:
                counts[{0: "background", RIM: "rim", CUP: "cup"}[click.label]] += 1
                if click.label == RIM and predictions[index][click.row, click.col] == CUP:
                    counts["rim inside predicted cup"] += 1
                if click.label == CUP and predictions[index][click.row, click.col] != CUP:
                    counts["cup outside predicted cup"] += 1
    total = sum(counts[k] for k in ("background", "rim", "cup"))
    return {"correction_clicks": total, **{k: v / total for k, v in counts.items()}}


def main(argv: list[str] | None = None) -> int:
    """Print (and optionally write) the diagnosis as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--limit", type=int, default=None, help="first N validation images (default all 84)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = {
        "checkpoint": str(args.checkpoint),
        "user": user_response(args.checkpoint, args.limit),
        "training_sampler": sampler_clicks(args.checkpoint),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
