"""``REPORT.md``: every table and the generated analysis, derived from the raw files alone."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.constants import (
    ABLATION_GROUP,
    DISCUSSION_BEGIN,
    DISCUSSION_END,
    DISCUSSION_PLACEHOLDER,
    FROZEN_LABEL,
    FULL_LENGTH_IMAGES,
    MAIN_GROUP,
    NOISY_GROUP,
    PLOTS_DIR,
    REPORT_MD,
    REPORT_NOC_THRESHOLD,
    SHIFT_DESCRIPTIONS,
    SWEEP_GROUP,
)
from bench.harness.numbers import (
    MAIN_ORDER,
    Comparison,
    StrategyNumbers,
    compare,
    dice_interval,
    image_values,
    key_region,
    label_order,
    order_index,
    regions_of,
    select_tuned,
    stream_numbers,
)
from bench.harness.paper import PaperNumbers, paper_numbers
from bench.harness.plots import write_plots
from bench.harness.raw import BenchRun, read_raw
from clickadapt.evaluation.metrics import noc_key
from clickadapt.evaluation.report import reported_clicks
from clickadapt.evaluation.statistics import Interval, paired_difference
from clickadapt.models.checkpoint import atomic_write_bytes

logger = logging.getLogger(__name__)


def _pct(statistic: dict[str, Any] | None, with_sd: bool = True) -> str:
    if statistic is None or statistic.get("mean") is None or not math.isfinite(statistic["mean"]):
        return "–"
    text = f"{100 * statistic['mean']:.1f}"
    return f"{text} ± {100 * statistic['sd']:.1f}" if with_sd and len(statistic["per_seed"]) > 1 else text


def _num(statistic: dict[str, Any] | None, digits: int = 2) -> str:
    if statistic is None or statistic.get("mean") is None or not math.isfinite(statistic["mean"]):
        return "–"
    text = f"{statistic['mean']:.{digits}f}"
    return f"{text} ± {statistic['sd']:.{digits}f}" if len(statistic["per_seed"]) > 1 else text


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None or not math.isfinite(seconds) else f"{1000 * seconds:.0f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _stream_table(
    numbers: dict[tuple[str, int], StrategyNumbers], labels: Sequence[str], budget: int, regions: Sequence[str]
) -> list[str]:
    clicks = reported_clicks(budget)
    noc = noc_key(REPORT_NOC_THRESHOLD)
    header = ["strategy"]
    for region in regions:
        header += [f"{region} Dice@{click}" for click in clicks]
    header += [f"{region} NoC@{noc} (fail)" for region in regions]
    header += [f"{region} forgetting@{budget}" for region in regions]
    header += ["ms / click", "ms / image end", "CPU s / image"]
    rows = []
    for label in labels:
        entry = numbers.get((label, budget))
        if entry is None:
            continue
        row = [label]
        for region in regions:
            row += [_pct(entry.stat(region, f"dice@{click}")) for click in clicks]
        for region in regions:
            failures = entry.stat(region, f"failures@{noc}")
            images = entry.entry["images"][0] if entry.entry["images"] else 0
            fail = "–" if failures is None else f"{failures['mean']:.1f}/{images}"
            row.append(f"{_num(entry.stat(region, f'noc@{noc}'), 1)} ({fail})")
        for region in regions:
            row.append(_pct(entry.stat(region, f"forgetting@{budget}")))
        timing = entry.entry["time"]
        images_total = sum(len(run.result.images) for run in entry.runs)
        cpu = sum(run.cpu_s for run in entry.runs) / images_total if images_total else float("nan")
        row += [_ms(timing["click_s_median"]), _ms(timing["finish_s_median"]), f"{cpu:.2f}"]
        rows.append(row)
    return _table(header, rows)


VERDICT_MARKS = {"holds": "✔", "reversed": "✘", "unresolved": "≈"}


def _verdict_cell(comparison: Comparison | None) -> str:
    if comparison is None:
        return "–"
    difference, verdict, interval = comparison
    return f"{difference:+.1f} [{interval.low:+.1f}, {interval.high:+.1f}] {VERDICT_MARKS[verdict]} n={interval.n}"


def _interval_cell(interval: Interval) -> str:
    if interval.n == 0:
        return "–"
    return f"{100 * interval.mean:.1f} [{100 * interval.low:.1f}, {100 * interval.high:.1f}] n={interval.n}"


def _intervals_section(
    streams: list[dict[str, Any]], numbers: dict[str, dict[tuple[str, int], StrategyNumbers]], budget: int
) -> list[str]:
    """Every Dice@k with its 95 % interval over images, and every strategy's paired difference to frozen."""
    clicks = reported_clicks(budget)
    lines = [
        "## Dice with 95 % confidence intervals, and the paired difference to frozen",
        "",
        f"Budget {budget}. Each cell: mean [95 % percentile-bootstrap interval] n = images. Dice is averaged per "
        "image over the stream orders and click seeds first, then resampled over images. *Δ frozen*: the "
        "strategy minus frozen on the same image with the same clicks (paired by image and click seed), in "
        "Dice points; ✔ = the interval is above 0 (a real gain), ✘ = below 0 (a real loss), ≈ = it contains "
        "0 (not resolved by these images). Only ✔ and ✘ are called differences in this report. Dice@1 is given "
        "both ways: *Dice@1 before update* is the first mask of the model before any update on the image (the "
        "like-for-like first glance); *Dice@1* is each method's own protocol (tsca, ia-sa and tent learn from the "
        "image's first click before showing its first mask; frozen, post, mid and oaims do not, so for them the "
        "two coincide).",
    ]
    for stream in streams:
        per = numbers[stream["name"]]
        labels = sorted({label for label, b in per if b == budget}, key=order_index)
        if not labels:
            continue
        for region in regions_of(stream["task"]):
            header = [
                "strategy",
                "Dice@1 before update",
                *(f"Dice@{c}" for c in clicks),
                *(f"Δ frozen @{c}" for c in clicks),
            ]
            rows = []
            for label in labels:
                entry = per[(label, budget)]
                row = [
                    label,
                    _interval_cell(dice_interval(entry.runs, region, 1, before_update=True)),
                    *(_interval_cell(dice_interval(entry.runs, region, c)) for c in clicks),
                ]
                for click in clicks:
                    row.append(
                        "(reference)"
                        if label == FROZEN_LABEL
                        else _verdict_cell(compare(per, label, FROZEN_LABEL, budget, region, click))
                    )
                rows.append(row)
            lines += ["", f"### {stream['title']} (`{stream['name']}`, {stream.get('slices', '?')}) — {region}", ""]
            lines += _table(header, rows)
        if stream.get("slices") == "all slices":
            lines += ["", *_per_patient_table(per, labels, budget, key_region(stream["task"]))]
    return lines


