"""Turns the devpush error tree and validation errors into `{"error": {code, message}}`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from devpush.errors import DevpushError, RateLimited


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse({"error": body}, status_code=status)


def _describe(errors: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    details = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        details.append({"field": loc, "message": err.get("msg", "invalid")})
    summary = "; ".join(f"{d['field'] or 'body'}: {d['message']}" for d in details[:5])
    return summary or "the request is invalid", details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DevpushError)
    async def _devpush(request: Request, exc: DevpushError) -> JSONResponse:
        response = error_response(exc.status_code, exc.code, exc.message)
        if isinstance(exc, RateLimited):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _describe(list(exc.errors()))
        return error_response(422, "invalid", message, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's "error parsing the body": bad input like the rest
            return error_response(422, "invalid", "the request body is not valid UTF-8 JSON")
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        return error_response(exc.status_code, codes.get(exc.status_code, "error"), str(exc.detail))


# Documented on every API route, so the OpenAPI document lists the error shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing, malformed, expired or revoked token"},
    403: {"model": ErrorBody, "description": "Role or token scope too small"},
    404: {"model": ErrorBody, "description": "Not found, or not visible to the caller"},
    409: {"model": ErrorBody, "description": "Clashes with the current state"},
    413: {"model": ErrorBody, "description": "Request body over 2 MiB"},
    422: {"model": ErrorBody, "description": "Invalid input; nothing was changed"},
    429: {"model": ErrorBody, "description": "Rate limited; see Retry-After"},
}
