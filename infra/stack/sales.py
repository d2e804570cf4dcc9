"""`flashsale sale create|list|show|pause|resume|stats|watch`: the shop's admin API from a
terminal, with rich tables.

It talks to the shop over HTTP only (never by importing shop code), with the admin key from
``--admin-key`` or ``FLASHSALE_ADMIN_KEY`` and the shop from ``--shop-url`` or
``FLASHSALE_SHOP_URL``. Exit codes: 0 done, 1 the shop said no or could not be reached (one
line, with the API's ``detail``), 2 a bad setting or flag (one line, before any request).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from infra.constants import DEV_ADMIN_KEY

DEFAULT_SHOP_URL = "http://127.0.0.1:8002"
MIN_ADMIN_KEY_CHARS = 16  # the platform's own rule (infra/settings.py)
REQUEST_TIMEOUT_S = 10.0
# Currencies whose minor unit is the unit itself (ISO 4217 exponent 0): 12900 KRW is ₩12,900.
ZERO_DECIMAL = frozenset({"KRW", "JPY", "VND", "CLP", "ISK", "HUF", "TWD", "UGX", "XAF", "XOF"})

# Optional fields of POST /admin/products: (flag dest, type, help). Sent only when given, so
# the shop's own defaults (API.md) apply otherwise.
OPTIONAL_FIELDS: tuple[tuple[str, type, str], ...] = (
    ("prequeue_s", float, "seconds before the start that the pre-queue opens (900)"),
    ("batch_size", int, "visitors admitted per tick (100)"),
    ("interval_s", float, "seconds between ticks (1.0)"),
    ("max_active", int, "cap on unexpired access tokens, 0 = none (0)"),
    ("token_ttl_s", int, "access token lifetime (600)"),
    ("per_user_limit", int, "units one visitor may buy (1)"),
    ("hold_s", int, "seconds an unpaid order holds its stock (600)"),
    ("abandon_s", int, "a visitor silent this long loses the place (300)"),
    ("pickup_s", int, "an admission not picked up this long returns its slot (60)"),
    ("overbook", float, "admitted tokens per unit of stock left (1.5)"),
)

EXAMPLES = {
    "sale": """examples:
  flashsale sale list --dev                 # against `flashsale up --dev` (or --demo)
  export FLASHSALE_SHOP_URL=http://shop.internal:8002 FLASHSALE_ADMIN_KEY=...
  flashsale sale create air-max-1 --name "Air Max 1" --price 12900 --stock 2000 --start "in 10m"
  flashsale sale list
  flashsale sale watch air-max-1""",
    "create": """examples:
  flashsale sale create air-max-1 --name "Air Max 1" --price 12900 --currency EUR \\
      --stock 2000 --start "in 10m" --queue-mode fifo --batch-size 50
  flashsale sale create drop-7 --start 2026-12-01T09:00:00Z     # ISO 8601 (no zone: local)
  flashsale sale create --json sale.json                          # the API's body, from a file
  echo '{"id": "x-1", "stock": 5}' | flashsale sale create --json - --price 900""",
    "list": """example:
  flashsale sale list --shop-url http://shop.internal:8002""",
    "show": """example:
  flashsale sale show air-max-1""",
    "pause": """example:
  flashsale sale pause air-max-1     # the line keeps its places; nobody more is admitted""",
    "resume": """example:
  flashsale sale resume air-max-1""",
    "stats": """example:
  flashsale sale stats air-max-1""",
    "watch": """examples:
  flashsale sale watch air-max-1             # every second until Ctrl-C
  flashsale sale watch --interval 5          # every sale, every 5 s
  flashsale sale watch air-max-1 --count 3   # three refreshes, then exit""",
}


class UsageError(Exception):
    """A bad setting or flag: one line, exit code 2, before any request."""


class ApiError(Exception):
    """The shop said no, or could not be reached: one line, exit code 1."""


