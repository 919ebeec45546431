"""The anchor (off by default, see ``bench/results/long_stream.md``): a pull towards the source weights.

After each accepted update, θ ← θ − λ(θ − θ_source), an exponential pull towards the source weights that
needs no change to the update losses.
"""

from __future__ import annotations

import torch

from clickadapt.adaptation.model_state import UpdateEvent, UpdateListener
from clickadapt.adaptation.safety.part import SafetyPart


class SourceAnchor(SafetyPart):
    """After each accepted update, θ ← θ − λ(θ − θ_source) for every parameter (λ = ``anchor_rate``)."""

    def update_listeners(self) -> list[UpdateListener]:
        return [self.pull]

    def pull(self, event: UpdateEvent) -> None:
        """Pull the weights of a current click or image update towards the source weights."""
        state = self.monitor.state
        if event.kind in ("restore", "load") or event.version != state.version:
            return
        rate = self.monitor.config.anchor_rate
        with torch.no_grad():
            for name, parameter in state.model.named_parameters():
                parameter.lerp_(self.monitor.source_parameters[name], rate)
