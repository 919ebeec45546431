"""``clickadapt bench CONFIG``: the benchmark suite on the real data (streams × strategies × budgets × seeds).

A bench config (``configs/bench/full.yaml``) names target-domain *streams* (a dataset selection, the
kind of shift it stands for and a cap on its length), the *experiments* to run on them (strategies ×
click budgets × stream orders) and *ablations* (strategies with overrides, under their own labels).
Every (stream, strategy, budget, seed) run goes through the evaluation path of ``clickadapt evaluate``
(the prequential stream runner :func:`~clickadapt.evaluation.stream.run_stream` plus the
forgetting measurement on the task's source validation set) and is cached as raw JSON under
``bench/cache/`` keyed by a SHA-256 of everything that determines it (model weights, the selected
images, strategy settings, budget, seed, simulated user, click σ, source validation set and a digest
of the code that computes it), so a rerun computes only what is missing. Runs are spread over worker
processes (one torch thread each).

The output folder (``bench/results``) then holds the raw files — ``raw.csv`` (one row per run, image
and region: the Dice after every click, the clicks, model versions and times), ``runs.csv`` (one row
per run and region: forgetting, run times, cache key) and ``bench.json`` (command, machine, date, wall
time, models, streams) — and everything derived from them alone by :func:`write_bench_report`:
``REPORT.md`` and ``plots/*.png``. The hand-written discussion between the markers
:data:`DISCUSSION_BEGIN` and :data:`DISCUSSION_END` of an existing ``REPORT.md`` is kept when the report
is regenerated.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import functools
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clickadapt.adaptation.strategies import strategy_config
from clickadapt.clicks.click import Click
from clickadapt.clicks.simulators import make_simulated_user
from clickadapt.data.registry import DatasetConfig, PatientFold, data_digest, load_samples
from clickadapt.data.sample import Sample
from clickadapt.evaluation.command import load_model
from clickadapt.evaluation.config import DEFAULT_CACHE_DIR, StrategySpec, format_validation_error
from clickadapt.evaluation.machine import cpu_and_versions
from clickadapt.evaluation.metrics import noc_key
from clickadapt.evaluation.plots import moving_average, plot_dice_vs_click, plot_stream_dice
from clickadapt.evaluation.report import reported_clicks, summarise
from clickadapt.evaluation.statistics import Interval, bootstrap_mean, paired_difference, per_unit_means
from clickadapt.evaluation.stream import (
    ImageRecord,
    StreamResult,
    SubsetPolicy,
    cap_stream,
    evaluate_frozen,
    run_stream,
)
from clickadapt.models.checkpoint import atomic_write_bytes
from clickadapt.paths import PACKAGE_DIR
from clickadapt.tasks import TASKS, get_task

logger = logging.getLogger(__name__)

BENCH_FORMAT = 1
"""Version of the cache entries and raw files; part of every cache key."""
DEFAULT_OUTPUT = Path("bench") / "results"
DEFAULT_BENCH_CACHE = Path("bench") / "cache"
REPORT_MD = "REPORT.md"
RAW_CSV = "raw.csv"
RUNS_CSV = "runs.csv"
BENCH_JSON = "bench.json"
PLOTS_DIR = "plots"
MAIN_GROUP = "main"
SWEEP_GROUP = "sweep"
DEV_SUFFIX = "-dev"
FROZEN_LABEL = "frozen"
ABLATION_GROUP = "ablation"
DISCUSSION_BEGIN = "<!-- BEGIN HUMAN DISCUSSION (kept when the report is regenerated) -->"
DISCUSSION_END = "<!-- END HUMAN DISCUSSION -->"
DISCUSSION_PLACEHOLDER = "_To be written by a person who has read the numbers above._"
REPORT_NOC_THRESHOLD = 0.85
TIE_TOLERANCE = 0.1
"""Dice points within which two strategies count as tied (and an order as neither better nor worse)."""

CODE_PATHS: tuple[str, ...] = (
    "adaptation/__init__.py",
    "adaptation/model_state.py",
    "adaptation/session.py",
    "adaptation/strategies",
    "clicks",
    "losses",
    "models",
    "data",
    "evaluation/stream.py",
    "evaluation/metrics.py",
    "evaluation/command.py",
    "tasks.py",
)
"""Package files whose code determines a run's numbers; their digest is part of every cache key.

The safety layer and source routing (``adaptation/safety.py``, ``adaptation/routing.py``) are not used by
benchmark runs, so editing them does not invalidate the cache."""

ShiftKind = Literal["small", "large", "site", "modality", "pathology"]
SHIFT_DESCRIPTIONS: dict[str, str] = {
    "small": "small shift (same clinic, another camera / release)",
    "large": "large shift (other country, camera and population)",
    "site": "site shift (same sequence, another hospital's scanner)",
    "modality": "modality shift (FLAIR-trained model, another MR sequence)",
    "pathology": "pathology shift (glioma-trained model, multiple-sclerosis lesions)",
}

PAPER_METHODS: dict[str, str] = {"frozen": "frozen (ICNN*)", "tsca": "TSCA", "post": "PI", "oaims": "PI+MI"}
"""Our strategy label → the paper's name for the method (method.md §9)."""


@dataclass(frozen=True)
class PaperResult:
    """One published row of method.md §9.

    Attributes:
        dataset: The paper's target set.
        task: ``brain`` or ``fundus``.
        shift: The kind of shift it stands for (pairs it with our streams of the same task and shift).
        region: The reported region (brain lesion, fundus cup).
        budget: Click budget of the row.
        dice: Per our strategy label, Dice (%) at clicks 1, 5, 10 (``None`` where not published).
    """

    dataset: str
    task: str
    shift: str
    region: str
    budget: int
    dice: dict[str, tuple[float | None, float | None, float | None]]


PAPER_RESULTS: tuple[PaperResult, ...] = (
    PaperResult(
        "BraTS T1",
        "brain",
        "modality",
        "lesion",
        10,
        {
            "frozen": (20.7, 46.8, 62.5),
            "tsca": (34.4, 60.9, 74.0),
            "post": (61.1, 72.4, 78.9),
            "oaims": (71.2, 83.4, 88.0),
        },
    ),
    PaperResult(
        "BraTS T1c",
        "brain",
        "modality",
        "lesion",
        10,
        {
            "frozen": (45.4, 63.8, 75.4),
            "tsca": (50.1, 70.2, 79.6),
            "post": (64.3, 74.7, 80.4),
            "oaims": (70.4, 82.9, 87.5),
        },
    ),
    PaperResult(
        "G1020",
        "fundus",
        "large",
        "cup",
        10,
        {
            "frozen": (None, None, 88.0),
            "tsca": (None, None, 90.7),
            "post": (None, None, 92.2),
            "oaims": (None, None, 92.7),
        },
    ),
    PaperResult(
        "PAPILA",
        "fundus",
        "large",
        "cup",
        10,
        {
            "frozen": (None, None, 77.1),
            "tsca": (None, None, 79.0),
            "post": (None, None, 85.8),
            "oaims": (None, None, 86.2),
        },
    ),
    PaperResult(
        "Drishti-GS1",
        "fundus",
        "small",
        "cup",
        10,
        {
            "frozen": (None, None, 94.1),
            "tsca": (None, None, 95.5),
            "post": (None, None, 95.7),
            "oaims": (None, None, 96.5),
        },
    ),
    PaperResult(
        "ATLAS T1", "brain", "pathology", "lesion", 3, {"tsca": (None, None, 51.4), "oaims": (None, None, 73.3)}
    ),
)
"""The paper's published Dice (method.md §9); the ATLAS row is Dice at the last of 3 clicks."""

PAPER_ORDERING: tuple[tuple[str, str], ...] = (
    ("oaims", "post"),
    ("post", "tsca"),
    ("post", "ia-sa"),
    ("tsca", "frozen"),
    ("ia-sa", "frozen"),
    ("oaims", "frozen"),
)
"""The paper's claimed ordering oaims > post > tsca, ia-sa > frozen, as the pairs the analysis checks."""

