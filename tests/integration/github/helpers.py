"""Helpers for the git-source tests: a small test double of GitHub's REST API (it checks the
App JWT with the public key, independently of devpush's signing code), signed webhook
deliveries built from the real octokit payloads, and a project connected to the fixtures'
repository `Codertocat/Hello-World` whose code lives in a local bare repository."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from devpush.db import session_scope
from devpush.github.models import GithubInstallation
from devpush.platform import Platform
from devpush.projects import service as projects
from devpush.projects.models import Project
from devpush.projects.schemas import ProjectCreate
from devpush.settings import Settings
from tests.factories.auth import Account

# Real payloads from octokit/webhooks (MIT, see payloads/LICENSE.octokit-webhooks)
FIXTURES = Path(__file__).with_name("payloads")
SECRET = "test-webhook-secret"
APP_ID = "424242"
REPO_ID = 186853002  # Codertocat/Hello-World in the fixture payloads
REPO = "Codertocat/Hello-World"
INSTALLATION_ID = 1  # the installation the pull_request/push fixtures name
API = "https://api.github.com"


# ---- JWT check (independent of devpush's signing code) -----------------------------------
def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_jwt(token: str, public_key: rsa.RSAPublicKey) -> dict[str, Any]:
    """Check an App JWT as GitHub does: RS256 signature, iss, iat/exp window. Raises."""
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = json.loads(_b64(header_b64))
    assert header["alg"] == "RS256", header
    public_key.verify(
        _b64(signature_b64),
        f"{header_b64}.{payload_b64}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    claims: dict[str, Any] = json.loads(_b64(payload_b64))
    now = time.time()
    assert str(claims["iss"]) == APP_ID
    assert claims["iat"] <= now and claims["exp"] > now
    assert claims["exp"] - claims["iat"] <= 600, "GitHub refuses JWTs valid over 10 minutes"
    return claims


# ---- the GitHub double ---------------------------------------------------------------------
@dataclass
class GithubDouble:
    public_key: rsa.RSAPublicKey
    repos: list[dict[str, Any]]
    token_ttl: timedelta = timedelta(hours=1)
    installed_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    tokens: list[str] = field(default_factory=list)
    jwt_claims: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    comment_posts: int = 0
    comment_patches: int = 0
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(9001))

    def _token(self, request: httpx.Request) -> str:
        return request.headers.get("authorization", "").removeprefix("Bearer ")

    def _installation_token_ok(self, request: httpx.Request) -> bool:
        return self._token(request) in self.tokens

    def access_tokens(self, request: httpx.Request, installation_id: str) -> httpx.Response:
        try:
            self.jwt_claims.append(verify_jwt(self._token(request), self.public_key))
        except Exception as exc:
            message = f"A JSON web token could not be decoded ({exc})"
            return httpx.Response(401, json={"message": message})
        token = f"ghs_{uuid.uuid4().hex}"
        self.tokens.append(token)
        expires = (datetime.now(UTC) + self.token_ttl).strftime("%Y-%m-%dT%H:%M:%SZ")
        return httpx.Response(
            201,
            json={
                "token": token,
                "expires_at": expires,
                "permissions": {"contents": "read", "statuses": "write"},
                "repository_selection": "selected",
            },
        )

    def installation(self, request: httpx.Request, installation_id: str) -> httpx.Response:
        self.jwt_claims.append(verify_jwt(self._token(request), self.public_key))
        account = {"login": "Codertocat", "id": 21031067, "type": "User"}
        made = self.installed_at.strftime("%Y-%m-%dT%H:%M:%S.000+00:00")
        return httpx.Response(
            200, json={"id": int(installation_id), "account": account, "created_at": made}
        )

    def list_repos(self, request: httpx.Request) -> httpx.Response:
        if not self._installation_token_ok(request):
            return httpx.Response(401, json={"message": "Bad credentials"})
        page = int(request.url.params.get("page", "1"))
        per_page = int(request.url.params.get("per_page", "30"))
        chunk = self.repos[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(self.repos):
            headers["link"] = f'<{API}/installation/repositories?page={page + 1}>; rel="next"'
        return httpx.Response(
            200, json={"total_count": len(self.repos), "repositories": chunk}, headers=headers
        )

    def get_repo(self, request: httpx.Request, owner: str, repo: str) -> httpx.Response:
        if not self._installation_token_ok(request):
            return httpx.Response(401, json={"message": "Bad credentials"})
        for r in self.repos:
            if r["full_name"].lower() == f"{owner}/{repo}".lower():
                return httpx.Response(200, json=r)
        return httpx.Response(404, json={"message": "Not Found"})

    def set_status(self, request: httpx.Request, owner: str, repo: str, sha: str) -> httpx.Response:
        if not self._installation_token_ok(request):
            return httpx.Response(401, json={"message": "Bad credentials"})
        body = json.loads(request.content)
        self.statuses.append({"repo": f"{owner}/{repo}", "sha": sha, **body})
        return httpx.Response(201, json={"id": next(self._ids), **body})

    def create_comment(
        self, request: httpx.Request, owner: str, repo: str, number: str
    ) -> httpx.Response:
        if not self._installation_token_ok(request):
            return httpx.Response(401, json={"message": "Bad credentials"})
        self.comment_posts += 1
        comment_id = next(self._ids)
        body = json.loads(request.content)["body"]
        self.comments[comment_id] = {"issue": int(number), "body": body}
        return httpx.Response(201, json={"id": comment_id, "body": body})

    def update_comment(
        self, request: httpx.Request, owner: str, repo: str, comment_id: str
    ) -> httpx.Response:
        if not self._installation_token_ok(request):
            return httpx.Response(401, json={"message": "Bad credentials"})
        if int(comment_id) not in self.comments:
            return httpx.Response(404, json={"message": "Not Found"})
        self.comment_patches += 1
        body = json.loads(request.content)["body"]
        self.comments[int(comment_id)]["body"] = body
        return httpx.Response(200, json={"id": int(comment_id), "body": body})


def repo_json(repo_id: int, full_name: str, private: bool = False) -> dict[str, Any]:
    return {
        "id": repo_id,
        "full_name": full_name,
        "name": full_name.split("/")[1],
        "private": private,
        "default_branch": "main",
        "html_url": f"https://github.com/{full_name}",
    }


# ---- webhook deliveries ----------------------------------------------------------------------
def payload(name: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    data.update(changes)
    return data


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def deliver(
    client: httpx.AsyncClient,
    event: str,
    data: dict[str, Any] | bytes,
    *,
    delivery: str | None = None,
    signature: str | None = "auto",
) -> httpx.Response:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/test",
    }
    if signature == "auto":
        headers["X-Hub-Signature-256"] = sign(body)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return await client.post("/api/github/webhook", content=body, headers=headers)


# ---- a connected project with a local "GitHub" repository ---------------------------------
def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


@dataclass
class Connected:
    project_id: str
    slug: str
    work: Path  # a clone to commit in
    bare: Path  # what the GitHub clone URL points at

    def commit(self, branch: str, body: str) -> str:
        """Commit `body` on `branch` and publish it; returns the full sha."""
        existing = git(self.work, "branch", "--list", branch)
        git(self.work, "checkout", "-q", *(() if existing else ("-b",)), branch)
        (self.work / "body.txt").write_text(body + "\n")
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", f"body {body}")
        git(self.work, "push", "-q", "origin", f"HEAD:refs/heads/{branch}")
        return git(self.work, "rev-parse", "HEAD")


async def connect_project(
    platform: Platform, account: Account, name: str = "hello", **fields: Any
) -> Connected:
    base = Path(platform.settings.github_url.removeprefix("file://"))
    bare = base / f"{REPO}.git"
    if not bare.exists():
        bare.parent.mkdir(parents=True, exist_ok=True)
        git(base, "init", "-q", "--bare", "-b", "main", str(bare))
    work = base.parent / f"work-{name}"
    git(base.parent, "clone", "-q", str(bare), str(work))
    async with session_scope(platform.sessions) as session:
        if await session.get(GithubInstallation, INSTALLATION_ID) is None:
            session.add(
                GithubInstallation(
                    id=INSTALLATION_ID,
                    account_login="Codertocat",
                    account_type="User",
                    team_id=account.team_id,
                )
            )
        project = await projects.create_project(
            session=session,
            team_id=account.team_id,
            body=ProjectCreate(name=name, start_command="python3 app.py", **fields),
        )
        project.github_installation_id = INSTALLATION_ID
        project.github_repo_id = REPO_ID
        project.github_repo_full_name = REPO
        project.repo_url = f"{platform.settings.github_url}/{REPO}.git"
        result = Connected(project_id=project.id, slug=project.slug, work=work, bare=bare)
    return result


async def project_row(platform: Platform, project_id: str) -> Project:
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, project_id)
        assert project is not None
        return project


def github_settings(
    settings: Settings, key: rsa.RSAPrivateKey, tmp_path: Path, secret: str, **extra: object
) -> Settings:
    """Settings of a platform with the test GitHub App configured; repositories of the fake
    github.com live under tmp_path/github."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    (tmp_path / "github").mkdir()
    return settings.model_copy(
        update={
            "github_app_id": APP_ID,
            "github_app_private_key": pem,
            "github_webhook_secret": secret,
            "github_url": f"file://{tmp_path / 'github'}",
            "github_app_slug": "devpush-test",
            **extra,
        }
    )
