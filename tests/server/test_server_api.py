"""REST API: every endpoint, including bad input (4xx with a clear message and no change to stored data)."""

from __future__ import annotations

import gzip
import io
import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from server_helpers import (
    IMAGE_SIZE,
    AppFactory,
    dicom_bytes,
    store_snapshot,
    synthetic_brain_slice,
    write_tiny_checkpoint,
    write_tiny_fundus_checkpoint,
)

from clickadapt.adaptation.safety import SafetyEvent
from clickadapt.data.prepare import mask_to_model
from clickadapt.models.checkpoint import load_checkpoint
from clickadapt.server.app import create_app
from clickadapt.server.images import REFERENCE_COLOURS
from clickadapt.server.service import catalogue as catalogue_module
from clickadapt.server.service.catalogue import SkippedFile, summarise_skipped
from clickadapt.server.settings import ServerSettings

LESION_CLICK = {"row": IMAGE_SIZE // 2, "col": IMAGE_SIZE // 2, "label": 1}


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def grey_png(size: int = 40, seed: int = 0) -> bytes:
    image, _ = synthetic_brain_slice(size, seed)
    return png_bytes(np.clip(image, 0, 255).astype(np.uint8))


def nifti_bytes(shape: tuple[int, int, int] = (40, 36, 6), affine: np.ndarray | None = None) -> bytes:
    volume = np.zeros(shape, dtype=np.float32)
    for index in range(shape[2]):
        slice_image, _ = synthetic_brain_slice(max(shape[:2]), seed=index)
        volume[:, :, index] = slice_image[: shape[0], : shape[1]]
    image = nib.Nifti1Image(volume, np.diag([-1.0, 1.0, 2.0, 1.0]) if affine is None else affine)
    return gzip.compress(image.to_bytes())


def first_image(client: TestClient) -> str:
    return str(client.get("/api/images").json()[0]["id"])


def assert_refused(client: TestClient, store: Path, method: str, url: str, status: int, words: str, **kwargs) -> None:
    """The request gets ``status`` with a message containing ``words``, and nothing stored changes."""
    # an earlier request's autosave lands in the background (late on a loaded machine): not this request's doing
    assert client.app.state.service.models.flush_autosave(timeout=60)  # type: ignore[attr-defined]
    before = store_snapshot(store)
    response = client.request(method, url, **kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert words in str(detail), detail
    assert store_snapshot(store) == before


# ------------------------------------------------------------------------------------------ server


def test_health_info_page_static_and_openapi(client: TestClient) -> None:
    assert client.get("/api/health").json() == {"status": "ok"}
    info = client.get("/api/info", headers={"X-Client-Id": "tab-1"}).json()
    assert info["task"] == "brain" and info["class_names"] == ["background", "lesion"]
    assert info["client_id"] == "tab-1" and info["data_folder"] is False and info["crops"] is False
    assert info["model"]["version"] == 0 and info["model"]["strategy"] == "oaims"
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "/static/app.js" in page.text
    assert "addEventListener" in client.get("/static/app.js").text
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/docs").status_code == 200
    paths = set(client.get("/openapi.json").json()["paths"])
    assert paths == {
        "/api/health",
        "/api/info",
        "/api/images",
        "/api/images/next",
        "/api/images/{image_id}",
        "/api/images/{image_id}/display.png",
        "/api/images/{image_id}/crop",  # tests/server/test_server_crops.py
        "/api/images/{image_id}/picture",  # tests/server/test_server_crops.py
        "/api/images/{image_id}/open",
        "/api/images/{image_id}/session",
        "/api/images/{image_id}/clicks",
        "/api/images/{image_id}/corrections",
        "/api/images/{image_id}/release",
        "/api/images/{image_id}/undo",
        "/api/images/{image_id}/reset",
        "/api/images/{image_id}/finish",
        "/api/images/{image_id}/mask.png",
        "/api/images/{image_id}/export",
        "/api/images/{image_id}/reference",  # test_a_reference_mask_beside_a_picture_is_compared_with_the_mask…
        "/api/images/{image_id}/reference.png",  # the same test, and tests/server/test_server_crops.py
        "/api/uploads",
        "/api/sources/{source_id}",
        "/api/sources/{source_id}/reference",  # test_label_volumes_are_not_listed_and_are_the_reference_of_the_scans…
        "/api/sources/{source_id}/reference/score",  # the same test
        "/api/sources/{source_id}/reference/choices",  # test_the_reference_of_a_folder_with_several_label_volumes…
        "/api/sources/{source_id}/export",  # the same test
        "/api/sources/{source_id}/slices/{index}/preview.png",
        "/api/sources/{source_id}/slices",
        "/api/data/files",
        "/api/data/images",
        "/api/model",
        "/api/model/settings",
        "/api/model/versions",
        "/api/model/rollback",
        "/api/stats/chart",
        # MONAI Label-compatible routes: tests/server/test_monailabel_client.py
        "/auth/",
        "/auth/token",
        "/auth/token/valid",
        "/info/",
        "/datastore/",
        "/datastore/image",
        "/datastore/label",
        "/activelearning/{strategy}",
        "/session/",
        "/session/{session_id}",
        "/infer/{model}",
        "/train/",
        "/train/{model}",
    }, "a new endpoint needs a test here"


def test_malformed_client_id_is_refused(client: TestClient) -> None:
    response = client.get("/api/info", headers={"X-Client-Id": "../../etc"})
    assert response.status_code == 400 and "X-Client-Id" in response.json()["detail"]


# ------------------------------------------------------------------------------------------ images


def test_image_list_detail_display_and_next(client: TestClient) -> None:
    images = client.get("/api/images").json()
    assert [image["status"] for image in images] == ["new", "new", "new"]
    assert images[0]["height"] == IMAGE_SIZE and images[0]["origin"] == "demo"
    image_id = images[0]["id"]
    assert client.get(f"/api/images/{image_id}").json() == images[0]
    display = client.get(f"/api/images/{image_id}/display.png")
    assert display.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(display.content)).size == (IMAGE_SIZE, IMAGE_SIZE)
    assert client.get("/api/images/next").json()["image"]["id"] == image_id
    assert client.get(f"/api/images/next?after={image_id}").json()["image"]["id"] == images[1]["id"]
    assert client.get(f"/api/images/next?after={images[2]['id']}").json()["image"]["id"] == image_id


def test_unknown_image_is_404_everywhere(client: TestClient, tmp_path: Path) -> None:
    store = tmp_path / "store"
    for method, suffix, kwargs in [
        ("GET", "", {}),
        ("GET", "/display.png", {}),
        ("POST", "/open", {}),
        ("GET", "/session", {}),
        ("POST", "/clicks", {"json": LESION_CLICK}),
        ("POST", "/undo", {}),
        ("POST", "/reset", {}),
        ("POST", "/finish", {}),
        ("GET", "/mask.png", {}),
        ("GET", "/export", {}),
    ]:
        assert_refused(client, store, method, f"/api/images/no-such-image{suffix}", 404, "unknown image", **kwargs)


def test_click_undo_reset_finish_cycle(client: TestClient, tmp_path: Path) -> None:
    image_id = first_image(client)
    opened = client.post(f"/api/images/{image_id}/open").json()
    assert opened["state"] == "new" and opened["clicks"] == [] and opened["mask_overlay"] is None
    first = client.post(f"/api/images/{image_id}/clicks", json=LESION_CLICK).json()
    assert first["state"] == "in_progress" and len(first["clicks"]) == 1
    assert first["mask_overlay"].startswith("data:image/png;base64,")
    assert first["mask_model_version"] == 0 and first["model_version"] == 0  # oaims: no update at click 1
    assert first["clicks"][0]["class_name"] == "lesion" and first["last_click_s"] > 0
    service = client.app.state.service
    weights_before = {k: v.clone() for k, v in service.models.state.model.state_dict().items()}
    second = client.post(f"/api/images/{image_id}/clicks", json={"row": 5, "col": 5, "label": "background"}).json()
    assert second["clicks"][1]["label"] == 0
    assert second["mask_model_version"] == 1 and second["model_version"] == 1  # a Mid-Interaction update
    changed = service.models.state.model.state_dict()
    assert any(not torch.equal(changed[k], weights_before[k]) for k in changed)
    undone = client.post(f"/api/images/{image_id}/undo").json()
    assert len(undone["clicks"]) == 1 and undone["weights_restored"] is True
    assert undone["model_version"] == 2  # a restore is a change too: versions never go back
    restored = service.models.state.model.state_dict()
    assert all(torch.equal(restored[k], weights_before[k]) for k in restored)  # the update is undone
    session = client.get(f"/api/images/{image_id}/session").json()
    assert [c["row"] for c in session["clicks"]] == [LESION_CLICK["row"]]
    assert client.get("/api/images").json()[0]["status"] == "in_progress"

    reset = client.post(f"/api/images/{image_id}/reset").json()
    assert reset["clicks"] == [] and reset["mask_overlay"] is None
    assert client.get(f"/api/images/{image_id}").json()["status"] == "new"
    store = tmp_path / "store"
    assert_refused(client, store, "POST", f"/api/images/{image_id}/finish", 409, "has no click")
    assert_refused(client, store, "POST", f"/api/images/{image_id}/undo", 409, "has no click")

    client.post(f"/api/images/{image_id}/clicks", json=LESION_CLICK)
    finished = client.post(f"/api/images/{image_id}/finish").json()
    assert finished["state"] == "done" and finished["image"]["status"] == "done"
    assert finished["image"]["clicks"] == 1
    assert finished["model_version"] > 2  # Post-Interaction updated the model
    versions = client.get("/api/model").json()["versions"]
    assert versions[-1]["version"] == finished["model_version"] and versions[-1]["kind"] == "image"
    assert versions[-1]["image_id"] == image_id
    chart = client.get("/api/stats/chart").json()
    assert [(point["image_id"], point["clicks"]) for point in chart] == [(image_id, 1)]


def test_bad_clicks_are_refused_without_change(client: TestClient, tmp_path: Path) -> None:
    store = tmp_path / "store"
    image_id = first_image(client)
    client.post(f"/api/images/{image_id}/clicks", json=LESION_CLICK)
    url = f"/api/images/{image_id}/clicks"
    assert_refused(client, store, "POST", url, 400, "outside the image (height 48)", json={"row": 48, "col": 3})
    assert_refused(client, store, "POST", url, 400, "outside the image (width 48)", json={"row": 3, "col": -1})
    assert_refused(client, store, "POST", url, 400, "unknown class 2", json={"row": 3, "col": 3, "label": 2})
    assert_refused(client, store, "POST", url, 400, "unknown class 'cup'", json={"row": 3, "col": 3, "label": "cup"})
    response = client.post(url, json={"col": 3})
    assert response.status_code == 422 and "row" in response.text
    # A bad click on an image nobody opened yet does not even start a session.
    other = client.get("/api/images").json()[1]["id"]
    assert_refused(client, store, "POST", f"/api/images/{other}/clicks", 400, "outside", json={"row": 99, "col": 0})


def test_finishing_twice_is_refused_and_the_label_kept(client: TestClient, tmp_path: Path) -> None:
    store = tmp_path / "store"
    image_id = first_image(client)
    client.post(f"/api/images/{image_id}/clicks", json=LESION_CLICK)
    client.post(f"/api/images/{image_id}/finish")
    final = client.get(f"/api/images/{image_id}/mask.png?tag=final")
    assert_refused(client, store, "POST", f"/api/images/{image_id}/finish", 409, "already finished")
    assert_refused(client, store, "POST", f"/api/images/{image_id}/clicks", 409, "finished", json=LESION_CLICK)
    assert_refused(client, store, "POST", f"/api/images/{image_id}/undo", 409, "already finished")
    assert_refused(client, store, "POST", f"/api/images/{image_id}/reset", 409, "already finished")
    # Opening shows the finished label read-only.
    view = client.post(f"/api/images/{image_id}/open").json()
    assert view["state"] == "done" and view["mask_overlay"] is not None and len(view["clicks"]) == 1
    # Relabelling is explicit and keeps the first final mask in history.
    relabel = client.post(f"/api/images/{image_id}/open", json={"relabel": True}).json()
    assert relabel["state"] == "new" and relabel["clicks"] == []
    client.post(f"/api/images/{image_id}/clicks", json={"row": 10, "col": 10, "label": 1})
    client.post(f"/api/images/{image_id}/finish")
    assert client.app.state.service.store.count_masks(image_id, "final") == 2
    assert client.get(f"/api/images/{image_id}/mask.png?tag=final").content != b""
    assert final.status_code == 200


def test_masks_and_export(client: TestClient, tmp_path: Path) -> None:
    store = tmp_path / "store"
    image_id = first_image(client)
    assert_refused(client, store, "GET", f"/api/images/{image_id}/mask.png", 404, "has no mask yet")
    answer = client.post(f"/api/images/{image_id}/clicks", json=LESION_CLICK).json()
    current = client.get(f"/api/images/{image_id}/mask.png")
    assert current.headers["x-model-version"] == str(answer["mask_model_version"])
    mask = np.asarray(Image.open(io.BytesIO(current.content)))
    assert mask.shape == (IMAGE_SIZE, IMAGE_SIZE) and set(np.unique(mask)) <= {0, 1}
    original = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{image_id}/mask.png?tag=original").content)))
    np.testing.assert_array_equal(original, mask)  # after one click, the model's mask is the current one
    assert_refused(client, store, "GET", f"/api/images/{image_id}/mask.png?tag=final", 404, "no final mask")
    exported = client.get(f"/api/images/{image_id}/export?format=png")
    assert exported.headers["content-disposition"].startswith("attachment")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(exported.content))), mask)
    nifti = client.get(f"/api/images/{image_id}/export?format=nifti")
    volume = nib.Nifti1Image.from_bytes(gzip.decompress(nifti.content))
    assert volume.shape == (IMAGE_SIZE, IMAGE_SIZE, 1)
    np.testing.assert_array_equal(np.rot90(np.asarray(volume.dataobj)[:, :, 0]), mask)
    response = client.get(f"/api/images/{image_id}/export?format=jpeg")
    assert response.status_code == 422