COST_PER_CLICK_S: dict[str, float] = {
    "frozen": 0.051,
    "post": 0.041,
    "mid": 0.24,
    "oaims": 0.26,
    "ia-sa": 0.64,
    "tsca": 1.02,
    "tent": 0.18,
    "self-train": 0.071,
}
"""CPU seconds per click of each strategy (forward, simulated user, Dice and the strategy's updates), averaged
over the suite's mix of brain (256×256) and fundus (512×512) streams with one torch thread per worker on the
2-core development machine: a least-squares fit to the CPU seconds of the 504 cached runs of the measured full
run of 2026-11-29 (tuned network of issue 6; see ``bench/README.md``). Only used for ``--dry-run`` estimates and
to schedule the longest runs first."""
COST_PER_IMAGE_S: dict[str, float] = {"post": 0.62, "oaims": 0.23, "self-train": 0.17}
"""CPU seconds of the after-image update (Post-Interaction, self-training), per image (same fit)."""
DEFAULT_COST_PER_CLICK_S = 0.2
FULL_LENGTH_IMAGES = 100
"""A suite that is not marked ``capped`` may not cap a stream below min(available, this)."""


# ============================================================================================ config


class StreamSpec(BaseModel):
    """One target-domain stream of the suite.

    Attributes:
        name: Short identifier (file names, ``--only``): lowercase letters, digits and ``-``.
        title: Human-readable name for the report.
        shift: ``small``, ``large`` (fundus), ``modality`` or ``pathology`` (brain): the kind of shift,
            which pairs the stream with the paper's published numbers.
        data: The dataset selection (patients disjoint from source training).
        max_images: Cap on the stream's length; ``None`` = the suite's ``max_images``.
        dev: The patient split of the dataset into a small dev part (``every``-th patient from ``offset``,
            sorted by id: the sweep of ``sweep`` tunes on it) and the test part (the other patients: every
            reported number). ``None`` = no dev part (too few patients); the stream is then reported whole
            and its strategies take the settings tuned on the other dev parts of its task.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    shift: ShiftKind
    data: DatasetConfig
    max_images: int | None = Field(default=None, ge=1)
    dev: PatientFold | None = None

    @model_validator(mode="after")
    def _one_patient_rule(self) -> StreamSpec:
        if self.dev is not None and self.data.patient_fold is not None:
            raise ValueError(f"stream {self.name!r}: give either dev or data.patient_fold, not both")
        return self

    @property
    def test_data(self) -> DatasetConfig:
        """The dataset selection of the reported (test) part: all patients but the dev part's."""
        if self.dev is None:
            return self.data
        rule = PatientFold(every=self.dev.every, offset=self.dev.offset, keep="rest")
        return self.data.model_copy(update={"patient_fold": rule})

    def dev_stream(self) -> StreamSpec | None:
        """The dev part as a stream of its own (``NAME-dev``), or ``None`` without a dev split."""
        if self.dev is None:
            return None
        rule = PatientFold(every=self.dev.every, offset=self.dev.offset, keep="fold")
        return StreamSpec(
            name=f"{self.name}{DEV_SUFFIX}",
            title=f"{self.title} (dev part)",
            shift=self.shift,
            data=self.data.model_copy(update={"patient_fold": rule}),
            max_images=self.max_images,
        )

    @property
    def task(self) -> str:
        """The stream's task (``brain`` or ``fundus``)."""
        return self.data.resolved_task

    @property
    def slices(self) -> str:
        """How the stream samples its patients, for every table: ``all slices``, ``largest-lesion slice``
        (one per patient, the paper's protocol) or ``every image`` (2D datasets)."""
        if self.task != "brain":
            return "every image"
        return "all slices" if self.data.slice_policy == "all" else "largest-lesion slice"


class ExperimentSpec(BaseModel):
    """Streams × strategies × budgets × stream orders × click seeds.

    Attributes:
        streams: Stream names, or ``[all]`` for every stream of the suite.
        strategies: Strategies (bare names or ``{name, overrides, label}``).
        budgets: Click budgets per image.
        order_seeds: One run per order seed: the seed of the stream's permutation. The frozen model does
            not depend on the order, so it runs once per click seed (with the first order seed).
        click_seeds: One run per click seed: the seed of the simulated user's clicks (combined with each
            image's key, so every strategy and order sees the same clicks on the same image).
    """

    model_config = ConfigDict(extra="forbid")

    streams: list[str] = Field(min_length=1)
    strategies: list[StrategySpec] = Field(min_length=1)
    budgets: list[int] = Field(default_factory=lambda: [10], min_length=1)
    order_seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    click_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("budgets")
    @classmethod
    def _positive_budgets(cls, budgets: list[int]) -> list[int]:
        bad = [budget for budget in budgets if budget < 1]
        if bad:
            raise ValueError(f"budgets must be at least 1 click, got {bad}")
        return budgets


class SweepSpec(BaseModel):
    """The recorded sweep of baseline settings on the dev parts (:attr:`StreamSpec.dev`).

    Every candidate runs on every dev part; per task and strategy name, the candidate with the highest
    mean Dice over clicks 1..budget (the area under the Dice-vs-click curve; brain lesion / fundus cup),
    averaged over the task's dev images, is the *tuned* setting. Main experiments then run that setting
    for every strategy they list by bare name (no overrides), on the test parts only.

    Attributes:
        strategies: The candidates (labels distinct, e.g. ``tsca-lr1e-5``).
        budget: Clicks per image.
        order_seeds: Stream orders of each candidate.
        click_seeds: Click seeds of each candidate.
    """

    model_config = ConfigDict(extra="forbid")

    strategies: list[StrategySpec] = Field(min_length=1)
    budget: int = Field(default=10, ge=1)
    order_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    click_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("strategies")
    @classmethod
    def _distinct_labels(cls, strategies: list[StrategySpec]) -> list[StrategySpec]:
        labels = [spec.display_name for spec in strategies]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ValueError(f"labels must be distinct (give a 'label'): {twice}")
        return strategies

    def experiment(self) -> ExperimentSpec:
        """The sweep as an experiment over every dev part."""
        return ExperimentSpec(
            streams=["all"],
            strategies=self.strategies,
            budgets=[self.budget],
            order_seeds=self.order_seeds,
            click_seeds=self.click_seeds,
        )


