"""The click type shared by simulated users, sessions, strategies and the server."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Click:
    """One user click: a pixel position and the class the user says it belongs to.

    Attributes:
        row: Row index (0-based, image coordinates after preprocessing).
        col: Column index.
        label: Class index of the task (0 = background).
    """

    row: int
    col: int
    label: int

    def validate(self, shape: tuple[int, int], num_classes: int) -> None:
        """Raise ``ValueError`` naming the field if the click lies outside ``shape`` or has an unknown class."""
        height, width = shape
        if not 0 <= self.row < height:
            raise ValueError(f"click row {self.row} is outside the image (height {height})")
        if not 0 <= self.col < width:
            raise ValueError(f"click col {self.col} is outside the image (width {width})")
        if not 0 <= self.label < num_classes:
            raise ValueError(f"click label {self.label} is not a class index (0..{num_classes - 1})")
