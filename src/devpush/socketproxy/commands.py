"""`devpush socket-proxy`: serve the Engine API allowlist, or `--check` one that runs."""

from __future__ import annotations

from typing import Annotated

import typer


def socket_proxy(
    listen: Annotated[
        str, typer.Option("--listen", help="HOST:PORT or unix:/path to serve on")
    ] = "127.0.0.1:2375",
    upstream: Annotated[
        str, typer.Option("--upstream", help="The engine: unix:///path or http://host:port")
    ] = "unix:///var/run/docker.sock",
    check: Annotated[
        bool, typer.Option("--check", help="Exit 0 if a proxy on --listen answers /_ping")
    ] = False,
) -> None:
    """Forward only the Engine API calls devpush's docker runtime makes (docs/socket-proxy.md)."""
    from devpush.socketproxy.server import check as ping
    from devpush.socketproxy.server import parse_listen, serve

    try:
        parse_listen(listen)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if check:
        raise typer.Exit(0 if ping(listen) else 1)
    try:
        serve(listen, upstream)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    app.command("socket-proxy")(socket_proxy)
