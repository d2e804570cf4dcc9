"""A flash-sale storm: every Locust user is one visitor of the waiting room.

    locust -f locustfiles/flash_sale.py --host http://127.0.0.1:8001 -u 1000 -r 200

A visitor joins the line on the queue server (``--host``), polls its status exactly as the
waiting-room page does (never sooner than the server's ``poll_after_ms``, honouring
``Retry-After``), buys one unit through the token gate once admitted, then stops. Users are
``FastHttpUser``s (geventhttpclient): a storm needs thousands of them per core. Environment:

- ``FLASHSALE_PRODUCT``: the sale's product id (default ``demo-sneaker``);
- ``FLASHSALE_PRODUCT_B``: a second sale, for the visitors who hold a tab in each;
- ``FLASHSALE_QUEUE_URLS``: queue servers, comma-separated (default: ``--host`` alone). With
  several, visitor k of Locust worker w (its ``worker_index``) uses number (w + k) mod N for
  every request of its life: a reload goes back to the same one. Any replica would do (they
  share Redis); the spread is about each one's connections and open files;
- ``FLASHSALE_GATE_URL``: the token gate, or gates comma-separated, spread the same way (so
  with one gate per queue server, a visitor buys from its replica's gate); when it is not
  set, the ``shop_url`` the queue server hands out with the admission is used;
- ``FLASHSALE_QUIT_WHEN_DONE``: ``1`` (default) ends the run once every visitor has finished,
  ``0`` keeps it running until ``-t``;
- ``FLASHSALE_ABANDON_SHARE``, ``FLASHSALE_REFRESH_SHARE``, ``FLASHSALE_TWO_SALES_SHARE``
  (each 0 to 1, default 0): the share of visitors who stop polling after a poll or two, who
  reload the page (join again with their ticket) while waiting, and who hold one tab in each
  of the two sales;
- ``FLASHSALE_RECORDS``: a directory; every process appends one JSON line per tab to its own
  file there (what the visitor saw: join times, draw, admission, polls, lost places). This is
  what ``flashsale storm`` checks fairness with, across all Locust workers.

Besides the requests (named ``join``, ``status``, ``order`` whatever the product), three kinds
of pseudo-requests land in the stats, so they aggregate across workers and end up in the CSVs:
``VISITOR join_to_admission`` (its "response time" is the wait from the first join to the
admission), ``OUTCOME <final state>`` (one per tab; its time is the tab's whole life) and
``VISITOR done`` (one per visitor, when all its tabs are over).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import os
import random
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import gevent
import orjson
from locust import FastHttpUser, events, runners, task
from locust.env import Environment
from locust.runners import LocalRunner, MasterRunner
from locust.stats import CSV_STATS_INTERVAL_SEC


def _share(name: str) -> float:
    try:
        return min(max(float(os.environ.get(name, "0")), 0.0), 1.0)
    except ValueError:
        return 0.0


def _urls(name: str) -> list[str]:
    return [u.strip().rstrip("/") for u in os.environ.get(name, "").split(",") if u.strip()]


PRODUCT_ID = os.environ.get("FLASHSALE_PRODUCT", "demo-sneaker")
PRODUCT_B = os.environ.get("FLASHSALE_PRODUCT_B", "")
DEFAULT_GATE_URL = "http://127.0.0.1:8000"
QUEUE_URLS = _urls("FLASHSALE_QUEUE_URLS")
# Only an explicit setting overrides the shop_url the queue server hands out: behind a load
# balancer the advertised URL may not be the one this load generator can reach.
GATE_URL_OVERRIDES = _urls("FLASHSALE_GATE_URL")
_spawned = itertools.count()  # the visitors this process has started
QUIT_WHEN_DONE = os.environ.get("FLASHSALE_QUIT_WHEN_DONE", "1") != "0"
ABANDON_SHARE = _share("FLASHSALE_ABANDON_SHARE")
REFRESH_SHARE = _share("FLASHSALE_REFRESH_SHARE")
# Without a second sale there is nothing to hold a second tab in.
TWO_SALES_SHARE = _share("FLASHSALE_TWO_SALES_SHARE") if PRODUCT_B else 0.0
RECORDS_DIR = os.environ.get("FLASHSALE_RECORDS", "")

# Pauses when the server gave no instruction: a client must never hammer a struggling server.
DEFAULT_RETRY_S = 1.0
NOT_OPEN_RETRY_S = 5.0
MAX_ORDER_ATTEMPTS = 5
# A visitor that re-joins this often in a row is told something is wrong, not looping forever.
MAX_REJOINS = 5
MAX_UNANSWERED = 5  # status polls in a row without any HTTP answer before giving up

# A storm's worker is busy, not dead. After 3 missed heartbeats (Locust's default) the master
# calls it missing and hands its visitors to the other workers; when it answers again it keeps
# its own as well, and a storm of N visitors became one of N + thousands (seen at 20,000 on
# two cores). Only a worker silent for a minute counts as gone.
runners.HEARTBEAT_LIVENESS = max(runners.HEARTBEAT_LIVENESS, 60)

METRIC_TYPE = "VISITOR"
OUTCOME_TYPE = "OUTCOME"
# Final states of a tab, beyond the API's terminal states (sold_out, closed, expired):
BOUGHT = "bought"  # the gate answered 2xx to the order
ORDER_REFUSED = "order_refused"  # the gate or the shop said no (401/403/409/422...)
ORDER_FAILED = "order_failed"  # no usable answer from the gate after retries
NOT_FOUND = "not_found"  # the product does not exist
GAVE_UP = "gave_up"  # too many re-joins or an unexpected answer
ABANDONED = "abandoned"  # closed the tab on purpose (the abandon share)

# Behaviours, as recorded per tab.
STEADY, ABANDON, REFRESH, TWO_SALES = "steady", "abandon", "refresh", "two_sales"


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


def _visitor_id(ticket: str) -> str | None:
    """The visitor id inside a ticket, read without verifying the signature.

    Only the storm's fairness check uses it (to recompute each draw from the revealed seed);
    the ticket is opaque by contract, so any other shape just means "not checkable"."""
    try:
        payload = ticket.split(".", 1)[0]
        data = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(data["v"])
    except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
        return None


def _expiry_s(body: dict[str, Any]) -> float | None:
    """The admission's token expiry: the scheduler stamps a whole batch with one expiry, so it
    orders admissions by batch (to the second) whenever the visitor noticed its turn."""
    try:
        return datetime.fromisoformat(str(body["expires_at"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return None


class _Records:
    """One JSON line per tab, appended to this process's own file: workers never share one."""

    def __init__(self) -> None:
        self._file: TextIO | None = None

    def write(self, record: dict[str, Any]) -> None:
        if not RECORDS_DIR:
            return
        if self._file is None:
            Path(RECORDS_DIR).mkdir(parents=True, exist_ok=True)
            path = Path(RECORDS_DIR) / f"tabs-{os.getpid()}.jsonl"
            self._file = path.open("a", buffering=1)  # line-buffered: a crash loses one line
        self._file.write(orjson.dumps(record).decode() + "\n")


