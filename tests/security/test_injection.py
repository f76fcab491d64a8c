"""Hostile input: branch names, commit messages, repository URLs, env var names and values,
domain names, names shown on pages, `../` paths and very long strings. Each gets a clean 4xx,
or is stored as given and shown HTML-escaped; nothing is ever executed (a marker file that
every payload tries to create stays absent). The fuzzers over the hostname sanitiser and the
webhook parser are in test_fuzz.py."""

from __future__ import annotations

import contextlib
import html
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from devpush.auth import service as auth
from devpush.db import session_scope, utcnow
from devpush.deployments import flows
from devpush.deployments.models import Deployment
from devpush.logs.store import NewLine, PostgresLogStore
from devpush.platform import Platform
from devpush.runtime.base import RuntimeSpec
from tests.factories.auth import Account, make_account
from tests.integration.github.helpers import deliver, git, payload
from tests.security.world import CSRF

SCRIPT = "<script>alert(1)</script>"


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


def shell_payloads(marker: Path) -> list[str]:
    """Ways a string could run `touch marker` if anything put it through a shell."""
    m = str(marker)
    return [
        f"$(touch {m})",
        f"`touch {m}`",
        f"; touch {m}",
        f"| touch {m}",
        f"&& touch {m}",
        f"\ntouch {m}\n",
        f"$(touch${{IFS}}{m})",
        f"x'\"; touch {m}; #",
        f"\x00touch {m}",
    ]


@pytest.fixture
async def alice(platform: Platform) -> Account:
    return await make_account(platform, "alice@example.com", admin=True)  # file:// repos


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> list[RuntimeSpec]:
    """What the worker hands the runtime, recorded instead of started (the runtimes have
    their own suites); everything before it (fetch, export, spec) runs for real."""
    specs: list[RuntimeSpec] = []

    async def record(p: Platform, deployment: Deployment, spec: RuntimeSpec) -> None:
        specs.append(spec)

    monkeypatch.setattr(flows, "_launch", record)
    return specs


async def run_start_jobs(platform: Platform) -> int:
    ran = 0
    for job in await platform.redis.queued_jobs():
        if job.function == "start_deployment":
            await flows.start_deployment(platform, job.args[0])
            ran += 1
    return ran


