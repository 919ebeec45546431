"""The bench config: streams, experiments, ablations, the sweep, and its YAML loader with errors that name the field."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.harness.constants import (
    ABLATION_GROUP,
    DEFAULT_BENCH_CACHE,
    DEFAULT_OUTPUT,
    DEV_SUFFIX,
    FULL_LENGTH_IMAGES,
    MAIN_GROUP,
    NOISY_GROUP,
    ShiftKind,
)
from clickadapt.adaptation.strategies import strategy_config
from clickadapt.clicks.simulators import make_simulated_user
from clickadapt.data.registry import DatasetConfig, PatientFold
from clickadapt.evaluation.config import (
    DEFAULT_CACHE_DIR,
    StrategySpec,
    format_validation_error,
    read_yaml_mapping,
)
from clickadapt.evaluation.stream import (
    SubsetPolicy,
)
from clickadapt.tasks import TASKS

logger = logging.getLogger(__name__)


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
        user: The simulated user of these runs (``None`` = the suite's); e.g. ``oaims+jitter3+wrong10+stop90``
            (:func:`~clickadapt.clicks.simulators.make_simulated_user`). Required in ``noisy_users``.
    """

    model_config = ConfigDict(extra="forbid")

    streams: list[str] = Field(min_length=1)
    strategies: list[StrategySpec] = Field(min_length=1)
    budgets: list[int] = Field(default_factory=lambda: [10], min_length=1)
    order_seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    click_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    user: str | None = None

    @field_validator("user")
    @classmethod
    def _known_experiment_user(cls, user: str | None) -> str | None:
        if user is not None:
            make_simulated_user(user, 0)  # raises ValueError listing the known users and modifiers
        return user

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
    """The whole suite (``python -m bench CONFIG``).

    Attributes:
        title: Heading of the report.
        models: Per task, the shipped model name (``brain``/``fundus``) or a checkpoint path.
        streams: Target-domain streams.
        source_validation: Per task, source-domain images on which forgetting is measured.
        source_validation_max_images: Cap on each source validation set (patient-balanced spread).
        experiments: The main comparison.
        ablations: Reported separately; labels distinguish overridden strategies.
        noisy_users: Experiments with an imperfect simulated user (each names its ``user``), reported in their
            own section; a run's label is :func:`noisy_label` (``oaims (oaims+jitter3)``).
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
    noisy_users: list[ExperimentSpec] = Field(default_factory=list)
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
        sections = (
            (MAIN_GROUP, "experiments", self.experiments),
            (ABLATION_GROUP, "ablations", self.ablations),
            (NOISY_GROUP, "noisy_users", self.noisy_users),
        )
        for group, section, experiments in sections:
            for number, experiment in enumerate(experiments):
                where = f"{section}.{number}"
                if group == NOISY_GROUP and experiment.user is None:
                    raise ValueError(f"{where}.user: a noisy-user experiment names its simulated user")
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
                        label = run_label(spec, group, experiment.user)
                        for budget in experiment.budgets:
                            slot = (stream_name, label, budget)
                            if settings.setdefault(slot, setting) != setting:
                                raise ValueError(
                                    f"{where}.strategies: label {label!r} means two different "
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


def noisy_label(label: str, user: str) -> str:
    """The label of a noisy-user run in tables: ``oaims (oaims+jitter3+wrong10+stop90)``."""
    return f"{label} ({user})"


def run_label(spec: StrategySpec, group: str, user: str | None) -> str:
    """The label a run of ``spec`` has in the raw files and tables: its display name, with the user appended
    in the noisy-user section (so that the same strategy under two users never shares a label)."""
    return noisy_label(spec.display_name, user) if group == NOISY_GROUP and user is not None else spec.display_name


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
    return parse_bench_config(read_yaml_mapping(path, "bench config"), str(path))
