"""Iterative click simulation for source pre-training (method.md §6).

For every batch element: draw a click budget ``n ~ U{1..max_clicks}``; place a first click with the
OAIMS protocol; run the model once with that click (no gradient, the whole batch in one forward) to
get a prediction; collect the prediction's error components per true class, largest first, where a
large component gives extra entries (its remaining area is halved while it exceeds ``split_area``);
then fill the budget with clicks drawn from those lists.

Details chosen here (the paper is silent; the authors' released code is followed unless said):

- The first click is kept as click 1 of the returned list (``include_first_click=True``), so a budget
  of one click trains exactly what the model sees at click 1 of an interaction. The released code
  uses the first click only to get the prediction and returns ``n`` correction clicks without it;
  ``include_first_click=False`` reproduces that.
- The budget is drawn per element (the released code draws one budget per batch).
- Each further click picks a class uniformly from ``0..K-1`` (background included, as the released
  code does), then takes the next entry of that class's list (sorted by area, descending; an entry
  is a uniformly random pixel of its component, drawn when used). When that class has no error
  entry left, the click is a uniformly random ground-truth pixel of the class; when the class does
  not occur in the label at all, a uniformly random pixel of the image with its true class.
- ``largest_error_share`` (default 0, the released code's behaviour) places that share of the
  correction clicks like the evaluation users do instead: on the largest error entry left over all
  classes. With a uniform class choice, a systematic error of one kind (a fundus cup drawn twice too
  large, corrected at test time by rim clicks inside it) gets only a third of the training clicks;
  ``bench/cup_diagnosis.py`` measures this.
- Only the ``n`` largest components of a class can be reached by ``n`` clicks (a component's
  extra entries are smaller than the component), so only those are expanded.
- A label with no foreground gets a random pixel (class 0) as first click instead of the
  ``ValueError`` the simulated user raises.
- When every element's budget is one click and the first click is kept, no error is needed and the
  forward pass is skipped.
- The model runs in whatever mode (train/eval) it is in; the reference U-Net's InstanceNorm keeps no
  running statistics, so the mode does not change its output.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from clickadapt.clicks.click import Click
from clickadapt.clicks.encoding import DEFAULT_CLICK_SIGMA, model_input
from clickadapt.clicks.simulators import OaimsUser, _component_refs, _ComponentRef, random_pixel

DEFAULT_MAX_TRAINING_CLICKS = 10
"""Largest click budget per training sample (method.md §6)."""

DEFAULT_SPLIT_AREA = 150
"""A component keeps giving extra clicks while its remaining area (halved each time) exceeds this (px)."""


def _class_queues(
    refs: list[_ComponentRef], num_classes: int, max_entries: int, split_area: int | Mapping[int, int]
) -> list[list[tuple[int, _ComponentRef]]]:
    """Per true class, the click entries ``(entry area, component)``, largest first.

    A component gives one entry of its own area, then one more each time its remaining area,
    while above the class's ``split_area``, is halved (integer division, as the released code).
    """
    queues: list[list[tuple[int, int, _ComponentRef]]] = [[] for _ in range(num_classes)]
    components_per_class = [0] * num_classes
    for order, ref in enumerate(refs):  # refs are sorted by area, descending
        if components_per_class[ref.true_class] >= max_entries:
            continue
        components_per_class[ref.true_class] += 1
        entries = queues[ref.true_class]
        threshold = split_area[ref.true_class] if isinstance(split_area, Mapping) else split_area
        entries.append((ref.area, order, ref))
        remaining = ref.area
        while remaining > threshold:
            remaining //= 2
            entries.append((remaining, order, ref))
    # Largest area first; ties keep the component order of ``refs`` (itself deterministic).
    return [[(area, ref) for area, _, ref in sorted(entries, key=lambda e: (-e[0], e[1]))] for entries in queues]


def _first_click(label: np.ndarray, rng: np.random.Generator) -> Click:
    """OAIMS first click; a random background pixel when the label has no foreground."""
    if not (label > 0).any():
        row, col = random_pixel(np.ones_like(label, dtype=bool), rng)
        return Click(row, col, int(label[row, col]))
    return OaimsUser(rng).first_click(label)


def _correction_clicks(
    label: np.ndarray,
    prediction: np.ndarray,
    num_classes: int,
    count: int,
    rng: np.random.Generator,
    split_area: int | Mapping[int, int],
    largest_error_share: float = 0.0,
) -> list[Click]:
    """``count`` clicks from the error components of one element (see the module docstring)."""
    queues = _class_queues(_component_refs(label, prediction, max_per_true_class=count), num_classes, count, split_area)
    used = [0] * num_classes
    clicks: list[Click] = []
    for _ in range(count):
        chosen_class = int(rng.integers(num_classes))
        if largest_error_share > 0 and rng.random() < largest_error_share:
            left = [(queues[c][used[c]][0], -c) for c in range(num_classes) if used[c] < len(queues[c])]
            if left:
                chosen_class = -max(left)[1]
        if used[chosen_class] < len(queues[chosen_class]):
            _, ref = queues[chosen_class][used[chosen_class]]
            used[chosen_class] += 1
            row, col = random_pixel(ref.mask(), rng)
            clicks.append(Click(row, col, ref.true_class))
            continue
        class_mask = label == chosen_class
        if not class_mask.any():
            class_mask = np.ones_like(label, dtype=bool)
        row, col = random_pixel(class_mask, rng)
        clicks.append(Click(row, col, int(label[row, col])))
    return clicks


def sample_training_clicks(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    rng: np.random.Generator,
    max_clicks: int = DEFAULT_MAX_TRAINING_CLICKS,
    click_sigma: float = DEFAULT_CLICK_SIGMA,
    split_area: int | Mapping[int, int] = DEFAULT_SPLIT_AREA,
    include_first_click: bool = True,
    largest_error_share: float = 0.0,
) -> list[list[Click]]:
    """Simulate the clicks of one training batch from the model's own errors (method.md §6).

    Args:
        model: The network being trained; maps ``(B, C + K, H, W)`` to logits ``(B, K, H, W)``.
        images: Image batch ``(B, C, H, W)`` (without click maps), on the model's device.
        labels: Ground truth ``(B, H, W)`` int64 class indices.
        num_classes: ``K``, background included.
        rng: Source of all randomness (budget, classes, pixels); same state → same clicks.
        max_clicks: Largest click budget; each element draws its budget from ``1..max_clicks``.
        click_sigma: σ of the click maps fed to the model for the initial prediction.
        split_area: Area threshold (px) for extra clicks in large components; a mapping gives one
            threshold per true class (the released fundus code uses 80 for the cup, 150 otherwise).
        include_first_click: Keep the first click as click 1 (see the module docstring).
        largest_error_share: Share of correction clicks placed on the largest error entry left over
            all classes (as the evaluation users click) instead of a uniformly chosen class's next one.

    Returns:
        One list of clicks per batch element, each of length ``1..max_clicks``; every click lies in
        the image and carries the label's class at its pixel.

    Raises:
        ValueError: On inconsistent shapes, labels outside ``0..K-1`` or ``max_clicks < 1``.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if labels.ndim != 3:
        raise ValueError(f"labels must be (B, H, W), got shape {tuple(labels.shape)}")
    if images.shape[0] != labels.shape[0] or images.shape[-2:] != labels.shape[-2:]:
        raise ValueError(f"images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match")
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be at least 1, got {max_clicks}")
    if not 0.0 <= largest_error_share <= 1.0:
        raise ValueError(f"largest_error_share must lie in [0, 1], got {largest_error_share}")
    label_maps = labels.detach().cpu().numpy().astype(np.int64)
    if label_maps.size and (label_maps.min() < 0 or label_maps.max() >= num_classes):
        raise ValueError(f"labels hold classes {label_maps.min()}..{label_maps.max()}, outside 0..{num_classes - 1}")

    batch_size = labels.shape[0]
    budgets = [int(rng.integers(1, max_clicks + 1)) for _ in range(batch_size)]
    first_clicks = [_first_click(label_maps[index], rng) for index in range(batch_size)]
    correction_counts = [budget - 1 if include_first_click else budget for budget in budgets]
    if max(correction_counts) == 0:
        return [[click] for click in first_clicks]

    with torch.no_grad():
        inputs = torch.stack(
            [model_input(images[index], [first_clicks[index]], num_classes, click_sigma) for index in range(batch_size)]
        )
        predictions = model(inputs).argmax(dim=1).cpu().numpy().astype(np.int64)

    result: list[list[Click]] = []
    for index in range(batch_size):
        clicks = [first_clicks[index]] if include_first_click else []
        clicks += _correction_clicks(
            label_maps[index],
            predictions[index],
            num_classes,
            correction_counts[index],
            rng,
            split_area,
            largest_error_share,
        )
        result.append(clicks)
    return result
