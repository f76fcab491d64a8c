"""Fixtures of the process runtime's tests: the app's source, a data directory, and runtimes
built on it whose instances are all removed after each test."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from devpush.runtime.process import ProcessRuntime

PORT_RANGE = (20000, 29999)

# A tiny stdlib app: GET / answers $BODY; GET /probe answers what the app can see of the host.
APP = r"""
import json, os, ssl, sys
from http.server import BaseHTTPRequestHandler, HTTPServer


def probe():
    result = {"uid": os.getuid(), "gid": os.getgid(), "env": dict(os.environ), "read": {},
              "exists": {}, "ca_certs": ssl.create_default_context().cert_store_stats()["x509_ca"]}
    for path in filter(None, os.environ.get("PROBE_READ", "").split(":")):
        try:
            with open(path) as f:
                result["read"][path] = "read:" + f.read()
        except OSError as exc:
            result["read"][path] = "error:" + type(exc).__name__
    for path in filter(None, os.environ.get("PROBE_EXISTS", "").split(":")):
        result["exists"][path] = os.path.exists(path)
    return result


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/probe":
            body = json.dumps(probe()).encode()
        else:
            body = os.environ.get("BODY", "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print("app listening on", os.environ["PORT"], flush=True)
print("app warning on stderr", file=sys.stderr, flush=True)
HTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler).serve_forever()
"""


@pytest.fixture
def source(tmp_path: Path) -> Path:
    directory = tmp_path / "src"
    directory.mkdir()
    (directory / "app.py").write_text(APP)
    return directory


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    return directory


@pytest.fixture
async def runtimes(data_dir: Path) -> AsyncIterator[Callable[..., ProcessRuntime]]:
    """Builds runtimes on this test's root; removes every instance left there afterwards."""

    def make(**overrides: Any) -> ProcessRuntime:
        options: dict[str, Any] = {
            "root": data_dir / "runtime" / "process",
            "protected_paths": [data_dir],
            "allow_unsandboxed": False,
            "port_range": PORT_RANGE,
        }
        options.update(overrides)
        return ProcessRuntime(**options)

    yield make
    cleaner = make()
    for handle in await cleaner.list():
        await cleaner.remove(handle)
    # sized volumes are loop mounts: left mounted, pytest could not delete this test's directory
    for line in Path("/proc/self/mounts").read_text().splitlines():
        mount_point = line.split()[1]
        if mount_point.startswith(f"{data_dir}/"):
            subprocess.run(["umount", "--lazy", mount_point], check=False)


@pytest.fixture
def runtime(runtimes: Callable[..., ProcessRuntime]) -> ProcessRuntime:
    return runtimes()
