"""Sign-in with GitHub (the GitHub App's OAuth credentials) and Google (OpenID Connect), through
authlib's Starlette client.

A provider is offered only when its client id and secret are set. The callback resolves the
provider's account to a devpush user: a known identity signs in its user; otherwise a verified
email that belongs to a user links the identity to that user; otherwise a new account is made,
if the sign-up allowlist (or a pending invite) lets that address in.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from devpush.accounts.signup import create_account
from devpush.auth.models import User, UserIdentity
from devpush.auth.service import get_user_by_email, normalize_email
from devpush.errors import Invalid, NotFound, Unauthorized
from devpush.settings import Settings

with warnings.catch_warnings():
    # authlib >= 1.7 prefers the `httpx2` package and warns when it falls back to httpx, which
    # works the same for what is used here (the authorization code flow).
    import authlib.deprecate  # noqa: F401 - installs its own "always" filter first

    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.starlette_client import OAuth, OAuthError

PROVIDERS = {"github": "GitHub", "google": "Google"}


@dataclass(frozen=True)
class ProviderAccount:
    provider: str
    subject: str
    email: str | None
    email_verified: bool
    name: str


def configured(settings: Settings) -> list[str]:
    """The providers this platform offers, in display order."""
    names = []
    if settings.github_client_id and settings.github_client_secret:
        names.append("github")
    if settings.google_client_id and settings.google_client_secret:
        names.append("google")
    return names


def build_registry(settings: Settings) -> OAuth:
    oauth = OAuth()
    if "github" in configured(settings):
        oauth.register(
            name="github",
            client_id=settings.github_client_id,
            client_secret=settings.github_client_secret,
            authorize_url=f"{settings.github_url.rstrip('/')}/login/oauth/authorize",
            access_token_url=f"{settings.github_url.rstrip('/')}/login/oauth/access_token",
            api_base_url=f"{settings.github_api_url.rstrip('/')}/",
            client_kwargs={"scope": "read:user user:email", "timeout": 15},
        )
    if "google" in configured(settings):
        oauth.register(
            name="google",
            client_id=settings.google_client_id,
            client_secret=settings.google_client_secret,
            server_metadata_url=settings.google_discovery_url,
            client_kwargs={"scope": "openid email profile", "timeout": 15},
        )
    return oauth


def registry(request: Request, settings: Settings) -> OAuth:
    """One registry per app, built on first use (nothing happens at import time)."""
    oauth: OAuth | None = getattr(request.app.state, "oauth", None)
    if oauth is None:
        oauth = build_registry(settings)
        request.app.state.oauth = oauth
    return oauth


def _client(request: Request, settings: Settings, provider: str) -> Any:
    if provider not in configured(settings):
        raise NotFound(f"sign-in with {provider[:20]!r} is not set up here")
    return registry(request, settings).create_client(provider)


def callback_url(settings: Settings, provider: str) -> str:
    return f"{settings.app_url}/auth/oauth/{provider}/callback"


async def redirect(request: Request, settings: Settings, provider: str) -> Response:
    client = _client(request, settings, provider)
    try:
        response: Response = await client.authorize_redirect(
            request, callback_url(settings, provider)
        )
    except (OAuthError, OSError) as exc:  # discovery document unreachable
        raise Unauthorized(f"{PROVIDERS[provider]} could not be reached: {exc}") from None
    return response


async def _github_account(client: Any, token: dict[str, Any]) -> ProviderAccount:
    profile = (await client.get("user", token=token)).json()
    emails = (await client.get("user/emails", token=token)).json()
    primary = next(
        (e for e in emails if isinstance(e, dict) and e.get("primary") and e.get("verified")),
        None,
    )
    return ProviderAccount(
        provider="github",
        subject=str(profile["id"]),
        email=primary["email"] if primary else None,
        email_verified=primary is not None,
        name=str(profile.get("name") or profile.get("login") or ""),
    )


def _google_account(token: dict[str, Any]) -> ProviderAccount:
    info = token.get("userinfo") or {}
    if not info.get("sub"):
        raise Unauthorized("Google sent no account id")
    return ProviderAccount(
        provider="google",
        subject=str(info["sub"]),
        email=info.get("email"),
        email_verified=bool(info.get("email_verified")),
        name=str(info.get("name") or ""),
    )


async def account_from_callback(
    request: Request, settings: Settings, provider: str
) -> ProviderAccount:
    """Exchange the callback's code (checking state, and the ID token for OIDC)."""
    client = _client(request, settings, provider)
    try:
        token = await client.authorize_access_token(request)
        if provider == "github":
            return await _github_account(client, token)
        return _google_account(token)
    except (OAuthError, JoseError, KeyError, ValueError) as exc:
        message = getattr(exc, "description", None) or str(exc) or type(exc).__name__
        raise Unauthorized(f"{PROVIDERS[provider]} sign-in failed: {message}"[:300]) from None
    except OSError as exc:
        raise Unauthorized(f"{PROVIDERS[provider]} could not be reached: {exc}"[:300]) from None


async def sign_in_with(*, session: AsyncSession, account: ProviderAccount) -> User:
    """The user an external account signs in as (linking or creating one as needed)."""
    identity = await session.scalar(
        select(UserIdentity).where(
            UserIdentity.provider == account.provider, UserIdentity.subject == account.subject
        )
    )
    if identity is not None:
        user = await session.get(User, identity.user_id)
        if user is None or user.status != "active":
            raise Unauthorized("this account is being deleted")
        return user
    label = PROVIDERS[account.provider]
    if not account.email or not account.email_verified:
        raise Unauthorized(f"your {label} account has no verified email address")
    try:
        email = normalize_email(account.email)
    except Invalid:
        raise Unauthorized(f"{label} sent an unusable email address") from None
    user = await get_user_by_email(session=session, email=email)
    if user is None:
        user = await create_account(session=session, email=email, name=account.name)
    elif user.status != "active":
        raise Unauthorized("this account is being deleted")
    session.add(
        UserIdentity(
            user_id=user.id, provider=account.provider, subject=account.subject, email=email
        )
    )
    await session.flush()
    return user
