"""Simulated users: the click protocols of method.md §5.

Three named, seedable protocols drive an interactive session in benchmarks and tests:

- ``"oaims"`` (:class:`OaimsUser`): the protocol of the OAIMS paper. First click: a uniformly random
  pixel of the largest connected component of the ground-truth foreground. Next click: a uniformly
  random pixel of the largest error component (8-connected, over every (true, predicted) class
  pair), labelled with the true class there.
- ``"center"`` (:class:`CenterUser`): the largest error component's pixel farthest from the
  component's boundary (as in the CVPR 2025 interactive medical segmentation challenge evaluator).
- ``"deepest"`` (:class:`DeepestUser`): the deepest error pixel with no component step (RITM,
  SimpleClick, FocalClick evaluation).

Every user owns one :class:`numpy.random.Generator` built from its seed and keeps no other state, so
the same seed and the same sequence of calls give the same clicks. Reports should always say which
protocol produced a number (``user.name``).

Imperfect users (:class:`NoisyUser`) wrap one of the three with modifiers written after a ``+`` in the
name, e.g. ``"oaims+jitter3+wrong10+stop90"``:

- ``jitterN``: every click moves by a Gaussian offset of N px per axis (rounded, clipped to the image);
- ``wrongN``: N % of the clicks carry a wrong class (another class of the task, uniformly);
- ``stopN``: the user stops once every labelled class has Dice ≥ N % (a satisfied user clicks no more).

The noise has its own generator, derived from the seed, so the base protocol's draws are unchanged.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy import ndimage

from clickadapt.clicks.click import Click

EIGHT_CONNECTIVITY = np.ones((3, 3), dtype=bool)
"""Structuring element of ``scipy.ndimage.label`` for 8-connected components."""

SIMULATED_USER_NAMES: tuple[str, ...] = ("oaims", "center", "deepest")
"""Names accepted by :func:`make_simulated_user`."""

SeedLike = int | np.random.Generator | None
"""A seed for :func:`numpy.random.default_rng`, or a generator to share (used as is)."""


@dataclass(frozen=True, eq=False)
class ErrorComponent:
    """One 8-connected region where the prediction has one wrong class instead of one true class.

    Attributes:
        mask: Boolean ``(H, W)`` mask of the component.
        true_class: Ground-truth class of every pixel of the component.
        predicted_class: Predicted class of every pixel of the component (``!= true_class``).
        area: Number of pixels.

    For code written against the earlier ``(mask, true_class)`` tuple contract, a component also
    unpacks as ``mask, true_class = component``.
    """

    mask: np.ndarray
    true_class: int
    predicted_class: int
    area: int

    def __iter__(self) -> Iterator[Any]:
        """Unpack as ``(mask, true_class)``."""
        yield self.mask
        yield self.true_class


@dataclass(frozen=True, eq=False)
class _ComponentRef:
    """A component of one (true, predicted) pair, without its own mask (cheap to keep many of them)."""

    labelled: np.ndarray
    index: int
    true_class: int
    predicted_class: int
    area: int

    def mask(self) -> np.ndarray:
        return self.labelled == self.index

    def materialise(self) -> ErrorComponent:
        return ErrorComponent(self.mask(), self.true_class, self.predicted_class, self.area)


def _as_label_map(array: np.ndarray, name: str) -> np.ndarray:
    """Check that ``array`` is a 2D map of non-negative class indices and return it as ``int64``."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2D (H, W) class map, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if array.size and array.min() < 0:
        raise ValueError(f"{name} holds a negative class index ({array.min()})")
    return array


