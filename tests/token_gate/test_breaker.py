"""The circuit breaker alone, on a clock the test moves by hand."""

from __future__ import annotations

import pytest

from token_gate.breaker import CLOSED, HALF_OPEN, OPEN, BreakerOpen, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, cooldown_s=5.0, clock=clock)


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.failure(breaker.acquire())
    assert breaker.state == OPEN


def test_opens_after_n_consecutive_failures(breaker: CircuitBreaker) -> None:
    for _ in range(2):
        breaker.failure(breaker.acquire())
    assert breaker.state == CLOSED
    assert breaker.consecutive_failures == 2
    breaker.failure(breaker.acquire())
    assert breaker.state == OPEN


def test_a_success_resets_the_count(breaker: CircuitBreaker) -> None:
    for _ in range(5):
        breaker.failure(breaker.acquire())
        breaker.failure(breaker.acquire())
        breaker.success(breaker.acquire())
    assert breaker.state == CLOSED
    assert breaker.consecutive_failures == 0


def test_open_refuses_with_the_cooldown_left(breaker: CircuitBreaker, clock: Clock) -> None:
    trip(breaker)
    with pytest.raises(BreakerOpen) as refused:
        breaker.acquire()
    assert refused.value.retry_after_s == pytest.approx(5.0)
    clock.now += 1.2
    with pytest.raises(BreakerOpen) as refused:
        breaker.acquire()
    assert refused.value.retry_after_s == pytest.approx(3.8)
    clock.now += 3.7
    assert breaker.state == OPEN


def test_half_open_lets_exactly_one_probe_through(breaker: CircuitBreaker, clock: Clock) -> None:
    trip(breaker)
    clock.now += 5.0
    assert breaker.state == HALF_OPEN
    probe = breaker.acquire()
    for _ in range(3):
        with pytest.raises(BreakerOpen) as refused:
            breaker.acquire()
        assert refused.value.retry_after_s == pytest.approx(1.0)
    breaker.success(probe)
    assert breaker.state == CLOSED
    breaker.success(breaker.acquire())


def test_a_failed_probe_opens_for_another_cooldown(breaker: CircuitBreaker, clock: Clock) -> None:
    trip(breaker)
    clock.now += 6.0
    probe = breaker.acquire()
    clock.now += 0.5  # the probe took this long to fail: the new cool-down starts at its end
    breaker.failure(probe)
    assert breaker.state == OPEN
    with pytest.raises(BreakerOpen) as refused:
        breaker.acquire()
    assert refused.value.retry_after_s == pytest.approx(5.0)
    clock.now += 4.9
    assert breaker.state == OPEN
    clock.now += 0.1
    assert breaker.state == HALF_OPEN
    breaker.success(breaker.acquire())
    assert breaker.state == CLOSED


def test_calls_from_before_a_change_of_state_do_not_count(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    slow_ok = breaker.acquire()
    slow_bad = breaker.acquire()
    trip(breaker)
    breaker.success(slow_ok)  # a slow call that started while closed cannot close it
    assert breaker.state == OPEN
    clock.now += 5.0
    probe = breaker.acquire()
    breaker.failure(slow_bad)  # nor can a stale failure re-open it while the probe is out
    assert breaker.state == HALF_OPEN
    breaker.success(probe)
    assert breaker.state == CLOSED
    assert breaker.consecutive_failures == 0


def test_an_abandoned_probe_frees_the_slot(breaker: CircuitBreaker, clock: Clock) -> None:
    trip(breaker)
    clock.now += 5.0
    probe = breaker.acquire()
    breaker.release(probe)  # cancelled: no verdict, but another request may now probe
    assert breaker.state == HALF_OPEN
    second = breaker.acquire()
    breaker.failure(second)
    assert breaker.state == OPEN
    breaker.release(probe)  # releasing twice, or late, changes nothing
    assert breaker.state == OPEN


def test_release_while_closed_changes_nothing(breaker: CircuitBreaker) -> None:
    breaker.failure(breaker.acquire())
    breaker.release(breaker.acquire())
    assert breaker.state == CLOSED
    assert breaker.consecutive_failures == 1


@pytest.mark.parametrize(("threshold", "cooldown"), [(0, 5.0), (3, 0.0), (3, -1.0)])
def test_nonsense_settings_are_refused(threshold: int, cooldown: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=threshold, cooldown_s=cooldown)
