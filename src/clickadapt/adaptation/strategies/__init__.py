"""Online adaptation strategies and :func:`make_strategy`, the one way to build them by name.

========== ================================================ ==========================
name       what it does                                     when weights change
========== ================================================ ==========================
frozen     nothing (the paper's ICNN*)                      never
post       Post-Interaction, 2 steps per image (§7.2)       finish
mid        Mid-Interaction, 1 step per click (§7.1)         clicks 2, 3, …
oaims      PI + MI (the paper's method)                     clicks 2, 3, … and finish
ia-sa      Kontogianni et al. 2020, sparse click labels     every click (finish in IA-only mode)
tsca       Atanyan et al. 2024, student + EMA teacher       every click
tent       entropy minimisation, norm affine parameters     every click (or finish)
self-train CE on the model's own final mask                 finish
========== ================================================ ==========================
"""

from __future__ import annotations

from typing import Any

from clickadapt.adaptation.strategies.base import (
    AdaptationStrategy,
    ClickEvent,
    ImageEvent,
    ImageStartEvent,
    StepReport,
    StrategyConfig,
    default_learning_rate,
)
from clickadapt.adaptation.strategies.frozen import FrozenConfig, FrozenStrategy
from clickadapt.adaptation.strategies.ia_sa import IaSaConfig, IaSaStrategy
from clickadapt.adaptation.strategies.mid_interaction import MidInteractionConfig, MidInteractionStrategy
from clickadapt.adaptation.strategies.oaims import OaimsConfig, OaimsStrategy
from clickadapt.adaptation.strategies.post_interaction import PostInteractionConfig, PostInteractionStrategy
from clickadapt.adaptation.strategies.self_training import SelfTrainingConfig, SelfTrainingStrategy
from clickadapt.adaptation.strategies.tent import TentConfig, TentStrategy
from clickadapt.adaptation.strategies.tsca import TscaConfig, TscaStrategy
from clickadapt.tasks import TaskSpec

STRATEGIES: dict[str, tuple[type[AdaptationStrategy], type[StrategyConfig]]] = {
    "frozen": (FrozenStrategy, FrozenConfig),
    "post": (PostInteractionStrategy, PostInteractionConfig),
    "mid": (MidInteractionStrategy, MidInteractionConfig),
    "oaims": (OaimsStrategy, OaimsConfig),
    "ia-sa": (IaSaStrategy, IaSaConfig),
    "tsca": (TscaStrategy, TscaConfig),
    "tent": (TentStrategy, TentConfig),
    "self-train": (SelfTrainingStrategy, SelfTrainingConfig),
}
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGIES)


def strategy_config(name: str, **overrides: Any) -> StrategyConfig:
    """The validated settings of strategy ``name`` with ``overrides`` applied.

    Raises:
        ValueError: For an unknown strategy name or an unknown / invalid setting (the message names it).
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown adaptation strategy {name!r}; known: {list(STRATEGY_NAMES)}")
    _, config_class = STRATEGIES[name]
    try:
        return config_class.model_validate(overrides)
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise ValueError(f"invalid settings for strategy {name!r}: {error}") from error


def make_strategy(name: str, task: TaskSpec, **overrides: Any) -> AdaptationStrategy:
    """Build an (unbound) adaptation strategy by name.

    Args:
        name: One of :data:`STRATEGY_NAMES`.
        task: The task (sets the default learning rate: 1e-4 fundus, 5e-5 brain).
        **overrides: Settings of the strategy's config class (e.g. ``lr=1e-3``, ``click_loss=False``).

    Returns:
        The strategy; bind it to a model through :class:`~clickadapt.adaptation.model_state.ModelState`.

    Raises:
        ValueError: For an unknown name or setting.
    """
    config = strategy_config(name, **overrides)
    strategy_class, _ = STRATEGIES[name]
    return strategy_class(task, config)


__all__ = [
    "STRATEGIES",
    "STRATEGY_NAMES",
    "AdaptationStrategy",
    "ClickEvent",
    "FrozenStrategy",
    "IaSaStrategy",
    "ImageEvent",
    "ImageStartEvent",
    "MidInteractionStrategy",
    "OaimsStrategy",
    "PostInteractionStrategy",
    "SelfTrainingStrategy",
    "StepReport",
    "StrategyConfig",
    "TentStrategy",
    "TscaStrategy",
    "default_learning_rate",
    "make_strategy",
    "strategy_config",
]
