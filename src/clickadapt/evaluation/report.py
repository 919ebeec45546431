"""Raw results, summary tables and plots of evaluation runs.

An output folder holds:

- ``per_image.json``: the complete raw record of every run (strategy × seed): per image the clicks,
  Dice per region per click, times and model versions, plus the forgetting measurement.
- ``per_image.csv``: the same per-image data flat, one row per (run, image, click, region).
- ``summary.json`` / ``summary.md``: per strategy, mean ± sd over seeds of Dice at clicks 1, 5 and T
  per region, NoC@80/85/90 with failures, Dice-vs-click AUC, forgetting, and median times.
- ``dice_vs_click.png`` and ``stream_dice.png``: see :mod:`clickadapt.evaluation.plots`.

Everything but the raw files is derived, and :func:`write_report` regenerates it from them alone
(from the JSON, or from the CSV when the JSON is absent — the CSV lacks only the forgetting data).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clickadapt.clicks.click import Click
from clickadapt.evaluation.metrics import DEFAULT_NOC_THRESHOLDS, dice_auc, noc_key, noc_summary
from clickadapt.evaluation.plots import plot_dice_vs_click, plot_stream_dice
from clickadapt.evaluation.stream import ImageRecord, StreamResult
from clickadapt.models.checkpoint import atomic_write_bytes

RESULTS_FORMAT = 1
PER_IMAGE_JSON = "per_image.json"
PER_IMAGE_CSV = "per_image.csv"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
DICE_VS_CLICK_PNG = "dice_vs_click.png"
STREAM_DICE_PNG = "stream_dice.png"
SUMMARY_NOC_THRESHOLD = 0.85
CSV_COLUMNS = (
    "strategy",
    "strategy_name",
    "overrides",
    "seed",
    "order_seed",
    "user",
    "budget",
    "task",
    "position",
    "image_key",
    "click",
    "click_row",
    "click_col",
    "click_label",
    "model_version",
    "region",
    "dice",
    "forward_s",
    "update_s",
    "finish_s",
    "version_after",
)


# ---------------------------------------------------------------------------------------------- raw


def result_rows(results: Sequence[StreamResult]) -> list[dict[str, Any]]:
    """Flatten runs into CSV rows, one per (run, image, click, region).

    Clicks after a perfect mask (not made) have empty click, version and time fields and repeat the
    last Dice.
    """
    rows = []
    for result in results:
        overrides = json.dumps(result.overrides, sort_keys=True)
        for image in result.images:
            for index in range(result.budget):
                made = index < len(image.clicks)
                click = image.clicks[index] if made else None
                for region in result.regions:
                    rows.append(
                        {
                            "strategy": result.strategy,
                            "strategy_name": result.strategy_name,
                            "overrides": overrides,
                            "seed": result.click_seed,
                            "order_seed": "" if result.order_seed is None else result.order_seed,
                            "user": result.user,
                            "budget": result.budget,
                            "task": result.task,
                            "position": image.position,
                            "image_key": image.key,
                            "click": index + 1,
                            "click_row": click.row if click else "",
                            "click_col": click.col if click else "",
                            "click_label": click.label if click else "",
                            "model_version": image.versions[index] if made else "",
                            "region": region,
                            "dice": repr(image.dice[region][index]),
                            "forward_s": repr(image.forward_s[index]) if made else "",
                            "update_s": repr(image.update_s[index]) if made else "",
                            "finish_s": repr(image.finish_s),
                            "version_after": image.version_after,
                        }
                    )
    return rows


def write_results(results: Sequence[StreamResult], output: str | Path) -> list[Path]:
    """Write the raw results (JSON and CSV) and the report derived from them.

    Returns:
        The paths written.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    record = {"format": RESULTS_FORMAT, "runs": [result.to_dict() for result in results]}
    json_path = output / PER_IMAGE_JSON
    atomic_write_bytes(json_path, (json.dumps(_finite(record), indent=1) + "\n").encode("utf-8"))
    csv_path = output / PER_IMAGE_CSV
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(result_rows(results))
    return [json_path, csv_path, *write_report(output)]


