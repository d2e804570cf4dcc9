"""Every Kafka topic, header, shared Redis key and tunable constant of the platform.

The key names of one sale are built by :mod:`infra.sale.keys`; the names here are shared by
every process.
"""

from __future__ import annotations

import re

# `\Z`, not `$`: `$` also matches before a trailing newline, so "shoe-1\n" would pass `.match`.
PRODUCT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}\Z")

# --- Redis keys ---------------------------------------------------------------------------
SALES_KEY = "fs:sales"  # set of every product id that has a sale (the catalog's index)
# The platform's events (infra/events.py), one stream for every process and sale: one key, so
# it lives in one slot of a Redis Cluster like fs:sales, and one consumer group reads it.
EVENTS_STREAM_KEY = "fs:events"
EVENTS_GROUP = "webhooks"  # the consumer group of the order workers' webhook deliverers
EVENTS_MAXLEN = 10_000  # trimmed approximately (MAXLEN ~): a few days of a busy platform
# Markers that make an event once-only across replicas (SET NX / SET GET): per sale under its
# hash tag ("fs:{p}:event:<kind>"), or global for what is not per sale ("fs:event:<kind>").
EVENT_MARKER_PREFIX = "fs:event:"

# --- Queue modes (API.md); sale states are computed in lib.lua --------------------------------
QUEUE_MODE_FIFO = "fifo"
QUEUE_MODE_SHUFFLE = "shuffle_prequeue"
QUEUE_MODES = (QUEUE_MODE_FIFO, QUEUE_MODE_SHUFFLE)
# API.md's sale states (the scheduler's flashsale_scheduler_sale_state{state} series).
SALE_STATES = ("scheduled", "prequeue", "open", "sold_out", "closed", "paused")

# --- Token kinds: one itsdangerous salt each, so one kind never verifies as another ----------
TICKET_SALT = "flashsale.queue-ticket.v1"
ACCESS_SALT = "flashsale.access-token.v1"

# --- Polling and timing -----------------------------------------------------------------------
POLL_MIN_MS = 1_000
POLL_MAX_MS = 50_000  # below the default pickup_s (60): a poll never sleeps through a turn
# Ask again after three quarters of the expected wait: about 9 polls for a 5-minute wait, and
# the last ones a second apart, so the turn is noticed within a second or so (bench/README.md).
POLL_WAIT_SHARE = 0.75
# Every waiting (and paused) poll is scaled by U(1 - POLL_JITTER, 1): with no randomness a
# visitor far from the front asks exactly once per cap, so the start's herd came back whole
# every cap (docs/SCALING.md, "The herd at the start"). Only ever shorter, so a poll still never
# sleeps through a turn and still asks at least three times per abandon window.
POLL_JITTER = 0.2
# The pre-queue comes back at the start spread over U(0, S): S is the line over
# HERD_POLLS_PER_S, so one sale's herd asks at most ~2,000 times a second (a fifth of one queue
# server process, ~10,000 status/s on a core), and a small pre-queue still hears its turn within
# a second or two (the bench's storms: "your turn" p95 <= 3 s). S is at least POLL_MIN_MS, at
# most HERD_SPREAD_MAX_MS (a 50,000-visitor pre-queue gets 25 s), and at most half of pickup_s,
# so the first admitted hear of it well within their pickup window.
HERD_POLLS_PER_S = 2_000
HERD_SPREAD_MAX_MS = 30_000
RATE_WINDOW_MS = 30_000  # admission rate is measured over this window
SWEEP_LIMIT = 1_000  # abandoned places dropped per tick, so a tick stays O(1)
DRAW_CHUNK = 5_000  # early visitors read and re-scored per round trip during the draw
TICK_CLAIM_TTL_MS = 600_000
OPEN_LOCK_TTL_MS = 60_000
SALE_SYNC_INTERVAL_S = 1.0
JOIN_BURST_FACTOR = 5
VISITOR_BURST_FACTOR = 2

# --- HTTP ------------------------------------------------------------------------------------
MAX_BODY_BYTES = 16 * 1024
TICKET_COOKIE_PREFIX = "fs_ticket_"
ACCESS_COOKIE = "fs_access"
HEADER_VISITOR_ID = "x-visitor-id"
HEADER_PRODUCT_ID = "x-product-id"
HEADER_TOKEN_ID = "x-token-id"
HEADER_REQUEST_ID = "x-request-id"
HEADER_FORWARDED_PROTO = "x-forwarded-proto"  # believed from a trusted proxy only (cookies)
HEADER_GATE_SECRET = "x-flashsale-gate"
GATE_STRIPPED_HEADERS = (HEADER_VISITOR_ID, HEADER_PRODUCT_ID, HEADER_TOKEN_ID, HEADER_GATE_SECRET)
HEADER_RATELIMIT_LIMIT = "x-ratelimit-limit"
HEADER_RATELIMIT_REMAINING = "x-ratelimit-remaining"
REQUEST_ID_MAX_CHARS = 128  # a client's X-Request-Id longer than this is replaced
# W3C Trace Context: where a request's trace comes from, on HTTP and in Kafka message headers.
HEADER_TRACEPARENT = "traceparent"
HEADER_TRACESTATE = "tracestate"
TRACESTATE_MAX_CHARS = 512  # what W3C asks every vendor to pass on; a longer one is dropped

