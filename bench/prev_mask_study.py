"""Study for issue 13: does the previous mask as an extra network input lift the brain Dice after 10 clicks?

The shipped brain model sees the image and the click maps only, so click ``k`` is answered from scratch. Where
the Dice@10 is lost (bench/results/models.md, model card) the model paints a large false positive over faint
FLAIR signal that background clicks, each a local Gaussian, do not remove. Interactive models since RITM
(Sofiiuk et al., 2022) also feed the previous prediction, so that a click corrects *that* mask.

This script tests the idea without touching the package (nothing here is shipped):

1. ``train``: copy the shipped brain model, widen its first convolution by one input channel (the previous
   foreground mask) initialised to zero — so the copy starts exactly as the shipped model — and fine-tune it
   with the data, augmentation, loss and click settings of a training config (default
   ``configs/train_brain_rounds5.yaml``). Each batch: the paper sampler's clicks, then the last clicks of each
   budget placed one round at a time on the largest error of the prediction so far, each round fed the
   previous round's mask; the trained forward sees all clicks and the mask before the last click.
2. ``evaluate``: the ``oaims`` user clicks 10 times per image, exactly as ``clickadapt.evaluation.stream``
   does, with the previous click's mask fed back; 3 click seeds, the validation patients (selection set) and
   HT FLAIR (another site, never used for selection). ``--shipped`` evaluates the shipped model with the same
   loop (a check that the loop reproduces bench/results/models.md).

Run: ``python bench/prev_mask_study.py train --epochs 16`` then ``python bench/prev_mask_study.py evaluate``;
results go to ``bench/results/prev_mask_study.json``;
``python bench/prev_mask_study.py report`` writes ``bench/results/prev_mask_study.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clickadapt.clicks.click import Click
from clickadapt.clicks.encoding import model_input
from clickadapt.clicks.simulators import make_simulated_user
from clickadapt.clicks.training_sampler import sample_training_clicks
from clickadapt.data.registry import load_samples
from clickadapt.data.sample import Sample
from clickadapt.evaluation.machine import cpu_and_versions
from clickadapt.evaluation.metrics import region_dice
from clickadapt.evaluation.statistics import bootstrap_mean
from clickadapt.evaluation.stream import image_click_seed
from clickadapt.models.checkpoint import load_checkpoint
from clickadapt.tasks import TaskSpec
from clickadapt.training.augment import build_augmentation
from clickadapt.training.click_rounds import largest_error_click
from clickadapt.training.config import load_training_config
from clickadapt.training.trainer import AugmentedSamples, load_datasets
from models import BRAIN_V2, CACHE, EVALUATION_SETS

OUTPUT = Path("runs/prev-mask")
RESULTS = Path("bench/results/prev_mask_study.json")
REPORT = Path("bench/results/prev_mask_study.md")
SHIPPED_NAME = "shipped brain-v2 (this loop)"
DICE_KEYS = ("dice@1", "dice@5", "dice@10")
SEEDS = (0, 1, 2)
THREADS = 2


def widen_first_convolution(model: nn.Module, extra: int) -> None:
    """Give the first ``Conv2d`` of ``model`` ``extra`` more input channels with zero weights (output unchanged)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            weight = module.weight.data
            module.weight = nn.Parameter(
                torch.cat([weight, weight.new_zeros(weight.shape[0], extra, *weight.shape[2:])], 1)
            )
            module.in_channels += extra
            return
    raise ValueError("the model has no Conv2d")


