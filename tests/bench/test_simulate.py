"""bench/simulate.py at a small size: the invariants of admission and polling, the model of
docs/SCALING.md against the simulation, and the copy of the poll rule against status.py."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import bench.simulate as sim
from queue_server.status import poll_cap_ms

SMALL = sim.Config(visitors=20_000, sales=4, batch_size=10, prequeue_s=300.0, seed=7)


@pytest.fixture(scope="module")
def small() -> sim.Result:
    return sim.run(SMALL)


def test_every_visitor_ends_admitted_or_gone(small: sim.Result) -> None:
    out = small.outcomes
    # Stock covers everyone: nobody is left in line, told sold out, or never arrived.
    assert set(out) <= {"admitted", "lost", "expired", "quit", "failed_while_asking"}, out
    assert out["failed_while_asking"] == 0
    assert out["admitted"] + out.get("lost", 0) + out.get("expired", 0) == SMALL.visitors
    # Only a visitor that stopped asking loses its place or lets its admission run out.
    assert out.get("lost", 0) + out.get("expired", 0) <= out["quit"]
    assert out["admitted"] >= SMALL.visitors - out["quit"]
    assert out.get("lost", 0) > 0 and out.get("expired", 0) > 0  # both paths were exercised


def test_admissions_never_exceed_the_configured_rate(small: sim.Result) -> None:
    assert small.max_admitted_per_tick == SMALL.batch_size  # reached, never passed
    per_tick = [s.admitted for s in small.seconds]
    assert max(per_tick) <= SMALL.sales * SMALL.batch_size
    # The line was full from the start to the end: every tick in between admitted its batch.
    full = [s.admitted for s in small.seconds if 0 <= s.t < small.last_admission_s - 60]
    assert full and min(full) == SMALL.sales * SMALL.batch_size


def test_polls_per_admitted_within_the_models_bound(small: sim.Result) -> None:
    m = sim.model(SMALL)
    assert small.polls_per_admitted <= m["polls_per_admitted"] * (
        1 + sim.TOLERANCE["polls_per_admitted"]
    )
    # No visitor asks more than the longest wait allows: its pre-queue polls at the cap, the
    # cap (a fifth shorter at most, the jitter) until cap / share from its turn, then the tail.
    cap_s = poll_cap_ms(SMALL.abandon_s * 1000, SMALL.pickup_s * 1000) / 1000
    longest = max(s.longest for s in small.seconds)
    wait_s = longest / (SMALL.batch_size / SMALL.interval_s)
    bound = (
        math.ceil(SMALL.prequeue_s / cap_s) + 1  # the pre-queue and the start's herd poll
        + math.ceil(max(0.0, wait_s - cap_s / sim.POLL_WAIT_SHARE)
                    / (cap_s * (1 - sim.POLL_JITTER)))
        + math.ceil(sim.tail_polls(cap_s)) + 1
    )  # fmt: skip
    assert 0 < small.polls_max <= bound


def test_model_and_simulation_agree(small: sim.Result) -> None:
    lines, ok = sim.compare(SMALL, small, doc=None)
    assert ok, "\n".join(lines)


def test_disagreement_is_reported(small: sim.Result) -> None:
    worse = dataclasses.replace(small, polls_total=small.polls_total * 2)
    worse.polls_per_admitted = small.polls_per_admitted * 2
    lines, ok = sim.compare(SMALL, worse, doc=None)
    assert not ok and any("polls_per_admitted" in x and "DISAGREE" in x for x in lines)


def test_sold_out_ends_the_line() -> None:
    c = dataclasses.replace(SMALL, stock=500, visitors=8_000)
    res = sim.run(c)
    out = res.outcomes
    assert set(out) <= {"admitted", "lost", "expired", "sold_out", "quit", "failed_while_asking"}
    assert out["failed_while_asking"] == 0
    assert out["sold_out"] > 0
    # Admissions stop at stock x overbook per sale; a bought unit ends its admission.
    assert out["admitted"] <= c.sales * math.ceil(c.stock * c.overbook)
    assert res.max_admitted_per_tick <= c.batch_size


def test_the_rule_copy_is_checked_against_status_py(monkeypatch: pytest.MonkeyPatch) -> None:
    sim.check_rule(SMALL)
    monkeypatch.setattr(sim, "POLL_WAIT_SHARE", 0.5)  # a copy that drifted from status.py
    with pytest.raises(AssertionError, match="drifted"):
        sim.check_rule(SMALL)


def test_waiting_rule_on_arrays() -> None:
    cap = poll_cap_ms(300_000, 60_000)
    positions, rates = np.array([1, 100, 10**6, 5]), np.array([100.0, 10.0, 1.0, 0.0])
    whole = sim.poll_after_waiting(positions, rates, cap, np.zeros(4))
    assert whole.tolist() == [1_000, 7_500, 50_000, 3_750]
    # The most the jitter takes off: a fifth, never under the shortest poll.
    shortest = sim.poll_after_waiting(positions, rates, cap, np.full(4, 1 - 1e-12))
    assert shortest.tolist() == [1_000, 6_000, 40_000, 3_000]
    assert sim.poll_after_waiting(positions, rates, cap, np.full(4, 0.5), 0.0).tolist() == (
        whole.tolist()
    )


@pytest.mark.parametrize(
    "change",
    [{"interval_s": 2.0, "batch_size": 20}, {"jitter": 0.0, "herd_spread_s": 30.0}],
    ids=["ticks-longer-than-the-shortest-poll", "what-if-no-jitter-and-a-flat-spread"],
)
def test_no_poll_is_lost_between_ticks(change: dict[str, float]) -> None:
    # A poll due again within its own tick was once filed a whole ring later: the visitor
    # then slept through its admission.
    res = sim.run(dataclasses.replace(SMALL, visitors=8_000, **change))
    assert res.outcomes["failed_while_asking"] == 0, res.outcomes
    assert res.outcomes["admitted"] >= 8_000 - res.outcomes["quit"]
