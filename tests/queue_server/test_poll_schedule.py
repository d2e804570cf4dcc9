"""The polling schedule on its own: a visitor that obeys `poll_after_ms` in a moving line, the
jitter of the waiting polls, and the spread of the start's herd."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.constants import (
    HERD_POLLS_PER_S,
    HERD_SPREAD_MAX_MS,
    POLL_JITTER,
    POLL_MAX_MS,
    POLL_MIN_MS,
)
from queue_server.status import Reply, herd_spread_ms, poll_after_ms, poll_cap_ms

LONGEST: Callable[[], float] = lambda: 0.0  # noqa: E731  the draw that leaves a poll whole
SHORTEST: Callable[[], float] = lambda: 1 - 1e-12  # noqa: E731  the most jitter takes off


def _reply(
    state: str,
    position: int | None,
    rate: float = 1.0,
    waiting: int = 0,
    until_start_ms: int = 0,
    abandon_ms: int = 300_000,
    pickup_ms: int = 60_000,
) -> Reply:
    return Reply(
        code="ok",
        state=state,
        position=position,
        waiting=waiting if waiting else (position or 0),
        rate=rate,
        token="",
        token_expiry_ms=0,
        now_ms=0,
        start_ms=until_start_ms,
        early=False,
        seed="",
        abandon_ms=abandon_ms,
        pickup_ms=pickup_ms,
    )


def _waiting(
    position: int, rate: float, abandon_ms: int = 300_000, pickup_ms: int = 60_000
) -> Reply:
    return _reply("waiting", position, rate, abandon_ms=abandon_ms, pickup_ms=pickup_ms)


def _not_started(
    waiting: int, until_start_ms: int, abandon_ms: int = 300_000, pickup_ms: int = 60_000
) -> Reply:
    return _reply("not_started", None, 0.0, waiting, until_start_ms, abandon_ms, pickup_ms)


def follow(
    wait_s: float, rate: float, estimate: float, uniform: Callable[[], float]
) -> tuple[int, float]:
    """A visitor `wait_s` from its turn in a line moving at `rate`/s, while the server
    believes `estimate`/s. Returns its polls until it hears its turn, and how late it heard."""
    turn_ms, now_ms, polls = wait_s * 1000, 0.0, 0
    while now_ms < turn_ms:
        position = max(1, round((turn_ms - now_ms) / 1000 * rate))
        now_ms += poll_after_ms(_waiting(position, estimate), uniform)
        polls += 1
    return polls, (now_ms - turn_ms) / 1000


# --- Waiting: about ten polls for five minutes, the turn heard at once ------------------------


@pytest.mark.parametrize("estimate_error", [1.0, 0.8, 1.25])
@pytest.mark.parametrize(
    ("draw", "most_polls"),
    [(LONGEST, 11), (random.Random(1).random, 13), (SHORTEST, 14)],
    ids=["no-jitter", "random", "all-shortest"],
)
def test_a_five_minute_wait_costs_about_ten_polls_and_the_turn_is_heard_at_once(
    estimate_error: float, draw: Callable[[], float], most_polls: int
) -> None:
    # The jitter only shortens a poll: a little more polling (at most 11 -> 14, when every
    # draw takes the most off), never a turn heard later.
    polls, late_s = follow(wait_s=300, rate=10, estimate=10 * estimate_error, uniform=draw)
    assert polls <= most_polls
    assert late_s <= 3


@pytest.mark.parametrize("u", [0.0, 0.5, 0.99])
def test_the_polling_load_follows_the_rate_not_the_length(u: float) -> None:
    short, _ = follow(wait_s=300, rate=10, estimate=10, uniform=lambda: u)
    long, _ = follow(wait_s=300, rate=100, estimate=100, uniform=lambda: u)  # ten times the line
    assert long == short


def test_polls_are_bounded_by_the_windows_and_the_maximum() -> None:
    assert poll_after_ms(_waiting(10**6, 1.0), LONGEST) == POLL_MAX_MS
    assert poll_after_ms(_waiting(10**6, 1.0, abandon_ms=9_000), LONGEST) == 3_000
    assert poll_after_ms(_waiting(10**6, 1.0, pickup_ms=12_000), LONGEST) == 10_000
    assert poll_after_ms(_waiting(1, 1000.0), LONGEST) == POLL_MIN_MS
    # The most jitter takes off: a fifth, and never under the shortest poll.
    assert poll_after_ms(_waiting(10**6, 1.0), SHORTEST) == POLL_MAX_MS * 4 // 5
    assert poll_after_ms(_waiting(10**6, 1.0, abandon_ms=9_000), SHORTEST) == 2_400
    assert poll_after_ms(_waiting(1, 1000.0), SHORTEST) == POLL_MIN_MS
    assert poll_after_ms(_waiting(2, 1.0), SHORTEST) == 1_200  # 1,500 x 0.8
    assert poll_after_ms(_waiting(1, 1.0), SHORTEST) == POLL_MIN_MS  # 750 -> 1,000, not 800


@given(
    position=st.integers(1, 10**8),
    rate=st.one_of(st.just(0.0), st.floats(0.001, 10**5)),
    abandon_s=st.integers(10, 86_400),
    pickup_s=st.integers(5, 86_400),
    draws=st.tuples(st.floats(0, 1, exclude_max=True), st.floats(0, 1, exclude_max=True)),
    state=st.sampled_from(["waiting", "paused"]),
)
def test_jitter_only_shortens_a_poll_by_at_most_its_share(
    position: int,
    rate: float,
    abandon_s: int,
    pickup_s: int,
    draws: tuple[float, float],
    state: str,
) -> None:
    reply = _reply(state, position, rate, abandon_ms=abandon_s * 1000, pickup_ms=pickup_s * 1000)
    cap = poll_cap_ms(reply.abandon_ms, reply.pickup_ms)
    whole = poll_after_ms(reply, LONGEST)
    lo_u, hi_u = sorted(draws)
    later, sooner = poll_after_ms(reply, lambda: lo_u), poll_after_ms(reply, lambda: hi_u)
    assert POLL_MIN_MS <= sooner <= later <= whole <= cap  # a bigger draw, a shorter poll
    assert sooner >= min(whole, max(POLL_MIN_MS, whole * (1 - POLL_JITTER) - 1))
    # The promises: three polls per abandon window, and well within a pickup window.
    assert later <= max(POLL_MIN_MS, reply.abandon_ms // 3)
    assert later <= max(POLL_MIN_MS, reply.pickup_ms * 5 // 6)


@pytest.mark.parametrize(
    ("reply", "whole"),
    [
        (_waiting(10**6, 1.0), POLL_MAX_MS),  # far: the cap
        (_waiting(40, 1.0), 30_000),  # 0.75 x 40 s
        (_reply("paused", 7), 5 * POLL_MIN_MS),
    ],
    ids=["far", "mid", "paused"],
)
def test_the_jitter_is_spread_over_its_whole_share(reply: Reply, whole: int) -> None:
    draw = random.Random(7).random
    told = [poll_after_ms(reply, draw) for _ in range(4_000)]
    width = whole * POLL_JITTER
    assert whole - width <= min(told) < whole - 0.95 * width
    assert whole - 0.05 * width < max(told) <= whole
    assert abs(statistics.fmean(told) - (whole - width / 2)) < 0.03 * width
    # Even: each fifth of the share holds about a fifth of the answers.
    fifths = Counter(min(4, int((whole - ms) / width * 5)) for ms in told)
    assert all(700 < fifths[k] < 900 for k in range(5)), fifths


def _echoes(draw: Callable[[], float], caps: int) -> Counter[int]:
    """10,000 far visitors that asked in the same second (the start's herd), after `caps` more
    polls each: how many ask in each second."""
    due = [0.0] * 10_000
    for _ in range(caps):
        due = [t + poll_after_ms(_waiting(10**6, 1.0), draw) / 1000 for t in due]
    return Counter(int(t) for t in due)


def test_capped_visitors_drift_out_of_phase() -> None:
    """The echo of the start: without jitter a far visitor asks exactly once per cap, so a
    herd comes back whole every cap; with it, each echo is wider than the one before."""
    assert max(_echoes(LONGEST, 4).values()) == 10_000  # the old rule: all in one second
    draw = random.Random(3).random
    first, fourth = _echoes(draw, 1), _echoes(draw, 4)
    assert max(first.values()) < 10_000 / 8  # one poll: over 10 s (40-50 s after)
    assert max(fourth.values()) < 10_000 / 12  # four: the sum of four draws, wider again
    assert max(fourth) - min(fourth) > 25


# --- Not started: the herd at the start, spread by the size of the pre-queue -------------------


@pytest.mark.parametrize(
    ("waiting", "pickup_ms", "spread"),
    [
        (0, 60_000, POLL_MIN_MS),  # never less than the shortest poll
        (600, 60_000, POLL_MIN_MS),  # the bench's small storm: 0.3 s -> 1 s
        (3_000, 60_000, 1_500),  # the bench's storm: 1.5 s, its turn heard within 3 s
        (50_000, 60_000, 25_000),  # the 10M plan's sale
        (60_000, 60_000, HERD_SPREAD_MAX_MS),
        (10**7, 60_000, HERD_SPREAD_MAX_MS),
        (50_000, 20_000, 10_000),  # half the pickup window
        (10**7, 5_000, 2_500),  # the shortest pickup_s a sale may have
    ],
)
def test_the_herd_spread_follows_the_pre_queue(waiting: int, pickup_ms: int, spread: int) -> None:
    assert herd_spread_ms(waiting, pickup_ms) == spread


@given(waiting=st.integers(0, 10**8), more=st.integers(0, 10**6), pickup_s=st.integers(5, 86_400))
def test_the_herd_spread_is_bounded_and_grows_with_the_line(
    waiting: int, more: int, pickup_s: int
) -> None:
    pickup_ms = pickup_s * 1000
    spread = herd_spread_ms(waiting, pickup_ms)
    assert POLL_MIN_MS <= spread <= max(POLL_MIN_MS, min(HERD_SPREAD_MAX_MS, pickup_ms // 2))
    assert spread <= max(POLL_MIN_MS, waiting * 1000 // HERD_POLLS_PER_S)  # no more than needed
    assert herd_spread_ms(waiting + more, pickup_ms) >= spread


@given(
    waiting=st.integers(0, 10**7),
    until_start_ms=st.integers(0, 10**7),
    abandon_s=st.integers(10, 86_400),
    pickup_s=st.integers(5, 86_400),
    u=st.floats(0, 1, exclude_max=True),
)
def test_a_not_started_poll_comes_back_at_the_start_within_the_spread(
    waiting: int, until_start_ms: int, abandon_s: int, pickup_s: int, u: float
) -> None:
    reply = _not_started(waiting, until_start_ms, abandon_s * 1000, pickup_s * 1000)
    cap = poll_cap_ms(reply.abandon_ms, reply.pickup_ms)
    spread = herd_spread_ms(waiting, reply.pickup_ms)
    at_start = max(POLL_MIN_MS, until_start_ms)
    told = poll_after_ms(reply, lambda: u)
    assert min(cap, at_start) <= told <= min(cap, at_start + spread)
    assert told == min(cap, at_start + int(u * (spread + 1)))
    if until_start_ms < cap:
        # It lands after the start, and well within the pickup window of a visitor admitted
        # in the first tick: it hears of its admission in time.
        landed_after_start_ms = told - until_start_ms
        assert 0 <= landed_after_start_ms <= POLL_MIN_MS + max(POLL_MIN_MS, reply.pickup_ms // 2)
        assert landed_after_start_ms < reply.pickup_ms


def _herd(visitors: int, seed: int) -> Counter[int]:
    """The pre-queue of one sale, `visitors` who each last asked u before the start (u even
    over one cap: they ask once per cap from whenever they came), and the second after the
    start in which each asks again."""
    gen = random.Random(seed)
    cap = poll_cap_ms(300_000, 60_000)
    landed: Counter[int] = Counter()
    for _ in range(visitors):
        until = gen.randrange(cap)
        landed[(poll_after_ms(_not_started(visitors, until), gen.random) - until) // 1000] += 1
    return landed


def test_a_big_pre_queue_comes_back_over_its_spread() -> None:
    landed = _herd(50_000, seed=5)  # the 10M plan's sale: S = 25 s
    assert sum(landed.values()) == 50_000
    assert min(landed) == 0 and 24 <= max(landed) <= 26  # all of the spread, 25 s, no more
    # About HERD_POLLS_PER_S a second on average, never the whole herd in one second (under the
    # old rule all 50,000 came in the first). The cap cuts short those whose draw would land
    # past it (visitors who last asked less than S before a cap from the start): they land
    # earlier, so the spread is denser at its start, up to 50,000 / 50 s more a second.
    assert max(landed.values()) < 1.6 * HERD_POLLS_PER_S
    assert sum(landed[s] for s in range(12, 25)) < 13 * HERD_POLLS_PER_S
    assert all(landed[s] > 0.4 * HERD_POLLS_PER_S for s in range(25))


def test_a_small_pre_queue_still_hears_its_turn_within_seconds() -> None:
    # The bench's storm of 3,000: S = 1.5 s, so every poll lands within 2.5 s of the start
    # (1 s for those who last asked less than a second before it).
    landed = _herd(3_000, seed=6)
    assert set(landed) <= {0, 1, 2}
    assert landed[1] > 500  # spread past the first second: S is not the old 1 s
