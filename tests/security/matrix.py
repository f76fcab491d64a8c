"""The machinery of the authorization matrix: what a case is, the expected outcome per role
(built by a few helpers that say the rule in words), the app's route table, and the runner.

An outcome is an HTTP status, or SIGN_IN: a redirect (303) to the sign-in page. Every answer
must also carry the security headers (api/security.py), whatever its status.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from tests.security.world import ROLES, TEAM_ROLES, WEBHOOK_SECRET, Caller, World

SIGN_IN = "sign-in"
SECURITY_HEADERS = (
    "content-security-policy",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
)
Outcome = int | str
Expect = dict[str, Outcome]
Params = Callable[[World, str], Awaitable[dict[str, str]]]
Body = Callable[[World, Caller, dict[str, str]], dict[str, Any]] | dict[str, Any] | None
RANK = {"member": 0, "admin": 1, "owner": 2}


# ---- expectations ------------------------------------------------------------------------------
def team_api(ok: int, least: str = "member") -> Expect:
    """A team A resource through the API: members from `least` up get `ok`, lower team roles
    403; callers outside team A (the platform admin too) 404; no credentials 401."""
    expect: Expect = {r: ok if RANK[r] >= RANK[least] else 403 for r in TEAM_ROLES}
    return expect | {"outsider": 404, "platform_admin": 404, "anonymous": 401}


def team_page(ok: int, least: str = "member") -> Expect:
    """The same rule on a page; signed-out callers are sent to sign in."""
    return team_api(ok, least) | {"anonymous": SIGN_IN}


def own_api(ok: int) -> Expect:
    """The caller's own things (account, tokens): every signed-in caller; 401 without."""
    expect: Expect = {r: ok for r in ROLES}
    return expect | {"anonymous": 401}


def own_page(ok: int) -> Expect:
    expect: Expect = {r: ok for r in ROLES}
    return expect | {"anonymous": SIGN_IN}


def admin_api(ok: int) -> Expect:
    """Platform administration: platform admins only (team owners are not)."""
    expect: Expect = {r: 403 for r in ROLES}
    return expect | {"platform_admin": ok, "anonymous": 401}


def admin_page(ok: int) -> Expect:
    expect: Expect = {r: 404 for r in ROLES}
    return expect | {"platform_admin": ok, "anonymous": SIGN_IN}


def public(status: int) -> Expect:
    """The same answer whoever calls: the route's credential is not the caller's identity
    (a signature, a secret URL, a signed state) or there is none."""
    return {r: status for r in ROLES}


def but(expect: Expect, **changes: Outcome) -> Expect:
    return expect | changes


# ---- cases ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One row of the matrix: a route of the app, how to call it, and who gets what.

    `via` is how each role calls: "api" (its bearer token), "page" (its browser session, with
    the CSRF token on unsafe methods), "git" (its token as the HTTP Basic password), "sse"
    (bearer, reading only the head of the stream), "webhook" (bearer, and the body signed
    with the webhook secret). `target` is the URL to call when it is not the route's path
    filled in; `params` adds path values to the world's defaults, made afresh for each role
    when the route uses them up. `fresh_caller` calls as a new user in the role's position
    (routes that end the caller's session or account)."""

    method: str
    path: str
    expect: Expect
    via: str = "api"
    target: str = ""
    params: Params | None = None
    query: str = ""
    body: Body = None
    fresh_caller: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def default_params(world: World) -> dict[str, str]:
    return {
        "team": world.team_slug,
        "project_id": world.project_id,
        "deployment_id": world.deployment_id,
        "domain_id": world.domain_id,
        "invite_id": world.invite_id,
        "token": world.invite_token,
        "key": world.env_key,
        "user_id": world.victim_id,
        "rule_id": world.rule_id,
        "job": "nightly",
    }


# ---- the route table -----------------------------------------------------------------------------
def route_keys(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path template) of every route the app serves (HEAD aside: Starlette adds it to
    every GET); a mounted app (the static files) as GET on its prefix."""
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, Mount):
            yield "GET", route.path
            continue
        assert context.path is not None, route
        for method in sorted(context.methods or ()):
            if method != "HEAD":
                yield method, context.path


# ---- running -------------------------------------------------------------------------------------
@dataclass
class Answer:
    status: int
    headers: httpx.Headers
    text: str


async def stream_head(app: FastAPI, path: str, headers: dict[str, str]) -> Answer:
    """GET `path` on the ASGI app and stop after the response head: an SSE stream never ends,
    and httpx's ASGITransport would wait for the whole body."""
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"localhost")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
    }
    head: dict[str, Any] = {}
    body = bytearray()
    started = asyncio.Event()
    disconnect = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            head.update(message)
            started.set()
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    task = asyncio.create_task(app(scope, receive, send))
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if head and not task.done():
        await asyncio.sleep(0.05)  # let a short error body arrive
    disconnect.set()
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(task, 5)
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert head, f"no response to GET {path}"
    pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in head.get("headers", [])]
    return Answer(head["status"], httpx.Headers(pairs), body.decode(errors="replace"))


