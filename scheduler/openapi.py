"""The scheduler's OpenAPI document, as data: its port answers only health and metrics."""

from __future__ import annotations

from infra.web.openapi import document, metrics_path, ok, operation, unavailable

SCHEDULER_API = document(
    "flashsale scheduler (health and metrics)",
    "The scheduler opens sales, admits batches and mints access tokens; it has no public API. "
    'Every error is `{"error": code, "detail": sentence}`.',
    {
        "/healthz": {
            "get": operation(
                "getHealth",
                "200 once Valkey answers and the jobs run.",
                {
                    "200": ok(
                        "Healthy.",
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"const": "ok"}},
                            "additionalProperties": False,
                        },
                    ),
                    "503": unavailable(retry_after=False),
                },
                tags=["operations"],
            )
        },
        "/metrics": metrics_path(),
    },
    tags=[{"name": "operations", "description": "Health, metrics, this document."}],
)
