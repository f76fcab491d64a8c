"""Project API shapes, with the validation that keeps hostile input out."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from devpush.projects import cron, volumes
from devpush.projects.limits import MAX_REPLICAS

ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
REPO_URL = re.compile(r"^(https://|http://|ssh://|file:///|git@[A-Za-z0-9.-]+:)[^\s\x00]+$")
FORK = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9-]{0,38}(/[A-Za-z0-9._-]{1,100})?)$")


def _no_control(value: str) -> str:
    if any(ord(c) < 32 and c not in "\t" for c in value) or "\x7f" in value:
        raise ValueError("must not contain control characters (newlines, NUL, ...)")
    return value


def _branch(value: str) -> str:
    _no_control(value)
    bad = (" ", "\t", "~", "^", ":", "?", "*", "[", "\\", "..", "@{", "//", "/.")
    if (
        not value
        or value.startswith(("-", "/", "."))
        or value.endswith(("/", ".", ".lock"))
        or any(b in value for b in bad)
    ):
        raise ValueError("is not a valid git branch name")
    return value


def _pattern(value: str) -> str:
    _no_control(value)
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _root_dir(value: str) -> str:
    _no_control(value)
    parts = [p for p in value.strip("/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError("must stay inside the repository (no '..')")
    return "/".join(parts)


def _health_path(value: str) -> str:
    _no_control(value)
    if not value.startswith("/") or " " in value:
        raise ValueError("must be a URL path starting with '/'")
    return value


def _key_text(value: str) -> str:
    if "\x00" in value or any(ord(c) < 32 and c not in "\n\r\t" for c in value):
        raise ValueError("must be text (no NUL or control characters)")
    return value


def _repo_url(value: str) -> str:
    if not REPO_URL.match(value):
        raise ValueError("must be an https://, ssh://, git@host: or file:/// git URL")
    return value


def _fork(value: str) -> str:
    if not FORK.match(value):
        raise ValueError("must be '*', an owner ('octocat') or a repository ('octocat/app')")
    return value.lower()


Command = Annotated[str, Field(max_length=4096), AfterValidator(_no_control)]
Branch = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_branch)]
EnvValue = Annotated[str, Field(max_length=65536)]
RepoUrl = Annotated[str, Field(max_length=2048), AfterValidator(_repo_url)]
ProjectName = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
]


ForkName = Annotated[str, Field(min_length=1, max_length=140), AfterValidator(_fork)]


class RepoCredentials(BaseModel):
    """How the worker authenticates to repo_url: an HTTPS token (with a username, if the host
    wants one) or an SSH deploy key. Write-only: stored encrypted, never returned."""

    model_config = ConfigDict(extra="forbid")
    username: str | None = Field(None, max_length=255, pattern=r"^[A-Za-z0-9._@+-]+$")
    token: str | None = Field(None, min_length=1, max_length=4096, pattern=r"^[\x21-\x7e]+$")
    ssh_key: Annotated[str, Field(max_length=16384), AfterValidator(_key_text)] | None = None
    known_hosts: Annotated[str, Field(max_length=65536), AfterValidator(_key_text)] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> RepoCredentials:
        if bool(self.token) == bool(self.ssh_key):
            raise ValueError("give either token (HTTPS) or ssh_key (SSH), not both or neither")
        if self.ssh_key and "PRIVATE KEY-----" not in self.ssh_key:
            raise ValueError("ssh_key must be a private key in PEM/OpenSSH format")
        return self


def _environment_name(value: str) -> str:
    if value == "id" or value.startswith("id-"):  # {project}-env-id-… names environments by id
        raise ValueError("an environment name can't be 'id' or start with 'id-' (reserved)")
    return value


class EnvironmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[
        str,
        Field(min_length=1, max_length=40, pattern=r"^[a-z0-9][a-z0-9-]*$"),
        AfterValidator(_environment_name),
    ]
    branch_pattern: Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_pattern)]
    replicas: int | None = Field(
        None, ge=1, le=MAX_REPLICAS, description="None: the project's count"
    )


class VolumeIn(BaseModel):
    """A persistent volume: every environment keeps its own copy (projects/volumes.py)."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, AfterValidator(volumes.check_name)]
    mount_path: Annotated[str, AfterValidator(volumes.check_mount_path)]
    size_mb: Annotated[int | None, AfterValidator(volumes.check_size)] = Field(
        None, description="A quota in MiB, enforced where the filesystem supports one"
    )