def _sweep_section(runs: Sequence[BenchRun]) -> list[str]:
    """The recorded sweep on the dev parts and the setting chosen for each (task, strategy)."""
    lines = ["## Tuning on the dev parts", ""]
    if not runs:
        return [*lines, "No sweep in this suite: every strategy ran its default settings."]
    lines += [
        "Each candidate ran on every dev part of its task; the score is the mean Dice over clicks 1..budget "
        "(brain lesion / fundus cup) over the task's dev images (n). The chosen setting (✔) is what the main "
        "experiments ran, on the test parts only.",
        "",
    ]
    rows = []
    for (task, name), choice in sorted(select_tuned(runs).items()):
        for label, (score, count) in sorted(choice.scores.items(), key=lambda item: -item[1][0]):
            overrides = next((run.result.overrides for run in runs if run.label == label), {})
            mark = "✔" if label == choice.spec.display_name else ""
            rows.append(
                [task, name, label, f"`{json.dumps(overrides, sort_keys=True)}`", f"{score:.1f} (n={count})", mark]
            )
    return lines + _table(["task", "strategy", "candidate", "overrides", "dev Dice over clicks", "chosen"], rows)


def _per_patient_table(
    per: dict[tuple[str, int], StrategyNumbers], labels: Sequence[str], budget: int, region: str
) -> list[str]:
    """An all-slices stream's Dice per patient (its slices are not independent draws of the domain)."""
    last = reported_clicks(budget)[-1]
    patients: dict[str, dict[str, tuple[float, float, int]]] = {}
    for label in labels:
        runs = per[(label, budget)].runs
        by_patient: dict[str, list[tuple[float, float]]] = {}
        first_values = image_values(runs, region, 1)
        last_values = image_values(runs, region, last)
        for (key, seed), values in first_values.items():
            patient = key.rsplit("/", 2)[-2] if key.count("/") >= 3 else key
            by_patient.setdefault(patient, []).append((float(np.mean(values)), float(np.mean(last_values[key, seed]))))
        for patient, pairs in by_patient.items():
            patients.setdefault(patient, {})[label] = (
                float(np.mean([p[0] for p in pairs])),
                float(np.mean([p[1] for p in pairs])),
                len({key for key, _ in first_values if key.rsplit("/", 2)[-2] == patient}),
            )
    rows = []
    for patient in sorted(patients):
        slices = max(count for _, _, count in patients[patient].values())
        row = [patient, str(slices)]
        for label in labels:
            value = patients[patient].get(label)
            row.append("–" if value is None else f"{100 * value[0]:.1f} / {100 * value[1]:.1f}")
        rows.append(row)
    return [
        f"Per patient (all-slices stream; {region} Dice@1 / Dice@{last}, mean over the patient's slices and runs):",
        "",
        *_table(["patient", "slices", *labels], rows),
    ]


