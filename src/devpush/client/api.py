"""A small HTTP client for the devpush API, turning its error bodies into one-line messages
with a hint and a documented exit code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from devpush.client.config import Credentials

# Exit codes (documented in the README): 0 ok, 1 the deployment failed or was canceled,
# 2 bad usage, 3 not signed in / token refused, 4 not found, 5 platform unreachable,
# 6 refused (conflict, validation, permission), 7 rate limited.
EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_REFUSED, EXIT_LIMITED = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
)


class ClientError(Exception):
    def __init__(self, message: str, hint: str | None = None, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.message, self.hint, self.code = message, hint, code


def _error(response: httpx.Response) -> ClientError:
    try:
        error = response.json()["error"]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {response.status_code}"
    status = response.status_code
    if status == 401:
        return ClientError(
            message, "log in again with `devpush login --url URL --token T`", EXIT_AUTH
        )
    if status == 404:
        return ClientError(
            message, "check the id, and that your token's team can see it", EXIT_NOT_FOUND
        )
    if status == 429:
        wait = response.headers.get("retry-after", "a few")
        return ClientError(message, f"wait {wait} seconds and retry", EXIT_LIMITED)
    if status == 403:
        return ClientError(message, "ask a team admin, or use a token with more scopes")
    return ClientError(message, None, EXIT_REFUSED if status < 500 else EXIT_UNREACHABLE)


class Api:
    def __init__(self, credentials: Credentials, timeout: float = 30) -> None:
        self.credentials = credentials
        self.http = httpx.Client(
            base_url=credentials.url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {credentials.token}", "User-Agent": "devpush-cli"},
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, f"/api/v1{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(
                f"cannot reach {self.credentials.url}: {exc}",
                "check the URL and that devpush is running",
                EXIT_UNREACHABLE,
            ) from None
        if response.status_code >= 400:
            raise _error(response)
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None, **headers: str) -> Any:
        return self.request("POST", path, json=body, headers=headers)

    def events(self, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Follow a server-sent event stream: yields (event type, data)."""
        data: list[str]
        try:
            with self.http.stream(
                "GET", f"/api/v1{path}", timeout=None, headers={"Accept": "text/event-stream"}
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                kind, data = "message", []
                for line in response.iter_lines():
                    if not line:
                        if data:
                            yield kind, json.loads("\n".join(data))
                        kind, data = "message", []
                    elif line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
        except httpx.HTTPError as exc:
            raise ClientError(f"the event stream broke: {exc}", None, EXIT_UNREACHABLE) from None
