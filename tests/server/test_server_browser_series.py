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
from server_helpers import ServerProcess
from test_server_browser import CHROMIUM, CHROMIUM_ARGS, click_pixel
from test_server_browser_issue16 import browser_and_server, open_page

from dicom_testing import quantised, write_dicom_series

__all__ = ["browser_and_server"]  # the fixture, imported

FLAIR = "brain/mslub/cross_sectional/MNI/patient07/FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"


@pytest.fixture
def series_files(data_root: Path, tmp_path: Path) -> list[Path]:
    """Patient 07's FLAIR, 30 slices, as DICOM files named by their instance UIDs, without a .dcm ending (as PACS
    exports name them: what looks like an ending, ``.12``, is the UID's last part)."""
    flair = quantised(nib.load(str(data_root / FLAIR)).slicer[:, :, 45:75])
    names = [f"1.2.840.113619.2.55.3.604688119.969.{index + 10}" for index in range(30)]
    return write_dicom_series(flair, tmp_path / "PAT07" / "FLAIR", names=names)


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

    # The buttons open the browser's file chooser (their inputs are invisible): several files at once.
    with page.expect_file_chooser() as chooser_info:
        page.get_by_text("Files…").click()
    chooser = chooser_info.value
    assert chooser.is_multiple()

    # Chosen together with a picture: the slices become one volume, the picture its own image.
    chooser.set_files([str(picture), *map(str, series_files)])
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


@pytest.mark.slow
def test_a_data_folder_series_exports_its_slices_as_a_dicom_seg(
    tiny_checkpoint: Path, series_files: list[Path], tmp_path: Path
) -> None:
    if not CHROMIUM.is_file():
        pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    import highdicom as hd
    import pydicom

    data = series_files[0].parents[1]  # PAT07/, holding FLAIR/
    arguments = ["--model", str(tiny_checkpoint), "--store", str(tmp_path / "store"), "--data", str(data)]
    server = ServerProcess([*arguments, "--max-upload-mb", "1"])
    url = server.start()
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = open_page(browser, url)
                page.locator("#image-list li").first.click()
                page.wait_for_selector("#volume-panel:not([hidden])")
                assert page.text_content("#image-name") == "FLAIR/series 3 FLAIR AX [slice 15]"
                assert page.is_visible("#export-seg") and page.get_attribute("#export-seg", "aria-disabled") == "true"
                click_pixel(page, 24, 24)
                page.wait_for_selector("#canvas[data-clicks='1']")
                page.wait_for_function(
                    "document.getElementById('export-seg').getAttribute('aria-disabled') === 'false'"
                )
                with page.expect_download() as download_info:
                    page.click("#export-seg")
                saved = tmp_path / "seg.dcm"
                download_info.value.save_as(saved)
                seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(saved))
                assert seg.Modality == "SEG" and seg.NumberOfFrames == 1  # the one labelled slice

                # The same slices uploaded through a server with a 1 MB limit: refused before sending, saying what
                # to do.
                page.set_input_files("#upload-input", [str(path) for path in series_files])
                page.wait_for_selector("#message.error")
                message = page.text_content("#message") or ""
                assert message.startswith("DICOM.zip (3 MB) is larger than the upload limit of 1 MB")
                assert "--max-upload-mb" in message and not page.is_visible("#busy")
                assert not page.errors
            finally:
                browser.close()
    finally:
        server.stop()