class BenchConfig(BaseModel):
    """The whole suite (``clickadapt bench CONFIG``).

    Attributes:
        title: Heading of the report.
        models: Per task, the shipped model name (``brain``/``fundus``) or a checkpoint path.
        streams: Target-domain streams.
        source_validation: Per task, source-domain images on which forgetting is measured.
        source_validation_max_images: Cap on each source validation set (patient-balanced spread).
        experiments: The main comparison.
        ablations: Reported separately; labels distinguish overridden strategies.
        sweep: Baseline settings tuned on the dev parts of the streams (``None`` = no tuning).
        max_images: Default cap on each stream's length (``None`` = whole streams).
        capped: A quick look whose streams may be capped below min(available, :data:`FULL_LENGTH_IMAGES`);
            the report says so. ``False`` (a full-length suite) rejects such caps.
        subset: Which images a cap keeps: ``spread`` (patient-balanced, evenly spaced) or ``first``.
        user: Simulated user.
        shuffle: A seeded stream order per seed (``False`` keeps dataset order).
        workers: Worker processes (each runs one experiment at a time with ``threads_per_worker``).
        threads_per_worker: Torch threads in each worker process.
        device: Torch device.
        cache_dir: Raw JSON of every finished run (and of the source-validation baselines).
        data_cache_dir: Preprocessed-sample cache shared with ``clickadapt evaluate`` (``None`` = none).
        output: Folder of the report, raw CSVs and plots.
    """

    model_config = ConfigDict(extra="forbid")

    title: str = "clickadapt benchmark"
    models: dict[str, str] = Field(default_factory=lambda: {task: task for task in TASKS})
    streams: list[StreamSpec] = Field(min_length=1)
    source_validation: dict[str, DatasetConfig] = Field(default_factory=dict)
    source_validation_max_images: int | None = Field(default=20, ge=1)
    experiments: list[ExperimentSpec] = Field(min_length=1)
    ablations: list[ExperimentSpec] = Field(default_factory=list)
    sweep: SweepSpec | None = None
    max_images: int | None = Field(default=None, ge=1)
    capped: bool = False
    subset: SubsetPolicy = "spread"
    user: str = "oaims"
    shuffle: bool = True
    workers: int = Field(default=1, ge=1)
    threads_per_worker: int = Field(default=1, ge=1)
    device: str = "cpu"
    cache_dir: Path = DEFAULT_BENCH_CACHE
    data_cache_dir: Path | None = DEFAULT_CACHE_DIR
    output: Path = DEFAULT_OUTPUT

    @field_validator("user")
    @classmethod
    def _known_user(cls, user: str) -> str:
        make_simulated_user(user, 0)  # raises ValueError listing the known users
        return user

    @field_validator("models", "source_validation")
    @classmethod
    def _known_tasks(cls, mapping: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(mapping) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; allowed: {sorted(TASKS)}")
        return mapping

    @model_validator(mode="after")
    def _consistent(self) -> BenchConfig:
        names = [stream.name for stream in self.streams]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"streams: names must be distinct, {duplicates} appear twice")
        for stream in self.streams:
            if stream.task not in self.models:
                raise ValueError(
                    f"streams: {stream.name!r} is a {stream.task} stream but models has no {stream.task!r}"
                )
        if not self.capped:
            short = [s.name for s in self.streams if (self.stream_cap(s) or FULL_LENGTH_IMAGES) < FULL_LENGTH_IMAGES]
            if short:
                raise ValueError(
                    f"streams {short} are capped below {FULL_LENGTH_IMAGES} images in a full-length suite; "
                    "raise max_images or mark the suite `capped: true` (a quick look, said so in the report)"
                )
        for task, dataset in self.source_validation.items():
            if dataset.resolved_task != task:
                raise ValueError(f"source_validation.{task}: reader {dataset.reader!r} reads {dataset.resolved_task}")
        settings: dict[tuple[str, str, int], str] = {}
        for group, experiments in ((MAIN_GROUP, self.experiments), (ABLATION_GROUP, self.ablations)):
            for number, experiment in enumerate(experiments):
                where = f"{'experiments' if group == MAIN_GROUP else 'ablations'}.{number}"
                unknown = [name for name in experiment.streams if name != "all" and name not in names]
                if unknown:
                    raise ValueError(f"{where}.streams: unknown stream(s) {unknown}; known: {names}")
                labels = [spec.display_name for spec in experiment.strategies]
                twice = sorted({label for label in labels if labels.count(label) > 1})
                if twice:
                    raise ValueError(f"{where}.strategies: labels must be distinct (give a 'label'): {twice}")
                for stream_name in self.stream_names(experiment):
                    for spec in experiment.strategies:
                        setting = resolved_strategy(spec)
                        for budget in experiment.budgets:
                            slot = (stream_name, spec.display_name, budget)
                            if settings.setdefault(slot, setting) != setting:
                                raise ValueError(
                                    f"{where}.strategies: label {spec.display_name!r} means two different "
                                    f"strategies on stream {stream_name!r}; give one of them another label"
                                )
        return self

    def stream_names(self, experiment: ExperimentSpec) -> list[str]:
        """The stream names an experiment runs on (``all`` expanded, suite order)."""
        if "all" in experiment.streams:
            return [stream.name for stream in self.streams]
        return [stream.name for stream in self.streams if stream.name in experiment.streams]

    def stream(self, name: str) -> StreamSpec:
        """The stream called ``name``.

        Raises:
            KeyError: Unknown name.
        """
        for stream in self.streams:
            if stream.name == name:
                return stream
        raise KeyError(name)

    def stream_cap(self, stream: StreamSpec) -> int | None:
        """The cap on ``stream``'s length."""
        return stream.max_images if stream.max_images is not None else self.max_images


def resolved_strategy(spec: StrategySpec) -> str:
    """The strategy's complete settings (defaults filled in) as canonical JSON: two specs that run the
    same strategy (``{ccg_sigma: 3}`` and the default σ = 3) resolve to the same text."""
    settings = strategy_config(spec.name, **spec.overrides).model_dump(mode="json")
    return json.dumps({"name": spec.name, "settings": settings}, sort_keys=True)


def parse_bench_config(data: dict[str, Any], source: str = "bench config") -> BenchConfig:
    """Validate a bench configuration mapping.

    Raises:
        ValueError: Naming ``source`` and every invalid field (``source: field.path: message``).
    """
    try:
        return BenchConfig.model_validate(data)
    except ValidationError as error:
        raise ValueError(format_validation_error(error, source)) from None


def load_bench_config(path: str | Path) -> BenchConfig:
    """Read and validate a bench YAML file.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not a YAML mapping or a field is invalid (naming the file and the field).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bench config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of fields at the top level, got {type(data).__name__}")
    return parse_bench_config(data, str(path))


# ============================================================================================= plan


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


def estimate_seconds(strategy: str, images: int, budget: int, source_images: int) -> float:
    """Estimated CPU seconds of one run (:data:`COST_PER_CLICK_S`, :data:`COST_PER_IMAGE_S`), including the
    forgetting measurement of an adapting strategy on ``source_images`` images."""
    per_click = COST_PER_CLICK_S.get(strategy, DEFAULT_COST_PER_CLICK_S)
    stream = images * (budget * per_click + COST_PER_IMAGE_S.get(strategy, 0.0))
    forgetting = 0.0 if strategy == "frozen" else source_images * budget * COST_PER_CLICK_S["frozen"]
    return stream + forgetting


def _load_stream_samples(
    dataset: DatasetConfig, cap: int | None, subset: SubsetPolicy, cache: Path | None
) -> tuple[list[Sample], int]:
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
        only: Restrict the plan to these stream names (``None`` = all).
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
    if config.sweep is not None:
        parts += [(dev, "dev") for stream in selected if (dev := stream.dev_stream()) is not None]
    for stream, part in parts:
        samples, available = _load_stream_samples(
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
            samples, _ = _load_stream_samples(
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
    ]
    for group, experiments in groups:
        for experiment in experiments:
            names = dev_names if group == SWEEP_GROUP else config.stream_names(experiment)
            for stream_name in names:
                if stream_name not in streams:
                    continue
                plan = streams[stream_name]
                task = plan.spec.task
                for listed in experiment.strategies:
                    spec = listed
                    if group == MAIN_GROUP and tuned and not listed.overrides and (task, listed.name) in tuned:
                        chosen = tuned[task, listed.name]
                        spec = StrategySpec(name=listed.name, overrides=chosen.overrides, label=listed.display_name)
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
                                "user": config.user,
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
                        estimate = estimate_seconds(spec.name, len(plan.keys), budget, source_images.get(task, 0))
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


# ============================================================================================ cache


def run_cache_path(cache_dir: Path, key: str) -> Path:
    """Where the raw JSON of run ``key`` is cached."""
    return cache_dir / "runs" / f"{key}.json"


def source_cache_path(cache_dir: Path, key: str) -> Path:
    """Where the source-validation baseline ``key`` is cached."""
    return cache_dir / "source" / f"{key}.json"


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        logger.warning("ignoring unreadable cache entry %s: %s", path, error)
        return None
    return data if isinstance(data, dict) and data.get("format") == BENCH_FORMAT else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(_finite(data)) + "\n").encode("utf-8"))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


# ======================================================================================== execution


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to load a model and a stream (picklable)."""

    model_path: str
    click_sigma: float
    stream: DatasetConfig | None
    stream_cap: int | None
    source: DatasetConfig | None
    source_cap: int | None
    subset: SubsetPolicy
    data_cache_dir: Path | None
    user: str
    shuffle: bool
    device: str


_WORKER_MEMORY: dict[str, Any] = {}


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)


def _memo(key: str, build: Callable[[], Any]) -> Any:
    if key not in _WORKER_MEMORY:
        _WORKER_MEMORY[key] = build()
    return _WORKER_MEMORY[key]


def _worker_samples(dataset: DatasetConfig | None, cap: int | None, settings: WorkerSettings) -> list[Sample]:
    if dataset is None:
        return []
    memo_key = f"samples:{dataset.model_dump_json()}:{cap}:{settings.subset}"
    samples: list[Sample] = _memo(
        memo_key, lambda: _load_stream_samples(dataset, cap, settings.subset, settings.data_cache_dir)[0]
    )
    return samples


def _worker_model(settings: WorkerSettings) -> Any:
    from clickadapt.models.checkpoint import load_checkpoint

    return _memo(f"model:{settings.model_path}", lambda: load_checkpoint(settings.model_path, settings.device))


def compute_source_baseline(job: SourceJob, settings: WorkerSettings) -> dict[str, Any]:
    """The original model's mean Dice per click on the source validation set (a cache entry)."""
    loaded = _worker_model(settings)
    samples = _worker_samples(settings.source, settings.source_cap, settings)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    curves = evaluate_frozen(
        loaded.model,
        loaded.task,
        samples,
        settings.user,
        job.budget,
        job.seed,
        click_sigma=settings.click_sigma,
        device=settings.device,
    )
    return {
        "format": BENCH_FORMAT,
        "kind": "source-baseline",
        "task": job.task,
        "budget": job.budget,
        "seed": job.seed,
        "images": len(samples),
        "curves": curves,
        "wall_s": time.perf_counter() - start_wall,
        "cpu_s": time.process_time() - start_cpu,
    }


