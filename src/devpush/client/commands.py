"""The client side of the `devpush` command: it talks to a platform over the API with a token.

    devpush login --url URL [--token T]      devpush whoami
    devpush projects list|create|show|delete devpush deploy [--project P] [--branch B] [--wait]
    devpush deployments list|show|cancel|rollback|promote|redeploy
    devpush logs [--project P] [--deployment D] [-f] [--since 1h] [-q TEXT]
    devpush env list|set K=V [--env E] [--secret [--previews]]|unset K
    devpush domains list|add|verify|remove   devpush tokens create|list|revoke
    devpush notifications add|list|remove|test     devpush cron list|runs|run
    devpush databases add|list|remove|backup|backups|restore
    devpush scale web=N [--env E]

Every command takes --json for machine-readable output. Errors are one line with a hint; the
exit codes are listed in client/api.py and the README. This module registers the commands; they
live in client/projects.py, logs.py, project_settings.py, account.py, cron.py and scale.py,
their shared helpers in client/common.py.
"""

from __future__ import annotations

import typer

from devpush.client.account import notifications_app, tokens_app
from devpush.client.cron import cron_app
from devpush.client.databases import databases_app
from devpush.client.logs import logs
from devpush.client.project_settings import domains_app, env_app
from devpush.client.projects import deploy, deployments_app, login, projects_app, whoami
from devpush.client.scale import scale


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Client")(login)
    app.command(rich_help_panel="Client")(whoami)
    app.command(rich_help_panel="Client")(deploy)
    app.command(rich_help_panel="Client")(logs)
    app.command(rich_help_panel="Client")(scale)
    for name, sub in (
        ("projects", projects_app),
        ("deployments", deployments_app),
        ("env", env_app),
        ("domains", domains_app),
        ("tokens", tokens_app),
        ("notifications", notifications_app),
        ("cron", cron_app),
        ("databases", databases_app),
    ):
        app.add_typer(sub, name=name, rich_help_panel="Client")
