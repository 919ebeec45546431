"""The autosave writer: saves the shared model's weights after a click in a background thread.

Saving a checkpoint costs far more than a Mid-Interaction update's forward and backward (serialising the
weights, their checksum, the atomic write: about 70 ms of CPU for the shipped 3 M-parameter U-Nets), so the
click's answer does not wait for it any more:

- :meth:`AutosaveWriter.request` (called by the registry under the service lock once a click has been stored)
  only says that the weights changed and wakes the writer thread.
- The thread waits for a quiet moment, :data:`QUIET_S` without a new request (the user looking at the new
  mask), but no longer than :data:`MAX_DELAY_S` after the oldest unsaved request, so that a quick series of
  clicks is not slowed down by a write competing for the CPU (and the GIL) with their forwards.
- It then copies the live weights into a private copy of the network under the model state's lock
  (about 2 ms; the version is read under the same lock, so the copy is consistent), lets go of the lock and
  saves that copy with :func:`~clickadapt.models.checkpoint.save_checkpoint` (atomically, same format as every
  version), then records its version in the datastore (meta ``autosave_version``). The thread runs with a
  lower CPU priority where the platform allows it, so that the next click's forward comes first.
- Requests made while it writes are merged: the next write saves the newest weights (a version that was
  superseded before it could be written is skipped; only the newest matters for a restart).
- :meth:`AutosaveWriter.flush` waits until the newest requested weights are on disk; :meth:`close` flushes and
  stops the thread. The service's ``close`` (server shutdown) calls it, and so does interpreter exit, so a
  clean shutdown never loses an autosave. A crash (``SIGKILL``, power loss) can lose the weight updates of the
  clicks acknowledged since the last write (usually those of the last quarter of a second, at most of the last
  :data:`MAX_DELAY_S` plus one write), never the clicks themselves (they are in the datastore before the
  answer): the restart then resumes from the previous autosave, as it resumes from the last saved version
  without autosave.

The model state's lock is taken by the thread without the service lock, and the thread never takes the
service lock, so the lock order of :mod:`clickadapt.server.service` holds.
"""

from __future__ import annotations

import atexit
import copy
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from clickadapt.adaptation.model_state import ModelState
from clickadapt.models.checkpoint import CheckpointMeta, save_checkpoint

logger = logging.getLogger(__name__)

WRITER_NICE_INCREMENT = 5
"""How much nicer (lower CPU priority) than the server the writer thread runs, where the OS allows it."""
QUIET_S = 0.25
"""Seconds without a new request before the writer starts (clicks in quick succession come first)."""
MAX_DELAY_S = 2.0
"""The longest the writer waits for a quiet moment after the oldest unsaved request."""

MetaFactory = Callable[[int], CheckpointMeta]
"""Makes the checkpoint metadata of the autosave of a version."""
SavedCallback = Callable[[int], None]
"""Called by the writer thread with the version it has just written (records it in the datastore)."""