# ------------------------------------------------------------------------------------------ uploads


def test_upload_png_and_refusals(make_client: AppFactory, tmp_path: Path) -> None:
    client = make_client(max_upload_bytes=20_000)
    store = tmp_path / "store"
    payload = grey_png()
    answer = client.post("/api/uploads?filename=../../evil/scan.png", content=payload)
    assert answer.status_code == 201, answer.text
    result = answer.json()
    assert result["source"]["kind"] == "image" and result["source"]["name"] == "scan.png"
    image = result["image"]
    assert image["origin"] == "upload" and (image["height"], image["width"]) == (IMAGE_SIZE, IMAGE_SIZE)
    assert client.post("/api/uploads?filename=again.png", content=payload).json()["image"]["id"] == image["id"]
    assert len(client.get("/api/images").json()) == 4
    assert (store / "uploads").is_dir() and not (tmp_path / "evil").exists()
    # The mask exported for a 40×40 upload padded to 48×48 has the upload's size.
    client.post(f"/api/images/{image['id']}/clicks", json=LESION_CLICK)
    exported = client.get(f"/api/images/{image['id']}/export?format=png").content
    assert Image.open(io.BytesIO(exported)).size == (40, 40)

    assert_refused(client, store, "POST", "/api/uploads?filename=x.png", 400, "cannot decode", content=payload[:60])
    assert_refused(
        client, store, "POST", "/api/uploads?filename=x.txt", 415, "unsupported file format", content=b"hello"
    )
    assert_refused(client, store, "POST", "/api/uploads?filename=x.png", 400, "empty", content=b"")
    big = png_bytes(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8))
    assert_refused(client, store, "POST", "/api/uploads?filename=big.png", 413, "exceeds the limit", content=big)
    tiny = png_bytes(np.zeros((4, 4), dtype=np.uint8))
    assert_refused(client, store, "POST", "/api/uploads?filename=t.png", 400, "too small", content=tiny)


def test_upload_nifti_volume_slices_and_aligned_export(client: TestClient, tmp_path: Path) -> None:
    store = tmp_path / "store"
    affine = np.array([[0.0, 0.0, 2.0, 5.0], [-1.0, 0.0, 0.0, 3.0], [0.0, 1.0, 0.0, -7.0], [0.0, 0.0, 0.0, 1.0]])
    shape = (40, 36, 12)  # stored axes P, S, R: axial slices run along the stored second axis
    result = client.post("/api/uploads?filename=vol.nii.gz&slice=2", content=nifti_bytes(shape, affine)).json()
    source = result["source"]
    assert source["kind"] == "volume" and source["num_slices"] == 36
    assert result["image"]["slice_index"] == 2 and result["image"]["num_slices"] == 36
    assert client.get(f"/api/sources/{source['id']}").json() == source
    preview = client.get(f"/api/sources/{source['id']}/slices/5/preview.png")
    assert preview.headers["content-type"] == "image/png"
    added = client.post(f"/api/sources/{source['id']}/slices", json={"index": 7})
    assert added.status_code == 201 and added.json()["slice_index"] == 7
    assert client.post(f"/api/sources/{source['id']}/slices", json={"index": 7}).json()["id"] == added.json()["id"]
    sid = source["id"]
    assert_refused(client, store, "POST", f"/api/sources/{sid}/slices", 400, "outside", json={"index": 36})
    assert_refused(client, store, "GET", f"/api/sources/{sid}/slices/99/preview.png", 400, "outside the volume")
    assert_refused(client, store, "GET", "/api/sources/nope", 404, "unknown source")

    image_id = result["image"]["id"]
    client.post(f"/api/images/{image_id}/clicks", json=LESION_CLICK)
    mask = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{image_id}/export?format=png").content)))
    exported = nib.Nifti1Image.from_bytes(
        gzip.decompress(client.get(f"/api/images/{image_id}/export?format=nifti").content)
    )
    assert exported.shape == shape and np.allclose(exported.affine, affine)
    data = np.asarray(exported.dataobj)
    assert data[:, [i for i in range(shape[1]) if i != 2], :].max() == 0  # only the labelled slice is filled
    assert data[:, 2, :].sum() == mask.sum()