@dataclass(frozen=True)
class Target:
    shop_url: str
    admin_key: str = field(repr=False)  # never printed nor logged, not even in a traceback


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def add_parser(commands: Any) -> None:
    """Add `sale` and its subcommands to the `flashsale` parser's subcommands."""
    sale = commands.add_parser(
        "sale",
        help="create, list, pause, resume and watch sales (the admin API)",
        description="Call the shop's admin API from a terminal. Exit codes: 0 done, 1 the "
        "shop said no or could not be reached, 2 a bad setting.",
        epilog=EXAMPLES["sale"],
        formatter_class=_formatter,
    )
    verbs = sale.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = verbs.add_parser(
            name, help=help_text, description=help_text, epilog=EXAMPLES[name],
            formatter_class=_formatter,
        )  # fmt: skip
        parser.add_argument(
            "--shop-url", help=f"the shop (env FLASHSALE_SHOP_URL; {DEFAULT_SHOP_URL})"
        )
        parser.add_argument("--admin-key", help="admin bearer key (env FLASHSALE_ADMIN_KEY)")
        parser.add_argument(
            "--dev", action="store_true", help="without a key, use the built-in dev key"
        )
        return parser

    create = verb("create", "create a sale (POST /admin/products)")
    create.add_argument("id", nargs="?", help="product id: a-z, 0-9 and -, up to 64")
    create.add_argument("--json", metavar="BODY", help="the request body: JSON, a file or -")
    create.add_argument("--name", help="display name (default: from the id)")
    create.add_argument("--price", type=int, help="price in minor units: 12900 = 129.00 EUR")
    create.add_argument("--currency", help="ISO 4217 code (EUR)")
    create.add_argument("--stock", type=int, help="units for sale (100)")
    create.add_argument("--start", help='"now", "in 2m", "in 1h30m" or ISO 8601 (in 2m)')
    create.add_argument("--end", help="when the sale closes: same forms as --start")
    create.add_argument("--queue-mode", choices=("shuffle_prequeue", "fifo"))
    for dest, kind, help_text in OPTIONAL_FIELDS:
        create.add_argument(f"--{dest.replace('_', '-')}", type=kind, help=help_text)
    verb("list", "every sale: state, start, stock, price (GET /admin/products)")
    for name, help_text in (
        ("show", "one sale's settings and figures (GET /admin/products/{id})"),
        ("pause", "stop admitting; the line keeps its places"),
        ("resume", "admit again"),
        ("stats", "waiting, admitted, stock, orders (GET /admin/sales/{id}/stats)"),
    ):
        verb(name, help_text).add_argument("id", help="product id")
    watch = verb("watch", "the figures of sales, refreshed live")
    watch.add_argument("ids", nargs="*", metavar="id", help="product ids (default: every sale)")
    watch.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    watch.add_argument("--count", type=int, default=0, help="stop after N refreshes (0: never)")


# --- settings --------------------------------------------------------------------------------


