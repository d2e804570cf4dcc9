"""Issue 7's Targets table: every figure `flashsale bench` measures, and what it must reach."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    key: str  # the key in `--out`'s JSON
    label: str
    op: str  # ">=" or "<="
    goal: float
    unit: str = "×"

    def passes(self, value: float | None) -> bool | None:
        if value is None or math.isnan(value):
            return None
        return value >= self.goal if self.op == ">=" else value <= self.goal

    def goal_text(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {self.goal:g}{'' if self.unit == '×' else ' '}"


TARGETS: tuple[Target, ...] = (
    Target("join_vs_hello", "join req/s ÷ bare Starlette hello req/s", ">=", 0.5),
    Target("status_vs_hello", "status req/s ÷ bare hello req/s", ">=", 0.6),
    Target("gate_vs_direct", "gate GET /products/{id} ÷ direct shop GET", ">=", 0.6),
    Target("status_p99_1m_vs_1k", "status p99, big line ÷ 1,000 waiting", "<=", 1.3),
    Target("redis_bytes_per_visitor", "Valkey bytes per waiting visitor", "<=", 150, "B"),
    Target("redis_calls_per_join", "Redis calls per join", "<=", 1, "calls"),
    Target("redis_calls_per_status", "Redis calls per status", "<=", 1, "calls"),
    Target("redis_calls_per_admitted", "Redis calls per admitted visitor", "<=", 2, "calls"),
    Target("polls_per_admitted", "status polls per admitted visitor", "<=", 10, "polls"),
    Target("notice_latency_p95_s", "p95 'your turn' notice latency", "<=", 3, "s"),
    Target("sellout_vs_ideal", "time to sell out ÷ stock/admission rate", "<=", 1.1),
    Target("drain_vs_intake", "order worker drain ÷ order intake", ">=", 5),
)

KEYS: tuple[str, ...] = tuple(t.key for t in TARGETS)
