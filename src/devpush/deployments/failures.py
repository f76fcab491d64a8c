"""Why a build failed: the line of its output most likely to say so."""

from __future__ import annotations

import re

from devpush.db import session_scope
from devpush.platform import Platform

# Lines of a failed build that say why, most useful first; and noise that never does.
_CAUSE = re.compile(
    r"error|not found|no solution|unsatisfiable|failed|cannot|unable|denied|killed|no such|"
    r"no space left",
    re.I,
)
_NOISE = re.compile(
    r"complete log of this run|^npm (error|ERR!) (code|path|errno|syscall)\b"
    r"|^npm (error|ERR!) notsup (Valid|Actual)"
)


async def failure_cause(p: Platform, deployment_id: str) -> str | None:
    """The line of a failed build's output that most likely says why (for the one-line
    error a user reads first), or None when the build printed nothing."""
    async with session_scope(p.sessions) as session:
        lines = await p.log_store.tail(
            session=session, deployment_id=deployment_id, phases=("build", "pre_deploy"), limit=60
        )
    messages = [m for line in lines if (m := line.message.strip()) and not _NOISE.search(m)]
    found = next((m for m in reversed(messages) if _CAUSE.search(m)), None)
    cause = found or (messages[-1] if messages else None)
    return cause[:300] if cause else None
