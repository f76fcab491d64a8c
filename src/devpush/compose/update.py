"""`devpush update`: the new image's migrations first, then a blue-green swap.

1. Run `devpush migrate` in a one-off container of the new image. If it fails, stop: the old
   version keeps running and nothing was switched.
2. App: start the other colour next to the running one (it opens its PostgreSQL and Redis
   connections before it serves: `Platform.warm`), wait for its healthcheck, have it
   rewrite Traefik's platform file (the dashboard route), confirm on Traefik's API that the
   route points at it, let in-flight requests finish, then stop the old colour gracefully.
3. Worker: start the other colour, wait healthy, stop the old one (arq jobs are idempotent;
   an interrupted one is retried).
4. Other components (`--components monitor,...`) are recreated in place (a short gap for
   that component only: the socket proxy's callers retry, the monitor catches up).

Deployed apps are separate containers routed by their own dynamic files: they keep serving.
"""

from __future__ import annotations

import time

from devpush.compose.engine import ComposeError
from devpush.compose.service import COLOURED, COLOURS, ComposeStack, Say, quiet

DRAIN_SECONDS = 3.0


def other(colour: str) -> str:
    return COLOURS[1 - COLOURS.index(colour)]


def update(stack: ComposeStack, components: list[str], say: Say = quiet) -> dict[str, str]:
    """Update `components` to the configured image; returns the active colours after."""
    stack.prepare()
    colours = stack.colours()
    coloured = [c for c in COLOURED if c in components]
    if coloured:
        target = stack.service(coloured[0], other(colours[coloured[0]]))
        image = stack.values().get("DEVPUSH_IMAGE", "")
        if image and not image.startswith("localhost/"):
            say(f"pulling {image}")  # a moved tag (`:latest`) is not pulled by `up`
            stack.compose.run("pull", target)
        say(f"running database migrations with the new image ({target})")
        _remove(stack, [target])
        try:
            stack.migrate(target)
        except ComposeError as exc:
            running = ", ".join(stack.service(c) for c in coloured)
            raise ComposeError(
                f"{exc.message}\nupdate aborted before switching anything: {running} keep "
                "running the old version; fix the migration (or DEVPUSH_IMAGE) and run "
                "`devpush update` again"
            ) from exc
    for component in coloured:
        colours[component] = _swap(stack, component, colours[component], say)
        stack.save_colours(colours)
    for component in components:
        if component in COLOURED:
            continue
        say(f"recreating {component}")
        # Removed first, then created: podman-compose's own recreate (`up --force-recreate`)
        # also tears down the running services that depend on it, the app among them.
        _remove(stack, [component])
        stack.compose.run("up", "-d", "--no-deps", component)
        stack.wait_healthy([component])
    return colours


def _swap(stack: ComposeStack, component: str, old_colour: str, say: Say) -> str:
    new_colour = other(old_colour)
    old, new = stack.service(component, old_colour), stack.service(component, new_colour)
    _remove(stack, [new])  # a leftover from an interrupted update
    say(f"starting {new} next to {old}")
    stack.compose.run("up", "-d", "--no-deps", new)
    try:
        stack.wait_healthy([new])
        if component == "app":
            say(f"switching the dashboard route to {new}")
            stack.route_dashboard(new)
            stack.confirm_route(new)
            time.sleep(DRAIN_SECONDS)  # requests already sent to the old app finish there
    except ComposeError as exc:
        problems = [str(exc)]
        if component == "app":
            problems += _restore_route(stack, old)
        _remove(stack, [new])
        raise ComposeError(
            "\n".join(problems) + f"\nupdate aborted: {old} keeps running and serving"
        ) from exc
    say(f"stopping {old}")
    stack.compose.run("stop", old)
    _remove(stack, [old])
    return new_colour


def _restore_route(stack: ComposeStack, service: str) -> list[str]:
    """Point the dashboard back at `service`; the problems met doing so."""
    try:
        stack.route_dashboard(service)
    except ComposeError as exc:
        return [f"and the dashboard route could not be pointed back at {service}: {exc}"]
    return []


def _remove(stack: ComposeStack, services: list[str]) -> None:
    """Remove the services' containers (podman-compose has no `rm`: ask the engine)."""
    for service in services:
        for container in stack.compose.containers(service):
            stack.compose.engine_run("rm", "-f", container.id)