def bench_report_markdown(
    meta: dict[str, Any], runs: Sequence[BenchRun], discussion: str | None = None, paper: PaperNumbers | None = None
) -> str:
    """The whole ``REPORT.md`` from the raw files' contents.

    Args:
        meta: ``bench.json``.
        runs: The runs of ``raw.csv``/``runs.csv``.
        discussion: The hand-written discussion to keep (``None`` = a placeholder).
        paper: The paper's published numbers (default: ``bench/paper_numbers.yaml``).
    """
    paper = paper_numbers() if paper is None else paper
    streams = [stream for stream in meta["streams"] if stream.get("part") != "dev"]  # reported: test parts
    by_stream = {stream["name"]: [run for run in runs if run.stream == stream["name"]] for stream in streams}
    numbers = {name: stream_numbers(stream_runs, MAIN_GROUP) for name, stream_runs in by_stream.items()}
    main_budget = max((run.budget for run in runs if MAIN_GROUP in run.groups), default=10)
    machine = meta.get("machine", {})
    lines = [
        f"# {meta.get('title', 'Benchmark')}",
        "",
        "Generated by `python -m bench` from the raw files in this folder (`raw.csv`, `runs.csv`, "
        "`bench.json`); regenerate with `python -m bench CONFIG --report-only`. Dice in %, measured "
        "prequentially (each image is segmented by the model as adapted by the images before it); "
        "mean ± sd over stream orders (seeds).",
        "",
        f"- Command: `{meta.get('command', '?')}`",
        f"- Started (UTC): {meta.get('date', '?')}",
        f"- Machine: {machine.get('cpu', '?')}, {machine.get('cpus', '?')} logical CPUs; "
        f"torch {machine.get('torch', '?')}, Python {machine.get('python', '?')}; device {meta.get('device', '?')}; "
        f"{meta.get('workers', '?')} worker process(es) × {meta.get('threads_per_worker', '?')} torch thread(s); "
        f"load average at the end {machine.get('load', '?')}",
        f"- Wall time of this invocation: {meta.get('wall_s', float('nan')) / 60:.1f} min "
        f"({meta.get('computed_runs', 0)} runs computed, {meta.get('cached_runs', 0)} taken from the cache); "
        f"CPU time of all {len(runs)} runs in the report: {sum(run.cpu_s for run in runs) / 60:.1f} min",
        *_invocation_lines(meta.get("invocations", []), str(meta.get("date"))),
        f"- Simulated user `{meta.get('user', '?')}`; click budget {main_budget} unless stated; code digest "
        f"`{str(meta.get('code_version', ''))[:12]}`",
    ]
    for task, model in sorted(meta.get("models", {}).items()):
        lines.append(
            f"- {task} model: `{Path(model['path']).name}` SHA-256 `{model['sha256'][:16]}…`, "
            f"click σ {model['click_sigma']:g}"
        )
    failed = meta.get("failed", [])
    if failed:
        lines += ["", f"**{len(failed)} computation(s) failed** in this invocation: " + "; ".join(failed)]
    missing = meta.get("missing", [])
    if missing:
        lines += [
            "",
            f"**Incomplete: {len(missing)} of {meta.get('expected_runs', '?')} runs are missing** "
            "(not computed yet; rerun the same command to add them):",
            ", ".join(
                f"{m['stream']}/{m['strategy']}/b{m['budget']}/o{m.get('order_seed')}/c{m.get('click_seed')}"
                for m in missing[:40]
            )
            + (" …" if len(missing) > 40 else ""),
        ]
    lines += ["", *_streams_section(meta, by_stream)]
    lines += ["", *_overview_section(streams, numbers, main_budget)]
    lines += ["", *_intervals_section(streams, numbers, main_budget)]
    lines += ["", *_sweep_section([run for run in runs if SWEEP_GROUP in run.groups])]
    lines += ["", *_paper_section(streams, numbers, main_budget, paper)]
    for stream in streams:
        lines += ["", *_stream_section(stream, by_stream[stream["name"]], numbers[stream["name"]], main_budget)]
    lines += ["", *_ablation_section(meta, by_stream, main_budget)]
    lines += ["", *_noisy_user_section(meta, by_stream, main_budget)]
    lines += ["", *_analysis_section(streams, numbers, main_budget, paper.ordering)]
    lines += [
        "",
        "## Discussion",
        "",
        DISCUSSION_BEGIN,
        (discussion or DISCUSSION_PLACEHOLDER).strip(),
        DISCUSSION_END,
        "",
    ]
    return "\n".join(lines)


