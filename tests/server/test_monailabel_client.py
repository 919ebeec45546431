"""The MONAI Label-compatible endpoints driven by MONAI Label's own client against a real `clickadapt serve`.

``monailabel.client.MONAILabelClient`` is what 3D Slicer's MONAILabel module carries (in near-identical form);
the servers run on loopback in subprocesses and are stopped at the end of the module.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pytest
from monailabel.client.client import MONAILabelClient, MONAILabelClientException  # make test installs it
from PIL import Image
from server_helpers import ServerProcess
from tests.volumes.volume_testing import write_oblique_volume

from clickadapt.data.prepare import Geometry, mask_to_source, source_to_model_point
from clickadapt.volumes import VolumeOrientation

pytestmark = pytest.mark.slow
TOKEN = "monai-label-token-0123"
GRID = 48  # the tiny checkpoint's input size


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two oblique, non-RAS (S, P, L) test volumes and the first one's lesion label."""
    folder = tmp_path_factory.mktemp("volumes")
    (folder / "a").mkdir()
    (folder / "b").mkdir()
    first, lesion = write_oblique_volume(folder / "a")
    second, _ = write_oblique_volume(folder / "b", seed=1)
    return {"first": first, "lesion": lesion, "second": second}


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server without a token (loopback), adapting with OAIMS."""
    store = tmp_path_factory.mktemp("store")
    process = ServerProcess(["--model", str(tiny_checkpoint), "--store", str(store), "--strategy", "oaims"])
    url = process.start().rstrip("/")
    try:
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(server: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return MONAILabelClient(server, tmpdir=str(tmp_path_factory.mktemp("client")), client_id="slicer-test")


def read_label(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(path))
    return np.asarray(image.dataobj), np.asarray(image.affine)


def stored_mask(server: str, image_id: str, tag: str) -> np.ndarray:
    response = httpx.get(f"{server}/api/images/{image_id}/mask.png", params={"tag": tag}, timeout=60)
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_info_lists_2d_and_3d_click_models_and_no_login(client: Any) -> None:
    info = client.info()
    assert "config" not in info
    assert {name: model["dimension"] for name, model in info["models"].items()} == {
        "clickadapt_2d": 2,
        "clickadapt_3d": 3,
    }
    assert info["models"]["clickadapt_2d"]["labels"] == {"lesion": 1}
    assert client.auth_enabled() is False


def test_upload_list_download_and_label_round_trip_is_voxel_exact(
    client: Any, server: str, volumes: dict[str, Path], tmp_path: Path
) -> None:
    assert client.upload_image(str(volumes["first"]), "case1") == {"image": "case1"}
    objects = client.datastore()["objects"]
    assert objects["case1"]["image"]["ext"] == ".nii.gz" and objects["case1"]["labels"] == {}
    download = httpx.get(f"{server}/datastore/image", params={"image": "case1"}, timeout=60)
    assert download.content == volumes["first"].read_bytes()

    client.save_label("case1", str(volumes["lesion"]), tag="review")  # any tag is kept as a file
    path = client.download_label("case1", "review")
    label, affine = read_label(path)
    expected, expected_affine = read_label(volumes["lesion"])
    assert label.shape == (24, 36, 40) and np.array_equal(label, expected)
    assert np.array_equal(affine, expected_affine)
    with pytest.raises(MONAILabelClientException):
        client.download_label("case1", "final")  # nothing saved under that tag yet


def test_2d_infer_fills_only_the_clicked_slice_on_the_clicked_voxels(
    client: Any, server: str, volumes: dict[str, Path]
) -> None:
    k = 20
    voxel = [12, 18, k]
    path, params = client.infer("clickadapt_2d", "case1", {"foreground": [voxel], "background": [], "slice": k})
    label, affine = read_label(path)
    _image, image_affine = read_label(volumes["first"])
    assert label.shape == (24, 36, 40) and np.array_equal(affine, image_affine)
    outside = np.delete(label, k, axis=2)
    assert label[:, :, k].any() and not outside.any()
    assert params["label_names"] == {"lesion": 1} and params["new_clicks"] == 1

    # The slice became an image of our datastore: its click is the clicked voxel on the model grid, and the
    # model's mask there (the `original` mask) is exactly slice k of the answer.
    image_id = f"ml-case1-a2-s{k}"
    volume = nib.load(str(volumes["first"]))
    orientation = VolumeOrientation(volume.shape, volume.affine)
    point = orientation.voxel_to_view(voxel, axis=2)
    geometry = Geometry(kind="pad-crop", source_shape=orientation.slice_shape(2), size=GRID)
    clicks = httpx.get(f"{server}/api/images/{image_id}/session", timeout=60).json()["clicks"]
    assert [(click["row"], click["col"], click["label"]) for click in clicks] == [
        (*source_to_model_point(point.row, point.col, geometry), 1)
    ]
    original = stored_mask(server, image_id, "original")
    assert np.array_equal(mask_to_source(original, geometry), orientation.slice_view(label, 2, k))


def test_3d_infer_adapts_per_click_and_saving_runs_the_after_image_update(
    client: Any, server: str, volumes: dict[str, Path]
) -> None:
    version_start = client.train_status()["result"]["model_version"]
    foreground = [[12, 18, 20]]
    _path, first = client.infer("clickadapt_3d", "case1", {"foreground": foreground, "background": []})
    assert first["new_clicks"] == 0  # the same point as the 2D click: nothing new, no update
    versions = [first["model_version"]]
    for voxel in ([12, 16, 20], [10, 20, 20]):
        foreground.append(voxel)
        path, params = client.infer("clickadapt_3d", "case1", {"foreground": foreground, "background": [[1, 1, 20]]})
        assert params["new_clicks"] >= 1
        versions.append(params["model_version"])
    assert versions[-1] > version_start  # Mid-Interaction updates, visible in the answers…
    assert client.train_status()["result"]["model_version"] == versions[-1]  # …and in /train/
    label, _affine = read_label(path)
    assert label.shape == (24, 36, 40)
    assert client.datastore()["objects"]["case1"]["labels"].keys() >= {"original", "review"}

    saved = client.save_label("case1", str(volumes["lesion"]), tag="final")
    assert saved["updated"] is True and saved["model_version"] > versions[-1]  # Post-Interaction update
    assert saved["finished_slices"] == 1
    final, _ = read_label(client.download_label("case1", "final"))
    assert np.array_equal(final, read_label(volumes["lesion"])[0])
    images = {image["id"]: image for image in httpx.get(f"{server}/api/images", timeout=60).json()}
    assert images["ml-case1-a2-s20"]["status"] == "done"
    expected_final = VolumeOrientation(final.shape, read_label(volumes["lesion"])[1]).slice_view(final, 2, 20)
    geometry = Geometry(kind="pad-crop", source_shape=expected_final.shape, size=GRID)
    assert np.array_equal(mask_to_source(stored_mask(server, "ml-case1-a2-s20", "final"), geometry), expected_final)
    trained = client.train_start("clickadapt", {})
    assert trained["status"] == "DONE" and trained["result"]["model_version"] == saved["model_version"]
    assert client.train_status(check_if_running=True) is False
    assert client.train_stop()["status"] == "DONE"


def test_next_sample_skips_finished_images(client: Any, volumes: dict[str, Path]) -> None:
    client.upload_image(str(volumes["second"]), "case2")
    sample = client.next_sample("first", {})
    assert sample["id"] == "case2" and sample["name"] == "case2.nii.gz" and Path(sample["path"]).is_file()
    client.save_label("case2", str(volumes["lesion"]), tag="final")
    assert client.next_sample("random", {}) == {}


def test_session_volumes_infer_and_go_away(client: Any, volumes: dict[str, Path]) -> None:
    created = client.create_session(str(volumes["second"]))
    session_id = created["session_id"]
    assert client.get_session(session_id)["name"] == session_id
    path, params = client.infer(
        "clickadapt_2d", "ignored", {"foreground": [[12, 18, 21]], "slice": 21}, session_id=session_id
    )
    label, affine = read_label(path)
    assert label.shape == (24, 36, 40) and np.array_equal(affine, read_label(volumes["second"])[1])
    assert params["new_clicks"] == 1
    client.remove_session(session_id)
    with pytest.raises(MONAILabelClientException):
        client.get_session(session_id)


def test_guards_hold_on_these_routes(server: str, volumes: dict[str, Path]) -> None:
    files = {"file": ("x.nii.gz", volumes["second"].read_bytes())}
    refused = httpx.put(f"{server}/datastore/?image=evil", files=files, headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403  # another site's page cannot upload
    rebinding = httpx.get(f"{server}/info/", headers={"Host": "attacker.example"})
    assert rebinding.status_code == 403
    bad = httpx.post(
        f"{server}/infer/clickadapt_2d?image=case2", data={"params": json.dumps({"foreground": [[99, 0, 0]]})}
    )
    assert bad.status_code == 400 and "outside" in bad.json()["detail"]
    flat = httpx.put(
        f"{server}/datastore/?image=flat", files={"file": ("flat.png", b"\x89PNG...")}, data={"params": "{}"}
    )
    assert flat.status_code == 400 and "web page" in flat.json()["detail"]


def test_token_mode_login_and_upload_limit(tiny_checkpoint: Path, tmp_path: Path, volumes: dict[str, Path]) -> None:
    arguments = ["--model", str(tiny_checkpoint), "--store", str(tmp_path / "store"), "--token", TOKEN]
    process = ServerProcess([*arguments, "--max-upload-mb", "0.05"])
    url = process.start().split("?")[0].rstrip("/")
    try:
        client = MONAILabelClient(url, tmpdir=str(tmp_path))
        assert client.auth_enabled() is True
        with pytest.raises(MONAILabelClientException):
            client.info()  # 401 without the token
        with pytest.raises(MONAILabelClientException):
            client.auth_token("radiologist", "wrong-password")
        client.update_auth(client.auth_token("radiologist", TOKEN))
        assert client.auth_valid_token() is True
        assert "clickadapt_2d" in client.info()["models"]
        small = client.upload_image(str(volumes["lesion"]), "small")  # a gzipped label: a few kB
        assert small == {"image": "small"}
        big = tmp_path / "big.nii"
        nib.save(nib.Nifti1Image(np.zeros((40, 40, 40), np.float32), np.eye(4)), big)  # 256 kB
        with pytest.raises(MONAILabelClientException, match="413"):
            client.upload_image(str(big), "big")
        with pytest.raises(MONAILabelClientException, match="413"):
            client.save_label("small", str(big), tag="final")
    finally:
        process.stop()
