"""The one settings object of every flashsale process.

Built once at the edge (``flashsale`` CLI or a package's ``__main__``) by
:meth:`Settings.from_env`, then passed down. Nothing else reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from redis.connection import parse_url as redis_parse_url

from infra.constants import (
    DEV_ADMIN_KEY,
    DEV_SECRET_KEY,
    DEV_VIEWER_KEY,
    LOG_LEVELS,
    MIN_SECRET_CHARS,
)
from infra.redis import REDIS_CLUSTER_SCHEME


class ConfigError(Exception):
    """Settings that the platform refuses to start with. The message is one line: which
    setting, what is wrong with it and what is expected (the edge prints it and exits 2)."""


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _bool(value: str) -> bool:
    word = value.strip().lower()
    if word not in _TRUE + _FALSE:
        raise ValueError(f"expected one of {', '.join(_TRUE + _FALSE)}")
    return word in _TRUE


def _int(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError("expected a whole number") from None


def _float(value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(number):  # "nan" and "inf" parse, and would pass every comparison
        raise ValueError("expected a finite number")
    return number


def _list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _path(value: str) -> Path:
    if "\0" in value:
        raise ValueError("a path cannot contain a NUL character")
    return Path(value)


# Settings field -> (environment variable, parser). The CLI's flags use the same names.
_ENV: dict[str, tuple[str, Callable[[str], object]]] = {
    "dev": ("FLASHSALE_DEV", _bool),
    "redis_url": ("FLASHSALE_REDIS_URL", str),
    "database_url": ("FLASHSALE_DATABASE_URL", str),
    "kafka_bootstrap": ("FLASHSALE_KAFKA_BOOTSTRAP", str),
    "admin_key": ("FLASHSALE_ADMIN_KEY", str),
    "viewer_key": ("FLASHSALE_VIEWER_KEY", str),
    "secret_keys": ("FLASHSALE_SECRET_KEYS", _list),
    "host": ("FLASHSALE_HOST", str),
    "gate_port": ("FLASHSALE_GATE_PORT", _int),
    "queue_port": ("FLASHSALE_QUEUE_PORT", _int),
    "shop_port": ("FLASHSALE_SHOP_PORT", _int),
    "scheduler_port": ("FLASHSALE_SCHEDULER_PORT", _int),
    "worker_port": ("FLASHSALE_WORKER_PORT", _int),
    "public_gate_url": ("FLASHSALE_PUBLIC_GATE_URL", str),
    "public_queue_url": ("FLASHSALE_PUBLIC_QUEUE_URL", str),
    "shop_upstream_url": ("FLASHSALE_SHOP_URL", str),
    "join_rate_per_ip": ("FLASHSALE_JOIN_RATE_PER_IP", _float),
    "visitor_rate": ("FLASHSALE_VISITOR_RATE", _float),
    "trusted_proxies": ("FLASHSALE_TRUSTED_PROXIES", _list),
    "trusted_user_header": ("FLASHSALE_TRUSTED_USER_HEADER", str),
    "data_dir": ("FLASHSALE_DATA_DIR", _path),
    "log_level": ("FLASHSALE_LOG_LEVEL", str),
    "reconcile_grace_s": ("FLASHSALE_RECONCILE_GRACE_S", _float),
    "worker_batch": ("FLASHSALE_WORKER_BATCH", _int),
    "kafka_partitions": ("FLASHSALE_KAFKA_PARTITIONS", _int),
    # Tracing (infra/web/tracing.py): off unless FLASHSALE_OTEL, and OpenTelemetry's own
    # OTEL_SDK_DISABLED=true wins over it. The endpoint and service name are the standard ones.
    "otel": ("FLASHSALE_OTEL", _bool),
    "otel_sdk_disabled": ("OTEL_SDK_DISABLED", _bool),
    "otel_endpoint": ("OTEL_EXPORTER_OTLP_ENDPOINT", str),
    "otel_service_name": ("OTEL_SERVICE_NAME", str),
}
# Fields that `flashsale up` also takes as a flag: a refusal names both spellings.
_FLAGS = frozenset(
    {
        "redis_url",
        "database_url",
        "kafka_bootstrap",
        "admin_key",
        "host",
        "gate_port",
        "queue_port",
        "shop_port",
        "scheduler_port",
        "worker_port",
        "join_rate_per_ip",
        "visitor_rate",
        "trusted_proxies",
        "data_dir",
        "log_level",
    }
)


def setting_name(field_name: str) -> str:
    """How a person knows the setting: its env var, and its `flashsale up` flag if it has one."""
    var = _ENV[field_name][0]
    if field_name in _FLAGS:
        return f"{var} (--{field_name.replace('_', '-')})"
    return var


def _refuse(field_name: str, problem: str) -> ConfigError:
    return ConfigError(f"{setting_name(field_name)}: {problem}")


# --- the checks: each returns what is wrong (and what is expected), or None ------------------

_REDIS_SCHEMES = ("redis", "rediss", "unix")
# Spellings of PostgreSQL that mean the one driver the processes use (SQLAlchemy's asyncio
# engine needs an async driver; a libpq-style URL would fail in every process at its start).
_PG_ALIASES = ("postgresql://", "postgres://")
_PG_SCHEME = "postgresql+asyncpg"
# RFC 9110 5.6.2: the characters of a header name.
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _async_database_url(url: str) -> str:
    for alias in _PG_ALIASES:
        if url.startswith(alias):
            return f"{_PG_SCHEME}://{url[len(alias) :]}"
    return url


def _visible(value: str) -> bool:
    return value.isascii() and value.isprintable() and " " not in value


def _netloc_problem(parts: SplitResult, example: str) -> str | None:
    try:
        port = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError:
        return f"the port is not a number from 1 to 65535 (expected {example})"
    if not parts.hostname:
        return f"the URL names no host (expected {example})"
    if port == 0:
        return f"the port is not a number from 1 to 65535 (expected {example})"
    return None


def _redis_url_problem(url: str) -> str | None:
    example = (
        "redis://[:password@]host[:port][/db], rediss://..., unix:///path/to.sock or "
        "redis+cluster://[:password@]host:port (any node of a Redis Cluster)"
    )
    if not _visible(url):
        return f"a URL has no spaces or control characters (expected {example})"
    parts = urlsplit(url)
    if parts.scheme == REDIS_CLUSTER_SCHEME:
        if problem := _netloc_problem(parts, example):
            return problem
        if parts.path.strip("/") not in ("", "0"):
            return f"a Redis Cluster has only database 0 (expected {example})"
        return None
    if parts.scheme not in _REDIS_SCHEMES:
        return f"the scheme must be one of these (expected {example})"
    if parts.scheme == "unix":
        return None if parts.path else f"a unix:// URL needs the socket's path ({example})"
    if problem := _netloc_problem(parts, example):
        return problem
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        return f"the database after the host must be a number, like /0 (expected {example})"
    try:  # what every process will do with it, query options included
        redis_parse_url(url)
    except ValueError as exc:
        return f"{exc} (expected {example})"
    return None


def _database_url_problem(url: str) -> str | None:
    example = "postgresql://user[:password]@host[:port]/database"
    if not _visible(url):
        return f"a URL has no spaces or control characters (expected {example})"
    parts = urlsplit(url)
    if parts.scheme != _PG_SCHEME:
        return f"the scheme must be postgresql:// or {_PG_SCHEME}:// (expected {example})"
    if problem := _netloc_problem(parts, example):
        return problem
    if not parts.path.strip("/"):
        return f"the URL names no database (expected {example})"
    return None


def _kafka_bootstrap_problem(value: str) -> str | None:
    example = "host:port[,host:port...], like 127.0.0.1:9092"
    servers = [part.strip() for part in value.split(",")]
    if not value.strip() or not all(servers):
        return f"expected {example}"
    for server in servers:
        host, colon, port = server.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]  # an IPv6 address: [::1]:9092
        if not colon or not host or not _visible(host) or "/" in host:
            return f"{server!r} is not host:port (expected {example})"
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            return f"{server!r}: the port is not a number from 1 to 65535 (expected {example})"
    return None


def _host_problem(host: str) -> str | None:
    expected = "an address to bind, like 127.0.0.1, 0.0.0.0 or ::"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if host and all(label and label.replace("-", "").isalnum() for label in labels):
        return None if host.isascii() else f"{host!r} is not {expected}"
    return f"{host!r} is not {expected}"


def _port_problem(port: int) -> str | None:
    if type(port) is not int or not 1 <= port <= 65535:
        return f"{port!r} is not a port: expected a number from 1 to 65535"
    return None


def _http_url_problem(url: str) -> str | None:
    if not url:
        return None  # unset: derived from host and port
    example = "http(s)://host[:port][/path]"
    if not _visible(url):
        return f"a URL has no spaces or control characters (expected {example})"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"the scheme must be http:// or https:// (expected {example})"
    if parts.query or parts.fragment:
        return f"the URL may not carry a query or a fragment (expected {example})"
    return _netloc_problem(parts, example)


def _rate_problem(rate: float) -> str | None:
    if not math.isfinite(rate) or rate < 0:
        return f"{rate!r}: expected a number >= 0 (per second; 0 turns the limit off)"
    return None


def _duration_problem(seconds: float) -> str | None:
    if not math.isfinite(seconds) or seconds <= 0:
        return f"{seconds!r}: expected a duration in seconds, > 0"
    return None


def _range_problem(value: int, low: int, high: int) -> str | None:
    if type(value) is not int or not low <= value <= high:
        return f"{value!r}: expected a whole number from {low} to {high}"
    return None


def _networks_problem(networks: tuple[str, ...]) -> str | None:
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            return f"{network!r} is not an address or network, like 10.0.0.1 or 10.0.0.0/8"
    return None


def _header_name_problem(name: str) -> str | None:
    if name and not set(name) <= _TOKEN_CHARS:
        return f"{name!r} is not a header name, like X-User-Id"
    return None


def _directory_problem(path: Path) -> str | None:
    # Only what can be known without creating anything: `flashsale up` creates it later.
    if path.exists() and not path.is_dir():
        return f"{str(path)!r} exists and is not a directory"
    return None


def _choice_problem(value: str, choices: tuple[str, ...]) -> str | None:
    if value not in choices:
        return f"{value!r}: expected one of {', '.join(choices)}"
    return None


def _key_chars_problem(keys: tuple[str, ...]) -> str | None:
    # A key travels in an Authorization header or signs tokens: a control character or a space
    # in it is a copy-paste accident (a trailing newline from a secrets file), never intended.
    if any(key and not _visible(key) for key in keys):
        return (
            "a key has a space, a control or a non-ASCII character in it (its value is not shown)"
        )
    return None


def _service_name_problem(name: str) -> str | None:
    if name and not (_visible(name) and len(name) <= 255):
        return f"{name!r}: expected up to 255 visible ASCII characters, like flashsale-gate"
    return None


_PORT_FIELDS = ("gate_port", "queue_port", "shop_port", "scheduler_port", "worker_port")
_URL_FIELDS = ("public_gate_url", "public_queue_url")
# Never echoed in a refusal: the line goes to a terminal, a log, a CI transcript.
_SECRET_FIELDS = frozenset({"admin_key", "viewer_key", "secret_keys"})


@dataclass(frozen=True)
class Settings:
    dev: bool = False
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/flashsale"
    kafka_bootstrap: str = "127.0.0.1:9092"
    admin_key: str = ""
    # Optional: a read-only key of the admin API (stats, dashboard, DLQ and webhook listings).
    viewer_key: str = ""
    # Newest first: the first key signs, every key verifies, so keys rotate without logouts.
    secret_keys: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    gate_port: int = 8000
    queue_port: int = 8001
    shop_port: int = 8002
    scheduler_port: int = 8003
    worker_port: int = 8004  # the order worker's /healthz and /metrics
    public_gate_url: str = ""
    # Where browsers reach the waiting room (the gate sends token-less shop visitors there).
    public_queue_url: str = ""
    shop_upstream_url: str = ""
    join_rate_per_ip: float = 20.0
    visitor_rate: float = 10.0
    trusted_proxies: tuple[str, ...] = ()
    trusted_user_header: str = ""
    data_dir: Path = field(default_factory=lambda: Path(".flashsale"))
    log_level: str = "info"
    # A reservation PostgreSQL still lacks after this long is published again.
    reconcile_grace_s: float = 10.0
    # order.placed messages stored per PostgreSQL transaction. Each batch pays fixed round
    # trips (Kafka fetch and commit, the transaction, Redis): 2,000 drained 1.8x what 500 did.
    worker_batch: int = 2_000
    # Of each topic flashsale creates (infra/topics.py): the most order workers that can
    # share the work of one topic, since a partition has one consumer of the group at a time.
    kafka_partitions: int = 6
    # OpenTelemetry spans, exported by OTLP over HTTP to otel_endpoint (the SDK's default,
    # http://localhost:4318, when empty). The service name is the process's own unless set.
    otel: bool = False
    otel_sdk_disabled: bool = False
    otel_endpoint: str = ""
    otel_service_name: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then the environment, then explicit overrides (the CLI's flags)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, (var, parse) in _ENV.items():
            raw = env.get(var)
            if raw is not None and raw != "":
                try:
                    values[name] = parse(raw)
                except ValueError as exc:
                    shown = "(hidden)" if name in _SECRET_FIELDS else repr(raw)
                    raise _refuse(name, f"{shown} is not valid: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("dev"):
            # An explicit empty value (`--admin-key ""`) is as unset as a missing one: an
            # empty admin key would match an empty Bearer.
            if not values.get("admin_key"):
                values["admin_key"] = DEV_ADMIN_KEY
            if not values.get("secret_keys"):
                values["secret_keys"] = (DEV_SECRET_KEY,)
            # The dev viewer key, unless it would be the admin key (refused below).
            if not values.get("viewer_key") and values["admin_key"] != DEV_VIEWER_KEY:
                values["viewer_key"] = DEV_VIEWER_KEY
        if isinstance(url := values.get("database_url"), str):
            values["database_url"] = _async_database_url(url)
        if isinstance(level := values.get("log_level"), str):
            values["log_level"] = level.strip().lower()
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse, with one line naming the setting, anything a process would fail on later:
        each check here is one a process would otherwise meet as a traceback (and a restart
        loop under `flashsale up`), or not at all until the first visitor."""
        problems = (
            ("redis_url", _redis_url_problem(self.redis_url)),
            ("database_url", _database_url_problem(self.database_url)),
            ("kafka_bootstrap", _kafka_bootstrap_problem(self.kafka_bootstrap)),
            ("host", _host_problem(self.host)),
            *((name, _port_problem(getattr(self, name))) for name in _PORT_FIELDS),
            *((name, _http_url_problem(getattr(self, name))) for name in _URL_FIELDS),
            # Several shops, comma-separated: the gate takes them in turn.
            *(
                ("shop_upstream_url", _http_url_problem(u))
                for u in self.shop_upstream_url.split(",")
            ),
            ("join_rate_per_ip", _rate_problem(self.join_rate_per_ip)),
            ("visitor_rate", _rate_problem(self.visitor_rate)),
            ("reconcile_grace_s", _duration_problem(self.reconcile_grace_s)),
            ("worker_batch", _range_problem(self.worker_batch, 1, 10_000)),
            ("kafka_partitions", _range_problem(self.kafka_partitions, 1, 1_000)),
            ("trusted_proxies", _networks_problem(self.trusted_proxies)),
            ("trusted_user_header", _header_name_problem(self.trusted_user_header)),
            ("data_dir", _directory_problem(self.data_dir)),
            ("log_level", _choice_problem(self.log_level, LOG_LEVELS)),
            ("otel_endpoint", _http_url_problem(self.otel_endpoint)),
            ("otel_service_name", _service_name_problem(self.otel_service_name)),
            ("admin_key", _key_chars_problem((self.admin_key,))),
            ("viewer_key", _key_chars_problem((self.viewer_key,))),
            ("secret_keys", _key_chars_problem(self.secret_keys)),
        )
        for name, problem in problems:
            if problem is not None:
                raise _refuse(name, problem)
        if self.trusted_user_header and not self.trusted_proxies:
            # From anyone but the upstream that sets it, the header is a claim: it would hand
            # the named user's place and access token to whoever sends it.
            raise _refuse(
                "trusted_user_header",
                "needs FLASHSALE_TRUSTED_PROXIES: the addresses of the upstream that sets it "
                "(from anyone else the header is not believed)",
            )
        if self.viewer_key and hmac.compare_digest(self.viewer_key, self.admin_key):
            # One key for both roles would make the viewer an admin (in dev mode as well).
            raise ConfigError(
                "FLASHSALE_VIEWER_KEY equals FLASHSALE_ADMIN_KEY; the read-only key must be "
                "another one (or unset)"
            )
        if self.dev:
            return
        if not self.secret_keys or DEV_SECRET_KEY in self.secret_keys:
            raise ConfigError(
                "FLASHSALE_SECRET_KEYS is unset or the dev default; set a random secret "
                "(for example `python -c 'import secrets; print(secrets.token_urlsafe(32))'`) "
                "or run with --dev"
            )
        if any(len(key) < MIN_SECRET_CHARS for key in self.secret_keys):
            raise ConfigError(
                f"every FLASHSALE_SECRET_KEYS entry must be at least {MIN_SECRET_CHARS} characters"
            )
        if (
            not self.admin_key
            or self.admin_key == DEV_ADMIN_KEY
            or len(self.admin_key) < MIN_SECRET_CHARS
        ):
            raise ConfigError(
                "FLASHSALE_ADMIN_KEY is unset, the dev default, or shorter than "
                f"{MIN_SECRET_CHARS} characters; set a random one or run with --dev"
            )
        if self.viewer_key and (
            self.viewer_key in (DEV_VIEWER_KEY, DEV_ADMIN_KEY)
            or len(self.viewer_key) < MIN_SECRET_CHARS
        ):
            raise ConfigError(
                "FLASHSALE_VIEWER_KEY is a dev default or shorter than "
                f"{MIN_SECRET_CHARS} characters; set a random one, leave it unset, or run "
                "with --dev"
            )

    def validate_one_host(self) -> None:
        """What `flashsale up` also needs, running every process on this machine: a port of
        its own for each. (Not in validate: in a container per process, only its own port is
        set, and another process's default may well be the same number.)"""
        for i, name in enumerate(_PORT_FIELDS):
            port = getattr(self, name)
            for other in _PORT_FIELDS[i + 1 :]:
                if getattr(self, other) == port:
                    problem = f"{port} is also {setting_name(other)}; each process needs its own"
                    raise _refuse(name, problem)

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process build these same settings."""
        env: dict[str, str] = {}
        for name, (var, _) in _ENV.items():
            value = getattr(self, name)
            if isinstance(value, bool):
                env[var] = "1" if value else "0"
            elif isinstance(value, tuple):
                env[var] = ",".join(value)
            else:
                env[var] = str(value)
        return env

    def gate_secrets(self) -> tuple[str, ...]:
        """The header value by which the shop knows a request came through the gate.

        Derived from each secret key (the first is sent), so it rotates with them and needs
        no setting of its own.
        """
        return tuple(
            hmac.new(key.encode(), b"flashsale.gate.v1", hashlib.sha256).hexdigest()
            for key in self.secret_keys
        )

    def log_secrets(self) -> tuple[str, ...]:
        """Values no log line may carry (infra.web.logs blanks them): the keys, the gate
        secrets derived from them, and the stores' passwords."""
        passwords = [urlsplit(url).password or "" for url in (self.redis_url, self.database_url)]
        return (
            self.admin_key,
            self.viewer_key,
            *self.secret_keys,
            *self.gate_secrets(),
            *passwords,
        )

    @property
    def otel_enabled(self) -> bool:
        return self.otel and not self.otel_sdk_disabled

    @property
    def gate_url(self) -> str:
        return self.public_gate_url or f"http://{self.host}:{self.gate_port}"

    @property
    def queue_url(self) -> str:
        return self.public_queue_url or f"http://{self.host}:{self.queue_port}"

    @property
    def shop_urls(self) -> tuple[str, ...]:
        """Where the gate reaches the shops (FLASHSALE_SHOP_URL, comma-separated), or the one
        shop on this host's shop port."""
        urls = tuple(u.strip() for u in self.shop_upstream_url.split(",") if u.strip())
        return urls or (f"http://{self.host}:{self.shop_port}",)

    @property
    def shop_url(self) -> str:
        """The first shop: where the stack's own calls (the demo sale) go."""
        return self.shop_urls[0]

    @property
    def scheduler_url(self) -> str:
        return f"http://{self.host}:{self.scheduler_port}"

    @property
    def worker_url(self) -> str:
        return f"http://{self.host}:{self.worker_port}"
