"""Production static file server for deployed static sites and SPA build outputs.

devpush copies this file into an app's sandbox or container and runs it there as
``python3 /devpush/static_server.py DIRECTORY...`` (a plain site, Vite's dist/, CRA's build/;
given several, the first holding an index.html),
so it is one file using only the standard library (python3 >= 3.11), nothing from devpush.
Environment: HOST (0.0.0.0), PORT (8000); DEVPUSH_STATIC_SPA=1 answers a missing path without
a file extension (``/users/42``) with ``/index.html`` for client-side routing.

GET and HEAD over HTTP/1.1 keep-alive (405 otherwise); only files under DIRECTORY (``..``
resolved, no symlink out of it, no dot-files but ``.well-known``); ``/dir/`` -> dir/index.html,
``/about`` -> about.html, ``/dir`` -> 301 ``/dir/``; content-hashed names and /assets/,
/static/, /_next/static/ are immutable, the rest (HTML included) ``no-cache``, with ETag and
Last-Modified for 304s; a precompressed ``file.gz`` for gzip clients; the site's 404.html for
missing paths outside SPA mode. One access-log line per request on stdout; SIGTERM exits 0;
a missing DIRECTORY exits 2.
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
from datetime import UTC
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, TextIO

IMMUTABLE = "public, max-age=31536000, immutable"
IMMUTABLE_DIRS = ("assets/", "static/", "_next/static/")
# A segment of 8+ [A-Za-z0-9_-] with a digit, after "-" or ".", right before the extension.
HASHED_NAME = re.compile(r"[-.](?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{8,}\.[A-Za-z0-9]+$")
# Python's own table (not the host's mime.types, for the same answer everywhere), amended.
# fmt: off
TYPES = {
    ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
    ".json": "application/json", ".map": "application/json", ".svg": "image/svg+xml",
    ".wasm": "application/wasm", ".webmanifest": "application/manifest+json",
    ".woff2": "font/woff2", ".woff": "font/woff", ".ttf": "font/ttf", ".otf": "font/otf",
    ".webp": "image/webp", ".avif": "image/avif", ".ico": "image/x-icon",
    ".xml": "application/xml", ".gz": "application/gzip",
}
# fmt: on
UTF8_TYPES = {"application/json", "application/manifest+json", "application/xml", "image/svg+xml"}
BUILTIN_TYPES = mimetypes.MimeTypes().types_map[True]
UNPRINTABLE = re.compile(r"[^\x21-\x7e]")


def log(line: str, stream: TextIO | None = None) -> None:
    """Write one line and flush it; a closed or broken stream is not worth a crash."""
    out = stream or sys.stdout
    try:
        out.write(line + "\n")
        out.flush()
    except (OSError, ValueError):
        pass


def content_type(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    ctype = TYPES.get(ext) or BUILTIN_TYPES.get(ext) or "application/octet-stream"
    if ctype.startswith("text/") or ctype in UTF8_TYPES:
        ctype += "; charset=utf-8"
    return ctype


def cache_control(relpath: str) -> str:
    """Immutable for content-hashed names and build asset directories, else revalidate."""
    name = relpath.rsplit("/", 1)[-1]
    if not name.endswith((".html", ".htm")):
        if relpath.startswith(IMMUTABLE_DIRS) or HASHED_NAME.search(name):
            return IMMUTABLE
    return "no-cache"


def url_segments(target: str) -> list[str] | None:
    """The request path as clean segments (percent-decoded, ``..`` resolved), or None."""
    raw = target.split("?", 1)[0].split("#", 1)[0]
    path = urllib.parse.unquote(raw)
    if not raw.startswith("/") or "\x00" in path:
        return None
    segments: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if segments:
                segments.pop()
        elif part not in ("", "."):
            segments.append(part)
    if any(s.startswith(".") and s != ".well-known" for s in segments):
        return None
    return segments


def accepts_gzip(header: str) -> bool:
    for item in header.split(","):
        name, _, params = item.partition(";")
        if name.strip().lower() == "gzip":
            q = params.replace(" ", "").lower()
            return not q.startswith("q=") or q[2:].strip("0.") != ""
    return False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 75  # idle keep-alive connections are dropped after this many seconds
    root = prefix = "/nonexistent"  # real path of DIRECTORY and root + "/", set by main()
    spa = False
    status = length = 0  # of the current response, for the access log
    started = 0.0

    def handle_one_request(self) -> None:
        self.status, self.length, self.started = 0, 0, time.perf_counter()
        try:
            super().handle_one_request()
        finally:
            if self.status:
                ms = (time.perf_counter() - self.started) * 1000
                path = UNPRINTABLE.sub(lambda m: f"%{ord(m[0]):02X}", getattr(self, "path", "-"))
                log(f"{self.command or '-'} {path} {self.status} {self.length}B {ms:.1f}ms")

    def version_string(self) -> str:
        return "devpush-static"

    def send_response(self, code: int, message: str | None = None) -> None:
        self.status = code
        super().send_response(code, message)

    def send_header(self, keyword: str, value: str) -> None:
        if keyword == "Content-Length" and self.command != "HEAD":
            self.length = int(value)
        super().send_header(keyword, value)

    def log_message(self, format: str, *args: Any) -> None:
        """Silences http.server's stderr lines: handle_one_request logs each request."""

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in self.headers:
            self.close_connection = True  # the unread body would be taken for the next request
        if self.command in ("GET", "HEAD"):
            return True
        self.close_connection = True
        self.plain(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": "GET, HEAD"})
        return False

    def do_GET(self) -> None:
        segments = url_segments(self.path)
        if segments is None:
            return self.plain(HTTPStatus.NOT_FOUND)
        relpath, real = self.locate(segments, self.path.split("?", 1)[0].endswith("/"))
        if real:
            return self.send_file(relpath, real, HTTPStatus.OK)
        if relpath:  # a directory without its trailing slash
            query = self.path.partition("?")[2]
            location = "/" + urllib.parse.quote(relpath) + "/" + ("?" + query if query else "")
            return self.send_head(HTTPStatus.MOVED_PERMANENTLY, {"Location": location})
        route = self.spa and (not segments or "." not in segments[-1])  # no file extension
        if route and (index := self.is_file("index.html")):
            return self.send_file("index.html", index, HTTPStatus.OK)
        if page := self.is_file("404.html"):
            return self.send_file("404.html", page, HTTPStatus.NOT_FOUND)
        self.plain(HTTPStatus.NOT_FOUND)

    do_HEAD = do_GET

    def real(self, relpath: str) -> str | None:
        """The real path of ``relpath``, or None when it leads (by a symlink) out of the root."""
        real = os.path.realpath(os.path.join(self.root, relpath))
        return real if real == self.root or real.startswith(self.prefix) else None

    def is_file(self, relpath: str) -> str | None:
        """The real path of ``relpath`` if that is a regular file inside the root."""
        real = self.real(relpath)
        return real if real and os.path.isfile(real) else None

    def locate(self, segments: list[str], trailing_slash: bool) -> tuple[str, str | None]:
        """(relpath, real path) of the file to serve; (directory, None) to redirect to
        ``directory/``; ("", None) when there is none."""
        relpath = "/".join(segments)
        full = self.real(relpath)
        if full is None:
            return "", None
        if os.path.isfile(full):
            return relpath, full
        if os.path.isdir(full):
            if segments and not trailing_slash:
                return relpath, None
            relpath = f"{relpath}/index.html" if segments else "index.html"
        elif segments and not trailing_slash:
            relpath += ".html"  # clean URLs: /about -> about.html
        real = self.is_file(relpath)
        return (relpath, real) if real else ("", None)

    def send_file(self, relpath: str, path: str, status: HTTPStatus) -> None:
        """Send ``path`` (the real path of ``relpath``, just checked), or its .gz sibling."""
        headers = {"Content-Type": content_type(relpath), "Cache-Control": cache_control(relpath)}
        suffix, gz = "", self.is_file(relpath + ".gz")
        if gz:
            headers["Vary"] = "Accept-Encoding"
            if accepts_gzip(self.headers.get("Accept-Encoding", "")):
                path, suffix = gz, "-gz"
                headers["Content-Encoding"] = "gzip"
        try:
            f = open(path, "rb")
        except OSError:  # removed meanwhile
            return self.plain(HTTPStatus.NOT_FOUND)
        with f:
            st = os.fstat(f.fileno())
            etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}{suffix}"'
            headers["ETag"] = etag
            headers["Last-Modified"] = email.utils.formatdate(st.st_mtime, usegmt=True)
            if status == HTTPStatus.OK and self.not_modified(etag, st.st_mtime):
                del headers["Content-Type"]
                return self.send_head(HTTPStatus.NOT_MODIFIED, headers, length=None)
            self.send_head(status, headers, length=st.st_size)
            if self.command != "HEAD" and st.st_size:
                self.connection.sendfile(f, 0, st.st_size)

    def not_modified(self, etag: str, mtime: float) -> bool:
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
            return etag in tags or "*" in tags
        try:
            since = email.utils.parsedate_to_datetime(self.headers.get("If-Modified-Since", ""))
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return int(mtime) <= since.timestamp()

    def send_head(self, status: int, headers: dict[str, str], length: int | None = 0) -> None:
        self.send_response(status)
        for keyword, value in headers.items():
            self.send_header(keyword, value)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("X-Content-Type-Options", "nosniff")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def plain(self, status: HTTPStatus, headers: dict[str, str] | None = None) -> None:
        body = f"{status.value} {status.phrase}\n".encode()
        base = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache"}
        self.send_head(status, {**base, **(headers or {})}, length=len(body))
        if self.command != "HEAD":
            self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line instead of a traceback; clients going away are not errors at all."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError | TimeoutError):
            log(f"error serving {client_address[0]}: {exc!r}", sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        log("usage: static_server.py DIRECTORY [DIRECTORY...]", sys.stderr)
        return 2
    host = os.environ.get("HOST") or "0.0.0.0"
    # Several candidates (a build whose output directory is not known in advance): the first
    # that holds an index.html, else the first that exists.
    found = [d for d in args if os.path.isdir(d)]
    directory = next((d for d in found if os.path.isfile(os.path.join(d, "index.html"))), None)
    directory = directory or (found[0] if found else None)
    if directory is None:
        log(f"static_server: {' or '.join(args)}: no such directory", sys.stderr)
        return 2
    Handler.root = os.path.realpath(directory)
    Handler.prefix = Handler.root.rstrip(os.sep) + os.sep
    Handler.spa = os.environ.get("DEVPUSH_STATIC_SPA", "").lower() in ("1", "true", "yes", "on")
    Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        server = Server((host, int(os.environ.get("PORT") or 8000)), Handler)
    except (OSError, ValueError, OverflowError) as exc:
        log(f"static_server: cannot listen on {host}:{os.environ.get('PORT')}: {exc}", sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    shown = f"[{host}]" if ":" in host else host
    spa = "on" if Handler.spa else "off"
    log(f"serving {directory} on http://{shown}:{server.server_address[1]} (spa={spa})")
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
