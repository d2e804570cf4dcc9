"""The invariants a storm must keep, checked from outside: the admin API's stats of each sale
and what every visitor's tab saw (the records the Locust users write).

Pure functions of their inputs, so a test can hand them a broken sale and watch them fail.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infra.sale.shuffle import commitment, draw

# Outcomes of a tab that stopped polling on its own: it has no claim to its place any more.
_NOT_POLLING = frozenset({"abandoned", "gave_up", "not_found"})
EXAMPLES = 3  # offending tabs quoted per broken check: enough to start debugging


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def _n(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def outcome_counts(tabs: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for tab in tabs:
        key = str(tab.get("outcome"))
        counts[key] = counts.get(key, 0) + 1
    return counts


def check_stock(
    product: str, stats: Mapping[str, Any], tabs: Sequence[Mapping[str, Any]]
) -> list[Check]:
    """No oversell, stock conserved, every sold unit stored in PostgreSQL and answered."""
    total, left = _n(stats.get("stock_total")), _n(stats.get("stock_left"))
    orders = stats.get("orders") or {}
    pending, placed, paid = (_n(orders.get(k)) for k in ("pending", "placed", "paid"))
    sold = total - left
    outcomes = outcome_counts(tabs)
    bought, failed = outcomes.get("bought", 0), outcomes.get("order_failed", 0)
    live = pending + placed + paid
    return [
        Check(
            f"no oversell [{product}]",
            0 <= left <= total and live <= total and bought <= total,
            f"stock {total}, left {left}, sold {sold}; live orders {live}; "
            f"{bought} visitors told their order was taken",
        ),
        Check(
            f"stock conserved [{product}]",
            left + live == total,
            f"left {left} + pending {pending} + placed {placed} + paid {paid} = "
            f"{left + live} (stock {total})",
        ),
        Check(
            f"stored orders equal stock sold [{product}]",
            pending == 0 and placed + paid == sold and bought <= sold <= bought + failed,
            f"{placed + paid} stored, {pending} still pending, {sold} sold; "
            f"{bought} answered 2xx, {failed} with no answer",
        ),
    ]


def _polling(tabs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Tabs that held one place and kept polling to the end: fairness is owed to them.

    An admission that expired before the tab's next poll was given (in its turn), but the
    tab never learnt its batch: it cannot be placed in the order, and check_places counts it.
    """
    return [
        t
        for t in tabs
        if t.get("join_done") is not None
        and t.get("outcome") not in _NOT_POLLING
        and t.get("outcome") != "expired"
        and not _n(t.get("lost"))
        and not _n(t.get("refresh_new_place"))
    ]


def _admitted_at(tab: Mapping[str, Any]) -> float:
    """The admission's batch (its token expiry, to the second); never admitted is +inf."""
    expiry = tab.get("admitted_expiry")
    return math.inf if expiry is None else float(expiry)