def _invocation_lines(invocations: list[dict[str, Any]], current: str) -> list[str]:
    """When the runs were computed by other invocations than this one (a resumed bench, or a rerun that
    found everything cached): when each ran, how long it took, and how many runs it computed."""
    if not invocations or (len(invocations) == 1 and invocations[0].get("date") == current):
        return []
    total = sum(float(entry.get("wall_s") or 0.0) for entry in invocations)
    parts = [
        f"{entry.get('date', '?')}: {float(entry.get('wall_s') or 0.0) / 60:.1f} min, "
        f"{entry.get('computed_runs', 0)} computed"
        for entry in invocations
    ]
    return [
        f"- The runs were computed by {len(invocations)} invocation(s) ({total / 60:.1f} min in all): "
        + "; ".join(parts)
    ]


def _streams_section(meta: dict[str, Any], by_stream: dict[str, list[BenchRun]]) -> list[str]:
    capped = meta.get("capped", False)
    lines = [
        "## Streams",
        "",
        (
            f"**Capped (a quick look, not the full-length benchmark)**: streams hold the number of images given "
            f"under *used*, chosen by the `{meta.get('subset')}` policy. "
            if capped
            else f"Full length: every stream holds all its images or at least {FULL_LENGTH_IMAGES} "
            f"(`{meta.get('subset')}` policy above that). "
        )
        + "*Slices* says how a brain stream samples its patients: one largest-lesion slice per patient (the "
        "paper's protocol) or all lesion slices (datasets with few patients; their images are not independent, "
        "see the per-patient breakdown). Every order is a different permutation of the same images. Patients "
        "never overlap the source model's training set.",
        "",
    ]
    rows = []
    for stream in meta["streams"]:
        data = stream["data"]
        selection = ", ".join(f"{key}={value}" for key, value in data.items() if key not in ("size",))
        rows.append(
            [
                f"`{stream['name']}`",
                stream["title"],
                SHIFT_DESCRIPTIONS.get(stream["shift"], stream["shift"]),
                stream.get("slices", "–"),
                stream.get("part", "whole"),
                f"{stream['used']} / {stream['available']}",
                str(len(stream["patients"])),
                f"`{selection}`",
            ]
        )
    lines += _table(
        ["stream", "data", "shift", "slices", "part", "used / available images", "patients", "selection"], rows
    )
    lines += [
        "",
        "*Part*: a dataset with enough patients is split by patient (the rule `dev: {every, offset}` in the "
        "config: every `every`-th patient by sorted id from `offset`) into a small *dev* part, on which the "
        "sweep tunes the baselines and OAIMS's learning rate, and the *test* part, on which every number of "
        "this report is measured; *whole* = too few patients to split (tuned on the other dev parts of its task).",
    ]
    for task, source in sorted(meta.get("source_validation", {}).items()):
        data = source["data"]
        selection = ", ".join(f"{key}={value}" for key, value in data.items() if value not in (None, [], False))
        lines += [
            "",
            f"Forgetting ({task}): frozen Dice of the original model vs the model left by the stream, on "
            f"{source['images']} source-domain validation images (`{data['reader']}`, patient-balanced), with "
            "the same simulated user; reported as the drop at the last click (positive = forgot).",
        ]
        del selection
    return lines


def _overview_section(
    streams: list[dict[str, Any]], numbers: dict[str, dict[tuple[str, int], StrategyNumbers]], budget: int
) -> list[str]:
    labels = label_order([label for per in numbers.values() for (label, b) in per if b == budget], MAIN_ORDER)
    lines = [
        f"## Overview: Dice at click {budget} (brain lesion; fundus cup / disc)",
        "",
        "Mean over orders. The best strategy per stream is in bold.",
        "",
    ]
    rows = []
    for stream in streams:
        per = numbers[stream["name"]]
        region = key_region(stream["task"])
        values = {
            label: per[(label, budget)].mean(region, f"dice@{budget}") for label in labels if (label, budget) in per
        }
        best = max((v for v in values.values() if math.isfinite(v)), default=float("nan"))
        row = [stream["name"], SHIFT_DESCRIPTIONS.get(stream["shift"], stream["shift"]).split(" (")[0]]
        for label in labels:
            entry = per.get((label, budget))
            if entry is None:
                row.append("–")
                continue
            text = f"{100 * values[label]:.1f}" if math.isfinite(values[label]) else "–"
            if math.isfinite(values[label]) and values[label] == best:
                text = f"**{text}**"
            if "disc" in regions_of(stream["task"]):
                disc = entry.mean("disc", f"dice@{budget}")
                text += f" / {100 * disc:.1f}" if math.isfinite(disc) else ""
            row.append(text)
        rows.append(row)
    lines += _table(["stream", "shift", *labels], rows)
    lines += ["", f"![Dice at click {budget} per stream]({PLOTS_DIR}/overview.png)"]
    return lines


