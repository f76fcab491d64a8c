"""Builds: source tree -> plan -> ready-to-run tree, the same on every runtime.

`detect` is pure (tree + toolchains + settings -> `Plan`); `prepare` writes the files the plan
generated (pinned requirements) into the tree; the runtime then executes the plan's commands
inside the instance, with the shared package caches mounted at /devpush/cache."""

from __future__ import annotations

from pathlib import Path

from devpush.builds.detect import detect
from devpush.builds.plan import MissingToolchain, Plan, PlanError

STATIC_SERVER = Path(__file__).with_name("static_server.py")
SUPPORT_FILES = {"static_server.py": STATIC_SERVER}

__all__ = ["SUPPORT_FILES", "MissingToolchain", "Plan", "PlanError", "detect", "prepare"]


def prepare(plan: Plan, root: Path) -> None:
    """Writes the plan's generated files into the source tree (never outside it)."""
    base = root.resolve()
    for relative, text in plan.files.items():
        target = (base / relative).resolve()
        if not target.is_relative_to(base):
            raise PlanError(f"refusing to write {relative} outside the source tree")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
