"""Outgoing mail: sign-in links, sign-up and email-change confirmations, team invites.

With DEVPUSH_SMTP_URL set, mail goes out over SMTP (the stdlib client, in a thread):
`smtp://user:pass@host:port` (STARTTLS when the server offers it) or `smtps://` (TLS from the
start). Without it, nothing is sent and the log says so, never with the message's text: its
one-time links would let whoever reads the log sign in. The operator prints a sign-in link with
`devpush user link EMAIL`, and an inviting admin is shown the invitation link instead.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from urllib.parse import unquote, urlsplit

from devpush.errors import ConfigError, ServiceUnavailable
from devpush.settings import Settings

log = logging.getLogger("devpush.mail")
SMTP_TIMEOUT = 15.0


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    tls: bool  # implicit TLS (smtps)
    username: str | None
    password: str | None


def parse_smtp_url(url: str) -> SmtpTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError("DEVPUSH_SMTP_URL must look like smtp://user:pass@host:587 or smtps://…")
    tls = parts.scheme == "smtps"
    return SmtpTarget(
        host=parts.hostname,
        port=parts.port or (465 if tls else 25),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _message(settings: Settings, mail: Mail) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = formataddr(("", mail.to))
    message["Subject"] = mail.subject
    message["Message-ID"] = make_msgid(domain=settings.app_hostname)
    message.set_content(mail.text)
    return message


def _deliver(target: SmtpTarget, message: EmailMessage) -> None:
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if target.tls:
        client = smtplib.SMTP_SSL(target.host, target.port, timeout=SMTP_TIMEOUT, context=context)
    else:
        client = smtplib.SMTP(target.host, target.port, timeout=SMTP_TIMEOUT)
    with client:
        client.ehlo()
        if not target.tls and client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
        if target.username:
            client.login(target.username, target.password or "")
        client.send_message(message)


async def send(settings: Settings, mail: Mail) -> bool:
    """Send `mail`; False when no SMTP server is configured (then only a note, without the
    message's text or links, goes to the log)."""
    if not settings.smtp_url:
        log.warning(
            "mail not sent (DEVPUSH_SMTP_URL is unset); for a one-time sign-in link, run "
            f"`devpush user link {mail.to}` on the server",
            extra={"to": mail.to, "subject": mail.subject},
        )
        return False
    target = parse_smtp_url(settings.smtp_url)
    try:
        await asyncio.to_thread(_deliver, target, _message(settings, mail))
    except (OSError, smtplib.SMTPException) as exc:
        log.error("mail delivery failed", extra={"to": mail.to, "error": str(exc)})
        raise ServiceUnavailable(
            "the mail server did not accept the message; try again later"
        ) from exc
    return True


# ---- the messages ---------------------------------------------------------------------------
def sign_in(settings: Settings, to: str, url: str) -> Mail:
    return Mail(
        to=to,
        subject="Your devpush sign-in link",
        text=f"Sign in to devpush with this link (it works once, for 30 minutes):\n\n{url}\n\n"
        "If you did not ask for it, ignore this message.\n",
    )


def sign_up(settings: Settings, to: str, url: str) -> Mail:
    return Mail(
        to=to,
        subject="Create your devpush account",
        text=f"Open this link to create your devpush account (it works once, for 30 "
        f"minutes):\n\n{url}\n\nIf you did not ask for it, ignore this message.\n",
    )


def email_change(settings: Settings, to: str, url: str) -> Mail:
    return Mail(
        to=to,
        subject="Confirm your new devpush email address",
        text=f"Open this link to use {to} for your devpush account (it works once, for "
        f"30 minutes):\n\n{url}\n\nIf you did not ask for it, ignore this message.\n",
    )


def invite(settings: Settings, to: str, team: str, inviter: str, role: str, url: str) -> Mail:
    return Mail(
        to=to,
        subject=f"{inviter} invited you to {team} on devpush",
        text=f"{inviter} invited you to join the team {team} on devpush as {role}.\n\n"
        f"Accept the invitation here (it expires in 7 days):\n\n{url}\n",
    )
