"""The static file server that deployed static sites run: started as a real process (stdlib
only: ``python -I -S``) and spoken to over real HTTP."""

from __future__ import annotations

import gzip
import http.client
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

SERVER = Path(__file__).resolve().parents[3] / "src" / "devpush" / "builds" / "static_server.py"
HASHED_JS = "console.log('hashed asset');\n" * 20
SECRET = "TOP-SECRET-outside-the-site"
IMMUTABLE = "public, max-age=31536000, immutable"
PLAIN = {"Accept-Encoding": "identity"}


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    out: Path
    err: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def raw(self, method: str, target: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        """A request with the target sent verbatim (httpx would normalise ``..`` away)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request(method, target, headers=headers)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(directory: Path | list[Path], logs: Path, spa: bool = False) -> Server:
    port = free_port()
    dirs = directory if isinstance(directory, list) else [directory]
    env = {k: v for k, v in os.environ.items() if k != "DEVPUSH_STATIC_SPA"}
    env.update(HOST="127.0.0.1", PORT=str(port), **({"DEVPUSH_STATIC_SPA": "1"} if spa else {}))
    out, err = logs / f"out-{port}.log", logs / f"err-{port}.log"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(SERVER), *map(str, dirs)], env=env, stdout=o, stderr=e
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"static server exited with {proc.returncode}: {err.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return Server(proc, port, out, err)
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("static server did not start")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("static")
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_text(SECRET)
    (base / "secret").write_text(SECRET)
    root = base / "site"
    files = {
        "index.html": "<h1>home</h1>",
        "about.html": "<h1>about</h1>",
        "404.html": "<h1>custom not found</h1>",
        "docs/index.html": "<h1>docs</h1>",
        "assets/index-B7x9aQ2c.js": HASHED_JS,
        "main.3f2a1b9c.css": "body{}",
        "app.js": "console.log('app');",
        "logo.svg": "<svg/>",
        "assets/embed.html": "<p>embed</p>",
        "jquery-3.7.1.min.js": "",
        "my-component.js": "",
        "site.webmanifest": "{}",
        "static/media/logo.png": "png",
        "big.bin": "x" * 16_000_000,
        ".env": SECRET,
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "assets" / "index-B7x9aQ2c.js.gz").write_bytes(gzip.compress(HASHED_JS.encode()))
    (root / "leak.txt").symlink_to(base / "outside" / "secret.txt")
    (root / "leakdir").symlink_to(base / "outside")
    (base / "outside" / "secret.txt.gz").write_bytes(gzip.compress(SECRET.encode()))
    (root / "notes.txt").write_text("notes")
    (root / "notes.txt.gz").symlink_to(base / "outside" / "secret.txt.gz")
    return root


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[Server]:
    srv = start(site, site.parent)
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def spa_server(site: Path) -> Iterator[Server]:
    srv = start(site, site.parent, spa=True)
    yield srv
    assert srv.stop() == 0


def test_index_is_html_and_revalidated(server: Server) -> None:
    resp = httpx.get(server.url + "/", headers=PLAIN)
    assert resp.status_code == 200
    assert resp.text == "<h1>home</h1>"
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    assert resp.headers["cache-control"] == "no-cache"
    assert resp.headers["content-length"] == str(len(resp.content))
    assert resp.headers["server"] == "devpush-static"
    assert httpx.get(server.url + "/index.html?v=1").text == "<h1>home</h1>"


@pytest.mark.parametrize(
    ("path", "ctype", "cache"),
    [
        ("/assets/index-B7x9aQ2c.js", "text/javascript; charset=utf-8", IMMUTABLE),
        ("/main.3f2a1b9c.css", "text/css; charset=utf-8", IMMUTABLE),
        ("/app.js", "text/javascript; charset=utf-8", "no-cache"),
        ("/logo.svg", "image/svg+xml; charset=utf-8", "no-cache"),
        ("/about.html", "text/html; charset=utf-8", "no-cache"),
        ("/assets/embed.html", "text/html; charset=utf-8", "no-cache"),
        ("/jquery-3.7.1.min.js", "text/javascript; charset=utf-8", "no-cache"),
        ("/my-component.js", "text/javascript; charset=utf-8", "no-cache"),
        ("/site.webmanifest", "application/manifest+json; charset=utf-8", "no-cache"),
        ("/static/media/logo.png", "image/png", IMMUTABLE),
    ],
)
def test_content_types_and_cache_headers(server: Server, path: str, ctype: str, cache: str) -> None:
    resp = httpx.get(server.url + path, headers=PLAIN)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == ctype
    assert resp.headers["cache-control"] == cache
    assert "content-encoding" not in resp.headers


def test_clean_urls_and_directory_redirect(server: Server) -> None:
    assert httpx.get(server.url + "/about").text == "<h1>about</h1>"
    resp = httpx.get(server.url + "/docs?x=1")
    assert resp.status_code == 301
    assert resp.headers["location"] == "/docs/?x=1"
    assert httpx.get(server.url + "/docs/").text == "<h1>docs</h1>"


def test_missing_paths_without_spa_get_the_sites_404_page(server: Server) -> None:
    for path in ("/users/42", "/missing.js"):
        resp = httpx.get(server.url + path)
        assert resp.status_code == 404
        assert resp.text == "<h1>custom not found</h1>"
        assert resp.headers["cache-control"] == "no-cache"


def test_spa_fallback_serves_index_for_routes_but_not_for_files(spa_server: Server) -> None:
    resp = httpx.get(spa_server.url + "/users/42")
    assert resp.status_code == 200
    assert resp.text == "<h1>home</h1>"
    assert resp.headers["cache-control"] == "no-cache"
    assert httpx.get(spa_server.url + "/assets/route").headers["cache-control"] == "no-cache"
    assert httpx.get(spa_server.url + "/missing.js").status_code == 404
    assert httpx.get(spa_server.url + "/assets/index-B7x9aQ2c.js").text == HASHED_JS


@pytest.mark.parametrize(
    "target",
    [
        "/../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/../secret",
        "/%2e%2e/secret",
        "/..%2fsecret",
        "/assets/../../secret",
        "/leak.txt",
        "/leakdir/secret.txt",
        "/leakdir/",
        "/leakdir",
        "/.env",
        "/about.html%00.js",
    ],
)
def test_nothing_outside_the_directory_is_served(
    server: Server, spa_server: Server, target: str
) -> None:
    status, _, body = server.raw("GET", target)
    assert status == 404
    _, _, spa_body = spa_server.raw("GET", target)  # may be the SPA's index.html, never the file
    for text in (body, spa_body):
        assert SECRET.encode() not in text
        assert b"root:" not in text


def test_conditional_requests_get_304(server: Server) -> None:
    first = httpx.get(server.url + "/app.js", headers=PLAIN)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    again = httpx.get(server.url + "/app.js", headers={**PLAIN, "If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    since = httpx.get(server.url + "/app.js", headers={**PLAIN, "If-Modified-Since": modified})
    assert since.status_code == 304
    other = httpx.get(server.url + "/app.js", headers={**PLAIN, "If-None-Match": '"nope"'})
    assert other.status_code == 200
    assert other.text == "console.log('app');"


def test_head_has_length_but_no_body_and_keeps_the_connection(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"HEAD /about.html HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    # a body after HEAD would show up in front of the second status line
    head, second, body = data.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nContent-Length: 14\r\n" in head
    assert second.startswith(b"HTTP/1.1 200 ")
    assert body == b"console.log('app');"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "BREW"])
def test_other_methods_are_not_allowed(server: Server, method: str) -> None:
    status, headers, _ = server.raw(method, "/index.html")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert headers["Connection"] == "close"  # its body is not read


def test_precompressed_gzip_is_served_to_clients_that_accept_it(server: Server) -> None:
    path = "/assets/index-B7x9aQ2c.js"
    status, headers, body = server.raw("GET", path, **{"Accept-Encoding": "br, gzip"})
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Vary"] == "Accept-Encoding"
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert gzip.decompress(body).decode() == HASHED_JS
    assert int(headers["Content-Length"]) == len(body) < len(HASHED_JS)
    status, headers, body = server.raw("GET", path, **{"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in headers
    assert body.decode() == HASHED_JS
    # a .gz sibling that leads out of the directory is ignored
    status, headers, body = server.raw("GET", "/notes.txt", **{"Accept-Encoding": "gzip"})
    assert (status, body) == (200, b"notes")
    assert "Content-Encoding" not in headers


def test_access_log_and_no_tracebacks_when_clients_go_away(server: Server) -> None:
    for _ in range(3):  # clients that hang up mid-download
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(100)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"garbage\r\n\r\n")
        assert b"400" in sock.recv(1000)
    httpx.get(server.url + "/about", headers=PLAIN)
    time.sleep(0.2)
    lines = server.out.read_text().splitlines()
    assert lines[0].startswith("serving /") and lines[0].endswith(f"on {server.url} (spa=off)")
    assert re.fullmatch(r"GET /about 200 14B \d+\.\dms", lines[-1])
    assert "Traceback" not in server.err.read_text()


def test_sigterm_exits_cleanly(site: Path, tmp_path: Path) -> None:
    srv = start(site, tmp_path, spa=True)
    with httpx.Client() as client:  # an idle keep-alive connection does not hold it up
        assert client.get(srv.url + "/").status_code == 200
        began = time.monotonic()
        assert srv.stop() == 0
        assert time.monotonic() - began < 3
    assert "(spa=on)" in srv.out.read_text()


def test_a_missing_directory_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(SERVER), str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 2
    assert "nope: no such directory" in done.stderr


def test_of_several_directories_the_first_with_an_index_is_served(tmp_path: Path) -> None:
    (tmp_path / "build").mkdir()  # exists, but the bundler wrote its site elsewhere
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "index.html").write_text("<h1>bundled</h1>")
    dirs = [tmp_path / "dist", tmp_path / "build", tmp_path / "out"]
    srv = start(dirs, tmp_path)
    try:
        assert httpx.get(srv.url + "/").text == "<h1>bundled</h1>"
    finally:
        assert srv.stop() == 0