def compute_run(job: BenchJob, settings: WorkerSettings, baseline: dict[str, list[float]] | None) -> dict[str, Any]:
    """One run through the stream engine (:func:`~clickadapt.evaluation.stream.run_stream`) and, for an
    adapting strategy, the forgetting measurement on the source validation set (a cache entry).

    Args:
        job: The run.
        settings: Model and data.
        baseline: The original model's curves on the source validation set for this budget and click seed
            (``None`` = no forgetting measurement).
    """
    loaded = _worker_model(settings)
    stream = _worker_samples(settings.stream, settings.stream_cap, settings)
    source = _worker_samples(settings.source, settings.source_cap, settings) if baseline is not None else []
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    result = run_stream(
        loaded.model,
        loaded.task,
        stream,
        job.strategy.name,
        job.strategy.overrides,
        settings.user,
        job.budget,
        order_seed=job.order_seed if settings.shuffle else None,
        click_seed=job.click_seed,
        progress=False,
        label=job.label,
        click_sigma=settings.click_sigma,
        device=settings.device,
    )
    if baseline is not None and source:
        result.validation_before = baseline
        result.validation_after = (
            baseline
            if job.strategy.name == FROZEN_LABEL
            else evaluate_frozen(
                result.final_model if result.final_model is not None else loaded.model,
                loaded.task,
                source,
                settings.user,
                job.budget,
                job.click_seed,
                click_sigma=settings.click_sigma,
                device=settings.device,
            )
        )
    return {
        "format": BENCH_FORMAT,
        "kind": "run",
        "stream": job.stream,
        "strategy": job.label,
        "budget": job.budget,
        "order_seed": job.order_seed,
        "click_seed": job.click_seed,
        "result": result.to_dict(),
        "wall_s": time.perf_counter() - start_wall,
        "cpu_s": time.process_time() - start_cpu,
    }


def _settings_for(plan: BenchPlan, task: str, stream: StreamSpec | None) -> WorkerSettings:
    config = plan.config
    model = plan.models[task]
    return WorkerSettings(
        model_path=model.path,
        click_sigma=model.click_sigma,
        stream=stream.test_data if stream is not None else None,
        stream_cap=config.stream_cap(stream) if stream is not None else None,
        source=config.source_validation.get(task),
        source_cap=config.source_validation_max_images,
        subset=config.subset,
        data_cache_dir=config.data_cache_dir,
        user=config.user,
        shuffle=config.shuffle,
        device=config.device,
    )


Call = tuple[str, Callable[..., dict[str, Any]], tuple[Any, ...], Path]
"""``(description, function, arguments, cache path)`` of one computation."""


def _execute(calls: list[Call], workers: int, threads: int) -> list[str]:
    """Run the calls in the given order (longest first), writing each result to its cache path as soon as
    it is done, so that an interrupted bench keeps what it finished.

    A call that raises is logged with its traceback and skipped; the others go on.

    Returns:
        The descriptions of the calls that failed.
    """
    failed: list[str] = []
    if not calls:
        return failed
    total = len(calls)
    started = time.perf_counter()

    def finish(number: int, description: str, path: Path, compute: Callable[[], dict[str, Any]]) -> None:
        try:
            data = compute()
        except Exception:
            logger.exception("[%d/%d] %s failed; continuing with the other runs", number, total, description)
            failed.append(description)
            return
        _write_json(path, data)
        _log_done(number, total, description, data, started)

    if workers <= 1 or total == 1:
        for number, (description, function, arguments, path) in enumerate(calls, start=1):
            finish(number, description, path, functools.partial(function, *arguments))
        return failed
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_worker_init, initargs=(threads,)
    ) as pool:
        futures = {
            pool.submit(function, *arguments): (description, path) for description, function, arguments, path in calls
        }
        for number, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            description, path = futures[future]
            finish(number, description, path, future.result)
    return failed


def _log_done(number: int, total: int, description: str, data: dict[str, Any], started: float) -> None:
    elapsed = time.perf_counter() - started
    summary = ""
    result = data.get("result")
    if result and result.get("images"):
        region = result["regions"][-1]
        curves = np.asarray([image["dice"][region] for image in result["images"]])
        summary = f" {region} Dice@1 {curves[:, 0].mean():.3f} @{curves.shape[1]} {curves[:, -1].mean():.3f}"
    remaining = elapsed / number * (total - number)
    logger.info(
        "[%d/%d] %s:%s (%.0f s cpu); elapsed %.1f min, about %.1f min left",
        number,
        total,
        description,
        summary,
        data.get("cpu_s", 0.0),
        elapsed / 60,
        remaining / 60,
    )


def run_bench(config: BenchConfig, only: Sequence[str] | None = None, command: str | None = None) -> Path:
    """Run the suite: compute every run missing from the cache, then write the raw files and the report.

    Args:
        config: The suite.
        only: Compute only the runs of these streams; the report still includes every run of the suite
            found in the cache (and lists the missing ones).
        command: The command line, for the report (default: this process's).

    Returns:
        The output folder. Runs that raised are logged, left out of the report (listed as missing) and
        named under ``failed`` in its ``bench.json``.
    """
    started_at = datetime.now(UTC)
    wall_start = time.perf_counter()
    plan = plan_bench(config, only)
    cache_dir = config.cache_dir
    baseline_calls: list[Call] = []
    for source_job in plan.source_jobs:
        path = source_cache_path(cache_dir, source_job.key)
        if _read_json(path) is None:
            settings = _settings_for(plan, source_job.task, None)
            description = (
                f"{source_job.task} source validation / {source_job.budget} clicks / click seed {source_job.seed}"
            )
            baseline_calls.append((description, compute_source_baseline, (source_job, settings), path))
    missing = _unique_keys(job for job in plan.jobs if _read_json(run_cache_path(cache_dir, job.key)) is None)
    logger.info(
        "bench: %d runs (%d cached, %d to compute), %d source baselines to compute, %d workers",
        len(plan.jobs),
        len(plan.jobs) - len(missing),
        len(missing),
        len(baseline_calls),
        config.workers,
    )
    failed = _execute(baseline_calls, config.workers, config.threads_per_worker)
    computed = 0
    if config.sweep is not None:  # phase 1: the sweep on the dev parts, whose choice the main runs need
        sweep = [job for job in missing if SWEEP_GROUP in job.groups]
        failed += _execute(_run_calls(plan, sweep), config.workers, config.threads_per_worker)
        computed += len(sweep)
        tuned = {key: choice.spec for key, choice in select_tuned(cached_runs(plan, SWEEP_GROUP)).items()}
        plan = plan_bench(config, only, tuned)
        missing = _unique_keys(job for job in plan.jobs if _read_json(run_cache_path(cache_dir, job.key)) is None)
    else:
        tuned = {}
    failed += _execute(_run_calls(plan, missing), config.workers, config.threads_per_worker)
    missing_count = computed + len(missing)
    full_plan = plan if only is None else _cached_plan(config, plan, tuned)
    meta = bench_metadata(
        full_plan, started_at, time.perf_counter() - wall_start, missing_count, len(baseline_calls), command
    )
    meta["failed"] = failed
    earlier = _earlier_invocations(config.output, meta)
    meta["invocations"] = [*earlier, _invocation(meta)] if meta["computed_runs"] or not earlier else earlier
    write_raw(config.output, full_plan, meta)
    write_bench_report(config.output)
    return config.output


def _run_calls(plan: BenchPlan, jobs: Sequence[BenchJob]) -> list[Call]:
    """The computations of ``jobs`` (longest first), each with its source baseline read from the cache."""
    calls: list[Call] = []
    for job in sorted(jobs, key=lambda job: -job.estimate_s):
        stream = plan.streams[job.stream].spec
        baseline = None
        if job.source_key is not None:
            entry = _read_json(source_cache_path(plan.config.cache_dir, job.source_key))
            baseline = entry["curves"] if entry is not None else None
        settings = _settings_for(plan, stream.task, stream)
        path = run_cache_path(plan.config.cache_dir, job.key)
        calls.append((job.describe(), compute_run, (job, settings, baseline), path))
    return calls


def cached_runs(plan: BenchPlan, group: str) -> list[BenchRun]:
    """The runs of ``group`` found in the cache, as :class:`BenchRun` (missing ones left out)."""
    runs = []
    for job in plan.jobs:
        entry = _read_json(run_cache_path(plan.config.cache_dir, job.key))
        if group not in job.groups or entry is None:
            continue
        stream = plan.streams[job.stream].spec
        result = StreamResult.from_dict(entry["result"])
        result.strategy = job.label
        runs.append(
            BenchRun(
                job.stream,
                stream.task,
                stream.shift,
                list(job.groups),
                result,
                float(entry.get("wall_s", 0.0)),
                float(entry.get("cpu_s", 0.0)),
            )
        )
    return runs


