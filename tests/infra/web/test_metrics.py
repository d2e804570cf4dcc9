"""infra.web.metrics on its own: counters known from the start, cached children, histograms,
and the readings at scrape time (a slow or failing store costs only its own families)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.web import metrics as metrics_module
from infra.web.metrics import Labels, Metrics


def _families(text: bytes) -> dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]]:
    return {
        f.name: (f.type, {tuple(sorted(s.labels.items())): s.value for s in f.samples})
        for f in text_string_to_metric_families(text.decode())
    }


async def test_counters_named_with_labels_are_in_the_first_scrape() -> None:
    m = Metrics("t")
    m.counter("stored_total", "Stored", [])
    m.counter("joins_total", "Joins", ["product"])
    found = _families(await m.render())
    assert found["t_stored"] == ("counter", {(): 0.0})
    assert found["t_joins"] == ("counter", {})  # the family, before any sale joined
    for _ in range(3):
        m.inc("joins_total", product="a")
    m.inc("joins_total", 2, product="b")
    assert _families(await m.render())["t_joins"][1] == {
        (("product", "a"),): 3.0,
        (("product", "b"),): 2.0,
    }


async def test_histograms_count_and_bucket() -> None:
    m = Metrics("t")
    m.histogram("batch_size", "Batch", (1, 10, 100))
    for size in (1, 5, 500):
        m.observe("batch_size", size)
    samples = _families(await m.render())["t_batch_size"][1]
    assert samples[(("le", "10.0"),)] == 2 and samples[(("le", "+Inf"),)] == 3


async def test_a_scraped_counter_is_a_counter_and_a_failing_reader_costs_only_its_family(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = Metrics("t")
    reads = []

    async def shared() -> None:
        reads.append(1)

    async def abandoned() -> dict[Labels, float]:
        return {(("product", "a"),): 4.0}

    async def broken() -> dict[Labels, float]:
        raise ConnectionError("the store is away")

    async def stuck() -> dict[Labels, float]:
        await asyncio.sleep(60)
        return {}

    m.before_scrape(shared)
    m.scraped_counter("abandoned_places_total", "Abandoned", abandoned)
    m.gauge("broken", "Broken", broken)
    m.gauge("stuck", "Stuck", stuck)
    monkeypatch.setattr(metrics_module, "READ_TIMEOUT_S", 0.2)  # a store that never answers
    found = _families(await m.render())
    assert found["t_abandoned_places"] == ("counter", {(("product", "a"),): 4.0})
    assert "t_broken" not in found and "t_stuck" not in found
    assert "t_http_requests" in found
    assert reads == [1]