def _paper_cell(values: tuple[float | None, float | None, float | None] | None, last_only: bool = False) -> str:
    if values is None:
        return "–"
    shown = values[-1:] if last_only else values
    return " / ".join("–" if value is None else f"{value:.1f}" for value in shown)


def _ours_cell(entry: StrategyNumbers | None, region: str, clicks: Sequence[int]) -> str:
    if entry is None:
        return "–"
    values = [entry.mean(region, f"dice@{click}") for click in clicks]
    return " / ".join(f"{100 * value:.1f}" if math.isfinite(value) else "–" for value in values)


def _paper_section(
    streams: list[dict[str, Any]],
    numbers: dict[str, dict[tuple[str, int], StrategyNumbers]],
    budget: int,
    paper_numbers: PaperNumbers,
) -> list[str]:
    methods = list(paper_numbers.methods)
    published = paper_numbers.results
    lines = [
        "## Beside the paper's published numbers",
        "",
        "The paper (method.md §9) used other data (BraTS 2023 and REFUGE2 sources, a 9.8 M-parameter U-Net, "
        "one largest-lesion slice per volume); ours are the shipped small models (0.49 M parameters) on the "
        "public sets in `../shared/data`, so only the *pattern* (which method wins, by how much, where) is "
        "comparable, not the levels. Each block pairs the paper's targets with our streams of the same kind "
        "of shift. Cells: Dice (%) at clicks 1 / 5 / 10 (the paper gives fundus cup Dice at click 10 only); "
        "rows marked *3-click budget* give the Dice at the last of 3 clicks (the paper's ATLAS row).",
        "",
    ]
    header = ["shift", "source", "data", "region", *(paper_numbers.methods[m] for m in methods)]
    rows = []
    groups = list(dict.fromkeys((paper.task, paper.shift) for paper in published))
    for task, shift in groups:
        papers = [paper for paper in published if (paper.task, paper.shift) == (task, shift)]
        title = SHIFT_DESCRIPTIONS[shift].split(" (")[0] + f" ({task})"
        for paper in papers:
            cells = [_paper_cell(paper.dice.get(method), paper.budget < budget) for method in methods]
            suffix = "" if paper.budget >= budget else f", {paper.budget}-click budget"
            rows.append([title, "paper", paper.dataset + suffix, paper.region, *cells])
            title = ""
        region = papers[0].region
        for stream in (s for s in streams if (s["task"], s["shift"]) == (task, shift)):
            per = numbers[stream["name"]]
            for paper_budget in sorted({paper.budget for paper in papers}, reverse=True):
                if paper_budget >= budget:
                    cells = [_ours_cell(per.get((m, budget)), region, reported_clicks(budget)) for m in methods]
                    rows.append([title, "ours", stream["title"], region, *cells])
                else:
                    cells = [_ours_cell(per.get((m, paper_budget)), region, [paper_budget]) for m in methods]
                    rows.append([title, "ours", f"{stream['title']}, {paper_budget}-click budget", region, *cells])
                title = ""
    lines += _table(header, rows)
    return lines


