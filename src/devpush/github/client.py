"""GitHub's REST API as the App sees it: the App JWT (RS256, signed with the App's private
key), installation access tokens, and the few endpoints devpush calls. Failures become the
devpush error tree: unreachable -> ServiceUnavailable, rejected App credentials -> ConfigError,
404 -> NotFound, anything else -> RuntimeFailure. Tokens never appear in errors or logs."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

from devpush.errors import (
    ConfigError,
    NotConfigured,
    NotFound,
    RuntimeFailure,
    ServiceUnavailable,
)
from devpush.settings import Settings

API_VERSION = "2022-11-28"
FULL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")
MAX_PAGES = 20


@dataclass(frozen=True)
class InstallationToken:
    token: str = field(repr=False)
    expires_at: datetime


def check_full_name(full_name: str) -> str:
    if not FULL_NAME.match(full_name) or ".." in full_name:
        raise NotFound(f"{full_name[:140]!r} is not a GitHub repository name (owner/name)")
    return full_name


def _private_key(settings: Settings) -> str:
    value = (settings.github_app_private_key or "").strip()
    if value and not value.startswith("-----BEGIN"):
        try:
            value = Path(value).expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"DEVPUSH_GITHUB_APP_PRIVATE_KEY is neither a PEM key nor a readable file: {exc}"
            ) from None
    return value


def app_jwt(settings: Settings, now: float | None = None) -> str:
    """The App's own credential: valid 9 minutes, issued a minute ago (clock drift)."""
    pem = _private_key(settings)
    if not settings.github_app_id or not pem:
        raise NotConfigured(
            "the GitHub App is not configured: set DEVPUSH_GITHUB_APP_ID and "
            "DEVPUSH_GITHUB_APP_PRIVATE_KEY (see docs/git-sources.md)"
        )
    try:
        key = RSAKey.import_key(pem)
    except (ValueError, TypeError):
        raise ConfigError("DEVPUSH_GITHUB_APP_PRIVATE_KEY is not an RSA private key") from None
    issued = int(now if now is not None else time.time())
    claims = {"iat": issued - 60, "exp": issued + 540, "iss": str(settings.github_app_id)}
    return jwt.encode({"alg": "RS256", "typ": "JWT"}, claims, key)


class GithubClient:
    """One short-lived HTTP client; each call names its credential (App JWT or a token)."""

    def __init__(self, settings: Settings, timeout: float = 10.0) -> None:
        self.settings = settings
        self.http = httpx.AsyncClient(
            base_url=settings.github_api_url.rstrip("/"),
            timeout=timeout,
            headers={
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "devpush",
            },
            follow_redirects=False,
        )

    async def __aenter__(self) -> GithubClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        bearer = token if token is not None else app_jwt(self.settings)
        try:
            response = await self.http.request(
                method,
                path,
                json=json,
                params=params,
                headers={"Authorization": f"Bearer {bearer}"},
            )
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"GitHub cannot be reached: {type(exc).__name__}") from None
        if response.is_success:
            return response
        message = _message(response)
        if response.status_code == 401 and token is None:
            raise ConfigError(
                "GitHub rejected the App's JWT: check DEVPUSH_GITHUB_APP_ID and "
                f"DEVPUSH_GITHUB_APP_PRIVATE_KEY ({message})"
            )
        if response.status_code == 404:
            raise NotFound(f"GitHub: {method} {path} not found, or the App cannot see it")
        raise RuntimeFailure(
            f"GitHub answered {response.status_code} to {method} {path}: {message}"
        )

    # ---- as the App ---------------------------------------------------------------------
    async def create_installation_token(self, installation_id: int) -> InstallationToken:
        response = await self._call(
            "POST", f"/app/installations/{int(installation_id)}/access_tokens"
        )
        data = response.json()
        try:
            expires = datetime.fromisoformat(str(data["expires_at"]).replace("Z", "+00:00"))
            return InstallationToken(token=str(data["token"]), expires_at=expires)
        except (KeyError, ValueError):
            raise RuntimeFailure("GitHub's installation token answer is malformed") from None

    async def get_installation(self, installation_id: int) -> dict[str, Any]:
        response = await self._call("GET", f"/app/installations/{int(installation_id)}")
        data: dict[str, Any] = response.json()
        return data

    # ---- as an installation ---------------------------------------------------------------
    async def list_repositories(self, token: str) -> list[dict[str, Any]]:
        """Every repository the installation may access (paged, 100 at a time)."""
        repos: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            response = await self._call(
                "GET",
                "/installation/repositories",
                token=token,
                params={"per_page": 100, "page": page},
            )
            batch = response.json().get("repositories") or []
            repos.extend(batch)
            if len(batch) < 100 or 'rel="next"' not in response.headers.get("link", ""):
                break
        return repos

    async def get_repository(self, token: str, full_name: str) -> dict[str, Any]:
        response = await self._call("GET", f"/repos/{check_full_name(full_name)}", token=token)
        data: dict[str, Any] = response.json()
        return data

    async def set_status(
        self,
        token: str,
        full_name: str,
        sha: str,
        *,
        state: str,
        target_url: str,
        description: str,
        context: str,
    ) -> None:
        if not re.fullmatch(r"[0-9a-f]{40,64}", sha):
            raise RuntimeFailure(f"cannot set a status on {sha[:70]!r}: not a full commit sha")
        await self._call(
            "POST",
            f"/repos/{check_full_name(full_name)}/statuses/{sha}",
            token=token,
            json={
                "state": state,
                "target_url": target_url,
                "description": description[:140],
                "context": context,
            },
        )

    async def create_comment(self, token: str, full_name: str, number: int, body: str) -> int:
        response = await self._call(
            "POST",
            f"/repos/{check_full_name(full_name)}/issues/{int(number)}/comments",
            token=token,
            json={"body": body},
        )
        return int(response.json()["id"])

    async def update_comment(self, token: str, full_name: str, comment_id: int, body: str) -> bool:
        """Edit our comment; False when it is gone (deleted by someone)."""
        try:
            await self._call(
                "PATCH",
                f"/repos/{check_full_name(full_name)}/issues/comments/{int(comment_id)}",
                token=token,
                json={"body": body},
            )
        except NotFound:
            return False
        return True


def _message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.reason_phrase
    message = data.get("message") if isinstance(data, dict) else None
    return str(message or response.reason_phrase)[:300]
