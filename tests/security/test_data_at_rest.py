"""Secrets at rest on a real `devpush up --detach`, run as root like CI (issue #17).

The data directory starts as an older version left it (0755, a 0644 log, a 0755 repos/) under a
fresh 0700 parent. The platform then signs a user in without SMTP, invites someone, makes an API
token and deploys a push to its own git remote. Afterwards: nothing under the data directory is
readable by group or others, state.json is 0600, no log holds a one-time link, no parent of the
data directory gained o+x, the platform's database role is no superuser, and `devpush user link`
prints a working link (and fails in one line, with its exit code, when it cannot). Last, a
database left by an older version (the superuser owning everything, no `devpush` role) is
converted by the next `devpush up`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.e2e.apps import APP, git
from tests.e2e.platform import platform_env, start_platform, wait_health

pytestmark = pytest.mark.e2e

SIGN_IN_LINK = re.compile(r"https?://\S+/auth/link/([\w-]+)")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PG_USER = "devpush-pg"
SANDBOX_UIDS = range(200_000, 300_000)  # the process runtime's per-project uids (defaults)


@dataclass
class Detached:
    data: Path
    env: dict[str, str]
    up_output: str  # what `devpush up --detach` printed on the terminal
    ancestors: dict[Path, tuple[int, str]]  # mode and ACL of every parent, before `up`

    @property
    def app_url(self) -> str:
        return f"http://127.0.0.1:{self.env['DEVPUSH_APP_PORT']}"

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devpush", *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    def state(self) -> dict[str, object]:
        return dict(json.loads((self.data / "run" / "state.json").read_text()))

    def superuser_url(self) -> str:
        password = (self.data / "secrets" / "db_password").read_text().strip()
        return f"postgresql://postgres:{password}@127.0.0.1:{self.env['DEVPUSH_EMBEDDED_DB_PORT']}"


def acl(path: Path) -> str:
    """The ACL entries of `path` (getfacl without its comment lines)."""
    out = subprocess.run(
        ["getfacl", "--omit-header", "--absolute-names", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    return "\n".join(line for line in out.splitlines() if line.strip())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def an_older_data_dir(data: Path) -> None:
    """What a version before the private data directory left behind."""
    (data / "logs").mkdir(parents=True)
    (data / "repos").mkdir()
    (data / "logs" / "old.log").write_text("an old line\n")
    for path, bits in ((data, 0o755), (data / "repos", 0o755), (data / "logs", 0o755)):
        path.chmod(bits)
    (data / "logs" / "old.log").chmod(0o644)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Detached]:
    assert os.geteuid() == 0, "this suite runs as root, like CI"
    parent = tmp_path_factory.mktemp("at-rest")
    parent.chmod(0o700)
    data = parent / "data"
    an_older_data_dir(data)
    ancestors = {p: (mode(p), acl(p)) for p in [parent, *parent.parents]}
    env = platform_env(
        data,
        DEVPUSH_RUNTIME="process",
        DEVPUSH_DEPLOY_TIMEOUT="60",
        DEVPUSH_VERIFY_DOMAINS="false",
    )
    up = subprocess.run(
        [sys.executable, "-m", "devpush", "up", "--detach"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    running = Detached(data=data, env=env, up_output=up.stdout, ancestors=ancestors)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        wait_health(running.app_url, timeout=60)
        yield running
    finally:
        stopped = running.cli("stop")
        # 3: a test stopped it already ("not running", the CLI's documented no-platform code)
        assert stopped.returncode in (0, 1, 3), stopped.stdout + stopped.stderr


def sign_in_status(app_url: str, link: str) -> tuple[int, str]:
    path = "/auth/link/" + link.rsplit("/auth/link/", 1)[1]
    response = httpx.get(f"{app_url}{path}", follow_redirects=False, timeout=10)
    return response.status_code, response.headers.get("set-cookie", "")


def log_files(data: Path) -> list[Path]:
    """Every log the platform writes: <data>/logs/ and any *.log elsewhere (the instances')."""
    found = {p for p in (data / "logs").rglob("*") if p.is_file()}
    found |= {p for p in data.rglob("*.log") if p.is_file() and not p.is_symlink()}
    return sorted(found)


def test_up_detach_prints_the_first_link_on_the_terminal_only(platform: Detached) -> None:
    match = SIGN_IN_LINK.search(platform.up_output)
    assert match, platform.up_output
    status, cookie = sign_in_status(platform.app_url, match.group(0))
    assert status == 303 and "devpush_session" in cookie
    devpush_log = (platform.data / "logs" / "devpush.log").read_text()
    assert "devpush is up" in devpush_log and "/auth/link/" not in devpush_log
    assert match.group(1) not in devpush_log


def test_sign_in_invite_token_and_push_leave_no_link_in_any_log(
    platform: Detached, tmp_path: Path
) -> None:
    secrets: list[str] = []
    # a sign-in link asked for on the page, with no mail server: nothing is sent or logged
    with httpx.Client(base_url=platform.app_url, timeout=10) as browser:
        page = browser.get("/auth/sign-in")
        csrf = CSRF.search(page.text)
        assert csrf, page.text[:500]
        asked = browser.post(
            "/auth/sign-in", data={"email": "admin@localhost", "csrf_token": csrf.group(1)}
        )
        assert asked.status_code == 200, asked.text[:500]
    # an API token (printed once, on stdout) and an invite, whose link the inviter gets back
    token = platform.cli("token", "create", "--email", "admin@localhost").stdout.strip()
    assert token.startswith("dp_")
    secrets.append(token)
    api = httpx.Client(
        base_url=f"{platform.app_url}/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    team = api.get("/teams").json()[0]["slug"]
    invite = api.post(f"/teams/{team}/invites", json={"email": "carol@example.com"})
    assert invite.status_code == 201, invite.text
    url = invite.json()["url"]
    assert url and "/invites/" in url, invite.json()
    invite_token = url.rsplit("/invites/", 1)[1]
    secrets.append(invite_token)
    opened = httpx.get(f"{platform.app_url}/invites/{invite_token}", timeout=10)
    assert opened.status_code == 200 and "carol@example.com" in opened.text
    # tenant code under repos/: a push to the platform's own remote, deployed
    project = api.post(
        f"/teams/{team}/projects",
        json={"name": "private", "start_command": "python3 app.py", "health_path": "/"},
    )
    assert project.status_code == 201, project.text
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / "app.py").write_text(APP)
    (work / "body.txt").write_text("tenant code\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "first")
    remote = f"http://me:{token}@127.0.0.1:{platform.env['DEVPUSH_APP_PORT']}"
    pushed = subprocess.run(
        ["git", "push", f"{remote}/git/{team}/{project.json()['slug']}.git", "main"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
    )
    assert pushed.returncode == 0 and "Deployment succeeded" in pushed.stderr, pushed.stderr
    assert list((platform.data / "repos").glob("*.git"))

    time.sleep(1)  # the app's log handler has flushed
    app_log = (platform.data / "logs" / "app.log").read_text()
    assert "mail not sent" in app_log and "devpush user link admin@localhost" in app_log
    for path in log_files(platform.data):
        text = path.read_text(errors="replace")
        assert "/auth/link/" not in text, path
        assert "/invites/" not in text, path
        for secret in secrets:
            assert secret not in text, path


def test_user_link_prints_a_working_link_and_fails_in_one_line(platform: Detached) -> None:
    printed = platform.cli("user", "link", "admin@localhost")
    assert printed.returncode == 0, printed.stderr
    link = printed.stdout.strip()
    assert SIGN_IN_LINK.fullmatch(link), printed.stdout
    status, cookie = sign_in_status(platform.app_url, link)
    assert status == 303 and "devpush_session" in cookie
    assert sign_in_status(platform.app_url, link)[0] == 401  # once only
    as_option = platform.cli("user", "link", "--email", "admin@localhost")
    assert as_option.returncode == 0 and SIGN_IN_LINK.fullmatch(as_option.stdout.strip())

    unknown = platform.cli("user", "link", "nobody@example.com")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.strip().splitlines() == [
        "error: no user with email nobody@example.com; create one with `devpush user create`"
    ]
    elsewhere = platform.data.parent / "not-a-data-dir"
    missing = platform.cli("user", "link", "admin@localhost", DEVPUSH_DATA_DIR=str(elsewhere))
    assert missing.returncode == 3 and missing.stdout == ""
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0] == f"error: devpush is not running from {elsewhere}"
    assert lines[1].startswith("hint: start it with `devpush up --detach`")
    assert not elsewhere.exists()  # nothing was made on the way
    usage = platform.cli("user", "link")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    for failed in (unknown, missing, usage):
        assert "Traceback" not in failed.stderr


async def _role_facts(url: str) -> tuple[str, bool, str]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        who = await conn.fetchval("SELECT current_user")
        superuser = await conn.fetchval(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        )
        await conn.execute("CREATE TEMP TABLE probe (line text)")
        try:
            await conn.execute("COPY probe FROM PROGRAM 'id'")
            refused = ""
        except asyncpg.InsufficientPrivilegeError as exc:
            refused = str(exc)
        return str(who), bool(superuser), refused
    finally:
        await conn.close()


def test_the_platform_role_is_no_superuser(platform: Detached) -> None:
    url = str(platform.state()["database_url"])
    who, superuser, refused = asyncio.run(_role_facts(url))
    assert who == "devpush" and superuser is False
    assert "pg_execute_server_program" in refused or "permission denied" in refused
    superuser_password = (platform.data / "secrets" / "db_password").read_text().strip()
    state_text = (platform.data / "run" / "state.json").read_text()
    assert superuser_password not in state_text
    children = platform.state()["children"]
    assert isinstance(children, dict)
    for name in ("app", "worker", "monitor"):  # the children's environment: no superuser
        environ = Path(f"/proc/{children[name]}/environ").read_bytes()
        assert superuser_password.encode() not in environ, name


def test_the_data_directory_is_private(platform: Detached) -> None:
    data = platform.data
    # Nothing the platform wrote is readable by group or others (symlinks have no modes of
    # their own; the fetched toolchains stay readable on purpose, for the sandbox's user, and
    # this run fetched none). Files that sandboxed builds make in a project's cache and trees
    # are that project's uid's own (uv's lock is 0666 by uv's choice); they are checked below
    # to sit in that uid's 0700 directories, inside the 0700 data directory.
    assert not (data / "toolchains").exists()
    caches = data / "cache"
    for test in ("-o+r", "-g+r", "/o+w", "/g+w"):
        found = subprocess.run(
            ["find", str(data), "!", "-type", "l", "-perm", test],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()
        platform_made = [
            p
            for p in map(Path, found)
            if not (p.is_relative_to(caches) and p.stat().st_uid in SANDBOX_UIDS)
        ]
        assert platform_made == [], (test, platform_made)
    projects = {own.name: own.stat().st_uid for own in (caches / "trees").iterdir()}
    assert projects and all(uid in SANDBOX_UIDS for uid in projects.values()), projects
    for kind in ("builds", "trees"):  # one cache and one trees directory per project, its own
        assert {own.name: own.stat().st_uid for own in (caches / kind).iterdir()} == projects
        assert all(mode(own) == 0o700 for own in (caches / kind).iterdir()), kind
        assert mode(caches / kind) == 0o700 and (caches / kind).stat().st_uid == os.getuid()
    assert mode(caches) == 0o700
    others = subprocess.run(
        ["find", str(data), "!", "-type", "l", "!", "-path", f"{caches}/*", "-perm", "/o+rwx"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert others == "", others
    # The data directory is 0700; its only addition is PostgreSQL's user's traverse right (an
    # ACL entry, which `ls` shows as the group's x: the ACL mask).
    assert mode(data) in (0o700, 0o710)
    assert acl(data).splitlines() == [
        "user::rwx",
        f"user:{PG_USER}:--x",
        "group::---",
        "mask::--x",
        "other::---",
    ]
    assert mode(data / "run" / "state.json") == 0o600
    assert mode(data / "logs" / "old.log") == 0o600 and mode(data / "repos") == 0o700
    aof = [p for p in (data / "redis").rglob("*") if p.is_file() and "appendonly" in p.name]
    assert aof and all(mode(p) == 0o600 for p in aof), aof
    # No parent gained o+x (or anything else): a parent others can traverse (/tmp, /) is as it
    # was; one they cannot (the fresh 0700 parent, pytest's 0700 base) only got the same ACL
    # entry, which shows as the group's x when the group had none.
    for path, (before, entries) in platform.ancestors.items():
        if before & 0o001:
            assert (mode(path), acl(path)) == (before, entries), path
        else:
            assert mode(path) & 0o767 == before & 0o767, path
            assert f"user:{PG_USER}:--x" in acl(path).splitlines(), path
    assert mode(data.parent) == 0o710


async def _ownership(superuser_url: str) -> dict[str, object]:
    conn = await asyncpg.connect(f"{superuser_url}/devpush")
    try:
        return {
            "database": await conn.fetchval(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'devpush'"
            ),
            "schema": await conn.fetchval(
                "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'"
            ),
            "others": await conn.fetch(
                "SELECT c.relname, pg_get_userbyid(c.relowner) AS owner FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                "AND c.relkind IN ('r', 'p', 'S', 'v', 'm') "
                "AND pg_get_userbyid(c.relowner) <> 'devpush'"
            ),
            "tables": await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            ),
            "super": await conn.fetchval(
                "SELECT rolsuper OR rolcreatedb OR rolcreaterole FROM pg_roles "
                "WHERE rolname = 'devpush'"
            ),
        }
    finally:
        await conn.close()


async def _as_an_older_version(superuser_url: str) -> None:
    """The database as a version before the `devpush` role left it: the superuser owns it."""
    conn = await asyncpg.connect(f"{superuser_url}/devpush")
    try:
        await conn.execute("REASSIGN OWNED BY devpush TO postgres")
        await conn.execute("DROP OWNED BY devpush")
    finally:
        await conn.close()
    conn = await asyncpg.connect(f"{superuser_url}/postgres")
    try:
        await conn.execute("DROP ROLE devpush")
    finally:
        await conn.close()


def test_up_converts_a_database_of_an_older_version(platform: Detached) -> None:
    token = platform.cli("token", "create", "--email", "admin@localhost").stdout.strip()
    assert platform.cli("stop").returncode == 0
    # Only PostgreSQL, as the launcher starts it, to put the database back in the old shape.
    from devpush.embedded import services
    from devpush.settings import Settings

    settings = Settings(  # type: ignore[call-arg]
        data_dir=platform.data, embedded_db_port=int(platform.env["DEVPUSH_EMBEDDED_DB_PORT"])
    )
    spec = services.prepare_postgres(settings)
    db = subprocess.Popen(
        spec.argv, user=spec.user, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                asyncio.run(_as_an_older_version(platform.superuser_url()))
                break
            except (OSError, asyncpg.CannotConnectNowError):
                assert time.monotonic() < deadline, "PostgreSQL did not start"
                time.sleep(0.3)
        old = asyncio.run(_ownership(platform.superuser_url()))
        assert old["database"] == "postgres" and old["others"] and old["super"] is None
    finally:
        db.terminate()
        db.wait(60)

    again = start_platform(platform.data, env=platform.env, timeout=240)
    try:
        wait_health(again.app_url)
        teams = httpx.get(
            f"{again.app_url}/api/v1/teams", headers={"Authorization": f"Bearer {token}"}
        )
        assert teams.status_code == 200, teams.text
        converted = asyncio.run(_ownership(platform.superuser_url()))
        assert converted["database"] == "devpush" and converted["schema"] == "devpush"
        assert converted["others"] == [] and converted["tables"]
        assert converted["super"] is False
        assert not SIGN_IN_LINK.search((platform.data / "logs" / "app.log").read_text())
    finally:
        code = again.stop()
    assert code == 0, again.text()[-3000:]
