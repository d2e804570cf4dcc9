"""The one settings object of every flashsale process.

Built once at the edge (``flashsale`` CLI or a package's ``__main__``) by
:meth:`Settings.from_env`, then passed down. Nothing else reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from infra.constants import DEV_ADMIN_KEY, DEV_SECRET_KEY


class ConfigError(Exception):
    """Settings that the platform refuses to start with."""


def _bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


# Settings field -> (environment variable, parser). The CLI's flags use the same names.
_ENV: dict[str, tuple[str, object]] = {
    "dev": ("FLASHSALE_DEV", _bool),
    "redis_url": ("FLASHSALE_REDIS_URL", str),
    "database_url": ("FLASHSALE_DATABASE_URL", str),
    "kafka_bootstrap": ("FLASHSALE_KAFKA_BOOTSTRAP", str),
    "admin_key": ("FLASHSALE_ADMIN_KEY", str),
    "secret_keys": ("FLASHSALE_SECRET_KEYS", _list),
    "host": ("FLASHSALE_HOST", str),
    "gate_port": ("FLASHSALE_GATE_PORT", int),
    "queue_port": ("FLASHSALE_QUEUE_PORT", int),
    "shop_port": ("FLASHSALE_SHOP_PORT", int),
    "scheduler_port": ("FLASHSALE_SCHEDULER_PORT", int),
    "public_gate_url": ("FLASHSALE_PUBLIC_GATE_URL", str),
    "public_queue_url": ("FLASHSALE_PUBLIC_QUEUE_URL", str),
    "shop_upstream_url": ("FLASHSALE_SHOP_URL", str),
    "join_rate_per_ip": ("FLASHSALE_JOIN_RATE_PER_IP", float),
    "visitor_rate": ("FLASHSALE_VISITOR_RATE", float),
    "trusted_proxies": ("FLASHSALE_TRUSTED_PROXIES", _list),
    "trusted_user_header": ("FLASHSALE_TRUSTED_USER_HEADER", str),
    "data_dir": ("FLASHSALE_DATA_DIR", Path),
    "log_level": ("FLASHSALE_LOG_LEVEL", str),
    "reconcile_grace_s": ("FLASHSALE_RECONCILE_GRACE_S", float),
    "worker_batch": ("FLASHSALE_WORKER_BATCH", int),
}


@dataclass(frozen=True)
class Settings:
    dev: bool = False
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/flashsale"
    kafka_bootstrap: str = "127.0.0.1:9092"
    admin_key: str = ""
    # Newest first: the first key signs, every key verifies, so keys rotate without logouts.
    secret_keys: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    gate_port: int = 8000
    queue_port: int = 8001
    shop_port: int = 8002
    scheduler_port: int = 8003
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then the environment, then explicit overrides (the CLI's flags)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, (var, parse) in _ENV.items():
            raw = env.get(var)
            if raw is not None and raw != "":
                try:
                    values[name] = parse(raw)  # type: ignore[operator]
                except ValueError as exc:
                    raise ConfigError(f"{var}={raw!r} is not valid: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("dev"):
            values.setdefault("admin_key", DEV_ADMIN_KEY)
            values.setdefault("secret_keys", (DEV_SECRET_KEY,))
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.join_rate_per_ip < 0 or self.visitor_rate < 0:
            raise ConfigError("rates must be >= 0 (0 turns a limit off)")
        if not 1 <= self.worker_batch <= 10_000:
            raise ConfigError("FLASHSALE_WORKER_BATCH must be from 1 to 10000")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(f"--trusted-proxies: {proxy!r} is not an address") from None
        if self.dev:
            return
        if not self.secret_keys or DEV_SECRET_KEY in self.secret_keys:
            raise ConfigError(
                "FLASHSALE_SECRET_KEYS is unset or the dev default; set a random secret "
                "(for example `python -c 'import secrets; print(secrets.token_urlsafe(32))'`) "
                "or run with --dev"
            )
        if any(len(key) < 16 for key in self.secret_keys):
            raise ConfigError("every FLASHSALE_SECRET_KEYS entry must be at least 16 characters")
        if not self.admin_key or self.admin_key == DEV_ADMIN_KEY or len(self.admin_key) < 16:
            raise ConfigError(
                "FLASHSALE_ADMIN_KEY is unset, the dev default, or shorter than 16 characters; "
                "set a random one or run with --dev"
            )

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

    @property
    def gate_url(self) -> str:
        return self.public_gate_url or f"http://{self.host}:{self.gate_port}"

    @property
    def queue_url(self) -> str:
        return self.public_queue_url or f"http://{self.host}:{self.queue_port}"

    @property
    def shop_url(self) -> str:
        return self.shop_upstream_url or f"http://{self.host}:{self.shop_port}"

    @property
    def scheduler_url(self) -> str:
        return f"http://{self.host}:{self.scheduler_port}"
