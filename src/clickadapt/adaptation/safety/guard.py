"""The update guard: undo an abnormal weight update at once, back to the last accepted weights.

An update listener, so it sees every weight change of every session: an update whose loss is not
finite, whose weights are not finite, or whose step ‖Δθ‖ is abnormally large — relative to ‖θ‖, or to
the running median of recent steps of the same kind — is undone at once: the weights *and* the
strategy's state (Adam moments, generators) go back bit for bit to the last accepted state, which
:class:`AcceptedWeights` keeps in a preallocated buffer (one in-place copy per accepted update). The
session carries on with the restored weights; nothing is raised at the user.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from clickadapt.adaptation.model_state import StateSnapshot, UpdateEvent, UpdateListener
from clickadapt.adaptation.safety.events import SafetyEvent
from clickadapt.adaptation.safety.part import SafetyPart

if TYPE_CHECKING:
    from clickadapt.adaptation.safety.monitor import SafetyMonitor


def _copy_into(target: Any, source: Any) -> Any:
    """Copy ``source`` (nested dicts/lists/tuples of tensors and values) into ``target``'s tensors in place.

    Tensors of matching shape, dtype and device are reused (no allocation); anything else is cloned.
    Returns the new ``target``.
    """
    if isinstance(source, torch.Tensor):
        if (
            isinstance(target, torch.Tensor)
            and target.shape == source.shape
            and target.dtype == source.dtype
            and target.device == source.device
        ):
            target.copy_(source)
            return target
        return source.detach().clone()
    if isinstance(source, dict):
        old = target if isinstance(target, dict) else {}
        return {key: _copy_into(old.get(key), value) for key, value in source.items()}
    if isinstance(source, list | tuple):
        previous = list(target) if isinstance(target, list | tuple) and len(target) == len(source) else []
        items = [_copy_into(previous[i] if previous else None, value) for i, value in enumerate(source)]
        return items if isinstance(source, list) else tuple(items)
    return copy.deepcopy(source)


class AcceptedWeights(SafetyPart):
    """The last accepted weights and strategy state, kept in preallocated buffers (one in-place copy per
    accepted update): what :class:`UpdateGuard` restores. Its listener remembers every update that is still
    current after the guard and the anchor, and every restore or load (undo, rollback)."""

    def __init__(self, monitor: SafetyMonitor) -> None:
        super().__init__(monitor)
        self.model_state: dict[str, torch.Tensor] = {}
        self.strategy_state: dict[str, Any] = {}
        self.strategy = ""
        self.version = monitor.state.version
        self.remember()

    def update_listeners(self) -> list[UpdateListener]:
        return [self.accept]

    def accept(self, event: UpdateEvent) -> None:
        """Remember the weights of a current update as accepted."""
        if event.version == self.monitor.state.version:
            self.remember()

    def remember(self) -> None:
        """Copy the live weights and strategy state into the buffers."""
        state = self.monitor.state
        with torch.no_grad():
            self.model_state = _copy_into(self.model_state, state.model.state_dict())
            self.strategy_state = _copy_into(self.strategy_state, state.strategy.state_dict())
        self.strategy = state.strategy.name
        self.version = state.version

    def snapshot(self) -> StateSnapshot:
        """The accepted state as a snapshot (its tensors are the buffers themselves)."""
        return StateSnapshot(self.version, self.strategy, self.model_state, self.strategy_state)


class UpdateGuard(SafetyPart):
    """Undo an update whose loss or weights are not finite or whose step is abnormally large (see the module
    docstring); the last accepted weights and strategy state are kept in preallocated buffers.

    Its listener :meth:`check` comes first; the accepted state is :class:`AcceptedWeights`, attached after
    the anchor. A listener acts only on an update that is still current (``event.version ==
    state.version``), so an update the guard undid reaches nobody after it.
    """

    def __init__(self, monitor: SafetyMonitor, accepted: AcceptedWeights) -> None:
        super().__init__(monitor)
        self.accepted = accepted
        self._step_norms: dict[str, deque[float]] = {}

    def update_listeners(self) -> list[UpdateListener]:
        return [self.check]

    def check(self, event: UpdateEvent) -> None:
        """Undo ``event``'s update if it is abnormal (an ``update_rejected`` event)."""
        if event.kind in ("restore", "load") or event.version != self.monitor.state.version:
            return
        reason = self._abnormal(event)
        if reason is not None:
            self._reject(event, reason)

    def _abnormal(self, event: UpdateEvent) -> str | None:
        """Why the update is abnormal, or ``None`` (and the step is recorded) if it is acceptable."""
        config = self.monitor.config
        bad_losses = {name: value for name, value in event.losses.items() if not math.isfinite(value)}
        if bad_losses:
            return f"loss not finite ({', '.join(f'{name}={value}' for name, value in bad_losses.items())})"
        step, norm = self._step_norm()
        if not (math.isfinite(step) and math.isfinite(norm)):
            return "weights not finite after the update"
        relative = step / max(norm, 1e-12)
        if relative > config.max_relative_step:
            return f"step ‖Δθ‖/‖θ‖ = {relative:.3g} above the limit {config.max_relative_step:g}"
        recent = self._step_norms.setdefault(event.kind, deque(maxlen=config.step_median_of))
        if len(recent) >= config.step_median_after:
            median = float(np.median(recent))
            if step > config.max_step_over_median * median:
                return (
                    f"step ‖Δθ‖ = {step:.3g} is {step / median:.1f}× the median {median:.3g} of the last "
                    f"{len(recent)} {event.kind} updates (limit {config.max_step_over_median:g}×)"
                )
        recent.append(step)
        return None

    def _step_norm(self) -> tuple[float, float]:
        """‖θ − θ_accepted‖ and ‖θ_accepted‖ over the floating-point entries of the state dict."""
        step_sq = 0.0
        norm_sq = 0.0
        with torch.no_grad():
            for name, tensor in self.monitor.state.model.state_dict().items():
                if not tensor.is_floating_point():
                    continue
                accepted = self.accepted.model_state[name]
                step_sq += float(torch.linalg.vector_norm(tensor - accepted)) ** 2
                norm_sq += float(torch.linalg.vector_norm(accepted)) ** 2
        return math.sqrt(step_sq), math.sqrt(norm_sq)

    def _reject(self, event: UpdateEvent, reason: str) -> None:
        state = self.monitor.state
        snapshot = self.accepted.snapshot()
        if snapshot.strategy == state.strategy.name:
            state.restore(snapshot)
            restored = "weights and strategy state restored"
        else:  # the strategy was switched since; its own state cannot come from the buffer
            state.load_weights(snapshot.model_state)
            restored = "weights restored (strategy switched since; its state kept)"
        self.monitor.record(
            SafetyEvent(
                kind="update_rejected",
                image_id=event.image_id,
                reason=f"{event.kind} update to version {event.version} rejected: {reason}; {restored}",
                version=state.version,
                image_index=self.monitor.image_index,
                restored_version=snapshot.version,
            )
        )