# --- Gate -> shop -------------------------------------------------------------------------------
UPSTREAM_CONNECT_TIMEOUT_S = 2.0
UPSTREAM_READ_TIMEOUT_S = 10.0  # also write and pool: the whole exchange is small JSON
UPSTREAM_HEALTH_TIMEOUT_S = 2.0
UPSTREAM_RETRY_AFTER_S = 2  # Retry-After when one call failed but the breaker is still closed
BREAKER_FAILURES = 5  # consecutive upstream failures that open the circuit breaker
BREAKER_COOLDOWN_S = 5.0  # how long an open breaker answers by itself before one probe

# --- Kafka topics ------------------------------------------------------------------------------
TOPIC_ORDER_PLACED = "order.placed"
TOPIC_ORDER_PAID = "order.paid"
TOPIC_ORDER_CANCELLED = "order.cancelled"
TOPIC_ORDER_DLQ = "order.placed.dlq"

# --- Events and webhooks (infra/events.py, shop/webhooks.py, shop/deliverer.py) -------------
EVENT_EMIT_TIMEOUT_S = 0.5  # an emit that takes longer is dropped (logged): never a sale's wait
EVENT_CIRCUIT_QUIET_S = 60  # one "circuit opened" per this long, whichever gate opened first
EVENT_RECONCILE_QUIET_S = 60  # the same re-published orders seen by two reconcilers: one event
WEBHOOKS_MAX = 100  # subscriptions in all
WEBHOOK_URL_MAX_CHARS = 2_048
WEBHOOK_TIMEOUT_S = 5.0  # one delivery attempt, connect to last byte
WEBHOOK_CONCURRENCY = 32  # attempts in flight, all receivers together
WEBHOOK_PER_RECEIVER = 4  # attempts in flight to one webhook: a slow one fills only its own
WEBHOOK_MAX_ATTEMPTS = 10  # then the delivery is given up (every attempt stays listed)
WEBHOOK_BACKOFF_BASE_S = 5.0  # the wait after attempt n fails: base * 2^(n-1), capped
WEBHOOK_BACKOFF_CAP_S = 1_800.0
WEBHOOK_ATTEMPTS_LISTED = 200  # GET /admin/webhooks/{id}/deliveries, newest first
WEBHOOK_SIGNATURE_HEADER = "X-Flashsale-Signature"
WEBHOOK_TIMESTAMP_HEADER = "X-Flashsale-Timestamp"
WEBHOOK_EVENT_HEADER = "X-Flashsale-Event"
WEBHOOK_EVENT_ID_HEADER = "X-Flashsale-Event-Id"
WEBHOOK_ATTEMPT_HEADER = "X-Flashsale-Attempt"

# --- Dev defaults: refused outside dev mode ---------------------------------------------------
DEV_SECRET_KEY = "dev-secret-key-do-not-use-in-production"
DEV_ADMIN_KEY = "dev-admin-key"
DEV_VIEWER_KEY = "dev-viewer-key"

# --- Settings -------------------------------------------------------------------------------
MIN_SECRET_CHARS = 16  # secret keys, the admin and the viewer key, outside dev mode
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")  # FLASHSALE_LOG_LEVEL's choices
EXIT_CONFIG = 2  # the exit code of a process that refused its settings (one line on stderr)

# --- HTTP server (infra.web.serve): what uvicorn itself does not bound ---------------------------
MAX_HEADER_BYTES = 8 * 1024  # names and values of a request's headers, together
MAX_TARGET_BYTES = 8 * 1024  # a request's path and query
# From a request's first byte to its last (head and body): a client that trickles a request in
# (slowloris) is cut off then. Generous for a phone on a bad link sending 16 KiB at most.
REQUEST_READ_TIMEOUT_S = 10.0
REQUEST_READ_SWEEPS = 4  # checks per deadline: a slow request is cut within 1.25 deadlines
REFUSED_LINGER_S = 2.0  # after a refusal, how long a client still sending is read and dropped
MAX_HEADER_COUNT = 100  # header lines of one request (a browser sends about 20)
