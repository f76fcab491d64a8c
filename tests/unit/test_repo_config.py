"""devpush.toml parsing: overrides, environments, watch paths, and errors that name the line."""

from __future__ import annotations

import pytest

from devpush.errors import Invalid
from devpush.projects.repo_config import parse

GOOD = """\
[build]
command = "make"
pre_deploy = "migrate"

[start]
command = "python3 app.py"
port = 9000
health_path = "/healthz"
replicas = 3

[resources]
cpus = 0.5
memory_mb = 256

[runner]
language = "node"

[environments]
staging = "release/*"

[watch]
paths = ["services/api/**", "shared/*"]
"""


def test_full_file() -> None:
    config = parse(GOOD)
    assert config.overrides == {
        "build_command": "make",
        "pre_deploy_command": "migrate",
        "start_command": "python3 app.py",
        "port": 9000,
        "health_path": "/healthz",
        "replicas": 3,
        "cpus": 0.5,
        "memory_mb": 256,
        "runner_language": "node",
    }
    assert config.environments == {"staging": "release/*"}
    assert config.touches(["services/api/main.py"]) and config.touches(["shared/x"])
    assert not config.touches(["docs/readme.md"])


def test_empty_file_overrides_nothing() -> None:
    config = parse("")
    assert config.overrides == {} and config.touches(["anything"])


VOLUME = "[[volumes]]\nname = 'data'\nmount_path = '/data'\n\n"


def test_volumes_are_read_in_order() -> None:
    text = VOLUME + "[[volumes]]\nname = 'uploads'\nmount_path = '/srv/uploads'\nsize_mb = 512\n"
    assert parse(text).overrides["volumes"] == [
        {"name": "data", "mount_path": "/data", "size_mb": None},
        {"name": "uploads", "mount_path": "/srv/uploads", "size_mb": 512},
    ]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("[start]\nport = 'eighty'\n", 2, "port must be int"),
        ("[start]\ncommand = 'x'\nport = 70000\n", 3, "between 1 and 65535"),
        ("[build]\ncommand = 'x'\n\n[start\ncommand = 'y'\n", 4, "not valid TOML"),
        ("[deploy]\ncommand = 'x'\n", 1, "unknown section [deploy]"),
        ("[start]\ncomand = 'x'\n", 2, "unknown key 'comand'"),
        ("[runner]\nlanguage = 'cobol'\n", 2, "language must be one of"),
        ("[start]\nhealth_path = 'healthz'\n", 2, "must start with '/'"),
        ("[start]\nreplicas = 0\n", 2, "replicas must be between 1 and 10"),
        ("[start]\nreplicas = 11\n", 2, "replicas must be between 1 and 10"),
        ("[start]\nreplicas = '3'\n", 2, "replicas must be int"),
        ("[resources]\nmemory_mb = true\n", 2, "memory_mb must be int"),
        ("[watch]\npaths = [1]\n", 2, "list of glob strings"),
        ("[environments]\nBad_Name = 'x'\n", 2, 'name = "branch pattern"'),
        ("[volumes]\nname = 'data'\n", 1, "volumes are [[volumes]] tables"),
        (VOLUME + "[[volumes]]\nname = 'logs'\nmount_path = '/etc/logs'\n", 7, "overlaps /etc"),
        (VOLUME + "[[volumes]]\nname = 'Logs'\nmount_path = '/logs'\n", 6, "a volume name"),
        (VOLUME + "[[volumes]]\nname = 'b'\nmount_path = '/data'\n", 1, "two volumes are"),
        ("[[volumes]]\nname = 'a'\nmount_path = '/a/../b'\n", 3, "not a normal path"),
        ("[[volumes]]\nname = 'a'\n", 1, "a mount path is absolute"),
        ("[[volumes]]\nname = 'a'\nmount_path = '/a'\nsize = 9\n", 4, "unknown key 'size'"),
        ("[[volumes]]\nname = 'a'\nmount_path = '/a'\nsize_mb = -1\n", 4, "size_mb"),
    ],
)
def test_errors_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(Invalid) as info:
        parse(text)
    assert info.value.message.startswith(f"devpush.toml line {line}")
    assert words in info.value.message
