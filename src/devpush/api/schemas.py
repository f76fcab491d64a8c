"""Shapes shared by several routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class DeletionAccepted(BaseModel):
    """A deletion runs as a job; the resource is hidden at once and removed shortly."""

    id: str
    status: Literal["deleting"] = "deleting"