def test_channel_setting_segments_one_channel_of_a_multichannel_picture(
    make_client: AppFactory, tmp_path: Path
) -> None:
    """A TCGA-LGG kaggle_3m slice stacks pre-contrast, FLAIR and post-contrast as three channels: with
    ``channel=1`` the grey model segments the FLAIR channel exactly as if that channel had been uploaded alone."""
    channels = [np.clip(synthetic_brain_slice(40, seed)[0], 0, 255).astype(np.uint8) for seed in (1, 2, 3)]
    stacked = png_bytes(np.stack(channels, axis=-1))
    client = make_client(channel=1, adaptation=False)  # both images meet the same weights
    chosen = client.post("/api/uploads?filename=slice.png", content=stacked).json()
    alone = client.post("/api/uploads?filename=flair.png", content=png_bytes(channels[1])).json()
    assert chosen["warning"] is None  # one grey channel: nothing to warn about
    views = []
    for result in (chosen, alone):
        image_id = result["image"]["id"]
        display = client.get(f"/api/images/{image_id}/display.png").content
        view = client.post(f"/api/images/{image_id}/clicks", json={"row": 20, "col": 20, "label": 1}).json()
        views.append((display, view["mask_overlay"]))
    assert views[0] == views[1]
    # without the setting the channels are averaged to grey, with a warning that they differ
    averaged = make_client(store=tmp_path / "other").post("/api/uploads?filename=slice.png", content=stacked)
    assert "colour" in averaged.json()["warning"]
    assert client.get("/api/info").json()["channel"] == 1  # the page says which channel it segments


def test_a_data_folder_of_colour_pictures_for_the_grey_model_is_said_unless_a_channel_is_chosen(
    make_client: AppFactory, tmp_path: Path
) -> None:
    """TCGA-LGG kaggle_3m pictures stack three MR sequences: served without --channel, the grey model sees their
    average. The server says so at start-up (/api/info, shown by the page), naming a file and the option."""
    data = tmp_path / "data"
    data.mkdir()
    channels = [np.clip(synthetic_brain_slice(40, seed)[0], 0, 255).astype(np.uint8) for seed in (1, 2, 3)]
    (data / "case_1.png").write_bytes(png_bytes(np.stack(channels, axis=-1)))
    (data / "case_2.png").write_bytes(png_bytes(channels[0]))
    averaged = make_client(data=data, use_samples=False).get("/api/info").json()["data_warning"]
    assert averaged.startswith("case_1.png: this looks like a colour photograph, but the model segments grey brain")
    assert "--channel N" in averaged
    chosen = make_client(data=data, use_samples=False, channel=1, store=tmp_path / "chosen").get("/api/info").json()
    assert chosen["data_warning"] is None
    (data / "case_1.png").unlink()
    grey = make_client(data=data, use_samples=False, store=tmp_path / "grey").get("/api/info").json()
    assert grey["data_warning"] is None
    fundus = write_tiny_fundus_checkpoint(tmp_path / "fundus.pt")  # a colour model: grey pictures are said
    on_fundus = make_client(data=data, use_samples=False, model=str(fundus), store=tmp_path / "fundus")
    assert (
        on_fundus.get("/api/info")
        .json()["data_warning"]
        .startswith("case_2.png: this is a grey image, but the model segments colour fundus photographs")
    )
    # a file put in the folder after start-up and added through the API is checked as an upload is
    (data / "late.png").write_bytes(png_bytes(np.stack(channels, axis=-1)))
    (data / "late_grey.png").write_bytes(png_bytes(channels[1]))
    started = make_client(data=data, use_samples=False, store=tmp_path / "late")
    (data / "later.png").write_bytes(png_bytes(np.stack(channels, axis=-1)))
    late = started.post("/api/data/images", json={"path": "later.png"})
    assert late.status_code == 201 and late.json()["warning"].startswith("this looks like a colour photograph")
    assert started.post("/api/data/images", json={"path": "late_grey.png"}).json()["warning"] is None


def test_upload_dicom(client: TestClient) -> None:
    result = client.post("/api/uploads?filename=scan.dcm", content=dicom_bytes()).json()
    assert result["source"]["kind"] == "image" and result["image"]["height"] == IMAGE_SIZE


# ------------------------------------------------------------------------------------------ data folder


