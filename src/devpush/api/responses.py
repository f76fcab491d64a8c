"""Responses for hot read routes."""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel


def model_json(model: BaseModel) -> Response:
    """The model serialized once, in pydantic-core. A route that returns the model itself has
    FastAPI dump it, validate the dump against `response_model` again and encode it a third
    time; a route declared with the same `response_model` keeps its OpenAPI schema."""
    return Response(model.model_dump_json(), media_type="application/json")