async def call(
    world: World, case: Case, caller: Caller, path: str, body: Any, headers: dict[str, str]
) -> Answer:
    plain = world.callers["anonymous"].http  # no cookies of its own: only headers count
    if case.via == "sse":
        return await stream_head(world.app, path, headers | caller.bearer)
    if case.via == "git":
        if caller.token:
            basic = base64.b64encode(f"git:{caller.token}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        response = await plain.request(case.method, path, headers=headers, content=b"")
    elif case.via == "webhook":
        content = json.dumps(body).encode()
        digest = hmac.new(WEBHOOK_SECRET.encode(), content, hashlib.sha256).hexdigest()
        headers |= caller.bearer | {"X-Hub-Signature-256": f"sha256={digest}"}
        response = await plain.request(case.method, path, headers=headers, content=content)
    elif case.via == "page":
        data = dict(body or {})
        if case.method not in ("GET", "HEAD"):
            data["csrf_token"] = caller.csrf
        response = await caller.http.request(case.method, path, data=data or None, headers=headers)
    else:
        headers |= caller.bearer
        response = await plain.request(case.method, path, json=body, headers=headers)
    return Answer(response.status_code, response.headers, response.text)


def matches(expected: Outcome, answer: Answer) -> bool:
    if expected == SIGN_IN:
        return answer.status == 303 and answer.headers.get("location", "").startswith(
            "/auth/sign-in"
        )
    return answer.status == expected


async def run_case(
    world: World, case: Case, role: str, expected: Outcome | None = None, as_: Caller | None = None
) -> str | None:
    """Call the route as `role` (or as the caller `as_`, in that role's place); the mismatch
    described, or None when the outcome is `expected` (default: the case's)."""
    params = default_params(world)
    if case.params is not None:
        params |= await case.params(world, role)
    path = (case.target or case.path).format(**params)
    path += f"?{case.query.format(**params)}" if case.query else ""
    caller = as_ or (await world.fresh_caller(role) if case.fresh_caller else world.callers[role])
    body = case.body(world, caller, params) if callable(case.body) else case.body
    try:
        headers = {k: v.format(**params) for k, v in case.headers.items()}
        answer = await call(world, case, caller, path, body, headers)
    finally:
        if case.fresh_caller and as_ is None:
            await caller.http.aclose()
    expected = case.expect[role] if expected is None else expected
    missing = [h for h in SECURITY_HEADERS if h not in answer.headers]
    if missing:
        return f"{case.method} {case.path} as {role}: no {', '.join(missing)} header"
    if matches(expected, answer):
        return None
    got = f"{answer.status} {answer.headers.get('location', '')}".strip()
    who = f"{role} ({as_.role})" if as_ else role
    return (
        f"{case.method} {case.path} as {who}: expected {expected}, got {got}: "
        + " ".join(answer.text.split())[:200]
    )
