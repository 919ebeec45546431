"""In Debian's chromium (headless, Playwright): the page draws the mask of a resized photograph at the
photograph's own resolution, stretched over the model-grid picture; the crop tool (K, drag a box) makes a new
image of the square around the box and opens it; Shift + drag changes the display contrast only. Skipped when
chromium or Playwright is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from server_helpers import IMAGE_SIZE, synthetic_fundus_png, write_tiny_fundus_checkpoint
from test_server_browser import canvas_rgb, click_pixel, screen_point, served_page

SOURCE_SHAPE = (150, 210)


def drag_pixels(page: Any, start: tuple[int, int], end: tuple[int, int]) -> None:
    """Drag the mouse from image pixel ``start`` to ``end`` (row, col), whatever the page's zoom and pan."""
    page.mouse.move(*screen_point(page, *start))
    page.mouse.down()
    page.mouse.move(*screen_point(page, *end), steps=8)
    page.mouse.up()


LONG_NAME = "clinic-A_patient-0001_visit-02_left_eye_fundus_12.png"


def tiny_fundus_server(tmp_path: Path, data: Path) -> list[str]:
    """``clickadapt serve`` arguments: a tiny fundus model, a fresh store and ``data`` as the data folder."""
    model = write_tiny_fundus_checkpoint(tmp_path / "fundus.pt")
    return ["--model", str(model), "--store", str(tmp_path / "store"), "--data", str(data)]


