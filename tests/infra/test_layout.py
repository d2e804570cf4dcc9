"""The rooms of infra/ keep their import rules (infra/__init__.py): the services build on infra,
never the other way, and the rules of a sale and the HTTP plumbing never reach the stack."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("queue_server", "scheduler", "shop", "token_gate")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-local imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def offenders(room: str, package: str) -> dict[str, list[str]]:
    """The files under `room` that import `package` (or a module in it), with those imports."""
    found = {}
    for path in sorted((ROOT / room).rglob("*.py")):
        bad = [m for m in imported_modules(path) if m == package or m.startswith(package + ".")]
        if bad:
            found[str(path.relative_to(ROOT))] = sorted(bad)
    return found


def test_imported_modules_sees_every_form_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import a.b\nfrom c import d\ndef f():\n    from e.f import g\n")
    assert imported_modules(sample) == {"a.b", "c", "c.d", "e.f", "e.f.g"}


@pytest.mark.parametrize("service", SERVICES)
def test_infra_never_imports_a_service(service: str) -> None:
    assert offenders("infra", service) == {}


@pytest.mark.parametrize("room", ["infra/sale", "infra/web"])
def test_sale_and_web_never_import_the_stack(room: str) -> None:
    assert offenders(room, "infra.stack") == {}


def test_web_never_imports_the_rules_of_a_sale() -> None:
    assert offenders("infra/web", "infra.sale") == {}


@pytest.mark.parametrize("room", ["infra", "infra/sale", "infra/web", "infra/stack"])
def test_each_room_opens_with_a_docstring(room: str) -> None:
    tree = ast.parse((ROOT / room / "__init__.py").read_text())
    doc = ast.get_docstring(tree)
    assert doc and "import" in doc, f"{room}/__init__.py must say what it holds and may import"
