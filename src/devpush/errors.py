"""The devpush error tree. Every layer raises these; one handler turns them into HTTP answers.

DevpushError
 ├── NotFound           (404) the resource does not exist or the caller may not see it
 ├── Unauthorized       (401) no valid credentials
 ├── Forbidden          (403) visible, but the caller's role or token scope forbids the action
 ├── Invalid            (422) the input is wrong; nothing was changed
 ├── Conflict           (409) the action clashes with the current state
 ├── RateLimited        (429) too many requests; retry after `retry_after` seconds
 ├── NotConfigured      (409) an optional feature (GitHub, SMTP, ...) is not set up here
 ├── ServiceUnavailable (503) PostgreSQL, Redis or a runtime does not answer
 ├── ConfigError        (500) the platform is misconfigured; the message says how to fix it
 └── RuntimeFailure     (502) the Docker/Podman API, git or Traefik failed
"""

from __future__ import annotations


class DevpushError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class NotFound(DevpushError):
    status_code = 404
    code = "not_found"


class Unauthorized(DevpushError):
    status_code = 401
    code = "unauthorized"


class Forbidden(DevpushError):
    status_code = 403
    code = "forbidden"


class Invalid(DevpushError):
    status_code = 422
    code = "invalid"


class Conflict(DevpushError):
    status_code = 409
    code = "conflict"


class RateLimited(DevpushError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotConfigured(DevpushError):
    status_code = 409
    code = "not_configured"


class ServiceUnavailable(DevpushError):
    status_code = 503
    code = "unavailable"


class ConfigError(DevpushError):
    status_code = 500
    code = "config_error"


class RuntimeFailure(DevpushError):
    status_code = 502
    code = "runtime_error"
