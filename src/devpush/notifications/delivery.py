"""Sending one delivery: the payload (the event, with the project, the deployment and its
URLs), formatted per channel, then sent with a timeout. The generic webhook's body is signed:
`X-Devpush-Signature: sha256=<hex HMAC-SHA256 of the exact body with the channel's secret>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.auth import mail
from devpush.db import session_scope
from devpush.deployments import service as deployments
from devpush.deployments.models import Deployment
from devpush.domains.models import Domain
from devpush.errors import Invalid, NotFound, ServiceUnavailable
from devpush.notifications import service, targets
from devpush.notifications.models import NotificationChannel, NotificationDelivery
from devpush.notifications.service import TEST_EVENT, Target
from devpush.platform import Platform
from devpush.projects.models import Environment, Project
from devpush.settings import Settings
from devpush.teams.models import Team

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# The job of one attempt may run this long (arq cancels it then); its claim lasts as long.
ATTEMPT_TIMEOUT = 60.0
USER_AGENT = "devpush-notifications"
DISCORD_LIMIT = 2000  # characters in a message's content
VERBS = {
    "deployment.created": "was created",
    "deployment.building": "is building",
    "deployment.live": "is live",
    "deployment.failed": "failed",
    "deployment.crashed": "crashed",
    "deployment.canceled": "was canceled",
    "deployment.rolled_back": "is serving again (rollback)",
    "deployment.promoted": "was promoted to production",
    "domain.verified": "is verified",
    "domain.certificate_failed": "has no certificate: it could not be issued",
    "cron.failed": "failed",
}


# ---- the payload ------------------------------------------------------------------------
async def payload(
    *,
    session: AsyncSession,
    settings: Settings,
    channel: NotificationChannel,
    delivery: NotificationDelivery,
) -> dict[str, Any]:
    """What every channel is told, as the generic webhook's JSON body."""
    event = delivery.event
    team = await session.get(Team, channel.team_id)
    body: dict[str, Any] = {
        "event": delivery.event_type,
        "delivery": delivery.id,
        "created_at": event.get("created_at"),
        "team": {"id": team.id, "slug": team.slug, "name": team.name} if team else None,
        "project": None,
        "deployment": None,
        "url": settings.app_url,
    }
    project_id = event.get("project_id")
    project = await session.get(Project, project_id) if project_id else None
    if project is not None:
        body["project"] = {
            "id": project.id,
            "name": project.name,
            "slug": project.slug,
            "url": settings.deploy_url(project.slug),
        }
    elif project_id:
        body["project"] = {"id": project_id}
    if event.get("deployment_id"):
        body["deployment"] = await _deployment(session, settings, project, event)
        body["url"] = body["deployment"].get("url") or body["url"]
    if event.get("domain_id"):
        domain = await session.get(Domain, event["domain_id"])
        hostname = (domain.hostname if domain else None) or event["data"].get("hostname")
        body["domain"] = {"id": event["domain_id"], "hostname": hostname, **event["data"]}
        if hostname:
            body["url"] = f"{settings.url_scheme}://{hostname}{settings.public_port}"
    return body


async def _deployment(
    session: AsyncSession, settings: Settings, project: Project | None, event: dict[str, Any]
) -> dict[str, Any]:
    data = dict(event.get("data") or {})
    data.setdefault("id", event["deployment_id"])
    deployment = await session.get(Deployment, event["deployment_id"])
    if project is None or deployment is None:
        return data
    environment = (
        await session.get(Environment, deployment.environment_id)
        if deployment.environment_id
        else None
    )
    urls = deployments.urls(settings, deployments.alias_specs(project, deployment, environment))
    return {**data, "urls": urls, "url": urls.get("deployment")}


def summary(body: dict[str, Any]) -> tuple[str, str]:
    """A subject line and a few lines of text, for chat and email."""
    team = (body.get("team") or {}).get("name", "your team")
    if body["event"] == TEST_EVENT:
        subject = f"devpush: test notification for {team}"
        return subject, f"{subject}. This channel works.\n{body['url']}"
    project = body.get("project") or {}
    name = project.get("name") or project.get("id") or "a project"
    verb = VERBS.get(body["event"], body["event"])
    if body.get("domain"):
        subject = f"{name}: domain {body['domain'].get('hostname')} {verb}"
        return subject, f"{subject}\n{body['url']}"
    if body["event"] == "cron.failed":  # the run's fields come in "deployment" (its data)
        run = body.get("deployment") or {}
        outcome = "timed out" if run.get("status") == "timed_out" else verb
        subject = f"{name}: cron job {run.get('job')} {outcome}"
        return subject, "\n".join(filter(None, [subject, run.get("error"), body["url"]]))
    deployment = body.get("deployment") or {}
    sha = (deployment.get("commit_sha") or "")[:7]
    where = deployment.get("branch") or ""
    where = f"{where}@{sha}" if sha else where
    subject = f"{name}: deployment {str(deployment.get('id', ''))[:7]} {verb}"
    lines = [f"{subject} ({where})" if where else subject]
    if deployment.get("error"):
        lines.append(f"Error: {deployment['error']}")
    lines.append(body["url"])
    return subject, "\n".join(lines)


