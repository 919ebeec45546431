"""DatasetConfig validation, the folder reader, selection, clear errors and the sample cache."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clickadapt.data.registry import DatasetConfig, PatientFold, cache_key, data_digest, load_samples
from clickadapt.data.sample import Sample


def write_pair(
    root: Path, name: str, shape: tuple[int, int] = (40, 40), mask_shape: tuple[int, int] | None = None, seed: int = 0
) -> None:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")
    label = np.zeros(mask_shape or shape, dtype=np.uint8)
    label[10:30, 10:30] = 1
    label[15:25, 15:25] = 2
    Image.fromarray(label).save(root / "masks" / f"{name}.png")


@pytest.fixture()
def fundus_folder(tmp_path: Path) -> Path:
    root = tmp_path / "my-clinic"
    for seed, name in enumerate(["c", "a", "b"]):
        write_pair(root, name, seed=seed)
    return root


def test_config_resolves_task_size_and_modality() -> None:
    fundus = DatasetConfig(reader="rimone-dl")
    assert (fundus.task, fundus.size, fundus.modality) == ("fundus", 512, None)
    brain = DatasetConfig(reader="lgg", domains=["ht"], modality="flair")
    assert (brain.task, brain.size, brain.modality, brain.domains) == ("brain", 256, "FLAIR", ["HT"])
    assert DatasetConfig(reader="drishti-gs1", split="test").split == "Test"
    assert brain.preprocessing().model_dump()["size"] == 256


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"reader": "kaggle"}, r"'kaggle'.*'brats'"),
        ({"reader": "brats", "split": "holdout"}, r"'holdout'.*\['train', 'validation', 'test'\]"),
        ({"reader": "mslub", "modality": "T1c"}, r"'T1c'.*\['FLAIR', 'T1', 'T1POST', 'T2'\]"),
        ({"reader": "rimone-dl", "domains": ["r4"]}, r"'r4'.*\['r1', 'r2', 'r3'\]"),
        ({"reader": "origa", "modality": "FLAIR"}, r"no modality"),
        ({"reader": "folder", "root": "x"}, r"needs a task"),
        ({"reader": "folder", "task": "brain"}, r"needs a root"),
        ({"reader": "brats", "task": "fundus"}, r"'brain'"),
        ({"reader": "brats", "unknown_field": 1}, r"unknown_field"),
    ],
)
def test_bad_config_values_are_named(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DatasetConfig.model_validate(fields)


def test_folder_reader_sorted_and_limited(fundus_folder: Path) -> None:
    samples = load_samples(DatasetConfig(reader="folder", task="fundus", root=fundus_folder, size=32))
    assert [s.key for s in samples] == ["folder/my-clinic/a", "folder/my-clinic/b", "folder/my-clinic/c"]
    assert samples[0].image.shape == (3, 32, 32) and set(np.unique(samples[0].label).tolist()) == {0, 1, 2}
    limited = load_samples(DatasetConfig(reader="folder", task="fundus", root=fundus_folder, size=32, limit=2))
    assert [s.patient for s in limited] == ["a", "b"]


def test_patient_filters(fundus_folder: Path) -> None:
    config = DatasetConfig(reader="folder", task="fundus", root=fundus_folder, size=32, patients=["c", "a"])
    assert [s.patient for s in load_samples(config)] == ["a", "c"]
    excluded = DatasetConfig(reader="folder", task="fundus", root=fundus_folder, size=32, exclude_patients=["a"])
    assert [s.patient for s in load_samples(excluded)] == ["b", "c"]
    with pytest.raises(ValueError, match=r"\['zzz'\]"):
        load_samples(DatasetConfig(reader="folder", task="fundus", root=fundus_folder, patients=["zzz"]))


def test_folder_brain_task_pads_grey_images(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    grey = np.zeros((50, 60), dtype=np.uint8)
    grey[10:40, 10:50] = np.arange(1, 41, dtype=np.uint8)[None, :]
    Image.fromarray(grey).save(root / "images" / "s1.png")
    label = np.zeros((50, 60), dtype=np.uint8)
    label[20:30, 20:30] = 1
    Image.fromarray(label).save(root / "masks" / "s1.png")
    (sample,) = load_samples(DatasetConfig(reader="folder", task="brain", root=root, size=64))
    assert sample.image.shape == (1, 64, 64) and sample.label.sum() == 100
    brain = np.pad(grey, ((7, 7), (2, 2))) != 0
    assert abs(float(sample.image[0][brain].mean())) < 1e-4


def test_mismatched_mask_names_both_files_and_shapes(tmp_path: Path) -> None:
    write_pair(tmp_path, "eye", shape=(40, 40), mask_shape=(30, 40))
    with pytest.raises(ValueError, match=r"images/eye.png.*\(40, 40\).*masks/eye.png.*\(30, 40\)"):
        load_samples(DatasetConfig(reader="folder", task="fundus", root=tmp_path))


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    write_pair(tmp_path, "eye")
    (tmp_path / "images" / "eye.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match=r"cannot read image file .*eye.png"):
        load_samples(DatasetConfig(reader="folder", task="fundus", root=tmp_path))


def test_missing_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_samples(DatasetConfig(reader="origa", root=tmp_path / "nowhere"))
    write_pair(tmp_path, "eye")
    (tmp_path / "masks" / "eye.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"masks/eye.png"):
        load_samples(DatasetConfig(reader="folder", task="fundus", root=tmp_path))


def test_label_values_outside_the_task_are_refused(tmp_path: Path) -> None:
    write_pair(tmp_path, "eye")
    with pytest.raises(ValueError, match=r"masks/eye.png.*0..1"):
        load_samples(DatasetConfig(reader="folder", task="brain", root=tmp_path))


def test_cache_round_trip(fundus_folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    config = DatasetConfig(reader="folder", task="fundus", root=fundus_folder, size=32)
    first = load_samples(config, cache_dir=cache)
    files = list(cache.glob("folder-*.npz"))
    assert len(files) == 1 and cache_key(config)[:24] in files[0].name
    shutil.rmtree(fundus_folder / "images")  # the second call must not need the sources
    second = load_samples(config, cache_dir=cache)
    assert [s.key for s in second] == [s.key for s in first]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
        assert b.image.dtype == np.float32 and b.label.dtype == np.int64
        assert (a.task, a.dataset, a.domain, a.patient, a.slice_index, a.source) == (
            b.task,
            b.dataset,
            b.domain,
            b.patient,
            b.slice_index,
            b.source,
        )
    assert cache_key(config.model_copy(update={"size": 16})) != cache_key(config)


def test_unreadable_cache_is_rebuilt(fundus_folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    config = DatasetConfig(reader="folder", task="fundus", root=fundus_folder, size=32)
    load_samples(config, cache_dir=cache)
    (cached,) = cache.glob("*.npz")
    cached.write_bytes(b"garbage")
    assert len(load_samples(config, cache_dir=cache)) == 3


def test_data_digest_hashes_keys_in_order() -> None:
    def sample(patient: str, slice_index: int | None) -> Sample:
        return Sample(
            np.zeros((1, 2, 2), np.float32),
            np.zeros((2, 2), np.int64),
            "brain",
            "brats",
            "FLAIR",
            patient,
            slice_index,
            "",
        )

    samples = [sample("pat0001", 80), sample("pat0002", None)]
    expected = hashlib.sha256(b"brats/FLAIR/pat0001/80\nbrats/FLAIR/pat0002\n").hexdigest()
    assert data_digest(samples) == expected
    assert data_digest(samples[::-1]) != expected
    assert data_digest([]) == hashlib.sha256(b"").hexdigest()


def test_patient_fold_keeps_every_nth_patient_by_sorted_id_or_the_rest() -> None:
    patients = [f"p{n:02d}" for n in range(12)][::-1]
    fold = PatientFold(every=5, offset=1)
    assert fold.select(patients) == {"p01", "p06", "p11"}
    rest = PatientFold(every=5, offset=1, keep="rest").select(patients)
    assert rest == set(patients) - {"p01", "p06", "p11"}
    with pytest.raises(ValueError, match="offset must be below every=5"):
        PatientFold(every=5, offset=5)


@pytest.mark.realdata
def test_patient_fold_splits_lgg_patients_disjointly(data_root: Path) -> None:
    base = {"reader": "lgg", "domains": ["CS", "DU", "EZ", "FG"], "slice_policy": "largest"}
    fold = load_samples(DatasetConfig(**base, patient_fold=PatientFold(every=5)))
    rest = load_samples(DatasetConfig(**base, patient_fold=PatientFold(every=5, keep="rest")))
    everyone = load_samples(DatasetConfig(**base))
    fold_ids, rest_ids = {s.patient for s in fold}, {s.patient for s in rest}
    assert not fold_ids & rest_ids
    assert fold_ids | rest_ids == {s.patient for s in everyone}
    assert len(fold_ids) == 15  # 71 patients at sites CS/DU/EZ/FG: positions 0, 5, …, 70
