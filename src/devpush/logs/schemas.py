"""Log API shapes: one stored line, and a page of search results."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class LogLineRead(BaseModel):
    seq: int = Field(description="Order within the deployment; the SSE event id of the line.")
    ts: datetime = Field(description="When the runtime read the line (UTC).")
    stream: str = Field(description="stdout or stderr.")
    phase: str = Field(description="system, build, pre_deploy or runtime.")
    level: str | None = Field(description="debug, info, warn, error or fatal, when detected.")
    message: str
    deployment_id: str
    environment_id: str | None
    branch: str | None
    replica: int | None = Field(
        None, description="The replica that wrote it (0 ran the build); null for the platform's."
    )


class LogLinePage(BaseModel):
    items: list[LogLineRead] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as before_cursor for the next (older) page; null on the last page."
    )
