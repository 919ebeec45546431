"""The Markdown report of the latency benchmark (``bench/results/latency.md``) and its raw JSON beside it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.speed.results import median_ms, p95_ms
from bench.speed.settings import TARGETS_MS


def _ms(value: float | None) -> str:
    """Milliseconds without decimals, ``–`` for none."""
    return "–" if value is None else f"{value:.0f}"


def _pair(values: Sequence[float]) -> str:
    """``median / p95`` in ms of seconds."""
    return f"{_ms(median_ms(values))} / {_ms(p95_ms(values))}"


def _dice_text(dice: dict[str, list[float]], trained: bool, budget: int) -> str:
    """Dice (%) after clicks 1 / 5 / T per region, or ``untrained``."""
    if not trained:
        return "untrained"
    parts = []
    for region, curve in dice.items():
        if curve:
            picks = [curve[0], curve[min(4, len(curve) - 1)], curve[-1]]
            parts.append(f"{region} " + "/".join(f"{100 * value:.1f}" for value in picks))
    return "; ".join(parts)


def _find_run(report: dict[str, Any], task: str, strategy: str, label: str = "default") -> dict[str, Any] | None:
    """The raw in-process run of ``task`` / ``strategy`` / ``label``, if measured."""
    for run in report["runs"]:
        spec = run["spec"]
        if spec["task"] == task and spec["strategy"] == strategy and spec["label"] == label:
            return run
    return None


def target_rows(report: dict[str, Any]) -> list[tuple[str, float | None, float]]:
    """(target, measured median ms or ``None``, limit ms) for each of issue 6's targets."""
    picks = {
        "frozen click-to-mask median, brain 256": ("brain", "frozen", "click_s"),
        "frozen click-to-mask median, fundus 256": ("fundus", "frozen", "click_s"),
        "Mid-Interaction click-to-mask median, brain 256": ("brain", "oaims", "later_click_s"),
        "Mid-Interaction click-to-mask median, fundus 256": ("fundus", "oaims", "later_click_s"),
        "Post-Interaction finish median, brain 256": ("brain", "oaims", "finish_s"),
        "Post-Interaction finish median, fundus 256": ("fundus", "oaims", "finish_s"),
    }
    rows = []
    for name, limit in TARGETS_MS.items():
        task, strategy, key = picks[name]
        run = _find_run(report, task, strategy)
        rows.append((name, median_ms(run[key]) if run is not None else None, limit))
    return rows


