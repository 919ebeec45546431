"""Long-stream benchmark of safe continual adaptation (issue 7).

Streams of several hundred images that switch domains (target A → target B → source), built from
``../shared/data``; frozen, unguarded OAIMS and OAIMS with the safety layer (and anchored variants) are
run over the same ordered stream with the same simulated user. Reported per task:

- Dice@1/5/10 per segment and over the whole stream, against frozen;
- the worst 50-image window of (variant − frozen) Dice@5;
- the fraction of unguarded OAIMS's mean Dice@5 gain over frozen that each variant keeps;
- forgetting on a held-out source validation set, at the end of the target segments and of the stream;
- how often the safety layer acted, and for each rollback whether it was right: the weights before the
  rollback and the restored ones are both evaluated (frozen, ground truth) on the next images of the
  stream.

Usage::

    python -m bench.long_stream configs/bench/long_stream_brain.yaml
    python -m bench.long_stream configs/bench/long_stream_fundus.yaml --limit-per-segment 60
    python -m bench.long_stream --report-only          # rebuild bench/results/long_stream.md from the JSONs

Writes ``bench/results/long_stream_<task>.json`` and ``..._images.csv``, then rebuilds
``bench/results/long_stream.md`` and ``long_stream.csv`` from every task's JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field

from bench.long_stream_runner import (
    LongStreamResult,
    StreamSegment,
    evaluate_weights,
    ordered_stream,
    run_domain_scoped_stream,
    run_long_stream,
)
from clickadapt.adaptation.domains import SourceMode
from clickadapt.adaptation.model_state import StateSnapshot
from clickadapt.adaptation.safety import SAFETY_EVENT_KINDS, SafetyConfig, SafetyEvent
from clickadapt.data.registry import DatasetConfig, load_samples
from clickadapt.data.sample import Sample
from clickadapt.models.checkpoint import load_checkpoint
from clickadapt.paths import shipped_model_path
from clickadapt.tasks import get_task

logger = logging.getLogger("long_stream")

RESULTS_DIR = Path("bench/results")
NOTES_NAME = "long_stream_notes.md"
"""Hand-written findings inserted before the first task's section of the generated report."""
REPORTED_CLICKS = (1, 5, 10)
UNGUARDED_LABEL = "oaims"
FROZEN_LABEL = "frozen"
SIGNAL_KEYS = ("first_final_dice", "source_first_final_dice", "clicks_to_final", "first_click_agreement")


