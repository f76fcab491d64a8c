"""Several platforms can share one container engine: each lists (and so reconciles) only its
own containers, labelled with an owner id derived from its database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from devpush.runtime import owner_id
from devpush.runtime.base import RuntimeSpec
from devpush.runtime.docker import DockerRuntime
from devpush.settings import Settings

MakeSpec = Callable[..., RuntimeSpec]
NETWORK = "devpush_runner"
IMAGE = "localhost/devpush-runner-python:3.11"


async def test_platforms_sharing_an_engine_list_only_their_own_containers(
    podman: str, make_spec: MakeSpec
) -> None:
    """Two platforms on one engine: each one's monitor removes the instances it lists that
    no deployment owns, so listing another platform's containers would destroy its apps."""
    ours = DockerRuntime(url=podman, network=NETWORK, default_image=IMAGE, owner="platform-a")
    theirs = DockerRuntime(url=podman, network=NETWORK, default_image=IMAGE, owner="platform-b")
    handle = await ours.create(make_spec())
    try:
        assert handle.id in {h.id for h in await ours.list()}
        assert handle.id not in {h.id for h in await theirs.list()}
    finally:
        await ours.remove(handle)
        await ours.close()
        await theirs.close()


def test_the_owner_id_is_the_database_without_its_password(tmp_path: Path) -> None:
    def owner(url: str) -> str:
        return owner_id(Settings(data_dir=tmp_path, database_url=url))  # type: ignore[call-arg]

    a = owner("postgresql+asyncpg://devpush:one@db:5432/devpush")
    assert a == owner("postgresql+asyncpg://devpush:two@db:5432/devpush")
    assert a != owner("postgresql+asyncpg://devpush:one@db:5432/other")
    assert "one" not in a