def _stream_section(
    stream: dict[str, Any], runs: list[BenchRun], numbers: dict[tuple[str, int], StrategyNumbers], budget: int
) -> list[str]:
    name = stream["name"]
    regions = regions_of(stream["task"])
    labels = label_order([label for (label, b) in numbers if b == budget], MAIN_ORDER)
    lines = [
        f"## {stream['title']} (`{name}`)",
        "",
        f"{SHIFT_DESCRIPTIONS.get(stream['shift'], stream['shift'])}; {stream['used']} images "
        f"({stream['available']} available), {len(stream['patients'])} patients.",
        "",
    ]
    if not labels:
        return [*lines, "No runs yet."]
    lines += _stream_table(numbers, labels, budget, regions)
    budgets = sorted({b for (_, b) in numbers})
    small = [b for b in budgets if b != budget]
    if small:
        lines += [
            "",
            "Smaller click budgets (Dice at the last click, NoC@85 within the budget):",
            "",
        ]
        budget_labels = label_order([label for (label, b) in numbers if b in small], MAIN_ORDER)
        header = ["strategy", *(f"{region} Dice@{b}" for b in [*small, budget] for region in regions)]
        rows = []
        for label in budget_labels:
            row = [label]
            for b in [*small, budget]:
                entry = numbers.get((label, b))
                for region in regions:
                    row.append(_pct(None if entry is None else entry.stat(region, f"dice@{b}")))
            rows.append(row)
        lines += _table(header, rows)
    lines += [
        "",
        f"![Dice vs click on {name}]({PLOTS_DIR}/{name}_dice_vs_click.png)",
        "",
        "Learning curves — gain over the frozen model on the same image (paired by order and clicks), along "
        "the stream; and the raw Dice along the stream:",
        "",
        f"![Learning curves on {name}]({PLOTS_DIR}/{name}_learning_curves.png)",
        f"![Dice along the stream on {name}]({PLOTS_DIR}/{name}_stream_dice.png)",
    ]
    skipped = sorted({key for run in runs for key in run.result.skipped})
    if skipped:
        lines += ["", f"Skipped (empty label): {', '.join(skipped)}"]
    return lines


def _ablation_section(meta: dict[str, Any], by_stream: dict[str, list[BenchRun]], budget: int) -> list[str]:
    lines = [
        "## Ablations",
        "",
        "Asked for by the paper's reviewers: Mid-Interaction without the click-centred (CCG) loss; the CCG loss "
        "without its class constraint and with a flat window instead of a Gaussian; the CCG σ (paper: 3). "
        "Same streams, orders and clicks as above.",
        "",
    ]
    described: dict[str, str] = {}
    for ablation in meta.get("ablations", []):
        for strategy in ablation["strategies"]:
            overrides = ", ".join(f"{key}={value}" for key, value in strategy["overrides"].items()) or "defaults"
            described[strategy["label"]] = f"{strategy['name']} ({overrides})"
    found = False
    for name, runs in by_stream.items():
        ablation_runs = [run for run in runs if ABLATION_GROUP in run.groups]
        if not ablation_runs:
            continue
        found = True
        numbers = stream_numbers(ablation_runs)
        task = ablation_runs[0].task
        labels = [label for label in described if (label, budget) in numbers]
        lines += [f"### `{name}`", ""]
        lines += _stream_table(numbers, labels, budget, regions_of(task))
        lines += ["", f"![Ablations on {name}]({PLOTS_DIR}/{name}_ablation_dice_vs_click.png)", ""]
    if described:
        lines += ["Labels: " + "; ".join(f"`{label}` = {text}" for label, text in described.items())]
    if not found:
        lines.append("No ablation runs yet.")
    return lines


def _noisy_user_section(meta: dict[str, Any], by_stream: dict[str, list[BenchRun]], budget: int) -> list[str]:
    """Frozen vs the adapting strategies under imperfect simulated users: does adapting still help, or does it
    learn the noise? One block per user on each stream, the exact user of the main table first."""
    lines = [
        "## Imperfect users",
        "",
        "Does adapting from clicks still help when the user is imperfect, or does the model learn the noise? "
        "Users: `jitterN` moves every click by a Gaussian jitter of N px, `wrongN` gives N % of the clicks the "
        "wrong class, `stopN` stops clicking on an image once every labelled class reaches Dice N "
        "(`clickadapt.clicks.simulators.NoisyUser`). Cells: Dice (%) with its 95 % bootstrap interval over images "
        "and n (brain lesion / fundus cup); *vs frozen*: the paired difference to the frozen model under the same "
        "user (same images and clicks' seeds), ✔ / ✘ only when its interval excludes 0; *vs exact user*: the "
        "same strategy's Dice at the last click minus its Dice with the exact user of the main table, paired by "
        "image (the price of the noise).",
        "",
    ]
    experiments = meta.get("noisy_users", [])
    if not experiments:
        return [*lines, "No noisy-user experiments in this suite."]
    clicks = reported_clicks(budget)
    found = False
    for name, runs in by_stream.items():
        noisy = [run for run in runs if NOISY_GROUP in run.groups and run.budget == budget]
        if not noisy:
            continue
        found = True
        region = key_region(noisy[0].task)
        exact_user = str(meta.get("user", "oaims"))
        names = {run.result.strategy_name for run in noisy}
        exact = [
            run
            for run in runs
            if MAIN_GROUP in run.groups
            and run.budget == budget
            and run.label in names
            and run.result.user == exact_user
        ]
        blocks = [(exact_user, exact)] + [
            (user, [run for run in noisy if run.result.user == user])
            for user in dict.fromkeys(run.result.user for run in noisy)
            if user != exact_user
        ]
        exact_by_name = {run.result.strategy_name: run for run in exact}
        header = ["user", "strategy", *(f"Dice@{click}" for click in clicks), "clicks / image"]
        header += [f"vs frozen @{click}" for click in clicks] + [f"vs exact user @{budget}"]
        rows = []
        for user, block in blocks:
            if not block:
                continue
            numbers = stream_numbers(block)
            frozen = next((run.label for run in block if run.result.strategy_name == FROZEN_LABEL), None)
            for label in label_order([run.label for run in block], MAIN_ORDER):
                mine = [run for run in block if run.label == label]
                strategy = mine[0].result.strategy_name
                row = [f"`{user}`", strategy]
                row += [_interval_cell(dice_interval(mine, region, click)) for click in clicks]
                images = [image for run in mine for image in run.result.images]
                row.append(f"{np.mean([len(image.clicks) for image in images]):.1f}" if images else "–")
                for click in clicks:
                    same = label == frozen or frozen is None
                    row.append(
                        "–" if same else _verdict_cell(compare(numbers, label, frozen or "", budget, region, click))
                    )
                reference = exact_by_name.get(strategy)
                if user == exact_user or reference is None:
                    row.append("–")
                else:
                    references = [run for run in exact if run.result.strategy_name == strategy]
                    price = paired_difference(
                        image_values(mine, region, budget), image_values(references, region, budget)
                    ).scaled(100.0)
                    row.append(_difference_cell(price))
                rows.append(row)
        lines += [f"### `{name}`", "", *_table(header, rows), ""]
    if not found:
        lines.append("No noisy-user runs computed yet.")
    return lines


