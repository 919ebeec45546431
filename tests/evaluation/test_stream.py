"""The prequential stream runner on tiny synthetic brain samples with a tiny network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from clickadapt.data.sample import Sample
from clickadapt.evaluation.stream import (
    ImageRecord,
    StreamResult,
    evaluate_frozen,
    image_click_seed,
    mean_curves,
    run_stream,
    seeded_overrides,
    stream_order,
)
from clickadapt.models.unet import ReferenceUNet
from clickadapt.tasks import BRAIN, FUNDUS

SIZE = 32


def synthetic_sample(index: int, size: int = SIZE, empty: bool = False) -> Sample:
    """A brain-like sample: a bright square lesion whose place and size depend on ``index``."""
    rng = np.random.default_rng(index)
    label = np.zeros((size, size), dtype=np.int64)
    if not empty:
        side = 6 + 3 * index
        top, left = 4 + index, 20 - 2 * index
        label[top : top + side, left : left + side] = 1
    image = (label.astype(np.float32) * 2.0 - 1.0 + 0.3 * rng.standard_normal((size, size)).astype(np.float32))[None]
    return Sample(
        image=image,
        label=label,
        task="brain",
        dataset="synthetic",
        domain="T1c",
        patient=f"p{index}",
        slice_index=None,
        source="memory",
    )


@pytest.fixture()
def samples() -> list[Sample]:
    return [synthetic_sample(index) for index in range(3)]


@pytest.fixture()
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return ReferenceUNet(BRAIN.input_channels, BRAIN.num_classes, widths=[4, 8, 16], affine_norm=True)


class OracleModel(nn.Module):
    """Predicts lesion wherever the image channel is positive: perfect on :func:`synthetic_sample` labels."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        lesion = torch.sign(inputs[:, :1]) * self.scale
        return torch.cat([-lesion, lesion], dim=1)


def clean_sample(index: int) -> Sample:
    sample = synthetic_sample(index)
    sample.image = (sample.label.astype(np.float32) * 2.0 - 1.0)[None]
    return sample


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


def without_times(result: StreamResult) -> list[dict[str, object]]:
    images = []
    for image in result.to_dict()["images"]:
        images.append({key: value for key, value in image.items() if key not in ("forward_s", "update_s", "finish_s")})
    return images


def test_frozen_leaves_model_unchanged_and_repeats_exactly(samples: list[Sample], tiny_model: nn.Module) -> None:
    before = weights(tiny_model)
    first = run_stream(tiny_model, BRAIN, samples, "frozen", {}, "oaims", budget=3, order_seed=0, click_seed=0)
    second = run_stream(tiny_model, BRAIN, samples, "frozen", {}, "oaims", budget=3, order_seed=0, click_seed=0)
    assert same_weights(before, weights(tiny_model))
    assert without_times(first) == without_times(second)
    assert first.final_version == 0
    assert all(image.versions == [0] * len(image.clicks) for image in first.images)
    for image in first.images:
        assert len(image.dice["lesion"]) == 3
        assert all(0.0 <= value <= 1.0 for value in image.dice["lesion"])
        assert len(image.forward_s) == len(image.clicks) and all(t >= 0 for t in image.forward_s)


def test_order_seed_gives_the_seeded_permutation(samples: list[Sample], tiny_model: nn.Module) -> None:
    given = run_stream(tiny_model, BRAIN, samples, "frozen", {}, budget=1, order_seed=None)
    assert given.order == [sample.key for sample in samples]
    orders = {}
    for seed in (0, 1, 2, 3):
        result = run_stream(tiny_model, BRAIN, samples, "frozen", {}, budget=1, order_seed=seed)
        assert result.order == [samples[index].key for index in stream_order(len(samples), seed)]
        assert sorted(result.order) == sorted(sample.key for sample in samples)
        assert [image.position for image in result.images] == [0, 1, 2]
        orders[seed] = tuple(result.order)
    assert len(set(orders.values())) > 1


def test_first_click_depends_on_image_not_on_position_or_strategy(samples: list[Sample], tiny_model: nn.Module) -> None:
    frozen = run_stream(tiny_model, BRAIN, samples, "frozen", {}, budget=1, order_seed=0, click_seed=5)
    post = run_stream(tiny_model, BRAIN, samples, "post", {}, budget=1, order_seed=1, click_seed=5)
    first_clicks = {image.key: image.clicks[0] for image in frozen.images}
    assert first_clicks == {image.key: image.clicks[0] for image in post.images}
    for sample in samples:
        click = first_clicks[sample.key]
        assert sample.label[click.row, click.col] == click.label == 1
    other_seed = run_stream(tiny_model, BRAIN, samples, "frozen", {}, budget=1, order_seed=0, click_seed=6)
    assert {image.key: image.clicks[0] for image in other_seed.images} != first_clicks
    assert image_click_seed(5, "a") != image_click_seed(5, "b")


