"""Names and constants shared by the benchmark harness: file names, run groups, the code digest's paths, kinds of
shift.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

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
NOISY_GROUP = "noisy"
"""Runs with an imperfect simulated user (the ``noisy_users`` section of a config)."""


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

The safety layer and source routing (``adaptation/safety/``, ``adaptation/routing.py``) are not used by
benchmark runs, so editing them does not invalidate the cache."""


ShiftKind = Literal["small", "large", "site", "modality", "pathology"]


SHIFT_DESCRIPTIONS: dict[str, str] = {
    "small": "small shift (same clinic, another camera / release)",
    "large": "large shift (other country, camera and population)",
    "site": "site shift (same sequence, another hospital's scanner)",
    "modality": "modality shift (FLAIR-trained model, another MR sequence)",
    "pathology": "pathology shift (glioma-trained model, multiple-sclerosis lesions)",
}


FULL_LENGTH_IMAGES = 100
"""A suite that is not marked ``capped`` may not cap a stream below min(available, this)."""
