"""Domain-scoped adaptation: one adapting copy per domain, the source domain frozen or episodic."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from adaptation_testing import BRAIN_CLICKS, equal_states, one_torch_thread, synthetic_image, tiny_network, weights

from clickadapt.adaptation.domains import DomainScopedModels, EpisodicModel, mid_interaction_overrides
from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.safety import SafetyConfig
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.tasks import BRAIN


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


def segment_one(models: DomainScopedModels, domain: str, seed: int = 0) -> None:
    state = models.state(domain, f"{domain}-{seed}")
    session = InteractiveSession(state, undo_depth=0)
    session.set_image(synthetic_image(BRAIN, seed), image_id=f"{domain}-{seed}")
    for click in BRAIN_CLICKS[:3]:
        session.add_click(click)
    session.finish()  # the domain's model hears it: its safety layer, an episodic reset


def test_each_domain_adapts_its_own_copy_and_the_source_domain_stays_frozen() -> None:
    network = tiny_network(BRAIN)
    source = weights(network)
    models = DomainScopedModels(network, BRAIN, "oaims", source_domains={"source"}, safety=SafetyConfig())
    segment_one(models, "site-A")
    assert models.domains == ["site-A"] and models.state("site-A").version > 0
    assert not equal_states(weights(models.state("site-A").model), source)
    segment_one(models, "site-B")  # starts from the source weights, not from site A's
    assert models.state("site-B").version == models.state("site-A").version
    segment_one(models, "source")
    assert models.state("source").version == 0 and equal_states(weights(models.state("source").model), source)
    assert models.monitor("source") is None and models.monitor("site-A") is not None
    assert sorted(models.monitors()) == ["site-A", "site-B"] and models.is_source("source")
    assert models.monitors()["site-A"].images_seen == 1 and models.monitors()["site-B"].images_seen == 1
    assert equal_states(weights(network), source)  # the caller's network never changes


def test_domains_without_safety_and_bad_arguments() -> None:
    models = DomainScopedModels(tiny_network(BRAIN), BRAIN, "post")
    assert models.monitor("site-A") is None and models.state("site-A").strategy.name == "post"
    with pytest.raises(ValueError, match="domain name is required"):
        models.state("")
    with pytest.raises(ValueError, match="unknown"):
        DomainScopedModels(tiny_network(BRAIN), BRAIN, "no-such-strategy")


def test_episodic_source_images_adapt_during_their_clicks_and_the_source_weights_come_back() -> None:
    network = tiny_network(BRAIN)
    source = weights(network)
    # lr and seed are OAIMS settings; only the MI ones (lr) reach the source domain's ``mid`` strategy.
    models = DomainScopedModels(
        network, BRAIN, "oaims", {"lr": 1e-3, "seed": 3}, source_domains={"source"}, safety=SafetyConfig(),
        source_mode="episodic",
    )  # fmt: skip
    state = models.state("source")
    assert models.is_episodic("source") and not models.is_episodic("site-A")
    assert state.strategy.name == "mid" and state.strategy.learning_rate == 1e-3
    session = InteractiveSession(state, undo_depth=0)
    session.set_image(synthetic_image(BRAIN, 0), image_id="source-0")
    for click in BRAIN_CLICKS[:3]:
        session.add_click(click)
    assert state.version == 2 and not equal_states(weights(state.model), source)  # MI at clicks 2 and 3
    first_image_last = session.predictions[-1]
    monitor = models.monitor("source")
    assert monitor is not None and monitor.config.monitor is False  # the guard only: nothing outlives the image
    session.finish()
    assert equal_states(weights(state.model), source) and len(monitor.signals) == 1
    # The next source image starts from the source weights and a fresh optimizer: the same clicks on the
    # same image give the same masks again.
    again = InteractiveSession(state, undo_depth=0)
    again.set_image(synthetic_image(BRAIN, 0), image_id="source-1")
    for click in BRAIN_CLICKS[:3]:
        again.add_click(click)
    np.testing.assert_array_equal(again.predictions[-1], first_image_last)
    again.finish()
    assert equal_states(weights(state.model), source) and equal_states(weights(network), source)


def test_images_open_at_once_get_their_own_episodic_copy_and_a_finished_copy_serves_the_next() -> None:
    network = tiny_network(BRAIN)
    source = weights(network)
    models = DomainScopedModels(network, BRAIN, "oaims", source_domains={"source"}, source_mode="episodic")
    first, second = models.state("source", "a"), models.state("source", "b")
    assert first is not second and models.state("source", "a") is first
    sessions = {}
    for image_id, state in (("a", first), ("b", second)):
        sessions[image_id] = InteractiveSession(state, undo_depth=0)
        sessions[image_id].set_image(synthetic_image(BRAIN, 0), image_id=image_id)
        for click in BRAIN_CLICKS[:2]:
            sessions[image_id].add_click(click)
    assert not equal_states(weights(first.model), source) and not equal_states(weights(second.model), source)
    sessions["a"].finish()
    assert equal_states(weights(first.model), source) and models.in_progress("a") is None
    assert models.state("source", "c") is first  # back in the pool, at the source weights
    models.release("b")  # left unfinished: reset and given back
    assert equal_states(weights(second.model), source) and models.state("source", "d") is second


def test_an_adopted_model_serves_its_domain_and_bad_arguments_are_refused() -> None:
    network = tiny_network(BRAIN)
    models = DomainScopedModels(network, BRAIN, "oaims", source_domains={"source"})
    shared = ModelState(tiny_network(BRAIN, seed=1), BRAIN)
    models.adopt("shared", shared)
    assert models.state("shared", "x") is shared and models.monitor("shared") is None
    with pytest.raises(ValueError, match="already has a model"):
        models.adopt("shared", shared)
    with pytest.raises(ValueError, match="not an episodic source domain"):
        models.episodic_model("source")
    with pytest.raises(ValueError, match="unknown source_mode 'sometimes'"):
        DomainScopedModels(tiny_network(BRAIN), BRAIN, "oaims", source_mode="sometimes")  # type: ignore[arg-type]


def test_episodic_model_alone_resets_on_its_own_images_only_and_refuses_settings_mid_does_not_have() -> None:
    network = tiny_network(BRAIN)
    episodic = EpisodicModel(network, BRAIN, {"lr": 1e-3}, version=7)
    assert episodic.state.version == 7 and episodic.monitor is None
    foreign = InteractiveSession(DomainScopedModels(network, BRAIN, "oaims").state("site-A"), undo_depth=0)
    foreign.set_image(synthetic_image(BRAIN, 0), image_id="elsewhere")
    foreign.add_click(BRAIN_CLICKS[0])
    foreign.finish()
    assert episodic.images == 0  # another model's image
    own = InteractiveSession(episodic.state, undo_depth=0)
    own.set_image(synthetic_image(BRAIN, 0), image_id="own")
    for click in BRAIN_CLICKS[:2]:
        own.add_click(click)
    assert not equal_states(weights(episodic.state.model), weights(network))
    own.finish()
    assert episodic.images == 1 and equal_states(weights(episodic.state.model), weights(network))
    with pytest.raises(ValueError, match="seed"):
        EpisodicModel(network, BRAIN, {"seed": 1})
    assert mid_interaction_overrides({"lr": 1e-3, "seed": 1, "click_loss": False}) == {"lr": 1e-3, "click_loss": False}
