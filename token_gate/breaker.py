"""A circuit breaker for the gate's calls to the shop.

When the shop is down or drowning, every request that still reaches it waits for a timeout and
adds to its load. After ``failure_threshold`` consecutive failures the breaker OPENS: the gate
answers 503 at once for ``cooldown_s``. Then it is HALF-OPEN: exactly one probe goes through;
its success closes the breaker, its failure opens it for another cool-down.

Each call takes a ticket (:meth:`CircuitBreaker.acquire`) and reports on it. Tickets carry the
generation of the state they were issued in, so a slow call that started before the breaker
opened cannot close it (or re-open it) when it finally ends: only the probe decides.
Single-threaded by design: the gate runs on one event loop, and no method awaits.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from infra.constants import BREAKER_COOLDOWN_S, BREAKER_FAILURES

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)


class BreakerOpen(Exception):
    """The breaker refuses the call; try again after ``retry_after_s``."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"circuit open, retry after {retry_after_s:.3f}s")
        self.retry_after_s = retry_after_s


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = BREAKER_FAILURES,
        cooldown_s: float = BREAKER_COOLDOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or cooldown_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and cooldown_s > 0")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._generation = 0
        self._probing = False
        self._on_open: list[Callable[[], None]] = []

    def on_open(self, listener: Callable[[], None]) -> None:
        """Call `listener` each time the breaker opens. It must not block (the gate fires an
        event in a task of its own): the breaker runs inside a request."""
        self._on_open.append(listener)

    def off_open(self, listener: Callable[[], None]) -> None:
        """Stop calling `listener` (a gate's lifespan ends; a test's breaker outlives it)."""
        if listener in self._on_open:
            self._on_open.remove(listener)

    @property
    def state(self) -> str:
        # OPEN turns HALF-OPEN by the passing of time alone, so it is applied when looked at.
        if self._state == OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            self._enter(HALF_OPEN)
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def acquire(self) -> int:
        """A ticket for one call, or :class:`BreakerOpen` if the call must not be made."""
        state = self.state
        if state == OPEN:
            raise BreakerOpen(self.cooldown_s - (self._clock() - self._opened_at))
        if state == HALF_OPEN:
            if self._probing:
                # The probe is out; its answer is due within one upstream timeout.
                raise BreakerOpen(1.0)
            self._probing = True
        return self._generation

    def success(self, ticket: int) -> None:
        if ticket != self._generation:
            return  # issued before the last change of state: stale news
        if self._state == HALF_OPEN:
            self._enter(CLOSED)
        else:
            self._failures = 0

    def failure(self, ticket: int) -> None:
        if ticket != self._generation:
            return
        if self._state == HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._open()

    def release(self, ticket: int) -> None:
        """The call ended with no verdict (cancelled): let another request be the probe."""
        if ticket == self._generation and self._state == HALF_OPEN:
            self._probing = False

    def _open(self) -> None:
        self._enter(OPEN)
        self._opened_at = self._clock()
        for listener in self._on_open:
            listener()

    def _enter(self, state: str) -> None:
        self._state = state
        self._generation += 1
        self._failures = 0
        self._probing = False
