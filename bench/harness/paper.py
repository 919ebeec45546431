"""The paper's published numbers (method.md §9), which the report prints beside ours."""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)


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
