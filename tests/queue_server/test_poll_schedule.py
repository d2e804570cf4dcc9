"""The polling schedule on its own: a visitor that obeys `poll_after_ms` in a moving line."""

from __future__ import annotations

import pytest

from infra.constants import POLL_MAX_MS, POLL_MIN_MS
from queue_server.status import Reply, poll_after_ms


def _waiting(
    position: int, rate: float, abandon_ms: int = 300_000, pickup_ms: int = 60_000
) -> Reply:
    return Reply(
        code="ok",
        state="waiting",
        position=position,
        waiting=position,
        rate=rate,
        token="",
        token_expiry_ms=0,
        now_ms=0,
        start_ms=0,
        early=False,
        seed="",
        abandon_ms=abandon_ms,
        pickup_ms=pickup_ms,
    )


def follow(wait_s: float, rate: float, estimate: float) -> tuple[int, float]:
    """A visitor `wait_s` from its turn in a line moving at `rate`/s, while the server
    believes `estimate`/s. Returns its polls until it hears its turn, and how late it heard."""
    turn_ms, now_ms, polls = wait_s * 1000, 0.0, 0
    while now_ms < turn_ms:
        position = max(1, round((turn_ms - now_ms) / 1000 * rate))
        now_ms += poll_after_ms(_waiting(position, estimate))
        polls += 1
    return polls, (now_ms - turn_ms) / 1000


@pytest.mark.parametrize("estimate_error", [1.0, 0.8, 1.25])
def test_a_five_minute_wait_costs_about_ten_polls_and_the_turn_is_heard_at_once(
    estimate_error: float,
) -> None:
    polls, late_s = follow(wait_s=300, rate=10, estimate=10 * estimate_error)
    assert polls <= 11
    assert late_s <= 3


def test_the_polling_load_follows_the_rate_not_the_length() -> None:
    short, _ = follow(wait_s=300, rate=10, estimate=10)
    long, _ = follow(wait_s=300, rate=100, estimate=100)  # ten times the line, same wait
    assert long == short


def test_polls_are_bounded_by_the_windows_and_the_maximum() -> None:
    assert poll_after_ms(_waiting(10**6, 1.0)) == POLL_MAX_MS
    assert poll_after_ms(_waiting(10**6, 1.0, abandon_ms=9_000)) == 3_000
    assert poll_after_ms(_waiting(10**6, 1.0, pickup_ms=12_000)) == 10_000
    assert poll_after_ms(_waiting(1, 1000.0)) == POLL_MIN_MS
