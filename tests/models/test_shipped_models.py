"""The shipped source models still segment real validation images as well as their model card says.

A slow guard against shipping a broken model: each shipped checkpoint is loaded from
``src/clickadapt/pretrained/`` and driven by the ``oaims`` simulated user (seed 0, no adaptation) on
five real validation images that it never trained on; the Dice after 5 clicks must stay above a
floor set a few points below the value recorded when the model was shipped
(``bench/results/models.md`` has the full-set figures).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clickadapt.data.registry import DatasetConfig, PatientFold, load_samples
from clickadapt.evaluation.stream import evaluate_frozen
from clickadapt.models.checkpoint import load_checkpoint
from clickadapt.paths import shipped_model_path

# (task, validation images, region, Dice@5 recorded on these five images at shipping, floor)
CASES = [
    (
        "brain",
        DatasetConfig(
            reader="lgg",
            modality="FLAIR",
            domains=["CS", "DU", "EZ", "FG"],
            patient_fold=PatientFold(every=5),
            slice_policy="largest",
            limit=5,
        ),
        "lesion",
        RECORDED_BRAIN,
    ),
    ("fundus", DatasetConfig(reader="rimone-dl", split="test", domains=["r2"], size=256, limit=5), "cup", RECORDED_CUP),
    ("fundus", DatasetConfig(reader="rimone-dl", split="test", domains=["r2"], size=256, limit=5), "disc", RECORDED_DISC),
]
