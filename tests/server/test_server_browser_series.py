"""DICOM series uploaded from the page in Debian's chromium (headless, Playwright): slices chosen together, or
their folder, go up as one zip and come back as one volume; other files chosen with them go up one by one.

Skipped with a reason when chromium, Playwright or the real data folder is missing.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from test_server_browser_issue16 import browser_and_server, open_page

from dicom_testing import quantised, write_dicom_series

__all__ = ["browser_and_server"]  # the fixture, imported

FLAIR = "brain/mslub/cross_sectional/MNI/patient07/FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"


@pytest.fixture
def series_files(data_root: Path, tmp_path: Path) -> list[Path]:
    """Patient 07's FLAIR, 30 slices, as DICOM files named without an ending (as PACS exports name them)."""
    flair = quantised(nib.load(str(data_root / FLAIR)).slicer[:, :, 45:75])
    return write_dicom_series(flair, tmp_path / "PAT07" / "FLAIR", names=[f"{index:04d}" for index in range(30)])


@pytest.mark.slow
def test_dicom_slices_and_their_folder_upload_as_one_volume(
    browser_and_server: tuple[Any, str], series_files: list[Path], tmp_path: Path
) -> None:
    browser, url = browser_and_server
    picture = tmp_path / "extra.png"
    buffer = io.BytesIO()
    Image.fromarray((np.indices((64, 64)).sum(axis=0) % 256).astype(np.uint8)).save(buffer, format="PNG")
    picture.write_bytes(buffer.getvalue())
    page = open_page(browser, url)
    listed = page.locator("#image-list li").count()

    # Chosen together with a picture: the slices become one volume, the picture its own image.
    page.set_input_files("#upload-input", [str(picture), *map(str, series_files)])
    page.wait_for_selector("#volume-panel:not([hidden])")
    assert page.text_content("#image-name") == "DICOM (series 3 FLAIR AX) [slice 15]"
    assert "uploaded extra.png, DICOM (series 3 FLAIR AX)" in (page.text_content("#message") or "")
    assert page.locator("#image-list li").count() == listed + 2
    assert page.get_attribute("#slice-slider", "max") == "29"

    # The folder: the same series, stored once (the same volume opens; nothing new in the list).
    page.set_input_files("#upload-folder", str(series_files[0].parent))
    page.wait_for_function("document.getElementById('message').textContent === 'uploaded DICOM (series 3 FLAIR AX)'")
    assert page.locator("#image-list li").count() == listed + 2
    assert page.text_content("#image-name") == "DICOM (series 3 FLAIR AX) [slice 15]"
    assert not page.errors