@dataclass(frozen=True)
class TunedChoice:
    """The sweep's choice for one (task, strategy name).

    Attributes:
        spec: The chosen candidate (its label and overrides).
        scores: Per candidate label, the mean dev Dice over clicks 1..budget (%) and the number of dev images.
    """

    spec: StrategySpec
    scores: dict[str, tuple[float, int]]


def select_tuned(runs: Sequence[BenchRun]) -> dict[tuple[str, str], TunedChoice]:
    """Per (task, strategy name), the sweep candidate with the highest mean Dice over clicks (the normalised
    area under the Dice-vs-click curve on the key region: brain lesion, fundus cup), averaged over every
    dev image of the task (repetitions of an image averaged first). Ties keep the candidate listed first."""
    scores: dict[tuple[str, str], dict[str, list[float]]] = {}
    specs: dict[str, StrategySpec] = {}
    for run in runs:
        region = _key_region(run.task)
        per = scores.setdefault((run.task, run.result.strategy_name), {})
        values = per.setdefault(run.label, [])
        values += [float(np.mean(image.dice[region])) for image in run.result.images]
        specs[run.label] = StrategySpec(name=run.result.strategy_name, overrides=run.result.overrides, label=run.label)
    choices = {}
    for key, per in scores.items():
        summary = {label: (100 * float(np.mean(values)), len(values)) for label, values in per.items() if values}
        if summary:
            best = max(summary, key=lambda label: summary[label][0])
            choices[key] = TunedChoice(specs[best], summary)
    return choices


def _invocation(meta: dict[str, Any]) -> dict[str, Any]:
    """The record of one ``clickadapt bench`` invocation kept in ``bench.json``."""
    return {name: meta[name] for name in ("command", "date", "wall_s", "computed_runs", "cached_runs", "workers")}