# ---- sending ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    error: str | None = None  # None: delivered
    response_code: int | None = None


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def request_for(target: Target, body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The bytes to post and their headers, per channel."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if target.kind == "webhook":
        content = json.dumps(body, separators=(",", ":"), default=str).encode()
        headers["X-Devpush-Event"] = body["event"]
        headers["X-Devpush-Delivery"] = body["delivery"]
        headers["X-Devpush-Signature"] = signature(target.secret or "", content)
        return content, headers
    _, text = summary(body)
    return json.dumps(chat_message(target.kind, text)).encode(), headers


def chat_message(kind: str, text: str) -> dict[str, Any]:
    """A message as Slack's incoming webhooks and Discord's webhooks document it. Text from
    builds and commits is shown, never acted on: Slack wants `&`, `<` and `>` escaped (else
    `<!channel>` pings everyone), Discord is told to parse no mentions (`@everyone`) and takes
    2,000 characters at most."""
    if kind == "slack":
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return {"text": escaped}
    return {"content": text[:DISCORD_LIMIT], "allowed_mentions": {"parse": []}}


async def send(settings: Settings, target: Target, body: dict[str, Any]) -> Outcome:
    """One attempt. Never raises for the receiver's faults: they are the outcome."""
    if target.kind == "email":
        return await _send_mail(settings, target, body)
    assert target.url is not None
    try:  # again now: the name may resolve elsewhere than when the channel was saved
        checked = await targets.check_url(
            target.url, allow_private=settings.notifications_allow_private
        )
    except Invalid as exc:
        return Outcome(error=exc.message)
    content, headers = request_for(target, body)
    url, host, extensions = targets.pinned(target.url, checked)
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client:
            response = await client.post(
                url, content=content, headers=headers | host, extensions=extensions
            )
    except httpx.TimeoutException:
        return Outcome(error=f"the receiver did not answer within {TIMEOUT.read:.0f}s")
    except httpx.HTTPError as exc:
        return Outcome(error=f"could not reach the receiver: {type(exc).__name__}: {exc}")
    if 200 <= response.status_code < 300:
        return Outcome(response_code=response.status_code)
    return Outcome(
        error=f"the receiver answered HTTP {response.status_code}: {response.text[:300]}",
        response_code=response.status_code,
    )


async def _send_mail(settings: Settings, target: Target, body: dict[str, Any]) -> Outcome:
    subject, text = summary(body)
    message = mail.Mail(to=target.email or "", subject=subject, text=text + "\n")
    try:
        sent = await mail.send(settings, message)
    except ServiceUnavailable as exc:
        return Outcome(error=exc.message)
    if not sent:
        return Outcome(error="no mail server is configured on this platform (DEVPUSH_SMTP_URL)")
    return Outcome()


# ---- one attempt, start to end ----------------------------------------------------------
async def attempt(
    p: Platform, delivery_id: str, number: int, *, retry: bool = True
) -> NotificationDelivery | None:
    """Make attempt `number` (0-based) of a pending delivery and record its outcome; a failed
    one is enqueued again after its backoff. Returns the delivery, or None when there was
    nothing to do (gone, already done, or that attempt claimed or made by another job: a job
    run twice, or enqueued again by a sweep)."""
    async with session_scope(p.sessions) as session:
        # The row decides which job makes the attempt: the first to claim it, under its lock.
        delivery = await session.get(NotificationDelivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.status != service.PENDING or delivery.attempts != number:
            return None
        channel = await session.get(NotificationChannel, delivery.channel_id)
        if channel is None:
            return None
        if not channel.enabled and delivery.event_type != TEST_EVENT:
            delivery.status, delivery.next_attempt_at = "failed", None
            delivery.last_error = "not sent: the channel was disabled"
            return delivery
        service.claim(delivery, seconds=ATTEMPT_TIMEOUT)
        body = await payload(
            session=session, settings=p.settings, channel=channel, delivery=delivery
        )
        target = service.target_of(channel)
    # No transaction or lock is held while the receiver takes its time.
    outcome = await send(p.settings, target, body)
    async with session_scope(p.sessions) as session:
        delivery = await session.get(NotificationDelivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.status != service.SENDING or delivery.attempts != number:
            return None  # the claim ran out, and a sweep counted this attempt lost
        channel = await session.get(NotificationChannel, delivery.channel_id, with_for_update=True)
        if channel is None:
            return None
        wait = service.record_attempt(
            delivery=delivery,
            channel=channel,
            error=outcome.error,
            response_code=outcome.response_code,
            retry=retry,
        )
    if wait is not None:
        from devpush.queue import enqueue_notification

        await enqueue_notification(p.redis, delivery_id, delivery.attempts, defer=wait)
    return delivery


async def send_test(p: Platform, channel_id: str) -> NotificationDelivery:
    """Send a `test` event to a channel now, once, and return its logged delivery."""
    async with session_scope(p.sessions) as session:
        channel = await session.get(NotificationChannel, channel_id)
        if channel is None:
            raise NotFound("no such notification channel")
        delivery = service.new_test_delivery(channel)
        session.add(delivery)
    done = await attempt(p, delivery.id, 0, retry=False)
    return done or delivery
