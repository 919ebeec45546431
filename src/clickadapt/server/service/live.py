"""The images whose interactive sessions are in memory, and which client (browser tab) holds each.

Each client (``X-Client-Id``) has one current image. An image being labelled by one client is refused to
another until that client moves on, releases it (its tab closed) or is idle for ``claim_timeout_s``; a client
may take it over explicitly. At most ``max_live_sessions`` sessions stay in memory (least recently used go
first; their clicks are in the datastore and are replayed when the image is opened again).

Not thread-safe by itself: the session manager calls it under the service lock.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from clickadapt.adaptation.session import InteractiveSession
from clickadapt.clicks.click import Click
from clickadapt.server.datastore import ClickRecord, CorrectionRecord
from clickadapt.server.service.errors import Conflict


def replay_stored_clicks(session: InteractiveSession, clicks: list[ClickRecord]) -> None:
    """Add stored clicks to a session with adaptation off (the restored weights already contain their updates)."""
    adapt = session.adapt
    session.adapt = False
    try:
        for click in clicks:
            session.add_click(Click(click.row, click.col, click.label))
    finally:
        session.adapt = adapt


@dataclass
class LiveImage:
    """An image whose interactive session is in memory.

    Attributes:
        image_id: The image.
        session_id: Its datastore session.
        session: The interactive session (on the shared model or a source-domain copy).
        client_id: Client that has it open now (``None`` once it moved on).
        last_seen: ``time.monotonic()`` of that client's last request on it.
        message: A note for the next answer (e.g. why an undo kept the weights).
        corrections: Brush and eraser strokes in force, painted over the latest prediction in order.
        replayed_updates: For each click replayed from the datastore (after a restart): whether it changed
            the weights (it ran an update and the model version moved with it). Those updates are in the
            restored weights and cannot be undone any more.
    """

    image_id: str
    session_id: int
    session: InteractiveSession
    client_id: str | None
    last_seen: float
    message: str = ""
    replayed_updates: list[bool] = field(default_factory=list)
    corrections: list[CorrectionRecord] = field(default_factory=list)


class LiveImages:
    """The in-memory sessions by image id (least recently used first) and each client's current image.

    Args:
        claim_timeout_s: Seconds of inactivity after which another client may open a held image.
    """

    def __init__(self, claim_timeout_s: float) -> None:
        self.claim_timeout_s = claim_timeout_s
        self._live: OrderedDict[str, LiveImage] = OrderedDict()
        self._current: dict[str, str] = {}

    def get(self, image_id: str) -> LiveImage | None:
        """The image's in-memory session, if any."""
        return self._live.get(image_id)

    def values(self) -> list[LiveImage]:
        """Every in-memory session, least recently used first."""
        return list(self._live.values())

    def add(self, live: LiveImage) -> None:
        """Keep a session in memory (the most recently used)."""
        self._live[live.image_id] = live

    def drop(self, image_id: str) -> None:
        """Forget an image's in-memory session (no-op without one)."""
        self._live.pop(image_id, None)

    def touch_client(self, client_id: str, image_id: str) -> None:
        """Make ``image_id`` the client's current image; the image it had before is no longer held by it."""
        previous = self._current.get(client_id)
        if previous is not None and previous != image_id and previous in self._live:
            live = self._live[previous]
            if live.client_id == client_id:
                live.client_id = None
        self._current[client_id] = image_id

    def claim(self, live: LiveImage, client_id: str, name: str, take_over: bool = False) -> None:
        """Let ``client_id`` hold the image (refused while another active client holds it, unless ``take_over``).

        Args:
            live: The image's session.
            client_id: The client asking.
            name: The image's name (for the refusal message).
            take_over: Take the image from the other client.

        Raises:
            Conflict: Another client holds it, is still on it and was active within ``claim_timeout_s``.
        """
        now = time.monotonic()
        holder = live.client_id
        if (
            not take_over
            and holder is not None
            and holder != client_id
            and now - live.last_seen < self.claim_timeout_s
            and self._current.get(holder) == live.image_id
        ):
            minutes = max(1, round((self.claim_timeout_s - (now - live.last_seen)) / 60))
            raise Conflict(
                f"“{name}” is open in another browser session (another tab or window); "
                f"it is free again when that tab closes or moves on, or in about {minutes} min. "
                "You can also take it over here (take_over=true)."
            )
        live.client_id = client_id
        live.last_seen = now
        self.touch_client(client_id, live.image_id)
        self._live.move_to_end(live.image_id)

    def release(self, image_id: str, client_id: str) -> None:
        """The client gives the image up; no-op when it does not hold it."""
        live = self._live.get(image_id)
        if live is not None and live.client_id == client_id:
            live.client_id = None
        if self._current.get(client_id) == image_id:
            del self._current[client_id]

    def evict_beyond(self, limit: int, keep: str) -> list[LiveImage]:
        """Drop the least recently used sessions until at most ``limit`` remain (never ``keep``).

        Returns:
            The sessions dropped.
        """
        dropped = []
        while len(self._live) > limit:
            oldest_id, oldest = next(iter(self._live.items()))
            if oldest_id == keep:
                break
            self._live.pop(oldest_id)
            dropped.append(oldest)
            if oldest.client_id is not None and self._current.get(oldest.client_id) == oldest_id:
                self._current.pop(oldest.client_id, None)
        return dropped
