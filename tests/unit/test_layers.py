"""Layering (issue #19). The low layers never import the domains: core modules (settings,
errors, db, crypto, events, the run state, git, the outbox), the runtimes, the proxy's Traefik
files and the log storage import only each other; whatever they need from above comes as an
argument or through a protocol (the Platform's `installation_token`, a team teardown's
`delete_projects`). And no two top-level packages import each other, directly or around a
cycle. Imports under `if TYPE_CHECKING:` are annotations, not dependencies."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "devpush"
CORE = (
    "settings",
    "errors",
    "db",
    "crypto",
    "events",
    "runstate",
    "signing",
    "naming",
    "safetar",
    "logsetup",
    "pagination",
    "queue",
    "git",
    "pgtools",
)
LOW_PACKAGES = ("outbox", "runtime", "proxy", "logs")


def low(module: str) -> bool:
    parts = module.split(".")
    if parts[0] != "devpush" or len(parts) < 2:
        return False
    return parts[1] in CORE or parts[1] in LOW_PACKAGES


def module_name(path: Path) -> str:
    relative = path.relative_to(SRC).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "devpush":
                found += [(node.lineno, f"devpush.{a.name}") for a in node.names]
            elif node.module.startswith("devpush."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("devpush.")]
    return found


def test_low_layers_import_only_low_layers() -> None:
    low_files = [p for p in PACKAGE.rglob("*.py") if low(module_name(p))]
    assert len(low_files) > 20, "the layer list names modules that moved"
    wrong = [
        f"{p.relative_to(SRC)}:{line} imports {target}"
        for p in low_files
        for line, target in imports(p)
        if not low(target)
    ]
    assert wrong == [], "\n".join(wrong)


def test_the_check_sees_a_domain_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from typing import TYPE_CHECKING\n"
        "from devpush.deployments.models import Deployment\n"
        "if TYPE_CHECKING:\n"
        "    from devpush.platform import Platform\n"
    )
    targets = [t for _, t in imports(bad)]
    assert targets == ["devpush.deployments.models"]
    assert not low("devpush.deployments.models") and low("devpush.logs.store")
    assert not low("devpush.deployments.log_routes") and low("devpush.runtime.docker")


def package_graph() -> dict[str, set[str]]:
    """Top-level package (or module) -> the others it imports at run time."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path).split(".")
        if len(name) < 2 or name[1] == "migrations":
            continue
        targets = {t.split(".")[1] for _, t in imports(path) if t.count(".") >= 1}
        graph.setdefault(name[1], set()).update(targets - {name[1]})
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str]:
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return []


def test_no_import_cycle_between_top_level_packages() -> None:
    graph = package_graph()
    assert {"deployments", "github", "teams", "projects", "auth", "accounts"} <= set(graph)
    found = cycle(graph)
    assert found == [], "packages import each other: " + " -> ".join(found)


@pytest.mark.parametrize(
    ("graph", "cyclic"),
    [
        ({"teams": {"projects"}, "projects": {"teams"}}, True),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
        ({"deployments": {"projects"}, "projects": {"teams"}, "teams": set()}, False),
    ],
)
def test_the_cycle_check_finds_cycles(graph: dict[str, set[str]], cyclic: bool) -> None:
    assert bool(cycle(graph)) == cyclic


def test_no_module_is_over_about_500_lines() -> None:
    """Files stay small enough to read in one go: split along a seam instead (issue #19)."""
    sizes = {
        str(p.relative_to(SRC)): len(p.read_text().splitlines())
        for p in PACKAGE.rglob("*.py")
        if "migrations" not in p.parts
    }
    assert {path: n for path, n in sizes.items() if n > 520} == {}