def test_prequential_versions_with_post_interaction(samples: list[Sample], tiny_model: nn.Module) -> None:
    before = weights(tiny_model)
    result = run_stream(tiny_model, BRAIN, samples, "post", {}, budget=2, order_seed=0, click_seed=0)
    # PI learns only when an image is finished: image n is segmented by the model of images 1..n-1.
    version = 0
    for image in result.images:
        assert image.versions == [version] * len(image.clicks)
        assert image.version_after > version
        assert image.finish_s > 0
        version = image.version_after
    assert result.final_version == version >= len(samples)
    assert same_weights(before, weights(tiny_model))
    assert result.final_model is not None
    assert not same_weights(before, weights(result.final_model))


def test_versions_increase_within_an_image_with_mid_interaction(samples: list[Sample], tiny_model: nn.Module) -> None:
    result = run_stream(tiny_model, BRAIN, samples[:2], "mid", {}, budget=3, order_seed=None)
    for image in result.images:
        assert image.versions == sorted(image.versions)
        if len(image.clicks) > 1:
            assert image.versions[-1] > image.versions[0]
    assert result.images[1].versions[0] == result.images[0].version_after


def test_perfect_mask_stops_clicking_and_repeats_last_dice() -> None:
    result = run_stream(OracleModel(), BRAIN, [clean_sample(0), clean_sample(1)], "frozen", {}, budget=4)
    for image in result.images:
        assert len(image.clicks) == 1
        assert image.dice["lesion"] == [1.0, 1.0, 1.0, 1.0]
        assert image.noc("lesion", 0.9) == 1
        assert image.auc("lesion") == 1.0


def test_empty_label_is_skipped_with_its_key(samples: list[Sample], tiny_model: nn.Module) -> None:
    empty = synthetic_sample(7, empty=True)
    result = run_stream(tiny_model, BRAIN, [*samples[:1], empty], "frozen", {}, budget=1, order_seed=None)
    assert result.skipped == [empty.key]
    assert result.order == [samples[0].key]


def test_bad_arguments_raise_clear_errors(samples: list[Sample], tiny_model: nn.Module) -> None:
    with pytest.raises(ValueError, match="budget"):
        run_stream(tiny_model, BRAIN, samples, "frozen", {}, budget=0)
    with pytest.raises(ValueError, match="fundus"):
        run_stream(tiny_model, FUNDUS, samples, "frozen", {}, budget=1)
    with pytest.raises(ValueError, match="simulated user"):
        run_stream(tiny_model, BRAIN, samples, "frozen", {}, "nobody", budget=1)


def test_evaluate_frozen_is_the_mean_frozen_curve(samples: list[Sample], tiny_model: nn.Module) -> None:
    curves = evaluate_frozen(tiny_model, BRAIN, samples, "oaims", budget=2, seed=3)
    stream = run_stream(tiny_model, BRAIN, samples, "frozen", {}, budget=2, order_seed=None, click_seed=3)
    assert curves == mean_curves(stream)
    assert list(curves) == ["lesion"] and len(curves["lesion"]) == 2
    assert evaluate_frozen(OracleModel(), BRAIN, [clean_sample(0)], budget=3) == {"lesion": [1.0, 1.0, 1.0]}


def test_result_dict_round_trip(samples: list[Sample], tiny_model: nn.Module) -> None:
    result = run_stream(tiny_model, BRAIN, samples[:2], "frozen", {}, budget=2)
    restored = StreamResult.from_dict(result.to_dict())
    assert restored.to_dict() == result.to_dict()


def test_run_seed_reaches_strategies_with_their_own_randomness() -> None:
    assert seeded_overrides("post", {}, 7) == {"seed": 7}
    assert seeded_overrides("oaims", {"lr": 1e-3}, 7) == {"lr": 1e-3, "seed": 7}
    assert seeded_overrides("post", {"seed": 1}, 7) == {"seed": 1}
    assert seeded_overrides("frozen", {}, 7) == {}


def test_first_mask_before_update_is_measured_like_for_like(samples: list[Sample], tiny_model: nn.Module) -> None:
    frozen = run_stream(tiny_model, BRAIN, samples, "frozen", {}, budget=2, order_seed=0, click_seed=0)
    tsca = run_stream(tiny_model, BRAIN, samples, "tsca", {}, budget=2, order_seed=0, click_seed=0)
    oaims = run_stream(tiny_model, BRAIN, samples, "oaims", {}, budget=2, order_seed=0, click_seed=0)
    # The first image of the stream meets the source model: before its first-click update, TSCA's first
    # mask is the frozen model's; what TSCA displays is the mask after that update.
    first = tsca.images[0]
    assert first.first_before_update == pytest.approx({"lesion": frozen.images[0].dice["lesion"][0]})
    assert first.versions[0] > 0  # it did update before showing the first mask
    # OAIMS shows its first mask before learning from the image: both measures coincide.
    for image in oaims.images + frozen.images:
        assert image.first_before_update == {"lesion": image.dice["lesion"][0]}
    assert ImageRecord.from_dict(first.to_dict()).first_before_update == first.first_before_update