def foreground(prediction: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` class indices → ``(B, 1, H, W)`` float foreground mask."""
    return (prediction > 0).float().unsqueeze(1)


class WithMask(nn.Module):
    """Call a widened network with a fixed previous mask (zeros: "no mask yet")."""

    def __init__(self, network: nn.Module, mask: torch.Tensor | None = None) -> None:
        super().__init__()
        self.network = network
        self.mask = mask

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        mask = self.mask if self.mask is not None else inputs.new_zeros(inputs.shape[0], 1, *inputs.shape[2:])
        logits: torch.Tensor = self.network(torch.cat([inputs, mask], 1))
        return logits


def training_clicks(
    network: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    task: TaskSpec,
    rng: np.random.Generator,
    settings: Any,
) -> tuple[list[list[Click]], torch.Tensor]:
    """Clicks of one batch (the last ones placed round by round) and the mask before each element's last click."""
    clicks = sample_training_clicks(
        WithMask(network),
        images,
        labels,
        task.num_classes,
        rng,
        max_clicks=settings.max_clicks,
        click_sigma=settings.sigma,
        split_area=settings.split_area,
        largest_error_share=settings.largest_error_share,
    )
    pending = [min(settings.iterative_clicks, len(element) - 1) for element in clicks]
    clicks = [element[: len(element) - count] for element, count in zip(clicks, pending, strict=True)]
    masks = images.new_zeros(images.shape[0], 1, *images.shape[2:])
    label_maps = labels.numpy().astype(np.int64)
    while any(pending):
        active = [index for index, count in enumerate(pending) if count > 0]
        with torch.no_grad():
            inputs = torch.stack([model_input(images[i], clicks[i], task.num_classes, settings.sigma) for i in active])
            predictions = network(torch.cat([inputs, masks[active]], 1)).argmax(dim=1)
        for position, index in enumerate(active):
            click = largest_error_click(label_maps[index], predictions[position].numpy(), rng)
            if click is None:
                pending[index] = 0
                continue
            masks[index] = foreground(predictions[position : position + 1])[0]
            clicks[index].append(click)
            pending[index] -= 1
    return clicks, masks


def click_curve(
    network: nn.Module, sample: Sample, task: TaskSpec, seed: int, sigma: float, with_mask: bool
) -> list[float]:
    """Lesion Dice after clicks 1..10 of the ``oaims`` user, the previous mask fed back when ``with_mask``."""
    image = torch.as_tensor(sample.image, dtype=torch.float32)
    user = make_simulated_user("oaims", image_click_seed(seed, sample.key))
    clicks: list[Click] = []
    mask = torch.zeros(1, *sample.label.shape)
    curve: list[float] = []
    click: Click | None = user.first_click(sample.label)
    while click is not None:
        clicks.append(click)
        inputs = model_input(image, clicks, task.num_classes, sigma)
        if with_mask:
            inputs = torch.cat([inputs, mask])
        with torch.inference_mode():
            prediction = network(inputs[None]).argmax(dim=1)
        mask = foreground(prediction)[0]
        array = prediction[0].numpy()
        curve.append(region_dice(array, sample.label, task)["lesion"])
        if len(clicks) >= 10:
            break
        click = user.next_click(sample.label, array)
    return curve + [curve[-1]] * (10 - len(curve))


def dice_at(
    network: nn.Module,
    samples: list[Sample],
    task: TaskSpec,
    seeds: tuple[int, ...],
    sigma: float,
    with_mask: bool,
    per_image: dict[str, dict[str, float]] | None = None,
) -> dict[str, list[float]]:
    """Per click count 1/5/10, the mean lesion Dice (%) over ``samples`` for each seed.

    ``per_image``, when given, receives per click count ``{image key: Dice (%) averaged over the seeds}``.
    """
    network.eval()
    result: dict[str, list[float]] = {"dice@1": [], "dice@5": [], "dice@10": []}
    curves = np.array([[click_curve(network, s, task, seed, sigma, with_mask) for s in samples] for seed in seeds])
    for click in (1, 5, 10):
        result[f"dice@{click}"] = [100 * float(value) for value in curves[:, :, click - 1].mean(axis=1)]
        if per_image is not None:
            means = 100 * curves[:, :, click - 1].mean(axis=0)
            per_image[f"dice@{click}"] = {s.key: float(v) for s, v in zip(samples, means, strict=True)}
    return result


def train(config_path: Path, epochs: int, learning_rate: float) -> None:
    """Fine-tune the widened shipped model; keep the epoch with the best validation Dice@10 (seed 0)."""
    torch.set_num_threads(THREADS)
    config = load_training_config(config_path)
    loaded = load_checkpoint(BRAIN_V2)
    task, sigma = loaded.task, loaded.meta.preprocessing.click_sigma
    network = loaded.model
    widen_first_convolution(network, 1)
    train_samples = load_datasets(config.train_data)
    validation = load_datasets(config.validation_data)
    augmentation = build_augmentation(config.augmentation, colour=False)
    dataset = AugmentedSamples(train_samples, augmentation)
    criterion = config.loss.build()
    optimiser = torch.optim.Adam(network.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.StepLR(optimiser, step_size=max(epochs // 2, 1), gamma=0.5)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    log = OUTPUT / "train_log.jsonl"
    log.write_text("")
    best = -1.0
    start = dice_at(network, validation, task, (0,), sigma, True)
    print(f"epoch -1 (zero mask weights = shipped): {start}", flush=True)
    for epoch in range(epochs):
        started = time.perf_counter()
        augmentation.set_random_state(seed=epoch)
        rng = np.random.default_rng([config.seed, epoch])
        loader = DataLoader(
            dataset,
            batch_size=config.optimisation.batch_size,
            shuffle=True,
            drop_last=True,
            generator=torch.Generator().manual_seed(epoch),
        )
        losses = []
        for images, labels in loader:
            network.eval()
            clicks, masks = training_clicks(network, images, labels, task, rng, config.clicks)
            network.train()
            inputs = torch.stack(
                [model_input(image, c, task.num_classes, sigma) for image, c in zip(images, clicks, strict=True)]
            )
            loss = criterion(network(torch.cat([inputs, masks], 1)), labels, clicks)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.item()))
        scheduler.step()
        metrics = dice_at(network, validation, task, (0,), sigma, True)
        record = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            **{k: v[0] for k, v in metrics.items()},
            "seconds": time.perf_counter() - started,
        }
        with log.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(record, flush=True)
        if metrics["dice@10"][0] > best:
            best = metrics["dice@10"][0]
            torch.save(
                {"state_dict": network.state_dict(), "epoch": epoch, "config": str(config_path)}, OUTPUT / "best.pt"
            )


def evaluate(shipped: bool) -> None:
    """Dice@1/5/10 (3 seeds) of the fine-tuned widened model (or the shipped one) on the study's brain sets."""
    torch.set_num_threads(THREADS)
    loaded = load_checkpoint(BRAIN_V2)
    task, sigma = loaded.task, loaded.meta.preprocessing.click_sigma
    network = loaded.model
    name = SHIPPED_NAME
    epoch = None
    if not shipped:
        widen_first_convolution(network, 1)
        state = torch.load(OUTPUT / "best.pt", weights_only=False)
        network.load_state_dict(state["state_dict"])
        epoch = state["epoch"]
        name = "brain-v2 + previous-mask input"
    sets = {}
    for set_name in ("validation, all slices", "HT FLAIR, all slices"):
        config = EVALUATION_SETS["brain"][set_name]
        samples = load_samples(config.model_copy(update={"size": 256}), cache_dir=CACHE)
        per_image: dict[str, dict[str, float]] = {}
        sets[set_name] = {
            "images": len(samples),
            "patients": len({s.patient for s in samples}),
            "dice": dice_at(network, samples, task, SEEDS, sigma, not shipped, per_image),
            "per_image": per_image,
            "patient_of": {s.key: s.patient for s in samples},
        }
        print(set_name, sets[set_name], flush=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[name] = {
        "epoch": epoch,
        "sets": sets,
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": cpu_and_versions(),
        "command": " ".join(["python", "bench/prev_mask_study.py", *sys.argv[1:]]),
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def report() -> str:
    """``bench/results/prev_mask_study.md`` from the JSON: Dice per model, paired differences to the shipped one."""
    results = json.loads(RESULTS.read_text())
    shipped = results.get(SHIPPED_NAME)
    lines = [
        "# Study: the previous mask as a network input (brain, issue 13)",
        "",
        "Generated by `python bench/prev_mask_study.py report` from `bench/results/prev_mask_study.json` (commands,",
        "dates and machine in it); method in the script's docstring. Dice in %, `oaims` simulated user, no",
        f"adaptation, mean ± sd over click seeds {list(SEEDS)} of the mean over images. Differences: the candidate",
        "minus the shipped model on the same images, per image averaged over the seeds, with 95 % percentile-bootstrap",
        "intervals resampling images and, coarser, patients (an image's slices are not independent).",
        "",
    ]
    for set_name in ("validation, all slices", "HT FLAIR, all slices"):
        lines += [f"## {set_name}", "", "| model | epoch | images | patients | Dice@1 | Dice@5 | Dice@10 |"]
        lines.append("|---|---|---|---|---|---|---|")
        for name, record in results.items():
            entry = record["sets"][set_name]
            cells = [f"{np.mean(entry['dice'][k]):.1f} ± {np.std(entry['dice'][k]):.1f}" for k in DICE_KEYS]
            epoch = "–" if record["epoch"] is None else str(record["epoch"])
            lines.append(f"| {name} | {epoch} | {entry['images']} | {entry['patients']} | " + " | ".join(cells) + " |")
        lines.append("")
        if shipped is None:
            continue
        for name, record in results.items():
            if name == SHIPPED_NAME:
                continue
            entry, reference = record["sets"][set_name], shipped["sets"][set_name]
            lines.append(f"{name} − shipped, clicks 1 / 5 / 10:")
            lines.append("")
            for unit in ("images", "patients"):
                cells = []
                for key in DICE_KEYS:
                    ours, theirs = entry["per_image"][key], reference["per_image"][key]
                    differences = {image: ours[image] - theirs[image] for image in ours if image in theirs}
                    if unit == "patients":
                        grouped: dict[str, list[float]] = {}
                        for image, value in differences.items():
                            grouped.setdefault(entry["patient_of"][image], []).append(value)
                        values = [float(np.mean(items)) for items in grouped.values()]
                    else:
                        values = list(differences.values())
                    interval = bootstrap_mean(values)
                    cells.append(f"{interval.mean:+.1f} [{interval.low:+.1f}, {interval.high:+.1f}]")
                lines.append(f"- over {unit} (n = {interval.n}): " + " / ".join(cells))
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    training = commands.add_parser("train")
    training.add_argument("--config", type=Path, default=Path("configs/train_brain_rounds5.yaml"))
    training.add_argument("--epochs", type=int, default=16)
    training.add_argument("--learning-rate", type=float, default=3e-4)
    evaluation = commands.add_parser("evaluate")
    evaluation.add_argument("--shipped", action="store_true")
    commands.add_parser("report")
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args.config, args.epochs, args.learning_rate)
    elif args.command == "evaluate":
        evaluate(args.shipped)
    else:
        REPORT.write_text(report() + "\n")
        print(f"wrote {REPORT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