@pytest.mark.slow
def test_the_page_draws_the_overlay_at_the_photographs_resolution_and_crops(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / LONG_NAME).write_bytes(synthetic_fundus_png(*SOURCE_SHAPE))
    with served_page(tiny_fundus_server(tmp_path, data)) as (page, errors):
        # a long name is cut in the middle: its end (what tells a series' files apart) stays in view
        item = page.locator("#image-list li").nth(0)
        assert page.locator("dd.crop-key").is_visible()  # photographs can be cropped (key K)
        assert item.locator(".name").get_attribute("title") == LONG_NAME
        assert item.locator(".name").text_content() == LONG_NAME
        tail, row = item.locator(".tail").bounding_box(), item.bounding_box()
        assert item.locator(".tail").text_content() == LONG_NAME[-12:]
        assert tail is not None and row is not None and tail["x"] + tail["width"] <= row["x"] + row["width"]
        item.click()
        page.wait_for_selector("#canvas[data-state=new]")
        click_pixel(page, IMAGE_SIZE // 2, IMAGE_SIZE // 2)
        page.wait_for_selector("#canvas[data-clicks='1']")
        sizes = page.evaluate(
            "(() => { const s = window.clickadapt.state; return {picture: [s.picture.naturalHeight, "
            "s.picture.naturalWidth], overlay: [s.overlay.naturalHeight, s.overlay.naturalWidth]}; })()"
        )
        assert sizes == {"picture": [IMAGE_SIZE, IMAGE_SIZE], "overlay": list(SOURCE_SHAPE)}
        assert errors == []  # drawn without a failure (stretched over the picture's extent)
        # shown as the photograph itself, sharp and with its own aspect ratio (not the square grid stretched)
        sharp = page.evaluate(
            "[window.clickadapt.state.sharp.naturalHeight, window.clickadapt.state.sharp.naturalWidth]"
        )
        assert sharp == list(SOURCE_SHAPE)
        top_left, bottom_right = screen_point(page, 0, 0), screen_point(page, IMAGE_SIZE - 1, IMAGE_SIZE - 1)
        shown = (bottom_right[1] - top_left[1]) / (bottom_right[0] - top_left[0])
        assert abs(shown - SOURCE_SHAPE[0] / SOURCE_SHAPE[1]) < 0.01
        clicked = page.evaluate("window.clickadapt.state.view.clicks[0]")
        assert (clicked["row"], clicked["col"]) == (IMAGE_SIZE // 2, IMAGE_SIZE // 2)  # clicks land where aimed
        click_pixel(page, IMAGE_SIZE // 8, IMAGE_SIZE - 3, button="right")
        page.wait_for_selector("#canvas[data-clicks='2']")
        clicked = page.evaluate("window.clickadapt.state.view.clicks[1]")
        assert (clicked["row"], clicked["col"], clicked["label"]) == (IMAGE_SIZE // 8, IMAGE_SIZE - 3, 0)

        # the crop tool: a box over the right half of the grid → the square of the photograph around it
        page.keyboard.press("k")
        assert page.evaluate("window.clickadapt.state.tool") == "crop"
        drag_pixels(page, (IMAGE_SIZE // 4, IMAGE_SIZE // 2), (3 * IMAGE_SIZE // 4, IMAGE_SIZE - 1))
        page.wait_for_selector("#image-list li:nth-child(2)")
        page.wait_for_function("document.querySelector('#image-name').textContent.includes('[crop')")
        page.wait_for_selector("#canvas[data-state=new]")
        assert page.evaluate("window.clickadapt.state.tool") == "click"  # back to clicking
        click_pixel(page, IMAGE_SIZE // 2, IMAGE_SIZE // 2)
        page.wait_for_selector("#canvas[data-clicks='1']")
        overlay = page.evaluate(
            "[window.clickadapt.state.overlay.naturalHeight, window.clickadapt.state.overlay.naturalWidth]"
        )
        side = round(SOURCE_SHAPE[1] / 2)  # the box's longer side in photograph pixels (half the width)
        assert overlay[0] == overlay[1] and abs(overlay[0] - side) <= 3  # the crop, at its own resolution
        assert errors == []


@pytest.mark.slow
def test_a_large_data_folder_is_listed_in_natural_order_by_short_names_and_can_be_filtered(tmp_path: Path) -> None:
    data = tmp_path / "data"
    paths = ["top.png", "q/x_10.png", "q/x_9.png", "p2/flair.png", "p1/flair.png", "deep/er/p1/flair.png"]
    for index, relative in enumerate(paths):
        (data / relative).parent.mkdir(parents=True, exist_ok=True)
        (data / relative).write_bytes(synthetic_fundus_png(40 + index, 50))
    reference = np.zeros((42, 50), dtype=np.uint8)  # q/x_9.png's reference mask: class indices (disc 1, cup 2)
    reference[10:30, 15:35], reference[15:25, 20:30] = 1, 2
    Image.fromarray(reference).save(data / "q" / "x_9_mask.png")
    with served_page(tiny_fundus_server(tmp_path, data)) as (page, errors):
        items = page.locator("#image-list li")
        # natural order (x_9 before x_10); the full path is the tooltip
        assert [items.nth(i).locator(".name").get_attribute("title") for i in range(6)] == [
            "deep/er/p1/flair.png",
            "p1/flair.png",
            "p2/flair.png",
            "q/x_9.png",
            "q/x_10.png",
            "top.png",
        ]
        # shown: the shortest end of the path that tells the file apart
        assert items.locator(".name").all_text_contents() == [
            "…/er/p1/flair.png",
            "p1/flair.png",
            "p2/flair.png",
            "x_9.png",
            "x_10.png",
            "top.png",
        ]
        page.keyboard.press("/")
        assert page.evaluate("document.activeElement.id") == "image-filter"
        page.keyboard.type("x_n")  # typed into the filter: "n" does not open the next image
        assert items.count() == 0 and "0 shown" in page.locator("#progress").text_content()
        page.keyboard.press("Backspace")
        page.wait_for_function("document.querySelectorAll('#image-list li').length === 2")
        assert page.locator("#progress").text_content() == "0 / 6 done · 2 shown"
        assert page.evaluate("window.clickadapt.state.current") is None
        page.keyboard.press("Enter")  # opens the first image the filter leaves
        page.wait_for_function("document.querySelector('#image-name').textContent === 'q/x_9.png'")
        # its reference mask (q/x_9_mask.png, not listed): the status bar compares the mask with it after a click
        assert page.locator("#reference-item").is_visible() and page.locator("#reference-dice").text_content() == "—"
        click_pixel(page, IMAGE_SIZE // 2, IMAGE_SIZE // 2)
        pattern = r"/^disc \d+\.\d, cup \d+\.\d$/"
        page.wait_for_function(f"{pattern}.test(document.querySelector('#reference-dice').textContent)")
        assert "q/x_9_mask.png" in page.locator("#reference-item").get_attribute("title")
        page.keyboard.press("g")  # the reference's outline over the picture, in its own colours
        page.wait_for_function("window.clickadapt.state.referenceOverlay !== null")
        drawn = page.evaluate(
            """() => { const s = window.clickadapt.state; const o = s.referenceOverlay;
              const outline = s.outlines.get(o).canvas;
              const data = outline.getContext('2d').getImageData(0, 0, outline.width, outline.height).data;
              const colours = new Set();
              for (let i = 0; i < data.length; i += 4) {
                if (data[i + 3]) colours.add([data[i], data[i + 1], data[i + 2]].join());
              }
              return {size: [o.naturalHeight, o.naturalWidth], colours: [...colours].sort()}; }"""
        )
        assert drawn == {"size": [42, 50], "colours": ["255,140,0", "255,230,0"]}  # rim and cup, as in the file
        page.locator("#image-filter").focus()
        page.keyboard.press("Escape")  # empties the filter
        page.wait_for_function("document.querySelectorAll('#image-list li').length === 6")
        assert page.locator("#image-filter").input_value() == ""
        assert page.locator("#progress").text_content() == "0 / 6 done"
        items.nth(4).click()  # q/x_10.png: no reference mask, nothing to compare with
        page.wait_for_function("document.querySelector('#image-name').textContent === 'q/x_10.png'")
        assert page.locator("#reference-item").is_hidden()
        assert page.evaluate("window.clickadapt.state.referenceOverlay") is None  # not x_9's over x_10
        page.keyboard.press("g")  # off (it stayed on from x_9.png), then on again: there is none to show
        page.keyboard.press("g")
        page.wait_for_function("document.querySelector('#message').textContent.includes('no reference mask')")
        assert page.evaluate("window.clickadapt.state.showReference") is False
        assert errors == []


@pytest.mark.slow
def test_shift_drag_changes_the_display_contrast_only_and_w_restores_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    name = "clinicA_patient07_60.png"  # 24 characters: wider than a narrow list, yet not a "long" name
    (data / name).write_bytes(synthetic_fundus_png(*SOURCE_SHAPE))
    for patient in ("0001", "0002"):  # same file name in two long folders: shown with the folder
        (data / f"z_clinic_patient-{patient}_visit-02").mkdir()
        (data / f"z_clinic_patient-{patient}_visit-02" / "scan.png").write_bytes(synthetic_fundus_png(*SOURCE_SHAPE))
    with served_page(tiny_fundus_server(tmp_path, data), width=1024, height=700) as (page, errors):
        # a narrow screen: slimmer panels, and the name's end (what tells a series apart) stays in view
        left = page.locator("#left").bounding_box()
        assert left is not None and left["width"] == 220 and page.locator("#class-picker legend").is_hidden()
        rows = {page.locator(f"#{button}").bounding_box()["y"] for button in ("undo", "reset", "finish", "next")}
        assert len(rows) == 1  # the toolbar wraps its actions as one group, never Undo above Next
        item = page.locator("#image-list li").nth(0)
        tail, row = item.locator(".tail").bounding_box(), item.bounding_box()
        assert item.locator(".tail").text_content() == name[-12:]
        assert tail is not None and row is not None and tail["x"] + tail["width"] <= row["x"] + row["width"]
        for index in (1, 2):  # the folder gives way (cut from its start) before the name runs under the badge
            entry = page.locator("#image-list li").nth(index)
            shown, badge = entry.locator(".tail").bounding_box(), entry.locator(".badge").bounding_box()
            assert shown is not None and badge is not None and shown["x"] + shown["width"] <= badge["x"]
            assert entry.locator(".folder").evaluate("e => e.scrollWidth > e.clientWidth")  # it was cut
        item.click()
        page.wait_for_selector("#canvas[data-state=new]")
        centre = (IMAGE_SIZE // 2, IMAGE_SIZE // 2)
        before = canvas_rgb(page, *centre)
        assert page.locator("#window-item").is_hidden()
        box = page.locator("#canvas").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.keyboard.down("Shift")
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 60, y - 40, steps=6)  # right: more contrast; up: brighter
        page.mouse.up()
        page.keyboard.up("Shift")
        # width 255 − 60 = 195 around centre 127.5 − 40 = 87.5
        assert page.evaluate("window.clickadapt.state.window") == {"low": -10, "high": 185}
        brighter = canvas_rgb(page, *centre)
        assert all(b >= a for a, b in zip(before, brighter, strict=True)) and sum(brighter) > sum(before)
        assert page.locator("#window-item").is_visible() and page.locator("#window-value").text_content() == "-10–185"
        assert page.locator("#click-count").text_content() == "0"  # the drag sent no click
        page.keyboard.down("Shift")
        page.mouse.click(x, y)  # a Shift click without a drag sends none either
        page.keyboard.up("Shift")
        page.evaluate("window.clickadapt.state.queue.then(() => true)")  # whatever the page queued has run
        page.keyboard.press("w")
        assert page.evaluate("window.clickadapt.state.window") == {"low": 0, "high": 255}
        assert canvas_rgb(page, *centre) == before and page.locator("#window-item").is_hidden()
        assert page.locator("#click-count").text_content() == "0"
        click_pixel(page, *centre)  # a plain click is still a click
        page.wait_for_function("document.querySelector('#click-count').textContent === '1'")
        assert errors == []


@pytest.mark.slow
def test_an_upright_tablet_keeps_the_image_wide_and_names_clear_of_their_badges(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    name = "drishtiGS_001.png"
    (data / name).write_bytes(synthetic_fundus_png(*SOURCE_SHAPE))
    with served_page(tiny_fundus_server(tmp_path, data), width=820, height=1100) as (page, errors):
        item = page.locator("#image-list li").nth(0)
        item.click()
        page.wait_for_selector("#canvas[data-state=new]")
        click_pixel(page, IMAGE_SIZE // 2, IMAGE_SIZE // 2)
        page.wait_for_selector("#canvas[data-clicks='1']")
        canvas, right = page.locator("#canvas").bounding_box(), page.locator("#right").bounding_box()
        assert canvas is not None and right is not None
        assert canvas["width"] >= 560  # the model panel is not beside the image any more …
        assert right["y"] >= canvas["y"] + canvas["height"] and right["width"] >= 800  # … but under it, full width
        shown, badge = item.locator(".name").bounding_box(), item.locator(".badge").bounding_box()
        assert item.locator(".badge").text_content() == "in progress · 1"
        assert shown is not None and badge is not None and shown["x"] + shown["width"] <= badge["x"]
        assert errors == []