@contextlib.asynccontextmanager
async def signed_in(
    app: FastAPI, platform: Platform, user_id: str
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        async with session_scope(platform.sessions) as session:
            link = await auth.create_sign_in_link(session=session, user_id=user_id)
        assert (await http.get(f"/auth/link/{link}")).status_code == 303
        yield http


def assert_escaped(page: httpx.Response, value: str) -> None:
    """`value` appears on the page only HTML-escaped (and does appear)."""
    assert page.status_code == 200, page.text[:300]
    if html.escape(value) != value:
        assert value not in page.text, f"{value!r} unescaped on {page.request.url}"
    assert html.escape(value, quote=False) in page.text or html.escape(value) in page.text


def bare_repo(tmp_path: Path, branch: str, message: str) -> Path:
    """A local repository (outside the data dir) with one commit on `branch`."""
    bare = tmp_path / "origin.git"
    work = tmp_path / "work"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(tmp_path, "init", "-q", "-b", branch, str(work))
    (work / "app.py").write_text("print('hi')\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    git(work, "push", "-q", str(bare), f"HEAD:refs/heads/{branch}")
    return bare


# ---- branch names and commit messages --------------------------------------------------------
async def test_hostile_branch_and_commit_message_are_only_data(
    client: httpx.AsyncClient,
    app: FastAPI,
    platform: Platform,
    alice: Account,
    tmp_path: Path,
    marker: Path,
    launched: list[RuntimeSpec],
) -> None:
    """A branch git accepts but a shell would run, with a commit message full of shell and
    HTML, deployed for real up to the runtime: the branch and message reach the runtime only
    as env values, the hostname is DNS-safe, and the pages escape both."""
    branch = f"feat/$(touch${{IFS}}{marker})`id`;x"
    message = f"fix: {SCRIPT} {{{{7*7}}}} $(touch {marker}) `touch {marker}`\n\n${{jndi:x}}"
    bare = bare_repo(tmp_path, branch, message)
    created = await client.post(
        f"/api/v1/teams/{alice.team_slug}/projects",
        json={"name": "shop", "repo_url": f"file://{bare}", "start_command": "python3 app.py"},
        headers=alice.headers,
    )
    assert created.status_code == 201, created.text
    project_id = created.json()["id"]
    deploy = await client.post(
        f"/api/v1/projects/{project_id}/deployments", json={"branch": branch}, headers=alice.headers
    )
    assert deploy.status_code == 201, deploy.text
    assert await run_start_jobs(platform) == 1
    [spec] = launched
    assert spec.env["DEVPUSH_BRANCH"] == branch
    assert all(branch not in (c or "") for c in (spec.start_command, spec.build_command))
    shown = await client.get(f"/api/v1/deployments/{deploy.json()['id']}", headers=alice.headers)
    deployment = shown.json()
    assert deployment["branch"] == branch
    assert deployment["commit_message"].strip() == message.strip()
    for url in deployment["urls"].values():
        host = httpx.URL(url).host.split(".")[0]
        assert len(host) <= 63 and host.replace("-", "").isalnum() and host.islower(), host
    async with signed_in(app, platform, alice.user_id) as browser:
        page = await browser.get(f"/deployments/{deployment['id']}")
        assert SCRIPT not in page.text and html.escape(SCRIPT) in page.text
        assert "{{7*7}}" in page.text  # shown, not evaluated
        listing = await browser.get(f"/projects/{project_id}/deployments")
        assert SCRIPT not in listing.text
    assert not marker.exists()


async def test_invalid_branch_names_get_a_clean_4xx_everywhere(
    client: httpx.AsyncClient,
    app: FastAPI,
    platform: Platform,
    alice: Account,
    marker: Path,
) -> None:
    created = await client.post(
        f"/api/v1/teams/{alice.team_slug}/projects",
        json={"name": "shop", "start_command": "python3 app.py"},
        headers=alice.headers,
    )
    project_id = created.json()["id"]
    hook = await client.post(f"/api/v1/projects/{project_id}/deploy-hook", headers=alice.headers)
    hook_path = httpx.URL(hook.json()["url"]).path
    bad = [
        *(f"feat/{p}" for p in shell_payloads(marker) if any(c in p for c in "\n\x00 ")),
        "-oProxyCommand=x",
        "--upload-pack=touch",
        "../../etc/passwd",
        "refs/../../x",
        "a..b",
        "x" * 300,
        "main.lock",
        "@{-1}",
        "a b",
        "a\tb",
        "a*b",
        "a/.hidden",
        "",
    ]
    async with signed_in(app, platform, alice.user_id) as browser:
        csrf = CSRF.search((await browser.get(f"/projects/{project_id}")).text)
        assert csrf
        for branch in bad:
            api = await client.post(
                f"/api/v1/projects/{project_id}/deployments",
                json={"branch": branch},
                headers=alice.headers,
            )
            assert api.status_code == 422, (branch, api.text)
            if branch:  # (the hook and the page take an empty branch as the production one)
                hooked = await client.post(hook_path, params={"branch": branch})
                assert hooked.status_code == 422, (branch, hooked.text)
                page = await browser.post(
                    f"/projects/{project_id}/deploy",
                    data={"branch": branch, "csrf_token": csrf[1]},
                )
                assert page.status_code == 422, (branch, page.text[:200])
                assert "text/html" in page.headers["content-type"]
    async with session_scope(platform.sessions) as session:
        count = await session.scalar(select(func.count()).select_from(Deployment))
    assert count == 0
    assert not marker.exists()


# ---- repository URLs --------------------------------------------------------------------------
async def test_hostile_repository_urls_are_refused_or_inert(
    client: httpx.AsyncClient,
    app: FastAPI,
    platform: Platform,
    alice: Account,
    marker: Path,
    launched: list[RuntimeSpec],
) -> None:
    m = str(marker)
    data_dir = platform.settings.data_path
    refused = [
        f"ext::sh -c touch% {m}",
        f"--upload-pack=touch {m}",
        f"-u touch {m}",
        f"file:///tmp/x\n--upload-pack=touch {m}",
        f"file:///tmp/x;touch {m}",
        f"git@-oProxyCommand=touch:{m}",
        f"ssh://git@127.0.0.1/x -oProxyCommand=touch {m}",
        "https://127.0.0.1/x\x00y",
        f"file://{data_dir}/repos/other.git",  # another project's push remote
        f"file://{data_dir}/../data/secrets",
        "javascript:alert(1)",
        "https://" + "a" * 3000,
    ]
    inert = [
        f"ssh://-oProxyCommand=touch${{IFS}}{m}/x",
        f"http://127.0.0.1:9/$(touch${{IFS}}{m})",
        f"https://127.0.0.1:9/`touch${{IFS}}{m}`.git",
        f"ssh://git@127.0.0.1:9/;touch${{IFS}}{m}",
    ]
    for n, url in enumerate(refused + inert):
        response = await client.post(
            f"/api/v1/teams/{alice.team_slug}/projects",
            json={"name": f"p{n}", "repo_url": url, "start_command": "python3 app.py"},
            headers=alice.headers,
        )
        if url in refused:
            assert response.status_code == 422, (url, response.text)
            continue
        assert response.status_code == 201, (url, response.text)
        deployed = await client.post(
            f"/api/v1/projects/{response.json()['id']}/deployments",
            json={},
            headers=alice.headers,
        )
        assert deployed.status_code == 201
    assert await run_start_jobs(platform) == len(inert)
    assert launched == []  # every fetch failed, cleanly
    # the "new project" page reads a repository too (to detect presets)
    async with signed_in(app, platform, alice.user_id) as browser:
        csrf = CSRF.search((await browser.get(f"/t/{alice.team_slug}/new")).text)
        assert csrf
        for url in refused + inert:
            page = await browser.post(
                f"/t/{alice.team_slug}/new/detect",
                data={"repo_url": url, "production_branch": "main", "csrf_token": csrf[1]},
            )
            assert page.status_code == 200, (url, page.text[:200])
            assert "Could not read the repository" in page.text, url
        # nor may a page store a URL into the platform's own directory
        for url in (f"file://{data_dir}/repos/other.git", f"file://{data_dir}/secrets/x"):
            page = await browser.post(
                f"/t/{alice.team_slug}/new",
                data={"name": "sneaky", "repo_url": url, "csrf_token": csrf[1]},
            )
            assert page.status_code == 422, (url, page.text[:200])
    assert not marker.exists()


# ---- env vars ---------------------------------------------------------------------------------
async def test_env_var_names_are_checked_and_values_pass_through_untouched(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    tmp_path: Path,
    marker: Path,
    launched: list[RuntimeSpec],
) -> None:
    bare = bare_repo(tmp_path, "main", "init")
    project = await client.post(
        f"/api/v1/teams/{alice.team_slug}/projects",
        json={"name": "shop", "repo_url": f"file://{bare}", "start_command": "python3 app.py"},
        headers=alice.headers,
    )
    base = f"/api/v1/projects/{project.json()['id']}/env"
    bad_keys = ["A;B", "A B", "A-B", "1A", "A\nB", "A$(id)", "Ä", "A" * 300, "PATH=x", "A.B"]
    for key in bad_keys:
        response = await client.put(
            f"{base}/{quote(key, safe='')}", json={"value": "x"}, headers=alice.headers
        )
        assert response.status_code == 422, (key, response.text)
    for key in ("..%2F..%2Fetc", "%2E%2E", "a%2Fb"):
        response = await client.put(f"{base}/{key}", json={"value": "x"}, headers=alice.headers)
        assert response.status_code in (404, 405, 422), (key, response.status_code)
    values = {f"V{i}": v for i, v in enumerate([*shell_payloads(marker)[:-1], SCRIPT, "é\u202e"])}
    values["BIG"] = "y" * 65536
    for key, value in values.items():
        response = await client.put(
            f"{base}/{key}", json={"value": value, "secret": True}, headers=alice.headers
        )
        assert response.status_code == 200, (key, response.text)
        shown = await client.post(f"{base}/{key}/reveal", headers=alice.headers)
        assert shown.json()["value"] == value
    for value in ("a\x00b", "y" * 65537):
        response = await client.put(f"{base}/NUL", json={"value": value}, headers=alice.headers)
        assert response.status_code == 422
    deploy = f"/api/v1/projects/{project.json()['id']}/deployments"
    assert (await client.post(deploy, json={}, headers=alice.headers)).status_code == 201
    assert await run_start_jobs(platform) == 1
    [spec] = launched
    for key, value in values.items():
        assert spec.env[key] == value  # an env entry, as given: no quoting, no shell
    assert "V0" not in spec.start_command and "$(" not in spec.start_command
    assert not marker.exists()


# ---- domains ----------------------------------------------------------------------------------
async def test_hostile_domain_names_are_refused_and_never_reach_traefik(
    client: httpx.AsyncClient, platform: Platform, alice: Account, marker: Path
) -> None:
    project = await client.post(
        f"/api/v1/teams/{alice.team_slug}/projects",
        json={"name": "shop", "start_command": "python3 app.py"},
        headers=alice.headers,
    )
    base = f"/api/v1/projects/{project.json()['id']}/domains"
    ok = await client.post(base, json={"hostname": "shop.example.com"}, headers=alice.headers)
    assert ok.status_code == 201
    hostile = [
        *(f"a{p}.example.com" for p in shell_payloads(marker)),
        "evil.com`) || Host(`victim.com",
        "../../etc/passwd",
        "a\nb.example.com",
        "<script>.example.com",
        "a" * 64 + ".example.com",
        ("a" * 60 + ".") * 5 + "com",
        "localhost",
        "x.localhost",  # the platform's own deploy domain
        "-a.example.com",
        "a-.example.com",
        "*.example.com",
        "exa mple.com",
        "",
    ]
    for hostname in hostile:
        response = await client.post(base, json={"hostname": hostname}, headers=alice.headers)
        assert response.status_code == 422, (hostname, response.text)
    redirect = await client.post(
        base,
        json={"hostname": "www.example.com", "kind": "redirect", "redirect_to": "a`) || Host(`b"},
        headers=alice.headers,
    )
    assert redirect.status_code == 422
    listed = await client.get(base, headers=alice.headers)
    assert [d["hostname"] for d in listed.json()] == ["shop.example.com"]
    for path in platform.settings.traefik_dynamic_dir.glob("*"):
        text = path.read_text()
        assert "victim.com" not in text and "\n" + "touch" not in text and "$(" not in text
    assert not marker.exists()


# ---- names shown on pages ------------------------------------------------------------------------
async def test_names_and_log_lines_are_escaped_on_the_pages(
    client: httpx.AsyncClient, app: FastAPI, platform: Platform, alice: Account
) -> None:
    team_name = f"{SCRIPT}<img src=x onerror=alert(2)>"
    team = await client.post("/api/v1/teams", json={"name": team_name}, headers=alice.headers)
    assert team.status_code == 201
    slug = team.json()["slug"]
    project = await client.post(
        f"/api/v1/teams/{slug}/projects",
        json={"name": "shop", "start_command": "python3 app.py"},
        headers=alice.headers,
    )
    project_id = project.json()["id"]
    deployment = await client.post(
        f"/api/v1/projects/{project_id}/deployments", json={}, headers=alice.headers
    )
    line = f'{SCRIPT} "quoted" \x1b[31mred\x1b[0m'
    async with session_scope(platform.sessions) as session:
        await PostgresLogStore().append(
            session=session,
            deployment_id=deployment.json()["id"],
            lines=[NewLine(ts=utcnow(), stream="stdout", phase="runtime", message=line)],
        )
    async with signed_in(app, platform, alice.user_id) as browser:
        csrf = CSRF.search((await browser.get("/account")).text)
        assert csrf
        renamed = await browser.post(
            "/account/profile", data={"name": "<b onmouseover=alert(3)>me", "csrf_token": csrf[1]}
        )
        assert renamed.status_code == 303
        for path in (f"/t/{slug}", f"/t/{slug}/settings", "/account"):
            page = await browser.get(path)
            assert_escaped(page, team_name)
        members = await browser.get(f"/t/{slug}/settings")
        assert "<b onmouseover" not in members.text
        for query in ("", "?q=script", f"?q={quote(SCRIPT)}"):
            logs = await browser.get(f"/projects/{project_id}/logs{query}")
            assert logs.status_code == 200 and SCRIPT not in logs.text
            assert "&lt;script&gt;" in logs.text or "&lt;" in logs.text


# ---- ../ and very long strings -----------------------------------------------------------------
async def test_dot_dot_paths_and_huge_values_get_clean_answers(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    project = await client.post(
        f"/api/v1/teams/{alice.team_slug}/projects",
        json={"name": "shop", "start_command": "python3 app.py"},
        headers=alice.headers,
    )
    project_id = project.json()["id"]
    h = alice.headers
    for path in (
        "/static/..%2F..%2Fsettings.py",
        "/static/%2e%2e/%2e%2e/settings.py",
        "/static/..%5C..%5Csettings.py",
        f"/api/v1/projects/..%2F{project_id}",
        "/api/v1/deployments/..%2F..%2Fetc%2Fpasswd",
        f"/git/{alice.team_slug}/shop.git/..%2F..%2Fconfig",
        f"/git/{alice.team_slug}/..%2F..%2Fshop.git/info/refs?service=git-upload-pack",
    ):
        response = await client.get(path, headers=h)
        assert response.status_code in (401, 403, 404), (path, response.status_code)
        assert "settings" not in response.text.lower() or response.status_code == 404
        assert "[core]" not in response.text and "root:" not in response.text
    for body in (
        {"root_directory": "../../etc"},
        {"root_directory": "a/../../b"},
        {"health_path": "../x"},
        {"start_command": "x\ny"},
        {"name": "../etc"},
    ):
        response = await client.patch(f"/api/v1/projects/{project_id}", json=body, headers=h)
        assert response.status_code == 422, (body, response.text)
    huge = "x" * 100_000
    long = "x" * 20_000  # in a URL
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/api/v1/teams", {"json": {"name": huge}}),
        ("POST", f"/api/v1/projects/{project_id}/deployments", {"json": {"branch": huge}}),
        ("POST", f"/api/v1/projects/{project_id}/domains", {"json": {"hostname": huge}}),
        ("PATCH", f"/api/v1/projects/{project_id}", {"json": {"build_command": huge}}),
        ("PUT", f"/api/v1/projects/{project_id}/env/{'K' * 1000}", {"json": {"value": "v"}}),
        ("GET", f"/api/v1/projects/{project_id}/logs", {"params": {"q": long}}),
        ("GET", f"/api/v1/projects/{project_id}/deployments", {"params": {"branch": long}}),
        ("POST", "/api/v1/tokens", {"json": {"name": huge}}),
        ("POST", "/api/v1/teams", {"json": {"name": "x"}, "headers": {"Idempotency-Key": huge}}),
        ("POST", "/api/v1/teams", {"content": b"[" * 100_000}),  # nested past the limit
    ]
    for method, path, kwargs in cases:
        headers: dict[str, Any] = {**h, **kwargs.pop("headers", {})}
        response = await client.request(method, path, headers=headers, **kwargs)
        assert response.status_code in (400, 413, 422), (method, path, response.status_code)
        assert long not in response.text
    response = await deliver(client, "push", payload("push.payload.json"), delivery="d" * 5000)
    assert response.status_code == 422
    response = await client.get("/auth/sign-in", params={"next": long})
    assert response.status_code == 422 and long not in response.text


async def test_file_urls_are_refused_where_the_operator_disabled_them(
    client: httpx.AsyncClient, app: FastAPI, platform: Platform, alice: Account, tmp_path: Path
) -> None:
    bare = bare_repo(tmp_path, "main", "init")
    platform.settings.allow_file_repos = False
    created = await client.post(
        f"/api/v1/teams/{alice.team_slug}/projects",
        json={"name": "shop", "repo_url": f"file://{bare}"},
        headers=alice.headers,
    )
    assert created.status_code == 422
    async with signed_in(app, platform, alice.user_id) as browser:
        csrf = CSRF.search((await browser.get(f"/t/{alice.team_slug}/new")).text)
        assert csrf
        detect = await browser.post(
            f"/t/{alice.team_slug}/new/detect",
            data={"repo_url": f"file://{bare}", "production_branch": "main", "csrf_token": csrf[1]},
        )
        assert "file:// repositories are disabled" in detect.text
        page = await browser.post(
            f"/t/{alice.team_slug}/new",
            data={"name": "shop", "repo_url": f"file://{bare}", "csrf_token": csrf[1]},
        )
        assert page.status_code == 422 and "disabled" in page.text
