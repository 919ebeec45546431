"""The paper's published numbers (method.md §9), read from the data file ``bench/paper_numbers.yaml``.

The report prints them beside ours (each row paired with our streams of the same task and kind of shift) and
checks the paper's claimed ordering of the methods on every stream.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.harness.constants import SHIFT_DESCRIPTIONS
from clickadapt.evaluation.config import format_validation_error
from clickadapt.tasks import TASKS

PAPER_NUMBERS_YAML = Path(__file__).resolve().parents[1] / "paper_numbers.yaml"
"""The data file of the published numbers (``bench/paper_numbers.yaml``)."""

DiceTriple = tuple[float | None, float | None, float | None]


class PaperResult(BaseModel):
    """One published row of method.md §9.

    Attributes:
        dataset: The paper's target set.
        task: ``brain`` or ``fundus``.
        shift: The kind of shift it stands for (pairs it with our streams of the same task and shift).
        region: The reported region (brain lesion, fundus cup).
        budget: Click budget of the row.
        dice: Per our strategy label, Dice (%) at clicks 1, 5, 10 (``None`` where not published).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    task: str
    shift: str
    region: str
    budget: int = Field(ge=1)
    dice: dict[str, DiceTriple]

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        if value not in TASKS:
            raise ValueError(f"unknown task {value!r} (known: {', '.join(sorted(TASKS))})")
        return value

    @field_validator("shift")
    @classmethod
    def _known_shift(cls, value: str) -> str:
        if value not in SHIFT_DESCRIPTIONS:
            raise ValueError(f"unknown shift {value!r} (known: {', '.join(SHIFT_DESCRIPTIONS)})")
        return value

    @field_validator("dice")
    @classmethod
    def _percent(cls, value: dict[str, DiceTriple]) -> dict[str, DiceTriple]:
        for label, triple in value.items():
            if all(item is None for item in triple):
                raise ValueError(f"{label}: no number at all")
            if any(item is not None and not 0.0 <= item <= 100.0 for item in triple):
                raise ValueError(f"{label}: Dice must be in % (0..100), got {list(triple)}")
        return value


class PaperNumbers(BaseModel):
    """The whole data file.

    Attributes:
        methods: Our strategy label → the paper's name for the method (the report's columns, in order).
        ordering: The paper's claimed ordering, as ``(better, worse)`` pairs of our labels.
        results: The published rows.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    methods: dict[str, str]
    ordering: list[tuple[str, str]]
    results: list[PaperResult] = Field(min_length=1)

    @model_validator(mode="after")
    def _methods_known(self) -> PaperNumbers:
        for index, result in enumerate(self.results):
            unknown = sorted(set(result.dice) - set(self.methods))
            if unknown:
                raise ValueError(f"results.{index} ({result.dataset}): methods not listed under methods: {unknown}")
        return self


def load_paper_numbers(path: str | Path = PAPER_NUMBERS_YAML) -> PaperNumbers:
    """Read and check a paper-numbers file.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it does not parse or a field is wrong (the message names the file and the field).
    """
    path = Path(path)
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with methods, ordering and results")
    try:
        return PaperNumbers.model_validate(data)
    except ValidationError as error:
        raise ValueError(format_validation_error(error, path.name)) from error


@functools.cache
def paper_numbers() -> PaperNumbers:
    """The numbers of ``bench/paper_numbers.yaml`` (read once per process)."""
    return load_paper_numbers()