def read_results_json(path: str | Path) -> list[StreamResult]:
    """Runs from a ``per_image.json``.

    Raises:
        ValueError: Naming the file if it is not a results file of a known format.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("format") != RESULTS_FORMAT:
            raise ValueError(f"format {record.get('format')!r} is not {RESULTS_FORMAT}")
        return [StreamResult.from_dict(run) for run in record["runs"]]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} is not a clickadapt results file: {error}") from None


def _optional_float(text: str) -> float | None:
    return None if text == "" else float(text)


def read_results_csv(path: str | Path) -> list[StreamResult]:
    """Runs from a ``per_image.csv`` (everything but the skipped samples and the forgetting data).

    Raises:
        ValueError: Naming the file and the missing columns if it is not a results CSV.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = sorted(set(CSV_COLUMNS) - set(reader.fieldnames or []))
        if missing:
            raise ValueError(f"{path} is not a clickadapt results CSV: missing columns {missing}")
        rows = list(reader)
    runs: dict[tuple[str, str, str], StreamResult] = {}
    images: dict[tuple[str, str, str], dict[int, ImageRecord]] = {}
    for row in rows:
        run_key = (row["strategy"], row["order_seed"], row["seed"])  # one run per (order seed, click seed)
        if run_key not in runs:
            runs[run_key] = StreamResult(
                strategy=row["strategy"],
                strategy_name=row["strategy_name"],
                overrides=json.loads(row["overrides"] or "{}"),
                task=row["task"],
                regions=[],
                user=row["user"],
                budget=int(row["budget"]),
                order_seed=None if row["order_seed"] == "" else int(row["order_seed"]),
                click_seed=int(row["seed"]),
            )
            images[run_key] = {}
        result = runs[run_key]
        if row["region"] not in result.regions:
            result.regions.append(row["region"])
        position = int(row["position"])
        image = images[run_key].get(position)
        if image is None:
            image = ImageRecord(
                position=position,
                key=row["image_key"],
                clicks=[],
                dice={},
                forward_s=[],
                update_s=[],
                finish_s=float(row["finish_s"]),
                versions=[],
                version_after=int(row["version_after"]),
            )
            images[run_key][position] = image
        image.dice.setdefault(row["region"], []).append(float(row["dice"]))
        click_number = int(row["click"])
        if row["click_row"] != "" and len(image.clicks) < click_number:
            image.clicks.append(Click(int(row["click_row"]), int(row["click_col"]), int(row["click_label"])))
            image.versions.append(int(row["model_version"]))
            image.forward_s.append(float(row["forward_s"]))
            image.update_s.append(float(row["update_s"]))
    for run_key, result in runs.items():
        result.images = [images[run_key][position] for position in sorted(images[run_key])]
    return list(runs.values())


def read_results(results_dir: str | Path) -> list[StreamResult]:
    """Runs from a results folder: ``per_image.json`` if present, else ``per_image.csv``.

    Raises:
        FileNotFoundError: If the folder holds neither.
    """
    results_dir = Path(results_dir)
    if (results_dir / PER_IMAGE_JSON).is_file():
        return read_results_json(results_dir / PER_IMAGE_JSON)
    if (results_dir / PER_IMAGE_CSV).is_file():
        return read_results_csv(results_dir / PER_IMAGE_CSV)
    raise FileNotFoundError(f"{results_dir} holds neither {PER_IMAGE_JSON} nor {PER_IMAGE_CSV}")


# ------------------------------------------------------------------------------------------ summary


def reported_clicks(budget: int) -> list[int]:
    """The clicks whose Dice the summary reports: 1, 5 and the budget (those within the budget)."""
    return sorted({click for click in (1, 5, budget) if 1 <= click <= budget})


