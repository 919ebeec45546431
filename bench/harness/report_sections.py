"""The report's sections computed from intervals and paired comparisons: intervals, the sweep, per-patient
breakdowns, imperfect users, and the generated analysis (the paper's ordering, the effect of the shift)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.harness.constants import (
    FROZEN_LABEL,
    MAIN_GROUP,
    NOISY_GROUP,
    SHIFT_DESCRIPTIONS,
)
from bench.harness.numbers import (
    MAIN_ORDER,
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
from bench.harness.raw import BenchRun
from bench.harness.report_cells import (
    difference_cell,
    interval_cell,
    markdown_table,
    verdict_cell,
)
from clickadapt.evaluation.report import reported_clicks
from clickadapt.evaluation.statistics import paired_difference

logger = logging.getLogger(__name__)


def intervals_section(
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
                    interval_cell(dice_interval(entry.runs, region, 1, before_update=True)),
                    *(interval_cell(dice_interval(entry.runs, region, c)) for c in clicks),
                ]
                for click in clicks:
                    row.append(
                        "(reference)"
                        if label == FROZEN_LABEL
                        else verdict_cell(compare(per, label, FROZEN_LABEL, budget, region, click))
                    )
                rows.append(row)
            lines += ["", f"### {stream['title']} (`{stream['name']}`, {stream.get('slices', '?')}) — {region}", ""]
            lines += markdown_table(header, rows)
        if stream.get("slices") == "all slices":
            lines += ["", *per_patient_table(per, labels, budget, key_region(stream["task"]))]
    return lines


def sweep_section(runs: Sequence[BenchRun]) -> list[str]:
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
    return lines + markdown_table(
        ["task", "strategy", "candidate", "overrides", "dev Dice over clicks", "chosen"], rows
    )


def per_patient_table(
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
        *markdown_table(["patient", "slices", *labels], rows),
    ]


def noisy_user_section(meta: dict[str, Any], by_stream: dict[str, list[BenchRun]], budget: int) -> list[str]:
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
                row += [interval_cell(dice_interval(mine, region, click)) for click in clicks]
                images = [image for run in mine for image in run.result.images]
                row.append(f"{np.mean([len(image.clicks) for image in images]):.1f}" if images else "–")
                for click in clicks:
                    same = label == frozen or frozen is None
                    row.append(
                        "–" if same else verdict_cell(compare(numbers, label, frozen or "", budget, region, click))
                    )
                reference = exact_by_name.get(strategy)
                if user == exact_user or reference is None:
                    row.append("–")
                else:
                    references = [run for run in exact if run.result.strategy_name == strategy]
                    price = paired_difference(
                        image_values(mine, region, budget), image_values(references, region, budget)
                    ).scaled(100.0)
                    row.append(difference_cell(price))
                rows.append(row)
        lines += [f"### `{name}`", "", *markdown_table(header, rows), ""]
    if not found:
        lines.append("No noisy-user runs computed yet.")
    return lines


def analysis_section(
    streams: list[dict[str, Any]],
    numbers: dict[str, dict[tuple[str, int], StrategyNumbers]],
    budget: int,
    ordering: Sequence[tuple[str, str]],
) -> list[str]:
    """The generated analysis: whether each pair of the paper's ordering holds per stream (paired intervals), by click,
    and the effect of the shift."""
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
            row.append(verdict_cell(comparison))
            if comparison is not None:
                tallies[pair][comparison[1]] = tallies[pair].get(comparison[1], 0) + 1
        rows.append(row)
    lines += markdown_table(header, rows)
    lines += [""]
    lines += [*ordering_by_click(streams, numbers, budget, ordering), ""]
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
    lines += ["", *shift_effect_section(streams, numbers, budget)]
    return lines


def ordering_by_click(
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
        *markdown_table(["ordering", *(f"Dice@{click}" for click in clicks)], rows),
    ]


def shift_effect_section(
    streams: list[dict[str, Any]], numbers: dict[str, dict[tuple[str, int], StrategyNumbers]], budget: int
) -> list[str]:
    """Whether the gain of the adapting strategies over frozen grows with the kind of shift and with fewer clicks."""
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
    lines += markdown_table(header, rows)
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
