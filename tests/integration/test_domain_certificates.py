"""Domain events: `domain.verified` when a domain is verified (the failed check sends none),
and in TLS mode `domain.certificate_failed` once for a verified domain Traefik still holds no
certificate for after the grace period (read from Traefik's real acme.json format)."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
from sqlalchemy import select, update

from devpush.db import session_scope, utcnow
from devpush.domains import certificates
from devpush.domains.models import Domain
from devpush.outbox.models import DomainEvent
from devpush.platform import Platform
from tests.factories.auth import Account
from tests.integration.test_domains import ZoneResolver, make_project
from tests.integration.test_domains import dns_zone as dns_zone  # the fixture


async def _events(platform: Platform, kind: str) -> list[DomainEvent]:
    async with session_scope(platform.sessions) as session:
        rows = await session.scalars(select(DomainEvent).where(DomainEvent.type == kind))
        return list(rows)


async def test_verification_is_an_event_and_a_failed_check_is_not(
    client: httpx.AsyncClient, platform: Platform, alice: Account, dns_zone: ZoneResolver
) -> None:
    project_id = await make_project(client, alice)
    added = await client.post(
        f"/api/v1/projects/{project_id}/domains",
        json={"hostname": "shop.example.com"},
        headers=alice.headers,
    )
    domain = added.json()
    url = f"/api/v1/projects/{project_id}/domains/{domain['id']}/verify"
    assert (await client.post(url, headers=alice.headers)).json()["status"] == "failed"
    assert await _events(platform, "domain.verified") == []
    dns_zone.txt[domain["verification_record"]] = domain["verification_value"]
    assert (await client.post(url, headers=alice.headers)).json()["status"] == "verified"
    assert (await client.post(url, headers=alice.headers)).json()["status"] == "verified"
    [event] = await _events(platform, "domain.verified")  # once, however often it is asked
    assert (event.team_id, event.project_id, event.domain_id) == (
        alice.team_id,
        project_id,
        domain["id"],
    )
    assert event.data["hostname"] == "shop.example.com"


def _acme(platform: Platform, *hostnames: str) -> None:
    path = certificates.acme_storage(platform.settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {
        "pebble": {
            "Account": {"Email": "ops@example.com"},
            "Certificates": [
                {"domain": {"main": h}, "certificate": "LS0t", "key": "LS0t", "Store": "default"}
                for h in hostnames
            ],
        }
    }
    path.write_text(json.dumps(stored))


async def _add_verified(
    client: httpx.AsyncClient, platform: Platform, account: Account, project_id: str, host: str
) -> str:
    added = await client.post(
        f"/api/v1/projects/{project_id}/domains", json={"hostname": host}, headers=account.headers
    )
    assert added.status_code == 201 and added.json()["status"] == "verified", added.text
    return str(added.json()["id"])


async def _check(platform: Platform) -> list[str]:
    async with session_scope(platform.sessions) as session:
        failed = await certificates.check(session=session, settings=platform.settings)
        return [d.hostname for d in failed]


async def test_a_domain_without_a_certificate_after_the_grace_fails_once(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    platform.settings.verify_domains = False
    platform.settings.https_port = 8443
    platform.settings.cert_resolver = "pebble"
    project_id = await make_project(client, alice)
    served = await _add_verified(client, platform, alice, project_id, "www.served.test")
    stuck = await _add_verified(client, platform, alice, project_id, "www.stuck.test")
    _acme(platform, "www.served.test")
    assert await _check(platform) == []  # within the grace: nothing judged yet
    async with session_scope(platform.sessions) as session:
        await session.execute(update(Domain).values(verified_at=utcnow() - timedelta(hours=1)))
    assert await _check(platform) == ["www.stuck.test"]
    assert await _check(platform) == []  # once
    listed = await client.get(f"/api/v1/projects/{project_id}/domains", headers=alice.headers)
    states = {d["id"]: d["certificate"] for d in listed.json()}
    assert states == {served: "issued", stuck: "failed"}
    [event] = await _events(platform, "domain.certificate_failed")
    assert event.domain_id == stuck and event.team_id == alice.team_id
    assert "www.stuck.test" in event.data["reason"]
    _acme(platform, "www.served.test", "www.stuck.test")  # issued after all
    assert await _check(platform) == []
    listed = await client.get(f"/api/v1/projects/{project_id}/domains", headers=alice.headers)
    assert {d["certificate"] for d in listed.json()} == {"issued"}


async def test_without_tls_or_a_readable_store_nothing_is_judged(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    platform.settings.verify_domains = False
    project_id = await make_project(client, alice)
    await _add_verified(client, platform, alice, project_id, "www.plain.test")
    async with session_scope(platform.sessions) as session:
        await session.execute(update(Domain).values(verified_at=utcnow() - timedelta(hours=1)))
    assert await _check(platform) == []  # no https entrypoint: no certificates to expect
    platform.settings.https_port = 8443
    platform.settings.cert_resolver = "pebble"
    path = certificates.acme_storage(platform.settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    assert await _check(platform) == []  # a torn file is not a verdict
    assert await _events(platform, "domain.certificate_failed") == []
