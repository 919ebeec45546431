"""The ground-truth-free signals of a finished image, which the drift monitor watches.

Computed from each finished session: the agreement (Dice) between the first-click prediction and the final
mask the user accepted, how many clicks it took until the prediction agreed with the final mask, and the
fraction of the user's later clicks the first-click prediction already agreed with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from clickadapt.clicks.click import Click
from clickadapt.evaluation.metrics import mean_region_dice
from clickadapt.tasks import TaskSpec


@dataclass(frozen=True)
class ImageSignals:
    """The ground-truth-free signals of one finished image.

    Attributes:
        image_index: 0-based count of finished images since attaching.
        image_id: The session's image id.
        version: Model version that produced the first-click prediction.
        clicks: Clicks the user made.
        first_final_dice: Mean over the task's regions of the Dice between the first-click prediction
            and the final (accepted) mask.
        clicks_to_final: First click whose prediction reached ``agreement_threshold`` Dice with the final
            mask.
        first_click_agreement: Fraction of the clicks after the first at whose pixel the first-click
            prediction already had the clicked class (NaN with a single click).
        source_first_final_dice: The same as ``first_final_dice`` for the source model with the same first
            click (``None`` unless ``reference="source"``).
    """

    image_index: int
    image_id: str
    version: int
    clicks: int
    first_final_dice: float
    clicks_to_final: int
    first_click_agreement: float
    source_first_final_dice: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


def image_signals(
    predictions: Sequence[np.ndarray],
    clicks: Sequence[Click],
    task: TaskSpec,
    agreement_threshold: float = 0.9,
) -> tuple[float, int, float]:
    """First-click agreement with the final mask, clicks until final, and clicks the first guess agreed with.

    Args:
        predictions: The prediction after each click; the last one is the final mask.
        clicks: The clicks, in order (as many as predictions).
        task: The task (regions).
        agreement_threshold: Dice with the final mask from which a prediction counts as final.

    Returns:
        ``(first_final_dice, clicks_to_final, first_click_agreement)`` as in :class:`ImageSignals`.

    Raises:
        ValueError: Without predictions, or when clicks and predictions differ in number.
    """
    if not predictions:
        raise ValueError("the session has no prediction; finish an image with at least one click")
    if len(predictions) != len(clicks):
        raise ValueError(f"{len(predictions)} predictions but {len(clicks)} clicks")
    final = predictions[-1]
    first = predictions[0]
    first_final = mean_region_dice(first, final, task)
    clicks_to_final = next(
        index
        for index, prediction in enumerate(predictions, start=1)
        if mean_region_dice(prediction, final, task) >= agreement_threshold
    )
    later = clicks[1:]
    agreement = float(np.mean([first[c.row, c.col] == c.label for c in later])) if later else math.nan
    return first_final, clicks_to_final, agreement
