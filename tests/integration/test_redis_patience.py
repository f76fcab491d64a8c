"""A process starting while Redis is unreachable for a few seconds waits for it."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from devpush.bootstrap import build_platform
from devpush.settings import Settings
from tests.conftest import free_port


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def test_build_platform_waits_for_redis_that_comes_up_late(settings: Settings) -> None:
    real = urlsplit(settings.redis_url)
    port = free_port()
    late_url = real._replace(netloc=real.netloc.rsplit(":", 1)[0] + f":{port}").geturl()
    late = settings.model_copy(update={"redis_url": late_url})

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(real.hostname, real.port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def open_later() -> asyncio.Server:
        await asyncio.sleep(6)  # connections are refused until then
        return await asyncio.start_server(forward, "127.0.0.1", port)

    opener = asyncio.create_task(open_later())
    platform = await build_platform(late)
    try:
        assert await platform.redis.ping()
        assert opener.done()  # it did wait for the late Redis
    finally:
        await platform.close()
        (await opener).close()
