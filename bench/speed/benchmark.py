"""The whole latency benchmark: the real streams, every measurement the settings ask for, the report."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.speed.http_api import measure_http
from bench.speed.in_process import run_measurement
from bench.speed.machine import load_description, machine_description
from bench.speed.network import forward_probes, measure_compile, resolve_model_path
from bench.speed.report import write_report
from bench.speed.results import RunResult
from bench.speed.settings import BACKBONE_WIDTHS, STRATEGIES, STREAMS, LatencySettings, run_spec
from clickadapt.data.registry import get_reader, load_samples
from clickadapt.data.sample import Sample
from clickadapt.evaluation.stream import stream_order
from clickadapt.tasks import get_task

logger = logging.getLogger(__name__)


def load_stream(task_name: str, settings: LatencySettings) -> tuple[list[Sample], str]:
    """The first ``stream_limit`` images of a task's real stream, in the seeded stream order.

    Brain falls back to the built-in demo BRATS T1c slices when the data folder is absent; images whose
    label has no foreground (nothing for the simulated user to click) are left out.

    Returns:
        The samples and a sentence describing them (empty list when no data is available).
    """
    config = STREAMS[task_name]
    if settings.data_root is not None:
        subfolder = get_reader(config.reader).subfolder
        config = config.model_copy(update={"root": settings.data_root / (subfolder or "")})
    root = config.resolved_root()
    if root.is_dir():
        samples = load_samples(config)
        description = f"{config.reader} {config.split or 'all'} {config.modality or ''} {config.domains or ''}".strip()
        description = " ".join(description.split()) + f" from {root}"
    elif task_name == "brain":
        from clickadapt.data.demo import load_demo_samples

        samples = [s for s in load_demo_samples() if s.dataset == "brats" and s.domain == "T1c"]
        description = f"built-in demo BRATS T1c slices ({root} not found)"
    else:
        return [], f"no data: {root} not found"
    samples = [sample for sample in samples if np.any(sample.label > 0)]
    ordered = [samples[index] for index in stream_order(len(samples), settings.seed)][: settings.stream_limit]
    size = ordered[0].image.shape[-1] if ordered else 0
    return (
        ordered,
        f"{description}: {len(ordered)} of {len(samples)} images (seeded order {settings.seed}), {size}×{size}",
    )


def run_benchmark(settings: LatencySettings, command: str) -> dict[str, Any]:
    """Measure everything ``settings`` asks for and write the report.

    Args:
        settings: What to measure.
        command: The command line, recorded in the report.

    Returns:
        The raw results (also written as JSON beside the Markdown report).
    """
    report: dict[str, Any] = {
        "command": command,
        "settings": json.loads(settings.model_dump_json()),
        "machine": machine_description(settings.device),
        "streams": {},
        "runs": [],
        "http": [],
        "probes": [],
        "compile": [],
        "notes": [],
    }
    for task_name in settings.tasks:
        samples, description = load_stream(task_name, settings)
        report["streams"][task_name] = description
        if not samples:
            report["notes"].append(f"{task_name}: skipped, {description}")
            continue
        model_path = resolve_model_path(settings.brain_model if task_name == "brain" else settings.fundus_model)
        if model_path is None:
            report["notes"].append(f"{task_name}: no checkpoint found; an untrained network of the shipped widths")
        main_runs = [run_spec(settings, task_name, strategy, model_path) for strategy in STRATEGIES]
        for spec in main_runs:
            report["runs"].append(asdict(run_measurement(spec, samples, settings.isolate)))
        if settings.http and model_path is not None:
            report["http"].extend(http_runs(settings, task_name, model_path, samples))
        if settings.tuning:
            report["runs"].extend(asdict(result) for result in tuning_runs(settings, task_name, model_path, samples))
            report["probes"].extend(precision_probes(settings, task_name, model_path, samples[0]))
        if settings.backbones and task_name == "brain":
            subset = samples[: settings.short_images]
            for name, widths in BACKBONE_WIDTHS.items():
                if name == "shipped":
                    continue  # the main rows
                for strategy in STRATEGIES:
                    spec = run_spec(settings, task_name, strategy, None, label=f"backbone {name}", widths=widths)
                    report["runs"].append(asdict(run_measurement(spec, subset, settings.isolate)))
        if settings.compile:
            size = int(samples[0].image.shape[-1])
            report["compile"].append(
                {"task": task_name, "size": size, **measure_compile(get_task(task_name), size, settings.device)}
            )
    report["machine"]["load_end"] = load_description()
    write_report(report, settings.output)
    return report


def http_runs(
    settings: LatencySettings, task_name: str, model_path: Path, samples: Sequence[Sample]
) -> list[dict[str, Any]]:
    """The stream through the HTTP API: ``frozen`` and ``oaims`` with autosave, for brain also without.

    Returns:
        The raw :class:`~bench.speed.results.HttpResult` of each server, as dictionaries.
    """
    results = []
    with tempfile.TemporaryDirectory(prefix="clickadapt-latency-") as workdir:
        variants = [("frozen", True), ("oaims", True)]
        if task_name == "brain":
            variants.append(("oaims", False))  # the cost of the server's autosave
        for strategy, autosave in variants:
            logger.info("measuring %s / %s over HTTP (autosave %s)", task_name, strategy, autosave)
            http = measure_http(get_task(task_name), model_path, samples, strategy, settings, Path(workdir), autosave)
            results.append(asdict(http))
    return results


def tuning_runs(
    settings: LatencySettings, task_name: str, model_path: Path | None, samples: Sequence[Sample]
) -> list[RunResult]:
    """The CPU-tuning variants: the other thread count, the naive path, undo snapshots, untuned, channels-last.

    Brain runs the naive path, the snapshots and channels-last with ``oaims`` (and channels-last with
    ``frozen``) on the whole stream; fundus (slower) only the frozen ones. The thread count
    (1 ↔ the default) is compared on ``frozen`` over the first ``short_images`` images.
    """
    other_threads = 1 if settings.threads != 1 else max(os.cpu_count() or 1, 2)
    thread_label = f"{other_threads} thread" + ("s" if other_threads > 1 else "")
    variants: list[tuple[str, dict[str, Any], tuple[str, ...], int]] = [
        (thread_label, {"threads": other_threads}, ("frozen",), settings.short_images),
        ("naive path (no graph reuse)", {"reuse_displayed_forward": False}, ("oaims",), len(samples)),
        ("undo snapshots (depth 3, server)", {"undo_depth": 3}, ("oaims",), len(samples)),
        ("untuned network (nn.InstanceNorm2d, contiguous)", {"untuned": True}, STRATEGIES, len(samples)),
        ("channels_last weights", {"channels_last": True}, STRATEGIES, len(samples)),
    ]
    results = []
    for label, changes, strategies, count in variants:
        for strategy in strategies:
            if task_name == "fundus" and strategy != "frozen":
                continue
            spec = run_spec(settings, task_name, strategy, model_path, label=label, **changes)
            results.append(run_measurement(spec, samples[:count], settings.isolate))
    return results


def precision_probes(
    settings: LatencySettings, task_name: str, model_path: Path | None, sample: Sample
) -> list[dict[str, Any]]:
    """Inference-forward time of fp32, the untuned network, channels-last and bf16 autocast on one image.

    Quick (no stream); in a fresh process when the settings isolate measurements.
    """
    variants: tuple[tuple[str, dict[str, Any]], ...] = (
        ("fp32", {}),
        ("untuned network", {"untuned": True}),
        ("channels_last weights", {"channels_last": True}),
        ("bf16 autocast", {"bf16": True}),
    )
    specs = [run_spec(settings, task_name, "frozen", model_path, label=label, **changes) for label, changes in variants]
    if settings.isolate:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            times = pool.submit(forward_probes, specs, sample).result()
    else:
        times = forward_probes(specs, sample)
    size = int(sample.image.shape[-1])
    return [
        {"task": task_name, "size": size, "variant": spec.label, "forward_ms": milliseconds}
        for spec, milliseconds in zip(specs, times, strict=True)
    ]
