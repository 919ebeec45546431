"""End to end in Debian's chromium (headless, through Playwright): open, click, undo, finish, export.

Skipped with a reason when chromium or Playwright is missing (``.ci/run`` installs chromium). Screenshots go
to the test's temporary folder; with ``CLICKADAPT_UPDATE_SCREENSHOT=1`` one is copied to
``docs/screenshot.png`` (the README's picture), using the shipped brain model when it exists.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from server_helpers import ServerProcess

from clickadapt.data.demo import load_demo_samples
from clickadapt.paths import shipped_model_path

CHROMIUM = Path(os.environ.get("CLICKADAPT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPOSITORY = Path(__file__).resolve().parents[2]
TIMEOUT_MS = 60_000


@contextmanager
def served_page(server_arguments: list[str], width: int = 1200, height: int = 800) -> Iterator[tuple[Any, list[str]]]:
    """Start ``clickadapt serve`` with ``server_arguments``, open its page in headless chromium once it is ready;
    yields the page and the list its script errors are collected in. Skips the test without chromium or
    Playwright."""
    if not CHROMIUM.is_file():
        pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    server = ServerProcess(server_arguments)
    url = server.start()
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.set_default_timeout(TIMEOUT_MS)
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(url)
                page.wait_for_selector("body[data-ready=true]")
                yield page, errors
            finally:
                browser.close()
    finally:
        server.stop()


def lesion_centre(label: np.ndarray) -> tuple[int, int]:
    """The lesion pixel farthest from the lesion's border (where a person would click first)."""
    distance = ndimage.distance_transform_edt(np.pad(label > 0, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(row), int(col)


def click_pixel(page: Any, row: int, col: int, button: str = "left") -> None:
    """Click the centre of image pixel (row, col), whatever the page's zoom and pan."""
    page.mouse.click(*screen_point(page, row, col), button=button)


def screen_point(page: Any, row: int, col: int) -> tuple[float, float]:
    """The page coordinates of the centre of image (model grid) pixel (row, col), whatever the zoom, pan and
    the picture's aspect ratio (the page's own mapping, ``window.clickadapt.screenPoint``)."""
    box = page.locator("#canvas").bounding_box()
    point = page.evaluate("([row, col]) => window.clickadapt.screenPoint(row, col)", [row, col])
    return box["x"] + point["x"], box["y"] + point["y"]


@pytest.mark.slow
def test_label_a_demo_image_in_chromium(tiny_checkpoint: Path, tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    update_screenshot = os.environ.get("CLICKADAPT_UPDATE_SCREENSHOT") == "1"
    model = tiny_checkpoint
    if update_screenshot:
        model = Path(os.environ.get("CLICKADAPT_SCREENSHOT_MODEL", shipped_model_path("brain")))
        model = model if model.is_file() else tiny_checkpoint
    lesion_row, lesion_col = lesion_centre(load_demo_samples()[2].label)
    # Uploaded volumes count as the model's source domain: served by a per-image copy of the base model.
    server = ServerProcess(["--model", str(model), "--store", str(tmp_path / "store"), "--source-domain", "upload*"])
    url = server.start()
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 850}, accept_downloads=True)
                page.set_default_timeout(TIMEOUT_MS)
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(url)
                page.wait_for_selector("body[data-ready=true]")
                items = page.locator("#image-list li")
                assert items.count() == 24  # the built-in demo slices
                assert page.locator("#crop-tool").is_hidden() and page.locator("dd.crop-key").is_hidden()  # brain
                items.nth(2).click()
                page.wait_for_selector("#canvas[data-state=new]")
                canvas = page.locator("#canvas")

                click_pixel(page, lesion_row, lesion_col)
                page.wait_for_selector("#canvas[data-clicks='1']")
                assert page.evaluate("window.clickadapt.state.view.mask_overlay !== null")  # the mask appears
                assert canvas.get_attribute("data-mask-version") == "0"
                page.screenshot(path=str(tmp_path / "1-first-click.png"))

                page.keyboard.press("z")  # undo
                page.wait_for_selector("#canvas[data-clicks='0']")
                assert page.evaluate("window.clickadapt.state.view.mask_overlay === null")

                click_pixel(page, lesion_row, lesion_col)
                page.wait_for_selector("#canvas[data-clicks='1']")
                click_pixel(page, 30, 30, button="right")  # a background click
                page.wait_for_selector("#canvas[data-clicks='2']")
                assert page.evaluate("window.clickadapt.state.view.clicks.map(c => c.label)") == [1, 0]
                version_before = page.text_content("#model-version")
                page.screenshot(path=str(tmp_path / "2-two-clicks.png"))

                page.click("#finish")
                page.click("#confirm-ok")  # finishing asks first
                page.wait_for_selector("#canvas[data-state=done]")
                page.wait_for_function(f"document.getElementById('model-version').textContent !== '{version_before}'")
                assert int(page.text_content("#model-version") or "0") > int(version_before or "0")
                assert page.text_content("#progress") == "1 / 24 done"
                assert page.text_content("#safety-status") == (
                    "Safety layer on (with source domain kept (upload*)): no action needed so far."
                )
                assert "done" in (items.nth(2).get_attribute("data-status") or "")
                page.screenshot(path=str(tmp_path / "3-finished.png"))

                with page.expect_download() as download_info:
                    page.click("#export-png")
                exported = tmp_path / "mask.png"
                download_info.value.save_as(exported)
                mask = np.asarray(Image.open(io.BytesIO(exported.read_bytes())))
                assert mask.shape == (256, 256) and set(np.unique(mask)) <= {0, 1}

                # Upload a NIfTI volume, pick another slice with the slider and label it.
                volume_path = tmp_path / "upload.nii.gz"
                volume = np.zeros((40, 40, 10), np.float32)
                volume[5:35, 5:35, :] = np.random.default_rng(0).random((30, 30, 10)) + 1.0
                nib.save(nib.Nifti1Image(volume, np.eye(4)), volume_path)
                page.set_input_files("#upload-input", str(volume_path))
                page.wait_for_selector("#volume-panel:not([hidden])")
                assert page.text_content("#image-name") == "upload.nii.gz [slice 5]"
                click_pixel(page, 20, 20)
                page.wait_for_selector("#canvas[data-clicks='1']")
                assert "source domain" in (page.text_content("#mask-version") or "")
                page.locator("#slice-slider").fill("3")
                assert page.text_content("#slice-value") == "3"
                page.click("#add-slice")
                page.wait_for_function(
                    "document.getElementById('image-name').textContent === 'upload.nii.gz [slice 3]'"
                )
                assert items.count() == 26

                page.click("#next")
                page.wait_for_function("document.getElementById('image-name').textContent === 'brats/T1c/pat0001/39'")
                assert page.locator("#volume-panel").is_hidden()  # the slider is only for volumes
                assert errors == []
                if update_screenshot:  # the README's picture: a second image in progress
                    name = items.nth(3).locator(".name").text_content()
                    items.nth(3).click()
                    page.wait_for_function(f"document.getElementById('image-name').textContent === '{name}'")
                    row, col = lesion_centre(load_demo_samples()[3].label)
                    click_pixel(page, row, col)
                    page.wait_for_selector("#canvas[data-clicks='1']")
                    page.mouse.move(0, 0)
                    page.screenshot(path=str(tmp_path / "screenshot.png"))
                    shutil.copyfile(tmp_path / "screenshot.png", REPOSITORY / "docs" / "screenshot.png")
            finally:
                browser.close()
    finally:
        server.stop()


@pytest.mark.slow
def test_redo_sends_again_what_undo_took_back_until_another_action(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Z undoes the latest click or stroke; Shift+Z (or Ctrl+Y) sends it again, in reverse order; a new click
    forgets what was undone."""
    with served_page(["--model", str(tiny_checkpoint), "--store", str(tmp_path / "store")]) as (page, errors):
        page.locator("#image-list li").nth(0).click()
        page.wait_for_selector("#canvas[data-state=new]")
        click_pixel(page, 20, 30)
        page.wait_for_selector("#canvas[data-clicks='1']")
        click_pixel(page, 40, 12, button="right")
        page.wait_for_selector("#canvas[data-clicks='2']")
        page.keyboard.press("b")
        page.mouse.move(*screen_point(page, 10, 10))
        page.mouse.down()
        page.mouse.move(*screen_point(page, 10, 30), steps=5)
        page.mouse.up()
        page.wait_for_selector("#canvas[data-strokes='1']")
        page.keyboard.press("c")
        clicks = page.evaluate("window.clickadapt.state.view.clicks.map(c => [c.row, c.col, c.label])")
        for expected in ("[data-strokes='0'][data-clicks='2']", "[data-clicks='1']", "[data-clicks='0']"):
            page.keyboard.press("z")
            page.wait_for_selector(f"#canvas{expected}")
        page.keyboard.press("Shift+Z")
        page.wait_for_selector("#canvas[data-clicks='1']")
        page.keyboard.press("Control+y")
        page.wait_for_selector("#canvas[data-clicks='2']")
        assert page.evaluate("window.clickadapt.state.view.clicks.map(c => [c.row, c.col, c.label])") == clicks
        page.keyboard.press("Shift+Z")
        page.wait_for_selector("#canvas[data-strokes='1']")
        page.keyboard.press("z")  # the stroke again, then a new click: nothing is left to redo
        page.wait_for_selector("#canvas[data-strokes='0']")
        click_pixel(page, 5, 5)
        page.wait_for_selector("#canvas[data-clicks='3']")
        page.keyboard.press("Shift+Z")
        page.wait_for_function("document.querySelector('#message').textContent.includes('Nothing to redo')")
        assert page.locator("#canvas").get_attribute("data-strokes") == "0"
        assert errors == []


@pytest.mark.slow
def test_key_l_draws_the_mask_as_its_outline(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """L shows the mask's outline only: inside it the picture is seen as with the overlay off; L again fills it."""
    with served_page(["--model", str(tiny_checkpoint), "--store", str(tmp_path / "store")]) as (page, errors):
        page.locator("#image-list li").nth(0).click()
        page.wait_for_selector("#canvas[data-state=new]")
        click_pixel(page, 5, 5, button="right")
        page.wait_for_selector("#canvas[data-clicks='1']")
        page.keyboard.press("b")
        page.evaluate("window.clickadapt.state.brushRadius = 12")
        page.mouse.move(*screen_point(page, 60, 50))
        page.mouse.down()
        page.mouse.move(*screen_point(page, 60, 90), steps=5)
        page.mouse.up()
        page.wait_for_selector("#canvas[data-strokes='1']")
        inside = (60, 70)  # 12 px from the stroke's edge
        filled = canvas_rgb(page, *inside)
        page.keyboard.press("o")
        bare = canvas_rgb(page, *inside)
        page.keyboard.press("o")
        assert filled != bare  # the filled mask tints the picture
        page.keyboard.press("l")
        assert page.evaluate("window.clickadapt.state.outline") is True
        assert canvas_rgb(page, *inside) == bare  # the outline leaves the inside uncovered
        opaque = page.evaluate(
            """() => { const s = window.clickadapt.state;
              const count = (image) => { const c = document.createElement('canvas');
              c.width = image.naturalWidth || image.width; c.height = image.naturalHeight || image.height;
              const x = c.getContext('2d'); x.drawImage(image, 0, 0);
              return x.getImageData(0, 0, c.width, c.height).data.filter((v, i) => i % 4 === 3 && v > 0).length; };
              return [count(s.outlines.get(s.overlay).canvas), count(s.overlay)]; }"""
        )
        assert 0 < opaque[0] < opaque[1] / 2  # a thin line around the mask
        page.keyboard.press("l")
        assert canvas_rgb(page, *inside) == filled
        assert errors == []


def canvas_rgb(page: Any, row: int, col: int) -> list[int]:
    """The RGB the canvas shows at the centre of image pixel (row, col)."""
    script = """([row, col]) => {
        const point = window.clickadapt.screenPoint(row, col);
        const ratio = window.devicePixelRatio || 1;
        const data = document.querySelector('#canvas').getContext('2d')
            .getImageData(Math.floor(point.x * ratio), Math.floor(point.y * ratio), 1, 1).data;
        return Array.from(data.slice(0, 3));
    }"""
    pixel: list[int] = page.evaluate(script, [row, col])
    return pixel
