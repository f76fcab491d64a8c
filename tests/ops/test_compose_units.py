"""The compose driver's pure parts, without a running stack: which files load, which command
runs, how colours persist, how host paths map into the app container, and the dashboard
upstream that Traefik's platform file points at."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from devpush.compose.commands import container_path, parse_components
from devpush.compose.engine import Compose, ComposeError, _json_rows, compose_files
from devpush.compose.service import ComposeStack
from devpush.compose.update import other
from devpush.proxy.traefik import render_platform
from devpush.settings import Settings

pytestmark = pytest.mark.ops

COMPOSE = Path(__file__).resolve().parents[2] / "compose"


def settings(tmp_path: Path, **values: object) -> Settings:
    base: dict[str, object] = {
        "compose_dir": COMPOSE,
        "host_data_dir": tmp_path / "data",
        "compose_env_file": tmp_path / ".env",
        "compose_cmd": "podman-compose",
    }
    return Settings(**{**base, **values})  # type: ignore[arg-type]


def stack(tmp_path: Path, **values: object) -> ComposeStack:
    s = settings(tmp_path, **values)
    return ComposeStack(s, Compose(settings=s, command=["podman-compose"], files=compose_files(s)))


@pytest.mark.parametrize(
    ("dev", "provider", "expected"),
    [
        (False, "default", ["base.yml", "override.yml", "ssl-default.yml"]),
        (True, "default", ["base.yml", "override.dev.yml", "ssl-default.yml"]),
        (False, "cloudflare", ["base.yml", "override.yml", "ssl-cloudflare.yml"]),
        (False, "route53", ["base.yml", "override.yml", "ssl-route53.yml"]),
    ],
)
def test_the_challenge_provider_and_mode_choose_the_files(
    tmp_path: Path, dev: bool, provider: str, expected: list[str]
) -> None:
    s = settings(tmp_path, compose_dev=dev, cert_challenge_provider=provider)
    assert [f.name for f in compose_files(s)] == expected


def test_a_missing_compose_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ComposeError, match="set DEVPUSH_COMPOSE_DIR"):
        compose_files(settings(tmp_path, compose_dir=tmp_path / "nowhere"))


def test_argv_names_project_files_and_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DEVPUSH_MODE=compose\n")
    s = settings(tmp_path, compose_project="acme")
    compose = Compose.from_settings(s)
    assert compose.command == ["podman-compose"]  # DEVPUSH_COMPOSE_CMD wins
    argv = compose.argv("up", "-d")
    assert argv[:3] == ["podman-compose", "-p", "acme"]
    assert argv[-4:] == ["--env-file", str((tmp_path / ".env").resolve()), "up", "-d"]


def test_colours_default_to_blue_and_persist(tmp_path: Path) -> None:
    st = stack(tmp_path)
    assert st.colours() == {"app": "blue", "worker": "blue"}
    assert st.service("app") == "app-blue" and st.service("traefik") == "traefik"
    st.save_colours({"app": "green", "worker": "blue"})
    assert stack(tmp_path).service("app") == "app-green"
    assert other("green") == "blue" and other("blue") == "green"
    st.state_file.write_text("{not json")
    assert st.colours() == {"app": "blue", "worker": "blue"}


def test_prepare_refuses_a_missing_env_key_before_touching_anything(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DEVPUSH_APP_HOSTNAME=example.com\n")
    with pytest.raises(ComposeError, match="DEVPUSH_DEPLOY_DOMAIN, DEVPUSH_SECRET_KEY"):
        stack(tmp_path).prepare()
    assert not (tmp_path / "data").exists()


def test_components_are_checked() -> None:
    assert parse_components("app, worker") == ["app", "worker"]
    assert parse_components("", default=("app",)) == ["app"]
    with pytest.raises(typer.Exit):
        parse_components("app,proxy")


def test_backup_paths_map_into_the_app_container(tmp_path: Path) -> None:
    st = stack(tmp_path)
    (tmp_path / "data" / "backups").mkdir(parents=True)
    inside = container_path(st, tmp_path / "data" / "backups" / "b.tar.gz")
    assert inside == "/data/backups/b.tar.gz"
    with pytest.raises(typer.Exit):
        container_path(st, tmp_path / "elsewhere.tar.gz")


def test_the_dashboard_upstream_is_configurable(tmp_path: Path) -> None:
    default = render_platform(settings(tmp_path, app_port=8123))
    assert default["http"]["services"]["devpush-app"]["loadBalancer"]["servers"] == [
        {"url": "http://127.0.0.1:8123"}
    ]
    green = render_platform(settings(tmp_path, app_upstream="http://app-green:8000"))
    assert green["http"]["services"]["devpush-app"]["loadBalancer"]["servers"] == [
        {"url": "http://app-green:8000"}
    ]


def test_engine_listings_parse_in_both_formats() -> None:
    podman = '[{"Id": "abc", "Names": ["x"], "State": "running", "Labels": {}}]'
    docker = '{"ID": "abc", "Names": "x", "State": "running", "Labels": "a=b"}\n'
    assert _json_rows(podman)[0]["Id"] == "abc"
    assert _json_rows(docker)[0]["ID"] == "abc"
    assert _json_rows("") == []
