"""Validation of a sale's config (POST/PATCH /admin/products) into the sale hash's fields."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from infra.constants import PRODUCT_ID_RE, QUEUE_MODE_SHUFFLE, QUEUE_MODES
from infra.sale import shuffle
from infra.sale.views import iso_utc
from infra.web.errors import InvalidRequest

CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
MAX_NAME_CHARS = 200
DAY_S = 86_400
# The instants iso_utc can render: 1970-01-01 to 9999-12-31 UTC. Outside them a sale would be
# stored and then every view of it would fail.
MAX_TIME_MS = 253_402_300_799_999

# API.md's defaults for the optional fields.
DEFAULTS: dict[str, Any] = {
    "sale_end": None,
    "prequeue_s": 900,
    "queue_mode": QUEUE_MODE_SHUFFLE,
    "batch_size": 100,
    "interval_s": 1.0,
    "max_active": 0,
    "token_ttl_s": 600,
    "per_user_limit": 1,
    "hold_s": 600,
    "abandon_s": 300,
    "pickup_s": 60,
    "overbook": 1.5,
}
REQUIRED = ("id", "name", "price", "currency", "stock", "sale_start")


def _int(lo: int, hi: int) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        if type(value) is not int or not lo <= value <= hi:
            raise InvalidRequest(f"{name} must be an integer from {lo} to {hi}")
        return value

    return check


def _number(lo: float, hi: float) -> Callable[[str, Any], float]:
    def check(name: str, value: Any) -> float:
        if type(value) not in (int, float) or not math.isfinite(value) or not lo <= value <= hi:
            raise InvalidRequest(f"{name} must be a number from {lo} to {hi}")
        return float(value)

    return check


def _time(name: str, value: Any) -> int:
    """An ISO 8601 instant as unix ms; a time without a zone is taken as UTC."""
    if not isinstance(value, str) or len(value) > 40:
        raise InvalidRequest(f"{name} must be an ISO 8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{name} must be an ISO 8601 date-time string") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    ms = int(parsed.timestamp() * 1000)
    if not 0 <= ms <= MAX_TIME_MS:
        raise InvalidRequest(f"{name} must be between 1970 and 9999 (UTC)")
    return ms


def _optional_time(name: str, value: Any) -> int:
    return 0 if value is None else _time(name, value)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_CHARS:
        raise InvalidRequest(f"{name} must be a string of 1 to {MAX_NAME_CHARS} characters")
    if not value.isprintable():
        raise InvalidRequest(f"{name} must not contain control characters")
    return value


def _pattern(regex: re.Pattern[str], what: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        # fullmatch: a pattern's `$` also matches before a trailing newline ("ab\n").
        if not isinstance(value, str) or not regex.fullmatch(value):
            raise InvalidRequest(f"{name} must be {what}")
        return value

    return check


def _mode(name: str, value: Any) -> str:
    if value not in QUEUE_MODES:
        raise InvalidRequest(f"{name} must be one of {', '.join(QUEUE_MODES)}")
    return value


# API field -> (sale hash field, validator, scale into the stored unit)
FIELDS: dict[str, tuple[str, Callable[[str, Any], Any], int]] = {
    "id": ("", _pattern(PRODUCT_ID_RE, "lowercase letters, digits and dashes, at most 64"), 1),
    "name": ("name", _text, 1),
    "price": ("price", _int(0, 10**12), 1),
    "currency": ("currency", _pattern(CURRENCY_RE, "a three-letter ISO 4217 code"), 1),
    "stock": ("stock_total", _int(0, 10**9), 1),
    "sale_start": ("start_ms", _time, 1),
    "sale_end": ("end_ms", _optional_time, 1),
    "prequeue_s": ("prequeue_ms", _number(0, 7 * DAY_S), 1000),
    "queue_mode": ("mode", _mode, 1),
    "batch_size": ("batch_size", _int(1, 100_000), 1),
    "interval_s": ("interval_ms", _number(0.05, 3600), 1000),
    "max_active": ("max_active", _int(0, 10**9), 1),
    "token_ttl_s": ("token_ttl_ms", _int(10, DAY_S), 1000),
    "per_user_limit": ("per_user_limit", _int(1, 1000), 1),
    "hold_s": ("hold_s", _int(10, DAY_S), 1),
    "abandon_s": ("abandon_ms", _int(10, DAY_S), 1000),
    "pickup_s": ("pickup_ms", _int(5, DAY_S), 1000),
    "overbook": ("overbook", _number(1.0, 10.0), 1),
}
# The stored field back to its API name and scale, for the admin's view of a sale.
STORED = {stored: (api, scale) for api, (stored, _, scale) in FIELDS.items() if stored}


def _to_stored(body: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for api_name, value in body.items():
        if api_name == "id":
            continue
        stored, check, scale = FIELDS[api_name]
        checked = check(api_name, value)
        out[stored] = str(round(checked * scale) if scale != 1 else checked)
    return out


def _check_known(body: dict[str, Any]) -> None:
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}")


def _check_window(fields: dict[str, str]) -> None:
    end = int(fields.get("end_ms", "0"))
    if end and end <= int(fields["start_ms"]):
        raise InvalidRequest("sale_end must be after sale_start")


def new_sale(body: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """(product id, sale hash fields) for POST /admin/products."""
    _check_known(body)
    missing = [name for name in REQUIRED if name not in body]
    if missing:
        raise InvalidRequest(f"missing field(s): {', '.join(missing)}")
    product_id = FIELDS["id"][1]("id", body["id"])
    fields = _to_stored({**DEFAULTS, **body})
    _check_window(fields)
    seed = shuffle.new_seed()
    fields.update(
        seed=seed,
        commitment=shuffle.commitment(seed),
        opened="0",
        paused="0",
        cancelled="0",
        issued="0",
        rate="0",
    )
    return product_id, fields


def changed_sale(body: dict[str, Any], current: dict[str, str]) -> dict[str, str]:
    """The sale hash fields a PATCH changes, checked against the stored config."""
    _check_known(body)
    if "id" in body:
        raise InvalidRequest("id cannot be changed")
    if not body:
        raise InvalidRequest("nothing to change")
    changes = _to_stored(body)
    _check_window({**current, **changes})
    return changes


def config_view(stored: dict[str, str]) -> dict[str, Any]:
    """The admin's view of a sale's settings, in API units."""
    view: dict[str, Any] = {}
    for field, (api, scale) in STORED.items():
        if field not in stored or api in ("name", "price", "currency", "stock", "sale_start"):
            continue
        raw = stored[field]
        if field == "end_ms":
            view[api] = iso_utc(int(raw)) if int(raw) else None
        elif field == "mode":
            view[api] = raw
        elif api in ("interval_s", "prequeue_s", "overbook"):
            view[api] = float(raw) / scale
        else:
            view[api] = int(float(raw)) // scale
    return view