class SegmentConfig(BaseModel):
    """One domain of the stream: a name, the datasets whose samples form it (after ``skip_first``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    source: bool = False
    datasets: list[DatasetConfig]
    skip_first: int = Field(default=0, ge=0)


class VariantConfig(BaseModel):
    """One run: a strategy with overrides, and the safety settings (``None`` = unguarded).

    ``resume_from`` names an earlier guarded variant of the same strategy: this (unguarded) run then shares
    that run's records up to the image where its safety layer first acted (bit-identical, since the layer
    only reads until then) and computes only the rest.
    """

    model_config = ConfigDict(extra="forbid")

    label: str
    strategy: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    safety: SafetyConfig | None = None
    resume_from: str | None = None
    sentinel: bool = False
    rehearsal: bool = False
    domain_scoped: bool = False
    targets_share_model: bool = False
    source_mode: SourceMode = "frozen"


class LongStreamConfig(BaseModel):
    """The benchmark file (``configs/bench/long_stream_*.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    task: str
    model: str | None = None
    segments: list[SegmentConfig]
    forgetting: list[DatasetConfig]
    variants: list[VariantConfig]
    budget: int = Field(default=10, ge=10)
    user: str = "oaims"
    click_seed: int = 0
    order_seed: int = 0
    window: int = Field(default=50, ge=1)
    judge_images: int = Field(default=20, ge=1)
    judge_budget: int = Field(default=5, ge=1)
    forgetting_limit: int | None = 30
    sentinel_data: list[DatasetConfig] = Field(default_factory=list)
    sentinel_images: int = Field(default=12, ge=1)
    sentinel_skip_first: int = Field(default=0, ge=0)
    rehearsal_data: list[DatasetConfig] = Field(default_factory=list)
    rehearsal_images: int = Field(default=32, ge=1)
    cache_dir: Path | None = Path(".cache/clickadapt")


def resolve_model(task: str, configured: str | None) -> Path:
    """The model file: the configured path, else the shipped model, else ``runs/<task>/best.pt``."""
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise FileNotFoundError(f"model {path} does not exist")
        return path
    shipped = shipped_model_path(task)
    if shipped.is_file():
        return shipped
    fallback = Path("runs") / task / "best.pt"
    if fallback.is_file():
        logger.warning("shipped model %s is absent; using %s", shipped, fallback)
        return fallback
    raise FileNotFoundError(f"no model for task {task!r}: neither {shipped} nor {fallback} exists")


def load_segment(config: SegmentConfig, cache_dir: Path | None, limit: int | None, seed: int) -> list[Sample]:
    """The samples of a segment; with ``limit``, a seeded random subset of that size (in dataset order)."""
    samples = [sample for dataset in config.datasets for sample in load_samples(dataset, cache_dir=cache_dir)]
    samples = [sample for sample in samples[config.skip_first :] if np.any(sample.label > 0)]
    if limit is not None and len(samples) > limit:
        keep = sorted(np.random.default_rng(seed).permutation(len(samples))[:limit].tolist())
        samples = [samples[i] for i in keep]
    return samples


def windows_min(differences: np.ndarray, window: int) -> tuple[float, int]:
    """The smallest mean of ``window`` consecutive values and where that window starts."""
    if differences.size == 0:
        return float("nan"), -1
    if differences.size <= window:
        return float(differences.mean()), 0
    cumulative = np.concatenate([[0.0], np.cumsum(differences)])
    means = (cumulative[window:] - cumulative[:-window]) / window
    start = int(np.argmin(means))
    return float(means[start]), start


def judge_rollbacks(
    rollbacks: list[tuple[SafetyEvent, StateSnapshot, StateSnapshot]],
    model: torch.nn.Module,
    config: LongStreamConfig,
    stream: list[Sample],
) -> list[dict[str, Any]]:
    """For each rollback, Dice@judge_budget of the weights before and after it on the next stream images."""
    judged = []
    for event, before, restored in rollbacks:
        start = event.image_index + 1
        images = stream[start : start + config.judge_images]
        where = f"images {start}–{start + len(images) - 1} (after the rollback)"
        if not images:
            images = stream[max(0, start - config.judge_images) : start]
            where = "the last images before it (end of stream)"
        task = get_task(config.task)
        before_dice, after_dice = (
            evaluate_weights(
                model, weights, task, images, user_name=config.user, budget=config.judge_budget,
                click_seed=config.click_seed,
            )[:, -1].mean()
            for weights in (before.model_state, restored.model_state)
        )  # fmt: skip
        judged.append(
            {
                **event.to_dict(),
                "judged_on": where,
                "dice_before": float(before_dice),
                "dice_restored": float(after_dice),
                "right": bool(after_dice >= before_dice),
            }
        )
    return judged


def summarise(
    result: LongStreamResult,
    frozen: LongStreamResult,
    unguarded: LongStreamResult | None,
    config: LongStreamConfig,
) -> dict[str, Any]:
    """Per-segment and whole-stream numbers of one variant against frozen."""
    summary: dict[str, Any] = {"label": result.label, "segments": []}
    for index, name in enumerate(result.segments):
        mask = result.segment_mask(index)
        row: dict[str, Any] = {"segment": name, "images": int(mask.sum())}
        for click in REPORTED_CLICKS:
            value = result.dice_at(click)[mask].mean() if mask.any() else float("nan")
            base = frozen.dice_at(click)[mask].mean() if mask.any() else float("nan")
            row[f"dice@{click}"] = 100 * float(value)
            row[f"delta@{click}"] = 100 * float(value - base)
            for region in result.regions:
                values = np.asarray([image.dice[region][click - 1] for image in result.images])[mask]
                row[f"{region}@{click}"] = 100 * float(values.mean()) if values.size else float("nan")
        summary["segments"].append(row)
    for click in REPORTED_CLICKS:
        summary[f"dice@{click}"] = 100 * float(result.dice_at(click).mean())
        summary[f"delta@{click}"] = 100 * float((result.dice_at(click) - frozen.dice_at(click)).mean())
    differences = 100 * (result.dice_at(5) - frozen.dice_at(5))
    worst, start = windows_min(differences, config.window)
    summary["worst_window@5"] = worst
    summary["worst_window_start"] = start
    if unguarded is not None:
        gain = float((unguarded.dice_at(5) - frozen.dice_at(5)).mean())
        own = float((result.dice_at(5) - frozen.dice_at(5)).mean())
        summary["gain_kept@5"] = own / gain if gain > 0 else float("nan")
    computed = result.images[result.resumed_at or 0 :]
    summary["seconds_per_image"] = float(np.mean([image.seconds for image in computed])) if computed else float("nan")
    summary["resumed_at"] = result.resumed_at
    summary["events"] = {kind: sum(event["kind"] == kind for event in result.events) for kind in SAFETY_EVENT_KINDS}
    if result.signals:
        margins = [
            s["first_final_dice"] - s["source_first_final_dice"]
            for s in result.signals
            if s.get("source_first_final_dice") is not None
        ]
        truth = 100 * (result.dice_at(1) - frozen.dice_at(1))
        if len(margins) == len(truth) and len(margins) > 2:
            summary["signal_vs_truth_r"] = float(np.corrcoef(np.asarray(margins), truth)[0, 1])
        if len(result.signals) == len(result.images):
            summary["signals"] = []
            for index, name in enumerate(result.segments):
                chosen = [s for s, image in zip(result.signals, result.images, strict=True) if image.segment == index]
                if not chosen:
                    continue
                mean = {
                    key: float(np.nanmean([np.nan if s[key] is None else s[key] for s in chosen]))
                    for key in SIGNAL_KEYS
                }
                summary["signals"].append({"segment": name, **mean})
    return summary


def labelled_pairs(
    datasets: list[DatasetConfig], count: int, config: LongStreamConfig, role: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """A seeded sample of ``count`` labelled source images (with foreground) for the sentinel or the rehearsal."""
    if not datasets:
        raise ValueError(f"a variant with {role}: true needs {role}_data (labelled source-domain images)")
    samples = [s for dataset in datasets for s in load_samples(dataset, config.cache_dir)]
    if role == "sentinel":
        samples = samples[config.sentinel_skip_first :]
    samples = [sample for sample in samples if np.any(sample.label > 0)]
    salt = {"sentinel": 7, "rehearsal": 11}[role]
    chosen = np.random.default_rng([config.order_seed, salt]).permutation(len(samples))[:count]
    return [(samples[int(i)].image, samples[int(i)].label) for i in chosen]


def run_task(config: LongStreamConfig, args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Run every variant of one task's benchmark and return its JSON-ready summary."""
    task = get_task(config.task)
    model_path = resolve_model(config.task, args.model or config.model)
    loaded = load_checkpoint(model_path)
    if loaded.task.name != task.name:
        raise ValueError(f"model {model_path} is for task {loaded.task.name!r}, the benchmark for {task.name!r}")
    model = loaded.model
    segments = [
        StreamSegment(
            segment.name,
            load_segment(segment, config.cache_dir, args.limit_per_segment, config.order_seed + index),
            segment.source,
        )
        for index, segment in enumerate(config.segments)
    ]
    stream = [sample for _, sample in ordered_stream(segments, config.order_seed)]
    forgetting = [sample for dataset in config.forgetting for sample in load_samples(dataset, config.cache_dir)]
    forgetting = [sample for sample in forgetting if np.any(sample.label > 0)]
    limit = args.forgetting_limit if args.forgetting_limit is not None else config.forgetting_limit
    forgetting = forgetting[:limit] if limit is not None else forgetting
    logger.info("%s: %s; forgetting set %d images", task.name, [len(s.samples) for s in segments], len(forgetting))
    wanted = set(args.variants.split(",")) if args.variants else None
    variants = [variant for variant in config.variants if wanted is None or variant.label in wanted]
    eval_kwargs: dict[str, Any] = {
        "user_name": config.user,
        "budget": config.budget,
        "click_seed": config.click_seed,
        "device": args.device,
    }
    source_forgetting = evaluate_weights(model, None, task, forgetting, **eval_kwargs)
    results: dict[str, LongStreamResult] = {}
    rollbacks: dict[str, list[dict[str, Any]]] = {}
    forgetting_rows: dict[str, dict[str, float]] = {}
    started = time.time()
    last_target = max((i for i, segment in enumerate(segments) if not segment.source_domain), default=None)
    for variant in variants:
        captured: list[tuple[SafetyEvent, StateSnapshot, StateSnapshot]] = []
        fork = None
        if variant.resume_from is not None:
            parent = results.get(variant.resume_from)
            if parent is None or parent.fork is None:
                raise ValueError(f"{variant.label}: resume_from {variant.resume_from!r} must be an earlier guarded run")
            fork = parent.fork
        begin = time.time()
        common: dict[str, Any] = {
            "label": variant.label,
            "user_name": config.user,
            "budget": config.budget,
            "click_seed": config.click_seed,
            "order_seed": config.order_seed,
            "sentinel_images": (
                labelled_pairs(config.sentinel_data, config.sentinel_images, config, "sentinel")
                if variant.sentinel
                else ()
            ),
            "rehearsal_images": (
                labelled_pairs(config.rehearsal_data, config.rehearsal_images, config, "rehearsal")
                if variant.rehearsal
                else ()
            ),
            "device": args.device,
            "progress": not args.no_progress,
        }
        extra: dict[str, Any] = (
            {"targets_share_model": variant.targets_share_model, "source_mode": variant.source_mode}
            if variant.domain_scoped
            else {
                "rollback_hook": lambda event, before, restored, into=captured: into.append((event, before, restored)),
                "resume_from": fork,
            }
        )
        runner = run_domain_scoped_stream if variant.domain_scoped else run_long_stream
        result = runner(model, task, segments, variant.strategy, variant.overrides, variant.safety, **common, **extra)
        results[variant.label] = result
        logger.info("%s %s: %.0f s, events %s", task.name, variant.label, time.time() - begin, result.events[-3:])
        rollbacks[variant.label] = judge_rollbacks(captured, model, config, stream)
        row: dict[str, float] = {}
        points: dict[str, dict[str, torch.Tensor] | None] = {
            "after targets": result.segment_end_weights[last_target] if last_target is not None else None,
            "end of stream": result.segment_end_weights[-1],
        }
        for domain, domain_weights in result.domain_end_weights.items():  # domain-scoped: a source image filed there
            points[f"{domain} model"] = domain_weights
        for when, point_weights in points.items():
            if point_weights is None or variant.strategy == "frozen":
                curves = source_forgetting
            else:
                curves = evaluate_weights(model, point_weights, task, forgetting, **eval_kwargs)
            for click in REPORTED_CLICKS:
                row[f"{when} dice@{click}"] = 100 * float(curves[:, click - 1].mean())
                row[f"{when} forgetting@{click}"] = 100 * float(
                    source_forgetting[:, click - 1].mean() - curves[:, click - 1].mean()
                )
        forgetting_rows[variant.label] = row
    frozen = results.get(FROZEN_LABEL)
    if frozen is None:
        raise ValueError(f"the variants must include {FROZEN_LABEL!r} (the baseline)")
    unguarded = results.get(UNGUARDED_LABEL)
    summaries = []
    for label, result in results.items():
        summary = summarise(result, frozen, unguarded, config)
        summary["forgetting"] = forgetting_rows[label]
        summary["rollbacks"] = rollbacks[label]
        summary["safety"] = result.safety
        summary["sentinel_checks"] = result.sentinel_checks
        summary["rehearsals"] = result.rehearsals
        summary["strategy"] = result.strategy
        summaries.append(summary)
    write_images_csv(results, RESULTS_DIR / f"long_stream_{output_name(task.name, args.tag)}_images.csv")
    return {
        "task": task.name,
        "tag": args.tag,
        "model": str(model_path),
        "model_sha256": loaded.sha256,
        "segments": [{"name": s.name, "images": len(s.samples), "source": s.source_domain} for s in segments],
        "limit_per_segment": args.limit_per_segment,
        "forgetting_images": len(forgetting),
        "budget": config.budget,
        "user": config.user,
        "click_seed": config.click_seed,
        "order_seed": config.order_seed,
        "window": config.window,
        "variants": summaries,
        "command": command,
        "device": args.device,
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPU(s), torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)"
        + (f", {torch.cuda.get_device_name(args.device)}" if args.device.startswith("cuda") else ""),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": time.time() - started,
    }


def output_name(task: str, tag: str | None) -> str:
    """``brain`` or ``brain-<tag>``: the stem of a run's output files."""
    return f"{task}-{tag}" if tag else task


def fill_gain_kept(summaries: list[dict[str, Any]]) -> None:
    """Gain kept for runs without unguarded ``oaims``, from a run of the same task on the same stream that has it."""
    for task_summary in summaries:
        for variant in task_summary["variants"]:
            kept = variant.get("gain_kept@5")
            if variant["safety"] is None or (kept is not None and kept == kept):
                continue
            for other in summaries:
                same_stream = other["task"] == task_summary["task"] and other["segments"] == task_summary["segments"]
                same_stream = same_stream and other["click_seed"] == task_summary["click_seed"]
                same_stream = same_stream and other.get("order_seed") == task_summary.get("order_seed")
                same_stream = same_stream and other.get("device", "cpu") == task_summary.get("device", "cpu")
                unguarded = [v for v in other["variants"] if v["label"] == UNGUARDED_LABEL]
                if same_stream and unguarded and unguarded[0]["delta@5"] > 0:
                    variant["gain_kept@5"] = variant["delta@5"] / unguarded[0]["delta@5"]
                    variant["gain_kept_from"] = other.get("tag") or "main run"
                    break


def write_images_csv(results: dict[str, LongStreamResult], path: Path) -> None:
    """Per image and variant: segment, key, Dice@1/5/10 (mean over regions), versions, safety events."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["variant", "position", "segment", "key", "dice@1", "dice@5", "dice@10", "version", "events"])
        for label, result in results.items():
            for image in result.images:
                writer.writerow(
                    [
                        label,
                        image.position,
                        result.segments[image.segment],
                        image.key,
                        *(f"{image.mean_dice(click):.4f}" for click in REPORTED_CLICKS),
                        image.version_after,
                        ";".join(event["kind"] for event in image.events),
                    ]
                )


def criteria(task_summary: dict[str, Any]) -> list[str]:
    """The issue's 'done when' checks, one line per guarded variant."""
    lines = []
    for variant in task_summary["variants"]:
        if variant["safety"] is None:
            continue
        window_ok = variant["worst_window@5"] >= -1.0
        kept = variant.get("gain_kept@5", float("nan"))
        kept_ok = bool(kept >= 0.9)
        forgetting = variant["forgetting"].get("end of stream forgetting@5", float("nan"))
        forgetting_ok = forgetting <= 1.0
        lines.append(
            f"| {variant['label']} | {variant['worst_window@5']:+.2f} {'✔' if window_ok else '✘'} "
            f"| {100 * kept:.0f} % {'✔' if kept_ok else '✘'} | {forgetting:+.2f} {'✔' if forgetting_ok else '✘'} |"
        )
    return lines


def render(summaries: list[dict[str, Any]]) -> str:
    """The Markdown report of every task's summary."""
    out = [
        "# Long-stream evaluation of safe continual adaptation",
        "",
        "Generated by `bench/long_stream.py` (see its docstring). Dice in points (0–100), mean over the task's",
        "regions (brain: lesion; fundus: disc and cup) unless a region is named. Δ = variant − frozen on the same",
        "images with the same simulated clicks. *Worst window* = the lowest mean Δ@5 over any 50 consecutive",
        "images. *Gain kept* = mean Δ@5 of the variant / mean Δ@5 of unguarded `oaims`. *Forgetting* = Dice",
        "of the frozen source model minus Dice of the adapted weights on a held-out source validation set",
        "(frozen evaluation, same user); positive = worse than the source model. Unguarded `oaims` is resumed",
        "from `oaims+safety` just before the image where the safety layer first acted: up to there the two runs",
        "are bit-identical (the layer only reads until it acts), so that prefix is computed once; its s/image",
        "counts only the images it computed itself (— when there were none).",
        "",
    ]
    for task_summary in summaries:
        segments = ", ".join(
            f"{s['name']} ({s['images']}{', source' if s['source'] else ''})" for s in task_summary["segments"]
        )
        cap = task_summary["limit_per_segment"]
        title = task_summary["task"] + (f" ({task_summary['tag']})" if task_summary.get("tag") else "")
        out += [
            f"## {title}",
            "",
            f"- Command: `{task_summary['command']}`",
            f"- Machine: {task_summary['machine']}; date {task_summary['date']}; "
            f"wall {task_summary['wall_s'] / 60:.0f} min",
            f"- Model: `{task_summary['model']}` (sha256 {task_summary['model_sha256'][:12]}…)",
            f"- Stream: {segments}"
            + (f" — **capped at {cap} images per segment** (seeded random subset)" if cap else ""),
            f"- User `{task_summary['user']}`, budget {task_summary['budget']}, click seed "
            f"{task_summary['click_seed']}, order seed {task_summary['order_seed']}; forgetting set "
            f"{task_summary['forgetting_images']} source images",
            "",
            "### Done-when checks (click 5)",
            "",
            "| variant | worst 50-image window Δ@5 (≥ −1) | gain kept (≥ 90 %) | forgetting at end (≤ 1) |",
            "|---|---|---|---|",
            *criteria(task_summary),
            "",
            "### Whole stream",
            "",
            "| variant | Dice@1 | Dice@5 | Dice@10 | Δ@1 | Δ@5 | Δ@10 | worst window Δ@5 (start) | gain kept | "
            "s/image | rejected | rollbacks (right) | unresolved | sentinel pull-backs | signal r |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for v in task_summary["variants"]:
            right = sum(r["right"] for r in v["rollbacks"])
            kept = v.get("gain_kept@5")
            out.append(
                f"| {v['label']} | {v['dice@1']:.1f} | {v['dice@5']:.1f} | {v['dice@10']:.1f} | {v['delta@1']:+.2f} "
                f"| {v['delta@5']:+.2f} | {v['delta@10']:+.2f} "
                f"| {v['worst_window@5']:+.2f} ({v['worst_window_start']}) "
                f"| {'' if kept is None else f'{100 * kept:.0f} %'} | {seconds(v['seconds_per_image'])} "
                f"| {v['events']['update_rejected']} | {v['events']['rollback']} ({right}) "
                f"| {v['events']['drift_unresolved']} | {v['events'].get('sentinel_pullback', 0)} "
                f"| {v.get('signal_vs_truth_r', float('nan')):.2f} |"
            )
        out += ["", "### Per segment (Dice@1 / @5 / @10, Δ@5 vs frozen)", ""]
        names = [s["name"] for s in task_summary["segments"]]
        out.append("| variant | " + " | ".join(names) + " |")
        out.append("|---|" + "---|" * len(names))
        for v in task_summary["variants"]:
            cells = [
                f"{s['dice@1']:.1f} / {s['dice@5']:.1f} / {s['dice@10']:.1f} ({s['delta@5']:+.2f})"
                for s in v["segments"]
            ]
            out.append(f"| {v['label']} | " + " | ".join(cells) + " |")
        regions = [key[: -len("@5")] for key in task_summary["variants"][0]["segments"][0] if key.endswith("@5")]
        regions = [r for r in regions if r not in ("dice", "delta")]
        if len(regions) > 1:
            out += ["", "Per region, Dice@5: " + ", ".join(regions), ""]
            out.append("| variant | " + " | ".join(names) + " |")
            out.append("|---|" + "---|" * len(names))
            for v in task_summary["variants"]:
                cells = [" / ".join(f"{s[f'{r}@5']:.1f}" for r in regions) for s in v["segments"]]
                out.append(f"| {v['label']} | " + " | ".join(cells) + " |")
        out += [
            "",
            "### Forgetting on the source validation set (Dice@1 / @5 / @10 of the weights; forgetting@5)",
            "",
            "| variant | after the target segments | forgetting@5 | end of stream | forgetting@5 |",
            "|---|---|---|---|---|",
        ]
        for v in task_summary["variants"]:
            f = v["forgetting"]
            cells = []
            for when in ("after targets", "end of stream"):
                cells.append(" / ".join(f"{f[f'{when} dice@{c}']:.1f}" for c in REPORTED_CLICKS))
                cells.append(f"{f[f'{when} forgetting@5']:+.2f}")
            out.append(f"| {v['label']} | " + " | ".join(cells) + " |")
        misrouted = [
            (v["label"], when.removesuffix(" forgetting@5"), value)
            for v in task_summary["variants"]
            for when, value in v["forgetting"].items()
            if when.endswith(" model forgetting@5")
        ]
        if misrouted:
            out += [
                "",
                "Domain-scoped runs serve source images with the source weights, never changed (forgetting 0 by "
                "construction): frozen, or with per-image updates undone after each image (`source-episodic`). "
                "Were a source image filed under a target domain, that domain's model at the end of the stream "
                "would forget (Dice@5 points): "
                + "; ".join(f"`{label}` {when} {value:+.2f}" for label, when, value in misrouted)
                + ".",
            ]
        for v in task_summary["variants"]:
            checks = v.get("sentinel_checks") or []
            if checks:
                pulled = [c for c in checks if c["alpha"] is not None]
                out += [
                    "",
                    f"Source sentinel of `{v['label']}`: {len(checks)} checks, sentinel Dice of the source model "
                    f"{100 * checks[0]['source_score']:.1f}; live scores "
                    + ", ".join(f"{100 * c['score']:.1f}" for c in checks)
                    + f"; {len(pulled)} pull-back(s)"
                    + (
                        " (α " + ", ".join(f"{c['alpha']:g} at image {c['image_index']}" for c in pulled) + ")"
                        if pulled
                        else ""
                    ),
                ]
        signal_rows = [(v["label"], row) for v in task_summary["variants"] for row in v.get("signals", [])]
        if signal_rows:
            out += [
                "",
                "### Ground-truth-free signals per segment (guarded runs; means)",
                "",
                "First-click agreement = Dice of the first-click prediction with the accepted final mask (the "
                "monitor's statistic, for the adapted and the source model); clicks to final = first click whose "
                "prediction reached Dice 0.9 with the final mask; agreement with later clicks = fraction of clicks "
                "2..T whose class the first-click prediction already had. *signal r* above = correlation over "
                "images of (adapted − source) first-click agreement with the ground-truth Δ@1.",
                "",
                "| variant | segment | first-click agreement | same, source model | clicks to final "
                "| agreement with later clicks |",
                "|---|---|---|---|---|---|",
            ]
            for label, row in signal_rows:
                out.append(
                    f"| {label} | {row['segment']} | {row['first_final_dice']:.3f} | "
                    f"{row['source_first_final_dice']:.3f} | {row['clicks_to_final']:.2f} | "
                    f"{row['first_click_agreement']:.3f} |"
                )
        judged = [(v["label"], r) for v in task_summary["variants"] for r in v["rollbacks"]]
        out += ["", "### Rollbacks and whether they were right", ""]
        if judged:
            out += [
                "Each rollback's weights before and after were evaluated frozen with ground truth on the next "
                "stream images (Dice at the judge budget); *right* = the restored weights were at least as good.",
                "",
                "| variant | at image | restored version | judged on | Dice before | Dice restored | right | reason |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for label, r in judged:
                out.append(
                    f"| {label} | {r['image_index']} | {r['restored_version']} | {r['judged_on']} "
                    f"| {100 * r['dice_before']:.1f} | {100 * r['dice_restored']:.1f} "
                    f"| {'yes' if r['right'] else 'no'} "
                    f"| {r['reason']} |"
                )
        else:
            out.append("No rollback happened.")
        out.append("")
    return "\n".join(out)


def seconds(value: float) -> str:
    """Seconds per image for the report (— when nothing was computed)."""
    return "—" if value != value else f"{value:.2f}"


def write_reports(results_dir: Path) -> None:
    """Rebuild ``long_stream.md`` and ``long_stream.csv`` from every ``long_stream_<task>.json``."""
    summaries = [json.loads(path.read_text()) for path in sorted(results_dir.glob("long_stream_*.json"))]
    if not summaries:
        return
    fill_gain_kept(summaries)
    report = render(summaries)
    notes = results_dir / NOTES_NAME
    if notes.is_file():  # hand-written findings, kept across regenerations
        report = report.replace("\n## ", "\n" + notes.read_text().strip() + "\n\n## ", 1)
    (results_dir / "long_stream.md").write_text(report)
    with (results_dir / "long_stream.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        metrics = ["dice@1", "dice@5", "dice@10", "delta@1", "delta@5", "delta@10"]
        header = ["task", "variant", "segment", "images", *metrics]
        writer.writerow(header)
        for task_summary in summaries:
            for v in task_summary["variants"]:
                total = sum(s["images"] for s in v["segments"])
                rows = [*v["segments"], {**v, "segment": "whole stream", "images": total}]
                for s in rows:
                    writer.writerow(
                        [task_summary["task"], v["label"], s["segment"], s["images"]]
                        + [f"{s[key]:.2f}" for key in metrics]
                    )


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", type=Path, help="configs/bench/long_stream_<task>.yaml")
    parser.add_argument("--limit-per-segment", type=int, default=None, help="cap every segment (seeded subset)")
    parser.add_argument("--forgetting-limit", type=int, default=None, help="source validation images (config)")
    parser.add_argument("--variants", default=None, help="comma-separated labels to run (frozen is required)")
    parser.add_argument("--model", default=None, help="model file (default: shipped, else runs/<task>/best.pt)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, …)")
    parser.add_argument("--order-seed", type=int, default=None, help="stream order seed (default: the config's)")
    parser.add_argument("--click-seed", type=int, default=None, help="simulated user's seed (default: the config's)")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the Markdown and CSV reports")
    parser.add_argument("--tag", default=None, help="suffix of the output files (a second run of the same task)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    if not args.report_only:
        if args.config is None:
            parser.error("a config file is required unless --report-only")
        config = LongStreamConfig.model_validate(yaml.safe_load(args.config.read_text()))
        if args.order_seed is not None:
            config = config.model_copy(update={"order_seed": args.order_seed})
        if args.click_seed is not None:
            config = config.model_copy(update={"click_seed": args.click_seed})
        command = "python " + " ".join(shlex.quote(part) for part in ["bench/long_stream.py", *(argv or sys.argv[1:])])
        summary = run_task(config, args, command)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        output = RESULTS_DIR / f"long_stream_{output_name(config.task, args.tag)}.json"
        output.write_text(json.dumps(summary, indent=1))
    write_reports(RESULTS_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
