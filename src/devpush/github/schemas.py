"""GitHub shapes: the parts of webhook payloads devpush reads (validated before anything is
stored, so a payload missing a field gets a clear 422), and the API's own shapes."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Sha = Annotated[str, Field(pattern=r"^[0-9a-f]{40,64}$")]
Name = Annotated[str, Field(min_length=1, max_length=255)]
# GitHub's own rules: owners are letters, digits and dashes; names add dots and underscores.
FullName = Annotated[
    str, Field(max_length=140, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")
]
Id = Annotated[int, Field(ge=1, lt=2**63)]
ZERO_SHA = "0" * 40


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Account(_Part):
    id: Id
    login: Name
    type: Annotated[str, Field(max_length=32)] = "User"


class InstallationRef(_Part):
    id: Id


class Installation(_Part):
    id: Id
    account: Account


class Repository(_Part):
    id: Id
    full_name: FullName


# ---- events -------------------------------------------------------------------------------
class PingEvent(_Part):
    zen: str | None = None
    hook_id: int | None = None


class PushEvent(_Part):
    ref: Annotated[str, Field(min_length=1, max_length=1024)]
    before: Sha
    after: Sha
    deleted: bool = False
    repository: Repository
    installation: InstallationRef | None = None

    @property
    def branch(self) -> str | None:
        """The branch pushed to; None for tags and other refs."""
        prefix = "refs/heads/"
        return self.ref[len(prefix) :] if self.ref.startswith(prefix) else None

    @property
    def branch_deleted(self) -> bool:
        return self.deleted or self.after == ZERO_SHA


class PullRequestHead(_Part):
    ref: Annotated[str, Field(min_length=1, max_length=255)]
    sha: Sha
    repo: Repository | None  # None when the fork was deleted


class PullRequestBase(_Part):
    ref: Annotated[str, Field(min_length=1, max_length=255)]
    repo: Repository


class PullRequest(_Part):
    number: Id
    head: PullRequestHead
    base: PullRequestBase


class PullRequestEvent(_Part):
    action: Name
    number: Id
    pull_request: PullRequest
    repository: Repository
    installation: InstallationRef | None = None


class InstallationEvent(_Part):
    action: Name
    installation: Installation
    repositories: list[Repository] | None = None


class InstallationRepositoriesEvent(_Part):
    action: Name
    installation: Installation
    repositories_added: list[Repository] = []
    repositories_removed: list[Repository] = []


class RepositoryEvent(_Part):
    action: Name
    repository: Repository
    installation: InstallationRef | None = None


EVENTS: dict[str, type[_Part]] = {
    "ping": PingEvent,
    "push": PushEvent,
    "pull_request": PullRequestEvent,
    "installation": InstallationEvent,
    "installation_repositories": InstallationRepositoriesEvent,
    "repository": RepositoryEvent,
}


# ---- API ------------------------------------------------------------------------------------
class RepositoryRead(BaseModel):
    id: int
    full_name: str
    private: bool
    default_branch: str | None
    installation_id: int
    html_url: str | None


class ConnectRepository(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repository: FullName


class InstallUrl(BaseModel):
    url: str


class WebhookAnswer(BaseModel):
    status: str  # queued|duplicate|ignored
    delivery: str | None = None
