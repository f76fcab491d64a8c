"""The runner-image catalog's parts that need no engine: the script's names (from its real
`--list`), name validation, the image list's parsing, and `build` refusing before it runs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from devpush.errors import Invalid
from devpush.runtime import runner_images
from devpush.runtime.runner_images import Target, parse_images, parse_list, validate
from devpush.settings import Settings

LISTED = """\
python-3.11  devpush-runner-python:3.11   Debian bookworm, python3 3.11, uv
node-22      devpush-runner-node:22       Debian bookworm, Node.js 22.x, npm@11
"""
KNOWN = parse_list(LISTED)


def test_the_list_is_parsed_into_targets() -> None:
    assert KNOWN == [
        Target("python-3.11", "devpush-runner-python:3.11", "Debian bookworm, python3 3.11, uv"),
        Target("node-22", "devpush-runner-node:22", "Debian bookworm, Node.js 22.x, npm@11"),
    ]
    assert parse_list("usage: nonsense\n\n[runner-images] ERROR: x\n") == []


async def test_the_real_script_lists_its_targets() -> None:
    assert runner_images.script_path() is not None
    names = [t.name for t in await runner_images.targets()]
    assert {"python-3.11", "python-3.13", "node-20", "node-22"} <= set(names)


def test_known_names_pass() -> None:
    assert validate(["node-22", "python-3.11"], KNOWN) == ["node-22", "python-3.11"]
    assert validate([], KNOWN) == []


@pytest.mark.parametrize(
    "name",
    [
        "python-3.12",  # well formed, but not a target
        "--refresh",
        "--list",
        "python-3.11; rm -rf /",
        "../../etc/passwd",
        "node-22\n",
        "$(id)",
        "",
        "x" * 500,
    ],
)
def test_other_names_are_refused_with_the_choice(name: str) -> None:
    with pytest.raises(Invalid) as refused:
        validate(["python-3.11", name], KNOWN)
    assert "one of python-3.11, node-22" in refused.value.message
    assert len(refused.value.message) < 200


async def test_build_refuses_a_hostile_name_before_running_anything() -> None:
    lines: list[str] = []
    with pytest.raises(Invalid, match="no runner image"):
        await runner_images.build(
            Settings(), ["python-3.11", "--list; touch /tmp/x"], on_line=lines.append
        )
    assert lines == []


ENGINE_LIST = [
    {
        "RepoTags": ["localhost/devpush-runner-node:22"],
        "Size": 312_400_000,
        "Created": 1_760_000_000,
        "Labels": {
            "devpush.inputs": "abc",
            "devpush.runner.language": "node",
            "devpush.runner.version": "22",
            "devpush.runner.node": "22.23.5",
            "devpush.runner.npm": "11.6.2",
            "devpush.runner.corepack": "0.34.1",
        },
    },
    {
        "RepoTags": ["localhost/devpush-runner-python:3.11"],
        "Size": 120_000_000,
        "Created": 1_760_000_100,
        "Labels": {
            "devpush.runner.language": "python",
            "devpush.runner.version": "3.11",
            "devpush.runner.uv": "0.9.1",
        },
    },
    # an older image with no labels, and images that are not runners
    {"RepoTags": ["devpush-runner-ruby:3.3"], "Size": 5, "Created": 1, "Labels": None},
    {"RepoTags": ["localhost/devpush-base:bookworm"], "Size": 1, "Labels": {}},
    {"RepoTags": ["<none>:<none>"], "Size": 1, "Labels": {}},
    {"RepoTags": None, "Size": 1},
]


def test_the_engine_list_becomes_the_catalog() -> None:
    rows = parse_images(ENGINE_LIST, default="devpush-runner-python:3.11", known=KNOWN)
    assert [r.tag for r in rows] == [
        "devpush-runner-ruby:3.3",
        "localhost/devpush-runner-node:22",
        "localhost/devpush-runner-python:3.11",
    ]
    ruby, node, python = rows
    assert (node.name, node.language, node.version) == ("node-22", "node", "22.23.5")
    assert node.tools == {"corepack": "0.34.1", "npm": "11.6.2"}
    assert node.size_mb == 312 and not node.default
    assert node.created == datetime(2025, 10, 9, 8, 53, 20, tzinfo=UTC)
    assert (python.name, python.language, python.version) == ("python-3.11", "python", "3.11")
    assert python.tools == {"uv": "0.9.1"} and python.default
    # no labels: the language and version come from the tag; no target builds it
    assert (ruby.name, ruby.language, ruby.version, ruby.tools) == (None, "ruby", "3.3", {})


def test_the_default_matches_however_the_engine_spells_the_tag() -> None:
    rows = parse_images(ENGINE_LIST[:2], default="localhost/devpush-runner-node:22")
    assert [r.default for r in rows] == [True, False]
    assert [r.name for r in rows] == [None, None]  # no targets known


def test_cannot_build_without_a_docker_runtime() -> None:
    reason = runner_images.cannot_build(Settings(docker_host=None))
    assert reason and "no docker runtime" in reason
    assert runner_images.host_command("node-22") == "sudo scripts/runner-images.sh node-22"
