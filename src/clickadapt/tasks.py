"""Segmentation tasks: their classes, image channels and the regions that Dice is reported on."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TaskSpec:
    """What one segmentation task looks like to the network and to the metrics.

    Attributes:
        name: ``"fundus"`` or ``"brain"``.
        class_names: Class names by label index; index 0 is always background.
        image_channels: Channels of the image itself (3 for RGB fundus, 1 for a MRI modality).
        regions: Reported regions, each a union of label indices (fundus disc = rim ∪ cup).
    """

    name: str
    class_names: tuple[str, ...]
    image_channels: int
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of classes, background included (one click map per class)."""
        return len(self.class_names)

    @property
    def input_channels(self) -> int:
        """Channels the network takes: the image plus one click map per class."""
        return self.image_channels + self.num_classes

    def class_index(self, name: str) -> int:
        """Label index of a class given by name; raises ``ValueError`` naming the class."""
        if name not in self.class_names:
            raise ValueError(f"unknown class {name!r} for task {self.name!r}; known: {list(self.class_names)}")
        return self.class_names.index(name)


FUNDUS = TaskSpec(
    name="fundus",
    class_names=("background", "rim", "cup"),
    image_channels=3,
    regions={"disc": (1, 2), "cup": (2,)},
)
BRAIN = TaskSpec(
    name="brain",
    class_names=("background", "lesion"),
    image_channels=1,
    regions={"lesion": (1,)},
)
TASKS: dict[str, TaskSpec] = {FUNDUS.name: FUNDUS, BRAIN.name: BRAIN}


def get_task(name: str) -> TaskSpec:
    """Look a task up by name; raises ``ValueError`` naming the unknown task."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}") from None
