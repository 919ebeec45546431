"""Bad input over the public Python API, the command line and the upload path.

Every refusal must be a clear exception (or exit status 2 / HTTP 4xx) whose message names what is wrong,
and must leave what is stored untouched: the open image, its clicks and predictions, the model's weights
and version, the server's store.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.safety import SafetyConfig
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.adaptation.strategies import make_strategy
from clickadapt.cli import main
from clickadapt.clicks.click import Click
from clickadapt.clicks.simulators import OaimsUser, make_simulated_user
from clickadapt.data.preprocess import preprocess_brain_slice, preprocess_fundus_image, rgb_to_unit_float
from clickadapt.evaluation.metrics import dice, dice_auc, region_dice
from clickadapt.losses.click_gaussian import ClickCenteredGaussianLoss
from clickadapt.losses.combined import SegmentationLoss
from clickadapt.losses.dice_focal import DiceFocalLoss
from clickadapt.models.checkpoint import CheckpointMeta, save_checkpoint
from clickadapt.models.factory import ModelConfig
from clickadapt.models.unet import ReferenceUNet
from clickadapt.tasks import BRAIN, FUNDUS, TaskSpec, get_task

SIZE = 32


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_session(task: TaskSpec = BRAIN, strategy: str = "mid") -> InteractiveSession:
    torch.manual_seed(0)
    network = ReferenceUNet(task.input_channels, task.num_classes, [4, 8], affine_norm=True)
    return InteractiveSession(ModelState(network, task, make_strategy(strategy, task)), undo_depth=2)


def disk(channels: int = 1) -> np.ndarray:
    rows, cols = np.mgrid[:SIZE, :SIZE]
    image = ((rows - 16) ** 2 + (cols - 16) ** 2 <= 36).astype(np.float32)
    return np.repeat(image[None], channels, axis=0)


def session_state(session: InteractiveSession) -> tuple[Any, ...]:
    """Everything a refused call must leave unchanged."""
    weights = tuple(tensor.clone() for tensor in session.state.model.state_dict().values())
    predictions = tuple(p.copy() for p in session.predictions)
    return session.image_id, session.clicks, predictions, session.state.version, weights


def assert_same(before: tuple[Any, ...], after: tuple[Any, ...]) -> None:
    assert before[:2] == after[:2] and before[3] == after[3]
    assert all(np.array_equal(a, b) for a, b in zip(before[2], after[2], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before[4], after[4], strict=True))


@pytest.fixture
def busy_session() -> InteractiveSession:
    """A brain session with an open image and two clicks (one weight update)."""
    session = tiny_session()
    session.set_image(disk(), image_id="open-image")
    session.add_click(Click(16, 16, 1))
    session.add_click(Click(2, 2, 0))
    return session


# ------------------------------------------------------------------------------------------ images


@pytest.mark.parametrize(
    ("image", "words"),
    [
        (np.zeros((SIZE, SIZE), np.float32), r"shape \(C, H, W\), got shape \(32, 32\)"),
        (np.zeros((1, 1, SIZE, SIZE), np.float32), r"shape \(C, H, W\), got shape \(1, 1, 32, 32\)"),
        (np.zeros((3, SIZE, SIZE), np.float32), r"3 channels, task 'brain' expects 1"),
        (np.zeros((1, 4, 4), np.float32), r"4×4 pixels; at least 8×8"),
        (np.full((1, SIZE, SIZE), np.nan, np.float32), "contains NaN or infinite values"),
        (np.full((1, SIZE, SIZE), np.inf, np.float32), "contains NaN or infinite values"),
        (np.zeros((1, SIZE, SIZE), np.complex64), "real numbers, got dtype complex64"),
        ([[[0.0] * SIZE] * SIZE], "numpy array"),
    ],
)
def test_bad_images_are_refused_and_the_open_image_is_kept(
    busy_session: InteractiveSession, image: Any, words: str
) -> None:
    before = session_state(busy_session)
    with pytest.raises(ValueError, match=words):
        busy_session.set_image(image, image_id="bad")
    assert_same(before, session_state(busy_session))
    busy_session.add_click(Click(16, 20, 1))  # the open image still works


def test_single_channel_image_where_rgb_is_expected() -> None:
    session = tiny_session(FUNDUS)
    with pytest.raises(ValueError, match=r"1 channels, task 'fundus' expects 3 \(shape \(1, 32, 32\)"):
        session.set_image(disk(1))
    # Through the preprocessing, a grey picture becomes an RGB one with equal channels (documented behaviour).
    grey = (disk(1)[0] * 200).astype(np.uint8)
    np.testing.assert_array_equal(rgb_to_unit_float(grey), rgb_to_unit_float(np.stack([grey] * 3, axis=-1)))


def test_16_bit_images_are_scaled_by_their_range_not_misread() -> None:
    rng = np.random.default_rng(0)
    rgb8 = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    rgb16 = rgb8.astype(np.uint16) * 257  # the same picture at 16 bits: 255 → 65535
    np.testing.assert_allclose(preprocess_fundus_image(rgb16, 32), preprocess_fundus_image(rgb8, 32), atol=1e-4)
    with pytest.raises(ValueError, match=r"float RGB image must lie in \[0, 1\], got range \[0, 6.55e\+04\]"):
        rgb_to_unit_float(rgb16.astype(np.float32))
    slice16 = (rng.random((40, 40)) * 60000).astype(np.uint16)
    normalised = preprocess_brain_slice(slice16, None, 32)
    assert normalised.shape == (1, 32, 32) and normalised.dtype == np.float32 and np.isfinite(normalised).all()
    with pytest.raises(ValueError, match=r"expected a 2D slice \(H, W\), got shape \(3, 40, 40\)"):
        preprocess_brain_slice(np.zeros((3, 40, 40), np.uint16), None, 32)


# ------------------------------------------------------------------------------------------ clicks and classes


@pytest.mark.parametrize(
    ("click", "words"),
    [
        (Click(-1, 5, 1), r"click row -1 is outside the image \(height 32\)"),
        (Click(32, 5, 1), r"click row 32 is outside the image \(height 32\)"),
        (Click(5, 40, 0), r"click col 40 is outside the image \(width 32\)"),
        (Click(5, 5, 2), r"click label 2 is not a class index \(0..1\)"),
        (Click(5, 5, -1), r"click label -1 is not a class index"),
        ((5, 5, 1), "click must be a Click"),
    ],
)
def test_bad_clicks_are_refused_without_any_change(busy_session: InteractiveSession, click: Any, words: str) -> None:
    before = session_state(busy_session)
    with pytest.raises(ValueError, match=words):
        busy_session.add_click(click)
    assert_same(before, session_state(busy_session))


def test_unknown_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown class 'vessel' for task 'brain'; known: \['background', 'lesion'\]"):
        BRAIN.class_index("vessel")
    with pytest.raises(ValueError, match="liver"):
        get_task("liver")
    with pytest.raises(ValueError, match=r"unknown adaptation strategy 'magic'; known: \['frozen'"):
        make_strategy("magic", BRAIN)
    with pytest.raises(ValueError, match=r"(?s)invalid settings for strategy 'oaims'.*learning_rate"):
        make_strategy("oaims", BRAIN, learning_rate=1.0)
    with pytest.raises(ValueError, match="unknown simulated user 'robot'"):
        make_simulated_user("robot", 0)
    with pytest.raises(ValueError, match="window"):
        SafetyConfig(window=1)
    with pytest.raises(ValueError, match="guard_rail"):
        SafetyConfig.model_validate({"guard_rail": True})


# ------------------------------------------------------------------------------------------ empty masks


def test_empty_masks_in_metrics_and_the_simulated_user() -> None:
    empty = np.zeros((8, 8), np.int64)
    full = np.ones((8, 8), np.int64)
    assert dice(empty, empty, (1,)) == 1.0  # nothing to find, nothing found
    assert dice(empty, full, (1,)) == 0.0 and dice(full, empty, (1,)) == 0.0
    assert region_dice(empty, empty, FUNDUS) == {"disc": 1.0, "cup": 1.0}
    with pytest.raises(ValueError, match="classes must name at least one label index"):
        dice(empty, full, ())
    with pytest.raises(ValueError, match=r"prediction shape \(8, 8\) differs from label shape \(4, 4\)"):
        dice(empty, np.zeros((4, 4), np.int64), (1,))
    with pytest.raises(ValueError, match="the Dice curve is empty"):
        dice_auc([])
    with pytest.raises(ValueError, match="foreground"):
        OaimsUser(0).first_click(empty)


def test_losses_on_empty_targets_are_finite_with_finite_gradients() -> None:
    logits = torch.randn(1, 3, 16, 16, requires_grad=True)
    empty = torch.zeros(1, 16, 16, dtype=torch.int64)
    for loss in (
        DiceFocalLoss()(logits, empty),
        ClickCenteredGaussianLoss()(logits, empty, [[]]),
        SegmentationLoss()(logits, empty, [[Click(3, 3, 0)]]),
    ):
        (gradient,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and torch.isfinite(gradient).all()
    assert ClickCenteredGaussianLoss()(logits, empty, [[]]).item() == 0.0


def test_losses_name_wrong_shapes_and_types() -> None:
    logits = torch.randn(1, 2, 16, 16)
    with pytest.raises(ValueError, match=r"logits must be \(B, K, H, W\), got shape \(2, 16, 16\)"):
        DiceFocalLoss()(logits[0], torch.zeros(1, 16, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"target must be \(B, H, W\) matching logits"):
        DiceFocalLoss()(logits, torch.zeros(1, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"integer class indices, got dtype torch\.float32"):
        DiceFocalLoss()(logits, torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="got 2 click lists for a batch of 1"):
        ClickCenteredGaussianLoss()(logits, torch.zeros(1, 16, 16, dtype=torch.int64), [[], []])


# ------------------------------------------------------------------------------------------ command line


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(argv)
    return status, capsys.readouterr().err


def test_train_with_a_missing_or_invalid_config_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = run_cli(["train", str(tmp_path / "nope.yaml")], capsys)
    assert status == 2 and "training config" in err and "nope.yaml does not exist" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: brain\nmodel: [unclosed\n")
    status, err = run_cli(["train", str(broken)], capsys)
    assert status == 2 and "broken.yaml is not valid YAML" in err
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("task: brain\nepochz: 3\n")
    status, err = run_cli(["train", str(invalid)], capsys)
    assert status == 2 and "invalid.yaml is invalid" in err and "epochz" in err
    valid = tmp_path / "valid.yaml"
    valid.write_text("task: fundus\ntrain_data: [{reader: rimone-dl, split: train, domains: [r2], limit: 1}]\n")
    status, err = run_cli(["train", str(valid), "--device", "cuda", "--output", str(tmp_path / "run")], capsys)
    if not torch.cuda.is_available():  # refused before any data is read or anything written
        assert status == 2 and "device 'cuda' asked for" in err and "--device cpu" in err
        assert not (tmp_path / "run").exists()


def test_evaluate_with_a_bad_config_exits_2_naming_the_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = run_cli(["evaluate", str(tmp_path / "absent.yaml")], capsys)
    assert status == 2 and "absent.yaml does not exist" in err
    bad = tmp_path / "bad_eval.yaml"
    bad.write_text("model: brain\nstream: {reader: brats}\nstrategies: [frozen, telepathy]\nbudget: 0\n")
    status, err = run_cli(["evaluate", str(bad)], capsys)
    assert status == 2 and "bad_eval.yaml" in err
    assert "telepathy" in err and "budget" in err
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- a\n- b\n")
    status, err = run_cli(["evaluate", str(not_mapping)], capsys)
    assert status == 2 and "list.yaml: expected a mapping" in err


# ------------------------------------------------------------------------------------------ server uploads


def png_claiming_size(width: int, height: int) -> bytes:
    """A valid-looking grey PNG whose header claims ``width × height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def png(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TestClient]:
    from clickadapt.server.app import create_app
    from clickadapt.server.settings import ServerSettings

    torch.manual_seed(0)
    network = ReferenceUNet(BRAIN.input_channels, BRAIN.num_classes, [4, 8], affine_norm=True)
    config = ModelConfig(widths=[4, 8], affine_norm=True)
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, network, CheckpointMeta(task="brain", model=config, preprocessing={"size": 48}))
    app = create_app(ServerSettings(store=tmp_path / "store", model=str(checkpoint)), samples=[])
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        yield client


def test_corrupt_truncated_and_huge_uploads_never_take_the_server_down(server: TestClient) -> None:
    good = png((disk(1)[0] * 200).astype(np.uint8))
    bad_payloads = {
        "truncated.png": good[: len(good) // 2],
        "garbage.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        "bomb.png": png_claiming_size(40_000, 40_000),  # 1.6 G pixels claimed in a few bytes
        "truncated.nii.gz": b"\x1f\x8b\x08\x00" + b"\x00" * 50,
    }
    images_before = server.get("/api/images").json()
    for name, payload in bad_payloads.items():
        answer = server.post(f"/api/uploads?filename={name}", content=payload)
        assert answer.status_code == 400, (name, answer.text)
        detail = answer.json()["detail"]
        assert name in detail and "cannot decode" in detail
        if name == "bomb.png":
            assert "1600000000 pixels) exceeds limit" in detail  # Pillow's decompression-bomb check
        assert server.get("/api/health").json() == {"status": "ok"}  # still answering
    assert server.get("/api/images").json() == images_before  # nothing stored
    answer = server.post("/api/uploads?filename=fine.png", content=good)
    assert answer.status_code == 201, answer.text
