"""More brain candidates for issue 13 (Dice@10 >= 92 on the validation slices), tried on 2026-12-03; none shipped.

Every number the closing note of that day gives for these candidates comes from this script (Intel Xeon 2-core
VM, torch 2 threads; the training runs' validation numbers are those of their ``train_log.jsonl``, seed 0):

- ``evaluate``: the ``oaims`` user, 10 clicks, no adaptation (``evaluate_frozen``), on ``train`` (every fourth
  lesion slice of the LGG *training* patients: where settings are tuned), ``validation`` or ``HT``, with

  - one checkpoint, or several averaged (mean of their softmax: an ensemble);
  - ``--guided R EPS``: a guided filter (He et al.) on the lesion probability, guided by the image;
  - ``--zoom MARGIN MIN_SIDE``: a zoom-in second pass (RITM / FocalClick style): a square around the predicted
    lesion and the positive clicks (MARGIN of its side on each side, at least MIN_SIDE px) resampled to the image
    size, the clicks re-encoded in it, its logits pasted back.

- ``compare CHECKPOINT``: the candidate minus the shipped model per image (validation and HT slices, click seeds
  0-2), with bootstrap intervals over images and patients (the MONAI networks of ``bench/results/models.md``).
- ``train VARIANT``: fine-tune the shipped model with ``configs/train_brain.yaml``'s data, changed as follows
  (``runs/brain-<variant>``; learning rates and schedules in :data:`VARIANTS`): ``lgg-only`` (no BRATS),
  ``boundary`` (plus 0.5 x the cross-entropy of the pixels within 2 px of the expert outline), ``elastic`` (MONAI
  ``Rand2DElasticd`` added, spacing 30, magnitude 1-3, p 0.4), ``zoom-crops`` (lesion-centred square crops, side
  uniform in [max(64, 1.2 x lesion extent), 256], p 0.5, resampled to 256).

Usage::

    python bench/brain_candidates.py evaluate --set validation --seeds 0,1,2 \\
        src/clickadapt/pretrained/brain.pt runs/brain-rounds5/best.pt runs/brain-256/best.pt
    python bench/brain_candidates.py evaluate --set train --seeds 0 --guided 2 0.01 src/clickadapt/pretrained/brain.pt
    python bench/brain_candidates.py train zoom-crops
    python bench/brain_candidates.py evaluate --set train --seeds 0 --zoom 0.4 64 runs/brain-zoom-crops/best.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from monai.transforms import Compose, MapTransform, Rand2DElasticd, RandomizableTransform
from scipy import ndimage
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import clickadapt.training.trainer as trainer
from clickadapt.clicks.click import Click
from clickadapt.clicks.encoding import click_maps
from clickadapt.data.registry import PatientFold, load_samples
from clickadapt.data.sample import Sample
from clickadapt.evaluation.stream import evaluate_frozen
from clickadapt.losses.combined import SegmentationLoss
from clickadapt.models.checkpoint import load_checkpoint
from clickadapt.tasks import TaskSpec
from clickadapt.training.config import TrainingConfig
from models import BRAIN_V2, CACHE, EVALUATION_SETS, interval_text, paired_intervals
from prev_mask_study import RESULTS, SEEDS, SHIPPED_NAME, dice_at

BASE_CONFIG = Path("configs/train_brain.yaml")
VARIANTS: dict[str, dict[str, float]] = {
    "lgg-only": {"learning_rate": 2e-4, "epochs": 12, "lr_step_epochs": 6, "max_minutes": 45, "every": 2},
    "boundary": {"learning_rate": 2e-4, "epochs": 10, "lr_step_epochs": 5, "max_minutes": 40, "every": 2},
    "elastic": {"learning_rate": 1e-4, "epochs": 16, "lr_step_epochs": 8, "max_minutes": 60, "every": 2},
    "zoom-crops": {"learning_rate": 2e-4, "epochs": 10, "lr_step_epochs": 6, "max_minutes": 30, "every": 3},
}
"""Per variant: the optimisation settings of the 2026-12-03 runs and how often they were validated (epochs)."""


# ------------------------------------------------------------------ inference wrappers


class MeanOfSoftmax(nn.Module):
    """Several networks as one: the log of their mean softmax."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = torch.stack([member(x).softmax(1) for member in self.members]).mean(0)
        return probabilities.clamp_min(1e-6).log()


