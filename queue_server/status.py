"""Turns a queue script's reply into API.md's status object, and decides ``poll_after_ms``."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infra.constants import (
    HERD_POLLS_PER_S,
    HERD_SPREAD_MAX_MS,
    POLL_JITTER,
    POLL_MAX_MS,
    POLL_MIN_MS,
    POLL_WAIT_SHARE,
)
from infra.sale.shuffle import draw
from infra.sale.views import iso_utc


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a microsecond per field, per poll
class Reply:
    """The reply every queue script shares (lib.lua, visitor_status). Treat it as immutable:
    change it with ``dataclasses.replace``."""

    code: str
    state: str
    position: int | None
    waiting: int
    rate: float
    token: str
    token_expiry_ms: int
    now_ms: int
    start_ms: int
    early: bool
    seed: str
    abandon_ms: int
    pickup_ms: int

    @classmethod
    def parse(cls, raw: list[Any]) -> Reply:
        position = int(raw[2])
        return cls(
            code=raw[0],
            state=raw[1],
            position=position if position > 0 else None,
            waiting=int(raw[3]),
            rate=float(raw[4] or 0),
            token=raw[5] or "",
            token_expiry_ms=int(raw[6]),
            now_ms=int(raw[7]),
            start_ms=int(raw[8]),
            early=bool(int(raw[9])),
            seed=raw[10] or "",
            abandon_ms=int(raw[11]),
            pickup_ms=int(raw[12]),
        )


def poll_cap_ms(abandon_ms: int, pickup_ms: int) -> int:
    # A visitor must ask at least three times per abandon window or it would lose its place,
    # and well within a pickup window, so that no estimate, however wrong, makes it sleep
    # through its turn.
    return max(POLL_MIN_MS, min(POLL_MAX_MS, abandon_ms // 3, pickup_ms * 5 // 6))


def eta_s(position: int | None, rate: float) -> int | None:
    if position is None or rate <= 0:
        return None  # honest: the line is not moving right now
    return math.ceil(position / rate)


def herd_spread_ms(waiting: int, pickup_ms: int) -> int:
    """How long after the start the pre-queue of a line of `waiting` comes back: long enough
    that one sale's herd asks at most HERD_POLLS_PER_S times a second, never over more than
    HERD_SPREAD_MAX_MS nor half a pickup window (the first admitted must still pick up)."""
    most = min(HERD_SPREAD_MAX_MS, pickup_ms // 2)
    return max(POLL_MIN_MS, min(waiting * 1000 // HERD_POLLS_PER_S, most))


def jittered_ms(interval_ms: float, uniform: Callable[[], float]) -> int:
    """`interval_ms` scaled by U(1 - POLL_JITTER, 1), never below POLL_MIN_MS: only shorter,
    so a poll never sleeps through a turn, and capped visitors drift out of phase."""
    return max(POLL_MIN_MS, int(interval_ms * (1 - POLL_JITTER * uniform())))


def poll_after_ms(reply: Reply, uniform: Callable[[], float] = random.random) -> int:
    """When to ask again. Grows with the distance to the front, so the total polling load
    follows the admission rate rather than the length of the line. `uniform` draws from
    [0, 1): one draw per answer (bench/simulate.py replays the same draws on its arrays)."""
    cap = poll_cap_ms(reply.abandon_ms, reply.pickup_ms)
    if reply.state == "not_started":
        until_start = max(0, reply.start_ms - reply.now_ms)
        # The whole pre-queue would ask at the very millisecond of the start: spread it, by the
        # size of the line. Who is a cap or more from the start gets the cap whatever the draw.
        spread = herd_spread_ms(reply.waiting, reply.pickup_ms)
        return min(cap, max(POLL_MIN_MS, until_start) + int(uniform() * (spread + 1)))
    if reply.state == "waiting":
        if reply.position is None:
            return jittered_ms(cap, uniform)
        if reply.rate > 0:
            wait_ms = reply.position / reply.rate * 1000
        else:
            wait_ms = reply.position * 1000  # not moving yet: assume about one a second
        return jittered_ms(min(cap, max(POLL_MIN_MS, wait_ms * POLL_WAIT_SHARE)), uniform)
    if reply.state == "paused":
        return jittered_ms(min(cap, 5 * POLL_MIN_MS), uniform)
    return cap  # admitted, expired, sold_out, closed: nothing more will change soon


def status_body(product_id: str, reply: Reply, visitor_id: str, gate_url: str) -> dict[str, Any]:
    state = reply.state
    body: dict[str, Any] = {
        "state": state,
        "product_id": product_id,
        "position": None,
        "waiting": reply.waiting,
        "eta_s": None,
        "poll_after_ms": poll_after_ms(reply),
    }
    if state in ("waiting", "paused", "not_started"):
        body["position"] = reply.position
        if state == "waiting":
            body["eta_s"] = eta_s(reply.position, reply.rate)
        if state == "not_started":
            body["starts_in_s"] = max(0, math.ceil((reply.start_ms - reply.now_ms) / 1000))
    elif state == "admitted":
        body["access_token"] = reply.token
        body["expires_at"] = iso_utc(reply.token_expiry_ms)
        body["shop_url"] = f"{gate_url}/products/{product_id}"  # the API's, for clients
        body["shop_page_url"] = f"{gate_url}/shop/{product_id}"  # the page, for people
    if reply.early and reply.seed:
        body["draw"] = draw(reply.seed, visitor_id)
        # The draw's message, so that the page can recompute the draw from the seed ("check
        # my draw"). Only its own visitor gets it, with its own ticket; it grants nothing:
        # the gate trusts visitor ids only from a signed token.
        body["visitor_id"] = visitor_id
    return body
