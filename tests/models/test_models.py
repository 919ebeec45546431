"""Networks and self-describing, checksummed checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clickadapt.models.checkpoint import CheckpointError, CheckpointMeta, load_checkpoint, save_checkpoint
from clickadapt.models.factory import ModelConfig, build_model, count_parameters
from clickadapt.models.resized import ResizedInputNetwork
from clickadapt.models.unet import REFERENCE_WIDTHS, InstanceNorm, ReferenceUNet
from clickadapt.tasks import BRAIN, FUNDUS


def test_reference_widths_give_the_papers_parameter_count() -> None:
    model = ReferenceUNet(FUNDUS.input_channels, FUNDUS.num_classes, REFERENCE_WIDTHS)
    assert 9.6e6 < count_parameters(model) < 10.0e6  # method.md §3: about 9.8 M


@pytest.mark.parametrize("size", [(32, 32), (37, 50)])
def test_unet_keeps_spatial_size_even_when_not_a_multiple_of_the_levels(size: tuple[int, int]) -> None:
    model = ReferenceUNet(3, 2, widths=[4, 8, 16, 32])
    logits = model(torch.randn(2, 3, *size))
    assert logits.shape == (2, 2, *size)


@pytest.mark.parametrize("affine", [False, True])
def test_group_norm_instance_norm_matches_torch_instance_norm(affine: bool) -> None:
    torch.manual_seed(0)
    ours, theirs = InstanceNorm(5, affine=affine), torch.nn.InstanceNorm2d(5, affine=affine)
    if affine:
        with torch.no_grad():
            theirs.weight.normal_()
            theirs.bias.normal_()
    ours.load_state_dict(theirs.state_dict())  # same keys, so old checkpoints load unchanged
    x = torch.randn(3, 5, 9, 11) * 4 + 2
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours(x.contiguous(memory_format=torch.channels_last)), theirs(x), atol=1e-5, rtol=1e-5)


def test_unet_gives_the_same_logits_with_and_without_autograd() -> None:
    torch.manual_seed(0)
    model = ReferenceUNet(3, 2, widths=[4, 8, 16]).eval()
    x = torch.randn(1, 3, 40, 36)
    with torch.inference_mode():
        fast = model(x)  # channels-last path
    assert fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, model(x).detach(), atol=1e-5, rtol=1e-5)


def test_affine_norm_adds_only_normalisation_parameters() -> None:
    plain = ReferenceUNet(3, 2, widths=[4, 8])
    affine = ReferenceUNet(3, 2, widths=[4, 8], affine_norm=True)
    norm_parameters = sum(
        m.weight.numel() + m.bias.numel() for m in affine.modules() if isinstance(m, torch.nn.InstanceNorm2d)
    )
    assert count_parameters(affine) - count_parameters(plain) == norm_parameters > 0


def test_monai_network_by_name_and_unknown_name() -> None:
    model = build_model(ModelConfig(name="BasicUNet", arguments={"features": (4, 4, 8, 8, 16, 4)}), 5, 3)
    assert model(torch.randn(1, 5, 32, 32)).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="NoSuchNet"):
        build_model(ModelConfig(name="NoSuchNet"), 5, 3)


def tiny_checkpoint(path: Path) -> tuple[torch.nn.Module, str]:
    config = ModelConfig(widths=[4, 8], affine_norm=True)
    model = build_model(config, BRAIN.input_channels, BRAIN.num_classes)
    meta = CheckpointMeta(task="brain", model=config, preprocessing={"size": 32}, metrics={"dice@5/lesion": 0.5})
    return model, save_checkpoint(path, model, meta)


def test_checkpoint_rebuilds_the_same_model_from_the_file_alone(tmp_path: Path) -> None:
    model, digest = tiny_checkpoint(tmp_path / "m.pt")
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.sha256 == digest and loaded.task is BRAIN
    assert loaded.meta.metrics == {"dice@5/lesion": 0.5} and loaded.meta.preprocessing.size == 32
    x = torch.randn(1, BRAIN.input_channels, 32, 32)
    model.eval()
    assert torch.equal(model(x), loaded.model(x))
    assert not loaded.model.training
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


def test_corrupted_checkpoint_is_refused_by_checksum(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    tiny_checkpoint(path)
    payload = bytearray(path.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    path.write_bytes(bytes(payload))
    with pytest.raises(CheckpointError, match=r"m\.pt"):
        load_checkpoint(path)


def test_truncated_and_missing_checkpoints_are_refused_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    tiny_checkpoint(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"t\.pt.*unreadable"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_resized_input_network_runs_small_and_answers_at_the_input_size() -> None:
    torch.manual_seed(0)
    config = ModelConfig(widths=[4, 8, 16], affine_norm=True, input_size=32)
    model = build_model(config, BRAIN.input_channels, BRAIN.num_classes)
    assert isinstance(model, ResizedInputNetwork)
    seen: list[tuple[int, ...]] = []
    model.network.register_forward_hook(lambda _m, inputs, _o: seen.append(tuple(inputs[0].shape)))
    logits = model(torch.randn(2, BRAIN.input_channels, 64, 48))
    assert logits.shape == (2, BRAIN.num_classes, 64, 48)
    assert seen == [(2, BRAIN.input_channels, 32, 24)]  # longer side to 32, aspect kept
    same = torch.randn(1, BRAIN.input_channels, 32, 32)
    torch.testing.assert_close(model(same), model.network(same))  # already the network's size: untouched


def test_resized_input_network_passes_gradients_and_upsamples_logits_smoothly() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(widths=[4, 8], input_size=16), BRAIN.input_channels, BRAIN.num_classes)
    inputs = torch.randn(1, BRAIN.input_channels, 64, 64)
    logits = model(inputs)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # Bilinear logits: inside each 4×4 block of the 16-px grid the values vary (nearest would repeat them).
    block = logits[0, 0, 4:8, 4:8].detach()
    assert torch.unique(block).numel() > 4


def test_resized_model_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    config = ModelConfig(widths=[4, 8], affine_norm=True, input_size=16)
    model = build_model(config, BRAIN.input_channels, BRAIN.num_classes)
    save_checkpoint(tmp_path / "m.pt", model, CheckpointMeta(task="brain", model=config))
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.meta.model.input_size == 16
    inputs = torch.randn(1, BRAIN.input_channels, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(inputs), model.eval()(inputs))


def test_input_size_below_eight_pixels_is_refused() -> None:
    with pytest.raises(ValueError, match="input_size"):
        ModelConfig(input_size=4)


def test_checkpoint_preprocessing_is_typed_and_reads_old_and_shipped_forms() -> None:
    from clickadapt.models.checkpoint import CheckpointPreprocessing, read_checkpoint_meta
    from clickadapt.paths import shipped_model_path

    old = CheckpointMeta.model_validate({"task": "brain", "model": {}, "preprocessing": {}})
    assert old.preprocessing.click_sigma == 5.0 and old.preprocessing.image_size("brain") == 256
    assert old.preprocessing.image_size("fundus") == 512
    partial = CheckpointPreprocessing.model_validate({"size": 128, "click_sigma": None, "reader": "lgg", "x": 1})
    assert partial.size == 128 and partial.click_sigma == 5.0 and partial.model_dump()["x"] == 1  # kept as is
    with pytest.raises(ValueError, match="click_sigma"):
        CheckpointPreprocessing.model_validate({"click_sigma": -1})
    for task in ("brain", "fundus"):
        if shipped_model_path(task).is_file():
            meta, _, _ = read_checkpoint_meta(shipped_model_path(task))
            assert meta.preprocessing.size is not None and meta.preprocessing.click_sigma > 0
