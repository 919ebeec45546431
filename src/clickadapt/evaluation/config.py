"""The configuration of an evaluation run (``clickadapt evaluate CONFIG.yaml``), read from YAML.

Example (``configs/eval/brain_brats_t1c.yaml``)::

    model: brain                  # the shipped model, or a checkpoint path
    stream: {reader: brats, split: test, modality: T1c, slice_policy: largest}
    source_validation: {reader: lgg, domains: [FG], modality: FLAIR, limit: 20}
    strategies: [frozen, post, oaims, {name: mid, label: mid-noccg, overrides: {click_loss: false}}]
    order_seeds: [0, 1, 2]         # stream permutations
    click_seeds: [0]               # the simulated user's clicks (the same for every strategy and order)
    budget: 10
    user: oaims
    output: outputs/eval/brain_brats_t1c
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clickadapt.adaptation.strategies import STRATEGY_NAMES, strategy_config
from clickadapt.clicks.simulators import make_simulated_user
from clickadapt.data.registry import DatasetConfig
from clickadapt.evaluation.stream import SubsetPolicy
from clickadapt.tasks import TASKS

DEFAULT_BUDGET = 10
DEFAULT_ORDER_SEEDS = (0, 1, 2)
DEFAULT_CLICK_SEEDS = (0,)
DEFAULT_USER = "oaims"
DEFAULT_CACHE_DIR = Path(".cache") / "clickadapt"


class StrategySpec(BaseModel):
    """One adaptation strategy to evaluate.

    In YAML either a bare name (``oaims``) or a mapping ``{name, overrides, label}``.

    Attributes:
        name: Strategy name known to ``make_strategy`` (frozen, post, mid, oaims, ia-sa, tsca, tent,
            self-train).
        overrides: Keyword overrides of the strategy's configuration (e.g. ``{lr: 1e-5}``).
        label: Name used in reports; defaults to ``name``. Needed when one strategy appears twice
            with different overrides (ablations).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_bare_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        if name not in STRATEGY_NAMES:
            raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGY_NAMES)}")
        return name

    @model_validator(mode="after")
    def _valid_overrides(self) -> StrategySpec:
        strategy_config(self.name, **self.overrides)  # raises ValueError naming the bad setting
        return self

    @property
    def display_name(self) -> str:
        """The name the reports use: ``label`` if given, else ``name``."""
        return self.label or self.name


