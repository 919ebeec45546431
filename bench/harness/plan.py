"""The plan of a suite: every (stream, strategy, budget, order seed, click seed) run with its cache key and estimated
cost.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness.config import BenchConfig, ExperimentSpec, StreamSpec, resolved_strategy, run_label
from bench.harness.constants import (
    ABLATION_GROUP,
    BENCH_FORMAT,
    CODE_PATHS,
    FROZEN_LABEL,
    MAIN_GROUP,
    NOISY_GROUP,
    SWEEP_GROUP,
)
from clickadapt.data.registry import DatasetConfig, data_digest, load_samples
from clickadapt.data.sample import Sample
from clickadapt.evaluation.command import load_model
from clickadapt.evaluation.config import StrategySpec
from clickadapt.evaluation.stream import (
    SubsetPolicy,
    cap_stream,
)
from clickadapt.paths import PACKAGE_DIR

logger = logging.getLogger(__name__)


COST_PER_CLICK_S: dict[str, dict[str, float]] = {
    "brain": {
        "frozen": 0.024,
        "post": 0.017,
        "mid": 0.110,
        "oaims": 0.117,
        "ia-sa": 0.286,
        "tsca": 0.452,
        "tent": 0.085,
        "self-train": 0.026,
    },
    "fundus": {  # refitted 2026-12-02 to 58 cached runs of the shipped model; post and mid (not yet run)
        "frozen": 0.051,  # scaled from the earlier table by oaims' refit ratio (1.13)
        "post": 0.046,
        "mid": 0.27,
        "oaims": 0.293,
        "ia-sa": 0.837,
        "tsca": 1.344,
        "tent": 0.216,
        "self-train": 0.070,
    },
}
"""CPU seconds per click of each strategy per task (forward, simulated user, Dice and the strategy's updates) with
one torch thread per worker on the 2-core development machine. Brain: a least-squares fit to the CPU seconds of
the 199 cached runs of the shipped brain model (2026-12-02, three LGG site-HT streams and the brain sweep;
``python -m bench.fit_cost_table``: 75.4 CPU-min measured, 75.5 fitted). Fundus: the same fit to the 58 cached runs of
the shipped fundus model (2026-12-02, the fundus sweep and the first ORIGA runs: 131.3 CPU-min measured, 131.5
fitted); post and mid, not yet run with it, are the 2026-11-29 values scaled by oaims' ratio. Only used for
``--dry-run`` estimates and to schedule the longest runs first."""


COST_PER_IMAGE_S: dict[str, dict[str, float]] = {
    "brain": {"post": 0.264, "oaims": 0.080, "self-train": 0.061, "tsca": 0.044},
    "fundus": {"post": 0.70, "oaims": 0.259, "self-train": 0.169},
}
"""CPU seconds of the after-image update (Post-Interaction, self-training), per image and task (same fits)."""


DEFAULT_COST_PER_CLICK_S = 0.2


def code_version() -> str:
    """SHA-256 over the package files that determine a run's numbers (:data:`CODE_PATHS`)."""
    digest = hashlib.sha256(f"bench-format-{BENCH_FORMAT}".encode())
    for relative in CODE_PATHS:
        path = PACKAGE_DIR / relative
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else []
        for file in files:
            digest.update(str(file.relative_to(PACKAGE_DIR)).encode("utf-8") + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    """A task's model as the bench uses it.

    Attributes:
        task: Task name.
        spec: What the config names (``brain`` or a path).
        path: The checkpoint file.
        sha256: Checksum of its weights (part of every cache key).
        click_sigma: The click-map σ it was trained with.
    """

    task: str
    spec: str
    path: str
    sha256: str
    click_sigma: float


@dataclass
class StreamPlan:
    """A stream's selected images.

    Attributes:
        spec: The stream.
        available: Samples the dataset selection gives before the cap.
        keys: Keys of the kept samples, in dataset order.
        patients: Kept samples per patient.
        digest: :func:`~clickadapt.data.registry.data_digest` of the kept samples.
        part: ``test`` (the reported part of a split dataset), ``dev`` (its tuning part) or ``whole``.
    """

    spec: StreamSpec
    available: int
    keys: list[str]
    patients: dict[str, int]
    digest: str
    part: str = "whole"


@dataclass
class BenchJob:
    """One (stream, strategy label, budget, order seed, click seed) run.

    Attributes:
        stream: Stream name.
        strategy: The strategy spec (its label names the run).
        budget: Clicks per image.
        order_seed: Seed of the stream order.
        click_seed: Seed of the simulated user's clicks.
        groups: ``main`` and/or ``ablation``.
        key: Cache key (hex SHA-256).
        source_key: Cache key of the source-validation baseline it needs (``None`` = no forgetting).
        estimate_s: Estimated CPU seconds.
        user: The simulated user of the stream (the forgetting measurement always uses the suite's user).
    """

    stream: str
    strategy: StrategySpec
    budget: int
    order_seed: int
    click_seed: int
    groups: list[str]
    key: str
    source_key: str | None
    estimate_s: float
    user: str

    @property
    def label(self) -> str:
        """The strategy label of the run."""
        return self.strategy.display_name

    def describe(self) -> str:
        """``stream / label / budget / order / clicks`` for logs."""
        return (
            f"{self.stream} / {self.label} / {self.budget} clicks / order {self.order_seed} / clicks {self.click_seed}"
        )


@dataclass
class SourceJob:
    """The original model's Dice curves on a task's source validation set, per budget and click seed."""

    task: str
    budget: int
    seed: int
    key: str
    images: int


@dataclass
class BenchPlan:
    """Everything a run of the suite does, before doing it."""

    config: BenchConfig
    models: dict[str, ModelInfo]
    streams: dict[str, StreamPlan]
    source_images: dict[str, int]
    jobs: list[BenchJob]
    source_jobs: list[SourceJob]
    code: str


def cost_per_click(task: str, strategy: str) -> float:
    """Estimated CPU seconds of one click of ``strategy`` on ``task`` (:data:`COST_PER_CLICK_S`)."""
    return COST_PER_CLICK_S.get(task, {}).get(strategy, DEFAULT_COST_PER_CLICK_S)


def estimate_seconds(task: str, strategy: str, images: int, budget: int, source_images: int) -> float:
    """Estimated CPU seconds of one run (:data:`COST_PER_CLICK_S`, :data:`COST_PER_IMAGE_S`), including the
    forgetting measurement of an adapting strategy on ``source_images`` images."""
    stream = images * (budget * cost_per_click(task, strategy) + COST_PER_IMAGE_S.get(task, {}).get(strategy, 0.0))
    forgetting = 0.0 if strategy == "frozen" else source_images * budget * cost_per_click(task, "frozen")
    return stream + forgetting


def load_stream_samples(
    dataset: DatasetConfig, cap: int | None, subset: SubsetPolicy, cache: Path | None
) -> tuple[list[Sample], int]:
    """A dataset selection's samples after the cap (``subset`` policy), and how many there were before it."""
    samples = load_samples(dataset, cache_dir=cache)
    return cap_stream(samples, cap, subset), len(samples)


def _model_info(task: str, spec: str, device: str) -> ModelInfo:
    loaded = load_model(spec, device)
    if loaded.task.name != task:
        raise ValueError(f"models.{task}: {loaded.path} is a {loaded.task.name!r} model")
    return ModelInfo(task, spec, str(loaded.path), loaded.sha256, loaded.meta.preprocessing.click_sigma)


TunedSettings = dict[tuple[str, str], StrategySpec]
"""Per (task, strategy name), the setting the sweep chose on the dev parts."""


def plan_bench(config: BenchConfig, only: Sequence[str] | None = None, tuned: TunedSettings | None = None) -> BenchPlan:
    """Load the models and select each stream's images, then list the runs and their cache keys.

    Args:
        config: The suite.
        only: Restrict the plan to these stream names (``None`` = all). The sweep still covers the dev
            parts of every stream of the selected streams' tasks, so that ``--only`` never changes its choice.
        tuned: Settings chosen by the sweep; main-experiment strategies given by bare name run them
            (``None`` = the strategies' defaults, e.g. before the sweep has run).

    Raises:
        ValueError: An unknown name in ``only``, a model of the wrong task, or an empty stream.
        FileNotFoundError: A missing model or data folder.
    """
    names = [stream.name for stream in config.streams]
    if only is not None:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"--only: unknown stream(s) {unknown}; known: {names}")
    selected = [stream for stream in config.streams if only is None or stream.name in only]
    tasks = sorted({stream.task for stream in selected})
    models = {task: _model_info(task, config.models[task], config.device) for task in tasks}
    streams: dict[str, StreamPlan] = {}
    parts = [(stream, "whole" if stream.dev is None else "test") for stream in selected]
    if config.sweep is not None:  # the whole task's dev parts: the tuned choice must not depend on ``only``
        parts += [
            (dev, "dev")
            for stream in config.streams
            if stream.task in tasks and (dev := stream.dev_stream()) is not None
        ]
    for stream, part in parts:
        samples, available = load_stream_samples(
            stream.test_data, config.stream_cap(stream), config.subset, config.data_cache_dir
        )
        if not samples:
            raise ValueError(f"stream {stream.name!r} selected no samples; check its data selection")
        patients: dict[str, int] = {}
        for sample in samples:
            patients[sample.patient] = patients.get(sample.patient, 0) + 1
        streams[stream.name] = StreamPlan(
            stream, available, [s.key for s in samples], patients, data_digest(samples), part
        )
    code = code_version()
    source_digests: dict[str, str] = {}
    source_images: dict[str, int] = {}
    for task in tasks:
        dataset = config.source_validation.get(task)
        if dataset is not None:
            samples, _ = load_stream_samples(
                dataset, config.source_validation_max_images, config.subset, config.data_cache_dir
            )
            source_digests[task] = data_digest(samples)
            source_images[task] = len(samples)

    def source_key(task: str, budget: int, seed: int) -> str | None:
        if task not in source_digests:
            return None
        return _digest(
            {
                "kind": "source-baseline",
                "format": BENCH_FORMAT,
                "model": models[task].sha256,
                "data": source_digests[task],
                "budget": budget,
                "seed": seed,
                "user": config.user,
                "click_sigma": models[task].click_sigma,
                "device": config.device,
                "code": code,
            }
        )

    jobs: dict[str, BenchJob] = {}
    order: list[str] = []
    dev_names = [name for name, stream in streams.items() if stream.part == "dev"]
    groups: list[tuple[str, list[ExperimentSpec]]] = [
        (MAIN_GROUP, config.experiments),
        (ABLATION_GROUP, config.ablations),
        (SWEEP_GROUP, [config.sweep.experiment()] if config.sweep is not None else []),
        (NOISY_GROUP, config.noisy_users),
    ]
    for group, experiments in groups:
        for experiment in experiments:
            names = dev_names if group == SWEEP_GROUP else config.stream_names(experiment)
            for stream_name in names:
                if stream_name not in streams:
                    continue
                plan = streams[stream_name]
                task = plan.spec.task
                user = experiment.user or config.user
                for listed in experiment.strategies:
                    spec = listed
                    label = run_label(listed, group, experiment.user)
                    if (
                        group in (MAIN_GROUP, NOISY_GROUP)
                        and tuned
                        and not listed.overrides
                        and (task, listed.name) in tuned
                    ):
                        chosen = tuned[task, listed.name]
                        spec = StrategySpec(name=listed.name, overrides=chosen.overrides, label=label)
                    elif label != listed.display_name:
                        spec = StrategySpec(name=listed.name, overrides=listed.overrides, label=label)
                    orders = experiment.order_seeds[:1] if spec.name == FROZEN_LABEL else experiment.order_seeds
                    for budget, order_seed, seed in itertools.product(
                        experiment.budgets, orders, experiment.click_seeds
                    ):
                        key = _digest(
                            {
                                "kind": "run",
                                "format": BENCH_FORMAT,
                                "model": models[task].sha256,
                                "data": plan.digest,
                                "stream": plan.spec.test_data.model_dump(mode="json"),
                                "strategy": resolved_strategy(spec),
                                "budget": budget,
                                "order_seed": order_seed,
                                "click_seed": seed,
                                "user": user,
                                "shuffle": config.shuffle,
                                "click_sigma": models[task].click_sigma,
                                "source": source_key(task, budget, seed),
                                "device": config.device,
                                "code": code,
                            }
                        )
                        slot = f"{stream_name}\0{spec.display_name}\0{budget}\0{order_seed}\0{seed}"
                        if slot in jobs:
                            if group not in jobs[slot].groups:
                                jobs[slot].groups.append(group)
                            continue
                        estimate = estimate_seconds(task, spec.name, len(plan.keys), budget, source_images.get(task, 0))
                        jobs[slot] = BenchJob(
                            stream_name,
                            spec,
                            budget,
                            order_seed,
                            seed,
                            [group],
                            key,
                            source_key(task, budget, seed),
                            estimate,
                            user,
                        )
                        order.append(slot)
    source_jobs: dict[str, SourceJob] = {}
    for slot in order:
        job = jobs[slot]
        if job.source_key is not None and job.source_key not in source_jobs:
            task = streams[job.stream].spec.task
            source_jobs[job.source_key] = SourceJob(
                task, job.budget, job.click_seed, job.source_key, source_images[task]
            )
    return BenchPlan(config, models, streams, source_images, [jobs[s] for s in order], list(source_jobs.values()), code)