class CronJobIn(BaseModel):
    """A cron job, run in each environment's live deployment (projects/cron.py)."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, AfterValidator(cron.check_name)]
    schedule: Annotated[str, AfterValidator(cron.check_schedule)] = Field(
        description='Five cron fields in UTC, e.g. "0 3 * * *", or @hourly, @daily...'
    )
    command: Annotated[str, AfterValidator(cron.check_command)]
    timeout: Annotated[int, AfterValidator(cron.check_timeout)] = Field(
        cron.DEFAULT_TIMEOUT, description="Seconds; the command is killed after it"
    )


class ProjectConfig(BaseModel):
    """Settings shared by create and update; None means "detect" (create) or "keep" (update)."""

    model_config = ConfigDict(extra="forbid")
    production_branch: Branch | None = None
    build_command: Command | None = None
    pre_deploy_command: Command | None = None
    start_command: Command | None = None
    root_directory: Annotated[str, Field(max_length=255), AfterValidator(_root_dir)] | None = None
    port: int | None = Field(None, ge=1, le=65535)
    health_path: Annotated[str, Field(max_length=255), AfterValidator(_health_path)] | None = None
    cpus: float | None = Field(None, gt=0, le=64)
    memory_mb: int | None = Field(None, ge=32, le=262144)
    build_memory_mb: int | None = Field(None, ge=64, le=262144)
    build_cpus: float | None = Field(None, gt=0, le=64)
    build_timeout: int | None = Field(None, ge=10, le=86400, description="Seconds")
    replicas: int | None = Field(
        None, ge=1, le=MAX_REPLICAS, description="Instances of each deployment (previews: 1)"
    )
    runtime: Literal["docker", "process", "swarm"] | None = None
    image: str | None = Field(None, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
    env_vars: dict[str, EnvValue] | None = None
    environments: list[EnvironmentIn] | None = Field(None, max_length=20)
    preview_deployments: bool | None = None
    log_retention_days: int | None = Field(None, ge=1, le=3650)
    allowed_forks: list[ForkName] | None = Field(None, max_length=100)
    repo_credentials: RepoCredentials | None = None
    volumes: list[VolumeIn] | None = Field(None, max_length=volumes.MAX_VOLUMES)
    cron: list[CronJobIn] | None = Field(None, max_length=cron.MAX_JOBS)

    @field_validator("cron")
    @classmethod
    def _cron_set(cls, value: list[CronJobIn] | None) -> list[CronJobIn] | None:
        if value:
            cron.check_set([j.model_dump() for j in value])
        return value

    @field_validator("volumes")
    @classmethod
    def _volume_set(cls, value: list[VolumeIn] | None) -> list[VolumeIn] | None:
        if value:
            volumes.check_set([v.model_dump() for v in value])
        return value

    @field_validator("env_vars")
    @classmethod
    def _env_keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, val in (value or {}).items():
            if not ENV_KEY.match(key):
                raise ValueError(f"{key[:40]!r} is not a valid variable name (A-Z, 0-9, _)")
            if "\x00" in val:
                raise ValueError(f"the value of {key} contains a NUL byte")
        return value

    @field_validator("environments")
    @classmethod
    def _unique_envs(cls, value: list[EnvironmentIn] | None) -> list[EnvironmentIn] | None:
        names = [e.name for e in value or []]
        if len(names) != len(set(names)):
            raise ValueError("environment names must be unique")
        if "production" in names:
            raise ValueError("'production' is implicit: it follows production_branch")
        return value


class ProjectCreate(ProjectConfig):
    name: ProjectName
    repo_url: RepoUrl | None = None


class ProjectUpdate(ProjectConfig):
    name: ProjectName | None = None
    repo_url: RepoUrl | None = None


class EnvironmentRead(BaseModel):
    id: str
    name: str
    slug: str
    branch_pattern: str
    is_production: bool
    url: str
    replicas: int | None = None  # None: the project's count


class ProjectRead(BaseModel):
    id: str
    team_id: str
    name: str
    slug: str
    repo_url: str | None
    production_branch: str
    config: dict[str, object]
    env_var_keys: list[str]
    environments: list[EnvironmentRead]
    preview_deployments: bool
    status: str
    url: str
    created_at: datetime


class VolumeCopy(BaseModel):
    """One environment's copy of a volume, on the runtime that holds it."""

    environment_id: str
    environment: str | None  # its name; None when the environment is gone
    runtime: str
    used_bytes: int
    size_mb: int | None = Field(description="The size the runtime enforces; None: not enforced")


class VolumeRead(BaseModel):
    name: str
    mount_path: str | None  # None: no longer declared, but its data is kept
    size_mb: int | None
    copies: list[VolumeCopy]