def _earlier_invocations(output: Path, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Invocations recorded in an existing ``bench.json`` that computed runs (which this report may still use).

    The history restarts when this invocation computed every run (nothing came from the cache) or when
    the code digest changed.
    """
    if meta["cached_runs"] == 0:
        return []
    previous = _read_json(output / BENCH_JSON)
    if previous is None or previous.get("code_version") != meta["code_version"]:
        return []
    earlier = previous.get("invocations")
    if not isinstance(earlier, list):
        return []
    return [entry for entry in earlier if isinstance(entry, dict) and entry.get("computed_runs")]


def _unique_keys(jobs: Iterable[BenchJob]) -> list[BenchJob]:
    """The jobs with distinct cache keys (two labels for one setting, e.g. ``oaims`` and ``σ = 3``, run once)."""
    unique: dict[str, BenchJob] = {}
    for job in jobs:
        unique.setdefault(job.key, job)
    return list(unique.values())


def _cached_plan(config: BenchConfig, partial: BenchPlan, tuned: TunedSettings | None = None) -> BenchPlan:
    """The plan of the whole suite, for a report after ``--only`` (streams whose data loads)."""
    try:
        return plan_bench(config, tuned=tuned)
    except (FileNotFoundError, ValueError) as error:
        logger.warning("report limited to the computed streams: %s", error)
        return partial


# ========================================================================================== raw files

RAW_COLUMNS = (
    "stream",
    "task",
    "shift",
    "groups",
    "strategy",
    "strategy_name",
    "overrides",
    "budget",
    "order_seed",
    "click_seed",
    "user",
    "position",
    "image_key",
    "region",
    "dice",
    "first_before_update",
    "clicks",
    "versions",
    "forward_s",
    "update_s",
    "finish_s",
    "version_after",
)
RUNS_COLUMNS = (
    "stream",
    "task",
    "shift",
    "groups",
    "strategy",
    "strategy_name",
    "overrides",
    "budget",
    "order_seed",
    "click_seed",
    "user",
    "region",
    "images",
    "skipped",
    "source_dice_before",
    "source_dice_after",
    "wall_s",
    "cpu_s",
    "cache_key",
)


def _numbers(values: Iterable[float]) -> str:
    return " ".join(f"{value:.6g}" for value in values)


def _parse_numbers(text: str) -> list[float]:
    return [float(value) for value in text.split()]


def machine_description() -> dict[str, str]:
    """CPU model (``lscpu``), logical CPUs, torch and Python versions, and the load average."""
    info = cpu_and_versions()
    try:
        info["load"] = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        info["load"] = "unknown"
    return info


def bench_metadata(
    plan: BenchPlan,
    started_at: datetime,
    wall_s: float,
    computed: int,
    computed_baselines: int,
    command: str | None,
) -> dict[str, Any]:
    """The ``bench.json`` record: command, date, machine, wall time, models, streams and experiments."""
    config = plan.config
    return {
        "format": BENCH_FORMAT,
        "title": config.title,
        "command": command or shlex.join(["clickadapt", *sys.argv[1:]]),
        "date": started_at.isoformat(timespec="seconds"),
        "wall_s": wall_s,
        "computed_runs": computed,
        "failed": [],
        "computed_baselines": computed_baselines,
        "cached_runs": len({job.key for job in plan.jobs}) - computed,
        "workers": config.workers,
        "threads_per_worker": config.threads_per_worker,
        "device": config.device,
        "machine": machine_description(),
        "code_version": plan.code,
        "user": config.user,
        "subset": config.subset,
        "capped": config.capped,
        "models": {task: vars(info) for task, info in plan.models.items()},
        "source_validation": {
            task: {"data": dataset.model_dump(mode="json"), "images": plan.source_images.get(task, 0)}
            for task, dataset in config.source_validation.items()
            if task in plan.models
        },
        "streams": [
            {
                "name": name,
                "title": stream.spec.title,
                "task": stream.spec.task,
                "shift": stream.spec.shift,
                "slices": stream.spec.slices,
                "part": stream.part,
                "data": stream.spec.data.model_dump(mode="json", exclude_defaults=True),
                "available": stream.available,
                "used": len(stream.keys),
                "cap": config.stream_cap(stream.spec),
                "patients": stream.patients,
            }
            for name, stream in plan.streams.items()
        ],
        "ablations": [
            {
                "streams": config.stream_names(experiment),
                "strategies": [
                    {"label": spec.display_name, "name": spec.name, "overrides": spec.overrides}
                    for spec in experiment.strategies
                ],
            }
            for experiment in config.ablations
        ],
        "expected_runs": len(plan.jobs),
    }


def write_raw(output: Path, plan: BenchPlan, meta: dict[str, Any]) -> list[Path]:
    """Write ``raw.csv``, ``runs.csv`` and ``bench.json`` from the cached runs of ``plan``.

    Runs missing from the cache are listed in ``bench.json`` under ``missing``.

    Returns:
        The paths written.
    """
    output.mkdir(parents=True, exist_ok=True)
    raw_rows: list[dict[str, Any]] = []
    run_rows: list[dict[str, Any]] = []
    missing = []
    for job in plan.jobs:
        entry = _read_json(run_cache_path(plan.config.cache_dir, job.key))
        if entry is None:
            missing.append(
                {
                    "stream": job.stream,
                    "strategy": job.label,
                    "budget": job.budget,
                    "order_seed": job.order_seed,
                    "click_seed": job.click_seed,
                }
            )
            continue
        result = StreamResult.from_dict(entry["result"])
        result.strategy = job.label
        stream = plan.streams[job.stream].spec
        common = {
            "stream": job.stream,
            "task": stream.task,
            "shift": stream.shift,
            "groups": "+".join(job.groups),
            "strategy": job.label,
            "strategy_name": result.strategy_name,
            "overrides": json.dumps(result.overrides, sort_keys=True),
            "budget": result.budget,
            "order_seed": "" if result.order_seed is None else result.order_seed,
            "click_seed": result.click_seed,
            "user": result.user,
        }
        for region in result.regions:
            before = (result.validation_before or {}).get(region)
            after = (result.validation_after or {}).get(region)
            run_rows.append(
                common
                | {
                    "region": region,
                    "images": len(result.images),
                    "skipped": " ".join(result.skipped),
                    "source_dice_before": "" if before is None else _numbers(before),
                    "source_dice_after": "" if after is None else _numbers(after),
                    "wall_s": f"{entry.get('wall_s', float('nan')):.3f}",
                    "cpu_s": f"{entry.get('cpu_s', float('nan')):.3f}",
                    "cache_key": job.key,
                }
            )
            for image in result.images:
                raw_rows.append(
                    common
                    | {
                        "position": image.position,
                        "image_key": image.key,
                        "region": region,
                        "dice": _numbers(image.dice[region]),
                        "first_before_update": ""
                        if image.first_before_update is None
                        else f"{image.first_before_update[region]:.6g}",
                        "clicks": " ".join(f"{c.row},{c.col},{c.label}" for c in image.clicks),
                        "versions": " ".join(str(version) for version in image.versions),
                        "forward_s": _numbers(image.forward_s),
                        "update_s": _numbers(image.update_s),
                        "finish_s": f"{image.finish_s:.6g}",
                        "version_after": image.version_after,
                    }
                )
    paths = []
    for name, columns, rows in ((RAW_CSV, RAW_COLUMNS, raw_rows), (RUNS_CSV, RUNS_COLUMNS, run_rows)):
        path = output / name
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        paths.append(path)
    meta = meta | {"missing": missing}
    atomic_write_bytes(output / BENCH_JSON, (json.dumps(_finite(meta), indent=1) + "\n").encode("utf-8"))
    paths.append(output / BENCH_JSON)
    return paths


@dataclass
class BenchRun:
    """One run read back from the raw files.

    Attributes:
        stream: Stream name.
        task: Task name.
        shift: Kind of shift of the stream.
        groups: ``main`` and/or ``ablation``.
        result: The run (images with per-click Dice; forgetting curves).
        wall_s: Seconds the run took (stream and forgetting).
        cpu_s: CPU seconds of the run.
    """

    stream: str
    task: str
    shift: str
    groups: list[str]
    result: StreamResult
    wall_s: float
    cpu_s: float

    @property
    def label(self) -> str:
        """Strategy label."""
        return self.result.strategy

    @property
    def budget(self) -> int:
        """Clicks per image."""
        return self.result.budget


def read_raw(results_dir: str | Path) -> tuple[dict[str, Any], list[BenchRun]]:
    """``bench.json`` and the runs of ``raw.csv`` + ``runs.csv``.

    Raises:
        FileNotFoundError: If a raw file is missing.
        ValueError: Naming the file when a CSV lacks columns.
    """
    results_dir = Path(results_dir)
    for name in (BENCH_JSON, RAW_CSV, RUNS_CSV):
        if not (results_dir / name).is_file():
            raise FileNotFoundError(f"{results_dir} has no {name}; run `clickadapt bench CONFIG` first")
    meta = json.loads((results_dir / BENCH_JSON).read_text(encoding="utf-8"))
    runs: dict[tuple[str, str, str, str, str], BenchRun] = {}
    for row in _read_csv(results_dir / RUNS_CSV, RUNS_COLUMNS):
        run_key = (row["stream"], row["strategy"], row["budget"], row["order_seed"], row["click_seed"])
        run = runs.get(run_key)
        if run is None:
            result = StreamResult(
                strategy=row["strategy"],
                strategy_name=row["strategy_name"],
                overrides=json.loads(row["overrides"] or "{}"),
                task=row["task"],
                regions=[],
                user=row["user"],
                budget=int(row["budget"]),
                order_seed=None if row["order_seed"] == "" else int(row["order_seed"]),
                click_seed=int(row["click_seed"]),
                skipped=row["skipped"].split(),
            )
            run = BenchRun(
                row["stream"],
                row["task"],
                row["shift"],
                row["groups"].split("+"),
                result,
                float(row["wall_s"]),
                float(row["cpu_s"]),
            )
            runs[run_key] = run
        run.result.regions.append(row["region"])
        if row["source_dice_before"]:
            if run.result.validation_before is None or run.result.validation_after is None:
                run.result.validation_before, run.result.validation_after = {}, {}
            run.result.validation_before[row["region"]] = _parse_numbers(row["source_dice_before"])
            run.result.validation_after[row["region"]] = _parse_numbers(row["source_dice_after"])
    images: dict[tuple[str, str, str, str, str], dict[int, ImageRecord]] = {}
    for row in _read_csv(results_dir / RAW_CSV, RAW_COLUMNS):
        run_key = (row["stream"], row["strategy"], row["budget"], row["order_seed"], row["click_seed"])
        if run_key not in runs:
            raise ValueError(f"{results_dir / RAW_CSV}: run {run_key} is not in {RUNS_CSV}")
        position = int(row["position"])
        per_run = images.setdefault(run_key, {})
        if position not in per_run:
            clicks = [Click(*(int(part) for part in item.split(","))) for item in row["clicks"].split()]
            per_run[position] = ImageRecord(
                position=position,
                key=row["image_key"],
                clicks=clicks,
                dice={},
                forward_s=_parse_numbers(row["forward_s"]),
                update_s=_parse_numbers(row["update_s"]),
                finish_s=float(row["finish_s"]),
                versions=[int(version) for version in row["versions"].split()],
                version_after=int(row["version_after"]),
            )
        per_run[position].dice[row["region"]] = _parse_numbers(row["dice"])
        if row["first_before_update"]:
            record = per_run[position]
            record.first_before_update = (record.first_before_update or {}) | {
                row["region"]: float(row["first_before_update"])
            }
    for run_key, run in runs.items():
        per_run = images.get(run_key, {})
        run.result.images = [per_run[position] for position in sorted(per_run)]
    return meta, list(runs.values())


def _read_csv(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = sorted(set(columns) - set(reader.fieldnames or []))
        if missing:
            raise ValueError(f"{path} is not a clickadapt bench file: missing columns {missing}")
        return list(reader)


# =========================================================================================== report


@dataclass
class StrategyNumbers:
    """Summary statistics of one strategy label at one budget on one stream (see :func:`summarise`)."""

    label: str
    budget: int
    entry: dict[str, Any]
    runs: list[BenchRun] = field(default_factory=list)

    def stat(self, region: str, metric: str) -> dict[str, Any] | None:
        """``{"mean", "sd", "per_seed"}`` of a metric, or ``None`` when absent."""
        value: dict[str, Any] | None = self.entry["regions"].get(region, {}).get(metric)
        return value

    def mean(self, region: str, metric: str) -> float:
        """Mean over seeds (NaN when absent)."""
        statistic = self.stat(region, metric)
        return float("nan") if statistic is None or statistic["mean"] is None else float(statistic["mean"])


def stream_numbers(runs: Sequence[BenchRun], group: str | None = None) -> dict[tuple[str, int], StrategyNumbers]:
    """Per (label, budget), the :func:`~clickadapt.evaluation.report.summarise` entry of its runs."""
    selected = [run for run in runs if group is None or group in run.groups]
    numbers: dict[tuple[str, int], StrategyNumbers] = {}
    for budget in sorted({run.budget for run in selected}):
        at_budget = [run for run in selected if run.budget == budget]
        for entry in summarise([run.result for run in at_budget])["strategies"]:
            label = entry["strategy"]
            numbers[(label, budget)] = StrategyNumbers(
                label, budget, entry, [run for run in at_budget if run.label == label]
            )
    return numbers


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


def _label_order(labels: Iterable[str], preferred: Sequence[str]) -> list[str]:
    labels = list(dict.fromkeys(labels))
    return [label for label in preferred if label in labels] + [label for label in labels if label not in preferred]


MAIN_ORDER = ("frozen", "tent", "self-train", "ia-sa", "tsca", "post", "mid", "oaims")
"""The order of strategies in tables and plots (others follow in the order met)."""


def _order_index(label: str) -> int:
    return MAIN_ORDER.index(label) if label in MAIN_ORDER else len(MAIN_ORDER)


def _regions_of(task: str) -> list[str]:
    return list(get_task(task).regions)


def _key_region(task: str) -> str:
    """The region the analysis ranks by: brain lesion, fundus cup (as in the paper)."""
    regions = _regions_of(task)
    return "cup" if "cup" in regions else regions[0]


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


def _per_seed(entry: StrategyNumbers | None, region: str, metric: str) -> list[float]:
    statistic = None if entry is None else entry.stat(region, metric)
    return [] if statistic is None else [float("nan") if v is None else float(v) for v in statistic["per_seed"]]


def image_values(
    runs: Sequence[BenchRun], region: str, click: int, before_update: bool = False
) -> dict[tuple[str, int], list[float]]:
    """Per (image key, click seed), the Dice on ``region`` after ``click`` clicks in each run (one value per
    stream order) — the pairing unit of :func:`~clickadapt.evaluation.statistics.paired_difference`.

    With ``before_update`` (``click`` 1 only), the first mask of the model before any update on the image
    (:attr:`~clickadapt.evaluation.stream.ImageRecord.first_before_update`) instead of the displayed one."""
    values: dict[tuple[str, int], list[float]] = {}
    for run in runs:
        index = min(click, run.budget) - 1
        for image in run.result.images:
            if region not in image.dice:
                continue
            if before_update:
                if image.first_before_update is None or region not in image.first_before_update:
                    continue
                value = image.first_before_update[region]
            else:
                value = image.dice[region][index]
            values.setdefault((image.key, run.result.click_seed), []).append(float(value))
    return values


def dice_interval(runs: Sequence[BenchRun], region: str, click: int, before_update: bool = False) -> Interval:
    """Mean Dice after ``click`` clicks with its 95 % bootstrap interval over images (repetitions of an
    image — stream orders, click seeds — averaged first); fractions, ``n`` = images."""
    values = image_values(runs, region, click, before_update)
    per_pair = {pair: float(np.mean(items)) for pair, items in values.items()}
    return bootstrap_mean(list(per_unit_means(per_pair).values()))


Comparison = tuple[float, str, Interval]
"""``(mean difference in Dice points, verdict, its interval in Dice points)``."""


def compare(
    numbers: dict[tuple[str, int], StrategyNumbers], better: str, worse: str, budget: int, region: str, click: int
) -> Comparison | None:
    """Whether ``better`` beats ``worse`` on Dice at ``click``: the paired difference over images with its 95 %
    bootstrap interval, and a verdict.

    Pairs are (image, click seed): the same image with the same simulated clicks; a strategy's stream
    orders are averaged per pair first. Verdicts: ``holds`` (interval above 0), ``reversed`` (below 0),
    ``unresolved`` (it contains 0: the data cannot tell the two apart). A difference is called real only
    when its interval excludes 0.

    Returns:
        ``(difference, verdict, interval)`` in Dice points, or ``None`` when either strategy is missing or
        they share no image.
    """
    first = numbers.get((better, budget))
    second = numbers.get((worse, budget))
    if first is None or second is None:
        return None
    interval = paired_difference(
        image_values(first.runs, region, click), image_values(second.runs, region, click)
    ).scaled(100.0)
    if interval.n == 0:
        return None
    verdict = "unresolved" if not interval.excludes_zero else "holds" if interval.low > 0 else "reversed"
    return interval.mean, verdict, interval


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
        labels = sorted({label for label, b in per if b == budget}, key=_order_index)
        if not labels:
            continue
        for region in _regions_of(stream["task"]):
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
            lines += ["", *_per_patient_table(per, labels, budget, _key_region(stream["task"]))]
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


def bench_report_markdown(meta: dict[str, Any], runs: Sequence[BenchRun], discussion: str | None = None) -> str:
    """The whole ``REPORT.md`` from the raw files' contents.

    Args:
        meta: ``bench.json``.
        runs: The runs of ``raw.csv``/``runs.csv``.
        discussion: The hand-written discussion to keep (``None`` = a placeholder).
    """
    streams = [stream for stream in meta["streams"] if stream.get("part") != "dev"]  # reported: test parts
    by_stream = {stream["name"]: [run for run in runs if run.stream == stream["name"]] for stream in streams}
    numbers = {name: stream_numbers(stream_runs, MAIN_GROUP) for name, stream_runs in by_stream.items()}
    main_budget = max((run.budget for run in runs if MAIN_GROUP in run.groups), default=10)
    machine = meta.get("machine", {})
    lines = [
        f"# {meta.get('title', 'Benchmark')}",
        "",
        "Generated by `clickadapt bench` from the raw files in this folder (`raw.csv`, `runs.csv`, "
        "`bench.json`); regenerate with `clickadapt bench CONFIG --report-only`. Dice in %, measured "
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
    lines += ["", *_paper_section(streams, numbers, main_budget)]
    for stream in streams:
        lines += ["", *_stream_section(stream, by_stream[stream["name"]], numbers[stream["name"]], main_budget)]
    lines += ["", *_ablation_section(meta, by_stream, main_budget)]
    lines += ["", *_analysis_section(streams, numbers, main_budget)]
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
    labels = _label_order([label for per in numbers.values() for (label, b) in per if b == budget], MAIN_ORDER)
    lines = [
        f"## Overview: Dice at click {budget} (brain lesion; fundus cup / disc)",
        "",
        "Mean over orders. The best strategy per stream is in bold.",
        "",
    ]
    rows = []
    for stream in streams:
        per = numbers[stream["name"]]
        region = _key_region(stream["task"])
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
            if "disc" in _regions_of(stream["task"]):
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
    streams: list[dict[str, Any]], numbers: dict[str, dict[tuple[str, int], StrategyNumbers]], budget: int
) -> list[str]:
    methods = list(PAPER_METHODS)
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
    header = ["shift", "source", "data", "region", *(PAPER_METHODS[m] for m in methods)]
    rows = []
    groups = list(dict.fromkeys((paper.task, paper.shift) for paper in PAPER_RESULTS))
    for task, shift in groups:
        papers = [paper for paper in PAPER_RESULTS if (paper.task, paper.shift) == (task, shift)]
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
    regions = _regions_of(stream["task"])
    labels = _label_order([label for (label, b) in numbers if b == budget], MAIN_ORDER)
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
        budget_labels = _label_order([label for (label, b) in numbers if b in small], MAIN_ORDER)
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
        lines += _stream_table(numbers, labels, budget, _regions_of(task))
        lines += ["", f"![Ablations on {name}]({PLOTS_DIR}/{name}_ablation_dice_vs_click.png)", ""]
    if described:
        lines += ["Labels: " + "; ".join(f"`{label}` = {text}" for label, text in described.items())]
    if not found:
        lines.append("No ablation runs yet.")
    return lines


def _analysis_section(
    streams: list[dict[str, Any]], numbers: dict[str, dict[tuple[str, int], StrategyNumbers]], budget: int
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
    header = ["stream", *(f"{a} > {b}" for a, b in PAPER_ORDERING)]
    rows = []
    tallies: dict[tuple[str, str], dict[str, int]] = {pair: {} for pair in PAPER_ORDERING}
    for stream in streams:
        region = _key_region(stream["task"])
        row = [stream["name"]]
        for pair in PAPER_ORDERING:
            comparison = compare(numbers[stream["name"]], pair[0], pair[1], budget, region, budget)
            row.append(_verdict_cell(comparison))
            if comparison is not None:
                tallies[pair][comparison[1]] = tallies[pair].get(comparison[1], 0) + 1
        rows.append(row)
    lines += _table(header, rows)
    lines += [""]
    lines += [*_ordering_by_click(streams, numbers, budget), ""]
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
    streams: list[dict[str, Any]], numbers: dict[str, dict[tuple[str, int], StrategyNumbers]], budget: int
) -> list[str]:
    """Per pair of the paper's ordering, on how many streams it holds on average at clicks 1, 5 and T."""
    clicks = reported_clicks(budget)
    rows = []
    for better, worse in PAPER_ORDERING:
        row = [f"{better} > {worse}"]
        for click in clicks:
            verdicts = [
                comparison[1]
                for stream in streams
                if (
                    comparison := compare(
                        numbers[stream["name"]], better, worse, budget, _key_region(stream["task"]), click
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
        region = _key_region(stream["task"])
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


# ============================================================================================ plots


def plot_overview(meta: dict[str, Any], runs: Sequence[BenchRun], path: Path, budget: int) -> Path:
    """Grouped bars: Dice (%) at the last click per stream (key region) and strategy, ± sd over orders."""
    streams = meta["streams"]
    numbers = {s["name"]: stream_numbers([r for r in runs if r.stream == s["name"]], MAIN_GROUP) for s in streams}
    labels = _label_order([label for per in numbers.values() for (label, b) in per if b == budget], MAIN_ORDER)
    figure = Figure(figsize=(max(8.0, 1.1 * len(streams) + 2), 4.0))
    axis = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(len(labels), 1)
    for index, label in enumerate(labels):
        means, sds = [], []
        for stream in streams:
            entry = numbers[stream["name"]].get((label, budget))
            statistic = None if entry is None else entry.stat(_key_region(stream["task"]), f"dice@{budget}")
            ok = statistic is not None and statistic["mean"] is not None
            means.append(100 * statistic["mean"] if ok and statistic else np.nan)
            sds.append(100 * statistic["sd"] if ok and statistic else 0.0)
        positions = np.arange(len(streams)) + (index - (len(labels) - 1) / 2) * width
        axis.bar(positions, means, width, yerr=sds, label=label, capsize=1.5)
    axis.set_xticks(np.arange(len(streams)))
    axis.set_xticklabels([stream["name"] for stream in streams], rotation=30, ha="right", fontsize="small")
    axis.set_ylabel(f"Dice (%) at click {budget}")
    axis.set_title("Brain lesion / fundus cup Dice at the last click")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize="x-small", ncol=min(len(labels), 4))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def gain_along_stream(runs: Sequence[StreamResult], region: str, click: int) -> dict[str, np.ndarray]:
    """Per strategy, the Dice gain over the frozen model on the same image at each stream position.

    Each run is paired with the frozen run of the same seed (same order and same user clicks on each
    image), so the difficulty of the image cancels and what is left is what the strategy has learnt by
    then. Averaged over seeds position by position; Dice points.

    Returns:
        ``{label: gains}`` for every label but ``frozen`` that has a frozen partner.
    """
    frozen = {run.click_seed: run for run in runs if run.strategy == FROZEN_LABEL}
    per_label: dict[str, list[np.ndarray]] = {}
    for run in runs:
        partner = frozen.get(run.click_seed)
        if run.strategy == FROZEN_LABEL or partner is None or region not in run.regions:
            continue
        reference = {image.key: image.dice[region][click - 1] for image in partner.images}
        gains = [
            100 * (image.dice[region][click - 1] - reference[image.key])
            for image in run.images
            if image.key in reference
        ]
        per_label.setdefault(run.strategy, []).append(np.asarray(gains, dtype=np.float64))
    averaged = {}
    for label, series in per_label.items():
        length = min(values.size for values in series)
        averaged[label] = np.mean([values[:length] for values in series], axis=0)
    return averaged


def plot_gain_along_stream(runs: Sequence[StreamResult], path: Path, budget: int) -> Path:
    """Learning curves: gain over frozen (Dice points) at click 1 and at the last click along the stream,
    trailing moving average over a quarter of the stream; one panel per region and click."""
    regions: list[str] = []
    for run in runs:
        regions += [region for region in run.regions if region not in regions]
    figure = Figure(figsize=(9.0, 3.4 * max(len(regions), 1)))
    for row, region in enumerate(regions):
        for column, click in enumerate((1, budget)):
            axis = figure.add_subplot(max(len(regions), 1), 2, 2 * row + column + 1)
            for label, gains in gain_along_stream(runs, region, click).items():
                window = max(1, gains.size // 4)
                positions = np.arange(1, gains.size + 1)
                axis.plot(positions, moving_average(gains, window), label=label, color=_colour(label))
            axis.axhline(0.0, color="black", linewidth=0.8)
            axis.set_title(f"{region}: gain over frozen at click {click}", fontsize="medium")
            axis.set_xlabel("image in stream")
            axis.set_ylabel("Δ Dice (points), moving average")
            axis.grid(alpha=0.3)
            axis.legend(fontsize="x-small", ncol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def _colour(label: str) -> str:
    """A fixed colour per main strategy so that all plots agree."""
    index = _order_index(label)
    return f"C{index}" if index < len(MAIN_ORDER) else "C9"


def write_plots(meta: dict[str, Any], runs: Sequence[BenchRun], results_dir: Path) -> list[Path]:
    """Per stream, Dice vs click and learning curves (main strategies, full budget); per ablation stream,
    Dice vs click of the ablation labels; an overview bar chart."""
    plots = results_dir / PLOTS_DIR
    budget = max((run.budget for run in runs if MAIN_GROUP in run.groups), default=10)
    paths = []
    for stream in meta["streams"]:
        name = stream["name"]
        main = [r.result for r in runs if r.stream == name and MAIN_GROUP in r.groups and r.budget == budget]
        main.sort(key=lambda result: _order_index(result.strategy))
        if main:
            paths.append(plot_dice_vs_click(main, plots / f"{name}_dice_vs_click.png"))
            paths.append(plot_gain_along_stream(main, plots / f"{name}_learning_curves.png", budget))
            paths.append(plot_stream_dice(main, plots / f"{name}_stream_dice.png"))
        ablation = [r.result for r in runs if r.stream == name and ABLATION_GROUP in r.groups and r.budget == budget]
        if ablation:
            paths.append(plot_dice_vs_click(ablation, plots / f"{name}_ablation_dice_vs_click.png"))
    if runs:
        paths.append(plot_overview(meta, runs, plots / "overview.png", budget))
    return paths


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


# ============================================================================================== CLI


def describe_plan(plan: BenchPlan) -> str:
    """The ``--dry-run`` listing: every run with its images, cache state and estimated CPU time."""
    config = plan.config
    lines = [
        f"{'stream':<16} {'strategy':<20} {'budget':>6} {'order':>5} {'click':>5} {'images':>6}  {'state':<10} "
        f"{'est. s':>7}"
    ]
    total = 0.0
    to_compute: list[float] = []
    first_label: dict[str, str] = {}
    cached_count = 0
    for job in plan.jobs:
        cached = _read_json(run_cache_path(config.cache_dir, job.key)) is not None
        images = len(plan.streams[job.stream].keys)
        if job.key in first_label:
            state = f"= {first_label[job.key]}"
        else:
            first_label[job.key] = job.label
            total += job.estimate_s
            cached_count += cached
            if not cached:
                to_compute.append(job.estimate_s)
            state = "cached" if cached else "to run"
        lines.append(
            f"{job.stream:<16} {job.label:<20} {job.budget:>6} {job.order_seed:>5} {job.click_seed:>5} {images:>6}  "
            f"{state:<10} {job.estimate_s:>7.0f}" + ("  [ablation]" if job.groups == [ABLATION_GROUP] else "")
        )
    baselines = sum(
        job.images * job.budget * COST_PER_CLICK_S["frozen"]
        for job in plan.source_jobs
        if _read_json(source_cache_path(config.cache_dir, job.key)) is None
    )
    work = sum(to_compute) + baselines
    wall = _makespan(to_compute, config.workers) + baselines / config.workers
    lines += [
        "",
        f"{len(plan.jobs)} runs, {len(first_label)} distinct ({cached_count} cached, {len(to_compute)} to run); "
        f"{len(plan.source_jobs)} source-validation baselines.",
        f"Estimated CPU time to compute: {work / 60:.1f} min (all runs from scratch: {(total + baselines) / 60:.1f} "
        f"min); estimated wall time with {config.workers} worker(s) on an otherwise idle machine: {wall / 60:.1f} min.",
    ]
    return "\n".join(lines)


def _makespan(durations: Sequence[float], workers: int) -> float:
    """Longest-first greedy schedule length of ``durations`` on ``workers`` identical workers."""
    loads = [0.0] * max(workers, 1)
    for duration in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += duration
    return max(loads)


def handle_bench(args: argparse.Namespace) -> int:
    """Handler of ``clickadapt bench``."""
    config = load_bench_config(args.config)
    updates: dict[str, Any] = {}
    if args.workers is not None:
        if args.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {args.workers}")
        updates["workers"] = args.workers
    if args.output is not None:
        updates["output"] = Path(args.output)
    if updates:
        config = config.model_copy(update=updates)
    if args.report_only:
        paths = write_bench_report(config.output)
        print(f"Report regenerated: {paths[0]}")
        return 0
    only = None if args.only is None else [name.strip() for name in args.only.split(",") if name.strip()]
    if args.dry_run:
        print(describe_plan(plan_bench(config, only)))
        return 0
    command = (
        shlex.join(["clickadapt", "bench", *sys.argv[sys.argv.index("bench") + 1 :]]) if "bench" in sys.argv else None
    )
    output = run_bench(config, only, command)
    print(f"Report: {output / REPORT_MD}")
    failed = json.loads((output / BENCH_JSON).read_text(encoding="utf-8")).get("failed", [])
    if failed:
        print(f"{len(failed)} run(s) failed (see the log above): {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: Any) -> None:
    """Add the ``bench`` sub-command."""
    parser = subparsers.add_parser(
        "bench",
        help="run the benchmark suite on the real data (cached) and write bench/results/REPORT.md",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("config", help="bench YAML, e.g. configs/bench/full.yaml or configs/bench/quick.yaml")
    parser.add_argument("--only", help="comma-separated stream names: compute only their runs")
    parser.add_argument("--dry-run", action="store_true", help="list the runs with cache state and estimated time")
    parser.add_argument("--report-only", action="store_true", help="regenerate the report from the raw files")
    parser.add_argument("--workers", type=int, help="worker processes (default: the config's)")
    parser.add_argument("--output", help="output folder (default: the config's)")
    parser.set_defaults(handler=handle_bench)
