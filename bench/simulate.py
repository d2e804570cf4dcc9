"""A discrete-time simulation of the waiting room's admission and polling at scale.

No HTTP and no Redis: every visitor is a row of numpy arrays, and time moves one admission tick
(``interval_s``) at a time. Per tick, in the order admit.lua and the queue server do it:

1. the tick of every open sale: admissions whose pickup window ran out return their slots,
   places quiet for longer than ``abandon_s`` are dropped, then up to the allowance
   (``batch_size``, the stock x overbook rule) is popped from the head; the measured rate
   (the last ``RATE_WINDOW_MS`` of ticks, as admit.lua keeps it) is what later polls are told;
2. the joins that arrive during the tick, each answered with a position and ``poll_after_ms``;
3. the status polls that fall due during the tick, at their exact times: each visitor is
   answered from the line as the last tick left it (the line only changes at ticks), and asks
   again after ``poll_after_ms`` of its reply.

``poll_after_ms`` is the real rule of queue_server/status.py, evaluated on whole arrays: the
vectorised form is checked against the function itself on a sample of replies before every run
(:func:`check_rule`), so a change to the rule that the copy does not follow stops the run.

Run ``python -m bench.simulate`` (10M visitors, 100 sales; see ``--help``). It prints one line
per ``--report-every`` seconds, a summary, and the model of docs/SCALING.md side by side with
the simulation; it exits 1 when they disagree by more than the tolerance of a figure (TOLERANCE).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from infra.constants import (
    HERD_POLLS_PER_S,
    HERD_SPREAD_MAX_MS,
    POLL_JITTER,
    POLL_MIN_MS,
    POLL_WAIT_SHARE,
    RATE_WINDOW_MS,
)
from queue_server.status import Reply, poll_after_ms, poll_cap_ms

SCALING_MD = Path(__file__).resolve().parent.parent / "docs" / "SCALING.md"

# Visitor states. A visitor that stopped asking (``quit``) keeps its state until its place is
# dropped or its admission runs out, as in Redis.
NOT_ARRIVED, IN_LINE, ADMITTED, PICKED_UP, LOST, SOLD_OUT, EXPIRED = range(7)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Config:
    visitors: int = 10_000_000
    sales: int = 100
    batch_size: int = 100  # per tick per sale (shop/catalog.py's default)
    interval_s: float = 1.0
    stock: int = 0  # per sale; 0: enough for every visitor of the sale
    overbook: float = 1.5
    max_active: int = 0  # 0: no bound but the stock rule (the catalog's default)
    abandon_s: int = 300
    pickup_s: int = 60
    # Arrivals: `early_share` join during the pre-queue (shuffle mode: a random place at the
    # start); of the others, `burst_share` arrive uniformly in the first `burst_s` after the
    # opening and the rest uniformly over `arrival_s`.
    early_share: float = 0.5
    prequeue_s: float = 600.0
    draw_s: float = 0.0  # how long after the start the draw is done (the sale opened)
    burst_share: float = 1.0
    burst_s: float = 60.0
    arrival_s: float = 600.0
    # A share of the visitors gives up after U(0, abandon_within_s) s of waiting, unless
    # admitted first; they stop asking at once.
    abandon_share: float = 0.1
    abandon_within_s: float = 600.0
    seed: int = 1
    max_s: float = 7_200.0
    # Overrides of status.py's rule, for what-ifs; the defaults are the rule itself. `jitter`:
    # each waiting poll is scaled by U(1 - jitter, 1) (0: none). `herd_spread_s`: 0 spreads the
    # start's herd as the rule does (by the size of the pre-queue); else over a flat this long.
    # `--jitter 0 --herd-spread-s 1` is the rule before the herd fix.
    jitter: float = POLL_JITTER
    herd_spread_s: float = 0.0


@dataclass(slots=True)
class Second:
    """What one tick's worth of time saw (summed over every sale)."""

    t: float
    status: int
    joins: int
    admitted: int
    passthrough: int
    waiting: int
    longest: int


@dataclass(slots=True)
class Result:
    config: Config
    seconds: list[Second] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    polls_total: int = 0
    polls_per_admitted: float = 0.0
    polls_max: int = 0
    max_admitted_per_tick: int = 0  # the most one sale admitted in one tick
    passthrough: int = 0  # joins admitted at once into an empty line (join.lua)
    last_admission_s: float = 0.0
    wall_s: float = 0.0

    def peak(self, name: str) -> float:
        return max((getattr(s, name) / self.config.interval_s for s in self.seconds), default=0)


# --- The rule, on arrays ------------------------------------------------------------------------


# Each takes its uniform draws in [0, 1) as an array `u`, one per answer, as poll_after_ms takes
# its `uniform`: check_rule gives both the same draws, so the copy is checked exactly, draws and
# all, and run() gives the arrays numpy's.


