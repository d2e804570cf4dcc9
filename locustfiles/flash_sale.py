"""A flash-sale storm: every Locust user is one visitor of the waiting room.

    locust -f locustfiles/flash_sale.py --host http://127.0.0.1:8001 -u 1000 -r 200

A visitor joins the line on the queue server (``--host``), polls its status exactly as the
waiting-room page does (never sooner than the server's ``poll_after_ms``, honouring
``Retry-After``), buys one unit through the token gate once admitted, then stops. Environment:

- ``FLASHSALE_PRODUCT``: the sale's product id (default ``demo-sneaker``);
- ``FLASHSALE_GATE_URL``: the token gate (default ``http://127.0.0.1:8000``); when it is not
  set, the ``shop_url`` the queue server hands out with the admission is used;
- ``FLASHSALE_QUIT_WHEN_DONE``: ``1`` (default) ends the run once every visitor has finished,
  ``0`` keeps it running until ``-t``.

Besides the requests (named ``join``, ``status``, ``order`` whatever the product), two kinds of
pseudo-requests land in the stats, so they aggregate across workers and end up in the CSVs:
``VISITOR join_to_admission`` (its "response time" is the wait from the first join to the
admission) and ``OUTCOME <final state>`` (one per visitor; its time is the visitor's whole
life).
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import gevent
from locust import HttpUser, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import LocalRunner, MasterRunner
from locust.stats import CSV_STATS_INTERVAL_SEC

PRODUCT_ID = os.environ.get("FLASHSALE_PRODUCT", "demo-sneaker")
DEFAULT_GATE_URL = "http://127.0.0.1:8000"
# Only an explicit setting overrides the shop_url the queue server hands out: behind a load
# balancer the advertised URL may not be the one this load generator can reach.
GATE_URL_OVERRIDE = os.environ.get("FLASHSALE_GATE_URL", "").rstrip("/")
QUIT_WHEN_DONE = os.environ.get("FLASHSALE_QUIT_WHEN_DONE", "1") != "0"

# Pauses when the server gave no instruction: a client must never hammer a struggling server.
DEFAULT_RETRY_S = 1.0
NOT_OPEN_RETRY_S = 5.0
MAX_ORDER_ATTEMPTS = 5
# A visitor that re-joins this often in a row is told something is wrong, not looping forever.
MAX_REJOINS = 5
MAX_UNANSWERED = 5  # status polls in a row without any HTTP answer before giving up

METRIC_TYPE = "VISITOR"
OUTCOME_TYPE = "OUTCOME"
# Final states of a visitor, beyond the API's terminal states (sold_out, closed, expired):
BOUGHT = "bought"  # the gate answered 2xx to the order
ORDER_REFUSED = "order_refused"  # the gate or the shop said no (401/403/409/422...)
ORDER_FAILED = "order_failed"  # no usable answer from the gate after retries
NOT_FOUND = "not_found"  # the product does not exist
GAVE_UP = "gave_up"  # too many re-joins or an unexpected answer


def _retry_after_s(headers: Any, default: float = DEFAULT_RETRY_S) -> float:
    try:
        return max(float(headers.get("Retry-After", "")), 0.0)
    except (TypeError, ValueError):
        return default


def _poll_after_s(body: dict[str, Any]) -> float:
    try:
        return max(float(body["poll_after_ms"]) / 1000, 0.0)
    except (KeyError, TypeError, ValueError):
        return DEFAULT_RETRY_S


class Visitor(HttpUser):
    """One person in front of the waiting-room page: join, poll, buy, leave."""

    # All pacing comes from the server (poll_after_ms, Retry-After) inside the one task: a
    # fixed wait between polls is exactly what the server's instruction replaces.
    def wait_time(self) -> float:
        return 0.0

    def on_start(self) -> None:
        self.ticket: str | None = None
        self.first_join_at: float | None = None
        self.started_at = time.monotonic()
        self.rejoins = 0
        self.unanswered = 0  # status polls in a row that got no HTTP answer

    @task
    def visit(self) -> None:
        outcome = self._wait_in_line()
        self._record_outcome(outcome)
        raise StopUser()

    # --- the line ------------------------------------------------------------------------

    def _wait_in_line(self) -> str:
        body = self._join()
        while True:
            if isinstance(body, str):
                return body  # a final outcome
            state = body.get("state")
            if state == "admitted":
                self._record_admission()
                return self._buy(body)
            if state in ("sold_out", "closed", "expired"):
                return str(state)
            # waiting, not_started, paused: ask again, no sooner than the server says.
            gevent.sleep(_poll_after_s(body))
            body = self._status()

    def _join(self) -> dict[str, Any] | str:
        while True:
            headers = {"Authorization": f"Bearer {self.ticket}"} if self.ticket else {}
            if self.first_join_at is None:
                self.first_join_at = time.monotonic()
            with self.client.post(
                f"/queue/{PRODUCT_ID}/join", headers=headers, name="join", catch_response=True
            ) as response:
                code = response.status_code
                if code in (200, 201):
                    response.success()
                    body = response.json()
                    self.ticket = body["ticket"]
                    return body
                if code in (429, 503):
                    # Pushback is part of the contract, but it is still a refused request:
                    # counted as a failure so a storm shows how much of it there was.
                    response.failure(f"{code} pushback")
                    gevent.sleep(_retry_after_s(response.headers))
                    continue
                if code == 403:
                    response.success()  # the pre-queue is not open yet: come back later
                    gevent.sleep(_retry_after_s(response.headers, NOT_OPEN_RETRY_S))
                    continue
                if code == 409:
                    response.success()  # the sale is over or sold out: a normal ending
                    return "closed"
                if code == 404:
                    response.failure(f"no sale for product {PRODUCT_ID!r}")
                    return NOT_FOUND
                response.failure(f"unexpected {code} on join")
                return GAVE_UP

    def _status(self) -> dict[str, Any] | str:
        while True:
            with self.client.get(
                f"/queue/{PRODUCT_ID}/status",
                headers={"Authorization": f"Bearer {self.ticket}"},
                name="status",
                catch_response=True,
            ) as response:
                code = response.status_code
                if code == 200:
                    response.success()
                    self.rejoins = self.unanswered = 0
                    return response.json()
                if code in (429, 503):
                    response.failure(f"{code} pushback")
                    gevent.sleep(_retry_after_s(response.headers))
                    continue
                if code == 0:
                    # No HTTP answer (connection refused or reset, timeout): a status poll is
                    # safe to repeat, so do what a browser tab would, and try again shortly.
                    response.failure(f"no answer on status: {type(response.error).__name__}")
                    self.unanswered += 1
                    if self.unanswered > MAX_UNANSWERED:
                        return GAVE_UP
                    gevent.sleep(DEFAULT_RETRY_S)
                    continue
                if code not in (401, 410):
                    response.failure(f"unexpected {code} on status")
                    return GAVE_UP
                # A visitor who polls as told should never lose its place: visible as a
                # failure, then handled the way the page does, by joining again.
                response.failure(f"{code} {self._error_code(response)}; joining again")
            self.rejoins += 1
            if self.rejoins > MAX_REJOINS:
                return GAVE_UP
            if code == 401:
                self.ticket = None  # the ticket is dead: come back as a new visitor
            return self._join()

    # --- the shop ------------------------------------------------------------------------

    def _buy(self, admitted: dict[str, Any]) -> str:
        if GATE_URL_OVERRIDE:
            url = f"{GATE_URL_OVERRIDE}/products/{PRODUCT_ID}/orders"
        elif admitted.get("shop_url"):
            url = f"{str(admitted['shop_url']).rstrip('/')}/orders"
        else:
            url = f"{DEFAULT_GATE_URL}/products/{PRODUCT_ID}/orders"
        headers = {
            "Authorization": f"Bearer {admitted.get('access_token', '')}",
            # One key for every attempt: a retry must never become a second order.
            "Idempotency-Key": uuid.uuid4().hex,
        }
        for _ in range(MAX_ORDER_ATTEMPTS):
            with self.client.post(
                url, json={"quantity": 1}, headers=headers, name="order", catch_response=True
            ) as response:
                code = response.status_code
                if 200 <= code < 300:
                    response.success()
                    return BOUGHT
                if code in (429, 503):
                    response.failure(f"{code} pushback")
                    gevent.sleep(_retry_after_s(response.headers))
                    continue
                if code == 0:
                    response.failure(f"gate unreachable: {response.error}")
                    gevent.sleep(DEFAULT_RETRY_S)
                    continue
                if code == 409:
                    response.success()  # sold out or limit reached: a normal answer
                    return ORDER_REFUSED
                response.failure(f"{code} {self._error_code(response)} on order")
                return ORDER_REFUSED
        return ORDER_FAILED

    # --- custom metrics ------------------------------------------------------------------

    def _record_admission(self) -> None:
        assert self.first_join_at is not None
        waited_ms = (time.monotonic() - self.first_join_at) * 1000
        self._fire(METRIC_TYPE, "join_to_admission", waited_ms)

    def _record_outcome(self, outcome: str) -> None:
        self._fire(OUTCOME_TYPE, outcome, (time.monotonic() - self.started_at) * 1000)

    def _fire(self, request_type: str, name: str, ms: float) -> None:
        self.environment.events.request.fire(
            request_type=request_type,
            name=name,
            response_time=ms,
            response_length=0,
            exception=None,
            context={},
        )

    @staticmethod
    def _error_code(response: Any) -> str:
        try:
            return str(response.json().get("error", ""))
        except Exception:  # not JSON at all (a proxy's HTML page): the status says enough
            return ""


# --- run control and summary -----------------------------------------------------------------


@events.init.add_listener
def _quit_when_every_visitor_is_done(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    # Workers only see their own share of the visitors: the master or a local runner decides.
    if not QUIT_WHEN_DONE or not isinstance(runner, LocalRunner | MasterRunner):
        return

    def watch() -> None:
        # Visitors stop by themselves (bought, sold out...): once none is left the storm is
        # over, and waiting for -t would only add idle time to the report.
        while runner.user_count > 0:
            gevent.sleep(0.5)
        # Locust writes its CSVs every CSV_STATS_INTERVAL_SEC and not again at shutdown: wait
        # for one more pass, or the last visitors' requests would be missing from the files.
        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.5)
        runner.quit()

    def on_spawning_complete(user_count: int, **_: Any) -> None:
        gevent.spawn(watch)

    environment.events.spawning_complete.add_listener(on_spawning_complete)


@events.quitting.add_listener
def _print_summary(environment: Environment, **_: Any) -> None:
    stats = environment.stats
    outcomes = {
        name: entry.num_requests
        for (name, method), entry in sorted(stats.entries.items())
        if method == OUTCOME_TYPE
    }
    wait = stats.entries.get(("join_to_admission", METRIC_TYPE))
    print(f"flash sale {PRODUCT_ID}: final states {outcomes or 'none'}")
    if wait is not None and wait.num_requests:
        print(
            f"join to admission over {wait.num_requests} visitors: "
            f"median {wait.get_response_time_percentile(0.5):.0f} ms, "
            f"p95 {wait.get_response_time_percentile(0.95):.0f} ms, "
            f"max {wait.max_response_time:.0f} ms"
        )
