"""The shipped source models still segment real validation images as well as their model card says.

A slow guard against shipping a broken model: each shipped checkpoint is loaded from
``src/clickadapt/pretrained/`` and driven by the ``oaims`` simulated user (seed 0, no adaptation) on
five real images it never trained on (brain: the largest-lesion slice of the first five validation
patients of ``configs/train_brain_v3.yaml``; fundus: the first five ``r2_`` images of RIM-ONE DL's test
split). The Dice after 5 clicks must stay above a floor 3 points below the value recorded on these
images when the model was shipped (brain lesion 93.7 on 2026-12-04, brain-v3; fundus disc 96.4, cup
81.9 on 2026-12-01; ``bench/results/models.md`` has the full-set figures).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clickadapt.data.registry import DatasetConfig, PatientFold, load_samples
from clickadapt.evaluation.stream import evaluate_frozen
from clickadapt.models.checkpoint import load_checkpoint
from clickadapt.paths import shipped_model_path

BRAIN_VALIDATION = DatasetConfig(
    reader="lgg",
    modality="FLAIR",
    domains=["CS", "DU", "EZ", "FG"],
    patient_fold=PatientFold(every=5),
    slice_policy="largest",
    limit=5,
)
FUNDUS_TEST = DatasetConfig(reader="rimone-dl", split="test", domains=["r2"], size=256, limit=5)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize(
    ("task", "images", "floors"),
    [("brain", BRAIN_VALIDATION, {"lesion": 90.7}), ("fundus", FUNDUS_TEST, {"disc": 93.4, "cup": 78.9})],
)
def test_shipped_model_keeps_its_dice_after_five_clicks(
    task: str, images: DatasetConfig, floors: dict[str, float], data_root: Path
) -> None:
    loaded = load_checkpoint(shipped_model_path(task))
    samples = load_samples(images)
    assert len(samples) == 5
    curves = evaluate_frozen(
        loaded.model, loaded.task, samples, "oaims", 10, 0, click_sigma=loaded.meta.preprocessing.click_sigma
    )
    for region, floor in floors.items():
        assert 100 * curves[region][4] >= floor, f"{task} {region} Dice@5 {100 * curves[region][4]:.1f} < {floor}"