class AutosaveWriter:
    """Writes ``state``'s weights to ``path`` in a background thread, the newest requested version each time.

    Args:
        state: The shared model state whose weights are saved.
        path: The autosave file (``<store>/models/autosave.pt``).
        make_meta: The checkpoint metadata of a version (called in the writer thread).
        on_saved: Called in the writer thread after each file is in place (records the version).
        saved_version: The version already on disk (nothing is written until a newer one is requested).
        quiet_s: See :data:`QUIET_S`.
        max_delay_s: See :data:`MAX_DELAY_S`.
    """

    def __init__(
        self,
        state: ModelState,
        path: Path,
        make_meta: MetaFactory,
        on_saved: SavedCallback,
        saved_version: int,
        quiet_s: float = QUIET_S,
        max_delay_s: float = MAX_DELAY_S,
    ) -> None:
        self.state = state
        self.path = path
        self.quiet_s = quiet_s
        self.max_delay_s = max_delay_s
        self._make_meta = make_meta
        self._on_saved = on_saved
        self._condition = threading.Condition()
        self._requested = saved_version
        self._handled = saved_version  # the newest version written, or whose write failed
        self._saved = saved_version
        self._writing = False
        self._closed = False
        self._flushing = 0  # callers waiting in flush(): write at once
        self._last_request = 0.0  # time.monotonic() of the newest request
        self._oldest_unsaved: float | None = None  # time.monotonic() of the oldest request the writer has not taken
        self._thread: threading.Thread | None = None
        self._copy: nn.Module | None = None
        self.failures = 0
        """Writes that failed (logged; the previous file stays in place)."""

    @property
    def saved_version(self) -> int:
        """The newest version whose weights are on disk."""
        with self._condition:
            return self._saved

    @property
    def requested_version(self) -> int:
        """The newest version whose weights were asked to be saved."""
        with self._condition:
            return self._requested

    def request(self, version: int) -> None:
        """Ask for the weights of ``version`` (or newer) to be saved; returns at once.

        Raises:
            RuntimeError: After :meth:`close`.
        """
        with self._condition:
            if self._closed:
                raise RuntimeError("the autosave writer is closed")
            if version <= self._requested:
                return
            self._requested = version
            if not self._pending():  # the writer already took newer weights than asked for then
                return
            now = time.monotonic()
            if self._oldest_unsaved is None:
                self._oldest_unsaved = now
            self._last_request = now
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="clickadapt-autosave", daemon=True)
                self._thread.start()
                _OPEN_WRITERS.add(self)
            self._condition.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the newest requested weights are on disk (or a write of them failed).

        Returns:
            Whether nothing is left to write (``False`` when ``timeout`` seconds ran out first).
        """
        with self._condition:
            self._flushing += 1
            self._condition.notify_all()
            try:
                return self._condition.wait_for(lambda: not self._writing and not self._pending(), timeout)
            finally:
                self._flushing -= 1

    def close(self) -> None:
        """Write what is pending, then stop the thread (idempotent)."""
        with self._condition:
            if self._closed:
                return
            self._closed = True
            self._condition.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _pending(self) -> bool:
        return self._requested > self._handled

    def _run(self) -> None:
        lower_thread_priority(WRITER_NICE_INCREMENT)
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._pending() or self._closed)
                if not self._pending():  # closed with nothing left to write
                    _OPEN_WRITERS.discard(self)
                    return
                self._wait_for_quiet()
                self._writing = True
                target = self._requested
                self._oldest_unsaved = None
            written: int | None = None
            try:
                written = self._write()
            except Exception:  # a full disk must not take the server down; the previous file stays
                self.failures += 1
                logger.exception("autosave to %s failed; the previous autosave is kept", self.path)
            with self._condition:
                self._writing = False
                if written is not None:
                    self._saved = max(self._saved, written)
                # Done with what was asked when it started (a failed write is not retried until the next request).
                self._handled = max(self._handled, target, written if written is not None else target)
                self._condition.notify_all()

    def _wait_for_quiet(self) -> None:
        """Wait (holding the condition) until :data:`QUIET_S` passed without a request, at most until
        :data:`MAX_DELAY_S` after the oldest unsaved one; at once when closing or flushing."""
        while not (self._closed or self._flushing):
            oldest = self._last_request if self._oldest_unsaved is None else self._oldest_unsaved
            start = min(self._last_request + self.quiet_s, oldest + self.max_delay_s)
            remaining = start - time.monotonic()
            if remaining <= 0:
                return
            self._condition.wait(remaining)

    def _write(self) -> int:
        """Copy the live weights (under the model's lock) and save the copy; returns its version."""
        with self.state.lock, torch.no_grad():
            if self._copy is None:
                self._copy = copy.deepcopy(self.state.model)
            else:
                self._copy.load_state_dict(self.state.model.state_dict())
            version = self.state.version
        save_checkpoint(self.path, self._copy, self._make_meta(version))
        self._on_saved(version)
        return version


_OPEN_WRITERS: weakref.WeakSet[AutosaveWriter] = weakref.WeakSet()
"""Writers whose thread runs (each thread holds its writer, so they stay here until closed)."""


@atexit.register
def _close_open_writers() -> None:
    """At interpreter exit (before daemon threads are stopped), write what is pending."""
    for writer in list(_OPEN_WRITERS):
        writer.close()


def lower_thread_priority(increment: int) -> None:
    """Raise the calling thread's nice value by ``increment`` (Linux: the nice value is per thread); no-op
    where that is not possible."""
    try:
        thread_id = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread_id, os.getpriority(os.PRIO_PROCESS, thread_id) + increment)
    except (AttributeError, OSError):  # no setpriority (Windows) or not allowed
        pass