def herd_spread_ms(waiting: I64, pickup_ms: int) -> I64:
    """status.py's herd_spread_ms, element-wise."""
    most = min(HERD_SPREAD_MAX_MS, pickup_ms // 2)
    return np.maximum(POLL_MIN_MS, np.minimum(waiting * 1000 // HERD_POLLS_PER_S, most))


def poll_after_waiting(
    position: I64, rate: F64, cap_ms: int, u: F64, jitter: float = POLL_JITTER
) -> I64:
    """status.py's poll_after_ms for state 'waiting' with a position, element-wise."""
    with np.errstate(divide="ignore", invalid="ignore"):
        wait_ms = np.where(
            rate > 0, position / np.where(rate > 0, rate, 1.0) * 1000, position * 1000
        )
    interval = np.minimum(cap_ms, np.maximum(POLL_MIN_MS, wait_ms * POLL_WAIT_SHARE))
    return np.maximum(POLL_MIN_MS, (interval * (1 - jitter * u)).astype(np.int64))


def poll_after_not_started(until_start_ms: I64, spread_ms: I64, cap_ms: int, u: F64) -> I64:
    """status.py's rule for 'not_started': the start plus U(0, spread), at most the cap."""
    drawn = (u * (spread_ms + 1)).astype(np.int64)
    return np.minimum(cap_ms, np.maximum(POLL_MIN_MS, until_start_ms) + drawn)


def _reply(
    state: str, position: int | None, rate: float, now: int, start: int, c: Config, waiting: int
) -> Reply:
    return Reply(
        code="ok", state=state, position=position, waiting=waiting, rate=rate, token="",
        token_expiry_ms=0, now_ms=now, start_ms=start, early=False, seed="",
        abandon_ms=c.abandon_s * 1000, pickup_ms=c.pickup_s * 1000,
    )  # fmt: skip


def _drawing(u: float) -> Callable[[], float]:
    return lambda: u


def check_rule(c: Config, samples: int = 20_000) -> None:
    """The array form against queue_server/status.py itself, or the run would prove nothing.
    Both get the same uniform draws, so they must agree to the millisecond."""
    cap = poll_cap_ms(c.abandon_s * 1000, c.pickup_s * 1000)
    gen = random.Random(c.seed)
    positions = np.array([gen.choice([1, 2, 7, 99, 10**3, 10**5, 10**7]) + gen.randrange(10**4)
                          for _ in range(samples)], dtype=np.int64)  # fmt: skip
    rates = np.array([gen.choice([0.0, 0.5, 10.0, 100.0, 1234.567]) for _ in range(samples)])
    draws = np.array([gen.random() for _ in range(samples)])
    mine = poll_after_waiting(positions, rates, cap, draws)
    for p, r, u, got in zip(positions.tolist(), rates.tolist(), draws.tolist(), mine.tolist(),
                            strict=True):  # fmt: skip
        want = poll_after_ms(_reply("waiting", p, r, 0, 0, c, p), _drawing(u))
        if want != got:
            raise AssertionError(f"poll rule drifted: position {p}, rate {r}, draw {u}: "
                                 f"{got} != {want}")  # fmt: skip
    n = samples // 10
    until = np.array([gen.randrange(0, 2 * cap) for _ in range(n)], dtype=np.int64)
    waiting = np.array([gen.choice([0, 1, 999, 3_000, 10**4, 5 * 10**4, 10**5, 10**7])
                        + gen.randrange(1_000) for _ in range(n)], dtype=np.int64)  # fmt: skip
    draws = np.array([gen.random() for _ in range(n)])
    spread = herd_spread_ms(waiting, c.pickup_s * 1000)
    mine = poll_after_not_started(until, spread, cap, draws)
    for t, w, u, got in zip(until.tolist(), waiting.tolist(), draws.tolist(), mine.tolist(),
                            strict=True):  # fmt: skip
        want = poll_after_ms(_reply("not_started", None, 0.0, 0, t, c, w), _drawing(u))
        if want != got:
            raise AssertionError(f"not_started rule drifted: until {t}, waiting {w}, draw {u}: "
                                 f"{got} != {want}")  # fmt: skip


# --- The simulation ----------------------------------------------------------------------------


def _arrivals(c: Config, rng: np.random.Generator) -> tuple[F64, npt.NDArray[np.int16], F64]:
    """Arrival time, sale and quit time of every visitor, ordered as the lines will be: by
    sale, early visitors first in their drawn (random) order, then the rest as they came."""
    n = c.visitors
    early = rng.random(n) < c.early_share
    burst = rng.random(n) < c.burst_share
    arrive = np.where(
        early,
        -c.prequeue_s * rng.random(n),
        np.where(burst, c.burst_s * rng.random(n), c.arrival_s * rng.random(n)),
    )
    sale = rng.integers(0, c.sales, size=n).astype(np.int16)
    patience = np.where(rng.random(n) < c.abandon_share, c.abandon_within_s * rng.random(n), np.inf)
    # In shuffle mode the early ones are re-ranked at the start; the order key is the draw.
    key = np.where(early, rng.random(n) - 2.0, arrive)
    order = np.lexsort((key, sale))
    # A pre-queue visitor's patience starts at the opening: it was told to come back then.
    quit_at = np.maximum(arrive, 0.0) + patience
    return arrive[order], sale[order], quit_at[order]


class _Line:
    """Every visitor's row, and the per-sale counters the scripts keep in Redis."""

    def __init__(self, c: Config, rng: np.random.Generator) -> None:
        self.arrive, self.sale, self.quit_at = _arrivals(c, rng)
        n = c.visitors
        counts = np.bincount(self.sale, minlength=c.sales).astype(np.int64)
        self.counts = counts
        self.start = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        self.early = np.bincount(self.sale[self.arrive < 0], minlength=c.sales).astype(np.int64)
        self.stock = (counts if c.stock <= 0 else np.full(c.sales, c.stock)).astype(np.int64)
        self.state = np.zeros(n, dtype=np.int8)
        self.in_line = np.zeros(n, dtype=np.int8)
        self.due = np.zeros(n)  # when its next poll falls due
        self.asked = np.zeros(n)  # when it last asked (join or status): the abandon clock
        self.polls = np.zeros(n, dtype=np.int32)
        self.head = self.start.copy()  # no place before it is still in line
        # Late visitors join in index order: those of sale k so far are [start, arrived_to).
        self.arrived_to = self.start + self.early
        self.active = np.zeros(c.sales, dtype=np.int64)  # admitted, not picked up nor expired
        self.line = np.zeros(c.sales, dtype=np.int64)  # ZCARD of each line
        self.c = c

    def allowance(self, want: int) -> I64:
        """lib.lua's allowance: the stock x overbook rule and max_active, capped at want."""
        c = self.c
        allow = np.minimum(want, np.ceil(self.stock * c.overbook - 1e-9) - self.active)
        if c.max_active > 0:
            allow = np.minimum(allow, c.max_active - self.active)
        return np.where(self.stock > 0, np.maximum(allow, 0), 0).astype(np.int64)

    def leave_line(self, idx: I64, new_state: int) -> None:
        self.state[idx] = new_state
        self.in_line[idx] = 0
        self.line -= np.bincount(self.sale[idx], minlength=self.c.sales)

    def buy(self, idx: I64) -> None:
        """Picked up, and one unit bought at once (order.lua ends the admission)."""
        self.state[idx] = PICKED_UP
        self.stock -= np.bincount(self.sale[idx], minlength=self.c.sales)
        np.maximum(self.stock, 0, out=self.stock)

    def positions(self, idx: I64) -> I64:
        """Positions (1-based, ZRANK + 1) of visitors idx in their lines."""
        cum = np.cumsum(self.in_line, dtype=np.int32)  # half the memory traffic of int64
        before = np.where(self.start > 0, cum[np.maximum(self.start - 1, 0)], 0)
        return cum[idx] - before[self.sale[idx]]

    def pop(self, k: int, want: int) -> I64:
        """ZPOPMIN of up to `want` places of sale k, from its head."""
        lo, hi = int(self.head[k]), int(self.arrived_to[k])
        took: list[I64] = []
        have, span = 0, 4 * want + 64
        while lo < hi and have < want:
            got = lo + np.flatnonzero(self.in_line[lo : min(hi, lo + span)])[: want - have]
            took.append(got)
            have += got.size
            lo = int(got[-1]) + 1 if have == want else min(hi, lo + span)
            span *= 2
        self.head[k] = lo
        return np.concatenate(took) if took else np.empty(0, dtype=np.int64)


def run(c: Config, progress: bool = False, report_every: float = 60.0) -> Result:
    check_rule(c)
    started = time.perf_counter()
    rng = np.random.default_rng(c.seed)
    v = _Line(c, rng)
    n, dt = c.visitors, c.interval_s
    cap_ms = poll_cap_ms(c.abandon_s * 1000, c.pickup_s * 1000)
    window = max(1, round(RATE_WINDOW_MS / 1000 / dt))
    samples = np.zeros((c.sales, window), dtype=np.int64)
    sampled = np.zeros(c.sales, dtype=np.int64)
    rate = np.full(c.sales, round(c.batch_size / dt, 3))  # lib.lua: configured until measured
    by_arrival = np.argsort(v.arrive, kind="stable")
    arrivals_sorted = v.arrive[by_arrival]
    next_arrival = 0
    slots = math.ceil(cap_ms / 1000 / dt) + 3  # how far ahead a poll can be
    ring: list[list[I64]] = [[] for _ in range(slots)]
    removals: dict[int, list[I64]] = {}  # tick -> places that will have been quiet too long
    unpicked: dict[int, list[I64]] = {}  # tick -> admissions whose pickup window ends
    res = Result(c)
    tick = math.floor((-c.prequeue_s if c.early_share > 0 else 0.0) / dt)
    next_report = tick * dt
    opened = False
    while True:
        now = tick * dt
        admitted_now = 0
        # 1. The tick of every sale (admit.lua), once the start and the draw are done.
        opened = opened or now >= c.draw_s
        if opened:
            for idx in unpicked.pop(tick, []):
                idx = idx[v.state[idx] == ADMITTED]
                v.state[idx] = EXPIRED
                v.active -= np.bincount(v.sale[idx], minlength=c.sales)
            for idx in removals.pop(tick, []):
                v.leave_line(idx[v.state[idx] == IN_LINE], LOST)
            live = v.stock > 0
            allow = v.allowance(c.batch_size)
            popped = []
            for k in np.flatnonzero(live).tolist():
                took = v.pop(k, int(allow[k])) if allow[k] else np.empty(0, dtype=np.int64)
                # Every tick that could admit is a sample, even one that admitted nobody.
                samples[k, sampled[k] % window] = took.size
                if took.size:
                    popped.append(took)
                    res.max_admitted_per_tick = max(res.max_admitted_per_tick, int(took.size))
            sampled += live
            if popped:
                idx = np.concatenate(popped)
                v.leave_line(idx, ADMITTED)
                v.active += np.bincount(v.sale[idx], minlength=c.sales)
                unpicked.setdefault(tick + math.ceil(c.pickup_s / dt), []).append(idx)
                admitted_now = int(idx.size)
                res.last_admission_s = now
            filled = np.minimum(sampled, window)
            measured = samples.sum(axis=1) / np.maximum(filled * dt, 1e-9)
            rate = np.where(filled > 0, np.round(measured, 3), round(c.batch_size / dt, 3))

        # 2. The joins of this tick, answered at once (a join's reply is a status). join.lua
        #    lets a joiner straight through when its sale is open and its line is empty.
        upto = int(np.searchsorted(arrivals_sorted, now + dt, side="left"))
        joining = np.sort(by_arrival[next_arrival:upto])
        next_arrival = upto
        v.asked[joining] = v.due[joining] = v.arrive[joining]
        through = np.zeros(joining.size, dtype=bool)
        if opened and joining.size:
            room = np.where(v.line == 0, np.minimum(v.allowance(n), v.stock), 0)
            if room.any():
                k_j = v.sale[joining]
                rank = np.arange(joining.size) - np.searchsorted(k_j, k_j)  # joins are by sale
                through = rank < room[k_j]
        passed = joining[through]
        v.buy(passed)
        res.passthrough += int(passed.size)
        joining = joining[~through]
        v.state[joining] = IN_LINE
        v.in_line[joining] = 1
        v.line += np.bincount(v.sale[joining], minlength=c.sales)
        late = joining[v.arrive[joining] >= 0]
        if late.size:
            np.maximum.at(v.arrived_to, v.sale[late], late + 1)

        # 3. The polls due in this tick. Who quit before its poll does not ask: its place stays
        #    until the tick after it has been quiet for abandon_s (admit.lua's scan and sweep).
        #    A poll that falls due again within this tick (an interval longer than the
        #    shortest poll) is answered in another round: the line does not change until the
        #    next tick, so the order of the rounds cannot change an answer.
        asked_now = 0
        news = joining
        while True:
            bucket = ring[tick % slots]
            ring[tick % slots] = []
            polled = np.concatenate(bucket) if bucket else np.empty(0, dtype=np.int64)
            gone = v.due[polled] >= v.quit_at[polled]
            if gone.any():
                g = polled[gone]
                drop = np.floor((v.asked[g] + c.abandon_s) / dt).astype(np.int64) + 1
                for t_drop in np.unique(drop).tolist():
                    removals.setdefault(int(t_drop), []).append(g[drop == t_drop])
                polled = polled[~gone]
            v.polls[polled] += 1
            v.asked[polled] = v.due[polled]
            res.polls_total += int(polled.size)
            asked_now += int(polled.size)
            who = np.concatenate((news, polled))
            news = news[:0]
            st = v.state[who]
            sold = (v.stock[v.sale[who]] <= 0) & opened & ((st == IN_LINE) | (st == ADMITTED))
            if sold.any():  # lib.lua answers sold_out before it looks at the visitor
                s_idx = who[sold]
                v.active -= np.bincount(v.sale[s_idx[st[sold] == ADMITTED]], minlength=c.sales)
                v.leave_line(s_idx[st[sold] == IN_LINE], SOLD_OUT)
                v.state[s_idx] = SOLD_OUT
            pick = who[~sold & (st == ADMITTED)]
            if pick.size:  # told it is admitted: it picks its token up and buys one unit at once
                v.active -= np.bincount(v.sale[pick], minlength=c.sales)
                v.buy(pick)
            wait = who[~sold & (st == IN_LINE)]
            if wait.size:
                draws = rng.random(wait.size)
                if opened:
                    delay = poll_after_waiting(
                        v.positions(wait), rate[v.sale[wait]], cap_ms, draws, c.jitter
                    )
                else:
                    until = np.maximum(0, np.ceil(-v.due[wait] * 1000)).astype(np.int64)
                    delay = poll_after_not_started(until, _spread(c, v.line[v.sale[wait]]),
                                                   cap_ms, draws)  # fmt: skip
                v.due[wait] += delay / 1000
                slot = np.floor(v.due[wait] / dt).astype(np.int64)
                order = np.argsort(slot, kind="stable")
                slot, wait = slot[order], wait[order]
                cuts = np.flatnonzero(np.diff(slot)) + 1
                for s_t, part in zip(
                    slot[np.r_[0, cuts]].tolist(), np.split(wait, cuts), strict=True
                ):
                    ring[s_t % slots].append(part)
            if not ring[tick % slots]:
                break
        res.seconds.append(
            Second(now, asked_now, int(joining.size + passed.size), admitted_now,
                   int(passed.size), int(v.line.sum()), int(v.line.max(initial=0)))
        )  # fmt: skip
        if progress and now >= next_report:
            next_report += report_every
            print(_row(res.seconds[-1], dt), flush=True)
        tick += 1
        if not (any(ring) or removals or unpicked or next_arrival < n) or now > c.max_s:
            break
    _finish(res, v)
    res.wall_s = time.perf_counter() - started
    return res


def _spread(c: Config, waiting: I64) -> I64:
    """The start's spread for replies that saw lines of `waiting`: the rule's, or the flat
    override of Config.herd_spread_s."""
    if c.herd_spread_s > 0:
        return np.full(waiting.shape, round(c.herd_spread_s * 1000), dtype=np.int64)
    return herd_spread_ms(waiting, c.pickup_s * 1000)


def _row(s: Second, dt: float) -> str:
    return (
        f"t={s.t:7.0f}s  status/s {s.status / dt:9,.0f}  joins/s {s.joins / dt:9,.0f}  "
        f"admitted/s {s.admitted / dt:7,.0f}  waiting {s.waiting:11,d}  longest {s.longest:9,d}"
    )


def _finish(res: Result, v: _Line) -> None:
    names = {
        NOT_ARRIVED: "not_arrived",
        IN_LINE: "in_line",
        ADMITTED: "admitted_not_picked_up",
        PICKED_UP: "admitted",
        LOST: "lost",
        SOLD_OUT: "sold_out",
        EXPIRED: "expired",
    }
    found = np.bincount(v.state, minlength=len(names))
    res.outcomes = {names[i]: int(found[i]) for i in range(len(names)) if found[i]}
    quit = np.isfinite(v.quit_at)
    res.outcomes["quit"] = int(quit.sum())
    # A visitor that kept asking never loses its place nor lets its admission run out.
    res.outcomes["failed_while_asking"] = int(
        (((v.state == LOST) | (v.state == EXPIRED)) & ~quit).sum()
    )
    admitted = res.outcomes.get("admitted", 0)
    # As the bench counts it (bench/suite.py storm_group): every status poll of the crowd,
    # over the visitors admitted.
    res.polls_per_admitted = res.polls_total / admitted if admitted else 0.0
    res.polls_max = int(v.polls.max(initial=0))


# --- The model of docs/SCALING.md ----------------------------------------------------------------
#
# Closed forms where there are closed forms (the polling law of a line), and for the per-visitor
# figures a fluid model: every line moves at exactly batch_size / interval_s, a visitor's wait
# is its position over that rate, and its polls are the rule iterated on that wait. It knows
# nothing of ticks, measured rates, sweeps or sorted sets, so the simulation is a check of it.

MEASURED = {
    # bench/results/2026-12-01T2012Z.json and README.md "## Performance" (the bench of commit
    # 4f79a9c, one uvicorn worker each, wrk -t1 -c64 on the same 2-vCPU VM).
    "status_rps": 12_072,  # GET /queue/p/status, 1,000,000 waiting
    "join_rps": 9_132,
    "gate_rps": 6_823,  # GET /products/{id} through the gate (the shop on the same VM)
    "shop_rps": 11_448,  # the same GET, direct
    "intake_ops": 6_709,  # orders/s accepted by one shop process
    "drain_ops": 32_752,  # orders/s stored by one order worker
    "bytes_per_waiting": 95.9,
    "calls_per_join": 1.0,
    "calls_per_status": 1.0,
    "calls_per_admitted": 1.032,
    # Valkey INFO commandstats usec_per_call (the brief of issue 10): a status, a join.
    "valkey_status_us": 30.0,
    "valkey_join_us": 40.0,
}
DERATE = 0.6  # plan a process or a shard at 60% of what it was measured to do (SCALING.md)


def _jitter(rng: np.random.Generator, n: int, jitter: float) -> F64:
    return 1 - jitter * rng.random(n)


def _next_poll_s(w: F64, cap_s: float, rng: np.random.Generator, jitter: float) -> F64:
    """The waiting rule in seconds for visitors `w` seconds from their turn: share x wait,
    between a second and the cap, jittered, never under a second."""
    lo = POLL_MIN_MS / 1000
    return np.maximum(lo, np.clip(POLL_WAIT_SHARE * w, lo, cap_s) * _jitter(rng, w.size, jitter))


def tail_polls(cap_s: float, jitter: float = POLL_JITTER, points: int = 10_000) -> float:
    """Polls a visitor makes once its wait has fallen below cap / share, where the interval
    stops being the cap: it enters that stretch at a wait spread evenly over its last capped
    interval below it (a cap scaled by the jitter), then each poll asks again after share x
    wait (jittered, never under a second), until the one that finds it admitted."""
    rng = np.random.default_rng(0)  # a fixed sample: the model is a number, not a draw
    top = cap_s / POLL_WAIT_SHARE
    before = cap_s * _jitter(rng, points, jitter)  # its capped interval into the stretch
    w = top - before * (np.arange(points) + 0.5) / points
    polls = np.ones(points)  # the poll at the entry
    while (w > 0).any():
        asks = w > 0  # its turn has not come: it asks again, and that poll is counted
        polls += asks
        w = np.where(asks, w - _next_poll_s(w, cap_s, rng, jitter), w)
    return float(polls.mean())


def line_status_rps(line: float, rate: float, cap_s: float, jitter: float = POLL_JITTER) -> float:
    """Status req/s of one line of `line` polling visitors, spread evenly over its waits and
    moving at `rate`: those further than cap / share from their turn ask once per jittered
    cap (on average cap x (1 - jitter / 2)); the others pass through the tail at `rate`, each
    asking tail_polls() times on the way."""
    if rate <= 0 or line <= 0:
        return 0.0
    far = max(0.0, line - rate * cap_s / POLL_WAIT_SHARE)
    near = rate * tail_polls(cap_s, jitter) * min(1.0, line / (rate * cap_s / POLL_WAIT_SHARE))
    return far / (cap_s * (1 - jitter / 2)) + near


def _spread_s(c: Config, waiting: F64) -> F64:
    """The start's spread, in seconds, for lines of `waiting` (the rule's or the override)."""
    return _spread(c, np.floor(waiting).astype(np.int64)) / 1000


def herd_first_tick(c: Config) -> float:
    """Share of the pre-queue whose herd poll falls in the sale's first tick. Its last answer
    before the start came u from the start, u even over 0..cap (it asked once per cap since it
    came, from a time even over the pre-queue), and sent it to max(1 s, u) + U(0, S) (S for the
    line it saw then, which grows through the pre-queue), at most the cap: landing min(cap,
    max(1 s, u) + X) - u after the start. Those that the cap cuts short (u + X > cap) land
    earlier than their draw, so the first tick gets both the even share of the spread, tick / S,
    and tick / cap more."""
    cap_s = poll_cap_ms(c.abandon_s * 1000, c.pickup_s * 1000) / 1000
    tick, lo = c.interval_s, POLL_MIN_MS / 1000
    u = cap_s * (np.arange(100_000) + 0.5) / 100_000
    early = c.visitors / c.sales * c.early_share
    spread = _spread_s(c, early * np.clip(1 - u / c.prequeue_s, 0, 1))
    # Lands at max(1 s, u) - u + X, or at cap - u when that is earlier.
    first = np.where(
        cap_s - u < tick, 1.0, np.clip((tick - (np.maximum(lo, u) - u)) / spread, 0.0, 1.0)
    )
    return float(first.mean())


def _fluid_polls(c: Config, m: int = 200_000) -> dict[str, float]:
    """Polls of m visitors of one average sale, by the rule iterated on fluid waits."""
    rng = np.random.default_rng(c.seed + 1)
    r = c.batch_size / c.interval_s
    cap_s = poll_cap_ms(c.abandon_s * 1000, c.pickup_s * 1000) / 1000
    lo = POLL_MIN_MS / 1000
    per_sale = c.visitors / c.sales
    early = rng.random(m) < c.early_share
    burst = rng.random(m) < c.burst_share
    late_at = np.where(burst, c.burst_s * rng.random(m), c.arrival_s * rng.random(m))
    arrive = np.where(early, -c.prequeue_s * rng.random(m), late_at)
    quit_at = np.where(
        rng.random(m) < c.abandon_share,
        np.maximum(arrive, 0) + c.abandon_within_s * rng.random(m),
        np.inf,
    )
    # Pre-queue polls: max(1 s, to the start) + U(0, S) at most the cap, S for the line then
    # (the pre-queue joined so far), until the poll at or after the start: the herd's.
    polls = np.zeros(m)
    t = arrive.copy()
    pre = early.copy()
    n_early = per_sale * c.early_share
    while pre.any():
        line = n_early * np.clip(1 + t / c.prequeue_s, 0, 1)
        spread = _spread_s(c, line) * rng.random(m)
        step = np.minimum(cap_s, np.maximum(lo, -t) + spread)
        t = np.where(pre, t + step, t)
        polls += pre
        pre &= t < 0
    # After the start: the early ones drawn evenly over the first places, the rest behind.
    late_rate = per_sale * (1 - c.early_share)
    joined = np.where(
        burst, late_rate * late_at / max(c.burst_s, 1e-9), late_rate * late_at / c.arrival_s
    )
    position = np.where(early, n_early * rng.random(m), n_early + joined - r * late_at)
    admit_at = np.maximum(arrive, 0.0) + np.maximum(0.0, position) / r
    w = admit_at - t
    active = w > 0
    last = t.copy()
    while active.any():
        d = _next_poll_s(w, cap_s, rng, c.jitter)
        nxt = t + d
        quits = active & (nxt >= quit_at)
        active &= ~quits
        last = np.where(active, nxt, last)
        t = np.where(active, nxt, t)
        polls += active
        w = np.where(active, w - d, w)
        active &= w > 0
    gave_up = quit_at < admit_at
    removed = gave_up & (last + c.abandon_s < admit_at)  # swept before its turn came
    admitted = m - gave_up.sum()
    return {
        "polls_per_admitted": float(polls.sum() / max(admitted, 1)),
        "removed_share": float(removed.mean()),  # of every visitor, not of those who quit
    }


def model(c: Config) -> dict[str, float]:
    """The figures docs/SCALING.md derives for configuration c."""
    r = c.batch_size / c.interval_s
    cap_s = poll_cap_ms(c.abandon_s * 1000, c.pickup_s * 1000) / 1000
    per_sale = c.visitors / c.sales
    late = c.visitors * (1 - c.early_share)
    early = c.visitors * c.early_share
    burst_joins = late * c.burst_share / c.burst_s + late * (1 - c.burst_share) / c.arrival_s
    t_eq = c.burst_s + cap_s  # every burst joiner has had its first capped poll
    live = 1 - c.abandon_share * min(1.0, t_eq / c.abandon_within_s)
    line_eq = max(0.0, per_sale - r * t_eq)
    fluid = _fluid_polls(c)
    # The last sale to empty is the biggest: each visitor picks a sale at random, so the
    # biggest is the expected maximum of `sales` normal counts (2.5 deviations for 100).
    spread = NormalDist().inv_cdf((c.sales - 0.375) / (c.sales + 0.25)) if c.sales > 1 else 0
    biggest = per_sale + spread * math.sqrt(per_sale)
    return {
        "burst_joins_per_s": burst_joins,
        # The start's herd: the pre-queue's polls in the sale's first tick.
        "herd_status_per_s": early * herd_first_tick(c) / c.interval_s,
        "sustained_status_per_s": c.sales * live * line_status_rps(line_eq, r, cap_s, c.jitter),
        "sustained_at_s": t_eq,
        "polls_per_admitted": fluid["polls_per_admitted"],
        "last_admission_s": biggest * (1 - fluid["removed_share"]) / r,
        "admissions_per_s": c.sales * r,
    }


def simulated(res: Result, at_s: float, cap_s: float) -> dict[str, float]:
    """The simulation's figures that model() predicts."""
    dt = res.config.interval_s
    window = [s.status for s in res.seconds if at_s - cap_s / 2 <= s.t < at_s + cap_s / 2]
    burst = [s.joins for s in res.seconds if 0 <= s.t < res.config.burst_s]
    first = next((s.status for s in res.seconds if s.t >= 0), 0)
    return {
        "burst_joins_per_s": sum(burst) / max(len(burst), 1) / dt,
        "herd_status_per_s": first / dt,  # the sale's first tick
        # The average over one cap: a capped line asks once per cap, in phase with its joins.
        "sustained_status_per_s": sum(window) / max(len(window), 1) / dt,
        "polls_per_admitted": res.polls_per_admitted,
        "last_admission_s": res.last_admission_s,
        "admissions_per_s": max((s.admitted for s in res.seconds), default=0) / dt,
    }


# Relative tolerance of each figure, model against simulation (docs/SCALING.md says why).
TOLERANCE = {
    "burst_joins_per_s": 0.05,
    "herd_status_per_s": 0.05,
    "sustained_status_per_s": 0.10,
    "polls_per_admitted": 0.10,
    "last_admission_s": 0.05,
    "admissions_per_s": 0.0,
}
DOC_MARK = re.compile(r"<!-- simulate:model (\{.*?\}) -->", re.S)


def compare(c: Config, res: Result, doc: Path | None = SCALING_MD) -> tuple[list[str], bool]:
    """Model, documented model and simulation side by side; whether they all agree."""
    m = model(c)
    cap_s = poll_cap_ms(c.abandon_s * 1000, c.pickup_s * 1000) / 1000
    s = simulated(res, m["sustained_at_s"], cap_s)
    stated: dict[str, float] = {}
    if doc is not None and c == Config() and doc.exists():
        found = DOC_MARK.search(doc.read_text())
        stated = json.loads(found.group(1)) if found else {}
    ok = True
    lines = [f"{'figure':<24} {'SCALING.md':>12} {'model':>12} {'simulated':>12} {'diff':>7} tol"]
    for key, tol in TOLERANCE.items():
        if key == "herd_status_per_s" and c.early_share <= 0:
            continue  # no pre-queue, no herd: the peak is the sustained load's
        diff = abs(s[key] - m[key]) / max(abs(m[key]), 1e-9)
        bad = diff > tol + 1e-9
        doc_v = stated.get(key)
        if doc_v is not None and abs(doc_v - m[key]) > 0.01 * max(abs(m[key]), 1):
            bad = True  # the document no longer says what the model computes
        ok &= not bad
        shown = f"{doc_v:>12,.1f}" if doc_v is not None else f"{'-':>12}"
        lines.append(
            f"{key:<24} {shown} {m[key]:>12,.1f} {s[key]:>12,.1f} {diff:>6.1%} "
            f"{tol:.0%}{'  DISAGREE' if bad else ''}"
        )
    if c == Config() and doc is not None and not stated:
        lines.append(f"(no model block found in {doc}: the documented figures were not checked)")
        ok = False
    return lines, ok


def busiest(res: Result) -> list[str]:
    """The busiest second for the status polls, the queue servers (status and joins, in
    processes planned at DERATE) and Valkey (core-seconds), and the busiest cap's average."""
    dt, c = res.config.interval_s, res.config
    status_rps = DERATE * MEASURED["status_rps"]
    join_rps = DERATE * MEASURED["join_rps"]

    def processes(s: Second) -> float:
        return (s.status / status_rps + s.joins / join_rps) / dt

    def valkey(s: Second) -> float:
        return (s.status * MEASURED["valkey_status_us"] + s.joins * MEASURED["valkey_join_us"]) / (
            1e6 * dt
        )

    if not res.seconds:
        return []
    cap_ticks = max(1, round(poll_cap_ms(c.abandon_s * 1000, c.pickup_s * 1000) / 1000 / dt))
    lines = []
    for what, f in (("status/s", lambda s: s.status / dt), ("queue_server processes", processes),
                    ("Valkey core-seconds", valkey)):  # fmt: skip
        top = max(res.seconds, key=f)
        values = np.array([f(s) for s in res.seconds])
        avg = np.convolve(values, np.ones(cap_ticks) / cap_ticks, mode="valid")
        at = int(avg.argmax())
        lines.append(
            f"busiest {what}: {f(top):,.1f} at t = {top.t:,.0f} s ({top.status / dt:,.0f} status/s,"
            f" {top.joins / dt:,.0f} joins/s); over one cap: {avg[at]:,.1f}"
            f" (t = {res.seconds[at].t:,.0f}..{res.seconds[at + cap_ticks - 1].t:,.0f} s)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.simulate", description=__doc__.split("\n")[0])
    for f in Config.__dataclass_fields__.values():
        default = f.default
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(default), default=default)
    p.add_argument("--report-every", type=float, default=60.0, help="seconds between rows")
    p.add_argument("--json", type=Path, help="write every second and the summary here")
    p.add_argument("--no-check", action="store_true", help="print, but do not compare")
    args = p.parse_args(argv)
    c = Config(**{k: getattr(args, k) for k in Config.__dataclass_fields__})
    print(f"simulating {c.visitors:,} visitors over {c.sales} sales: {c}", flush=True)
    res = run(c, progress=True, report_every=args.report_every)
    dt = c.interval_s
    print(f"\ndone in {res.wall_s:.1f} s of wall time, {len(res.seconds) * dt:,.0f} s simulated")
    print(f"outcomes: {res.outcomes}, passed straight through: {res.passthrough:,}")
    print(f"status polls: {res.polls_total:,}; per admitted visitor {res.polls_per_admitted:.2f}"
          f" (most by one visitor: {res.polls_max})")  # fmt: skip
    print(
        f"peak status/s {res.peak('status'):,.0f}; peak joins/s {res.peak('joins'):,.0f}; "
        f"most admitted by one sale in one tick {res.max_admitted_per_tick} "
        f"(batch_size {c.batch_size}); last admission at {res.last_admission_s:,.0f} s"
    )
    print("\n".join(busiest(res)))
    lines, ok = compare(c, res)
    print("\n" + "\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({
            "config": asdict(c), "model": model(c), "outcomes": res.outcomes,
            "polls_per_admitted": res.polls_per_admitted, "wall_s": res.wall_s,
            "seconds": [asdict(s) for s in res.seconds],
        }))  # fmt: skip
    if res.max_admitted_per_tick > c.batch_size:
        print("a sale admitted more than batch_size in one tick")
        return 1
    if args.no_check:
        return 0
    print("model and simulation agree" if ok else "model and simulation DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
