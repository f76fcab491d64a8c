"""The upgrade step files: `X.Y.Z.json` (reason and actions), and `X.Y.Z.sh` for a "script"
action, read from DEVPUSH_UPGRADES_DIR or the ones shipped with devpush."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import semantic_version
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from devpush.errors import Invalid
from devpush.settings import Settings

SHIPPED = Path(__file__).with_name("versions")
Action = Literal["sync-routes", "script"]


class StepFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500)
    actions: list[Action] = Field(min_length=1)


@dataclass(frozen=True)
class Step:
    version: str
    reason: str
    actions: tuple[Action, ...]
    script: Path | None  # X.Y.Z.sh, for the "script" action

    @property
    def key(self) -> semantic_version.Version:
        return semantic_version.Version(self.version)


def steps_dir(settings: Settings) -> Path:
    return settings.upgrades_dir or SHIPPED


def load(settings: Settings) -> list[Step]:
    """Every step, in version order. A malformed file is an error naming it: an update that
    silently skipped a step would be worse than one that stops."""
    directory = steps_dir(settings)
    if not directory.is_dir():
        raise Invalid(f"the upgrade steps directory {directory} does not exist")
    steps = [_read(path) for path in directory.glob("*.json")]
    return sorted(steps, key=lambda s: s.key)


def _read(path: Path) -> Step:
    version = path.name.removesuffix(".json")
    try:
        semantic_version.Version(version)
    except ValueError:
        raise Invalid(f"upgrade step {path}: the name must be a version, X.Y.Z.json") from None
    try:
        data = StepFile.model_validate(json.loads(path.read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Invalid(f"upgrade step {path} is not valid: {first}") from None
    script = path.with_name(f"{version}.sh")
    if "script" in data.actions and not script.is_file():
        raise Invalid(f"upgrade step {path} runs a script, but {script.name} is missing")
    return Step(
        version=version,
        reason=data.reason,
        actions=tuple(data.actions),
        script=script if "script" in data.actions else None,
    )
