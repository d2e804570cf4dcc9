"""What the deployment tests share: the repository's files, the platform's own facts (settings,
topics, processes) that the deployment files must agree with, and the checks that apply to any
container that runs a flashsale process, whoever wrote its description (compose or Helm)."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from infra import constants
from infra.settings import ConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "infra" / "docker-compose.yml"
CHART_DIR = ROOT / "infra" / "helm" / "flashsale"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# Every FLASHSALE_* variable the settings read (to_env names them all).
SETTINGS_VARS = frozenset(Settings().to_env())
# The settings a production process refuses to start without (infra/settings.py validate()).
SECRET_VARS = ("FLASHSALE_SECRET_KEYS", "FLASHSALE_ADMIN_KEY")
# Every Kafka topic the platform produces to or consumes from.
TOPICS = frozenset(value for name, value in vars(constants).items() if name.startswith("TOPIC_"))
# `python -m <module>` of each process -> the Settings field of its HTTP port (None: no HTTP).
PROCESSES: dict[str, str | None] = {
    "queue_server": "queue_port",
    "token_gate": "gate_port",
    "shop": "shop_port",
    "scheduler": "scheduler_port",
    "shop.worker": "worker_port",
    "shop.migrate": None,
}
APPS = frozenset(PROCESSES) - {"shop.migrate"}

# Values good enough for production-mode settings: what the tests feed to compose and Helm.
TEST_SECRET_KEYS = "k" * 24 + ",older-" + "o" * 20
TEST_ADMIN_KEY = "a" * 24

FLASHSALE_VAR_RE = re.compile(r"\bFLASHSALE_[A-Z0-9_]*[A-Z0-9]\b")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def unknown_flashsale_vars(text: str) -> set[str]:
    """FLASHSALE_* names in `text` that no setting reads: a misspelled variable is silently
    ignored by the process, so it must fail here instead."""
    return set(FLASHSALE_VAR_RE.findall(text)) - SETTINGS_VARS


def module_exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def python_module(argv: Iterable[str] | None) -> str | None:
    """The module of a `python -m <module>` command line, else None."""
    args = list(argv or ())
    if len(args) >= 3 and Path(args[0]).name.startswith("python") and args[1] == "-m":
        return args[2]
    return None


def process_problems(where: str, module: str, env: Mapping[str, str]) -> list[str]:
    """What is wrong with a container that runs `python -m module` with `env`: an unknown
    process, a variable no setting reads, or settings the process would refuse (it exits 2)."""
    problems: list[str] = []
    if module not in PROCESSES or not module_exists(module):
        problems.append(f"{where}: `python -m {module}` is not a flashsale process")
    if unknown := {k for k in env if k.startswith("FLASHSALE_")} - SETTINGS_VARS:
        problems.append(f"{where}: no setting reads {sorted(unknown)}")
    for var in SECRET_VARS:
        if not env.get(var):
            problems.append(f"{where}: {var} is not given")
    try:
        settings = Settings.from_env(dict(env))
    except ConfigError as exc:
        problems.append(f"{where}: the process would refuse its settings: {exc}")
        return problems
    if settings.dev:
        problems.append(f"{where}: runs in dev mode (FLASHSALE_DEV), which allows the dev keys")
    if settings.host in ("127.0.0.1", "localhost", "::1"):
        problems.append(f"{where}: binds {settings.host}, unreachable from outside its container")
    return problems


def port_of(module: str, env: Mapping[str, str]) -> int | None:
    """The port `python -m module` listens on with `env` (None: no HTTP port)."""
    field = PROCESSES.get(module)
    if field is None:
        return None
    return int(getattr(Settings.from_env(dict(env)), field))


def topics_in(text: str) -> set[str]:
    """The topic names a shell script or list passes on (words that look like order topics)."""
    return set(re.findall(r"\border\.[a-z.]+[a-z]\b", text))
