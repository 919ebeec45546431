"""Interactive-segmentation metrics: Dice per region, clicks to a Dice threshold (NoC), Dice-vs-click area.

All functions are pure numpy. Dice values are fractions in [0, 1] (the paper prints percentages).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clickadapt.tasks import TaskSpec

DEFAULT_NOC_THRESHOLDS: tuple[float, ...] = (0.80, 0.85, 0.90)


def dice(prediction: np.ndarray, label: np.ndarray, classes: tuple[int, ...]) -> float:
    """Dice overlap of one region, the union of ``classes``, between a prediction and a label map.

    Args:
        prediction: Predicted class map ``(H, W)``.
        label: Ground-truth class map ``(H, W)``.
        classes: Label indices whose union forms the region (fundus disc = ``(1, 2)``).

    Returns:
        ``2|P ∩ G| / (|P| + |G|)``; 1.0 when the region is empty in both maps.

    Raises:
        ValueError: If the shapes differ or ``classes`` is empty.
    """
    if prediction.shape != label.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from label shape {label.shape}")
    if not classes:
        raise ValueError("classes must name at least one label index")
    predicted_region = np.isin(prediction, classes)
    true_region = np.isin(label, classes)
    total = int(predicted_region.sum()) + int(true_region.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(predicted_region, true_region).sum()) / total


def region_dice(prediction: np.ndarray, label: np.ndarray, task: TaskSpec) -> dict[str, float]:
    """Dice of every reported region of ``task`` (brain: lesion; fundus: disc and cup)."""
    return {region: dice(prediction, label, classes) for region, classes in task.regions.items()}


def mean_region_dice(prediction: np.ndarray, label: np.ndarray, task: TaskSpec) -> float:
    """Mean of :func:`region_dice` over the task's regions (1.0 for a task without regions).

    Raises:
        ValueError: If the shapes differ.
    """
    values = region_dice(prediction, label, task)
    return float(np.mean(list(values.values()))) if values else 1.0


def clicks_to_threshold(curve: Sequence[float], threshold: float) -> int | None:
    """Number of clicks needed to reach a Dice threshold.

    Args:
        curve: Dice after click 1, 2, …, T.
        threshold: Dice to reach (e.g. 0.85).

    Returns:
        The 1-based index of the first click whose Dice is ``>= threshold``, or ``None`` when the
        curve never reaches it (a failure).
    """
    for index, value in enumerate(curve, start=1):
        if value >= threshold:
            return index
    return None


def noc_key(threshold: float) -> str:
    """The summary key suffix of a threshold: ``0.85`` → ``"85"``."""
    return f"{round(threshold * 100):d}"


def noc_summary(
    curves: Sequence[Sequence[float]],
    thresholds: Sequence[float] = DEFAULT_NOC_THRESHOLDS,
    budget: int | None = None,
) -> dict[str, float]:
    """Mean number of clicks to each threshold (NoC) and the failures within the budget.

    Follows the usual convention (RITM, SimpleClick, …): an image that never reaches the threshold
    counts as ``budget`` clicks in the mean.

    Args:
        curves: One Dice-per-click curve per image.
        thresholds: Dice thresholds.
        budget: Click budget counted for failures; ``None`` = the longest curve's length.

    Returns:
        For each threshold ``t`` (key suffix ``noc_key(t)``, e.g. ``"85"``): ``"noc@85"`` mean clicks,
        ``"failures@85"`` number of images that failed, ``"failure_rate@85"`` their fraction. NaN
        means when there are no curves.

    Raises:
        ValueError: If ``budget`` is smaller than 1.
    """
    if budget is None:
        budget = max((len(curve) for curve in curves), default=0)
    if budget < 1 and curves:
        raise ValueError(f"budget must be at least 1 click, got {budget}")
    summary: dict[str, float] = {}
    for threshold in thresholds:
        clicks = [clicks_to_threshold(curve[:budget], threshold) for curve in curves]
        failures = sum(count is None for count in clicks)
        counted = [budget if count is None else count for count in clicks]
        suffix = noc_key(threshold)
        summary[f"noc@{suffix}"] = float(np.mean(counted)) if counted else float("nan")
        summary[f"failures@{suffix}"] = float(failures)
        summary[f"failure_rate@{suffix}"] = failures / len(clicks) if clicks else float("nan")
    return summary


def dice_auc(curve: Sequence[float]) -> float:
    """Normalised area under the Dice-vs-click curve over clicks 1..T.

    Trapezoid rule with unit click spacing divided by ``T − 1`` so that a constant curve at ``d``
    scores ``d``; for ``T = 1`` the single value.

    Raises:
        ValueError: If the curve is empty.
    """
    values = np.asarray(curve, dtype=np.float64)
    if values.size == 0:
        raise ValueError("the Dice curve is empty; need at least one click")
    if values.size == 1:
        return float(values[0])
    area = float(np.sum((values[1:] + values[:-1]) / 2.0))
    return area / (values.size - 1)
