"""API conventions as ASGI middleware: per-token rate limits and Idempotency-Key replay.

Bad input that no route should see: NUL bytes in URLs or bodies (PostgreSQL cannot store
them) get 422, and /api/v1 bodies over 2 MiB get 413.

Rate limits: a fixed one-minute window per bearer token (or per client address without one),
in Redis; over the limit, 429 with Retry-After. The same Redis call (one script, one round
trip) reads the credentials generation for bearer calls (api/credentials.py), which tells
auth/ whether its cached tokens may still be trusted.

Idempotency: a POST under /api/ carrying an Idempotency-Key is run once per (principal, key):
the bearer credentials or the signed session's user, never the client's address, and
anonymous calls are not replayed. A retry gets the stored answer (with
`Idempotent-Replayed: true`), except an answer marked `Cache-Control: no-store` (a new token,
a revealed secret), which is never stored: its retry gets 409. The same key with a different
request gets 422.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import orjson
from redis.commands.core import AsyncScript
from starlette.middleware.base import BaseHTTPMiddleware, DispatchFunction
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from devpush.api import credentials

IDEMPOTENCY_TTL = 24 * 3600
PENDING_TTL_MS = 120_000
MAX_BODY = 2 * 1024 * 1024
RATE_WINDOW = 60

# KEYS: the window's counter, the credentials generation. ARGV: the counter's lifetime in
# seconds (0: no rate limit, only the generation), a fresh generation to set if none is.
# Returns {count, generation}. One EVALSHA instead of MULTI/INCR/EXPIRE/EXEC plus a GET.
LIMIT_SCRIPT = """
local count = 0
if ARGV[1] ~= '0' then
  count = redis.call('INCR', KEYS[1])
  if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
end
local generation = redis.call('GET', KEYS[2])
if not generation then
  redis.call('SET', KEYS[2], ARGV[2])
  generation = ARGV[2]
