"""Safe continual adaptation: an update guard, bounded snapshots, a drift monitor with rollback, an anchor.

A model that learns from its own refined outputs can accumulate errors over a long stream. This package
hangs a safety layer on the shared :class:`~clickadapt.adaptation.model_state.ModelState` without touching
the strategies, so it works with every updating strategy::

    state = ModelState(network, task, make_strategy("oaims", task))
    safety = attach_safety(state)                  # SafetyConfig() defaults: guard + monitor, no anchor
    session = InteractiveSession(state)
    ...                                            # set_image, add_click, …
    final_mask = session.finish()                  # the finished image reaches the safety layer's listeners
    safety.events                                  # [SafetyEvent(kind, image_id, reason, version, …)]

Each part below is a listener of the model state — of its weight updates or of its finished images —
composed by :func:`attach_safety`; the session announces every finished image to the model state, so no
caller can finish an image around them.

What it does:

- **Update guard** (an update listener, so it sees every weight change of every session): an update
  whose loss is not finite, whose weights are not finite, or whose step ‖Δθ‖ is abnormally large —
  relative to ‖θ‖, or to the running median of recent steps of the same kind — is undone at once: the
  weights *and* the strategy's state (Adam moments, generators) go back bit for bit to the last accepted
  state, which the guard keeps in a preallocated buffer (one in-place copy per accepted update). The
  session carries on with the restored weights; nothing is raised at the user.
- **Snapshots** at every finished image, in a bounded history: the last ``recent_snapshots`` images
  densely, plus one every ``sparse_snapshot_every`` images for the last ``sparse_snapshots`` of those,
  so that a rollback can reach back before a slow drift began. The weights the monitor was attached
  with (the source model) are pinned and always a candidate.
- **Drift monitor** on signals that need no ground truth, computed from each finished session:
  the agreement (Dice) between the first-click prediction and the final mask the user accepted, how
  many clicks it took until the prediction agreed with the final mask, and the fraction of the user's
  later clicks the first-click prediction already agreed with. The decision statistic is the first-click
  agreement, compared over a sliding window of ``window`` images either with the *source model on the
  same images* (``reference="source"``, default: one extra forward per image, and the difficulty of a
  new domain cancels out) or with the first ``window`` images after attaching (``reference="window"``).
  When it worsens by more than ``max_drop``, the candidates (source model and the history's good
  snapshots) are replayed on the window's images with their first clicks and scored against the
  accepted masks; the best one is restored if it beats the current weights by ``min_improvement``
  (a ``rollback`` event), otherwise a ``drift_unresolved`` event is recorded and nothing changes.
- **Anchor** (off by default, see ``bench/results/long_stream.md``): after each accepted update,
  θ ← θ − λ(θ − θ_source), an exponential pull towards the source weights that needs no change to the
  update losses.
- **Source sentinel** (off unless labelled source images are given): the drift monitor sees only the
  stream, so it cannot notice that adaptation erodes the source domain (forgetting). Every
  ``sentinel.every`` finished images a simulated user segments a few labelled *source* images (e.g. a
  sample of the training set the vendor ships with the model) with the live weights, frozen; if their
  Dice at ``sentinel.budget`` clicks is more than ``sentinel.max_drop`` below the source model's, the
  weights are pulled back along the straight line to the source weights, θ ← θ_src + α(θ − θ_src), with the
  largest α of ``sentinel.blends`` that brings the sentinel back within the limit (a ``sentinel_pullback``
  event; interpolating adapted and source weights keeps much of the adaptation, cf. WiSE-FT).
- **Source rehearsal** (off unless labelled source images are given): after every ``rehearsal.every``
  finished images, ``rehearsal.images`` labelled source images are replayed through the strategy's own
  image update, as if a user had segmented them (one simulated first click) and accepted their reference
  label: experience replay, the classic remedy for forgetting in continual learning, that needs no change
  to any strategy. These updates pass the guard and the anchor like any other.

The web server persists versions itself; the snapshots here live in memory.

Modules (every public name is re-exported here, so ``from clickadapt.adaptation.safety import …`` is the
import to use):

- :mod:`~clickadapt.adaptation.safety.config`: :class:`SafetyConfig`, :class:`SentinelConfig`,
  :class:`RehearsalConfig`.
- :mod:`~clickadapt.adaptation.safety.events`: :class:`SafetyEvent`, its kinds, :data:`RollbackHook`.
- :mod:`~clickadapt.adaptation.safety.signals`: :class:`ImageSignals`, :func:`image_signals`.
- :mod:`~clickadapt.adaptation.safety.part`: :class:`SafetyPart`, the base of the parts.
- :mod:`~clickadapt.adaptation.safety.guard`: the update guard (:class:`UpdateGuard`, :class:`AcceptedWeights`).
- :mod:`~clickadapt.adaptation.safety.anchor`: the anchor (:class:`SourceAnchor`).
- :mod:`~clickadapt.adaptation.safety.snapshots`: the bounded snapshots (:class:`SnapshotHistory`,
  :class:`SnapshotRecord`).
- :mod:`~clickadapt.adaptation.safety.drift`: the drift monitor with rollback (:class:`DriftMonitor`).
- :mod:`~clickadapt.adaptation.safety.sentinel`: the source sentinel (:class:`SourceSentinel`).
- :mod:`~clickadapt.adaptation.safety.rehearsal`: the source rehearsal (:class:`SourceRehearsal`).
- :mod:`~clickadapt.adaptation.safety.source_images`: validation of their labelled source images.
- :mod:`~clickadapt.adaptation.safety.monitor`: :class:`SafetyMonitor`, what the parts share.
- :mod:`~clickadapt.adaptation.safety.attach`: :func:`attach_safety`, which composes them.
"""

from clickadapt.adaptation.safety.anchor import SourceAnchor
from clickadapt.adaptation.safety.attach import attach_safety
from clickadapt.adaptation.safety.config import RehearsalConfig, SafetyConfig, SentinelConfig
from clickadapt.adaptation.safety.drift import DriftMonitor
from clickadapt.adaptation.safety.events import SAFETY_EVENT_KINDS, RollbackHook, SafetyEvent, SafetyEventKind
from clickadapt.adaptation.safety.guard import AcceptedWeights, UpdateGuard
from clickadapt.adaptation.safety.monitor import SafetyMonitor
from clickadapt.adaptation.safety.part import PartT, SafetyPart
from clickadapt.adaptation.safety.rehearsal import SourceRehearsal
from clickadapt.adaptation.safety.sentinel import SourceSentinel
from clickadapt.adaptation.safety.signals import ImageSignals, image_signals
from clickadapt.adaptation.safety.snapshots import SnapshotHistory, SnapshotRecord

__all__ = [
    "SAFETY_EVENT_KINDS",
    "AcceptedWeights",
    "DriftMonitor",
    "ImageSignals",
    "PartT",
    "RehearsalConfig",
    "RollbackHook",
    "SafetyConfig",
    "SafetyEvent",
    "SafetyEventKind",
    "SafetyMonitor",
    "SafetyPart",
    "SentinelConfig",
    "SnapshotHistory",
    "SnapshotRecord",
    "SourceAnchor",
    "SourceRehearsal",
    "SourceSentinel",
    "UpdateGuard",
    "attach_safety",
    "image_signals",
]
