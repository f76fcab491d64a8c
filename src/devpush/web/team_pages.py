"""Team pages: the overview (projects with their latest deployment), creating a team, the team
settings (name, members and roles, invites, deletion) and accepting an invite."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.api.deps import SessionDep, client_ip
from devpush.audit.service import record
from devpush.auth.models import User
from devpush.deployments import listing
from devpush.errors import Conflict, DevpushError, Forbidden, Invalid
from devpush.projects import service as projects
from devpush.teams import service as teams
from devpush.teams.access import Action, load_team
from devpush.teams.models import ROLE_RANK, Role, Team
from devpush.web.common import (
    Viewer,
    ViewerDep,
    flash,
    get_viewer,
    is_htmx,
    page_router,
    platform_of,
    redirect,
    render,
    session_user,
)

router = page_router()


async def _team(viewer: Viewer, session: AsyncSession, ref: str, action: Action) -> Team:
    return await load_team(session=session, principal=viewer.principal, team_ref=ref, action=action)


# ---- creating a team ----------------------------------------------------------------------------
@router.get("/teams/new")
async def new_team(request: Request, viewer: ViewerDep) -> Response:
    return render(request, "teams/new.html", errors={}, name="")


@router.post("/teams/new")
async def create_team(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    name: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    try:
        team = await teams.create_team(session=session, owner_id=viewer.me.id, name=name)
    except Invalid as exc:
        return render(
            request, "teams/new.html", status_code=422, errors={"name": exc.message}, name=name
        )
    await record(
        session=session,
        principal=viewer.principal,
        action="team.create",
        resource_type="team",
        resource_id=team.id,
        team_id=team.id,
        ip=client_ip(request),
    )
    flash(request, f"Team {team.name} is ready. Invite your teammates from its settings.")
    return redirect(request, f"/t/{team.slug}")


# ---- the overview -------------------------------------------------------------------------------
@router.get("/t/{team}")
async def team_overview(
    team: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    row = await _team(viewer, session, team, Action.read)
    request.session["team"] = row.slug
    settings = platform_of(request).settings
    cards = []
    for project in await projects.list_projects(session=session, team_id=row.id):
        latest, _ = await listing.list_page(session=session, project_id=project.id, limit=1)
        cards.append(
            {
                "project": project,
                "url": settings.deploy_url(project.slug),
                "latest": latest[0] if latest else None,
            }
        )
    return render(
        request,
        "teams/overview.html",
        team=row,
        role=viewer.role_in(row.id),
        cards=cards,
        can_manage=_ranks(viewer, row, Role.admin),
    )


def _ranks(viewer: Viewer, team: Team, least: Role) -> bool:
    role = viewer.role_in(team.id)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[least]


# ---- settings: name, members, invites, deletion -------------------------------------------------
async def _settings_context(viewer: Viewer, session: AsyncSession, team: Team) -> dict[str, Any]:
    role = viewer.role_in(team.id)
    can_manage = _ranks(viewer, team, Role.admin)
    return {
        "team": team,
        "role": role,
        "can_manage": can_manage,
        "is_owner": role == Role.owner,
        "members": await teams.list_members(session=session, team_id=team.id),
        "invites": await teams.list_invites(session=session, team_id=team.id) if can_manage else [],
        "owners": await teams.owner_count(session=session, team_id=team.id),
        "roles": [r.value for r in Role],
    }


async def _members_response(
    request: Request,
    viewer: Viewer,
    session: AsyncSession,
    team: Team,
    *,
    errors: dict[str, str] | None = None,
    notice: str = "",
    status_code: int = 200,
    values: dict[str, str] | None = None,
    invite_link: str | None = None,
) -> Response:
    context = await _settings_context(viewer, session, team)
    context.update(errors=errors or {}, notice=notice, values=values or {}, invite_link=invite_link)
    if is_htmx(request):
        return render(request, "teams/_members.html", status_code=status_code, **context)
    if status_code == 200 and not invite_link:  # the link is shown once, never kept around
        if notice:
            flash(request, notice)
        return redirect(request, f"/t/{team.slug}/settings")
    return render(request, "teams/settings.html", status_code=status_code, **context)


@router.get("/t/{team}/settings")
async def team_settings(
    team: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    row = await _team(viewer, session, team, Action.read)
    context = await _settings_context(viewer, session, row)
    return render(request, "teams/settings.html", errors={}, notice="", values={}, **context)


@router.post("/t/{team}/settings/name")
async def rename_team(
    team: str,
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    name: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    row = await _team(viewer, session, team, Action.manage)
    try:
        await teams.rename_team(session=session, team=row, name=name)
    except Invalid as exc:
        context = await _settings_context(viewer, session, row)
        template = "teams/_name.html" if is_htmx(request) else "teams/settings.html"
        return render(
            request,
            template,
            status_code=422,
            errors={"name": exc.message},
            notice="",
            values={"name": name},
            **context,
        )
    await record(
        session=session,
        principal=viewer.principal,
        action="team.rename",
        resource_type="team",
        resource_id=row.id,
        team_id=row.id,
        ip=client_ip(request),
        data={"name": row.name},
    )
    if is_htmx(request):
        context = await _settings_context(viewer, session, row)
        return render(request, "teams/_name.html", errors={}, notice="Saved.", values={}, **context)
    flash(request, "The team's name is saved.")
    return redirect(request, f"/t/{row.slug}/settings")


@router.post("/t/{team}/members/{user_id}/role")
async def change_role(
    team: str,
    user_id: str,
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    role: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    row = await _team(viewer, session, team, Action.manage)
    actor_role = viewer.role_in(row.id)
    assert actor_role is not None
    try:
        new_role = Role(role)
        await teams.change_role(
            session=session,
            team_id=row.id,
            user_id=user_id[:32],
            role=new_role,
            actor_role=actor_role,
        )
    except ValueError:
        return await _members_response(
            request, viewer, session, row, errors={"__all__": "Choose owner, admin or member."},
            status_code=422,
        )  # fmt: skip
    except (Conflict, Forbidden) as exc:
        return await _members_response(
            request, viewer, session, row, errors={"__all__": exc.message}, status_code=422
        )
    await record(
        session=session,
        principal=viewer.principal,
        action="member.role",
        resource_type="user",
        resource_id=user_id[:32],
        team_id=row.id,
        ip=client_ip(request),
        data={"role": new_role.value},
    )
    return await _members_response(request, viewer, session, row, notice="Role updated.")


@router.post("/t/{team}/members/{user_id}/remove")
async def remove_member(
    team: str, user_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    row = await _team(viewer, session, team, Action.manage)
    actor_role = viewer.role_in(row.id)
    assert actor_role is not None
    try:
        await teams.remove_member(
            session=session, team_id=row.id, user_id=user_id[:32], actor_role=actor_role
        )
    except (Conflict, Forbidden) as exc:
        return await _members_response(
            request, viewer, session, row, errors={"__all__": exc.message}, status_code=422
        )
    await record(
        session=session,
        principal=viewer.principal,
        action="member.remove",
        resource_type="user",
        resource_id=user_id[:32],
        team_id=row.id,
        ip=client_ip(request),
    )
    if user_id == viewer.me.id:
        return redirect(request, "/")
    return await _members_response(request, viewer, session, row, notice="Member removed.")


@router.post("/t/{team}/invites")
async def invite(
    team: str,
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    email: Annotated[str, Form(max_length=400)] = "",
    role: Annotated[str, Form(max_length=20)] = "member",
) -> Response:
    row = await _team(viewer, session, team, Action.manage)
    actor_role = viewer.role_in(row.id)
    assert actor_role is not None
    settings = platform_of(request).settings
    try:
        invited, token = await teams.create_invite(
            session=session,
            team_id=row.id,
            email=email,
            role=Role(role) if role in Role.__members__ else Role.member,
            invited_by=viewer.me.id,
            actor_role=actor_role,
        )
    except (Invalid, Conflict, Forbidden) as exc:
        return await _members_response(
            request, viewer, session, row, errors={"email": exc.message}, status_code=422,
            values={"email": email, "role": role},
        )  # fmt: skip
    await record(
        session=session,
        principal=viewer.principal,
        action="invite.create",
        resource_type="invite",
        resource_id=invited.id,
        team_id=row.id,
        ip=client_ip(request),
        data={"email": invited.email, "role": invited.role.value},
    )
    link = await teams.send_invite(
        settings, team=row, inviter=viewer.user, invite=invited, token=token
    )
    return await _members_response(
        request,
        viewer,
        session,
        row,
        notice="" if link else f"Invitation sent to {invited.email}.",
        invite_link=link,
    )


@router.post("/t/{team}/invites/{invite_id}/resend")
async def resend_invite(
    team: str, invite_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    row = await _team(viewer, session, team, Action.manage)
    settings = platform_of(request).settings
    invited = await teams.get_invite(session=session, team_id=row.id, invite_id=invite_id)
    token = await teams.resend_invite(session=session, invite=invited)
    await record(
        session=session,
        principal=viewer.principal,
        action="invite.resend",
        resource_type="invite",
        resource_id=invited.id,
        team_id=row.id,
        ip=client_ip(request),
    )
    link = await teams.send_invite(
        settings, team=row, inviter=viewer.user, invite=invited, token=token
    )
    return await _members_response(
        request,
        viewer,
        session,
        row,
        notice="" if link else f"Invitation sent again to {invited.email}.",
        invite_link=link,
    )


@router.post("/t/{team}/invites/{invite_id}/revoke")
async def revoke_invite(
    team: str, invite_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    row = await _team(viewer, session, team, Action.manage)
    invited = await teams.get_invite(session=session, team_id=row.id, invite_id=invite_id)
    await teams.revoke_invite(session=session, invite=invited)
    await record(
        session=session,
        principal=viewer.principal,
        action="invite.revoke",
        resource_type="invite",
        resource_id=invited.id,
        team_id=row.id,
        ip=client_ip(request),
    )
    return await _members_response(
        request, viewer, session, row, notice=f"Invitation for {invited.email} revoked."
    )


@router.post("/t/{team}/delete")
async def delete_team(
    team: str,
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    confirm: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    from devpush.queue import enqueue_delete_team

    row = await _team(viewer, session, team, Action.own)
    if confirm.strip() != row.slug:
        context = await _settings_context(viewer, session, row)
        return render(
            request,
            "teams/settings.html",
            status_code=422,
            errors={"confirm": f"Type {row.slug} to confirm"},
            notice="",
            values={},
            **context,
        )
    teams.mark_deleting(team=row)
    await record(
        session=session,
        principal=viewer.principal,
        action="team.delete",
        resource_type="team",
        resource_id=row.id,
        team_id=row.id,
        ip=client_ip(request),
    )
    await session.commit()
    await enqueue_delete_team(platform_of(request).redis, row.id)
    request.session.pop("team", None)
    flash(request, f"Team {row.name} is being deleted with its projects.")
    return redirect(request, "/")


# ---- accepting an invite ------------------------------------------------------------------------
@router.get("/invites/{token}")
async def invite_page(token: str, request: Request, session: SessionDep) -> Response:
    try:
        invited = await teams.invite_by_token(session=session, token=token[:200])
    except DevpushError as exc:
        return render(
            request,
            "message.html",
            status_code=exc.status_code,
            title="This invitation does not work",
            message=exc.message,
        )
    row = await session.get(Team, invited.team_id)
    inviter = await session.get(User, invited.invited_by) if invited.invited_by else None
    user = await session_user(request, session)
    if user is None:
        request.session["next"] = f"/invites/{token[:200]}"
    else:
        await get_viewer(request, session)
    return render(
        request,
        "teams/invite.html",
        invite=invited,
        invited_team=row,
        inviter=inviter,
        user=user,
        token=token[:200],
    )


@router.post("/invites/{token}/accept")
async def accept_invite(
    token: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    row = await teams.accept_invite(session=session, token=token[:200], user=viewer.user)
    await record(
        session=session,
        principal=viewer.principal,
        action="invite.accept",
        resource_type="team",
        resource_id=row.id,
        team_id=row.id,
        ip=client_ip(request),
    )
    flash(request, f"Welcome to {row.name}!")
    return redirect(request, f"/t/{row.slug}")
