"""Turns a queue script's reply into API.md's status object, and decides ``poll_after_ms``."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from infra.constants import POLL_MAX_MS, POLL_MIN_MS, POLL_WAIT_SHARE
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


def poll_after_ms(reply: Reply) -> int:
    """When to ask again. Grows with the distance to the front, so the total polling load
    follows the admission rate rather than the length of the line."""
    cap = poll_cap_ms(reply.abandon_ms, reply.pickup_ms)
    if reply.state == "not_started":
        until_start = max(0, reply.start_ms - reply.now_ms)
        # Spread the herd that would otherwise ask at the very same millisecond of the start.
        return min(cap, max(POLL_MIN_MS, until_start) + random.randint(0, POLL_MIN_MS))
    if reply.state == "waiting" and reply.position is not None:
        if reply.rate > 0:
            wait_ms = reply.position / reply.rate * 1000
        else:
            wait_ms = reply.position * 1000  # not moving yet: assume about one a second
        return int(min(cap, max(POLL_MIN_MS, wait_ms * POLL_WAIT_SHARE)))
    if reply.state == "paused":
        return min(cap, 5 * POLL_MIN_MS)
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
