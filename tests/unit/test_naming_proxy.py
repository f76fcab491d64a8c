"""Pure pieces: hostname labels, branch patterns, Traefik rendering, levels."""

from __future__ import annotations

from pathlib import Path

import pytest

from devpush.errors import ConfigError
from devpush.logs.store import cut, parse_level
from devpush.naming import label, slugify
from devpush.projects.service import pattern_matches
from devpush.proxy import traefik
from devpush.settings import Settings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Feature/Login", "feature-login"),
        ("feat/$(touch /tmp/pwned)", "feat-touch-tmp-pwned"),
        ("../../etc", "etc"),
        ("", "x"),
        ("ünïcode", "n-code"),
        ("a" * 80, "a" * 40),
    ],
)
def test_slugify(value: str, expected: str) -> None:
    assert slugify(value) == expected


def test_long_labels_stay_dns_safe_and_distinct() -> None:
    a = label("shop", "branch", "x" * 100 + "a")
    b = label("shop", "branch", "x" * 100 + "b")
    assert len(a) <= 63 and len(b) <= 63 and a != b
    assert all(c.isalnum() or c == "-" for c in a)


@pytest.mark.parametrize(
    ("pattern", "branch", "matches"),
    [
        ("main", "main", True),
        ("main", "main2", False),
        ("release/*", "release/1.0", True),
        ("release/*", "release", False),
        ("*", "anything/at/all", True),
        ("feat-*-x", "feat-a-x", True),
        ("a.b", "axb", False),
    ],
)
def test_branch_patterns(pattern: str, branch: str, matches: bool) -> None:
    assert pattern_matches(pattern, branch) is matches


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, **kw)  # type: ignore[arg-type]


def test_render_project_routes_and_redirects(tmp_path: Path) -> None:
    routes = traefik.ProjectRoutes(
        slug="shop",
        routes=(
            traefik.Route(
                key="d1",
                upstreams=("127.0.0.1:9000",),
                hostnames=("shop.localhost", "shop-id-d1.localhost"),
            ),
        ),
        redirects=(traefik.Redirect(hostname="www.example.com", target="example.com"),),
    )
    data = traefik.render_project(routes, _settings(tmp_path))
    router = data["http"]["routers"]["shop-d1"]
    assert router["rule"] == "Host(`shop-id-d1.localhost`) || Host(`shop.localhost`)"
    assert data["http"]["services"]["shop-d1"]["loadBalancer"]["servers"] == [
        {"url": "http://127.0.0.1:9000"}
    ]
    redirect = data["http"]["routers"]["shop-redirect-www-example-com"]
    assert redirect["service"] == "noop@internal"
    assert "tls" not in router


def test_tls_mode_adds_resolver(tmp_path: Path) -> None:
    routes = traefik.ProjectRoutes(
        slug="s", routes=(traefik.Route("d", ("h:1",), ("s.example.com",)),)
    )
    settings = _settings(tmp_path, https_port=443, cert_resolver="le")
    router = traefik.render_project(routes, settings)["http"]["routers"]["s-d"]
    assert router["tls"] == {"certResolver": "le"} and router["entryPoints"] == ["websecure"]


def test_hostile_hostnames_are_refused(tmp_path: Path) -> None:
    routes = traefik.ProjectRoutes(
        slug="s", routes=(traefik.Route("d", ("h:1",), ("a`) || Host(`b",)),)
    )
    with pytest.raises(ConfigError):
        traefik.render_project(routes, _settings(tmp_path))


def test_write_is_atomic_idempotent_and_validated(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    routes = traefik.ProjectRoutes(
        slug="s", routes=(traefik.Route("d", ("h:1",), ("s.localhost",)),)
    )
    assert traefik.write_project(settings, routes) is True
    path = traefik.project_file(settings, "s")
    before = path.stat().st_mtime_ns
    assert traefik.write_project(settings, routes) is False
    assert path.stat().st_mtime_ns == before
    broken = {"http": {"routers": {"r": {"rule": "Host(`x`)", "service": "missing"}}}}
    with pytest.raises(ConfigError):
        traefik.write_atomic(path, broken)
    assert "s.localhost" in path.read_text()
    assert list(path.parent.glob(".*tmp")) == []


def test_platform_config_has_catch_all(tmp_path: Path) -> None:
    data = traefik.render_platform(_settings(tmp_path, deploy_domain="apps.example.com"))
    assert data["http"]["routers"]["devpush-catchall"]["rule"] == (
        "HostRegexp(`^.+\\.apps\\.example\\.com$`)"
    )
    assert data["http"]["routers"]["devpush-catchall"]["priority"] == 1


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ('{"level": "WARNING", "msg": "x"}', "warn"),
        ('{"severity": "error"}', "error"),
        ("2026-01-01 12:00:00 ERROR boom", "error"),
        ("[INFO] started", "info"),
        ("just text", None),
        ("{not json", None),
    ],
)
def test_parse_level(line: str, level: str | None) -> None:
    assert parse_level(line) == level


def test_oversized_lines_are_cut_and_say_so() -> None:
    text = cut("x" * 20_000)
    assert len(text) < 17_000 and text.endswith("more characters]")
