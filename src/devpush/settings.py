"""The one Settings object: every DEVPUSH_* variable, with its default, read once and cached.

The README's configuration table is generated from the field descriptions here
(`devpush settings`), so a new variable is documented where it is declared.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEVPUSH_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        Path(".devpush"),
        description="Every embedded service and file lives under this directory.",
    )
    database_url: str | None = Field(
        None,
        description="External PostgreSQL URL (postgresql+asyncpg://...). Unset: embedded.",
    )
    redis_url: str | None = Field(None, description="External Redis URL. Unset: embedded.")
    app_port: int = Field(8000, description="The app's own port on loopback.")
    app_host: str = Field("127.0.0.1", description="The address the app binds to.")
    http_port: int = Field(8080, description="Traefik's HTTP entrypoint port.")
    http_host: str = Field("0.0.0.0", description="The address Traefik's entrypoints bind to.")
    https_port: int | None = Field(None, description="Traefik's HTTPS entrypoint (TLS mode).")
    traefik_api_port: int = Field(8081, description="Traefik's ping/API port (loopback).")
    embedded_db_port: int = Field(5544, description="Port of the embedded PostgreSQL.")
    embedded_redis_port: int = Field(6544, description="Port of the embedded Redis.")
    app_hostname: str = Field("localhost", description="The dashboard's host behind Traefik.")
    deploy_domain: str = Field(
        "localhost", description="Deployments are served at <alias>.<DEPLOY_DOMAIN>."
    )
    url_scheme: Literal["http", "https"] = Field("http", description="Scheme of public URLs.")
    admin_email: str = Field("admin@localhost", description="The first admin that `up` creates.")
    secret_key: str | None = Field(
        None,
        description="Signs sessions and links. Unset: generated once under the data dir.",
    )
    encryption_keys: str | None = Field(
        None,
        description="Comma-separated Fernet keys, newest first. Unset: generated under data dir.",
    )
    runtime: Literal["docker", "process"] | None = Field(
        None,
        description="Default runtime. Unset: docker when DOCKER_HOST is set, otherwise process.",
    )
    docker_host: str | None = Field(
        None, description="Docker/Podman API URL, e.g. unix:///run/podman/podman.sock."
    )
    runner_network: str = Field(
        "devpush_runner", description="Container network that deployments join."
    )
    runner_image: str = Field(
        "devpush-runner-python:3.12", description="Default runner image for the docker runtime."
    )
    allow_file_repos: bool = Field(
        False,
        description="Allow file:// repository URLs (read from the worker's disk). `devpush up` "
        "turns this on for its single-machine platform unless set.",
    )
    allow_unsandboxed: bool = Field(
        False, description="Let the process runtime run apps without bubblewrap."
    )
    build_timeout: float = Field(600, description="Seconds a build may take.")
    deploy_timeout: float = Field(120, description="Seconds from deploy start to ready.")
    job_timeout: float = Field(900, description="Seconds any worker job may run.")
    probe_min_interval: float = Field(0.05, description="First readiness probe backoff (s).")
    probe_max_interval: float = Field(1.0, description="Largest readiness probe backoff (s).")
    monitor_mode: Literal["backoff", "poll"] = Field(
        "backoff",
        description="backoff: probe at once, then 50 ms up to 1 s; poll: a fixed ticker of "
        "PROBE_MAX_INTERVAL, as the original design (for comparison).",
    )
    reconcile_interval: float = Field(15, description="Seconds between monitor reconciliations.")
    default_memory_mb: int = Field(512, description="Memory limit of a deployment (MiB).")
    default_cpus: float = Field(1.0, description="CPU limit of a deployment.")
    default_pids: int = Field(512, description="Process limit of a deployment.")
    log_retention_days: int = Field(30, description="Days log lines are kept.")
    log_level: str = Field("INFO", description="Platform log level.")
    acme_email: str | None = Field(None, description="ACME account email (TLS mode).")
    cert_resolver: str | None = Field(
        None, description="Traefik cert resolver name for routes; unset in embedded mode."
    )
    verify_domains: bool = Field(
        True,
        description="Require a DNS TXT record before serving a custom domain. Off: trust "
        "the project's admins (a single-user machine).",
    )
    dns_nameserver: str | None = Field(
        None, description="host[:port] of the DNS server for domain checks. Unset: system."
    )
    github_app_id: str | None = Field(None, description="GitHub App id.")
    github_app_private_key: str | None = Field(None, description="GitHub App private key (PEM).")
    github_webhook_secret: str | None = Field(None, description="GitHub webhook secret.")
    github_app_slug: str | None = Field(None, description="GitHub App slug (its install link).")
    github_api_url: str = Field("https://api.github.com", description="GitHub REST API base URL.")
    github_url: str = Field(
        "https://github.com",
        description="GitHub base URL: clone URLs are <this>/<owner>/<repo>.git.",
    )
    smtp_url: str | None = Field(None, description="smtp://user:pass@host:port for mail.")
    smtp_from: str = Field(
        "devpush <devpush@localhost>", description="The From address of the mail devpush sends."
    )
    github_client_id: str | None = Field(
        None, description="The GitHub App's OAuth client id: enables 'Sign in with GitHub'."
    )
    github_client_secret: str | None = Field(
        None, description="The GitHub App's OAuth client secret."
    )
    google_client_id: str | None = Field(
        None, description="Google OAuth client id: enables 'Sign in with Google' (OIDC)."
    )
    google_client_secret: str | None = Field(None, description="Google OAuth client secret.")
    google_discovery_url: str = Field(
        "https://accounts.google.com/.well-known/openid-configuration",
        description="Google's OpenID Connect discovery document.",
    )
    workers: int = Field(1, description="Number of app worker processes.")
    api_rate_limit: int = Field(
        1200, description="API requests a minute per token (or per address); 0 turns it off."
    )

    @property
    def data_path(self) -> Path:
        return self.data_dir.resolve()

    @property
    def traefik_dynamic_dir(self) -> Path:
        return self.data_path / "traefik" / "dynamic"

    @property
    def app_url(self) -> str:
        port = "" if self.http_port in (80, 443) else f":{self.http_port}"
        return f"{self.url_scheme}://{self.app_hostname}{port}"

    def deploy_url(self, label: str) -> str:
        port = "" if self.http_port in (80, 443) else f":{self.http_port}"
        return f"{self.url_scheme}://{label}.{self.deploy_domain}{port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