def _difference_cell(interval: Interval) -> str:
    if interval.n == 0:
        return "–"
    return f"{interval.mean:+.1f} [{interval.low:+.1f}, {interval.high:+.1f}] n={interval.n}"


def _analysis_section(
    streams: list[dict[str, Any]],
    numbers: dict[str, dict[tuple[str, int], StrategyNumbers]],
    budget: int,
    ordering: Sequence[tuple[str, str]],
) -> list[str]:
    lines = [
        "## Analysis (generated from the numbers)",
        "",
        f"### Does the paper's ordering hold? (Dice at click {budget}, brain lesion / fundus cup)",
        "",
        "Each cell: mean paired difference in Dice points (first minus second, paired by image and click seed) "
        "[95 % bootstrap interval over images] and n images; ✔ = the interval is above 0, ✘ = below 0, "
        "≈ = it contains 0 (unresolved).",
        "",
    ]
    header = ["stream", *(f"{a} > {b}" for a, b in ordering)]
    rows = []
    tallies: dict[tuple[str, str], dict[str, int]] = {pair: {} for pair in ordering}
    for stream in streams:
        region = key_region(stream["task"])
        row = [stream["name"]]
        for pair in ordering:
            comparison = compare(numbers[stream["name"]], pair[0], pair[1], budget, region, budget)
            row.append(_verdict_cell(comparison))
            if comparison is not None:
                tallies[pair][comparison[1]] = tallies[pair].get(comparison[1], 0) + 1
        rows.append(row)
    lines += _table(header, rows)
    lines += [""]
    lines += [*_ordering_by_click(streams, numbers, budget, ordering), ""]
    for (better, worse), tally in tallies.items():
        total = sum(tally.values())
        if not total:
            continue
        held = tally.get("holds", 0)
        against = tally.get("reversed", 0)
        lines.append(
            f"- `{better}` > `{worse}`: really better (interval above 0) on {held} of {total} streams, really worse "
            f"on {against}, unresolved on {total - held - against}."
        )
    lines += ["", *_shift_effect_section(streams, numbers, budget)]
    return lines


def _ordering_by_click(
    streams: list[dict[str, Any]],
    numbers: dict[str, dict[tuple[str, int], StrategyNumbers]],
    budget: int,
    ordering: Sequence[tuple[str, str]],
) -> list[str]:
    """Per pair of the paper's ordering, on how many streams it holds on average at clicks 1, 5 and T."""
    clicks = reported_clicks(budget)
    rows = []
    for better, worse in ordering:
        row = [f"{better} > {worse}"]
        for click in clicks:
            verdicts = [
                comparison[1]
                for stream in streams
                if (
                    comparison := compare(
                        numbers[stream["name"]], better, worse, budget, key_region(stream["task"]), click
                    )
                )
                is not None
            ]
            held = sum(verdict == "holds" for verdict in verdicts)
            against = sum(verdict == "reversed" for verdict in verdicts)
            row.append(f"{held} / {len(verdicts)} (✘ {against})" if verdicts else "–")
        rows.append(row)
    return [
        "Streams on which each ordering really holds (paired interval above 0; in parentheses: really reversed), "
        "by click:",
        "",
        *_table(["ordering", *(f"Dice@{click}" for click in clicks)], rows),
    ]