def _as_label_pair(label: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    label = _as_label_map(label, "label")
    prediction = _as_label_map(prediction, "prediction")
    if label.shape != prediction.shape:
        raise ValueError(f"label shape {label.shape} differs from prediction shape {prediction.shape}")
    return label, prediction


def _component_refs(
    label: np.ndarray,
    prediction: np.ndarray,
    max_total: int | None = None,
    max_per_true_class: int | None = None,
) -> list[_ComponentRef]:
    """Error components of an already validated pair, sorted like :func:`error_components`.

    Sorting happens on arrays and reference objects are only built for the components kept, so a
    noisy prediction with many thousands of specks stays cheap.

    Args:
        label: Validated ground truth.
        prediction: Validated prediction of the same shape.
        max_total: Keep only this many of the largest components.
        max_per_true_class: Keep only this many of the largest components of each true class.
    """
    errors = label != prediction
    if not errors.any():
        return []
    num_codes = int(max(label.max(), prediction.max())) + 1
    pair_codes = label * num_codes + prediction
    pair_maps: list[tuple[np.ndarray, int, int]] = []
    areas, true_classes, predicted_classes, indices, slots = [], [], [], [], []
    for slot, code in enumerate(np.unique(pair_codes[errors])):
        true_class, predicted_class = divmod(int(code), num_codes)
        labelled, count = ndimage.label(pair_codes == code, structure=EIGHT_CONNECTIVITY)
        pair_maps.append((labelled, true_class, predicted_class))
        areas.append(np.bincount(labelled.ravel(), minlength=count + 1)[1:])
        true_classes.append(np.full(count, true_class))
        predicted_classes.append(np.full(count, predicted_class))
        # ndimage.label numbers components in raster order of their first pixel, so the index
        # breaks ties between equally large components of one pair deterministically.
        indices.append(np.arange(1, count + 1))
        slots.append(np.full(count, slot))
    area, true, predicted, index, slot_of = (
        np.concatenate(parts) for parts in (areas, true_classes, predicted_classes, indices, slots)
    )
    order = np.lexsort((index, predicted, true, -area))  # the last key is the primary one
    if max_per_true_class is not None:
        sorted_true = true[order]
        keep = np.zeros(order.size, dtype=bool)
        for true_class in np.unique(sorted_true):
            keep[np.flatnonzero(sorted_true == true_class)[:max_per_true_class]] = True
        order = order[keep]
    if max_total is not None:
        order = order[:max_total]
    return [
        _ComponentRef(
            pair_maps[slot_of[i]][0], int(index[i]), pair_maps[slot_of[i]][1], pair_maps[slot_of[i]][2], int(area[i])
        )
        for i in order
    ]


def error_components(
    label: np.ndarray, prediction: np.ndarray, max_components: int | None = None
) -> list[ErrorComponent]:
    """Split the prediction's errors into 8-connected components, largest first.

    Errors are grouped by (true class, predicted class) pair, every pair with ``true != predicted``,
    and each group is split into 8-connected components (``scipy.ndimage.label``). Components are
    sorted by area, descending; ties are broken by true class, then predicted class, then the raster
    position of the component's first pixel, so the order is fully deterministic.

    Args:
        label: Ground truth (or pseudo-label) ``(H, W)`` of class indices.
        prediction: Predicted ``(H, W)`` class indices.
        max_components: Keep only this many of the largest components (``None``: all). Masks are
            only built for the components returned.

    Returns:
        The components; empty when the prediction equals the label everywhere.

    Raises:
        ValueError: If the arrays are not 2D integer maps of the same shape.
    """
    label, prediction = _as_label_pair(label, prediction)
    return [ref.materialise() for ref in _component_refs(label, prediction, max_total=max_components)]


def random_pixel(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A uniformly random ``(row, col)`` of the true pixels of a 2D boolean mask.

    Raises:
        ValueError: If the mask is empty.
    """
    flat = np.flatnonzero(mask)
    if flat.size == 0:
        raise ValueError("cannot pick a pixel from an empty mask")
    row, col = np.unravel_index(int(flat[rng.integers(flat.size)]), mask.shape)
    return int(row), int(col)


def largest_connected_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2D boolean mask (ties: the one met first in raster order).

    Raises:
        ValueError: If the mask is empty.
    """
    labelled, count = ndimage.label(mask, structure=EIGHT_CONNECTIVITY)
    if count == 0:
        raise ValueError("cannot take the largest component of an empty mask")
    areas = np.bincount(labelled.ravel(), minlength=count + 1)
    areas[0] = 0
    return np.asarray(labelled == int(np.argmax(areas)))


def distance_to_boundary(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each mask pixel to the nearest pixel outside the mask.

    The mask is padded by one background pixel first, so the image edge counts as boundary.
    Pixels outside the mask get 0.
    """
    padded = np.pad(np.asarray(mask, dtype=bool), 1)
    return np.asarray(ndimage.distance_transform_edt(padded))[1:-1, 1:-1]


def _first_click_mask(label: np.ndarray, first_click_class: int | Sequence[int] | None) -> np.ndarray:
    """The pixels a first click may go to: the foreground ``label > 0``, or the given classes.

    Raises:
        ValueError: If there is no such pixel.
    """
    if first_click_class is None:
        region = label > 0
        description = "foreground pixel (label > 0)"
    else:
        classes = [int(value) for value in np.atleast_1d(np.asarray(first_click_class))]
        region = np.isin(label, classes)
        description = f"pixel of class {classes}"
    if not region.any():
        raise ValueError(f"label has no foreground: no {description} to place the first click in")
    return np.asarray(region)


@runtime_checkable
class SimulatedUser(Protocol):
    """What a simulated user offers a session driver."""

    name: str

    def first_click(self, label: np.ndarray) -> Click:
        """The first click on an image, from its ground truth ``(H, W)``."""
        ...

    def next_click(self, label: np.ndarray, prediction: np.ndarray) -> Click | None:
        """The next correction click, or ``None`` when the prediction equals the label everywhere."""
        ...


class _BaseUser(ABC):
    """Seed handling shared by the concrete users."""

    name = "base"

    def __init__(self, seed: SeedLike = 0, first_click_class: int | Sequence[int] | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.first_click_class = first_click_class

    def __repr__(self) -> str:
        return f"{type(self).__name__}(first_click_class={self.first_click_class!r})"

    @abstractmethod
    def first_click(self, label: np.ndarray) -> Click:
        """The first click on an image, from its ground truth ``(H, W)``."""

    @abstractmethod
    def next_click(self, label: np.ndarray, prediction: np.ndarray) -> Click | None:
        """The next correction click, or ``None`` when the prediction equals the label everywhere."""


class OaimsUser(_BaseUser):
    """The OAIMS paper's protocol (method.md §5): random pixels of the largest region.

    Args:
        seed: Seed of the user's random generator (or a generator to share).
        first_click_class: Restrict the first click to the pixels of this class (or these classes,
            e.g. ``FUNDUS.regions["cup"]``); default: the whole foreground ``label > 0`` (for fundus
            this is the disc, rim ∪ cup).
    """

    name = "oaims"

    def first_click(self, label: np.ndarray) -> Click:
        """A uniformly random pixel of the largest foreground component, labelled with its class.

        Raises:
            ValueError: If the label has no foreground (or no pixel of ``first_click_class``).
        """
        label = _as_label_map(label, "label")
        row, col = random_pixel(largest_connected_component(_first_click_mask(label, self.first_click_class)), self.rng)
        return Click(row, col, int(label[row, col]))

    def next_click(self, label: np.ndarray, prediction: np.ndarray) -> Click | None:
        """A uniformly random pixel of the largest error component, labelled with its true class."""
        label, prediction = _as_label_pair(label, prediction)
        components = _component_refs(label, prediction, max_total=1)
        if not components:
            return None
        largest = components[0]
        row, col = random_pixel(largest.mask(), self.rng)
        return Click(row, col, largest.true_class)


class CenterUser(_BaseUser):
    """The "center" protocol: the pixel farthest from the boundary of the largest region.

    The distance is ``scipy.ndimage.distance_transform_edt`` of the region padded by one pixel, so
    the image edge counts as boundary. When several pixels share the maximum distance one of them is
    drawn uniformly with the user's generator (as the CVPR 2025 challenge evaluator does); this is
    the only use of the seed.

    Args:
        seed: Seed of the user's random generator (or a generator to share).
        first_click_class: As for :class:`OaimsUser`.
    """

    name = "center"

    def _deepest_pixel(self, mask: np.ndarray) -> tuple[int, int]:
        distance = distance_to_boundary(mask)
        maxima = np.argwhere(distance == distance.max())
        row, col = maxima[self.rng.integers(len(maxima))]
        return int(row), int(col)

    def first_click(self, label: np.ndarray) -> Click:
        """The centre (distance maximum) of the largest foreground component, labelled with its class.

        Raises:
            ValueError: If the label has no foreground (or no pixel of ``first_click_class``).
        """
        label = _as_label_map(label, "label")
        row, col = self._deepest_pixel(largest_connected_component(_first_click_mask(label, self.first_click_class)))
        return Click(row, col, int(label[row, col]))

    def next_click(self, label: np.ndarray, prediction: np.ndarray) -> Click | None:
        """The centre of the largest error component, labelled with its true class."""
        label, prediction = _as_label_pair(label, prediction)
        components = _component_refs(label, prediction, max_total=1)
        if not components:
            return None
        largest = components[0]
        row, col = self._deepest_pixel(largest.mask())
        return Click(row, col, largest.true_class)


class DeepestUser(_BaseUser):
    """The RITM "deepest error" protocol, generalised to several classes.

    Next click: the error pixels are split by their *true* class ``t`` into
    ``E_t = (label == t) & (prediction != t)``, with no connected-component step. Each ``E_t`` gets
    its distance to boundary (EDT of ``E_t`` padded by one pixel, so the image edge is boundary). The
    click goes to the deepest pixel over all ``E_t`` and is labelled ``t``. With two classes,
    ``E_1`` is exactly the false negatives and ``E_0`` the false positives, so this is RITM's rule:
    a positive click when the false-negative maximum is larger, a negative one otherwise (equal
    maxima go to the lower class index, i.e. the negative click, as in RITM). Within the winning
    ``E_t`` the first maximal pixel in raster order is taken, as RITM does; the protocol is
    deterministic and the seed is unused. Being stateless, the user does not exclude pixels it
    clicked before (RITM's evaluator does): if the model ignores a click, the same pixel comes again.

    First click: the deepest pixel of the first-click region (the whole foreground, or
    ``first_click_class``), i.e. the next click against an empty prediction, labelled with the class
    there.

    Args:
        seed: Accepted for a uniform interface; unused.
        first_click_class: As for :class:`OaimsUser`.
    """

    name = "deepest"

    def first_click(self, label: np.ndarray) -> Click:
        """The deepest pixel of the first-click region, labelled with its class.

        Raises:
            ValueError: If the label has no foreground (or no pixel of ``first_click_class``).
        """
        label = _as_label_map(label, "label")
        region = _first_click_mask(label, self.first_click_class)
        distance = distance_to_boundary(region)
        row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
        return Click(int(row), int(col), int(label[row, col]))

    def next_click(self, label: np.ndarray, prediction: np.ndarray) -> Click | None:
        """The deepest error pixel over all true classes (see the class docstring)."""
        label, prediction = _as_label_pair(label, prediction)
        errors = label != prediction
        if not errors.any():
            return None
        best: tuple[float, int, int] | None = None  # (distance, flat index, true class)
        for true_class in np.unique(label[errors]):
            distance = distance_to_boundary(errors & (label == true_class))
            flat = int(np.argmax(distance))
            depth = float(distance.flat[flat])
            if best is None or depth > best[0]:
                best = (depth, flat, int(true_class))
        assert best is not None
        row, col = np.unravel_index(best[1], label.shape)
        return Click(int(row), int(col), best[2])


_USER_CLASSES: dict[str, type[_BaseUser]] = {
    OaimsUser.name: OaimsUser,
    CenterUser.name: CenterUser,
    DeepestUser.name: DeepestUser,
}


def _least_class_dice(label: np.ndarray, prediction: np.ndarray) -> float:
    """The smallest Dice over the classes > 0 present in ``label`` (1.0 when there is none)."""
    scores = []
    for value in np.unique(label):
        if value == 0:
            continue
        truth, predicted = label == value, prediction == value
        scores.append(2.0 * np.logical_and(truth, predicted).sum() / (truth.sum() + predicted.sum()))
    return float(min(scores)) if scores else 1.0


class NoisyUser:
    """An imperfect user: a base protocol with click jitter, wrong-class clicks and early stopping.

    Args:
        base: The exact protocol whose clicks are perturbed.
        seed: Seed of the noise (a generator derived from it, separate from the base user's).
        jitter_px: Standard deviation (px, per axis) of the Gaussian offset of every click; 0 = none.
        wrong_class_share: Probability that a click carries another class than the one the base chose.
        stop_dice: Stop (``next_click`` returns ``None``) once every labelled class has at least this Dice;
            ``None`` = click until the budget.
        num_classes: Classes of the task (for wrong-class clicks); default: the label's largest class + 1
            (at least 2).

    Raises:
        ValueError: For a negative jitter, a share outside [0, 1] or a stop Dice outside (0, 1].
    """

    def __init__(
        self,
        base: SimulatedUser,
        seed: SeedLike = 0,
        jitter_px: float = 0.0,
        wrong_class_share: float = 0.0,
        stop_dice: float | None = None,
        num_classes: int | None = None,
    ) -> None:
        if jitter_px < 0:
            raise ValueError(f"jitter_px must be >= 0, got {jitter_px}")
        if not 0.0 <= wrong_class_share <= 1.0:
            raise ValueError(f"wrong_class_share must lie in [0, 1], got {wrong_class_share}")
        if stop_dice is not None and not 0.0 < stop_dice <= 1.0:
            raise ValueError(f"stop_dice must lie in (0, 1], got {stop_dice}")
        self.base = base
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng([0x6E6F, seed or 0])
        self.jitter_px = jitter_px
        self.wrong_class_share = wrong_class_share
        self.stop_dice = stop_dice
        self.num_classes = num_classes
        parts = [getattr(base, "name", "user")]
        if jitter_px:
            parts.append(f"jitter{jitter_px:g}")
        if wrong_class_share:
            parts.append(f"wrong{100 * wrong_class_share:g}")
        if stop_dice is not None:
            parts.append(f"stop{100 * stop_dice:g}")
        self.name = "+".join(parts)

    def __repr__(self) -> str:
        return f"NoisyUser({self.name!r})"

    def _perturb(self, click: Click, label: np.ndarray) -> Click:
        row, col, cls = click.row, click.col, click.label
        if self.jitter_px:
            height, width = label.shape
            dr, dc = self.rng.normal(0.0, self.jitter_px, size=2)
            row = int(np.clip(round(row + dr), 0, height - 1))
            col = int(np.clip(round(col + dc), 0, width - 1))
        if self.wrong_class_share and self.rng.random() < self.wrong_class_share:
            classes = self.num_classes or max(int(label.max()) + 1, 2)
            others = [value for value in range(classes) if value != cls]
            cls = int(self.rng.choice(others))
        return Click(row, col, cls)

    def first_click(self, label: np.ndarray) -> Click:
        """The base protocol's first click, perturbed."""
        return self._perturb(self.base.first_click(label), np.asarray(label))

    def next_click(self, label: np.ndarray, prediction: np.ndarray) -> Click | None:
        """``None`` once satisfied (``stop_dice``) or when the base user stops; else its click, perturbed."""
        label = np.asarray(label)
        if self.stop_dice is not None and _least_class_dice(label, np.asarray(prediction)) >= self.stop_dice:
            return None
        click = self.base.next_click(label, prediction)
        return None if click is None else self._perturb(click, label)


_MODIFIER = re.compile(r"^(jitter|wrong|stop)(\d+(?:\.\d+)?)$")


def make_simulated_user(
    name: str, seed: SeedLike = 0, first_click_class: int | Sequence[int] | None = None
) -> SimulatedUser:
    """Build a simulated user by protocol name.

    Args:
        name: One of :data:`SIMULATED_USER_NAMES` (``"oaims"``, ``"center"``, ``"deepest"``), optionally
            followed by noise modifiers (``"oaims+jitter3+wrong10+stop90"``, see :class:`NoisyUser`).
        seed: Seed of the user's random generator.
        first_click_class: Restrict the first click to this class (or these classes).

    Raises:
        ValueError: If the name or a modifier is unknown; the message lists the known names.
    """
    base_name, *modifiers = name.split("+")
    try:
        user_class = _USER_CLASSES[base_name]
    except KeyError:
        raise ValueError(
            f"unknown simulated user {name!r}; choose one of {', '.join(SIMULATED_USER_NAMES)}, optionally with "
            "+jitterN, +wrongN, +stopN"
        ) from None
    base = user_class(seed, first_click_class)
    if not modifiers:
        return base
    settings: dict[str, float] = {}
    for modifier in modifiers:
        match = _MODIFIER.match(modifier)
        if match is None or match.group(1) in settings:
            raise ValueError(f"simulated user {name!r}: bad or repeated modifier {modifier!r} (jitterN, wrongN, stopN)")
        settings[match.group(1)] = float(match.group(2))
    noise_seed = seed if not isinstance(seed, np.random.Generator) else seed.spawn(1)[0]
    return NoisyUser(
        base,
        noise_seed,
        jitter_px=settings.get("jitter", 0.0),
        wrong_class_share=settings.get("wrong", 0.0) / 100.0,
        stop_dice=None if "stop" not in settings else settings["stop"] / 100.0,
    )
