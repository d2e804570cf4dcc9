"""The root Dockerfile and .dockerignore, read statically (no engine here to build them)."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field

from tests.deploy.common import CHART_DIR, DOCKERFILE, DOCKERIGNORE, ROOT, load_yaml

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse(text: str) -> list[Stage]:
    """The stages of a Dockerfile: continuation lines joined, comments and blanks dropped."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[Stage] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "FROM":
            parts = rest.split()
            named = len(parts) >= 3 and parts[1].upper() == "AS"
            stages.append(Stage(parts[0], parts[2] if named else None))
        elif stages:
            stages[-1].instructions.append((word, rest))
    return stages


def dockerfile_problems(text: str) -> list[str]:
    stages = parse(text)
    problems: list[str] = []
    if len(stages) < 2:
        return ["not multi-stage (one FROM)"]
    final = stages[-1]
    builders = {s.name for s in stages[:-1] if s.name}
    copies = [rest for word, rest in final.instructions if word == "COPY"]
    if not any(re.match(r"--from=(\S+)", c) and c.split()[0][7:] in builders for c in copies):
        problems.append("the final stage copies nothing from a builder stage")
    if any(w == "RUN" and "pip install" in r for w, r in final.instructions):
        problems.append("the final stage installs packages (that is the builder's job)")
    users = [rest for word, rest in final.instructions if word == "USER"]
    user = users[-1].split(":")[0] if users else "root"
    if user in ("root", "0"):
        problems.append(f"the final stage runs as {user}")
    elif not user.isdigit():
        problems.append(f"USER {user}: not numeric, so Kubernetes' runAsNonRoot cannot verify it")
    entry = [rest for word, rest in final.instructions if word == "ENTRYPOINT"]
    try:
        argv = json.loads(entry[-1]) if entry else None
    except json.JSONDecodeError:
        argv = None  # the shell form: signals go to /bin/sh, not to the process
    scripts = PYPROJECT["project"]["scripts"]
    if not argv or argv[0] not in scripts:
        problems.append(f"ENTRYPOINT is not the exec form of a console script of {list(scripts)}")
    return problems


def final_uid(text: str) -> int:
    users = [rest for word, rest in parse(text)[-1].instructions if word == "USER"]
    return int(users[-1].split(":")[0])


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    assert dockerfile_problems(text) == []
    entry = [rest for word, rest in parse(text)[-1].instructions if word == "ENTRYPOINT"]
    assert [json.loads(e) for e in entry] == [["flashsale"]]


def test_the_chart_runs_as_the_images_user() -> None:
    values = load_yaml(CHART_DIR / "values.yaml")
    assert values["podSecurityContext"]["runAsUser"] == final_uid(DOCKERFILE.read_text())


def test_dockerfile_checks_can_fail() -> None:
    one_stage = 'FROM python:3.11-slim\nRUN pip install .\nENTRYPOINT ["flashsale"]\n'
    assert dockerfile_problems(one_stage) == ["not multi-stage (one FROM)"]
    as_root = DOCKERFILE.read_text().replace("USER 10001:10001", "USER root")
    assert dockerfile_problems(as_root) == ["the final stage runs as root"]
    shell_form = DOCKERFILE.read_text().replace('ENTRYPOINT ["flashsale"]', "ENTRYPOINT flashsale")
    assert len(dockerfile_problems(shell_form)) == 1
    no_copy = DOCKERFILE.read_text().replace("COPY --from=builder", "COPY --from=elsewhere")
    assert dockerfile_problems(no_copy) == ["the final stage copies nothing from a builder stage"]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for these patterns: the last matching pattern wins; `!` re-includes."""
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, f"**/{pattern}") for p in prefixes
        ):
            verdict = not negate
    return verdict


def test_dockerignore_keeps_what_the_build_needs() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # `pip install .` needs the project file, its readme and licence, and every package.
    needed = [
        "pyproject.toml",
        PYPROJECT["project"]["readme"],
        *PYPROJECT["project"]["license-files"],
    ]
    includes = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    dirs = [p.name for p in ROOT.iterdir() if p.is_dir()]
    packages = [d for d in dirs if any(fnmatch.fnmatch(d, i) for i in includes)]
    assert packages, "no package found"
    kept = [p for p in [*needed, *packages, "shop/migrations/env.py"] if _ignored(p, patterns)]
    assert kept == []
    for heavy in (".git", ".venv", ".flashsale", "shop/__pycache__"):
        assert _ignored(heavy, patterns), f"{heavy} goes into the build context"