class LogitOffset(nn.Module):
    """The foreground logits raised by ``offset``: a lower (``offset`` > 0) or higher decision threshold."""

    def __init__(self, model: nn.Module, offset: float) -> None:
        super().__init__()
        self.model, self.offset = model, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(x)
        return torch.cat([logits[:, :1], logits[:, 1:] + self.offset], 1)


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a ``(2r+1)²`` window, edges averaged over the pixels inside."""
    return nn.functional.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


class GuidedLesion(nn.Module):
    """A guided filter (He et al., 2013) on the lesion probability, guided by the (rescaled) image channel."""

    def __init__(self, model: nn.Module, radius: int, eps: float) -> None:
        super().__init__()
        self.model, self.radius, self.eps = model, radius, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probability = self.model(x).softmax(1)[:, 1:2]
        guide = x[:, 0:1]
        low, high = guide.amin((2, 3), keepdim=True), guide.amax((2, 3), keepdim=True)
        guide = (guide - low) / (high - low + 1e-6)
        mean_guide, mean_p = box_mean(guide, self.radius), box_mean(probability, self.radius)
        variance = box_mean(guide * guide, self.radius) - mean_guide * mean_guide
        covariance = box_mean(guide * probability, self.radius) - mean_guide * mean_p
        a = covariance / (variance + self.eps)
        b = mean_p - a * mean_guide
        q = (box_mean(a, self.radius) * guide + box_mean(b, self.radius)).clamp(1e-4, 1 - 1e-4)
        return torch.cat([(1 - q).log(), q.log()], 1)


def click_peaks(channel: np.ndarray, radius: int) -> list[tuple[int, int]]:
    """The clicks of one click map: its local maxima above 0.5."""
    if channel.max() <= 0:
        return []
    local = ndimage.maximum_filter(channel, size=2 * radius + 1)
    rows, cols = np.nonzero((channel == local) & (channel > 0.5))
    return list(zip(rows.tolist(), cols.tolist(), strict=True))


class ZoomIn(nn.Module):
    """A second pass on a square around the predicted lesion and the positive clicks, resampled to the input size."""

    def __init__(self, model: nn.Module, margin: float, min_side: int, sigma: float, image_channels: int = 1) -> None:
        super().__init__()
        self.model, self.margin, self.min_side, self.sigma = model, margin, min_side, sigma
        self.image_channels = image_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(x)
        height, width = int(x.shape[-2]), int(x.shape[-1])
        classes = int(x.shape[1]) - self.image_channels
        maps = x[0, self.image_channels :].detach().cpu().numpy()
        radius = int(np.ceil(3 * self.sigma))
        clicks = [(label, point) for label in range(classes) for point in click_peaks(maps[label], radius)]
        mask = (logits[0].argmax(0) > 0).cpu().numpy()
        positives = [point for label, point in clicks if label > 0]
        rows = [int(r) for r in np.nonzero(mask)[0]] + [r for r, _ in positives]
        cols = [int(c) for c in np.nonzero(mask)[1]] + [c for _, c in positives]
        if not rows:
            return logits
        top0, bottom, left0, right = min(rows), max(rows) + 1, min(cols), max(cols) + 1
        side = round(max(bottom - top0, right - left0) * (1 + 2 * self.margin))
        side = min(max(side, self.min_side), height, width)
        if side >= min(height, width):
            return logits
        top = round(min(max((top0 + bottom) / 2 - side / 2, 0), height - side))
        left = round(min(max((left0 + right) / 2 - side / 2, 0), width - side))
        scale = height / side
        crop = x[:, : self.image_channels, top : top + side, left : left + side]
        crop = nn.functional.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
        inside = [
            Click(int(min(height - 1, (r - top + 0.5) * scale)), int(min(width - 1, (c - left + 0.5) * scale)), label)
            for label, (r, c) in clicks
            if top <= r < top + side and left <= c < left + side
        ]
        crop_maps = torch.from_numpy(click_maps(inside, (height, width), classes, self.sigma)).to(x)
        zoomed = self.model(torch.cat([crop, crop_maps[None]], 1))
        back = nn.functional.interpolate(zoomed, size=(side, side), mode="bilinear", align_corners=False)
        out = logits.clone()
        out[:, :, top : top + side, left : left + side] = back
        return out


def evaluation_samples(which: str) -> list[Sample]:
    """``train``: every fourth lesion slice of the LGG training patients; ``validation``; ``HT``."""
    if which == "train":  # the validation rule's other patients, the shipped model's LGG training patients
        validation = EVALUATION_SETS["brain"]["validation, all slices"]
        rest = PatientFold(every=5, offset=0, keep="rest")
        return load_samples(validation.model_copy(update={"patient_fold": rest, "size": 256}), cache_dir=CACHE)[::4]
    name = {"validation": "validation, all slices", "HT": "HT FLAIR, all slices"}[which]
    return load_samples(EVALUATION_SETS["brain"][name].model_copy(update={"size": 256}), cache_dir=CACHE)


def evaluate(args: argparse.Namespace) -> None:
    """Print Dice@1/5/10 (mean ± sd over the click seeds) of the candidate the arguments describe."""
    torch.set_num_threads(2)
    loaded = [load_checkpoint(Path(path)) for path in args.checkpoints]
    sigma = loaded[0].meta.preprocessing.click_sigma
    model: nn.Module = loaded[0].model.eval() if len(loaded) == 1 else MeanOfSoftmax([m.model.eval() for m in loaded])
    if args.guided:
        model = GuidedLesion(model, int(args.guided[0]), float(args.guided[1]))
    if args.offset:
        model = LogitOffset(model, float(args.offset))
    if args.zoom:
        model = ZoomIn(model, float(args.zoom[0]), int(args.zoom[1]), sigma)
    print_dice(model, loaded[0].task, args.set, args.seeds, sigma)


def lesion_dice(model: nn.Module, task: TaskSpec, samples: list[Sample], seed: int, sigma: float) -> list[float]:
    """Lesion Dice (%) after clicks 1, 5 and 10 of the ``oaims`` user with one click seed, no adaptation."""
    curve = evaluate_frozen(model, task, samples, "oaims", 10, seed, click_sigma=sigma)["lesion"]
    return [100 * float(curve[click - 1]) for click in (1, 5, 10)]


def print_dice(model: nn.Module, task: TaskSpec, which: str, seeds: str, sigma: float) -> None:
    """Print Dice@1/5/10 (mean ± sd over the comma-separated click ``seeds``) on :func:`evaluation_samples`."""
    samples = evaluation_samples(which)
    values = np.array([lesion_dice(model, task, samples, int(seed), sigma) for seed in seeds.split(",")])
    spread = values.std(0, ddof=1) if len(values) > 1 else np.zeros(3)
    patients = len({sample.patient for sample in samples})
    print(f"{which}: {len(samples)} images, {patients} patients, click seeds {seeds}")
    print("Dice@1/5/10: " + " / ".join(f"{m:.1f} ± {s:.1f}" for m, s in zip(values.mean(0), spread, strict=True)))


def compare(args: argparse.Namespace) -> None:
    """Per image (mean over click seeds 0-2), a candidate minus the shipped model on the validation and HT slices,
    with 95 % bootstrap intervals over images and over patients; the shipped model's per-image Dice is the one
    ``bench/prev_mask_study.py evaluate --shipped`` recorded with the same loop."""
    torch.set_num_threads(2)
    shipped = json.loads(RESULTS.read_text())[SHIPPED_NAME]["sets"]
    loaded = load_checkpoint(Path(args.checkpoint))
    for set_name in ("validation, all slices", "HT FLAIR, all slices"):
        samples = load_samples(EVALUATION_SETS["brain"][set_name].model_copy(update={"size": 256}), cache_dir=CACHE)
        per_image: dict[str, dict[str, float]] = {}
        sigma = loaded.meta.preprocessing.click_sigma
        means = dice_at(loaded.model.eval(), samples, loaded.task, SEEDS, sigma, False, per_image)
        patient_of = {sample.key: sample.patient for sample in samples}
        patients = len(set(patient_of.values()))
        for key in ("dice@1", "dice@5", "dice@10"):
            base = shipped[set_name]["per_image"][key]
            differences = {s.key: per_image[key][s.key] - base[s.key] for s in samples}
            images, grouped = paired_intervals(differences, patient_of)
            print(
                f"{set_name}, {key}: {np.mean(means[key]):.1f}; minus shipped over images (n = {len(samples)}) "
                f"{interval_text(images)}, over patients (n = {patients}) {interval_text(grouped)}",
                flush=True,
            )


# ------------------------------------------------------------------ training variants


class LesionZoomd(RandomizableTransform, MapTransform):
    """With probability ``prob``: a square around the lesion (side uniform in [max(min_side, 1.2 x extent), H]),
    image and label resampled back to the input size."""

    def __init__(self, prob: float = 0.5, min_side: int = 64) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, ["image", "label"])
        self.min_side = min_side

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        result = dict(data)
        self.randomize(None)
        label = torch.as_tensor(np.asarray(result["label"]))
        rows, cols = np.nonzero(label[0].numpy() > 0)
        if not self._do_transform or len(rows) == 0:
            return result
        height, width = int(label.shape[-2]), int(label.shape[-1])
        top0, bottom, left0, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        low = max(self.min_side, int(1.2 * max(bottom - top0, right - left0)))
        if low >= min(height, width):
            return result
        side = int(self.R.uniform(low, min(height, width)))
        top = int(self.R.randint(max(0, bottom - side), max(0, min(top0, height - side)) + 1))
        left = int(self.R.randint(max(0, right - side), max(0, min(left0, width - side)) + 1))
        image = torch.as_tensor(np.asarray(result["image"]), dtype=torch.float32)[None]
        image = image[:, :, top : top + side, left : left + side]
        crop = label[None, :, top : top + side, left : left + side].float()
        size = (height, width)
        result["image"] = nn.functional.interpolate(image, size=size, mode="bilinear", align_corners=False)[0].numpy()
        resized = nn.functional.interpolate(crop, size=size, mode="nearest")[0].numpy()
        result["label"] = resized.astype(np.asarray(data["label"]).dtype)
        return result


def boundary_loss_forward(weight: float) -> Any:
    """``SegmentationLoss.forward`` plus ``weight`` x the cross-entropy of the pixels within 2 px of the outline."""
    original = SegmentationLoss.forward

    def forward(self: SegmentationLoss, logits: torch.Tensor, target: torch.Tensor, clicks: Any) -> torch.Tensor:
        truth = (target > 0).float().unsqueeze(1)
        band = (nn.functional.max_pool2d(truth, 5, 1, 2) + nn.functional.max_pool2d(-truth, 5, 1, 2)).squeeze(1)
        pixels = nn.functional.cross_entropy(logits, target, reduction="none")
        extra = (pixels * band).sum() / band.sum().clamp_min(1.0)
        return original(self, logits, target, clicks) + weight * extra

    return forward


def train_variant(args: argparse.Namespace) -> None:
    """Fine-tune the shipped model as the variant says (see the module docstring)."""
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw.update(init_checkpoint=str(BRAIN_V2), output=f"runs/brain-{args.variant}", num_threads=2)
    settings = dict(VARIANTS[args.variant])
    raw["validation"]["every_epochs"] = int(settings.pop("every"))
    raw["optimisation"].update(settings)
    if args.variant == "lgg-only":
        raw["train_data"] = raw["train_data"][:1]
    if args.variant == "boundary":
        SegmentationLoss.forward = boundary_loss_forward(0.5)  # type: ignore[method-assign]
    if args.variant in ("elastic", "zoom-crops"):
        build = trainer.build_augmentation
        keys = ["image", "label"]
        extra = (
            Rand2DElasticd(keys, (30, 30), (1, 3), prob=0.4, mode=("bilinear", "nearest"), padding_mode="border")
            if args.variant == "elastic"
            else LesionZoomd(prob=0.5)
        )
        trainer.build_augmentation = lambda config, colour: Compose([*build(config, colour).transforms, extra])
    trainer.train(TrainingConfig.model_validate(raw), resume=False, progress=False)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``evaluate`` or ``train``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    scoring = commands.add_parser("evaluate", help="Dice@1/5/10 of a candidate")
    scoring.add_argument("checkpoints", nargs="+", help="one checkpoint, or several to average")
    scoring.add_argument("--set", choices=("train", "validation", "HT"), default="train")
    scoring.add_argument("--seeds", default="0", help="click seeds, comma-separated")
    scoring.add_argument("--guided", nargs=2, metavar=("RADIUS", "EPS"))
    scoring.add_argument("--offset", type=float, default=0.0, help="added to the foreground logits")
    scoring.add_argument("--zoom", nargs=2, metavar=("MARGIN", "MIN_SIDE"))
    comparing = commands.add_parser("compare", help="a candidate minus the shipped model, paired by image")
    comparing.add_argument("checkpoint")
    training = commands.add_parser("train", help="fine-tune a variant of the shipped model")
    training.add_argument("variant", choices=VARIANTS)
    args = parser.parse_args(argv)
    if args.command == "evaluate":
        evaluate(args)
    elif args.command == "compare":
        compare(args)
    else:
        train_variant(args)


if __name__ == "__main__":
    main()
