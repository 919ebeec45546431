"""The source rehearsal (off unless labelled source images are given): experience replay of source images.

After every ``rehearsal.every`` finished images, ``rehearsal.images`` labelled source images are replayed
through the strategy's own image update, as if a user had segmented them (one simulated first click) and
accepted their reference label: experience replay, the classic remedy for forgetting in continual
learning, that needs no change to any strategy. These updates pass the guard and the anchor like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from clickadapt.adaptation.model_state import FinishedImage, FinishListener
from clickadapt.adaptation.safety.part import SafetyPart
from clickadapt.adaptation.safety.source_images import _labelled_source_image
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.clicks.simulators import make_simulated_user

if TYPE_CHECKING:
    from clickadapt.adaptation.safety.monitor import SafetyMonitor


class SourceRehearsal(SafetyPart):
    """After every ``rehearsal.every`` finished images, replay ``rehearsal.images`` labelled source images
    through the strategy's own image update, as if a user had segmented them (one simulated first click)."""

    def __init__(self, monitor: SafetyMonitor, images: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        super().__init__(monitor)
        self.images = [_labelled_source_image(image, label, monitor.state, "rehearsal") for image, label in images]
        self._order = np.random.default_rng(monitor.config.rehearsal.seed).permutation(len(self.images))
        self.rehearsed = 0

    def finish_listeners(self) -> list[FinishListener]:
        return [self.image_finished]

    def image_finished(self, finished: FinishedImage) -> None:
        """Rehearse when it is time (the rehearsed images themselves are not heard by the other parts)."""
        monitor = self.monitor
        if monitor.replaying or (monitor.image_index + 1) % monitor.config.rehearsal.every != 0:
            return
        config = monitor.config.rehearsal
        monitor.replaying = True
        try:
            for _ in range(config.images):
                index = int(self._order[self.rehearsed % len(self.images)])
                item = self.images[index]
                user = make_simulated_user(config.user, seed=config.seed * 1_000_003 + self.rehearsed)
                # adapt=False: no click-time update; the model's own click maps (its checkpoint's σ)
                session = InteractiveSession(monitor.state, click_sigma=monitor.click_sigma, undo_depth=0, adapt=False)
                session.set_image(item.image.cpu().numpy(), image_id=f"rehearsal:{index}")
                session.add_click(user.first_click(item.label))
                session.adapt = True  # only the image update: the reference label stands in for the user's mask
                session.finish(final_mask=item.label)
                self.rehearsed += 1
        finally:
            monitor.replaying = False
