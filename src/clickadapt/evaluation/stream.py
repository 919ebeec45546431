"""The prequential stream runner: a simulated user drives one interactive session per image of a stream.

The model that segments image n is the one adapted by images 1..n−1 (and, for strategies that learn
during an image, by the earlier clicks of image n): every image gets a fresh
:class:`~clickadapt.adaptation.session.InteractiveSession` on one shared
:class:`~clickadapt.adaptation.model_state.ModelState`, exactly as the server does for a person. The
caller's model is copied and never changed.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from torch import nn
from tqdm import tqdm

from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.adaptation.strategies import STRATEGIES, make_strategy
from clickadapt.clicks.click import Click
from clickadapt.clicks.encoding import DEFAULT_CLICK_SIGMA
from clickadapt.clicks.simulators import SimulatedUser, make_simulated_user
from clickadapt.data.sample import Sample
from clickadapt.evaluation.metrics import DEFAULT_NOC_THRESHOLDS, clicks_to_threshold, dice_auc, noc_key, region_dice
from clickadapt.tasks import TaskSpec

logger = logging.getLogger(__name__)

DEFAULT_BUDGET = 10
FROZEN_STRATEGY = "frozen"
SubsetPolicy = Literal["first", "spread"]
"""How a stream is capped to N images: ``first`` N in dataset order, or a patient-balanced ``spread``."""


@dataclass
class ImageRecord:
    """What happened on one image of the stream.

    Attributes:
        position: 0-based place of the image in the stream.
        key: The sample's key (``dataset/domain/patient[/slice]``).
        clicks: The clicks the simulated user made (fewer than the budget when the mask became perfect).
        dice: Per region, the Dice after clicks 1..budget; after a perfect mask the last value repeats.
        forward_s: Per click made, seconds spent on the forward passes that produced the displayed mask.
        update_s: Per click made, seconds spent on the strategy's weight update (0 when none).
        finish_s: Seconds of the strategy's after-image update when the image was finished (0 when none).
        versions: Per click made, the model version that produced the displayed mask.
        version_after: The model version after the image was finished.
        first_before_update: Per region, the Dice of the first-click mask of the model as it was before any
            update on this image. Equal to ``dice[region][0]`` for strategies that show the first mask before
            they learn from the image (frozen, post, mid, oaims); for those that update on the first click
            before showing it (tsca, ia-sa, tent in click mode) it is measured with a non-adapting probe, so
            Dice@1 compares like with like. ``None`` in records read from older files.
    """

    position: int
    key: str
    clicks: list[Click]
    dice: dict[str, list[float]]
    forward_s: list[float]
    update_s: list[float]
    finish_s: float
    versions: list[int]
    version_after: int
    first_before_update: dict[str, float] | None = None

    def noc(self, region: str, threshold: float) -> int | None:
        """Clicks needed to reach ``threshold`` Dice on ``region``; ``None`` = failure within the budget."""
        return clicks_to_threshold(self.dice[region], threshold)

    def auc(self, region: str) -> float:
        """Normalised area under this image's Dice-vs-click curve on ``region``."""
        return dice_auc(self.dice[region])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (clicks as ``[row, col, label]``), with the derived NoC and AUC per region."""
        return {
            "position": self.position,
            "key": self.key,
            "clicks": [[click.row, click.col, click.label] for click in self.clicks],
            "dice": {region: list(values) for region, values in self.dice.items()},
            "forward_s": list(self.forward_s),
            "update_s": list(self.update_s),
            "finish_s": self.finish_s,
            "versions": list(self.versions),
            "version_after": self.version_after,
            "first_before_update": self.first_before_update,
            "noc": {
                region: {noc_key(threshold): self.noc(region, threshold) for threshold in DEFAULT_NOC_THRESHOLDS}
                for region in self.dice
            },
            "auc": {region: self.auc(region) for region in self.dice},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageRecord:
        """Inverse of :meth:`to_dict` (the derived fields are recomputed, not read)."""
        return cls(
            position=int(data["position"]),
            key=str(data["key"]),
            clicks=[Click(int(row), int(col), int(label)) for row, col, label in data["clicks"]],
            dice={str(region): [float(v) for v in values] for region, values in data["dice"].items()},
            forward_s=[float(v) for v in data["forward_s"]],
            update_s=[float(v) for v in data["update_s"]],
            finish_s=float(data["finish_s"]),
            versions=[int(v) for v in data["versions"]],
            version_after=int(data["version_after"]),
            first_before_update=data.get("first_before_update"),
        )


@dataclass
class StreamResult:
    """One strategy run over one ordered stream.

    Attributes:
        strategy: The name reports use (the strategy's label).
        strategy_name: The strategy given to ``make_strategy``.
        overrides: Its configuration overrides.
        task: Task name.
        regions: Reported regions, in the task's order.
        user: Simulated user name.
        budget: Clicks per image.
        order_seed: Seed of the stream permutation; ``None`` = the given order.
        click_seed: Seed of the simulated user's clicks.
        images: One record per image, in stream order.
        skipped: Keys of samples with an empty label, which a simulated user cannot click on.
        validation_before: Forgetting measurement: per region, the mean Dice per click of the frozen
            original model on the source validation set (set by the caller; ``None`` = not measured).
        validation_after: The same with the model as adapted by the whole stream.
        final_model: The adapted model at the end of the stream (not serialised).
    """

    strategy: str
    strategy_name: str
    overrides: dict[str, Any]
    task: str
    regions: list[str]
    user: str
    budget: int
    order_seed: int | None
    click_seed: int
    images: list[ImageRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    validation_before: dict[str, list[float]] | None = None
    validation_after: dict[str, list[float]] | None = None
    final_model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def order(self) -> list[str]:
        """Sample keys in stream order."""
        return [image.key for image in self.images]

    @property
    def final_version(self) -> int:
        """Model version after the last image (0 when nothing was learnt)."""
        return self.images[-1].version_after if self.images else 0

    def curves(self, region: str) -> np.ndarray:
        """Dice per image and click on ``region``: array ``(images, budget)``."""
        return np.asarray([image.dice[region] for image in self.images], dtype=np.float64).reshape(-1, self.budget)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of everything except the final model."""
        return {
            "strategy": self.strategy,
            "strategy_name": self.strategy_name,
            "overrides": self.overrides,
            "task": self.task,
            "regions": list(self.regions),
            "user": self.user,
            "budget": self.budget,
            "order_seed": self.order_seed,
            "click_seed": self.click_seed,
            "skipped": list(self.skipped),
            "validation_before": self.validation_before,
            "validation_after": self.validation_after,
            "images": [image.to_dict() for image in self.images],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamResult:
        """Inverse of :meth:`to_dict`."""
        return cls(
            strategy=str(data["strategy"]),
            strategy_name=str(data["strategy_name"]),
            overrides=dict(data.get("overrides") or {}),
            task=str(data["task"]),
            regions=[str(region) for region in data["regions"]],
            user=str(data["user"]),
            budget=int(data["budget"]),
            order_seed=None if data.get("order_seed") is None else int(data["order_seed"]),
            click_seed=int(data["click_seed"]),
            images=[ImageRecord.from_dict(image) for image in data["images"]],
            skipped=[str(key) for key in data.get("skipped", [])],
            validation_before=data.get("validation_before"),
            validation_after=data.get("validation_after"),
        )


def stream_order(count: int, order_seed: int | None) -> list[int]:
    """Indices of ``count`` samples in stream order: a seeded permutation, or ``0..count−1`` for ``None``."""
    if order_seed is None:
        return list(range(count))
    return [int(index) for index in np.random.default_rng(order_seed).permutation(count)]


def _spread_indices(count: int, wanted: int) -> list[int]:
    """``wanted`` of the indices ``0..count−1``, each the centre of one of ``wanted`` equal bins.

    Index ``i`` is ``⌊(2i + 1)·count / (2·wanted)⌋``: evenly spaced and never both ends (one of 10 slices
    is slice 5, two are slices 2 and 7), so a patient's share of a brain stream is not its end slices,
    which hold the smallest lesion sections.
    """
    if wanted >= count:
        return list(range(count))
    return [((2 * index + 1) * count) // (2 * wanted) for index in range(wanted)]


def cap_stream(samples: Sequence[Sample], limit: int | None, subset: SubsetPolicy = "first") -> list[Sample]:
    """At most ``limit`` samples of a stream, chosen deterministically.

    ``first`` keeps the first ``limit`` samples in dataset order, which for a brain stream are consecutive
    slices of its first patient. ``spread`` is patient-balanced:

    - with fewer images than patients, it takes ``limit`` patients evenly spread over the stream's
      patients (centres of equal bins, :func:`_spread_indices`) and the middle sample of each; with one
      sample per patient (fundus, one largest-lesion slice per patient) this is an evenly spread subset
      of the whole stream, not its first ``limit`` files;
    - otherwise it shares the ``limit`` between patients as evenly as their sample counts allow (a patient
      with fewer samples than its share gives the rest to the others), and within a patient takes the
      centres of equal bins of its samples (slices spread over the lesion, never both end slices).

    The result keeps dataset order.

    Args:
        samples: The stream in dataset order.
        limit: Maximum number of samples; ``None`` keeps all.
        subset: ``"first"`` or ``"spread"``.

    Returns:
        The chosen samples, in dataset order.

    Raises:
        ValueError: If ``limit`` < 1 or ``subset`` is unknown.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 image, got {limit}")
    if subset not in ("first", "spread"):
        raise ValueError(f"unknown subset policy {subset!r}; allowed: first, spread")
    if limit is None or limit >= len(samples):
        return list(samples)
    if subset == "first":
        return list(samples[:limit])
    by_patient: dict[tuple[str, str, str], list[int]] = {}
    for index, sample in enumerate(samples):
        by_patient.setdefault((sample.dataset, sample.domain, sample.patient), []).append(index)
    groups = list(by_patient.values())
    if limit < len(groups):
        picked = [groups[number] for number in _spread_indices(len(groups), limit)]
        return [samples[members[_spread_indices(len(members), 1)[0]]] for members in picked]
    shares = [0] * len(groups)
    remaining = limit
    open_groups = list(range(len(groups)))
    while remaining > 0 and open_groups:
        portion, extra = divmod(remaining, len(open_groups))
        for rank, number in enumerate(open_groups):
            grant = min(portion + (1 if rank < extra else 0), len(groups[number]) - shares[number])
            shares[number] += grant
            remaining -= grant
        open_groups = [number for number in open_groups if shares[number] < len(groups[number])]
    chosen = sorted(
        members[position]
        for members, share in zip(groups, shares, strict=True)
        for position in _spread_indices(len(members), share)
    )
    return [samples[index] for index in chosen]


def image_click_seed(click_seed: int, key: str) -> int:
    """The simulated user's seed for one image.

    Derived from the run's click seed and the sample key (not its stream position), so that every
    strategy and every stream order sees the same first click on the same image.
    """
    key_digest = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return int(np.random.SeedSequence([click_seed, key_digest]).generate_state(1)[0])


def _show_progress(progress: bool) -> bool:
    return progress and sys.stderr.isatty()


def seeded_overrides(strategy_name: str, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    """The strategy's overrides with its own random ``seed`` set to the run's seed, unless given.

    Strategies with randomness of their own (the synthetic clicks of Post-Interaction) have a ``seed``
    setting; tying it to the run's seed makes each seed of an evaluation one independent repetition.
    """
    entry = STRATEGIES.get(strategy_name)
    if entry is None or "seed" in overrides or "seed" not in entry[1].model_fields:
        return dict(overrides)
    return {**overrides, "seed": seed}


def run_stream(
    model: nn.Module,
    task: TaskSpec,
    samples: Sequence[Sample],
    strategy_name: str,
    strategy_overrides: dict[str, Any] | None = None,
    user_name: str = "oaims",
    budget: int = DEFAULT_BUDGET,
    order_seed: int | None = 0,
    click_seed: int = 0,
    progress: bool = True,
    *,
    label: str | None = None,
    click_sigma: float = DEFAULT_CLICK_SIGMA,
    device: str = "cpu",
) -> StreamResult:
    """Process a stream of images prequentially with a simulated user and one adaptation strategy.

    For each image (in a seeded random order): a fresh session on the shared adapting model; the user
    makes the first click, then corrects the largest error after each prediction until ``budget``
    clicks (stopping early when the mask is perfect, later clicks then keep the last Dice); the
    image is finished, which lets the strategy learn from it before the next image.

    Args:
        model: Source model; copied, never changed.
        task: Its task (classes and reported regions).
        samples: The stream, in dataset order.
        strategy_name: Adaptation strategy (``make_strategy`` name).
        strategy_overrides: Overrides of the strategy's configuration.
        user_name: Simulated user (``oaims``, ``center``, ``deepest``).
        budget: Clicks per image.
        order_seed: Seed of the stream permutation; ``None`` keeps the given order.
        click_seed: Seed of the simulated user (combined with each sample's key) and of the strategy's
            own randomness when it has a ``seed`` setting not given in ``strategy_overrides``.
        progress: Show a progress bar (only when stderr is a terminal).
        label: Strategy name for reports (default ``strategy_name``).
        click_sigma: σ of the click maps.
        device: Torch device.

    Returns:
        The per-image records and the adapted model (``final_model``).

    Raises:
        ValueError: If ``budget`` < 1, a sample's task or channels do not fit the model's task, or the
            strategy / user name is unknown.
    """
    if budget < 1:
        raise ValueError(f"budget must be at least 1 click, got {budget}")
    for sample in samples:
        if sample.task != task.name:
            raise ValueError(f"sample {sample.key} is a {sample.task!r} image but the model is for {task.name!r}")
    overrides = dict(strategy_overrides or {})
    make_simulated_user(user_name, click_seed)  # validates the name before any work
    working_model = copy.deepcopy(model).to(device)
    strategy = make_strategy(strategy_name, task, **seeded_overrides(strategy_name, overrides, click_seed))
    state = ModelState(working_model, task, strategy, device)
    regions = list(task.regions)
    result = StreamResult(
        strategy=label or strategy_name,
        strategy_name=strategy_name,
        overrides=overrides,
        task=task.name,
        regions=regions,
        user=user_name,
        budget=budget,
        order_seed=order_seed,
        click_seed=click_seed,
        final_model=working_model,
    )
    ordered = [samples[index] for index in stream_order(len(samples), order_seed)]
    bar = tqdm(ordered, desc=f"{result.strategy} seed {click_seed}", unit="image", disable=not _show_progress(progress))
    for sample in bar:
        user = make_simulated_user(user_name, image_click_seed(click_seed, sample.key))
        if not np.any(sample.label > 0):
            logger.warning("skipping %s: its label has no foreground for the simulated user to click", sample.key)
            result.skipped.append(sample.key)
            continue
        record = _interact(state, task, sample, user, budget, len(result.images), click_sigma)
        result.images.append(record)
        if not bar.disable:
            first = np.mean([image.dice[regions[0]][0] for image in result.images])
            last = np.mean([image.dice[regions[0]][-1] for image in result.images])
            bar.set_postfix({f"{regions[0]}@1": f"{first:.3f}", f"{regions[0]}@{budget}": f"{last:.3f}"})
    bar.close()
    return result


def click_through(
    session: InteractiveSession, sample: Sample, user: SimulatedUser, budget: int, task: TaskSpec
) -> dict[str, list[float]]:
    """Open ``sample`` in ``session`` and let ``user`` click until ``budget`` clicks or a perfect mask.

    Returns:
        Per region, the Dice against the ground truth after clicks 1..budget (the last value repeated
        when the user stopped early). The session is left open (not finished).
    """
    return click_through_probed(session, sample, user, budget, task)[0]


def click_through_probed(
    session: InteractiveSession, sample: Sample, user: SimulatedUser, budget: int, task: TaskSpec
) -> tuple[dict[str, list[float]], dict[str, float] | None]:
    """:func:`click_through`, plus the Dice of the first-click mask before any update on this image.

    The one click loop of the package: the stream runner, the long streams and the benchmark all go
    through it. When the session's strategy updates on the first click before showing its mask, the
    first click is also sent to a non-adapting probe session on the same weights (one extra forward);
    otherwise the displayed first mask is already the one before any update.

    Returns:
        ``(curves, first_before_update)``: the curves of :func:`click_through`, and per region the Dice of
        the first mask before any update on the image (``None`` when the user made no click).
    """
    session.set_image(sample.image, image_id=sample.key)
    probe: InteractiveSession | None = None
    if session.adapt and session.strategy.updates_on_click(0):
        probe = InteractiveSession(session.state, click_sigma=session.config.click_sigma, undo_depth=0, adapt=False)
        probe.set_image(sample.image, image_id=sample.key)
    curves: dict[str, list[float]] = {region: [] for region in task.regions}
    before: dict[str, float] | None = None
    click: Click | None = user.first_click(sample.label)
    if click is not None and probe is not None:
        before = region_dice(probe.add_click(click), sample.label, task)
    while click is not None:
        prediction = session.add_click(click)
        for region, value in region_dice(prediction, sample.label, task).items():
            curves[region].append(value)
        if len(session.clicks) >= budget:
            break
        click = user.next_click(sample.label, prediction)
    for values in curves.values():
        values.extend([values[-1]] * (budget - len(values)))
    if before is None and all(curves.values()):
        before = {region: values[0] for region, values in curves.items()}
    return curves, before


def _interact(
    state: ModelState,
    task: TaskSpec,
    sample: Sample,
    user: SimulatedUser,
    budget: int,
    position: int,
    click_sigma: float,
) -> ImageRecord:
    """One image: clicks until the budget or a perfect mask, then finish."""
    session = InteractiveSession(state, click_sigma=click_sigma, undo_depth=0)  # a simulated user never undoes
    curves, before = click_through_probed(session, sample, user, budget, task)
    session.finish()
    timings = list(session.timings)
    finish_s = session.finish_timing.update_s if session.finish_timing is not None else 0.0
    return ImageRecord(
        position=position,
        key=sample.key,
        clicks=list(session.clicks),
        dice=curves,
        forward_s=[timing.forward_s for timing in timings],
        update_s=[timing.update_s for timing in timings],
        finish_s=finish_s,
        versions=[int(version) for version in session.versions],
        version_after=int(state.version),
        first_before_update=before,
    )


def mean_curves(result: StreamResult) -> dict[str, list[float]]:
    """Per region, the mean Dice over the images of a run at each click."""
    return {
        region: [float(v) for v in result.curves(region).mean(axis=0)]
        if result.images
        else [float("nan")] * result.budget
        for region in result.regions
    }


def evaluate_frozen(
    model: nn.Module,
    task: TaskSpec,
    samples: Sequence[Sample],
    user_name: str = "oaims",
    budget: int = DEFAULT_BUDGET,
    seed: int = 0,
    *,
    click_sigma: float = DEFAULT_CLICK_SIGMA,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, list[float]]:
    """Mean Dice per click of a model that does not adapt, e.g. on the source validation set.

    Forgetting is measured by calling this with the original model and with the model a stream run
    left behind (``StreamResult.final_model``), with the same samples and seed.

    Returns:
        Per region, the mean Dice after clicks 1..budget.
    """
    result = run_stream(
        model,
        task,
        samples,
        FROZEN_STRATEGY,
        {},
        user_name,
        budget,
        order_seed=None,
        click_seed=seed,
        progress=progress,
        click_sigma=click_sigma,
        device=device,
    )
    return mean_curves(result)