RECORDS = _Records()


class Tab:
    """One browser tab on one sale's waiting-room page: join, poll, buy."""

    def __init__(self, user: Visitor, product_id: str, behaviour: str) -> None:
        self.user = user
        self.client = user.client
        self.product_id = product_id
        self.behaviour = behaviour
        self.ticket: str | None = None
        self.rejoins = 0
        self.unanswered = 0  # status polls in a row that got no HTTP answer
        self.started_at = time.monotonic()
        self.first_join_at: float | None = None
        # What this tab saw, for the storm's invariants (wall clock: workers share it).
        self.record: dict[str, Any] = {
            "product": product_id,
            "behaviour": behaviour,
            "join_sent": None,
            "join_done": None,
            "join_state": None,
            "join_position": None,
            "visitor_id": None,
            "draw": None,
            "admitted_expiry": None,
            "admitted_seen": None,
            "polls": 0,
            "joins": 0,
            "lost": 0,  # 401/410 on status: the place was lost
            "refreshes": 0,
            "refresh_new_place": 0,  # a reload answered 201: a second place, never allowed
            "refresh_moved_back": 0,  # a reload answered a worse position than before it
            "wait_s": None,
            "outcome": None,
            # The load generator's own health: how late its greenlet woke from the longest
            # overslept pause, and the longest silence between two polls it sent. A starved
            # worker makes its visitors poll late, and the server rightly sweeps them.
            "late_s": 0.0,
            "max_gap_s": 0.0,
            "replica": user.replica,  # which of the queue servers (and gates) it used
        }
        self.last_sent: float | None = None
        self.last_position: int | None = None

    def run(self) -> str:
        outcome = self._wait_in_line()
        self.record["outcome"] = outcome
        self.record["life_s"] = round(time.monotonic() - self.started_at, 3)
        self.user.fire(OUTCOME_TYPE, outcome, (time.monotonic() - self.started_at) * 1000)
        RECORDS.write(self.record)
        return outcome

    # --- the line ------------------------------------------------------------------------

    def _wait_in_line(self) -> str:
        body = self._join()
        # An abandoning visitor looks once or twice, then closes the tab; a refreshing one
        # reloads the page after a poll or two, which joins again with its ticket.
        polls_left = random.randint(0, 2) if self.behaviour == ABANDON else -1
        refresh_after = random.randint(1, 2) if self.behaviour == REFRESH else -1
        while True:
            if isinstance(body, str):
                return body  # a final outcome
            state = body.get("state")
            if "draw" in body:
                self.record["draw"] = body["draw"]
            if state == "admitted":
                self._record_admission(body)
                return self._buy(body)
            if state in ("sold_out", "closed", "expired"):
                return str(state)
            if isinstance(body.get("position"), int):
                self.last_position = body["position"]
            if polls_left == 0:
                return ABANDONED
            polls_left -= 1
            # waiting, not_started, paused: ask again, no sooner than the server says.
            self._sleep(_poll_after_s(body))
            if refresh_after == 0:
                body = self._refresh()
            else:
                body = self._status()
            refresh_after -= 1

    def _sleep(self, seconds: float) -> None:
        start = time.monotonic()
        gevent.sleep(seconds)
        late = time.monotonic() - start - seconds
        self.record["late_s"] = round(max(self.record["late_s"], late), 3)

    def _sent(self) -> None:
        now = time.monotonic()
        if self.last_sent is not None:
            gap = now - self.last_sent
            self.record["max_gap_s"] = round(max(self.record["max_gap_s"], gap), 3)
        self.last_sent = now

    def _join(self) -> dict[str, Any] | str:
        while True:
            headers = {"Authorization": f"Bearer {self.ticket}"} if self.ticket else {}
            if self.first_join_at is None:
                self.first_join_at = time.monotonic()
            sent = time.time()
            with self.client.post(
                f"/queue/{self.product_id}/join",
                headers=headers,
                name="join",
                catch_response=True,
            ) as response:
                code = response.status_code
                self.record["joins"] += 1
                if code in (200, 201):
                    response.success()
                    body = response.json()
                    self.ticket = body["ticket"]
                    if self.record["join_sent"] is None:
                        # The first place this tab got: its join order, seen from outside.
                        self.record.update(
                            join_sent=sent,
                            join_done=time.time(),
                            join_state=body.get("state"),
                            join_position=body.get("position"),
                            visitor_id=_visitor_id(self.ticket),
                        )
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
                    response.failure(f"no sale for product {self.product_id!r}")
                    return NOT_FOUND
                if code == 0:
                    # No answer at all: a join is safe to repeat (the ticket, once we have
                    # one, keeps the place), so do what a reloading browser would.
                    response.failure(f"no answer on join: {type(response.error).__name__}")
                    self.unanswered += 1
                    if self.unanswered > MAX_UNANSWERED:
                        return GAVE_UP
                    gevent.sleep(DEFAULT_RETRY_S)
                    continue
                response.failure(f"unexpected {code} on join")
                return GAVE_UP

    def _refresh(self) -> dict[str, Any] | str:
        """A page reload: the browser joins again with its ticket and must keep its place."""
        before = self.last_position
        self.record["refreshes"] += 1
        self._sent()
        with self.client.post(
            f"/queue/{self.product_id}/join",
            headers={"Authorization": f"Bearer {self.ticket}"},
            name="join",
            catch_response=True,
        ) as response:
            code = response.status_code
            self.record["joins"] += 1
            if code == 200:
                response.success()
                body: dict[str, Any] = response.json()
                position = body.get("position")
                if isinstance(position, int) and before is not None and position > before:
                    self.record["refresh_moved_back"] += 1
                return body
            if code == 201:
                response.failure("201 on a reload: a second place")
                self.record["refresh_new_place"] += 1
                body = response.json()
                self.ticket = body["ticket"]
                return body
            if code == 409:
                response.success()  # sold out meanwhile: the reload shows it
                return "closed"
            response.failure(f"{code} on reload")
        # Pushback or no answer on the reload: the page falls back to polling its status.
        return self._status()

    def _status(self) -> dict[str, Any] | str:
        while True:
            self.record["polls"] += 1
            self._sent()
            with self.client.get(
                f"/queue/{self.product_id}/status",
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
                response.failure(f"{code} {_error_code(response)}; joining again")
                self.record["lost"] += 1
            self.rejoins += 1
            if self.rejoins > MAX_REJOINS:
                return GAVE_UP
            if code == 401:
                self.ticket = None  # the ticket is dead: come back as a new visitor
            return self._join()

    # --- the shop ------------------------------------------------------------------------

    def _buy(self, admitted: dict[str, Any]) -> str:
        if self.user.gate_url:
            url = f"{self.user.gate_url}/products/{self.product_id}/orders"
        elif admitted.get("shop_url"):
            url = f"{str(admitted['shop_url']).rstrip('/')}/orders"
        else:
            url = f"{DEFAULT_GATE_URL}/products/{self.product_id}/orders"
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
                response.failure(f"{code} {_error_code(response)} on order")
                return ORDER_REFUSED
        return ORDER_FAILED

    def _record_admission(self, body: dict[str, Any]) -> None:
        assert self.first_join_at is not None
        waited_s = time.monotonic() - self.first_join_at
        self.record.update(
            admitted_expiry=_expiry_s(body), admitted_seen=time.time(), wait_s=round(waited_s, 3)
        )
        self.user.fire(METRIC_TYPE, "join_to_admission", waited_s * 1000)


class Visitor(FastHttpUser):
    """One person in front of the waiting-room page (or two pages, one per sale)."""

    # A visitor waits minutes between its requests: never time out a poll the server is still
    # answering in a storm, but do not hang forever on a dead one either.
    network_timeout = 30.0
    connection_timeout = 10.0

    # All pacing comes from the server (poll_after_ms, Retry-After) inside the one task: a
    # fixed wait between polls is exactly what the server's instruction replaces.
    def wait_time(self) -> float:
        return 0.0

    def __init__(self, environment: Environment) -> None:
        # Chosen before the client exists: FastHttpUser binds its session to self.host. The
        # worker's index staggers the workers, so N replicas share every worker's visitors.
        k = next(_spawned) + int(getattr(environment.runner, "worker_index", 0) or 0)
        self.replica = k % len(QUEUE_URLS) if QUEUE_URLS else 0
        if QUEUE_URLS:
            self.host = QUEUE_URLS[self.replica]
        self.gate_url = (
            GATE_URL_OVERRIDES[k % len(GATE_URL_OVERRIDES)] if GATE_URL_OVERRIDES else ""
        )
        super().__init__(environment)

    def on_start(self) -> None:
        self.started_at = time.monotonic()
        roll = random.random()
        if roll < ABANDON_SHARE:
            self.behaviour = ABANDON
        elif roll < ABANDON_SHARE + REFRESH_SHARE:
            self.behaviour = REFRESH
        elif roll < ABANDON_SHARE + REFRESH_SHARE + TWO_SALES_SHARE:
            self.behaviour = TWO_SALES
        else:
            self.behaviour = STEADY

    @task
    def visit(self) -> None:
        if self.behaviour == TWO_SALES:
            # Two tabs at once, each its own greenlet: the two sales must not see each other.
            tabs = [Tab(self, PRODUCT_ID, TWO_SALES), Tab(self, PRODUCT_B, TWO_SALES)]
            gevent.joinall([gevent.spawn(tab.run) for tab in tabs], raise_error=True)
        else:
            Tab(self, PRODUCT_ID, self.behaviour).run()
        self.fire(METRIC_TYPE, "done", (time.monotonic() - self.started_at) * 1000)
        # A finished visitor stays, as a closed tab: if it stopped, Locust would spawn a new
        # user in its place while ramping up (it keeps the live count at the target), and a
        # storm of N visitors would quietly become more. Its connections are closed, so the
        # queue server holds sockets only for visitors still in line.
        self.client.client.close()
        while True:
            gevent.sleep(3600)

    def fire(self, request_type: str, name: str, ms: float) -> None:
        self.environment.events.request.fire(
            request_type=request_type,
            name=name,
            response_time=ms,
            response_length=0,
            exception=None,
            context={},
        )


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

    def visitors_done() -> int:
        entry = environment.stats.entries.get(("done", METRIC_TYPE))
        return entry.num_requests if entry is not None else 0

    def watch() -> None:
        # Visitors finish by themselves (bought, sold out...): once all have, the storm is
        # over, and waiting for -t would only add idle time to the report. The master counts
        # them from the workers' stats reports, which carry every request of a visitor
        # before its "done".
        while visitors_done() < max(runner.target_user_count, 1):
            gevent.sleep(0.5)
        # Locust writes its CSVs every CSV_STATS_INTERVAL_SEC and not again at shutdown: wait
        # for one more pass, or the last visitors' requests would be missing from the files.
        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.5)
        runner.quit()

    def on_test_start(**_: Any) -> None:
        gevent.spawn(watch)

    environment.events.test_start.add_listener(on_test_start)


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