def render_report(report: dict[str, Any]) -> str:
    """The Markdown report of :func:`bench.speed.benchmark.run_benchmark`'s raw results."""
    machine = report["machine"]
    settings = report["settings"]
    lines = [
        "# Click latency",
        "",
        "How long a person waits from a click to the mask on screen, measured by a simulated user driving",
        "`InteractiveSession` over a real stream (one session per image, one shared adapting model, as in",
        "`clickadapt evaluate` and in the server). Times are wall-clock medians / 95th percentiles in ms.",
        "",
        f"- Command: `{report['command']}`",
        f"- Date: {machine['date']}",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores; Python {machine['python']}, torch {machine['torch']}; "
        f"device {machine['device']}" + (f" ({machine['gpu']})" if "gpu" in machine else ""),
        f"- Load at start: {machine['load']}",
        f"- Load at end: {machine.get('load_end', 'unknown')}",
        f"- User `{settings['user']}`, seed {settings['seed']}, budget {settings['budget']} clicks; "
        f"threads {settings['threads'] or 'torch default'}",
    ]
    for task, description in report["streams"].items():
        lines.append(f"- Stream {task}: {description}")
    lines += [f"- Note: {note}" for note in report["notes"]]
    lines += ["", "## Targets (issue 6, 2-core CPU)", "", "| target | measured median (ms) | limit (ms) | met |"]
    lines.append("|---|---|---|---|")
    for name, measured, limit in target_rows(report):
        met = "–" if measured is None else ("yes" if measured <= limit else "no")
        lines.append(f"| {name} | {_ms(measured)} | {limit:.0f} | {met} |")
    lines += [
        "",
        "## In-process (`InteractiveSession`)",
        "",
        "Click→mask: everything `add_click` does (click maps, forwards, update, argmax). Clicks 2..T: with `oaims`",
        "these are the Mid-Interaction clicks; *MI update* is the strategy hook alone. *Finish*: `finish()`, with",
        "`oaims` the Post-Interaction update. Dice (%) after clicks 1 / 5 / T, mean over the stream's images.",
        (
            "Each row runs in a fresh process; peak RSS is that process's (`VmHWM`, else `getrusage`), "
            "baseline = after loading."
            if settings["isolate"]
            else "All rows ran in one process: peak RSS is that process's peak so far."
        ),
        "",
        "| task | size | strategy | variant | threads | images | click→mask | first click | clicks 2..T | MI update "
        "| finish | peak RSS MiB (baseline) | Dice @1/5/T |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        spec = run["spec"]
        baseline = run["baseline_rss_mb"]
        memory = f"{run['peak_rss_mb']:.0f}" + (f" ({baseline:.0f})" if baseline is not None else "")
        if run["gpu_peak_mb"] is not None:
            memory += f"; GPU {run['gpu_peak_mb']:.0f}"
        variant = spec["label"]
        if variant.startswith("backbone"):
            variant += f" {list(spec['widths'])}, {run['parameters'] / 1e6:.2f} M"
        update = _pair(run["update_s"]) if spec["strategy"] != "frozen" else "–"
        finish = _pair(run["finish_s"]) if spec["strategy"] != "frozen" else "–"
        lines.append(
            f"| {spec['task']} | {run['size']} | {spec['strategy']} | {variant} | {run['threads']} | {run['images']} "
            f"| {_pair(run['click_s'])} | {_pair(run['first_click_s'])} | {_pair(run['later_click_s'])} | {update} "
            f"| {finish} | {memory} | {_dice_text(run['dice'], run['trained'], spec['budget'])} |"
        )
    lines += _consistency_lines(report)
    if report["http"]:
        lines += [
            "",
            "## HTTP API (`clickadapt serve` subprocess, loopback, httpx)",
            "",
            "Round trip of `POST /api/images/{id}/clicks` (the server's work, its datastore write, the PNG overlay",
            "and the JSON) and of `POST …/finish`; *server* = the `last_click_s` the server reports (forward +",
            "update, undo snapshot). The server keeps undo snapshots (depth 3), runs the safety layer's update",
            "guard and by default saves the weights after every click that changed them (*autosave*), in a",
            "background thread once the answer has left (after 0.25 s without a click, at most 2 s late). The",
            "simulated user clicks again at once, so a write can overlap the next click (the 95th percentiles).",
            "Same stream and user; masks read back with `GET …/mask.png`.",
            "",
            "| task | size | strategy | autosave | images | click request | first click | clicks 2..T | server "
            "| finish request | server peak RSS MiB | Dice @1/5/T |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for http in report["http"]:
            rss = http["server_peak_rss_mb"]
            lines.append(
                f"| {http['task']} | {http['size']} | {http['strategy']} | {'on' if http['autosave'] else 'off'} "
                f"| {http['images']} | {_pair(http['click_s'])} | {_pair(http['first_click_s'])} "
                f"| {_pair(http['later_click_s'])} | {_pair(http['server_click_s'])} | {_pair(http['finish_s'])} "
                f"| {'–' if rss is None else f'{rss:.0f}'} | {_dice_text(http['dice'], True, settings['budget'])} |"
            )
        lines += _http_input_lines(report["http"])
    if report["probes"]:
        lines += [
            "",
            "## Precision and layout probes (one inference forward, median of 5)",
            "",
            "| task | size | variant | forward (ms) |",
            "|---|---|---|---|",
        ]
        lines += [f"| {p['task']} | {p['size']} | {p['variant']} | {p['forward_ms']:.1f} |" for p in report["probes"]]
    if report["compile"]:
        lines += ["", "## torch.compile (inference forward, shipped widths)", ""]
        for entry in report["compile"]:
            if entry.get("compiled"):
                lines.append(
                    f"- {entry['task']} {entry['size']}: compile {entry['compile_s']:.1f} s; eager "
                    f"{entry['eager_ms']:.1f} ms, compiled {entry['compiled_ms']:.1f} ms; max |Δlogit| "
                    f"{entry['max_abs_diff']:.2e}"
                )
            else:
                lines.append(f"- {entry['task']} {entry['size']}: not compiled ({entry.get('error')})")
    return "\n".join(lines) + "\n"


def _http_input_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Per task, what the server was sent and how far its model input was from the in-process one."""
    lines = []
    for task in dict.fromkeys(run["task"] for run in runs):
        run = next(run for run in runs if run["task"] == task)
        if run.get("source_files") is None:
            continue  # a result from before this was recorded
        lines.append(
            f"- {task}: {run['source_files']} of {run['images']} images sent as their source file (a NIfTI volume"
            f" opened at the sample's slice, or the photograph), the rest as the preprocessed array; the server's"
            f" model input differs from the in-process one by at most {run['input_difference']:.3g}"
            " (standard deviations)."
        )
    return ["", *lines] if lines else []


def _consistency_lines(report: dict[str, Any]) -> list[str]:
    """Whether the optimised rows kept the naive path's Dice exactly."""
    lines = []
    for task in report["streams"]:
        fast, naive = _find_run(report, task, "oaims"), _find_run(report, task, "oaims", "naive path (no graph reuse)")
        if fast is None or naive is None or not fast["trained"]:
            continue
        difference = max(
            (
                abs(a - b)
                for region in fast["dice"]
                for a, b in zip(fast["dice"][region], naive["dice"][region], strict=True)
            ),
            default=0.0,
        )
        verdict = "identical" if difference == 0.0 else f"max difference {100 * difference:.3f} points"
        lines.append(f"- {task} `oaims`: Dice per click with graph reuse vs the naive path: {verdict}.")
    return ["", *lines] if lines else []


def write_report(report: dict[str, Any], output: Path) -> None:
    """Write the Markdown report and, beside it, the raw results as JSON."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_report(report), encoding="utf-8")
    output.with_suffix(".json").write_text(json.dumps(report, indent=1), encoding="utf-8")
