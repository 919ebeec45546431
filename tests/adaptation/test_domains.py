"""Domain-scoped adaptation: one adapting copy per domain, the source domain frozen."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from adaptation_testing import BRAIN_CLICKS, equal_states, one_torch_thread, synthetic_image, tiny_network, weights

from clickadapt.adaptation.domains import DomainScopedModels
from clickadapt.adaptation.safety import SafetyConfig
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.tasks import BRAIN


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


def segment_one(models: DomainScopedModels, domain: str, seed: int = 0) -> None:
    state = models.state(domain)
    session = InteractiveSession(state, undo_depth=0)
    session.set_image(synthetic_image(BRAIN, seed), image_id=f"{domain}-{seed}")
    for click in BRAIN_CLICKS[:3]:
        session.add_click(click)
    monitor = models.monitor(domain)
    if monitor is not None:
        monitor.finish(session)
    else:
        session.finish()


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
    assert equal_states(weights(network), source)  # the caller's network never changes


def test_domains_without_safety_and_bad_arguments() -> None:
    models = DomainScopedModels(tiny_network(BRAIN), BRAIN, "post")
    assert models.monitor("site-A") is None and models.state("site-A").strategy.name == "post"
    with pytest.raises(ValueError, match="domain name is required"):
        models.state("")
    with pytest.raises(ValueError, match="unknown"):
        DomainScopedModels(tiny_network(BRAIN), BRAIN, "no-such-strategy")