def fifo_violations(tabs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Admitted tabs that some tab joined strictly before (its join answered before this one's
    was sent) and that was admitted in a later batch, or never while it kept polling."""
    by_done = sorted(tabs, key=lambda t: float(t["join_done"]))
    done_at = [float(t["join_done"]) for t in by_done]
    worst_before = list(itertools.accumulate((_admitted_at(t) for t in by_done), max))
    bad = []
    for tab in tabs:
        admitted = _admitted_at(tab)
        if admitted == math.inf:
            continue
        k = bisect.bisect_left(done_at, float(tab["join_sent"]))
        if k and worst_before[k - 1] > admitted:
            bad.append(tab)
    return bad


def _order_violations(ordered: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Tabs admitted in an earlier batch than some tab ahead of them in this order."""
    bad, worst = [], -math.inf
    for tab in ordered:
        admitted = _admitted_at(tab)
        if admitted < worst:
            bad.append(tab)
        worst = max(worst, admitted)
    return bad


def _examples(tabs: Sequence[Mapping[str, Any]]) -> str:
    if not tabs:
        return ""
    quoted = [
        f"(joined {t.get('join_done')}, draw {str(t.get('draw'))[:8]}, "
        f"admitted {t.get('admitted_expiry')})"
        for t in tabs[:EXAMPLES]
    ]
    return "; e.g. " + ", ".join(quoted)


def check_fairness(
    product: str, mode: str, tabs: Sequence[Mapping[str, Any]], info: Mapping[str, Any] | None
) -> list[Check]:
    polling = _polling(tabs)
    admitted = sum(1 for t in polling if t.get("admitted_expiry") is not None)
    if not polling:
        return [Check(f"fairness [{product}]", False, "no visitor records to judge it by")]
    if mode == "fifo":
        bad = fifo_violations(polling)
        return [
            Check(
                f"FIFO fairness [{product}]",
                not bad,
                f"{admitted} of {len(polling)} polling tabs admitted; {len(bad)} admitted "
                f"after someone who joined later{_examples(bad)}",
            )
        ]
    early = [t for t in polling if t.get("join_state") == "not_started"]
    late = [t for t in polling if t.get("join_state") != "not_started"]
    drawn = sorted((t for t in early if t.get("draw")), key=lambda t: str(t["draw"]))
    out_of_draw = _order_violations(drawn)
    early_worst = max((_admitted_at(t) for t in early), default=-math.inf)
    jumped = [t for t in late if _admitted_at(t) < early_worst]
    checks = [
        Check(
            f"shuffle fairness [{product}]",
            not out_of_draw and not jumped,
            f"{len(early)} early tabs ({len(drawn)} saw their draw), {len(late)} later; "
            f"{len(out_of_draw)} admitted out of draw order, {len(jumped)} later joiners "
            f"ahead of an early one{_examples(out_of_draw + jumped)}",
        ),
        Check(
            f"later joiners in FIFO order [{product}]",
            not (bad := fifo_violations(late)),
            f"{len(bad)} of {len(late)} admitted after someone who joined later{_examples(bad)}",
        ),
    ]
    seed = (info or {}).get("shuffle_seed")
    if drawn and seed:
        promised = (info or {}).get("shuffle_commitment")
        kept = commitment(str(seed)) == promised
        with_id = [t for t in drawn if t.get("visitor_id")]
        wrong = [t for t in with_id if draw(str(seed), str(t["visitor_id"])) != t["draw"]]
        checks.append(
            Check(
                f"draw verifiable [{product}]",
                kept and not wrong,
                f"SHA-256(seed) {'matches' if kept else 'differs from'} the commitment; "
                f"{len(wrong)} of {len(with_id)} draws differ from "
                f"HMAC(seed, visitor)",
            )
        )
    return checks


def check_places(product: str, tabs: Sequence[Mapping[str, Any]]) -> list[Check]:
    steady = [t for t in tabs if t.get("behaviour") != "abandon"]
    lost = sum(_n(t.get("lost")) for t in steady)
    starved = sum(_n(t.get("lost")) for t in steady if float(t.get("late_s") or 0.0) > LAG_LIMIT_S)
    # Polling as told (never later than a third of abandon_s) picks an admission up well
    # within pickup_s: one that expired anyway was a turn lost, to a server too slow to answer.
    expired = sum(1 for t in steady if t.get("outcome") == "expired")
    reloads = sum(_n(t.get("refreshes")) for t in tabs)
    new_place = sum(_n(t.get("refresh_new_place")) for t in tabs)
    moved_back = sum(_n(t.get("refresh_moved_back")) for t in tabs)
    return [
        Check(
            f"zero lost places [{product}]",
            lost == 0 and expired == 0,
            f"{lost} place_lost/ticket refusals and {expired} admissions expired before "
            f"pickup, among {len(steady)} tabs that kept polling"
            + (f" ({starved} of the losses on tabs the generator woke late)" if starved else ""),
        ),
        Check(
            f"reloads keep the place [{product}]",
            new_place == 0 and moved_back == 0,
            f"{reloads} reloads: {new_place} got a second place, {moved_back} moved back",
        ),
    ]


# A greenlet that wakes this late from its pause is a starved Locust worker: its visitors
# poll later than told, and what the storm then measures is the load generator.
LAG_LIMIT_S = 5.0


def check_generator(tabs: Sequence[Mapping[str, Any]]) -> Check:
    lags = sorted(float(t.get("late_s") or 0.0) for t in tabs)
    worst = lags[-1] if lags else 0.0
    p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))] if lags else 0.0
    late = sum(1 for x in lags if x > LAG_LIMIT_S)
    return Check(
        "load generator kept up",
        worst <= LAG_LIMIT_S,
        f"{late} of {len(lags)} tabs woke more than {LAG_LIMIT_S:.0f} s late from a pause "
        f"(p99 {p99:.1f} s, worst {worst:.1f} s); longest silence between two polls "
        f"{max((float(t.get('max_gap_s') or 0.0) for t in tabs), default=0.0):.1f} s",
    )


def check_sale(
    product: str,
    mode: str,
    stats: Mapping[str, Any],
    tabs: Sequence[Mapping[str, Any]],
    info: Mapping[str, Any] | None = None,
) -> list[Check]:
    """Every invariant of one sale; ``tabs`` are that sale's tab records."""
    return [
        *check_stock(product, stats, tabs),
        *check_fairness(product, mode, tabs, info),
        *check_places(product, tabs),
    ]


def check_finished(visitors: int, done: int) -> Check:
    """A storm cut short by its duration has visitors whose fate nobody recorded."""
    extra = f" (Locust ran {done - visitors} more than asked)" if done > visitors else ""
    return Check(
        "every visitor finished",
        done == visitors,
        f"{done} of {visitors} visitors reached a final state{extra}",
    )
