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
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Addresses (or networks) whose X-Forwarded-For the app trusts: Traefik's "
        "own, which no app can use (process-runtime apps have their own network namespace).",
    )
    http_port: int = Field(8080, description="Traefik's HTTP entrypoint port.")
    http_host: str = Field("0.0.0.0", description="The address Traefik's entrypoints bind to.")
    https_port: int | None = Field(None, description="Traefik's HTTPS entrypoint (TLS mode).")
    traefik_api_port: int = Field(8081, description="Traefik's ping/API port (loopback).")
    metrics_interval: float = Field(
        10, ge=1, le=300, description="Seconds between two metrics samples of each instance."
    )
    metrics_token: str | None = Field(
        None,
        description="Bearer token that opens the platform's own /metrics (Prometheus format). "
        "Unset: /metrics answers 404.",
    )
    metrics_url: str | None = Field(
        None,
        description="Where the monitor scrapes Traefik's Prometheus metrics. Unset: "
        "<TRAEFIK_API_URL>/metrics.",
    )
    embedded_db_port: int = Field(5544, description="Port of the embedded PostgreSQL.")
    embedded_redis_port: int = Field(6544, description="Port of the embedded Redis.")
    databases_admin_url: str | None = Field(
        None,
        description="PostgreSQL URL (postgresql://user:password@host:port/postgres) of a "
        "superuser, or a role with CREATEDB and CREATEROLE, on the server that holds projects' "
        "managed databases. Unset: the embedded PostgreSQL under `devpush up`; compose mode "
        "needs it for managed PostgreSQL.",
    )
    databases_host: str | None = Field(
        None,
        description="The host apps connect to for their managed PostgreSQL. Unset: the "
        "runtime's address of this machine (embedded PostgreSQL), else the admin URL's host.",
    )
    database_backup_timeout: int = Field(
        900, ge=10, description="Seconds a managed database's backup or restore may take."
    )
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
    runtime: Literal["docker", "process", "swarm"] | None = Field(
        None,
        description="Default runtime. Unset: docker when DOCKER_HOST is set, otherwise process.",
    )
    swarm_host: str | None = Field(
        None,
        description="Docker Engine API URL of a swarm manager, for the swarm runtime (each "
        "deployment a service, its replicas the service's tasks), e.g. "
        "unix:///var/run/docker.sock. See docs/scale-out.md.",
    )
    swarm_registry: str | None = Field(
        None,
        description="Registry (host:port[/path]) the swarm runtime pushes built app images to, "
        "for every node to pull. Unset: a deployment's tasks run on the node that built it.",
    )
    docker_host: str | None = Field(
        None, description="Docker/Podman API URL, e.g. unix:///run/podman/podman.sock."
    )
    runner_network: str = Field(
        "devpush_runner", description="Container network that deployments join."
    )
    runner_image: str = Field(
        "devpush-runner-python:3.11", description="Default runner image for the docker runtime."
    )
    allow_file_repos: bool = Field(
        False,
        description="Allow file:// repository URLs (read from the worker's disk), for platform "
        "admins only and never inside the data directory. Off unless set, `devpush up` too.",
    )
    allow_unsandboxed: bool = Field(
        False, description="Let the process runtime run apps without bubblewrap."
    )
    notifications_allow_private: bool = Field(
        False,
        description="Let notification URLs (webhook, Slack, Discord) point at loopback, private "
        "or link-local addresses. Off: they reach public addresses only, checked at creation "
        "and again at each delivery.",
    )
    notifications_sweep_interval: float = Field(
        60,
        gt=0,
        description="Seconds between two sweeps of the notification deliveries by each "
        "monitor: an attempt whose worker stopped mid-way, or a delivery whose job was lost, "
        "is enqueued again under a new job id.",
    )
    notifications_lost_after: float = Field(
        120,
        ge=0,
        description="Seconds by which a sweep lets a delivery be late before it counts it "
        "lost: past its due time when no worker took its job, past the end of its attempt's "
        "claim (the job's 60 s timeout) when its worker stopped mid-attempt.",
    )
    network_isolation: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Give each process-runtime instance its own network namespace, so apps "
        "reach the internet but not the host's services, private networks or each other. "
        "auto: when the worker is root with `ip` and `nft` (apt-get install nftables "
        "iproute2), else the host network with a warning; on: refuse to start apps without "
        "them; off: the host network.",
    )
    instance_subnet: str = Field(
        "10.213.0.0/16",
        description="Addresses of isolated process-runtime instances; the first is the host's "
        "end of the devpush0 bridge.",
    )
    sandbox_uid_base: int = Field(
        200000,
        ge=1,
        description="First uid (and gid) of the range the process runtime gives projects, one "
        "each, when the worker is root; no user, group or subuid/subgid range may use any of it.",
    )
    sandbox_uid_count: int = Field(
        100000, ge=1, description="How many uids the process runtime's range holds."
    )
    build_timeout: float = Field(600, description="Seconds a build may take.")
    build_memory_mb: int = Field(
        2048, ge=64, description="Memory limit of a build (MiB), separate from the app's."
    )
    build_cpus: float | None = Field(
        None, gt=0, description="CPU limit of a build; unset: the app's CPU limit."
    )
    build_min_free_mb: int = Field(
        1024,
        ge=0,
        description="A build is stopped when the data directory's disk has less free space "
        "(MiB), before the database and the other apps run out of it.",
    )
    build_cache_dir: Path | None = Field(
        None,
        description="Package caches of builds on the process runtime (uv, npm, yarn, pnpm, "
        "corepack), one directory per project; default DATA_DIR/cache/builds.",
    )
    build_env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment for every build and app, as JSON, e.g. a package mirror: "
        '{"UV_INDEX_URL": "...", "npm_config_registry": "..."}. Project env vars override it.',
    )
    python_interpreters: list[Path] = Field(
        default_factory=list,
        description="Extra Python installations the process runtime offers to builds, as a JSON "
        'list of prefixes holding bin/python3.X, e.g. ["/opt/python/3.12"]; bound read-only '
        "into the sandbox. /usr/bin and /usr/local/bin are always searched.",
    )
    python_downloads: bool = Field(
        False,
        description="Let the process runtime install a CPython that an app asks for and the "
        "host lacks, with `uv python install` (honours UV_PYTHON_INSTALL_MIRROR). Needs "
        "access to the download host or the mirror.",
    )
    build_ca_bundle: Path | None = Field(
        Path("/etc/ssl/certs/ca-certificates.crt"),
        description="CA certificates that builds trust for outbound HTTPS (package registries "
        "behind a TLS-inspecting proxy too); placed at /devpush/ca.crt in every instance.",
    )
    deploy_timeout: float = Field(120, description="Seconds from deploy start to ready.")
    job_timeout: float = Field(900, description="Seconds any worker job may run.")
    drain_seconds: float = Field(
        10,
        ge=0,
        description="Grace period of a retired or canceled instance: once its route is gone "
        "it gets SIGTERM, so that the app finishes the requests already sent to it, and "
        "SIGKILL only if it is still running this many seconds later.",
    )
    probe_min_interval: float = Field(0.05, description="First readiness probe backoff (s).")
    probe_max_interval: float = Field(1.0, description="Largest readiness probe backoff (s).")
    monitor_mode: Literal["backoff", "poll"] = Field(
        "backoff",
        description="backoff: probe at once, then 50 ms up to 1 s; poll: a fixed ticker of "
        "PROBE_MAX_INTERVAL, as the original design (for comparison).",
    )
    reconcile_interval: float = Field(15, description="Seconds between monitor reconciliations.")
    worker_colour: Literal["", "blue", "green"] = Field(
        "",
        description="The worker's colour under compose (set by compose/base.yml): each colour "
        "writes and checks its own health key in Redis, so an update tells them apart.",
    )
    restart_max_crashes: int = Field(
        5,
        ge=1,
        description="Exits of a live app within RESTART_WINDOW after which it is marked "
        "crashed (its route stays pulled) instead of restarted again.",
    )
    restart_window: float = Field(
        600, gt=0, description="Seconds over which a live app's exits are counted."
    )
    restart_backoff_min: float = Field(
        1.0, ge=0, description="Seconds before the first restart of an app that exited."
    )
    restart_backoff_max: float = Field(
        30.0, ge=0, description="Largest wait before a restart (it doubles after each exit)."
    )
    crash_log_lines: int = Field(
        20, ge=0, description="Last log lines kept with a crashed deployment."
    )
    default_memory_mb: int = Field(512, description="Memory limit of a deployment (MiB).")
    default_cpus: float = Field(1.0, description="CPU limit of a deployment.")
    default_pids: int = Field(512, description="Process limit of a deployment.")
    log_retention_days: int = Field(30, description="Days log lines are kept.")
    log_level: str = Field("INFO", description="Platform log level.")
    acme_email: str | None = Field(None, description="ACME account email (TLS mode).")
    certificate_grace: float = Field(
        600,
        gt=0,
        description="Seconds after a custom domain is verified by which Traefik must hold its "
        "certificate (TLS mode); without one it is marked failed and `domain.certificate_failed` "
        "is sent.",
    )
    cert_resolver: str | None = Field(
        None, description="Traefik cert resolver name for routes; unset in embedded mode."
    )
    acme_ca_server: str | None = Field(
        None,
        description="ACME directory URL of the cert resolver (Traefik's caServer). Unset: "
        "Let's Encrypt's production directory.",
    )
    acme_ca_certificates: str | None = Field(
        None,
        description="PEM file(s) of the CAs Traefik trusts, instead of the system ones, for "
        "the ACME server's HTTPS (LEGO_CA_CERTIFICATES; colon-separated), e.g. a private or "
        "test CA such as Pebble's.",
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
    github_app_private_key: str | None = Field(
        None, description="GitHub App private key: the PEM itself, or the path of a PEM file."
    )
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
    app_db_pool_size: int = Field(
        20,
        description="Database connections each app worker keeps open (bursts add up to 10 "
        "more); requests beyond it pay for a new connection each.",
    )
    api_rate_limit: int = Field(
        1200, description="API requests a minute per token (or per address); 0 turns it off."
    )
    mode: Literal["embedded", "compose"] = Field(
        "embedded",
        description="compose: `devpush start|stop|restart|status|update` drive the compose "
        "stack in DEVPUSH_COMPOSE_DIR instead of an embedded `devpush up`.",
    )
    app_upstream: str | None = Field(
        None,
        description="URL Traefik sends the dashboard to. Unset: http://127.0.0.1:<APP_PORT>.",
    )
    traefik_api_url: str | None = Field(
        None,
        description="Where the worker reads Traefik's API to confirm a route is live. Unset: "
        "http://127.0.0.1:<TRAEFIK_API_PORT>.",
    )
    upgrades_dir: Path | None = Field(
        None,
        description="Directory of versioned upgrade steps (X.Y.Z.json, X.Y.Z.sh) that "
        "`devpush migrate` runs once each. Unset: the steps shipped with devpush.",
    )
    upgrade_step_timeout: float = Field(
        600, gt=0, description="Seconds an upgrade step's script may run."
    )
    compose_dir: Path = Field(
        Path("compose"), description="Directory of the compose files (compose mode)."
    )
    compose_cmd: str | None = Field(
        None,
        description="Compose command, e.g. `podman-compose`. Unset: `docker compose` when "
        "present, otherwise podman-compose.",
    )
    compose_project: str = Field("devpush", description="Compose project name (compose mode).")
    compose_env_file: Path = Field(
        Path(".env"), description="The .env file compose reads its values from."
    )
    compose_dev: bool = Field(
        False, description="Load override.dev.yml (loopback ports, debug) not override.yml."
    )
    cert_challenge_provider: Literal["default", "cloudflare", "route53"] = Field(
        "default", description="ACME challenge: which compose/ssl-<provider>.yml is loaded."
    )
    host_data_dir: Path = Field(
        Path("/var/lib/devpush"),
        description="Host directory mounted at /data in the compose containers.",
    )

    @property
    def data_path(self) -> Path:
        return self.data_dir.resolve()

    @property
    def traefik_dynamic_dir(self) -> Path:
        return self.data_path / "traefik" / "dynamic"

    @property
    def public_port(self) -> str:
        """The `:PORT` of public URLs, empty for the scheme's default port. With https, that
        is the HTTPS entrypoint (443 when unset), not the HTTP one that only redirects."""
        port = (self.https_port or 443) if self.url_scheme == "https" else self.http_port
        return "" if port in (80, 443) else f":{port}"

    @property
    def traefik_api(self) -> str:
        return (self.traefik_api_url or f"http://127.0.0.1:{self.traefik_api_port}").rstrip("/")

    @property
    def app_url(self) -> str:
        return f"{self.url_scheme}://{self.app_hostname}{self.public_port}"

    def deploy_url(self, label: str) -> str:
        return f"{self.url_scheme}://{label}.{self.deploy_domain}{self.public_port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
