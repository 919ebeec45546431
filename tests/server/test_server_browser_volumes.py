"""In Debian's chromium (headless, Playwright): a NIfTI scan whose folder holds a label volume. The slice panel says
where the reference marks something and jumps there; a slice labelled there is compared with the reference, and the
volume's labelled slices with the whole reference volume; keys , . step through slices, the labelled slices export as
one NIfTI, and the display window applies to the slice preview. Skipped
when chromium or Playwright is missing.
"""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from server_helpers import write_tiny_checkpoint
from test_server_browser import click_pixel, served_page

SHAPE = (40, 36, 20)


@pytest.mark.slow
def test_the_slice_panel_points_to_the_reference_and_a_slice_there_is_compared_with_it(tmp_path: Path) -> None:
    affine = np.diag([-1.0, 1.0, 2.0, 1.0])  # stored L→R flipped: slices are shown in L, A, S
    lesion = np.zeros(SHAPE, dtype=np.uint8)
    lesion[10:24, 8:26, 3:7] = 1  # stored slices 3–6; slice 5 the largest
    lesion[5:30, 5:30, 5] = 1
    rng = np.random.default_rng(0)
    scan = (rng.normal(100, 10, SHAPE) + 150 * lesion).astype(np.float32)
    data = tmp_path / "data" / "patient01"
    data.mkdir(parents=True)
    for name, volume in (("flair.nii.gz", scan), ("gold_standard.nii.gz", lesion)):
        (data / name).write_bytes(gzip.compress(nib.Nifti1Image(volume, affine).to_bytes()))
    model = write_tiny_checkpoint(tmp_path / "brain.pt")
    arguments = ["--model", str(model), "--store", str(tmp_path / "store"), "--data", str(tmp_path / "data")]
    with served_page(arguments) as (page, errors):
        items = page.locator("#image-list li")
        assert items.count() == 1  # the label volume is not a scan to label
        assert page.locator("#data-warning").is_hidden()  # grey volumes for the grey model
        items.nth(0).click()
        page.wait_for_selector("#canvas[data-state=new]")
        # the middle slice, nothing marked there (the panel follows the picture: wait for it)
        page.wait_for_function("document.querySelector('#slice-value').textContent === '10'")
        page.wait_for_selector("#reference-slices:not([hidden])")
        assert page.locator("#reference-slices-text").text_content() == "The reference marks 4 of 20 slices (3–6)."
        assert page.locator("#reference-slices").get_attribute("title") == "patient01/gold_standard.nii.gz"
        page.wait_for_selector("#volume-dice:not([hidden])")
        assert page.locator("#volume-dice").text_content() == "Volume Dice: no slice of this volume has a mask yet."
        page.locator("#largest-reference").click()
        assert page.locator("#slice-value").text_content() == "5"
        page.locator("#add-slice").click()
        page.wait_for_function("document.querySelector('#image-name').textContent.endsWith('[slice 5]')")
        page.wait_for_selector("#canvas[data-state=new]")
        assert page.locator("#reference-item").is_visible()
        size = page.evaluate("window.clickadapt.state.picture.naturalHeight")
        click_pixel(page, size // 2, size // 2)
        page.wait_for_function(r"/^lesion \d+\.\d$/.test(document.querySelector('#reference-dice').textContent)")
        # the volume's labelled slices against the reference in 3D, asked for when a slice is opened or finished (not
        # after every click): one slice so far, so its Dice is the slice's
        assert page.locator("#volume-dice").text_content() == "Volume Dice: no slice of this volume has a mask yet."
        page.click("#finish")
        page.click("#confirm-ok")
        page.wait_for_selector("#canvas[data-state=done]")
        page.wait_for_function("document.querySelector('#volume-dice').textContent.includes('1 labelled slice:')")
        text = page.locator("#volume-dice").text_content()
        slice_dice = page.locator("#reference-dice").text_content()
        pattern = r"Volume Dice, 1 labelled slice: lesion \d+\.\d; whole volume: lesion \d+\.\d \((\d+) slices the"
        found = re.fullmatch(pattern + r" reference marks not labelled yet\)", text)
        assert found is not None and found.group(1) == "3", text
        assert text.startswith(f"Volume Dice, 1 labelled slice: {slice_dice};")
        assert "patient01/gold_standard.nii.gz" in page.locator("#volume-dice").get_attribute("title")
        # the volume's labelled slices in one NIfTI aligned with the scan: only slice 5 has a mask so far
        with page.expect_download() as download_info:
            page.locator("#export-volume").click()
        download = download_info.value
        assert download.suggested_filename == "flair_mask.nii.gz"
        exported = nib.Nifti1Image.from_bytes(gzip.decompress(Path(download.path()).read_bytes()))
        voxels = np.asarray(exported.dataobj)
        assert exported.shape == SHAPE and np.allclose(exported.affine, affine)
        assert voxels[:, :, 5].any() and not np.delete(voxels, 5, axis=2).any()
        # slice after slice: key . labels the slice above, the button "− 1" the one below, each added to the list once
        page.locator("#canvas").press(".")
        page.wait_for_function("document.querySelector('#image-name').textContent.endsWith('[slice 6]')")
        page.wait_for_function("document.querySelector('#slice-value').textContent === '6'")  # the panel follows
        page.wait_for_selector("#canvas[data-state=new]")
        click_pixel(page, size // 2, size // 2)  # slice 6 in progress
        page.wait_for_selector("#canvas[data-state=in_progress]")
        page.locator("#slice-down").click()
        page.wait_for_function("document.querySelector('#image-name').textContent.endsWith('[slice 5]')")
        page.wait_for_selector("#canvas[data-state=done]")  # the slice finished before, as it was left
        page.locator("#slice-down").click()
        page.wait_for_function("document.querySelector('#image-name').textContent.endsWith('[slice 4]')")
        page.wait_for_function("document.querySelector('#slice-value').textContent === '4'")
        entries = page.locator("#image-list li").all_text_contents()
        assert sorted(int(re.findall(r"\[slice (\d+)\]", entry)[0]) for entry in entries) == [4, 5, 6, 10], entries
        # the slice map: slice 5 finished (green), 6 in progress (amber), 3 marked by the reference only (grey), 10
        # nothing; a click on it moves the slider there
        colour = """([index, y]) => {
            const map = document.querySelector('#slice-map');
            const x = Math.floor((index + 0.5) * map.width / 20);
            return Array.from(map.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3));
        }"""
        assert page.evaluate(colour, [5, 6]) == [0x3F, 0xB3, 0x6B]
        assert page.evaluate(colour, [6, 6]) == [0xE0, 0xA8, 0x3A]
        assert page.evaluate(colour, [3, 6]) == [0x9A, 0xA2, 0xAD]
        assert page.evaluate(colour, [10, 6]) == [0, 0, 0]  # transparent
        assert page.evaluate(colour, [4, 0]) == [255, 255, 255]  # the slice shown (4), outlined
        map_box = page.locator("#slice-map").bounding_box()
        # columns are narrow in long volumes: hovering one says which slice it is and what it holds
        hovered = {}
        for index in (3, 5, 6, 10):
            page.mouse.move(map_box["x"] + map_box["width"] * (index + 0.5) / 20, map_box["y"] + map_box["height"] / 2)
            hovered[index] = page.locator("#slice-map").get_attribute("title")
        pixels = page.evaluate("window.clickadapt.state.referencePixels")
        assert pixels[3] > 0 and pixels[10] == 0

        def summary(index: int, status: str) -> str:
            marked = [f"the reference marks {pixels[index]} px"] if pixels[index] else []
            return f"slice {index}: {'; '.join([status, *marked])}. Click to go there."

        expected = {3: "not labelled", 5: "finished", 6: "in progress", 10: "in the list, not labelled"}
        assert hovered == {index: summary(index, status) for index, status in expected.items()}
        page.mouse.click(map_box["x"] + map_box["width"] * 12.5 / 20, map_box["y"] + map_box["height"] / 2)
        assert page.locator("#slice-value").text_content() == "12"
        assert page.evaluate(colour, [12, 0]) == [255, 255, 255]
        # the display window (Shift + drag) applies to the slice preview as to the picture; W restores both
        page.wait_for_function("document.querySelector('#slice-preview').complete")
        preview = page.locator("#slice-preview")
        before = np.asarray(Image.open(io.BytesIO(preview.screenshot())).convert("L"), dtype=float)
        box = page.locator("#canvas").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.keyboard.down("Shift")
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 60, y - 40, steps=6)  # window −10 … 185: brighter, more contrast
        page.mouse.up()
        page.keyboard.up("Shift")
        windowed = np.asarray(Image.open(io.BytesIO(preview.screenshot())).convert("L"), dtype=float)
        assert windowed.mean() > before.mean() + 5 and (windowed >= before - 1).all()
        page.keyboard.press("w")
        restored = np.asarray(Image.open(io.BytesIO(preview.screenshot())).convert("L"), dtype=float)
        assert np.abs(restored - before).max() <= 1
        assert errors == []


@pytest.mark.slow
def test_a_long_list_scrolls_inside_so_that_the_volume_panel_stays_in_view(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    for index in range(60):  # a data folder of many pictures before the volume, the first in colour
        picture = Image.fromarray(rng.integers(0, 255, (32, 32, 3) if index == 0 else (32, 32), dtype=np.uint8))
        picture.save(data / f"slice_{index:02d}.png")
    (data / "zz").mkdir()
    scan = rng.normal(100, 10, SHAPE).astype(np.float32)
    (data / "zz" / "flair.nii.gz").write_bytes(gzip.compress(nib.Nifti1Image(scan, np.eye(4)).to_bytes()))
    model = write_tiny_checkpoint(tmp_path / "brain.pt")
    arguments = ["--model", str(model), "--store", str(tmp_path / "store"), "--data", str(data)]
    with served_page(arguments, width=1366, height=768) as (page, errors):
        items = page.locator("#image-list li")
        assert items.count() == 61
        # the grey model and a colour picture among the folder's first: said above the list, with what to do
        warning = page.locator("#data-warning")
        assert warning.is_visible() and warning.text_content().startswith("The data folder: slice_00.png: this looks")
        assert "--channel N" in warning.text_content()
        assert page.evaluate(
            "(() => { const l = document.querySelector('#image-list'); return l.scrollHeight > l.clientHeight })()"
        )
        items.nth(60).click()  # the volume, last in the list
        page.wait_for_selector("#volume-panel:not([hidden])")
        page.wait_for_function("document.querySelector('#slice-preview').complete")
        for element in ("#slice-slider", "#slice-map", "#slice-preview", "#add-slice", "#slice-up"):
            box = page.locator(element).bounding_box()
            assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 768, (element, box)
        assert page.evaluate("document.querySelector('#left').scrollTop") == 0  # nothing needed scrolling the panel
        # the upload section folds away and the list takes its room; the browser remembers it over a reload
        list_height = page.locator("#image-list").bounding_box()["height"]
        page.locator("#upload-section summary").click()
        assert not page.locator("label.file-choice").first.is_visible()
        folded_height = page.locator("#image-list").bounding_box()["height"]
        assert folded_height > list_height + 60, (list_height, folded_height)
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        assert page.evaluate("document.querySelector('#upload-section').open") is False
        page.locator("#upload-section summary").click()
        assert page.locator("label.file-choice").first.is_visible()
        page.locator("#upload-section summary").click()
        items.nth(60).click()
        page.wait_for_selector("#volume-panel:not([hidden])")
        # a click's answer makes only its image's entry again, not the whole list (60-90 ms for 1,243 pictures)
        page.evaluate("document.querySelectorAll('#image-list li')[5].dataset.kept = 'yes'")
        click_pixel(page, 10, 10)
        page.wait_for_selector("#canvas[data-clicks='1']")
        current = page.locator("#image-list li.current")
        assert current.count() == 1 and current.locator(".badge").text_content() == "in progress · 1"
        assert page.evaluate("document.querySelectorAll('#image-list li')[5].dataset.kept") == "yes"
        assert page.locator("#progress").text_content() == "0 / 61 done"
        page.locator("#canvas").press(".")  # the new slice's entry, at the list's end, is brought into its view
        page.wait_for_function("document.querySelector('#image-name').textContent.endsWith('[slice 11]')")
        page.wait_for_function("document.querySelector('#slice-value').textContent === '11'")
        current, shown = (
            page.locator("#image-list li.current").bounding_box(),
            page.locator("#image-list").bounding_box(),
        )
        assert current is not None and shown is not None
        # within a pixel either way: the browser places the entry at fractional offsets
        assert shown["y"] - 1 <= current["y"] and current["y"] + current["height"] <= shown["y"] + shown["height"] + 1
        assert errors == []


@pytest.mark.slow
def test_the_reference_of_a_folder_with_two_raters_is_chosen_in_the_volume_panel(tmp_path: Path) -> None:
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    shape = (24, 24, 6)
    raters = {"rater1.nii.gz": np.zeros(shape, dtype=np.uint8), "rater2.nii.gz": np.zeros(shape, dtype=np.uint8)}
    raters["rater1.nii.gz"][4:12, 4:12, 1:3] = 1
    raters["rater2.nii.gz"][8:20, 8:20, 2:5] = 1
    data = tmp_path / "data" / "p"
    data.mkdir(parents=True)
    scan = np.random.default_rng(0).normal(100, 10, shape).astype(np.float32)
    for name, volume in {"scan.nii.gz": scan, **raters}.items():
        (data / name).write_bytes(gzip.compress(nib.Nifti1Image(volume, affine).to_bytes()))
    model = write_tiny_checkpoint(tmp_path / "brain.pt")
    arguments = ["--model", str(model), "--store", str(tmp_path / "store"), "--data", str(tmp_path / "data")]
    with served_page(arguments) as (page, errors):
        page.locator("#image-list li").nth(0).click()
        page.wait_for_selector("#reference-choice-row:not([hidden])")
        choice = page.locator("#reference-choice")
        options = choice.locator("option").all_text_contents()
        assert options == ["choose one…", "rater1.nii.gz", "rater2.nii.gz"] and choice.input_value() == ""
        assert page.locator("#reference-slices").is_hidden() and page.locator("#reference-item").is_hidden()
        asked: list[str] = []
        page.on("request", lambda request: asked.append(request.url))
        choice.select_option("p/rater2.nii.gz")
        page.wait_for_selector("#reference-slices:not([hidden])")
        assert not [url for url in asked if url.endswith("/reference/choices")]  # the choice's answer has them
        assert page.locator("#reference-slices-text").text_content() == "The reference marks 3 of 6 slices (2–4)."
        assert page.locator("#reference-item").is_visible()  # the slice shown is compared with it now
        assert choice.locator("option").all_text_contents() == ["rater1.nii.gz", "rater2.nii.gz"]
        page.reload()  # kept by the server
        page.locator("#image-list li").nth(0).click()
        page.wait_for_selector("#reference-slices:not([hidden])")
        assert page.locator("#reference-choice").input_value() == "p/rater2.nii.gz"
        assert errors == []