def test_data_folder_listing_and_path_safety(make_client: AppFactory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.png").write_bytes(grey_png(seed=1))
    (data / "sub" / "b.png").write_bytes(grey_png(seed=2))
    (data / "notes.txt").write_text("not an image")
    Image.open(io.BytesIO(grey_png(seed=4))).save(data / "c.webp", format="WEBP", lossless=True)
    (tmp_path / "secret.png").write_bytes(grey_png(seed=3))
    (data / "link.png").symlink_to(tmp_path / "secret.png")
    (data / "sub" / "b_mask.png").write_bytes(grey_png(seed=6))  # b.png's mask (TCGA-LGG kaggle_3m layout)
    (data / "lonely_mask.png").write_bytes(grey_png(seed=7))  # no lonely.png: an image like any other
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "d.png").write_bytes(grey_png(seed=5))
    (data / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    client = make_client(data=data, use_samples=False)
    store = tmp_path / "store"
    names = [image["name"] for image in client.get("/api/images").json()]
    assert names == ["a.png", "c.webp", "lonely_mask.png", "sub/b.png"]  # the link leads outside: not listed
    assert client.get("/api/data/files").json() == ["a.png", "c.webp", "lonely_mask.png", "sub/b.png"]
    # what start-up left out is said, with the reason (``clickadapt serve`` prints it)
    skipped = client.app.state.service.catalogue.skipped_files
    assert len(skipped) == 4
    assert skipped[0].startswith("link.png:") and "data folder" in skipped[0]
    assert skipped[1].startswith("linked: a link to a folder")
    assert skipped[2].startswith("notes.txt: unsupported file type") and "WebP" in skipped[2]
    assert skipped[3] == "sub/b_mask.png: the reference mask of b.png, not an image to label"
    lines = summarise_skipped(client.app.state.service.catalogue.skipped)  # what the log and `serve` say
    assert lines[0].startswith("link.png: ") and "data folder" in lines[0]  # a file's own reason: alone
    assert "1 links to folders (not followed): linked" in lines
    assert any(
        line.startswith("1 reference mask(s) beside their images") and line.endswith(": sub/b_mask.png")
        for line in lines
    )
    unsupported = next(line for line in lines if line.startswith("1 file(s) of an unsupported file type"))
    assert unsupported.endswith(": notes.txt")
    assert client.get("/api/info").json()["data_folder"] is True
    for bad in ["../secret.png", "sub/../../secret.png", "link.png", str(tmp_path / "secret.png")]:
        assert_refused(client, store, "POST", "/api/data/images", 400, "data folder", json={"path": bad})
    assert_refused(client, store, "POST", "/api/data/images", 404, "does not exist", json={"path": "nope.png"})
    added = client.post("/api/data/images", json={"path": "sub/b.png"})
    assert added.status_code == 201 and added.json()["image"]["name"] == "sub/b.png"
    image_id = added.json()["image"]["id"]
    assert client.post(f"/api/images/{image_id}/clicks", json={"row": 3, "col": 3, "label": 1}).status_code == 200


def test_a_slow_first_reading_of_the_data_folder_says_how_far_it_is(
    make_client: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for index in range(3):
        (data / f"slice_{index}.png").write_bytes(grey_png(seed=index))
    caplog.set_level(logging.INFO, logger="clickadapt.server.service.catalogue")
    monkeypatch.setattr(catalogue_module, "PROGRESS_SECONDS", 0.0)  # as if every file took long
    assert len(make_client(data=data, use_samples=False).get("/api/images").json()) == 3
    said = [record.getMessage() for record in caplog.records if "files read" in record.getMessage()]
    assert said == [f"data folder: {done} of 3 files read (each prepared once per store)" for done in range(3)]
    caplog.clear()
    monkeypatch.setattr(catalogue_module, "PROGRESS_SECONDS", 5.0)
    make_client(data=data, use_samples=False, store=tmp_path / "quick")
    assert "files read" not in caplog.text  # a quick reading says nothing


def test_data_endpoints_without_a_data_folder(client: TestClient, tmp_path: Path) -> None:
    assert client.get("/api/data/files").json() == []
    assert_refused(
        client, tmp_path / "store", "POST", "/api/data/images", 400, "without a data folder", json={"path": "a.png"}
    )


# ------------------------------------------------------------------------------------------ model


def test_model_settings_versions_and_rollback(client: TestClient, tmp_path: Path) -> None:
    store = tmp_path / "store"
    service = client.app.state.service
    model = client.get("/api/model").json()
    assert model["strategy"] == "oaims" and model["adaptation"] is True and "frozen" not in model["strategies"]
    assert [v["version"] for v in model["versions"]] == [0]
    assert_refused(
        client, store, "PUT", "/api/model/settings", 400, "unknown adaptation strategy", json={"strategy": "magic"}
    )

    image_id = first_image(client)
    client.post(f"/api/images/{image_id}/clicks", json=LESION_CLICK)
    client.post(f"/api/images/{image_id}/finish")
    adapted = service.models.state.version
    assert adapted > 0

    frozen = client.put("/api/model/settings", json={"adaptation": False}).json()
    assert frozen["adaptation"] is False and service.models.state.strategy.name == "frozen"
    other = client.get("/api/images").json()[1]["id"]
    client.post(f"/api/images/{other}/clicks", json=LESION_CLICK)
    client.post(f"/api/images/{other}/clicks", json={"row": 2, "col": 2, "label": 0})
    done = client.post(f"/api/images/{other}/finish").json()
    assert done["model_version"] == adapted  # adaptation off: no update
    switched = client.put("/api/model/settings", json={"adaptation": True, "strategy": "post"}).json()
    assert switched["strategy"] == "post" and service.models.state.strategy.name == "post"
    assert [event["kind"] for event in service.store.events()] == ["model_settings", "model_settings"]

    saved = client.post("/api/model/versions")
    assert saved.status_code == 201 and saved.json()["version"] == adapted  # already saved: same record

    assert_refused(
        client, store, "POST", "/api/model/rollback", 404, "unknown model version 999", json={"version": 999}
    )
    rolled = client.post("/api/model/rollback", json={"version": 0}).json()
    assert rolled["version"] == adapted + 1
    assert [(v["version"], v["kind"]) for v in rolled["versions"]] == [
        (0, "initial"),
        (adapted, "image"),
        (adapted + 1, "rollback"),
    ]
    assert rolled["versions"][-1]["parent_version"] == 0
    initial = load_checkpoint(store / "models" / "v0.pt").model.state_dict()
    current = service.models.state.model.state_dict()
    assert all(torch.equal(initial[key], current[key]) for key in initial)
    assert (store / f"models/v{adapted}.pt").is_file()  # history is kept
    assert service.store.events("rollback")[0]["details"] == {"to_version": 0, "new_version": adapted + 1}


# ------------------------------------------------------------------------------------------ clients and auth


def test_each_client_has_its_own_image_and_images_are_claimed(client: TestClient) -> None:
    images = [image["id"] for image in client.get("/api/images").json()]
    alice, bob = {"X-Client-Id": "alice"}, {"X-Client-Id": "bob"}
    first_a = client.post(f"/api/images/{images[0]}/clicks", json=LESION_CLICK, headers=alice).json()
    first_b = client.post(f"/api/images/{images[1]}/clicks", json=LESION_CLICK, headers=bob).json()
    assert len(first_a["clicks"]) == len(first_b["clicks"]) == 1
    refused = client.post(f"/api/images/{images[0]}/clicks", json=LESION_CLICK, headers=bob)
    assert refused.status_code == 409 and "another browser session" in refused.json()["detail"]
    second_a = client.post(f"/api/images/{images[0]}/clicks", json={"row": 1, "col": 1, "label": 0}, headers=alice)
    assert len(second_a.json()["clicks"]) == 2
    # Every answer says which version of the shared model produced it: Alice's second click updated it.
    assert second_a.json()["mask_model_version"] == 1
    assert client.get(f"/api/images/{images[1]}/session", headers=bob).json()["mask_model_version"] == 0
    # Once Alice moves on, Bob may take her image over and sees her clicks.
    client.post(f"/api/images/{images[2]}/open", headers=alice)
    taken = client.post(f"/api/images/{images[0]}/open", headers=bob).json()
    assert len(taken["clicks"]) == 2


def test_token_is_required_when_configured(make_client: AppFactory) -> None:
    client = make_client(token="s3cret-token")
    assert client.get("/api/health").status_code == 200
    refused = client.get("/api/images")
    assert refused.status_code == 401 and "access token" in refused.json()["detail"]
    assert refused.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/images", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    assert client.get("/api/images", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    assert client.get("/api/images?token=s3cret-token").status_code == 200
    assert client.get("/").status_code == 401
    page = client.get("/?token=s3cret-token")
    assert page.status_code == 200 and "clickadapt_token" in page.headers["set-cookie"]
    assert client.get("/api/images").status_code == 200  # the page's cookie now carries the token


def test_every_api_route_but_health_needs_the_token(make_client: AppFactory) -> None:
    """No route escapes the token (a new one included without the guard would answer here)."""
    client = make_client(token="s3cret-token")
    checked = 0
    for path, operations in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        if not path.startswith("/api/") or path == "/api/health":
            continue
        url = re.sub(r"\{[^}]+\}", "x", path)
        for method in sorted(operations):
            answer = client.request(method.upper(), url)
            assert answer.status_code == 401, f"{method} {path} answered {answer.status_code} without the token"
            checked += 1
    assert checked >= 30  # the REST API's operations were all found


def test_non_loopback_host_needs_a_token(tiny_checkpoint: Path, tmp_path: Path) -> None:
    settings = ServerSettings(host="0.0.0.0", model=str(tiny_checkpoint), store=tmp_path / "store")
    with pytest.raises(ValueError, match="requires an access token"):
        create_app(settings)
    assert settings.with_token_if_exposed().token is not None
    assert ServerSettings(host="127.0.0.1").with_token_if_exposed().token is None


def test_oversized_json_body_is_413(make_client: AppFactory) -> None:
    client = make_client(max_upload_bytes=10)
    body = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    response = client.post(
        f"/api/images/{first_image(client)}/clicks", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413 and "exceeds the limit" in response.json()["detail"]


def test_the_documented_api_example_runs(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "docs" / "api_example.py"
    spec = importlib.util.spec_from_file_location("api_example", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    class BorrowedClient:
        """Hands the example our test client without closing the app at the end of its ``with`` block."""

        def __init__(self, base_url: str, headers: dict[str, str], timeout: float) -> None:
            client.headers.update(headers)

        def __enter__(self) -> TestClient:
            return client

        def __exit__(self, *exception: object) -> None:
            return None

    monkeypatch.setattr(example.httpx, "Client", BorrowedClient)
    monkeypatch.setattr("sys.argv", ["api_example.py", "--out", str(tmp_path)])
    example.main()
    printed = capsys.readouterr().out
    assert "refused with 400: click row 48 is outside the image" in printed
    assert "finished: finished; model updated" in printed
    assert list(tmp_path.glob("*_mask.png"))
    assert list(tmp_path.glob("*_mask.nii.gz"))


def test_concurrent_clients_updates_are_serialised(client: TestClient) -> None:
    import threading

    service = client.app.state.service
    images = [image["id"] for image in client.get("/api/images").json()[:2]]
    clicks = [(24, 24, 1), (10, 10, 0), (30, 30, 1), (5, 40, 0)]
    failures: list[BaseException] = []

    def label(image_id: str, client_id: str) -> None:
        try:
            for row, col, label in clicks:
                service.sessions.add_click(image_id, client_id, row, col, label)
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=label, args=(image_id, f"tab-{i}")) for i, image_id in enumerate(images)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    # oaims updates at clicks 2, 3 and 4 of each image: six updates, each one its own version.
    assert service.models.state.version == 6
    recorded = []
    for image_id in images:
        view = client.get(f"/api/images/{image_id}/session").json()
        recorded += [click["model_version"] for click in view["clicks"][1:]]
    assert sorted(recorded) == [1, 2, 3, 4, 5, 6]


def write_sentinel_folder(folder: Path, count: int = 3) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for index in range(count):
        rows, cols = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
        mask = ((rows - 20 - index) ** 2 + (cols - 24) ** 2 <= 64).astype(np.uint8)
        Image.fromarray((40 + 150 * mask).astype(np.uint8)).save(folder / "images" / f"s{index}.png")
        Image.fromarray(mask).save(folder / "masks" / f"s{index}.png")
    return folder


def test_source_sentinel_from_a_labelled_folder(make_client: AppFactory, tmp_path: Path) -> None:
    client = make_client(sentinel=write_sentinel_folder(tmp_path / "sentinel"))
    safety = client.app.state.service.models.safety
    assert safety.sentinel_source_score is not None and 0.0 <= safety.sentinel_source_score <= 1.0
    plain = make_client(store=tmp_path / "other")
    assert plain.app.state.service.models.safety.sentinel_source_score is None


def test_the_safety_layer_clicks_with_the_checkpoints_click_maps(make_client: AppFactory, tmp_path: Path) -> None:
    """The sentinel and the rehearsal place their clicks with the σ the model was trained with (the shipped brain
    model's is 2 px), in the shared model's safety layer and in every domain's."""
    model = write_tiny_checkpoint(tmp_path / "sigma2.pt", click_sigma=2.0)
    client = make_client(model=str(model), sentinel=write_sentinel_folder(tmp_path / "sentinel"))
    models = client.app.state.service.models
    assert models.click_sigma == 2.0 and models.safety.click_sigma == 2.0 and models.domains.click_sigma == 2.0


def test_source_rehearsal_from_a_labelled_folder_runs_after_each_finished_image(
    make_client: AppFactory, tmp_path: Path
) -> None:
    client = make_client(rehearsal=write_sentinel_folder(tmp_path / "rehearsal", count=2))
    safety = client.app.state.service.models.safety
    assert safety.rehearsing and client.get("/api/model").json()["source_rehearsal"] is True
    image_id = first_image(client)
    client.post(f"/api/images/{image_id}/open")
    client.post(f"/api/images/{image_id}/clicks", json=LESION_CLICK)
    finished = client.post(f"/api/images/{image_id}/finish").json()
    assert safety.rehearsals == 1 and finished["image"]["status"] == "done"
    plain = make_client(store=tmp_path / "other")
    assert not plain.app.state.service.models.safety.rehearsing
    assert plain.get("/api/model").json()["source_rehearsal"] is False


def test_a_bad_rehearsal_folder_is_refused_by_name(tiny_checkpoint: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-rehearsal"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with pytest.raises(ValueError, match=r"rehearsal folder .*empty-rehearsal holds no image/mask pairs"):
        create_app(ServerSettings(store=tmp_path / "store", model=str(tiny_checkpoint), rehearsal=empty))


def test_a_bad_sentinel_folder_is_refused_by_name(tiny_checkpoint: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        create_app(ServerSettings(store=tmp_path / "store", model=str(tiny_checkpoint), sentinel=missing))
    folder = write_sentinel_folder(tmp_path / "bad")
    Image.fromarray(np.full((IMAGE_SIZE, IMAGE_SIZE), 7, np.uint8)).save(folder / "masks" / "s0.png")
    with pytest.raises(ValueError, match=r"s0\.png"):
        create_app(ServerSettings(store=tmp_path / "store2", model=str(tiny_checkpoint), sentinel=folder))


def test_safety_events_are_shown_with_the_model(client: TestClient) -> None:
    model = client.get("/api/model").json()
    assert model["safety_events"] == [] and model["source_sentinel"] is False
    safety = client.app.state.service.models.safety
    safety.events.append(SafetyEvent("rollback", "img-3", "drift: first-click agreement fell", 7, 3, 2))
    [event] = client.get("/api/model").json()["safety_events"]
    assert event == {
        "kind": "rollback",
        "image_id": "img-3",
        "reason": "drift: first-click agreement fell",
        "version": 7,
    }


def test_source_domain_images_adapt_a_per_image_copy_and_never_change_the_shared_model(
    make_client: AppFactory,
) -> None:
    client = make_client(source_domains=["synthetic/T1/case0/*", "synthetic/T1/case2/*"])
    service = client.app.state.service
    base_version = service.models.base_version
    shared_before = {name: tensor.clone() for name, tensor in service.models.state.model.state_dict().items()}
    images = {image["name"]: image["id"] for image in client.get("/api/images").json()}
    source_id, second_source_id = images["synthetic/T1/case0/0"], images["synthetic/T1/case2/2"]
    other_id = images["synthetic/T1/case1/1"]
    assert client.get("/api/model").json()["source_domains"] == ["synthetic/T1/case0/*", "synthetic/T1/case2/*"]

    client.post(f"/api/images/{source_id}/open")
    client.post(f"/api/images/{source_id}/clicks", json=LESION_CLICK)
    view = client.post(f"/api/images/{source_id}/clicks", json={"row": 4, "col": 4, "label": 0}).json()
    copy = service.models.source_copy(source_id)
    assert view["source_domain"] is True and view["mask_model_version"] == base_version
    assert all(click["model_version"] == base_version for click in view["clicks"])
    assert copy.state.version > base_version  # the image's own copy learnt from the second click (MI)
    assert view["model_version"] == service.models.state.version == base_version  # the shared model did not
    # The copy's update guard works and its actions are listed: with a tiny step limit it rejects the next update.
    copy.monitor.config = copy.monitor.config.model_copy(update={"max_relative_step": 1e-12})
    weights_before = {name: tensor.clone() for name, tensor in copy.state.model.state_dict().items()}
    client.post(f"/api/images/{source_id}/clicks", json={"row": 6, "col": 6, "label": 0})
    for name, tensor in copy.state.model.state_dict().items():
        assert torch.equal(tensor, weights_before[name])  # the rejected update was undone
    [event] = client.get("/api/model").json()["source_copy_events"]
    assert event["kind"] == "update_rejected" and event["image_id"] == source_id
    # A second source image open at the same time has its own copy, starting from the base weights.
    client.post(f"/api/images/{second_source_id}/clicks", json=LESION_CLICK)
    second = service.models.source_copy(second_source_id)
    assert second is not copy and second.state.version == base_version
    for name, tensor in second.state.model.state_dict().items():
        assert torch.equal(tensor, shared_before[name])
    finished = client.post(f"/api/images/{source_id}/finish").json()
    assert finished["image"]["status"] == "done" and "source-domain image" in finished["message"]
    assert finished["source_domain"] is True and service.models.state.version == base_version
    assert service.models.source_copy(source_id) is None and service.models.source_copy(second_source_id) is second
    for name, tensor in service.models.state.model.state_dict().items():
        assert torch.equal(tensor, shared_before[name])
    assert [item["model_version"] for item in client.get("/api/stats/chart").json()] == [base_version]
    assert len(client.get("/api/model").json()["source_copy_events"]) == 1  # kept after the copy is gone

    client.post(f"/api/images/{other_id}/open")
    client.post(f"/api/images/{other_id}/clicks", json=LESION_CLICK)
    other = client.post(f"/api/images/{other_id}/finish").json()
    assert other["source_domain"] is False and service.models.state.version > base_version  # the shared model adapts


def test_source_domain_images_follow_the_adaptation_switch(make_client: AppFactory) -> None:
    client = make_client(source_domains=["synthetic/*"], adaptation=False)
    service = client.app.state.service
    image_id = first_image(client)
    client.post(f"/api/images/{image_id}/clicks", json=LESION_CLICK)
    client.post(f"/api/images/{image_id}/clicks", json={"row": 4, "col": 4, "label": 0})
    assert (
        service.models.source_copy(image_id).state.version == service.models.base_version
    )  # adaptation off: no update
    client.put("/api/model/settings", json={"adaptation": True})
    client.post(f"/api/images/{image_id}/clicks", json={"row": 5, "col": 5, "label": 0})
    assert service.models.source_copy(image_id).state.version > service.models.base_version


def test_an_in_progress_source_domain_image_is_replayed_on_the_base_weights_after_a_restart(
    make_client: AppFactory, tmp_path: Path
) -> None:
    settings = {"store": tmp_path / "kept", "source_domains": ["synthetic/*"]}
    first = make_client(**settings)
    image_id = first_image(first)
    first.post(f"/api/images/{image_id}/clicks", json=LESION_CLICK)
    first.post(f"/api/images/{image_id}/clicks", json={"row": 4, "col": 4, "label": 0})
    restarted = make_client(**settings)
    view = restarted.post(f"/api/images/{image_id}/open").json()
    service = restarted.app.state.service
    copy = service.models.source_copy(image_id)
    assert view["source_domain"] is True and len(view["clicks"]) == 2
    assert copy.state.version == service.models.base_version  # replayed without updates, on the base weights
    restarted.post(f"/api/images/{image_id}/clicks", json={"row": 5, "col": 5, "label": 0})
    assert copy.state.version > service.models.base_version  # new clicks adapt the copy again


def test_an_unfinished_slice_out_of_memory_keeps_its_mask_in_exports_as_last_seen_then_as_replayed(
    make_client: AppFactory, tmp_path: Path
) -> None:
    """Sessions beyond ``max_live_sessions`` leave memory; their slices still count in the volume's export (and
    score): as their user last saw them, and after a restart as their clicks replayed, what opening them shows."""
    settings = {"store": tmp_path / "kept", "max_live_sessions": 1}
    client = make_client(**settings)
    result = client.post("/api/uploads?filename=vol.nii.gz&slice=2", content=nifti_bytes((40, 36, 12))).json()
    source_id, evicted = result["source"]["id"], result["image"]["id"]
    other = client.post(f"/api/sources/{source_id}/slices", json={"index": 7}).json()["id"]
    client.post(f"/api/images/{evicted}/clicks", json=LESION_CLICK)
    client.post(f"/api/images/{evicted}/clicks", json={"row": 3, "col": 3, "label": 0})
    seen = client.get(f"/api/images/{evicted}/export?format=png").content
    version = client.get("/api/model").json()["version"]
    for click in (LESION_CLICK, {"row": 5, "col": 30, "label": 0}):  # opens the other slice: the first leaves memory
        assert client.post(f"/api/images/{other}/clicks", json=click).status_code == 200
    service = client.app.state.service
    assert service.sessions.live.get(evicted) is None and client.get("/api/model").json()["version"] > version

    def no_model_run(*_args: object) -> None:
        raise AssertionError("the mask last seen is kept: no replay")

    service.models.new_session = no_model_run
    assert client.get(f"/api/images/{evicted}/export?format=png").content == seen
    volume = nib.Nifti1Image.from_bytes(gzip.decompress(client.get(f"/api/sources/{source_id}/export").content))
    labelled = np.asarray(volume.dataobj).any(axis=(0, 1))  # axial slices along the third axis (identity affine)
    assert np.flatnonzero(labelled).tolist() == [2, 7]
    assert client.get(f"/api/images/{evicted}").json()["status"] == "in_progress"

    restarted = make_client(**settings)
    store = settings["store"]
    before = {table: rows for table, rows in store_snapshot(store).items() if table != "files"}
    replayed = restarted.get(f"/api/images/{evicted}/export?format=png")
    assert replayed.status_code == 200, replayed.text
    assert {table: rows for table, rows in store_snapshot(store).items() if table != "files"} == before
    assert restarted.app.state.service.sessions.live.get(evicted) is None  # not opened, not claimed
    restarted.post(f"/api/images/{evicted}/open")
    assert restarted.get(f"/api/images/{evicted}/export?format=png").content == replayed.content
    assert np.asarray(Image.open(io.BytesIO(replayed.content))).any()


def test_replaying_an_unfinished_image_out_of_memory_leaves_the_shared_weights_alone(
    make_client: AppFactory, tmp_path: Path
) -> None:
    """TSCA resets its student to the teacher when the next image begins: the replay that gives an image out of
    memory its mask must not begin an image on the shared model, or it would undo the open image's updates."""
    settings = {"store": tmp_path / "kept", "strategy": "tsca", "max_live_sessions": 1}
    first = make_client(**settings)
    out_of_memory, live = (image["id"] for image in first.get("/api/images").json()[:2])
    first.post(f"/api/images/{out_of_memory}/clicks", json=LESION_CLICK)
    restarted = make_client(**settings)
    for click in (LESION_CLICK, {"row": 3, "col": 3, "label": 0}):
        assert restarted.post(f"/api/images/{live}/clicks", json=click).status_code == 200
    state = restarted.app.state.service.models.state
    student = state.strategy.student
    weights = {name: value.clone() for name, value in student.state_dict().items()}
    assert any(not torch.equal(weights[name], value) for name, value in state.model.state_dict().items())
    version = state.version
    assert restarted.get(f"/api/images/{out_of_memory}/export?format=png").status_code == 200  # replayed
    assert state.version == version
    assert all(torch.equal(weights[name], value) for name, value in student.state_dict().items())


def test_many_skipped_files_are_said_in_a_few_lines() -> None:
    masks = [
        SkippedFile(f"p/x_{n}_mask.tif", f"the mask of x_{n}.tif", "mask(s) beside their images") for n in range(5)
    ]
    broken = [SkippedFile(f"bad_{n}.png", "cannot be decoded") for n in range(4)]
    lines = summarise_skipped([masks[0], broken[0], *masks[1:], *broken[1:]], examples=2, singles=3)
    assert lines == [
        "bad_0.png: cannot be decoded",
        "bad_1.png: cannot be decoded",
        "bad_2.png: cannot be decoded",
        "… and 1 more file(s) left out, each for its own reason",
        "5 mask(s) beside their images: p/x_0_mask.tif, p/x_1_mask.tif, …",
    ]
    assert summarise_skipped([]) == []


def test_a_reference_mask_beside_a_picture_is_compared_with_the_mask_never_shown_to_the_model(
    make_client: AppFactory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    image, lesion = synthetic_brain_slice(40, seed=3)
    (data / "a.png").write_bytes(png_bytes(np.clip(image, 0, 255).astype(np.uint8)))
    (data / "a_mask.png").write_bytes(png_bytes((lesion > 0).astype(np.uint8) * 255))  # {0, 255}, as kaggle_3m
    (data / "b.png").write_bytes(grey_png(seed=4))
    (data / "c.png").write_bytes(grey_png(seed=5))
    (data / "c_mask.png").write_bytes(png_bytes(np.zeros((20, 20), dtype=np.uint8)))  # not the picture's size
    (data / "d.png").write_bytes(grey_png(seed=6))
    (tmp_path / "elsewhere.png").write_bytes(png_bytes(np.ones((40, 40), dtype=np.uint8)))
    (data / "d_mask.png").symlink_to(tmp_path / "elsewhere.png")  # a link out of the data folder: not read
    client = make_client(data=data, use_samples=False)
    store = tmp_path / "store"
    images = {image["name"]: image for image in client.get("/api/images").json()}
    assert sorted(images) == ["a.png", "b.png", "c.png", "d.png"]
    assert {name: image["has_reference"] for name, image in images.items()} == {
        "a.png": True,
        "b.png": False,
        "c.png": True,
        "d.png": False,
    }
    first = images["a.png"]["id"]
    assert_refused(client, store, "GET", f"/api/images/{first}/reference", 404, "no")  # no mask before a click
    rows, cols = np.nonzero(lesion)
    click = {"row": int(rows.mean()), "col": int(cols.mean()), "label": 1}
    assert client.post(f"/api/images/{first}/clicks", json=click).status_code == 200
    score = client.get(f"/api/images/{first}/reference")
    assert score.status_code == 200, score.text
    assert score.json()["reference"] == "a_mask.png"
    exported = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{first}/export?format=png").content)))
    mine, theirs = exported == 1, lesion > 0
    expected = 2 * (mine & theirs).sum() / (mine.sum() + theirs.sum())
    assert 0 < expected < 1  # a real comparison: some overlap, not identical
    assert score.json()["dice"] == {"lesion": pytest.approx(expected)}
    second = images["b.png"]["id"]
    assert_refused(client, store, "GET", f"/api/images/{second}/reference", 404, "no reference mask")
    # to draw: the reference on the page's frame (a brain picture's: the model grid), in its own colours
    drawn = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{first}/reference.png").content)).convert("RGBA"))
    expected_drawn = mask_to_model((lesion > 0).astype(np.uint8), client.app.state.service.catalogue.geometry(first))
    np.testing.assert_array_equal(drawn[..., 3] > 0, expected_drawn > 0)
    assert {tuple(pixel) for pixel in drawn[drawn[..., 3] > 0][:, :3]} == {REFERENCE_COLOURS[1]}
    assert_refused(client, store, "GET", f"/api/images/{second}/reference.png", 404, "no reference mask")
    third = images["c.png"]["id"]
    assert client.post(f"/api/images/{third}/clicks", json={"row": 20, "col": 20, "label": 1}).status_code == 200
    assert_refused(client, store, "GET", f"/api/images/{third}/reference", 400, "c_mask.png is 20×20 pixels")
    client.app.state.service.catalogue.settings.max_image_pixels = 100  # a mask declaring more is not decoded
    assert_refused(client, store, "GET", f"/api/images/{third}/reference", 400, "c_mask.png declares 20×20 pixels")


def test_the_data_folder_is_listed_first_in_natural_order_also_in_an_older_store(
    make_client: AppFactory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("x_10.png", "x_9.png"):
        (data / name).write_bytes(grey_png(seed=len(name)))
    client = make_client(data=data, use_samples=False)
    assert [image["name"] for image in client.get("/api/images").json()] == ["x_9.png", "x_10.png"]
    uploaded = client.post("/api/uploads?filename=upload.png", content=grey_png(seed=3))
    assert uploaded.status_code == 201, uploaded.text
    store = client.app.state.service.catalogue.store
    ids = {image["name"]: image["id"] for image in client.get("/api/images").json()}
    # a store made before natural order (lexicographic), then a file added to the folder after the upload
    store.list_data_folder_first([ids["x_10.png"], ids["x_9.png"]])
    assert [image["name"] for image in client.get("/api/images").json()] == ["x_10.png", "x_9.png", "upload.png"]
    (data / "x_2.png").write_bytes(grey_png(seed=5))
    client.__exit__(None, None, None)
    again = make_client(data=data, use_samples=False)
    names = [image["name"] for image in again.get("/api/images").json()]
    assert names == ["x_2.png", "x_9.png", "x_10.png", "upload.png"]
    assert again.get("/api/images/next").json()["image"]["name"] == "x_2.png"


def volume_bytes(volume: np.ndarray, affine: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(volume, affine).to_bytes())


def test_the_reference_of_a_folder_with_several_label_volumes_is_chosen_in_the_page_and_kept(
    make_client: AppFactory, tmp_path: Path
) -> None:
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    shape = (24, 24, 6)
    first, second = np.zeros(shape, dtype=np.uint8), np.zeros(shape, dtype=np.uint8)
    first[4:12, 4:12, 1:3] = 1  # two raters: slices 1-2, and 2-4
    second[8:20, 8:20, 2:5] = 1
    scan = np.random.default_rng(0).normal(100, 10, shape).astype(np.float32)
    folders = {
        "p": {"scan.nii.gz": scan, "rater1.nii.gz": first, "rater2.nii.gz": second},
        "q": {"scan.nii.gz": scan, "scan_mask.nii.gz": first, "other.nii.gz": second},  # its own X_mask wins
    }
    for folder, files in folders.items():
        (tmp_path / "data" / folder).mkdir(parents=True)
        for name, volume in files.items():
            (tmp_path / "data" / folder / name).write_bytes(volume_bytes(volume, affine))
    settings = {"data": tmp_path / "data", "use_samples": False}
    client = make_client(**settings)
    store = tmp_path / "store"
    images = {image["name"].split(" ")[0]: image for image in client.get("/api/images").json()}
    p_scan, q_scan = images["p/scan.nii.gz"]["source_id"], images["q/scan.nii.gz"]["source_id"]
    assert client.get(f"/api/sources/{p_scan}/reference/choices").json() == {
        "label_volumes": ["p/rater1.nii.gz", "p/rater2.nii.gz"],
        "reference": None,
        "own_mask": False,
    }
    assert_refused(client, store, "GET", f"/api/sources/{p_scan}/reference", 404, "the one chosen among several")
    chosen = client.put(f"/api/sources/{p_scan}/reference", json={"label_volume": "p/rater2.nii.gz"})
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["reference"] == "p/rater2.nii.gz"
    marked = client.get(f"/api/sources/{p_scan}/reference").json()
    assert marked["reference"] == "p/rater2.nii.gz" and [n > 0 for n in marked["pixels"]] == [0, 0, 1, 1, 1, 0]
    assert client.get(f"/api/images/{images['p/scan.nii.gz']['id']}").json()["has_reference"] is True
    # kept in the store: a restart uses it, and another choice replaces it
    restarted = make_client(**settings)
    assert restarted.get(f"/api/sources/{p_scan}/reference").json()["reference"] == "p/rater2.nii.gz"
    restarted.put(f"/api/sources/{p_scan}/reference", json={"label_volume": "p/rater1.nii.gz"})
    marked = restarted.get(f"/api/sources/{p_scan}/reference").json()
    assert marked["reference"] == "p/rater1.nii.gz" and [n > 0 for n in marked["pixels"]] == [0, 1, 1, 0, 0, 0]
    # refused, with the reason, nothing stored: not a label volume there; a scan with its own X_mask; an upload
    for source, label_volume, words in (
        (p_scan, "p/scan.nii.gz", "'p/scan.nii.gz' is not a label volume of p (there: p/rater1.nii.gz, p/rater2"),
        (p_scan, "q/other.nii.gz", "is not a label volume of p"),
        (q_scan, "q/other.nii.gz", "q/scan.nii.gz has its own reference mask q/scan_mask.nii.gz"),
    ):
        body = {"label_volume": label_volume}
        assert_refused(restarted, store, "PUT", f"/api/sources/{source}/reference", 400, words, json=body)
    assert restarted.get(f"/api/sources/{q_scan}/reference/choices").json() == {
        "label_volumes": ["q/other.nii.gz"],  # the folder's other label volumes (X_mask files are masks of a scan)
        "reference": "q/scan_mask.nii.gz",
        "own_mask": True,
    }
    # the page's choice outlasts a start-up option that would choose another
    with_pattern = make_client(**settings, reference_name="rater2*")
    assert with_pattern.get(f"/api/sources/{p_scan}/reference").json()["reference"] == "p/rater1.nii.gz"
    upload = restarted.post("/api/uploads?filename=vol.nii.gz", content=nifti_bytes()).json()["source"]["id"]
    assert restarted.get(f"/api/sources/{upload}/reference/choices").json()["label_volumes"] == []
    body = {"label_volume": "p/rater1.nii.gz"}
    assert_refused(restarted, store, "PUT", f"/api/sources/{upload}/reference", 400, "is an upload", json=body)


def test_label_volumes_an_older_version_listed_as_scans_leave_the_list_unless_someone_labelled_them(
    make_client: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    lesion = np.zeros((30, 30, 8), dtype=np.uint8)
    lesion[10:20, 10:20, 2:6] = 1
    scan = (np.random.default_rng(0).normal(100, 10, lesion.shape) + 150 * lesion).astype(np.float32)
    for folder in ("p1", "p2"):
        (tmp_path / "data" / folder).mkdir(parents=True)
        (tmp_path / "data" / folder / "flair.nii.gz").write_bytes(volume_bytes(scan, affine))
        (tmp_path / "data" / folder / "seg.nii.gz").write_bytes(volume_bytes(lesion, affine))
    # an older version: label volumes were scans, and nothing was remembered about them
    monkeypatch.setattr(catalogue_module, "is_label_volume", lambda _decoded: False)
    old = make_client(data=tmp_path / "data", use_samples=False)
    listed = {image["name"].split(" ")[0]: image for image in old.get("/api/images").json()}
    assert sorted(listed) == ["p1/flair.nii.gz", "p1/seg.nii.gz", "p2/flair.nii.gz", "p2/seg.nii.gz"]
    assert old.post(f"/api/images/{listed['p2/seg.nii.gz']['id']}/clicks", json=LESION_CLICK).status_code == 200
    store = old.app.state.service.catalogue.store
    with store.transaction() as connection:
        connection.execute("DELETE FROM meta WHERE key LIKE 'label-volume-check:%'")
    old.__exit__(None, None, None)
    monkeypatch.undo()

    client = make_client(data=tmp_path / "data", use_samples=False)
    images = {image["name"].split(" ")[0]: image for image in client.get("/api/images").json()}
    # p1's label volume leaves the list (its image is still stored); p2's stays: someone clicked on it
    assert sorted(images) == ["p1/flair.nii.gz", "p2/flair.nii.gz", "p2/seg.nii.gz"]
    assert images["p2/seg.nii.gz"]["status"] == "in_progress" and images["p2/seg.nii.gz"]["clicks"] == 1
    assert images["p1/flair.nii.gz"]["has_reference"] is True  # now its folder's only label volume
    assert client.get(f"/api/images/{listed['p1/seg.nii.gz']['id']}").status_code == 200  # nothing deleted
    seen = set()
    after = None
    for _ in range(4):
        following = client.get("/api/images/next", params={"after": after} if after else {}).json()["image"]
        seen.add(following["name"].split(" ")[0])
        after = following["id"]
    assert "p1/seg.nii.gz" not in seen
    assert_refused(
        client, tmp_path / "store", "POST", "/api/data/images", 400, "a label volume", json={"path": "p1/seg.nii.gz"}
    )
    # remembered: a restart does not decode the volumes again to tell
    calls = []
    monkeypatch.setattr(catalogue_module, "is_label_volume", lambda decoded: calls.append(decoded) or False)
    client.__exit__(None, None, None)
    again = make_client(data=tmp_path / "data", use_samples=False)
    assert calls == [] and sorted(image["name"].split(" ")[0] for image in again.get("/api/images").json()) == sorted(
        images
    )


def test_label_volumes_are_not_listed_and_are_the_reference_of_the_scans_beside_them(
    make_client: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # stored axes P, S, R (the page shows L, A, S slices): a reference sliced another way than the scan would not match
    affine = np.array([[0.0, 0.0, 2.0, 5.0], [-1.0, 0.0, 0.0, 3.0], [0.0, 1.0, 0.0, -7.0], [0.0, 0.0, 0.0, 1.0]])
    shape = (40, 36, 12)
    rng = np.random.default_rng(0)
    lesion = np.zeros(shape, dtype=np.uint8)
    lesion[8:22, 10:30, 3:8] = 1  # an off-centre block: every flip or transpose of it lands elsewhere
    scan = (rng.normal(100, 10, shape) + 150 * lesion).astype(np.float32)
    brain = np.zeros(shape)
    brain[2:-2, 2:-2, 1:-1] = 0.99999997
    folders = {
        # one label volume besides a brain mask (stored as floats a hair off whole numbers): the scan's reference
        "p1": {"flair.nii.gz": scan, "seg.nii.gz": lesion, "brainmask.nii.gz": brain},
        "p2": {"t1.nii.gz": scan, "a.nii.gz": lesion, "b.nii.gz": 2 * lesion},  # two: none is chosen
        "p3": {"t2.nii.gz": scan, "t2_mask.nii.gz": lesion, "other.nii.gz": lesion},  # X_mask.nii.gz wins
        "p4": {"pd.nii.gz": scan, "small.nii.gz": lesion[:, :, :6]},  # another grid: refused when asked
    }
    for folder, files in folders.items():
        (tmp_path / "data" / folder).mkdir(parents=True)
        for name, volume in files.items():
            (tmp_path / "data" / folder / name).write_bytes(volume_bytes(volume, affine))
    client = make_client(data=tmp_path / "data", use_samples=False)
    store = tmp_path / "store"
    images = {image["name"].split(" ")[0]: image for image in client.get("/api/images").json()}
    assert {name: image["has_reference"] for name, image in images.items()} == {
        "p1/flair.nii.gz": True,
        "p2/t1.nii.gz": False,
        "p3/t2.nii.gz": True,
        "p4/pd.nii.gz": True,
    }
    assert "p2 holds 2 label volumes (a.nii.gz, b.nii.gz), so none is the reference" in caplog.text
    skipped = client.app.state.service.catalogue.skipped_files
    assert sorted(line.split(":")[0] for line in skipped) == [
        "p1/brainmask.nii.gz",
        "p1/seg.nii.gz",
        "p2/a.nii.gz",
        "p2/b.nii.gz",
        "p3/other.nii.gz",
        "p3/t2_mask.nii.gz",
        "p4/small.nii.gz",
    ]
    catalogue = client.app.state.service.catalogue
    flair = images["p1/flair.nii.gz"]
    source = client.get(f"/api/sources/{flair['source_id']}").json()
    lesion_slices = []  # images of the slices through the block
    for index in range(source["num_slices"]):
        added = client.post(f"/api/sources/{flair['source_id']}/slices", json={"index": index}).json()
        relative, label = catalogue.reference_label(added["id"])
        assert relative == "p1/seg.nii.gz"
        # the reference's slice is the scan's slice, upright the same way: the block is where the scan is bright
        scan_slice = catalogue._decoded_source(catalogue.store.get_source(flair["source_id"])).reader(index)
        assert np.array_equal(label, (scan_slice > 175).astype(np.uint8))
        if label.any():
            lesion_slices.append(added["id"])
    assert len(lesion_slices) >= 2
    lesion_slice = lesion_slices[len(lesion_slices) // 2]
    rows, cols = np.nonzero(catalogue.reference_label(lesion_slice)[1])
    geometry = client.get(f"/api/images/{lesion_slice}").json()
    click = {
        "row": int(rows.mean() * geometry["height"] / label.shape[0]),
        "col": int(cols.mean() * geometry["width"] / label.shape[1]),
        "label": 1,
    }
    assert client.post(f"/api/images/{lesion_slice}/clicks", json=click).status_code == 200
    score = client.get(f"/api/images/{lesion_slice}/reference")
    assert score.status_code == 200, score.text
    exported = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{lesion_slice}/export?format=png").content)))
    reference = catalogue.reference_label(lesion_slice)[1] > 0
    mine = exported == 1
    assert exported.shape == reference.shape
    expected = 2 * (mine & reference).sum() / max(mine.sum() + reference.sum(), 1)
    assert score.json() == {"reference": "p1/seg.nii.gz", "dice": {"lesion": pytest.approx(expected)}}
    assert catalogue.reference_label(images["p3/t2.nii.gz"]["id"])[0] == "p3/t2_mask.nii.gz"
    assert catalogue.reference_label(images["p2/t1.nii.gz"]["id"]) is None
    pd = images["p4/pd.nii.gz"]["id"]
    assert client.post(f"/api/images/{pd}/clicks", json=LESION_CLICK).status_code == 200
    assert_refused(client, store, "GET", f"/api/images/{pd}/reference", 400, "does not share the voxel grid")
    # per slice, what the reference marks (the page's slice panel points to those slices)
    slices = client.get(f"/api/sources/{flair['source_id']}/reference").json()
    assert slices["reference"] == "p1/seg.nii.gz" and len(slices["pixels"]) == source["num_slices"]
    assert sum(slices["pixels"]) == lesion.sum() and sorted(set(slices["pixels"])) == [0, 14 * 5]
    # the labelled slices against the reference as one volume (a 3D overlap): first lesion_slice alone, then with a
    # second slice, finished (its final mask counts), and every other slice empty in the whole-volume Dice
    volume_score = client.get(f"/api/sources/{flair['source_id']}/reference/score").json()
    assert volume_score["labelled_slices"] == [geometry["slice_index"]]
    assert volume_score["marked_slices"] == [index for index, pixels in enumerate(slices["pixels"]) if pixels]
    assert volume_score["dice_labelled"] == {"lesion": pytest.approx(expected)}
    assert volume_score["dice_volume"] == {
        "lesion": pytest.approx(2 * (mine & reference).sum() / (mine.sum() + lesion.sum()))
    }
    second = lesion_slices[0]
    rows, cols = np.nonzero(catalogue.reference_label(second)[1])
    click = {
        "row": int(rows.mean() * geometry["height"] / label.shape[0]),
        "col": int(cols.mean() * geometry["width"] / label.shape[1]),
        "label": 1,
    }
    assert client.post(f"/api/images/{second}/clicks", json=click).status_code == 200
    assert client.post(f"/api/images/{second}/finish").status_code == 200
    second_mine = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{second}/export?format=png").content))) == 1
    second_reference = catalogue.reference_label(second)[1] > 0
    volume_score = client.get(f"/api/sources/{flair['source_id']}/reference/score").json()
    assert volume_score["labelled_slices"] == sorted(
        [geometry["slice_index"], client.get(f"/api/images/{second}").json()["slice_index"]]
    )
    overlap = (mine & reference).sum() + (second_mine & second_reference).sum()
    pooled = 2 * overlap / (mine.sum() + reference.sum() + second_mine.sum() + second_reference.sum())
    assert volume_score["dice_labelled"] == {"lesion": pytest.approx(pooled)}
    assert volume_score["dice_volume"] == {
        "lesion": pytest.approx(2 * overlap / (mine.sum() + second_mine.sum() + lesion.sum()))
    }
    assert volume_score["slices"] == source["num_slices"]
    # the volume's labelled slices in one NIfTI: the scan's grid, each slice as the slice's own NIfTI export
    exported_volume = client.get(f"/api/sources/{flair['source_id']}/export")
    assert exported_volume.status_code == 200, exported_volume.text
    assert 'filename="flair_mask.nii.gz"' in exported_volume.headers["content-disposition"]
    whole = nib.Nifti1Image.from_bytes(gzip.decompress(exported_volume.content))
    assert whole.shape == shape and np.allclose(whole.affine, affine)
    per_slice = [
        np.asarray(
            nib.Nifti1Image.from_bytes(
                gzip.decompress(client.get(f"/api/images/{image_id}/export?format=nifti").content)
            ).dataobj
        )
        for image_id in (lesion_slice, second)
    ]
    assert per_slice[0].any() and per_slice[1].any() and not (per_slice[0] & per_slice[1]).any()
    assert np.array_equal(np.asarray(whole.dataobj), per_slice[0] + per_slice[1])
    untouched_id = images["p3/t2.nii.gz"]["source_id"]
    assert_refused(client, store, "GET", f"/api/sources/{untouched_id}/export", 404, "no slice of p3/t2.nii.gz has")
    t1 = images["p2/t1.nii.gz"]["source_id"]
    assert_refused(client, store, "GET", f"/api/sources/{t1}/reference", 404, "has no reference mask")
    assert_refused(client, store, "GET", f"/api/sources/{t1}/reference/score", 404, "has no reference mask")
    untouched = client.get(f"/api/sources/{images['p3/t2.nii.gz']['source_id']}/reference/score").json()
    assert (untouched["labelled_slices"], untouched["dice_labelled"], untouched["dice_volume"]) == (
        [],
        None,
        {"lesion": 0.0},
    )
    pd_source = images["p4/pd.nii.gz"]["source_id"]
    assert_refused(client, store, "GET", f"/api/sources/{pd_source}/reference", 400, "does not share the voxel grid")
    assert_refused(
        client, store, "GET", f"/api/sources/{pd_source}/reference/score", 400, "does not share the voxel grid"
    )
    # MONAI Label (3D Slicer) lists the scans only, each with its reference mask as a read-only label tagged reference
    objects = client.get("/datastore/?output=all").json()["objects"]
    listed = {
        entry["image"]["info"]["name"]: (image_id, sorted(entry["labels"])) for image_id, entry in objects.items()
    }
    assert {name: tags for name, (_id, tags) in listed.items()} == {
        "p1/flair.nii.gz": ["reference", "web"],  # web: the slices labelled in the page, see below
        "p2/t1.nii.gz": [],
        "p3/t2.nii.gz": ["reference"],
        "p4/pd.nii.gz": ["reference", "web"],  # the reference served as it is: a viewer places it by its own affine
    }
    flair_ml = listed["p1/flair.nii.gz"][0]
    download = client.get("/datastore/label", params={"label": flair_ml, "tag": "reference"})
    assert download.status_code == 200
    assert download.content == (tmp_path / "data" / "p1" / "seg.nii.gz").read_bytes()
    assert f'filename="{flair_ml}_reference.nii.gz"' in download.headers["content-disposition"]
    t2_ml = listed["p3/t2.nii.gz"][0]
    t2_reference = client.get("/datastore/label", params={"label": t2_ml, "tag": "reference"}).content
    assert t2_reference == (tmp_path / "data" / "p3" / "t2_mask.nii.gz").read_bytes()
    # what the page labelled of the scan, for Slicer: its labelled slices in one volume (tag web, read-only)
    assert flair_ml == flair["source_id"]  # a data-folder volume has one id in both
    web = client.get("/datastore/label", params={"label": flair_ml, "tag": "web"})
    assert web.status_code == 200, web.text
    web_volume = nib.Nifti1Image.from_bytes(gzip.decompress(web.content))
    assert np.allclose(web_volume.affine, affine)
    assert np.array_equal(np.asarray(web_volume.dataobj), np.asarray(whole.dataobj))
    assert f'filename="{flair_ml}_web.nii.gz"' in web.headers["content-disposition"]
    assert not list(store.rglob(f"{flair_ml}*"))  # made when asked for: a GET writes nothing
    missing = (
        ("reference", listed["p2/t1.nii.gz"][0], "has no 'reference' label"),
        ("web", t2_ml, "no slice of it was labelled in the web page"),
    )
    for tag, image_id, words in missing:  # absent: named; both tags read-only
        assert_refused(client, store, "GET", "/datastore/label", 404, words, params={"label": image_id, "tag": tag})
        label_file = {"label": ("seg.nii.gz", volume_bytes(lesion, affine))}
        refused = client.put("/datastore/label", params={"image": flair_ml, "tag": tag}, files=label_file)
        assert refused.status_code == 400 and "read-only" in refused.json()["detail"]
    assert client.get("/datastore/label", params={"label": flair_ml, "tag": "reference"}).content == download.content
    # a 2D picture has no slices to export or score together; an unknown source is named
    picture = client.post("/api/uploads?filename=slice.png", content=grey_png(seed=4)).json()["source"]["id"]
    for route in ("export", "reference/score"):
        assert_refused(client, store, "GET", f"/api/sources/{picture}/{route}", 400, "slice.png is a 2D image")
        assert_refused(client, store, "GET", f"/api/sources/nope/{route}", 404, "nope")
    # --reference-name chooses among several label volumes; folders where it matches none keep the default rule
    chosen = make_client(data=tmp_path / "data", use_samples=False, store=tmp_path / "store2", reference_name="b.nii*")
    chosen_images = {image["name"].split(" ")[0]: image["id"] for image in chosen.get("/api/images").json()}
    chosen_catalogue = chosen.app.state.service.catalogue
    assert chosen_catalogue.reference_label(chosen_images["p2/t1.nii.gz"])[0] == "p2/b.nii.gz"
    assert chosen_catalogue.reference_label(chosen_images["p1/flair.nii.gz"])[0] == "p1/seg.nii.gz"
    # asked for by path, a label volume is refused with the reason
    assert_refused(client, store, "POST", "/api/data/images", 400, "a label volume", json={"path": "p2/a.nii.gz"})