def target_from(args: argparse.Namespace, env: Mapping[str, str]) -> Target:
    """The shop and key from flags, then env; raises UsageError for what cannot work."""
    url = (args.shop_url or env.get("FLASHSALE_SHOP_URL") or DEFAULT_SHOP_URL).rstrip("/")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UsageError(f"--shop-url {url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(f"--shop-url {url!r} is not an http(s) URL like {DEFAULT_SHOP_URL}")
    dev = args.dev or env.get("FLASHSALE_DEV", "").strip().lower() in ("1", "true", "yes", "on")
    key = args.admin_key or env.get("FLASHSALE_ADMIN_KEY") or ""
    if not key:
        if not dev:
            raise UsageError(
                "no admin key: set FLASHSALE_ADMIN_KEY or --admin-key "
                "(or --dev to use the built-in key of `flashsale up --dev`)"
            )
        key = DEV_ADMIN_KEY
    elif not dev and len(key) < MIN_ADMIN_KEY_CHARS:
        raise UsageError(
            f"the admin key is shorter than {MIN_ADMIN_KEY_CHARS} characters, so no shop "
            "outside dev mode accepts it; check FLASHSALE_ADMIN_KEY or --admin-key"
        )
    return Target(url, key)


_RELATIVE = re.compile(r"^(?:in\s+|\+)?((?:\d+(?:\.\d+)?\s*[smhd]\s*)+)$", re.IGNORECASE)
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """'now', 'in 2m', '+90s', 'in 1h30m', or ISO 8601 (without a zone: this machine's local
    time, as a person typing it means); returns an aware UTC datetime."""
    now = now if now is not None else datetime.now(UTC)
    value = text.strip()
    if value.lower() == "now":
        return now
    if match := _RELATIVE.match(value):
        seconds = sum(float(n) * _UNIT_S[u.lower()] for n, u in _PART.findall(match.group(1)))
        return now + timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"{text!r} is not a time: use 'now', 'in 2m', 'in 1h30m' or ISO 8601 "
            "like 2026-12-01T09:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # naive: local time
    return moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _read_json(source: str) -> dict[str, Any]:
    if source == "-":
        raw = sys.stdin.read()
    elif source.lstrip().startswith("{"):
        raw = source
    else:
        try:
            raw = Path(source).read_text()
        except OSError as exc:
            raise UsageError(f"--json {source}: {exc.strerror}") from None
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"--json is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError("--json must be a JSON object, the body of POST /admin/products")
    return body


def create_body(args: argparse.Namespace, now: datetime | None = None) -> dict[str, Any]:
    """The body of POST /admin/products: --json first, flags over it, defaults under both."""
    body = _read_json(args.json) if args.json else {}
    if args.id:
        body["id"] = args.id
    if not body.get("id"):
        raise UsageError("a sale needs an id: `flashsale sale create ID` (or in --json)")
    given: dict[str, Any] = {
        "name": args.name,
        "price": args.price,
        "currency": args.currency,
        "stock": args.stock,
        "queue_mode": args.queue_mode,
        **{dest: getattr(args, dest) for dest, _, _ in OPTIONAL_FIELDS},
    }
    if args.start is not None:
        given["sale_start"] = _iso(parse_when(args.start, now))
    if args.end is not None:
        given["sale_end"] = _iso(parse_when(args.end, now))
    body.update({k: v for k, v in given.items() if v is not None})
    # Enough to try a sale at once; the shop checks every value.
    body.setdefault("name", str(body["id"]).replace("-", " ").title())
    body.setdefault("price", 10_000)
    body.setdefault("currency", "EUR")
    body.setdefault("stock", 100)
    body.setdefault("sale_start", _iso(parse_when("in 2m", now)))
    return body


# --- the admin API ---------------------------------------------------------------------------


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AdminClient:
    """The admin API over HTTP; every failure becomes one ApiError line."""

    def __init__(self, target: Target) -> None:
        self.url = target.shop_url
        self._client = httpx.Client(
            base_url=target.shop_url,
            headers={"Authorization": f"Bearer {target.admin_key}"},
            timeout=REQUEST_TIMEOUT_S,
            # A proxy from the environment must not sit between us and a shop on loopback.
            trust_env=not _loopback(httpx.URL(target.shop_url).host),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.ConnectError:
            raise ApiError(f"cannot reach the shop at {self.url} (is it running?)") from None
        except httpx.TimeoutException:
            raise ApiError(
                f"the shop at {self.url} did not answer within {REQUEST_TIMEOUT_S:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the shop at {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise ApiError(_error_line(method, path, response))
        try:
            return response.json()
        except ValueError:
            raise ApiError(f"{method} {path}: the shop answered something else than JSON") from None

    def stats(self, product_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/admin/sales/{product_id}/stats"))

    def products(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/admin/products"))


def _error_line(method: str, path: str, response: httpx.Response) -> str:
    code, detail = "", ""
    with contextlib.suppress(ValueError, AttributeError):
        body = response.json()
        code, detail = str(body.get("error", "")), str(body.get("detail", ""))
    if not detail:
        detail = response.text[:200] or response.reason_phrase
    if response.status_code == 404 and not code:
        # No JSON error from our API: this shop predates the route (or it is no shop at all).
        detail = f"{method} {path} is not served here ({detail})"
    one_line = " ".join(detail.split())
    return (
        f"{response.status_code} {code}: {one_line}"
        if code
        else f"{response.status_code}: {one_line}"
    )


# --- rendering -------------------------------------------------------------------------------


def money(minor: Any, currency: Any) -> str:
    if not isinstance(minor, int):
        return "–"
    if currency in ZERO_DECIMAL:
        return f"{minor:,} {currency}"
    return f"{minor / 100:,.2f} {currency}"


def _when(iso: Any) -> str:
    if not isinstance(iso, str):
        return "–"
    with contextlib.suppress(ValueError):
        moment = datetime.fromisoformat(iso)
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return iso


STATE_STYLE = {
    "open": "bold green",
    "prequeue": "cyan",
    "scheduled": "dim",
    "paused": "bold yellow",
    "sold_out": "magenta",
    "closed": "dim",
}


def state_text(state: Any) -> str:
    style = STATE_STYLE.get(str(state), "")
    return f"[{style}]{state}[/]" if style else str(state)


def products_table(products: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="sales", title_justify="left", header_style="bold")
    for column, justify in (
        ("id", "left"),
        ("name", "left"),
        ("state", "left"),
        ("starts", "left"),
        ("stock left", "right"),
        ("price", "right"),
        ("mode", "left"),
        ("batch / interval", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for p in products:
        table.add_row(
            str(p.get("id")),
            str(p.get("name", "")),
            state_text(p.get("state")),
            _when(p.get("sale_start")),
            f"{p.get('stock_left', '–')} / {p.get('stock_total', '–')}",
            money(p.get("price"), p.get("currency")),
            str(p.get("queue_mode", "–")),
            f"{p.get('batch_size', '–')} / {p.get('interval_s', '–')} s",
        )
    if not products:
        table.caption = "no sales yet: `flashsale sale create ID`"
    return table


def product_table(product: Mapping[str, Any]) -> Table:
    table = Table(title=f"sale {product.get('id')}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in product.items():
        if key == "state":
            shown = state_text(value)
        elif key == "price":
            shown = f"{value} ({money(value, product.get('currency'))})"
        else:
            shown = "–" if value is None else str(value)
        table.add_row(key, shown)
    return table


def stats_table(figures: Mapping[str, Mapping[str, Any]], title: str = "figures") -> Table:
    """One row per sale: the live figures of GET /admin/sales/{id}/stats."""
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("sale")
    for column in ("waiting", "admitted", "active", "admit/s", "stock left"):
        table.add_column(column, justify="right")
    for column in ("pending", "placed", "paid", "cancelled"):
        table.add_column(column, justify="right", style="cyan")
    for product_id, s in figures.items():
        orders = s.get("orders") or {}
        table.add_row(
            product_id,
            f"{s.get('waiting', '–'):,}",
            f"{s.get('admitted', '–'):,}",
            f"{s.get('active', '–'):,}",
            f"{s.get('admit_rate_per_s', 0):.1f}",
            f"{s.get('stock_left', '–'):,} / {s.get('stock_total', '–'):,}",
            *(f"{orders.get(k, 0):,}" for k in ("pending", "placed", "paid", "cancelled")),
        )
    return table


def stats_line(product_id: str, s: Mapping[str, Any]) -> str:
    """The same figures as one plain line: what `watch` prints when stdout is not a terminal."""
    orders = s.get("orders") or {}
    return (
        f"{product_id}: waiting {s.get('waiting')} admitted {s.get('admitted')} "
        f"active {s.get('active')} stock_left {s.get('stock_left')}/{s.get('stock_total')} "
        + " ".join(f"{k} {orders.get(k, 0)}" for k in ("pending", "placed", "paid", "cancelled"))
    )


def make_console() -> Console:
    console = Console()
    # Piped into a file or a tool: wide enough that no table squeezes an id into "air-m…".
    return console if console.is_terminal else Console(width=160)


# --- the commands ----------------------------------------------------------------------------


def _create(api: AdminClient, args: argparse.Namespace, console: Console) -> None:
    product = api.call("POST", "/admin/products", args.body)
    console.print(product_table(product))
    console.print(f"created {product.get('id')}: {product.get('state')}")


def _list(api: AdminClient, args: argparse.Namespace, console: Console) -> None:
    console.print(products_table(api.products()))


def _show(api: AdminClient, args: argparse.Namespace, console: Console) -> None:
    product = api.call("GET", f"/admin/products/{args.id}")
    console.print(product_table(product))
    console.print(stats_table({args.id: api.stats(args.id)}))


def _pause_or_resume(api: AdminClient, args: argparse.Namespace, console: Console) -> None:
    info = api.call("POST", f"/admin/sales/{args.id}/{args.verb}")
    console.print(
        f"{args.id}: {state_text(info.get('state'))} "
        f"(waiting {info.get('waiting')}, admitted {info.get('admitted')})"
    )


def _stats(api: AdminClient, args: argparse.Namespace, console: Console) -> None:
    console.print(stats_table({args.id: api.stats(args.id)}))


def _watch(api: AdminClient, args: argparse.Namespace, console: Console) -> None:
    def sample() -> dict[str, dict[str, Any]]:
        ids = args.ids or [str(p["id"]) for p in api.products()]
        return {product_id: api.stats(product_id) for product_id in ids}

    def caption(n: int) -> str:
        stamp = datetime.now().astimezone().strftime("%H:%M:%S")
        return f"{stamp} · refresh {n} · every {args.interval:g} s · Ctrl-C to stop"

    refreshes = _refreshes(args.count, args.interval)
    if not console.is_terminal:
        # Logs and scripts: one plain line per sale and refresh, never a redrawn screen.
        for _ in refreshes:
            for product_id, s in sample().items():
                print(stats_line(product_id, s), flush=True)
        return
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        for n in refreshes:
            table = stats_table(sample(), title="sales, live")
            live.update(Group(table, f"[dim]{caption(n)}[/]"))


def _refreshes(count: int, interval_s: float) -> Iterator[int]:
    n = 0
    while count <= 0 or n < count:
        if n:
            time.sleep(interval_s)
        n += 1
        yield n


COMMANDS: dict[str, Callable[[AdminClient, argparse.Namespace, Console], None]] = {
    "create": _create,
    "list": _list,
    "show": _show,
    "pause": _pause_or_resume,
    "resume": _pause_or_resume,
    "stats": _stats,
    "watch": _watch,
}


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run one `flashsale sale` command; returns the exit code."""
    try:
        target = target_from(args, env)
        if args.verb == "watch" and (args.interval <= 0 or args.count < 0):
            raise UsageError("--interval must be > 0 and --count >= 0")
        if args.verb == "create":
            # Built once, before any request: a bad --start or --json is a bad setting.
            args.body = create_body(args)
    except UsageError as exc:
        print(f"flashsale: {exc}", file=sys.stderr, flush=True)
        return 2
    console = make_console()
    try:
        with AdminClient(target) as api:
            COMMANDS[args.verb](api, args, console)
    except UsageError as exc:
        print(f"flashsale: {exc}", file=sys.stderr, flush=True)
        return 2
    except ApiError as exc:
        print(f"flashsale: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130 if args.verb != "watch" else 0
    return 0
