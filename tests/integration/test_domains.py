"""Custom domains: validation, DNS TXT verification against a real (local) DNS server, and the
Traefik routes they produce."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from dnslib import QTYPE, RR, TXT
from dnslib.server import BaseResolver, DNSServer

from devpush.platform import Platform
from devpush.proxy import traefik
from tests.conftest import free_port
from tests.factories.auth import Account


class ZoneResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self) -> None:
        self.txt: dict[str, str] = {}

    def resolve(self, request, handler):  # type: ignore[no-untyped-def]
        reply = request.reply()
        name = str(request.q.qname).rstrip(".")
        if request.q.qtype == QTYPE.TXT and name in self.txt:
            reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(self.txt[name]), ttl=1))
        return reply


@pytest.fixture
def dns_zone(platform: Platform) -> Iterator[ZoneResolver]:
    resolver = ZoneResolver()
    port = free_port()
    server = DNSServer(resolver, port=port, address="127.0.0.1")
    server.start_thread()
    platform.settings.dns_nameserver = f"127.0.0.1:{port}"
    yield resolver
    server.stop()


async def make_project(client: httpx.AsyncClient, account: Account) -> str:
    response = await client.post(
        f"/api/v1/teams/{account.team_slug}/projects",
        json={"name": "site", "start_command": "x"},
        headers=account.headers,
    )
    return str(response.json()["id"])


async def test_domain_is_served_only_once_verified(
    client: httpx.AsyncClient, platform: Platform, alice: Account, dns_zone: ZoneResolver
) -> None:
    project_id = await make_project(client, alice)
    added = await client.post(
        f"/api/v1/projects/{project_id}/domains",
        json={"hostname": "Shop.Example.com"},
        headers=alice.headers,
    )
    assert added.status_code == 201, added.text
    domain = added.json()
    assert domain["hostname"] == "shop.example.com" and domain["status"] == "pending"
    assert domain["verification_record"] == "_devpush-challenge.shop.example.com"
    url = f"/api/v1/projects/{project_id}/domains/{domain['id']}/verify"
    failed = await client.post(url, headers=alice.headers)
    assert failed.json()["status"] == "failed"
    dns_zone.txt[domain["verification_record"]] = domain["verification_value"]
    verified = await client.post(url, headers=alice.headers)
    assert verified.json()["status"] == "verified"
    listed = await client.get(f"/api/v1/projects/{project_id}/domains", headers=alice.headers)
    assert [d["hostname"] for d in listed.json()] == ["shop.example.com"]


async def test_redirect_domain_renders_a_redirect(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    platform.settings.verify_domains = False
    project_id = await make_project(client, alice)
    added = await client.post(
        f"/api/v1/projects/{project_id}/domains",
        json={"hostname": "www.example.com", "kind": "redirect", "redirect_to": "example.com"},
        headers=alice.headers,
    )
    assert added.status_code == 201 and added.json()["status"] == "verified"
    files = traefik.read_dynamic(platform.settings)
    middleware = next(iter(files["site"]["http"]["middlewares"].values()))
    assert middleware["redirectRegex"]["replacement"] == "http://example.com${1}"
    removed = await client.delete(
        f"/api/v1/projects/{project_id}/domains/{added.json()['id']}", headers=alice.headers
    )
    assert removed.status_code == 204
    assert "site" not in traefik.read_dynamic(platform.settings)


@pytest.mark.parametrize(
    "body",
    [
        {"hostname": "localhost"},
        {"hostname": "evil`) || Host(`x.com"},
        {"hostname": "a..b.com"},
        {"hostname": "x.localhost"},
        {"hostname": "-bad.example.com"},
        {"hostname": "ok.example.com", "environment": "nope"},
        {"hostname": "ok.example.com", "kind": "redirect"},
        {"hostname": "ok.example.com", "kind": "proxy"},
        {"hostname": "x" * 300 + ".com"},
    ],
)
async def test_bad_domains_are_rejected(
    client: httpx.AsyncClient, alice: Account, body: dict[str, str]
) -> None:
    project_id = await make_project(client, alice)
    response = await client.post(
        f"/api/v1/projects/{project_id}/domains", json=body, headers=alice.headers
    )
    assert response.status_code == 422, (body, response.text)
    listed = await client.get(f"/api/v1/projects/{project_id}/domains", headers=alice.headers)
    assert listed.json() == []


async def test_domains_are_unique_and_private(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    project_id = await make_project(client, alice)
    body = {"hostname": "app.example.org"}
    first = await client.post(
        f"/api/v1/projects/{project_id}/domains", json=body, headers=alice.headers
    )
    assert first.status_code == 201
    bob_project = await make_project(client, bob)
    taken = await client.post(
        f"/api/v1/projects/{bob_project}/domains", json=body, headers=bob.headers
    )
    assert taken.status_code == 409
    for method, path in [
        ("GET", f"/api/v1/projects/{project_id}/domains"),
        ("POST", f"/api/v1/projects/{project_id}/domains/{first.json()['id']}/verify"),
        ("DELETE", f"/api/v1/projects/{project_id}/domains/{first.json()['id']}"),
    ]:
        response = await client.request(method, path, headers=bob.headers)
        assert response.status_code == 404, path
    wrong_project = await client.delete(
        f"/api/v1/projects/{bob_project}/domains/{first.json()['id']}", headers=bob.headers
    )
    assert wrong_project.status_code == 404