def _shift_effect_section(
    streams: list[dict[str, Any]], numbers: dict[str, dict[tuple[str, int], StrategyNumbers]], budget: int
) -> list[str]:
    lines = [
        "### Is the gain largest under large shifts and with few clicks?",
        "",
        "The frozen model's Dice at click 1 measures how far each stream is from the source domain for this "
        "model (lower = larger shift). Gains are OAIMS minus frozen, in Dice points, per click of the "
        f"{budget}-click runs, and at the last click of the smaller budgets.",
        "",
    ]
    small_budgets = sorted({b for per in numbers.values() for (label, b) in per if label == "oaims" and b < budget})
    header = [
        "stream",
        "shift",
        "frozen Dice@1",
        *(f"gain @{click}" for click in reported_clicks(budget)),
        *(f"gain, {b}-click budget" for b in small_budgets),
    ]
    rows = []
    points: list[tuple[float, float]] = []
    for stream in streams:
        per = numbers[stream["name"]]
        region = key_region(stream["task"])
        frozen = per.get(("frozen", budget))
        oaims = per.get(("oaims", budget))
        if frozen is None or oaims is None:
            continue
        start = frozen.mean(region, "dice@1")
        gains = [
            100 * (oaims.mean(region, f"dice@{c}") - frozen.mean(region, f"dice@{c}")) for c in reported_clicks(budget)
        ]
        budget_gains = []
        for b in small_budgets:
            o, f = per.get(("oaims", b)), per.get(("frozen", b))
            budget_gains.append(
                "–"
                if o is None or f is None
                else f"{100 * (o.mean(region, f'dice@{b}') - f.mean(region, f'dice@{b}')):+.1f}"
            )
        rows.append(
            [
                stream["name"],
                stream["shift"],
                f"{100 * start:.1f}",
                *(f"{gain:+.1f}" for gain in gains),
                *budget_gains,
            ]
        )
        if math.isfinite(start) and math.isfinite(gains[-1]):
            points.append((start, gains[-1]))
    if not rows:
        return [*lines, "Needs frozen and oaims runs."]
    lines += _table(header, rows)
    lines.append("")
    if len(points) >= 3:
        from scipy.stats import spearmanr

        correlation = float(spearmanr([point[0] for point in points], [point[1] for point in points]).statistic)
        direction = "larger" if correlation < 0 else "smaller"
        lines.append(
            f"- Spearman correlation between the frozen Dice@1 and the OAIMS gain at click {budget} over "
            f"{len(points)} streams: {correlation:+.2f} (the gain is {direction} where the frozen model starts "
            "lower, i.e. under larger shift, when the correlation is negative)."
        )
    for kind in ("small", "large", "modality", "pathology"):
        kind_gains = [float(row[3 + len(reported_clicks(budget)) - 1]) for row in rows if row[1] == kind]
        if kind_gains:
            lines.append(
                f"- {SHIFT_DESCRIPTIONS[kind].split(' (')[0]}: mean OAIMS gain at click {budget} "
                f"{np.mean(kind_gains):+.1f} over {len(kind_gains)} stream(s)."
            )
    return lines


def _existing_discussion(path: Path) -> str | None:
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    begin, end = text.find(DISCUSSION_BEGIN), text.find(DISCUSSION_END)
    if begin < 0 or end < begin:
        return None
    kept = text[begin + len(DISCUSSION_BEGIN) : end].strip()
    return None if not kept or kept == DISCUSSION_PLACEHOLDER else kept


def write_bench_report(results_dir: str | Path) -> list[Path]:
    """(Re)generate ``REPORT.md`` and the plots of a bench output folder from its raw files alone.

    The hand-written discussion of an existing ``REPORT.md`` (between :data:`DISCUSSION_BEGIN` and
    :data:`DISCUSSION_END`) is kept.

    Returns:
        The paths written (the report first).

    Raises:
        FileNotFoundError: If a raw file is missing.
    """
    results_dir = Path(results_dir)
    meta, runs = read_raw(results_dir)
    report = results_dir / REPORT_MD
    text = bench_report_markdown(meta, runs, _existing_discussion(report))
    atomic_write_bytes(report, text.encode("utf-8"))
    return [report, *write_plots(meta, runs, results_dir)]