end
return {count, generation}
"""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _json(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    body = b""
    more = True
    while more and len(body) <= MAX_BODY:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


def _principal(scope: Scope) -> str | None:
    """Who calls, for rate limits and replays: the bearer credentials, else the user of the
    signed session cookie (SessionMiddleware runs first); None for an anonymous call."""
    auth = _header(scope, b"authorization")
    if auth:
        return f"auth:{auth}"
    session = scope.get("session") or {}
    user_id = session.get("user_id") if isinstance(session, dict) else None
    return f"user:{user_id}" if isinstance(user_id, str) and user_id else None


def _replay(body: bytes) -> Receive:
    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


class HostScoped:
    """Run an `@app.middleware("http")`-style function only for requests whose Host header
    `matches`; every other request goes straight on. Starlette's BaseHTTPMiddleware costs a
    task and two memory streams per request, which was the largest middleware cost of an API
    call, for a function that only ever acts on deployment hostnames."""

    def __init__(
        self, app: ASGIApp, *, dispatch: DispatchFunction, matches: Callable[[Any, str], bool]
    ) -> None:
        self.app = app
        self.scoped = BaseHTTPMiddleware(app, dispatch=dispatch)
        self.matches = matches

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            platform = getattr(scope["app"].state, "platform", None)
            host = (_header(scope, b"host") or "").split(":")[0].lower()
            if platform is not None and self.matches(platform.settings, host):
                await self.scoped(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ApiConventions:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._script: AsyncScript | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        platform = getattr(scope["app"].state, "platform", None)
        if platform is None:
            await self.app(scope, receive, send)
            return
        principal = _principal(scope)
        client = scope.get("client") or ("?", 0)
        who = hashlib.sha256((principal or f"ip:{client[0]}").encode()).hexdigest()[:32]
        bearer = principal is not None and principal.startswith("auth:")
        if await self._limited(platform, scope, who, bearer, send):
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            await _json(send, 422, "invalid", "NUL bytes are not allowed in URLs")
            return
        body: bytes | None = None
        if scope["method"] in ("POST", "PUT", "PATCH") and scope["path"].startswith("/api/v1/"):
            body = await _read_body(receive)
            if len(body) > MAX_BODY:
                await _json(
                    send, 413, "too_large", f"request bodies are limited to {MAX_BODY} bytes"
                )
                return
            if b"\\u0000" in body or b"\x00" in body:
                await _json(send, 422, "invalid", "NUL characters are not allowed in the body")
                return
            receive = _replay(body)
        key = _header(scope, b"idempotency-key")
        # Replays are per principal: an anonymous call (no credentials) is never replayed.
        if scope["method"] == "POST" and key is not None and principal is not None:
            body = body if body is not None else await _read_body(receive)
            await self._idempotent(platform, scope, send, who, key, body)
            return
        await self.app(scope, receive, send)

    async def _limited(
        self, platform: Any, scope: Scope, who: str, bearer: bool, send: Send
    ) -> bool:
        """Count the call in its window (when limits are on) and, for a bearer call, put the
        credentials generation on the request's state; True when it was answered 429."""
        limit = platform.settings.api_rate_limit
        if not limit and not bearer:
            return False
        window = int(time.time() // RATE_WINDOW)
        counter = f"devpush:rl:{who}:{window}"
        lifetime = RATE_WINDOW + 1 if limit else 0
        script = self._script
        if script is None or script.registered_client is not platform.redis:
            script = self._script = platform.redis.register_script(LIMIT_SCRIPT)
        count, generation = await script(
            keys=[counter, credentials.GENERATION_KEY], args=[lifetime, credentials.fresh()]
        )
        if bearer:
            state = scope.setdefault("state", {})
            state[credentials.STATE] = (
                generation.decode() if isinstance(generation, bytes) else str(generation)
            )
        if not limit or count <= limit:
            return False
        retry = str(RATE_WINDOW - int(time.time()) % RATE_WINDOW)
        await _json(
            send,
            429,
            "rate_limited",
            f"more than {limit} requests a minute with these credentials; retry in {retry}s",
            [(b"retry-after", retry.encode())],
        )
        return True

    async def _idempotent(
        self, platform: Any, scope: Scope, send: Send, who: str, key: str, body: bytes
    ) -> None:
        if not key or len(key) > 255:
            await _json(send, 422, "invalid", "Idempotency-Key must be 1 to 255 characters")
            return
        fingerprint = hashlib.sha256(
            b"\0".join([scope["path"].encode(), scope.get("query_string", b""), body])
        ).hexdigest()
        slot = f"devpush:idem:{who}:{hashlib.sha256(key.encode()).hexdigest()}"
        pending = json.dumps({"state": "pending", "fingerprint": fingerprint})
        if not await platform.redis.set(slot, pending, nx=True, px=PENDING_TTL_MS):
            await self._replay(platform, slot, fingerprint, send)
            return
        captured: dict[str, Any] = {"status": 500, "headers": [], "body": b""}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = [
                    (k.decode("latin-1"), v.decode("latin-1"))
                    for k, v in message.get("headers", [])
                ]
            elif message["type"] == "http.response.body":
                captured["body"] += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, _replay(body), capture)
        finally:
            no_store = any(
                k.lower() == "cache-control" and "no-store" in v.lower()
                for k, v in captured["headers"]
            )
            if captured["status"] >= 500:
                await platform.redis.delete(slot)
            elif no_store:  # it holds a secret (a new token, a revealed value): never kept
                withheld = {"state": "withheld", "fingerprint": fingerprint}
                withheld["status"] = captured["status"]
                await platform.redis.set(slot, json.dumps(withheld), ex=IDEMPOTENCY_TTL)
            else:
                stored = {
                    "state": "done",
                    "fingerprint": fingerprint,
                    "status": captured["status"],
                    "headers": captured["headers"],
                    "body": base64.b64encode(captured["body"]).decode(),
                }
                await platform.redis.set(slot, json.dumps(stored), ex=IDEMPOTENCY_TTL)

    async def _replay(self, platform: Any, slot: str, fingerprint: str, send: Send) -> None:
        raw = await platform.redis.get(slot)
        stored: dict[str, Any] = (
            json.loads(raw) if raw else {"state": "pending", "fingerprint": fingerprint}
        )
        if stored["fingerprint"] != fingerprint:
            await _json(
                send,
                422,
                "idempotency_mismatch",
                "this Idempotency-Key was used for a different request; use a new key",
            )
            return
        if stored["state"] == "pending":
            await _json(
                send,
                409,
                "idempotency_in_progress",
                "a request with this Idempotency-Key is still running; retry shortly",
                [(b"retry-after", b"1")],
            )
            return
        if stored["state"] == "withheld":
            await _json(
                send,
                409,
                "idempotency_withheld",
                f"the request with this Idempotency-Key already succeeded (status "
                f"{stored['status']}), but its answer held a secret that devpush does not keep; "
                "look the result up, or send a new key to make another",
            )
            return
        headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in stored["headers"]
            if k.lower() != "content-length"
        ]
        payload = base64.b64decode(stored["body"])
        headers += [
            (b"content-length", str(len(payload)).encode()),
            (b"idempotent-replayed", b"true"),
        ]
        await send({"type": "http.response.start", "status": stored["status"], "headers": headers})
        await send({"type": "http.response.body", "body": payload})
