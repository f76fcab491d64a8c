"""A real HTTP receiver on 127.0.0.1 for notification tests: it records every request and
answers each path with the status the test chose (200 unless told), after the delay it chose;
a path the test holds is answered only once the test releases it."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)
    held: dict[str, threading.Event] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)  # seconds before answering a path
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hold(self, path: str) -> threading.Event:
        """Requests to `path` are recorded, then answered once the returned event is set."""
        self.held[path] = threading.Event()
        return self.held[path]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def wait(self, path: str, count: int = 1, timeout: float = 20) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(got := self.at(path)) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{path} got {len(self.at(path))} requests, not {count}")


def verify(secret: str, request: Received) -> bool:
    """The check a receiver makes of X-Devpush-Signature (the README shows the same)."""
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, request.headers.get("x-devpush-signature", ""))


# The top-level fields of Slack's incoming webhook message and of Discord's "Execute Webhook"
# JSON body, as their documentation lists them.
SLACK_FIELDS = {"text", "blocks", "attachments", "thread_ts", "mrkdwn"}
DISCORD_FIELDS = {
    "content", "username", "avatar_url", "tts", "embeds", "allowed_mentions", "components",
    "attachments", "flags", "thread_name", "applied_tags", "poll",
}  # fmt: skip
SLACK_ENTITIES = re.compile(r"&(?!(amp|lt|gt);)")


def slack_text(request: Received) -> str:
    """The text of a Slack incoming-webhook message, checked against Slack's documented format:
    a JSON body with a non-empty `text` in which `&`, `<` and `>` are escaped (a raw `<` starts
    a link or a mention such as `<!channel>`). Returns it unescaped."""
    assert request.headers["content-type"].startswith("application/json"), request.headers
    body = request.json()
    assert isinstance(body, dict) and set(body) <= SLACK_FIELDS, body
    text = body["text"]
    assert isinstance(text, str) and text.strip(), body
    assert "<" not in text and ">" not in text and not SLACK_ENTITIES.search(text), text
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def discord_content(request: Received) -> str:
    """The content of a Discord webhook message, checked against Discord's documented format:
    a JSON body whose `content` has 1 to 2,000 characters, with mentions (`@everyone`) not
    parsed."""
    assert request.headers["content-type"].startswith("application/json"), request.headers
    body = request.json()
    assert isinstance(body, dict) and set(body) <= DISCORD_FIELDS, body
    content = body["content"]
    assert isinstance(content, str) and 0 < len(content) <= 2000, body
    assert body["allowed_mentions"] == {"parse": []}, body
    return content


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with receiver.lock:
                receiver.requests.append(Received(self.path, headers, body))
            if (held := receiver.held.get(self.path)) is not None:
                held.wait(60)
            time.sleep(receiver.delay.get(self.path, 0))
            code = receiver.status.get(self.path, 200)
            try:
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:  # the sender is gone (a worker killed while it waited)
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
