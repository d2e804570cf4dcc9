"""The scheduler's OpenAPI document, as data: its port answers only health and metrics."""

from __future__ import annotations

from infra.web.openapi import document, health_path, metrics_path

SCHEDULER_API = document(
    "flashsale scheduler (health and metrics)",
    "The scheduler opens sales, admits batches and mints access tokens; it has no public API. "
    'Every error is `{"error": code, "detail": sentence}`.',
    {
        "/healthz": health_path("200 once Valkey answers and the jobs run."),
        "/metrics": metrics_path(),
    },
    tags=[{"name": "operations", "description": "Health, metrics, this document."}],
)