class EvaluationConfig(BaseModel):
    """Everything ``clickadapt evaluate`` needs.

    Attributes:
        model: ``"brain"`` or ``"fundus"`` for the shipped model of that task, or a checkpoint path
            (relative paths are taken from the current directory).
        stream: The target-domain stream, processed one image at a time.
        source_validation: Source-domain images on which forgetting is measured (frozen Dice with the
            original model vs with the model adapted by the whole stream); ``None`` skips it.
        strategies: Strategies to compare, each run once per (order seed, click seed).
        order_seeds: Seeds of the stream's permutation (when ``shuffle``); the frozen model does not depend on
            the order, so it runs once per click seed (with the first order seed).
        click_seeds: Seeds of the simulated user's clicks (combined with each image's key, so every strategy
            and order sees the same clicks on the same image). Until issue 15 a single ``seeds`` list fixed
            both; that field is refused with a message naming the two.
        budget: Clicks per image (the paper's T = 10).
        user: Simulated user (``oaims``, ``center``, ``deepest``).
        limit: Use at most N images of the stream and of the source validation set.
        subset: Which N images ``limit`` keeps: ``first`` (dataset order, e.g. consecutive slices of the
            first patient) or ``spread`` (patient-balanced, evenly spaced; see
            :func:`~clickadapt.evaluation.stream.cap_stream`).
        shuffle: Seeded permutation of the stream per seed; ``False`` keeps the dataset order.
        click_sigma: σ of the Gaussian click maps in pixels; ``None`` = the one stored in the checkpoint
            (``preprocessing.click_sigma``), else the default 5.
        device: Torch device.
        cache_dir: Where preprocessed samples are cached between runs (``None`` = no cache).
        output: Folder for the raw results, the summary and the plots.
    """

    model_config = ConfigDict(extra="forbid")

    model: str
    stream: DatasetConfig
    source_validation: DatasetConfig | None = None
    strategies: list[StrategySpec] = Field(min_length=1)
    order_seeds: list[int] = Field(default_factory=lambda: list(DEFAULT_ORDER_SEEDS), min_length=1)
    click_seeds: list[int] = Field(default_factory=lambda: list(DEFAULT_CLICK_SEEDS), min_length=1)
    seeds: Any = Field(default=None, exclude=True)
    """Removed (issue 15): refused with a message naming ``order_seeds`` and ``click_seeds``."""
    budget: int = Field(default=DEFAULT_BUDGET, ge=1)
    user: str = DEFAULT_USER
    limit: int | None = Field(default=None, ge=1)
    subset: SubsetPolicy = "first"
    shuffle: bool = True
    click_sigma: float | None = Field(default=None, gt=0)
    device: str = "cpu"
    cache_dir: Path | None = DEFAULT_CACHE_DIR
    output: Path

    @field_validator("user")
    @classmethod
    def _known_user(cls, user: str) -> str:
        make_simulated_user(user, 0)  # raises ValueError listing the known users
        return user

    @field_validator("seeds")
    @classmethod
    def _no_tied_seeds(cls, seeds: Any) -> None:
        if seeds is not None:
            raise ValueError(
                "the stream order and the clicks have separate seeds since issue 15; "
                f"write order_seeds: {seeds} and click_seeds: [0] (or the click seeds you want)"
            )

    @field_validator("order_seeds", "click_seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds

    @field_validator("strategies")
    @classmethod
    def _distinct_labels(cls, strategies: list[StrategySpec]) -> list[StrategySpec]:
        labels = [spec.display_name for spec in strategies]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"strategy labels must be distinct (give a 'label'): {duplicates} appear twice")
        return strategies

    @property
    def is_shipped_model(self) -> bool:
        """Whether ``model`` names a task's shipped model rather than a file."""
        return self.model in TASKS


def format_validation_error(error: ValidationError, source: str) -> str:
    """One readable line per problem: ``source: field.path: message``."""
    lines = []
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        lines.append(f"{source}: {location}: {problem['msg']}")
    return "\n".join(lines)


def parse_evaluation_config(data: dict[str, Any], source: str = "evaluation config") -> EvaluationConfig:
    """Validate a configuration mapping.

    Raises:
        ValueError: Naming ``source`` and every invalid field.
    """
    try:
        return EvaluationConfig.model_validate(data)
    except ValidationError as error:
        raise ValueError(format_validation_error(error, source)) from None


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping of fields (experiment configs).

    Raises:
        FileNotFoundError: If the file does not exist (naming ``what`` and the path).
        ValueError: If it is not valid YAML or not a mapping (naming the file).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of fields at the top level, got {type(data).__name__}")
    return data


def load_evaluation_config(path: str | Path, overrides: dict[str, Any] | None = None) -> EvaluationConfig:
    """Read an evaluation YAML file, apply command-line overrides, and validate.

    Args:
        path: The YAML file.
        overrides: Top-level fields that replace the file's (``None`` values are ignored). When the
            file has no ``output``, it defaults to ``outputs/eval/<file stem>``.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not a YAML mapping or a field is invalid (the message names the file
            and the field).
    """
    path = Path(path)
    data = read_yaml_mapping(path, "evaluation config")
    data.setdefault("output", str(Path("outputs") / "eval" / path.stem))
    data.update({key: value for key, value in (overrides or {}).items() if value is not None})
    return parse_evaluation_config(data, str(path))


def select_strategies(configured: list[StrategySpec], names: list[str]) -> list[StrategySpec]:
    """Strategies chosen on the command line: a configured spec with that label or name, else a plain one.

    Raises:
        ValueError: If a name is not a known strategy or configured label.
    """
    chosen = []
    for name in names:
        match = next((spec for spec in configured if spec.display_name == name), None)
        if match is None:
            try:
                match = StrategySpec(name=name)
            except ValidationError as error:
                raise ValueError(format_validation_error(error, "--strategies")) from None
        chosen.append(match)
    return chosen
