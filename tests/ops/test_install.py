"""scripts/install.sh, run for real into temporary directories: the steps that need root and
change the machine (apt, the service user, systemctl) are switched off by its flags; the
copy, the venv (pip from PyPI, without dependencies), the data dir, the .env and the unit
file are the real thing."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from dotenv import dotenv_values

pytestmark = pytest.mark.ops

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install.sh"
SKIP_HOST_CHANGES = ["--no-packages", "--no-user", "--no-systemctl", "-y"]
SITE = ["--app-hostname", "devpush.example.com", "--deploy-domain", "apps.example.com"]


def run_install(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def dirs(base: Path) -> list[str]:
    return [
        "--prefix",
        str(base / "opt"),
        "--data-dir",
        str(base / "data"),
        "--systemd-dir",
        str(base / "systemd"),
    ]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    base = tmp_path_factory.mktemp("h4-install")
    result = run_install(
        *dirs(base),
        *SITE,
        "--email",
        "ops@example.com",
        *SKIP_HOST_CHANGES,
        # The real venv step, without the dependency tree (pip still fetches the build backend).
        "--pip-args",
        "--no-deps",
        "--python",
        sys.executable,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return base, result.stdout


def read_env(path: Path) -> dict[str, str | None]:
    return dict(dotenv_values(path))


def test_script_parses_and_is_shellcheck_clean() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], timeout=30).returncode == 0
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: run `bash scripts/test-setup.sh`"
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_script_downloads_nothing_itself() -> None:
    """No telemetry: apt-get and pip are the only network clients it runs."""
    text = SCRIPT.read_text()
    for tool in ("curl", "wget", "/dev/tcp", "urllib", "nc ", "http.client"):
        assert tool not in text, tool
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    urls = [line for line in code if re.search(r"https?://", line)]
    assert urls == [], urls


def test_help_documents_every_option() -> None:
    result = run_install("--help")
    assert result.returncode == 0
    parsed = set(re.findall(r"^\s+(--[a-z-]+)(?:\s*\|[^)]*)?\)", SCRIPT.read_text(), re.M))
    assert len(parsed) > 10, parsed
    for option in parsed:
        assert option in result.stdout, option
    assert "Usage:" in result.stdout


def test_env_has_valid_generated_keys(installed: tuple[Path, str]) -> None:
    base, _ = installed
    env_file = base / "opt" / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    env = read_env(env_file)
    assert env["DEVPUSH_MODE"] == "compose"
    assert env["DEVPUSH_APP_HOSTNAME"] == "devpush.example.com"
    assert env["DEVPUSH_DEPLOY_DOMAIN"] == "apps.example.com"
    assert env["DEVPUSH_URL_SCHEME"] == "https"
    assert env["DEVPUSH_ACME_EMAIL"] == "ops@example.com"
    assert env["DEVPUSH_CERT_CHALLENGE_PROVIDER"] == "default"
    assert env["DEVPUSH_HOST_DATA_DIR"] == str(base / "data")
    assert env["DEVPUSH_DOCKER_SOCKET"] == "/run/podman/podman.sock"
    key = env["DEVPUSH_ENCRYPTION_KEYS"]
    assert key
    token = Fernet(key.encode()).encrypt(b"secret")  # raises on a malformed key
    assert Fernet(key.encode()).decrypt(token) == b"secret"
    assert len(env["DEVPUSH_SECRET_KEY"] or "") >= 48
    passwords = [env["DEVPUSH_POSTGRES_PASSWORD"], env["DEVPUSH_REDIS_PASSWORD"]]
    for password in passwords:
        assert password and re.fullmatch(r"[0-9a-f]{48}", password), password
    assert passwords[0] != passwords[1]
    assert "CF_DNS_API_TOKEN" not in env and "AWS_ACCESS_KEY_ID" not in env


def test_env_is_what_the_compose_cli_reads(installed: tuple[Path, str]) -> None:
    """From the install dir, devpush's own Settings read the .env as a compose install, and
    every variable the compose stack requires is there."""
    base, _ = installed
    code = (
        "import json; from devpush.settings import Settings; "
        "from devpush.compose.service import REQUIRED_ENV; from dotenv import dotenv_values; "
        "s = Settings(); env = dotenv_values('.env'); "
        "print(json.dumps({'mode': s.mode, 'provider': s.cert_challenge_provider, "
        "'data': str(s.host_data_dir), 'compose_dir': str(s.compose_dir.resolve()), "
        "'app_url': s.app_url, 'missing': [k for k in REQUIRED_ENV if not env.get(k)]}))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVPUSH_")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=base / "opt",
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen == {
        "mode": "compose",
        "provider": "default",
        "data": str(base / "data"),
        "compose_dir": str(base / "opt" / "compose"),
        "app_url": "https://devpush.example.com",
        "missing": [],
    }


def test_checkout_venv_and_data_dir(installed: tuple[Path, str]) -> None:
    base, _ = installed
    prefix = base / "opt"
    assert (prefix / "compose" / "base.yml").is_file()
    assert (prefix / "deploy" / "devpush.service").is_file()
    assert not (prefix / ".venv").exists() and not (prefix / ".devpush").exists()
    devpush = prefix / "venv" / "bin" / "devpush"
    assert os.access(devpush, os.X_OK)
    assert os.access(prefix / "venv" / "bin" / "podman-compose", os.X_OK)
    imported = subprocess.run(
        [
            str(prefix / "venv" / "bin" / "python"),
            "-c",
            "import devpush, sys; print(devpush.__file__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 0 and str(prefix / "venv") in imported.stdout, imported.stderr
    for sub in ("traefik/dynamic", "traefik/acme"):
        assert (base / "data" / sub).is_dir(), sub
    if os.geteuid() == 0:
        assert (base / "data" / "traefik" / "dynamic").stat().st_uid == 10001


def test_unit_file(installed: tuple[Path, str]) -> None:
    base, _ = installed
    prefix = base / "opt"
    unit = base / "systemd" / "devpush.service"
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    service = parser["Service"]
    assert service["ExecStart"] == f"{prefix}/venv/bin/devpush start"
    assert service["ExecStop"] == f"{prefix}/venv/bin/devpush stop"
    assert service["WorkingDirectory"] == str(prefix)
    assert service["Type"] == "oneshot" and service["RemainAfterExit"] == "yes"
    assert "podman.socket" in parser["Unit"]["After"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"
    assert "@" not in unit.read_text().replace("devpush.service", "")
    analyze = shutil.which("systemd-analyze")
    if analyze:  # verify the real thing where systemd's tools exist
        result = subprocess.run(
            [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_second_run_keeps_env_and_unit(installed: tuple[Path, str]) -> None:
    base, _ = installed
    env_file = base / "opt" / ".env"
    unit = base / "systemd" / "devpush.service"
    before = env_file.read_bytes(), unit.read_bytes()
    result = run_install(
        *dirs(base),
        "--app-hostname",
        "other.example.com",
        "--deploy-domain",
        "other.example.com",
        "--email",
        "someone@example.com",
        *SKIP_HOST_CHANGES,
        "--no-venv",
    )
    assert result.returncode == 0, result.stderr
    assert "keeping the existing" in result.stdout
    assert (env_file.read_bytes(), unit.read_bytes()) == before
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_dns_provider_credentials_come_from_the_environment(tmp_path: Path) -> None:
    result = run_install(
        *dirs(tmp_path),
        *SITE,
        "--email",
        "ops@example.com",
        "--acme-provider",
        "cloudflare",
        "--engine",
        "docker",
        *SKIP_HOST_CHANGES,
        "--no-venv",
        "--smtp-url",
        "smtp://user:p#ss w0rd$@mail.example.com:587",
        env={"CF_DNS_API_TOKEN": "cf-token-h4"},
    )
    assert result.returncode == 0, result.stderr
    env = read_env(tmp_path / "opt" / ".env")
    assert env["DEVPUSH_CERT_CHALLENGE_PROVIDER"] == "cloudflare"
    assert env["CF_DNS_API_TOKEN"] == "cf-token-h4"
    assert env["DEVPUSH_SMTP_URL"] == "smtp://user:p#ss w0rd$@mail.example.com:587"
    assert env["DEVPUSH_DOCKER_SOCKET"] == "/var/run/docker.sock"
    assert "docker.service" in (tmp_path / "systemd" / "devpush.service").read_text()
    # The compose tool devpush drives reads the same values from it (quoting included).
    code = (
        "import subprocess, sys; from devpush.settings import Settings; "
        "from devpush.compose.engine import Compose; "
        "argv = Compose.from_settings(Settings()).argv('config'); "
        "r = subprocess.run(argv, capture_output=True, text=True, timeout=120); "
        "sys.stderr.write(r.stderr); print(r.stdout); sys.exit(r.returncode)"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVPUSH_")}
    config = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path / "opt",
        env={**clean, "DEVPUSH_COMPOSE_CMD": f"{Path(sys.executable).parent}/podman-compose"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert config.returncode == 0, config.stderr
    assert "DEVPUSH_SMTP_URL: smtp://user:p#ss w0rd$@mail.example.com:587" in config.stdout
    assert "CF_DNS_API_TOKEN: cf-token-h4" in config.stdout
    assert f"POSTGRES_PASSWORD: {env['DEVPUSH_POSTGRES_PASSWORD']}" in config.stdout
    # A re-run without the options (as after an update) keeps the engine and the data dir.
    again = run_install(
        "--prefix",
        str(tmp_path / "opt"),
        "--systemd-dir",
        str(tmp_path / "systemd"),
        *SKIP_HOST_CHANGES,
        "--no-venv",
    )
    assert again.returncode == 0, again.stderr
    assert "docker.service" in (tmp_path / "systemd" / "devpush.service").read_text()
    assert f"data: {tmp_path / 'data'})" in again.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frobnicate"], "unknown option '--frobnicate'"),
        ([*SITE, "--email", "ops@example.com", "--engine", "lxc"], "--engine must be"),
        ([*SITE, "--email", "ops@example.com", "--acme-provider", "gandi"], "--acme-provider"),
        (
            [
                "--app-hostname",
                "bad host!",
                "--deploy-domain",
                "a.example.com",
                "--email",
                "o@x.io",
            ],
            "is not a hostname",
        ),
        ([*SITE, "--email", "not-an-email"], "is not an email address"),
        ([*SITE], "missing the ACME account email"),
        ([*SITE, "--email", "o@example.com", "--smtp-url", "http://x"], "--smtp-url"),
        (
            [*SITE, "--email", "o@example.com", "--acme-provider", "route53"],
            "missing AWS_ACCESS_KEY_ID",
        ),
        (["--prefix"], "--prefix needs a value"),
        (
            [*SITE, "--email", "o@example.com", "--smtp-url", "smtp://u:it's@mail.example.com"],
            "--smtp-url must not contain a single quote",
        ),
    ],
)
def test_bad_options_fail_clearly_and_change_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    env = {k: "" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "CF_DNS_API_TOKEN")}
    result = run_install(*dirs(tmp_path), *args, *SKIP_HOST_CHANGES, "--no-venv", env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert result.stderr.startswith("install.sh: error:")
    assert list(tmp_path.iterdir()) == []


def test_relative_prefix_is_refused(tmp_path: Path) -> None:
    result = run_install(
        "--prefix", "relative/dir", *SITE, "--email", "o@example.com", *SKIP_HOST_CHANGES
    )
    assert result.returncode == 2 and "must be an absolute path" in result.stderr
    assert not Path("relative").exists()
