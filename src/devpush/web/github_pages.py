"""The page GitHub sends the browser to after an App installation (its setup URL): the
installation is linked to the team named in the signed state."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from itsdangerous import BadSignature

from devpush.api.deps import PlatformDep, SessionDep
from devpush.auth.service import SCOPES, Principal
from devpush.errors import DevpushError, Forbidden
from devpush.github import service
from devpush.teams.access import Action, authorize_team
from devpush.web.common import render

router = APIRouter(include_in_schema=False)


@router.get("/github/setup")
async def github_setup(
    request: Request,
    session: SessionDep,
    platform: PlatformDep,
    installation_id: Annotated[int, Query(ge=1, lt=2**63)],
    state: Annotated[str, Query(min_length=1, max_length=1000)],
) -> Response:
    """GitHub sends the browser here after an install: link the installation to the team
    named in the signed state, if the signed-in user still manages that team."""
    user_id = request.session.get("user_id") if "session" in request.scope else None
    try:
        data: dict[str, Any] = service.install_state_signer(platform.settings).loads(
            state, max_age=service.INSTALL_STATE_MAX_AGE
        )
        if not user_id or data.get("user_id") != user_id:
            raise Forbidden("sign in as the user who started the installation")
        principal = Principal(user_id=user_id, is_admin=False, scopes=frozenset(SCOPES))
        await authorize_team(
            session=session, principal=principal, team_id=str(data["team_id"]), action=Action.manage
        )
        await service.claim_installation(
            p=platform, installation_id=installation_id, team_id=str(data["team_id"])
        )
    except BadSignature:
        return render(
            request,
            "message.html",
            status_code=400,
            title="Installation link expired",
            message="Start the GitHub installation again from devpush.",
        )
    except DevpushError as exc:
        return render(
            request,
            "message.html",
            status_code=exc.status_code,
            title="GitHub installation not linked",
            message=exc.message,
        )
    return RedirectResponse("/", status_code=303)
