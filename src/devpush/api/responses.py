"""Responses for hot read routes."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response


def json_response(content: Any) -> Response:
    """Plain data (dicts, lists, strings, numbers, enums, datetimes) encoded once by orjson,
    for a list whose items are built as dicts rather than models: no model per item to build,
    validate and dump. Datetimes come out as pydantic writes them (UTC as `Z`). The route keeps
    its `response_model` for the OpenAPI document; a test holds the two equal."""
    return Response(orjson.dumps(content, option=orjson.OPT_UTC_Z), media_type="application/json")
