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
the simulation; it exits 1 when they disagree by more than ``--tolerance``.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from infra.constants import POLL_MIN_MS, POLL_WAIT_SHARE, RATE_WINDOW_MS
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
    # What-ifs, not the rule of status.py (0 = the rule as it is): each poll_after_ms of a
    # waiting visitor scaled by U(1 - jitter, 1), and the start's herd spread over this long.
    jitter: float = 0.0
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


def poll_after_waiting(position: I64, rate: F64, cap_ms: int) -> I64:
    """status.py's poll_after_ms for state 'waiting' with a position, element-wise."""
    with np.errstate(divide="ignore", invalid="ignore"):
        wait_ms = np.where(
            rate > 0, position / np.where(rate > 0, rate, 1.0) * 1000, position * 1000
        )
    return np.minimum(cap_ms, np.maximum(POLL_MIN_MS, wait_ms * POLL_WAIT_SHARE)).astype(np.int64)


def poll_after_not_started(until_start_ms: I64, cap_ms: int, rng: np.random.Generator) -> I64:
    """status.py's rule for 'not_started': the herd spread over POLL_MIN_MS."""
    spread = rng.integers(0, POLL_MIN_MS, size=until_start_ms.shape, endpoint=True)
    return np.minimum(cap_ms, np.maximum(POLL_MIN_MS, until_start_ms) + spread)


def _reply(state: str, position: int | None, rate: float, now: int, start: int, c: Config) -> Reply:
    return Reply(
        code="ok", state=state, position=position, waiting=position or 0, rate=rate, token="",
        token_expiry_ms=0, now_ms=now, start_ms=start, early=False, seed="",
        abandon_ms=c.abandon_s * 1000, pickup_ms=c.pickup_s * 1000,
    )  # fmt: skip


def check_rule(c: Config, samples: int = 20_000) -> None:
    """The array form against queue_server/status.py itself, or the run would prove nothing."""
    cap = poll_cap_ms(c.abandon_s * 1000, c.pickup_s * 1000)
    gen = random.Random(c.seed)
    positions = np.array([gen.choice([1, 2, 7, 99, 10**3, 10**5, 10**7]) + gen.randrange(10**4)
                          for _ in range(samples)], dtype=np.int64)  # fmt: skip
    rates = np.array([gen.choice([0.0, 0.5, 10.0, 100.0, 1234.567]) for _ in range(samples)])
    mine = poll_after_waiting(positions, rates, cap)
    for p, r, got in zip(positions.tolist(), rates.tolist(), mine.tolist(), strict=True):
        want = poll_after_ms(_reply("waiting", p, r, 0, 0, c))
        if want != got:
            raise AssertionError(f"poll rule drifted: position {p}, rate {r}: {got} != {want}")
    rng = np.random.default_rng(c.seed)
    until = np.array([gen.randrange(0, 200_000) for _ in range(2_000)], dtype=np.int64)
    mine = poll_after_not_started(until, cap, rng)
    for u, got in zip(until.tolist(), mine.tolist(), strict=True):
        lo = min(cap, max(POLL_MIN_MS, u))
        want = poll_after_ms(_reply("not_started", None, 0.0, 0, u, c))
        # Both draw their own spread: the same bounds, not the same number.
        if not (lo <= got <= min(cap, lo + POLL_MIN_MS) and lo <= want <= lo + POLL_MIN_MS):
            raise AssertionError(f"not_started rule drifted: until {u}: {got} vs {want}")


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
        cum = np.cumsum(self.in_line, dtype=np.int64)
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
    slots = math.ceil((cap_ms / 1000 + c.herd_spread_s) / dt) + 3  # how far ahead a poll is
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
        who = np.concatenate((joining, polled))
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
            if opened:
                delay = poll_after_waiting(v.positions(wait), rate[v.sale[wait]], cap_ms)
                if c.jitter > 0:
                    delay = (delay * (1 - c.jitter * rng.random(wait.size))).astype(np.int64)
            else:
                until = np.maximum(0, np.ceil(-v.due[wait] * 1000)).astype(np.int64)
                delay = poll_after_not_started(until, cap_ms, rng)
                if c.herd_spread_s > 0:
                    delay += (c.herd_spread_s * 1000 * rng.random(wait.size)).astype(np.int64)
            v.due[wait] += delay / 1000
            slot = np.floor(v.due[wait] / dt).astype(np.int64)
            order = np.argsort(slot, kind="stable")
            slot, wait = slot[order], wait[order]
            cuts = np.flatnonzero(np.diff(slot)) + 1
            for s_t, part in zip(slot[np.r_[0, cuts]].tolist(), np.split(wait, cuts), strict=True):
                ring[s_t % slots].append(part)
        res.seconds.append(
            Second(now, int(polled.size), int(joining.size + passed.size), admitted_now,
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
    res.outcomes["quit"] = int(np.isfinite(v.quit_at).sum())
    admitted = res.outcomes.get("admitted", 0)
    # As the bench counts it (bench/suite.py storm_group): every status poll of the crowd,
    # over the visitors admitted.
    res.polls_per_admitted = res.polls_total / admitted if admitted else 0.0
    res.polls_max = int(v.polls.max(initial=0))
