"""Notification targets and message shapes, without the network: which URLs are accepted,
which addresses count as public, the webhook's signature and the chat formats."""

from __future__ import annotations

import hashlib
import hmac
import json
from types import SimpleNamespace

import httpx
import pytest
import respx

from devpush.errors import Invalid
from devpush.notifications import targets
from devpush.notifications.delivery import request_for, send, signature, summary
from devpush.notifications.service import Target


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert targets.is_public(address) is public


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x.example/",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "https://",
        "x",
        "http://a b",
    ],
)
def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(Invalid):
        targets.parse(url)


async def test_private_hosts_are_refused_unless_allowed() -> None:
    with pytest.raises(Invalid, match="public addresses only"):
        await targets.check_url("http://localhost:8080/hook", allow_private=False)
    await targets.check_url("http://localhost:8080/hook", allow_private=True)
    with pytest.raises(Invalid, match="does not resolve"):
        await targets.check_url("https://no-such-host.invalid/", allow_private=False)


def test_masked_hides_the_path_and_credentials() -> None:
    shown = targets.masked("https://user:pw@hooks.slack.com/services/T0/B0/SECRET")
    assert shown == "https://hooks.slack.com/…"


BODY = {
    "event": "deployment.failed",
    "delivery": "d1",
    "team": {"name": "Acme"},
    "project": {"name": "web"},
    "deployment": {
        "id": "abcdef1234",
        "branch": "main",
        "commit_sha": "0123456789",
        "error": "boom",
    },
    "url": "https://web-id-abcdef1.example.com",
}


def test_webhook_request_is_signed_over_its_exact_bytes() -> None:
    content, headers = request_for(Target("webhook", "https://x", None, "s3cret"), BODY)
    assert json.loads(content) == BODY
    digest = hmac.new(b"s3cret", content, hashlib.sha256).hexdigest()
    assert headers["X-Devpush-Signature"] == f"sha256={digest}" == signature("s3cret", content)
    assert headers["X-Devpush-Event"] == "deployment.failed"
    assert headers["X-Devpush-Delivery"] == "d1"


def test_chat_shapes() -> None:
    subject, text = summary(BODY)
    assert subject == "web: deployment abcdef1 failed"
    assert "main@0123456" in text and "Error: boom" in text and BODY["url"] in text
    slack, _ = request_for(Target("slack", "https://x", None, None), BODY)
    discord, headers = request_for(Target("discord", "https://x", None, None), BODY)
    assert json.loads(slack) == {"text": text}
    assert json.loads(discord) == {"content": text, "allowed_mentions": {"parse": []}}
    assert "X-Devpush-Signature" not in headers


def test_chat_text_is_shown_never_acted_on() -> None:
    """Slack reads `<!channel>` as a mention and `<url|label>` as a link unless `&`, `<`, `>`
    are escaped; Discord pings `@everyone` unless told to parse no mentions, and refuses
    content over 2,000 characters."""
    body = {**BODY, "deployment": {**BODY["deployment"], "error": "<!channel> @everyone a&b"}}
    slack, _ = request_for(Target("slack", "https://x", None, None), body)
    assert "&lt;!channel&gt; @everyone a&amp;b" in json.loads(slack)["text"]
    long = {**BODY, "deployment": {**BODY["deployment"], "error": "x" * 5000}}
    discord = json.loads(request_for(Target("discord", "https://x", None, None), long)[0])
    assert len(discord["content"]) == 2000 and discord["allowed_mentions"] == {"parse": []}


def test_a_request_is_pinned_to_a_checked_address_ipv4_first() -> None:
    url, host, extensions = targets.pinned(
        "https://hooks.example.com:8443/x?y=1", ["2606:4700::1111", "93.184.216.34"]
    )
    assert str(url) == "https://93.184.216.34:8443/x?y=1"
    assert host == {"Host": "hooks.example.com:8443"}
    assert extensions == {"sni_hostname": "hooks.example.com"}  # SNI and the certificate's name
    assert targets.pinned("http://10.0.0.5/x", []) == (httpx.URL("http://10.0.0.5/x"), {}, {})


async def test_a_delivery_connects_to_the_address_it_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the name is checked, then a second lookup (the HTTP client's own) could
    answer 127.0.0.1. The delivery never looks again: it connects to the address checked."""
    lookups: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["93.184.216.34"] if len(lookups) == 1 else ["127.0.0.1"]

    monkeypatch.setattr(targets, "resolve", resolve)
    settings = SimpleNamespace(notifications_allow_private=False)
    target = Target(kind="webhook", url="https://hooks.example.com/in", email=None, secret="s")
    with respx.mock() as mock:  # nothing leaves the machine: any other request fails the test
        route = mock.post("https://93.184.216.34/in").respond(204)
        outcome = await send(settings, target, {"event": "deployment.live", "delivery": "d1"})  # type: ignore[arg-type]
    assert outcome.error is None and outcome.response_code == 204
    [call] = route.calls
    assert call.request.headers["Host"] == "hooks.example.com"
    assert call.request.extensions["sni_hostname"] == "hooks.example.com"
    assert lookups == ["hooks.example.com"]