def _statistic(per_seed: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds (sd 0 for one seed), with the per-seed values."""
    values = np.asarray(per_seed, dtype=np.float64)
    finite = values[np.isfinite(values)]
    mean = float(finite.mean()) if finite.size else float("nan")
    sd = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return {"mean": mean, "sd": sd, "per_seed": [float(v) for v in values]}


def _run_metrics(result: StreamResult, region: str) -> dict[str, float]:
    """Metrics of one run on one region, each a mean over its images."""
    curves = result.curves(region)
    metrics: dict[str, float] = {}
    for click in reported_clicks(result.budget):
        metrics[f"dice@{click}"] = float(curves[:, click - 1].mean()) if len(curves) else float("nan")
    noc = noc_summary(list(curves), DEFAULT_NOC_THRESHOLDS, result.budget)
    metrics.update(noc)
    metrics["auc"] = float(np.mean([dice_auc(curve) for curve in curves])) if len(curves) else float("nan")
    if result.validation_before is not None and result.validation_after is not None:
        before, after = result.validation_before[region], result.validation_after[region]
        for click in reported_clicks(result.budget):
            metrics[f"source_dice_before@{click}"] = float(before[click - 1])
            metrics[f"source_dice_after@{click}"] = float(after[click - 1])
            metrics[f"forgetting@{click}"] = float(before[click - 1]) - float(after[click - 1])
    return metrics


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def summarise(results: Sequence[StreamResult]) -> dict[str, Any]:
    """Summary statistics per strategy over its seeds.

    Returns:
        ``{"runs": n, "strategies": [{"strategy", "strategy_name", "overrides", "user", "budget",
        "seeds", "images", "final_versions", "regions": {region: {metric: {"mean", "sd",
        "per_seed"}}}, "time": {...}}, ...]}``; Dice values are fractions.

    Raises:
        ValueError: If runs of one strategy disagree on the budget, user or regions.
    """
    groups: dict[str, list[StreamResult]] = {}
    for result in results:
        groups.setdefault(result.strategy, []).append(result)
    strategies = []
    for name, runs in groups.items():
        first = runs[0]
        for run in runs[1:]:
            if (run.budget, run.user, run.regions) != (first.budget, first.user, first.regions):
                raise ValueError(f"runs of strategy {name!r} differ in budget, user or regions; cannot summarise them")
        regions: dict[str, dict[str, Any]] = {}
        for region in first.regions:
            per_run = [_run_metrics(run, region) for run in runs]
            metric_names = [metric for metric in per_run[0] if all(metric in metrics for metrics in per_run)]
            regions[region] = {metric: _statistic([metrics[metric] for metrics in per_run]) for metric in metric_names}
        forward = [value for run in runs for image in run.images for value in image.forward_s]
        update = [value for run in runs for image in run.images for value in image.update_s]
        finish = [image.finish_s for run in runs for image in run.images]
        strategies.append(
            {
                "strategy": name,
                "strategy_name": first.strategy_name,
                "overrides": first.overrides,
                "task": first.task,
                "user": first.user,
                "budget": first.budget,
                "seeds": [run.click_seed for run in runs],
                "order_seeds": [run.order_seed for run in runs],
                "images": [len(run.images) for run in runs],
                "skipped": sorted({key for run in runs for key in run.skipped}),
                "final_versions": [run.final_version for run in runs],
                "regions": regions,
                "time": {
                    "forward_s_median": _median(forward),
                    "update_s_median": _median(update),
                    "click_s_median": _median([f + u for f, u in zip(forward, update, strict=True)]),
                    "finish_s_median": _median(finish),
                },
            }
        )
    return {"runs": len(results), "strategies": strategies}


def _finite(value: Any) -> Any:
    """Replace NaN/inf by ``None`` so that the JSON is standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _percent(statistic: dict[str, Any] | None, seeds: int) -> str:
    if statistic is None or statistic["mean"] is None or not math.isfinite(statistic["mean"]):
        return "–"
    text = f"{100 * statistic['mean']:.1f}"
    return f"{text} ± {100 * statistic['sd']:.1f}" if seeds > 1 else text


def _plain(statistic: dict[str, Any] | None, seeds: int, digits: int = 2) -> str:
    if statistic is None or statistic["mean"] is None or not math.isfinite(statistic["mean"]):
        return "–"
    text = f"{statistic['mean']:.{digits}f}"
    return f"{text} ± {statistic['sd']:.{digits}f}" if seeds > 1 else text


def _milliseconds(seconds: float | None) -> str:
    return "–" if seconds is None or not math.isfinite(seconds) else f"{1000 * seconds:.0f}"


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown tables: one per region, and one of times."""
    strategies = summary["strategies"]
    if not strategies:
        return "# Evaluation summary\n\nNo runs.\n"
    first = strategies[0]
    budget = first["budget"]
    clicks = reported_clicks(budget)
    noc = noc_key(SUMMARY_NOC_THRESHOLD)
    lines = [
        "# Evaluation summary",
        "",
        f"Task **{first['task']}**, simulated user **{first['user']}**, budget **{budget}** clicks, "
        f"runs (order seed, click seed) {list(zip(first.get('order_seeds', []), first['seeds'], strict=False))}, "
        f"{first['images'][0]} images per stream. Dice (%) is prequential "
        "(measured while the model adapts); mean ± sd over seeds. NoC = clicks to reach "
        f"{noc} % Dice (failures count as {budget}); failures = images per seed that never reach it; "
        "AUC = normalised area under the Dice-vs-click curve; forgetting = drop of the frozen "
        f"source-validation Dice at click {budget} after the stream.",
        "",
    ]
    for region in first["regions"]:
        header = [*(f"Dice@{click}" for click in clicks), f"NoC@{noc}", f"failures@{noc}", "AUC", "forgetting"]
        lines += [f"## {region}", "", "| strategy | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
        for entry in strategies:
            metrics = entry["regions"].get(region, {})
            seeds = len(entry["seeds"])
            images = entry["images"][0] if entry["images"] else 0
            failures = metrics.get(f"failures@{noc}")
            cells = [
                *(_percent(metrics.get(f"dice@{click}"), seeds) for click in clicks),
                _plain(metrics.get(f"noc@{noc}"), seeds),
                "–" if failures is None else f"{_plain(failures, 1, 1)} / {images}",
                _percent(metrics.get("auc"), seeds),
                _percent(metrics.get(f"forgetting@{budget}"), seeds),
            ]
            lines.append(f"| {entry['strategy']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Time (median, ms)",
        "",
        "| strategy | forward per click | update per click | finish per image | model updates |",
        "|---|---|---|---|---|",
    ]
    for entry in strategies:
        time_stats = entry["time"]
        updates = ", ".join(str(version) for version in entry["final_versions"])
        lines.append(
            f"| {entry['strategy']} | {_milliseconds(time_stats['forward_s_median'])} | "
            f"{_milliseconds(time_stats['update_s_median'])} | {_milliseconds(time_stats['finish_s_median'])} | "
            f"{updates} |"
        )
    skipped = sorted({key for entry in strategies for key in entry["skipped"]})
    if skipped:
        lines += ["", f"Skipped (empty label, nothing to click): {', '.join(skipped)}"]
    return "\n".join(lines) + "\n"


def write_report(results_dir: str | Path, moving_average: int | None = None) -> list[Path]:
    """(Re)generate the summary and plots of a results folder from its raw files alone.

    Args:
        results_dir: A folder written by :func:`write_results`.
        moving_average: Window (images) of the along-the-stream plot; ``None`` = about a tenth of the
            stream.

    Returns:
        The paths written: ``summary.json``, ``summary.md``, ``dice_vs_click.png``, ``stream_dice.png``.
    """
    results_dir = Path(results_dir)
    results = read_results(results_dir)
    summary = _finite(summarise(results))
    paths = [results_dir / name for name in (SUMMARY_JSON, SUMMARY_MD, DICE_VS_CLICK_PNG, STREAM_DICE_PNG)]
    atomic_write_bytes(paths[0], (json.dumps(summary, indent=1) + "\n").encode("utf-8"))
    atomic_write_bytes(paths[1], summary_markdown(summary).encode("utf-8"))
    plot_dice_vs_click(results, paths[2])
    plot_stream_dice(results, paths[3], moving_average)
    return paths
