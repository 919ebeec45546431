"""The built-in demo slices: loadable without ../shared, and reproducible from the real volumes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from clickadapt.data.demo import DemoDataConfig, DemoSource, build_demo_data, load_demo_samples
from clickadapt.paths import DEMO_DATA_DIR


def test_demo_samples_load_without_shared_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLICKADAPT_DATA_ROOT", str(tmp_path / "absent"))
    monkeypatch.chdir(tmp_path)
    samples = load_demo_samples()
    assert 20 <= len(samples) <= 30
    assert {s.dataset for s in samples} == {"brats", "mslub"}
    assert {s.domain for s in samples if s.dataset == "brats"} == {"T1c"}
    assert {s.patient for s in samples if s.dataset == "brats"} == {"pat0001", "pat0002"}
    assert {s.domain for s in samples if s.dataset == "mslub"} == {"FLAIR"}
    assert len({s.key for s in samples}) == len(samples)
    for sample in samples:
        assert sample.task == "brain" and sample.slice_index is not None
        assert sample.image.shape == (1, 256, 256) and sample.image.dtype == np.float32
        assert sample.label.shape == (256, 256) and sample.label.dtype == np.int64
        assert set(np.unique(sample.label).tolist()) == {0, 1} and sample.label.sum() >= 50
        assert not Path(sample.source).is_absolute()


def test_demo_folder_is_small_and_attributed() -> None:
    total = sum(path.stat().st_size for path in DEMO_DATA_DIR.iterdir())
    assert total <= 3_000_000
    attribution = (DEMO_DATA_DIR / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for needle in ("Menze", "IEEE Transactions on Medical", "Lesjak", "Neuroinformatics", "CC BY-NC-SA 3.0", "CC BY"):
        assert needle in attribution
    assert (DEMO_DATA_DIR / "LICENSE-BRATS-CC-BY-NC-SA-3.0.txt").is_file()
    assert (DEMO_DATA_DIR / "LICENSE-MSLUB-CC-BY.txt").is_file()
    manifest = json.loads((DEMO_DATA_DIR / "manifest.json").read_text(encoding="utf-8"))
    licences = {entry["dataset"]: entry["licence"] for entry in manifest["samples"]}
    assert licences == {"brats": "CC BY-NC-SA 3.0", "mslub": "CC BY"}


def test_demo_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "demo"
    shutil.copytree(DEMO_DATA_DIR, copy)
    first = json.loads((copy / "manifest.json").read_text())["samples"][0]["file"]
    payload = bytearray((copy / first).read_bytes())
    payload[-30] ^= 0xFF
    (copy / first).write_bytes(bytes(payload))
    with pytest.raises(ValueError, match=re.escape(first)):
        load_demo_samples(copy)
    (copy / first).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(first)):
        load_demo_samples(copy)


@pytest.mark.realdata
def test_demo_regeneration_is_byte_identical(data_root: Path, tmp_path: Path) -> None:
    shipped = json.loads((DEMO_DATA_DIR / "manifest.json").read_text())
    mslub = next(source for source in DemoDataConfig().sources if source.reader == "mslub")
    one_patient = DemoSource(**{**mslub.model_dump(), "patients": ["patient07"]})
    written = build_demo_data(data_root, tmp_path, DemoDataConfig(sources=[one_patient]))
    expected = [entry for entry in shipped["samples"] if entry["patient"] == "patient07"]
    assert [path.name for path in written] == [entry["file"] for entry in expected]
    for path in written:
        assert path.read_bytes() == (DEMO_DATA_DIR / path.name).read_bytes()
    assert len(load_demo_samples(tmp_path)) == len(expected)
