"""Secrets at rest: env vars (secret or not), repository credentials (token and SSH key), a
GitHub installation token, API tokens and deploy hook URLs never appear in plaintext in a
`pg_dump` of the database, in Redis, in any log record the platform wrote, or in any answer
that was not an explicit reveal. And rotating the encryption keys keeps every secret readable
with the new key alone."""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from sqlalchemy import select

from devpush import crypto, operations
from devpush.auth import service as auth
from devpush.db import session_scope
from devpush.deployments import flows
from devpush.deployments import service as deployments
from devpush.deployments.models import Deployment
from devpush.github import service as github_service
from devpush.github import webhooks
from devpush.github.models import GithubInstallation
from devpush.logsetup import JsonFormatter
from devpush.platform import Platform
from devpush.projects import env, repository
from devpush.projects import service as projects
from devpush.projects.models import Project
from devpush.projects.schemas import ProjectCreate
from devpush.settings import Settings, get_settings
from tests.factories.auth import Account, make_account
from tests.integration.github.helpers import GithubDouble, deliver, payload
from tests.security.world import CSRF, INSTALLATION_ID, REPO


def marker(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(12)}"


def pg_dump(database_url: str) -> str:
    """The whole database as SQL, through pgserver's pg_dump (or the system's)."""
    spec = importlib.util.find_spec("pgserver")
    bundled = (
        Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin" / "pg_dump"
        if spec and spec.submodule_search_locations
        else None
    )
    binary = str(bundled) if bundled and bundled.exists() else shutil.which("pg_dump")
    assert binary is not None, "pg_dump is missing: pgserver (a dependency) ships one"
    url = database_url.replace("postgresql+asyncpg://", "postgresql://")
    result = subprocess.run(
        [binary, "--no-owner", "--dbname", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "COPY public.env_vars" in result.stdout, "the dump has the data"
    return result.stdout


async def redis_dump(platform: Platform) -> bytes:
    """Every key and value in Redis (queues, streams, limits), as bytes."""
    chunks: list[bytes] = []
    redis: Any = platform.redis
    async for key in redis.scan_iter(count=500):
        chunks.append(key if isinstance(key, bytes) else str(key).encode())
        kind = await redis.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "string":
            value: Any = await redis.get(key)
        elif kind == "stream":
            value = await redis.xrange(key)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        elif kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "set":
            value = await redis.smembers(key)
        else:
            value = b""
        chunks.append(value if isinstance(value, bytes) else repr(value).encode())
    return b"\n".join(chunks)


@pytest.fixture
async def alice(platform: Platform) -> Account:
    return await make_account(platform, "alice@example.com")


async def signed_in(app: FastAPI, platform: Platform, user_id: str) -> httpx.AsyncClient:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
    async with session_scope(platform.sessions) as session:
        link = await auth.create_sign_in_link(session=session, user_id=user_id)
    assert (await http.get(f"/auth/link/{link}")).status_code == 303
    return http


async def connect_to_github(platform: Platform, project_id: str, team_id: str) -> None:
    async with session_scope(platform.sessions) as session:
        session.add(
            GithubInstallation(
                id=INSTALLATION_ID, account_login="Codertocat", account_type="User", team_id=team_id
            )
        )
        project = await session.get(Project, project_id)
        assert project is not None
        project.github_installation_id, project.github_repo_id = INSTALLATION_ID, 1
        project.github_repo_full_name = REPO
        project.repo_url = f"{platform.settings.github_url}/{REPO}.git"


async def test_secrets_stay_out_of_the_dump_redis_logs_and_answers(
    client: httpx.AsyncClient,
    app: FastAPI,
    platform: Platform,
    alice: Account,
    github: GithubDouble,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    values = {
        k: marker(k)
        for k in ("secret-env", "plain-env", "staged-env", "created-env", "repo-token", "ssh-key")
    }
    ssh_key = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        f"{values['ssh-key']}\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    answers: list[httpx.Response] = []  # none of these may show a secret
    h = alice.headers

    async def api(method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await client.request(method, f"/api/v1{path}", headers=h, **kwargs)
        assert response.is_success, (path, response.text)
        answers.append(response)
        return response

    shop = await api(
        "POST",
        f"/teams/{alice.team_slug}/projects",
        json={
            "name": "shop",
            "repo_url": "http://127.0.0.1:9/shop.git",  # refused at once: nothing listens
            "repo_credentials": {"username": "bot", "token": values["repo-token"]},
            "start_command": "python3 app.py",
            "env_vars": {"AT_CREATE": values["created-env"]},
            "environments": [{"name": "staging", "branch_pattern": "release/*"}],
        },
    )
    shop_id = shop.json()["id"]
    ops = await api(
        "POST",
        f"/teams/{alice.team_slug}/projects",
        json={
            "name": "ops",
            "repo_url": "ssh://git@127.0.0.1:9/ops.git",
            "repo_credentials": {"ssh_key": ssh_key, "known_hosts": "127.0.0.1 ssh-ed25519 AAAA"},
            "start_command": "python3 app.py",
        },
    )
    hub = await api("POST", f"/teams/{alice.team_slug}/projects", json={"name": "hub"})
    await connect_to_github(platform, hub.json()["id"], alice.team_id)
    secret_one = {"value": values["secret-env"], "secret": True}
    await api("PUT", f"/projects/{shop_id}/env/SECRET_ONE", json=secret_one)
    await api("PUT", f"/projects/{shop_id}/env/PLAIN_ONE", json={"value": values["plain-env"]})
    await api(
        "PUT",
        f"/projects/{shop_id}/env/STAGED",
        params={"environment": "staging"},
        json={"value": values["staged-env"], "secret": True},
    )
    # reveals show the value, and only reveals
    revealed = await client.post(f"/api/v1/projects/{shop_id}/env/SECRET_ONE/reveal", headers=h)
    assert revealed.json()["value"] == values["secret-env"]
    created = await client.post("/api/v1/tokens", json={"name": "ci"}, headers=h)
    api_token = created.json()["token"]
    hook = await client.post(f"/api/v1/projects/{shop_id}/deploy-hook", headers=h)
    hook_url = httpx.URL(hook.json()["url"])
    # the GitHub installation token, fetched and cached through the service
    installation_token = await github_service.installation_token(
        p=platform, installation_id=INSTALLATION_ID
    )
    assert installation_token in github.tokens

    # use what was made: deployments (env snapshots), the worker's fetch failing with the
    # credentials in hand, the new API token, the deploy hook, the GitHub repositories
    deployment = await api("POST", f"/projects/{shop_id}/deployments", json={})
    for project_id in (ops.json()["id"], hub.json()["id"]):
        await api("POST", f"/projects/{project_id}/deployments", json={"branch": "main"})
    for job in await platform.redis.queued_jobs():
        if job.function == "start_deployment":
            await flows.start_deployment(platform, job.args[0])
    failed = await api("GET", f"/deployments/{deployment.json()['id']}")
    assert failed.json()["conclusion"] == "failed" and failed.json()["error"]
    # paths that log: a mail without SMTP (to the log), a webhook and its job
    await api("POST", f"/teams/{alice.team_slug}/invites", json={"email": "carol@example.com"})
    assert (await deliver(client, "ping", payload("ping.payload.json"))).status_code == 202
    push = payload("push.with-new-branch.payload.json", ref="refs/heads/main", after="a" * 40)
    assert (await deliver(client, "push", push, delivery="d-1")).status_code == 202
    await webhooks.process(platform, "d-1")
    as_token = await client.get("/api/v1/user", headers={"Authorization": f"Bearer {api_token}"})
    assert as_token.status_code == 200
    answers.append(as_token)
    answers.append(await client.post(hook_url.path, params={"branch": "release/1"}))
    for path in (
        f"/projects/{shop_id}",
        f"/projects/{shop_id}/env",
        f"/projects/{shop_id}/git",
        f"/projects/{ops.json()['id']}/git",
        f"/projects/{shop_id}/deployments",
        f"/projects/{shop_id}/logs?limit=1000",
        f"/teams/{alice.team_slug}/audit",
        f"/github/repositories?team={alice.team_slug}",
        "/tokens",
    ):
        await api("GET", path)
    browser = await signed_in(app, platform, alice.user_id)
    try:
        page = await browser.get(f"/projects/{shop_id}/settings")
        assert page.status_code == 200 and "SECRET_ONE" in page.text
        answers.append(page)
        answers.append(await browser.get(f"/deployments/{deployment.json()['id']}"))
        match = CSRF.search(page.text)
        assert match
        shown = await browser.post(
            f"/projects/{shop_id}/env/reveal", data={"key": "PLAIN_ONE", "csrf_token": match[1]}
        )
        assert values["plain-env"] in shown.text  # the page's reveal, on request
    finally:
        await browser.aclose()

    hidden = [*values.values(), api_token, hook_url.path.rsplit("/", 1)[-1], installation_token]
    dump = pg_dump(database_url)
    stored = await redis_dump(platform)
    formatter = JsonFormatter()
    logged = "\n".join(
        formatter.format(r)
        for r in caplog.records
        if not (r.name == "httpx" and "http://localhost/" in r.getMessage())  # the test's client
    )
    assert any(r.name.startswith("devpush") for r in caplog.records), "nothing to look through"
    for secret in hidden:
        assert secret not in dump, f"{secret} is in the database dump"
        assert secret.encode() not in stored, f"{secret} is in Redis"
        assert secret not in logged, f"{secret} is in the logs"
        for answer in answers:
            shown_text = answer.text + str(answer.headers)
            assert secret not in shown_text, f"{secret} in {answer.request.url}"


# ---- key rotation --------------------------------------------------------------------------------
@pytest.fixture
def fresh_keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let a test change the platform's keys; the suite's own come back afterwards."""
    get_settings.cache_clear()
    crypto.get_fernet.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()
    crypto.get_fernet.cache_clear()


async def store_every_kind_of_secret(platform: Platform, team_id: str) -> dict[str, str]:
    """One of each encrypted column, made through the services; {what: plaintext}."""
    plain = {k: marker(k) for k in ("env", "snapshot", "token", "installation")}
    async with session_scope(platform.sessions) as session:
        project = await projects.create_project(
            session=session,
            team_id=team_id,
            body=ProjectCreate.model_validate(
                {
                    "name": "vault",
                    "repo_url": "https://git.example.com/vault.git",
                    "repo_credentials": {"token": plain["token"]},
                }
            ),
        )
        await env.set_var(
            session=session, project_id=project.id, key="API_KEY", value=plain["env"], secret=True
        )
        await env.set_var(
            session=session, project_id=project.id, key="SNAP", value=plain["snapshot"]
        )
        await deployments.create(
            session=session,
            settings=platform.settings,
            project=project,
            branch="main",
            trigger="api",
        )
        session.add(
            GithubInstallation(
                id=77,
                account_login="acme",
                account_type="Organization",
                token_enc=crypto.encrypt(plain["installation"]),
            )
        )
    return plain


async def read_every_secret(platform: Platform) -> dict[str, str]:
    """The plaintexts back, through the code that reads them."""
    async with session_scope(platform.sessions) as session:
        project = await session.scalar(select(Project).where(Project.name == "vault"))
        assert project is not None
        snapshot = await session.scalar(
            select(Deployment.env_enc).where(Deployment.project_id == project.id)
        )
        installation = await session.get(GithubInstallation, 77)
        assert snapshot and installation and installation.token_enc
        unsealed = repository.unseal(project.repo_credentials_enc)
        assert unsealed is not None
        return {
            "env": await env.reveal(session=session, project_id=project.id, key="API_KEY"),
            "snapshot": crypto.decrypt_json(snapshot)["SNAP"],
            "token": unsealed.token,
            "installation": crypto.decrypt(installation.token_enc),
        }


async def encrypted_tokens(platform: Platform) -> list[str]:
    out: list[str] = []
    async with session_scope(platform.sessions) as session:
        for model, column in operations._encrypted_columns():
            col = getattr(model, column)
            out.extend(await session.scalars(select(col).where(col.is_not(None))))
    assert len(out) >= 4
    return out


@pytest.mark.parametrize("held", ["environment", "key file"])
async def test_key_rotation_keeps_every_secret_readable(
    platform: Platform,
    alice: Account,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    fresh_keys: None,
    held: str,
) -> None:
    """`devpush keys rotate` (operations.rotate_keys): after it, every encrypted column opens
    with the new key alone, and the services read the same plaintexts as before."""
    old = Fernet.generate_key().decode()
    if held == "environment":
        monkeypatch.setenv("DEVPUSH_ENCRYPTION_KEYS", old)
    else:  # the default of `devpush up`: generated keys in <data dir>/secrets
        monkeypatch.delenv("DEVPUSH_ENCRYPTION_KEYS", raising=False)
        monkeypatch.setenv("DEVPUSH_DATA_DIR", str(settings.data_dir))
        crypto.write_keys(get_settings(), [old])
    crypto.get_fernet.cache_clear()
    plain = await store_every_kind_of_secret(platform, alice.team_id)
    before = await encrypted_tokens(platform)
    for token in before:
        Fernet(old.encode()).decrypt(token.encode())  # all under the old key so far

    if held == "environment":  # the operator puts the new key first, the old one after
        new = Fernet.generate_key().decode()
        monkeypatch.setenv("DEVPUSH_ENCRYPTION_KEYS", f"{new},{old}")
        get_settings.cache_clear()
        rotated = await operations.rotate_keys(
            settings.model_copy(update={"encryption_keys": f"{new},{old}"})
        )
    else:
        get_settings.cache_clear()
        rotated = await operations.rotate_keys(
            settings.model_copy(update={"encryption_keys": None})
        )
        keys = crypto.load_keys(get_settings())
        assert keys[1:] == [old] and len(keys) == 2
        new = keys[0]
        key_file = settings.data_path / "secrets" / "fernet_keys"
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert rotated == len(before)

    only_new = Fernet(new.encode())
    after = await encrypted_tokens(platform)
    for token in after:
        only_new.decrypt(token.encode())  # raises if anything stayed under the old key
    # and the platform, with the old key gone, still reads every secret
    if held == "environment":
        monkeypatch.setenv("DEVPUSH_ENCRYPTION_KEYS", new)
    else:
        crypto.write_keys(get_settings(), [new])
    get_settings.cache_clear()
    crypto.get_fernet.cache_clear()
    assert await read_every_secret(platform) == plain
    assert os.environ.get("DEVPUSH_ENCRYPTION_KEYS", "") in ("", new)


def keys_cli(settings: Settings, *args: str, keys: str | None) -> subprocess.CompletedProcess[str]:
    """`devpush keys ...` as an operator runs it, against the suite's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVPUSH_")}
    env.update(
        DEVPUSH_DATA_DIR=str(settings.data_dir),
        DEVPUSH_DATABASE_URL=str(settings.database_url),
        DEVPUSH_REDIS_URL=str(settings.redis_url),
    )
    if keys:
        env["DEVPUSH_ENCRYPTION_KEYS"] = keys
    return subprocess.run(
        [sys.executable, "-m", "devpush", "keys", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.parametrize("held", ["environment", "key file"])
async def test_keys_rotate_cli_says_what_it_did(
    platform: Platform,
    alice: Account,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    fresh_keys: None,
    held: str,
) -> None:
    """Issue 18.4: `devpush keys rotate` never claims a rotation it did not make. Keys in the
    environment: it refuses (exit 1, how to add a key, nothing changed) until a new key is put
    first, then re-encrypts every value under it and says how many."""
    old = Fernet.generate_key().decode()
    if held == "environment":
        monkeypatch.setenv("DEVPUSH_ENCRYPTION_KEYS", old)
    else:
        monkeypatch.delenv("DEVPUSH_ENCRYPTION_KEYS", raising=False)
        monkeypatch.setenv("DEVPUSH_DATA_DIR", str(settings.data_dir))
        crypto.write_keys(get_settings(), [old])
    crypto.get_fernet.cache_clear()
    await store_every_kind_of_secret(platform, alice.team_id)
    before = await encrypted_tokens(platform)

    if held == "environment":
        refused = keys_cli(settings, "rotate", keys=old)
        assert refused.returncode == 1 and refused.stdout == "", refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 2 and "nothing rotated" in lines[0], lines
        assert (
            "`devpush keys generate`" in lines[1] and "first in DEVPUSH_ENCRYPTION_KEYS" in lines[1]
        )
        assert await encrypted_tokens(platform) == before  # nothing changed
        generated = keys_cli(settings, "generate", keys=None)
        assert generated.returncode == 0
        new = generated.stdout.strip()
        Fernet(new.encode())  # a valid key
        done = keys_cli(settings, "rotate", keys=f"{new},{old}")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == (
            f"re-encrypted {len(before)} values under the first key of DEVPUSH_ENCRYPTION_KEYS"
        )
        again = keys_cli(settings, "rotate", keys=f"{new},{old}")
        assert again.returncode == 1 and "nothing rotated" in again.stderr  # truthful
    else:
        done = keys_cli(settings, "rotate", keys=None)
        assert done.returncode == 0, done.stderr
        keys = crypto.load_keys(get_settings())
        assert keys[1:] == [old] and len(keys) == 2
        new = keys[0]
        key_file = crypto.key_file(get_settings())
        assert done.stdout.strip().startswith(
            f"added a new key first in {key_file} and re-encrypted {len(before)} values under it"
        )
    only_new = Fernet(new.encode())
    for token in await encrypted_tokens(platform):
        only_new.decrypt(token.encode())  # every row under the new key alone
