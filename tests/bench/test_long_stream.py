"""Long domain-switching streams with the safety layer in the loop (tiny network, synthetic images)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from bench.long_stream_runner import (
    StreamSegment,
    evaluate_weights,
    ordered_stream,
    run_domain_scoped_stream,
    run_long_stream,
)

from clickadapt.adaptation.safety import SafetyConfig
from clickadapt.data.sample import Sample
from clickadapt.models.unet import ReferenceUNet
from clickadapt.tasks import BRAIN

SIZE = 32


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def blob_sample(domain: str, index: int, contrast: float) -> Sample:
    rng = np.random.default_rng(index)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    centre = 12 + rng.integers(0, 8, size=2)
    label = ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= 25).astype(np.int64)
    image = (contrast * label + 0.3 * rng.standard_normal((SIZE, SIZE))).astype(np.float32)[None]
    return Sample(image, label, "brain", "synthetic", domain, f"p{index}", index, "")


def segments() -> list[StreamSegment]:
    return [
        StreamSegment("A", [blob_sample("A", i, -1.0) for i in range(3)]),
        StreamSegment("B", [blob_sample("B", 10 + i, 2.0) for i in range(2)]),
        StreamSegment("source", [blob_sample("S", 20 + i, 1.0) for i in range(2)], source_domain=True),
    ]


def network() -> ReferenceUNet:
    torch.manual_seed(0)
    return ReferenceUNet(BRAIN.input_channels, BRAIN.num_classes, [4, 8], affine_norm=True)


def test_stream_order_keeps_segments_in_order_and_shuffles_inside() -> None:
    order = ordered_stream(segments(), order_seed=3)
    assert [segment for segment, _ in order] == [0, 0, 0, 1, 1, 2, 2]
    assert sorted(sample.patient for _, sample in order[:3]) == ["p0", "p1", "p2"]
    assert [s.patient for _, s in ordered_stream(segments(), None)][:3] == ["p0", "p1", "p2"]


@pytest.mark.slow
def test_guarded_and_unguarded_runs_share_their_prefix_and_resume_exactly() -> None:
    model = network()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    kwargs = {"budget": 3, "click_seed": 1, "progress": False}
    plain = run_long_stream(model, BRAIN, segments(), "oaims", **kwargs)
    # A guard that rejects every update acts at the first image that updates: the fork is there.
    strict = SafetyConfig(max_relative_step=1e-12)
    guarded = run_long_stream(model, BRAIN, segments(), "oaims", safety=strict, **kwargs)
    assert guarded.fork is not None and guarded.fork.stream_index == 0 and guarded.events
    assert all(event["kind"] == "update_rejected" for event in guarded.events)
    assert guarded.images[-1].version_after > 0 and len(guarded.segment_end_weights) == 3
    for name, tensor in guarded.final_model.state_dict().items():  # type: ignore[union-attr]
        assert torch.equal(tensor, original[name])  # every update was undone
    resumed = run_long_stream(model, BRAIN, segments(), "oaims", resume_from=guarded.fork, **kwargs)
    assert [image.dice for image in resumed.images] == [image.dice for image in plain.images]
    # Default settings never act on this short stream: the unguarded run is the guarded one.
    quiet = run_long_stream(model, BRAIN, segments(), "oaims", safety=SafetyConfig(), **kwargs)
    assert quiet.events == [] and quiet.fork is not None and quiet.fork.stream_index == 7
    assert [image.dice for image in quiet.images] == [image.dice for image in plain.images]
    assert len(quiet.signals) == 7 and all(s["source_first_final_dice"] is not None for s in quiet.signals)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, original[name])  # the caller's model never changes


def test_evaluate_weights_is_a_frozen_evaluation_of_given_weights() -> None:
    model = network()
    samples = segments()[2].samples
    curves = evaluate_weights(model, None, BRAIN, samples, budget=2)
    assert curves.shape == (2, 2) and ((curves >= 0) & (curves <= 1)).all()
    zeroed = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    flat = evaluate_weights(model, zeroed, BRAIN, samples, budget=2)  # all-zero logits: class 0 everywhere
    np.testing.assert_array_equal(flat, np.zeros((2, 2)))


def test_domain_scoped_stream_adapts_each_domain_apart_and_serves_source_images_with_the_source_model() -> None:
    model = network()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    result = run_domain_scoped_stream(
        model, BRAIN, segments(), "oaims", safety=SafetyConfig(), budget=3, click_seed=1, progress=False
    )
    assert [image.segment for image in result.images] == [0, 0, 0, 1, 1, 2, 2]
    # The weights that serve source images never changed, at any segment's end.
    assert len(result.segment_end_weights) == 3
    for weights in result.segment_end_weights:
        assert all(torch.equal(weights[name], original[name]) for name in original)
    assert [image.version_after for image in result.images[-2:]] == [0, 0]  # source images: frozen model
    # Each target domain adapted its own copy, starting from the source weights (not from the previous domain).
    assert sorted(result.domain_end_weights) == ["A", "B"]
    first_b = result.images[3]
    assert first_b.version_first == 0 and result.images[2].version_after > 0
    a_weights, b_weights = result.domain_end_weights["A"], result.domain_end_weights["B"]
    assert any(not torch.equal(a_weights[name], original[name]) for name in original)
    assert any(not torch.equal(a_weights[name], b_weights[name]) for name in original)
    assert len(result.signals) == 5  # the safety layer finished every adapted image, none of the source ones
    assert all(torch.equal(tensor, original[name]) for name, tensor in model.state_dict().items())


def test_gain_kept_is_taken_only_from_an_unguarded_run_of_the_same_stream() -> None:
    from bench import long_stream as bench

    def run(tag: str, order_seed: int, variants: list[dict[str, object]]) -> dict[str, object]:
        segments = [{"name": "A", "images": 4, "source": False}]
        return {"task": "brain", "tag": tag, "segments": segments, "click_seed": 0, "order_seed": order_seed,
                "variants": variants}  # fmt: skip

    guarded = {"label": "oaims+safety+domains", "safety": {}, "delta@5": 3.0, "gain_kept@5": float("nan")}
    other_order = run("order1", 1, [{"label": "oaims", "safety": None, "delta@5": 1.0}])
    same_order = run("main", 0, [{"label": "oaims", "safety": None, "delta@5": 4.0}])
    summaries = [run("domains", 0, [guarded]), other_order, same_order]
    bench.fill_gain_kept(summaries)
    assert guarded["gain_kept@5"] == 0.75 and guarded["gain_kept_from"] == "main"


def test_targets_can_share_one_adapting_model_while_source_images_keep_the_source_model() -> None:
    model = network()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    result = run_domain_scoped_stream(
        model, BRAIN, segments(), "oaims", budget=3, click_seed=1, targets_share_model=True, progress=False
    )
    assert list(result.domain_end_weights) == ["targets"]
    first_b = result.images[3]
    assert first_b.version_first == result.images[2].version_after > 0  # B continues from A's weights
    assert [image.version_after for image in result.images[-2:]] == [0, 0]
    assert all(torch.equal(result.segment_end_weights[-1][name], original[name]) for name in original)


def test_episodic_source_images_adapt_within_the_image_and_never_change_the_source_weights() -> None:
    model = network()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    result = run_domain_scoped_stream(
        model, BRAIN, segments(), "oaims", safety=SafetyConfig(), budget=3, click_seed=1, targets_share_model=True,
        source_mode="episodic", progress=False,
    )  # fmt: skip
    assert result.label == "oaims+domains+episodic-source"
    for weights in result.segment_end_weights:  # what the forgetting measure evaluates: the source weights
        assert all(torch.equal(weights[name], original[name]) for name in original)
    source_images = result.images[-2:]
    for image in source_images:  # MI updates during the clicks, then the restore: versions move on
        assert image.version_after >= image.version_first + 2
    assert len(result.signals) == 7  # the source domain's guard-only layer also saw its images
