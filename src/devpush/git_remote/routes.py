"""`/git/{team}/{project}.git/...`: git's smart HTTP protocol, served by `git http-backend`.

An API token is the HTTP Basic password (any username). No token: 401 with WWW-Authenticate,
so git asks for one. A token whose user may not read (clone) or deploy (push) the project: 403.
Answers git shows are plain text (git prints them as `remote:` lines)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from devpush.api.deps import PlatformDep, SessionDep, client_ip
from devpush.auth.service import authenticate_token
from devpush.errors import Forbidden, NotFound, Unauthorized
from devpush.git_remote import service
from devpush.git_remote.cgi import CGIResponse
from devpush.projects.repository import is_github

router = APIRouter(include_in_schema=False)
REALM = {"WWW-Authenticate": 'Basic realm="devpush", charset="UTF-8"'}


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(message + "\n", status_code=status, headers=headers)


@router.api_route("/git/{team}/{repo}/{path:path}", methods=["GET", "POST"])
async def smart_http(
    team: str, repo: str, path: str, request: Request, session: SessionDep, platform: PlatformDep
) -> Response:
    service_name = service.service_of(path, request.method, request.query_params.get("service"))
    if service_name is None or not repo.endswith(".git") or len(repo) > 44 or len(team) > 63:
        return _text(404, "not a devpush git remote (use /git/<team>/<project>.git)")
    token = service.basic_token(request.headers.get("authorization"))
    if token is None:
        return _text(401, "devpush: use an API token as the password (devpush token create)", REALM)
    try:
        principal = await authenticate_token(session=session, token=token)
    except Unauthorized as exc:
        return _text(401, f"devpush: {exc.message}", REALM)
    action = service.SERVICES[service_name]
    try:
        project = await service.load_remote(
            session=session, principal=principal, team=team, project=repo[:-4], action=action
        )
    except (NotFound, Forbidden) as exc:
        detail = exc.message if isinstance(exc, Forbidden) else "no such project, or no access"
        return _text(403, f"devpush: {detail}")
    if service_name == "git-receive-pack" and (project.repo_url or is_github(project)):
        return _text(
            403,
            f"devpush: {project.name} deploys from {project.repo_url}; push there, or clear "
            "the project's repo_url to deploy from this remote",
        )
    await service.ensure_repo(platform.settings, project)
    env = service.backend_env(
        settings=platform.settings,
        project=project,
        principal=principal,
        service=service_name,
        method=request.method,
        path=path,
        query=request.url.query,
        headers={k.lower(): v for k, v in request.headers.items()},
        ip=client_ip(request),
    )
    settings = platform.settings
    timeout = settings.build_timeout + settings.deploy_timeout + 300
    return CGIResponse(["git", "http-backend"], env, timeout=timeout)
