"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.db import OUTAGES, outage_cause

log = logging.getLogger("benignity.api")
MEDIA_TYPE = "application/problem+json"
#: Seconds a client is asked to wait when the database is away.
OUTAGE_RETRY_AFTER = 5


def problem(
    status: int,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    type_: str | None = None,
) -> JSONResponse:
    """A problem+json response."""
    title = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": type_ or f"https://benignity.dev/problems/{title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


class ProblemError(Exception):
    """Raise from a handler to answer with a problem."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors, self.headers = status, detail, errors, headers


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """pydantic's errors as [{loc, msg}], with the offending input's type where useful."""
    out = []
    for err in exc.errors():
        msg = err.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        loc = _untagged(err["loc"])
        if err.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            loc.append(str(err.get("ctx", {}).get("discriminator", "")).strip("'"))
        out.append({"loc": loc, "msg": msg})
    return out


_TAGS = {
    "optimum",
    "census",
    "training",
    "teacher",
    "orthogonal",
    "theorem2",
    "correlated",
    "custom",
}


def _untagged(loc: tuple[Any, ...]) -> list[Any]:
    """Drop the discriminator tags pydantic puts in the location of a tagged union."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        after = loc[i - 1] if i else None
        if part in _TAGS and (after == "body" or after == "dataset"):
            continue
        out.append(part)
    return out


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem+json."""

    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        return problem(exc.status, exc.detail, errors=exc.errors, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc)
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        detail = f"{where}: {first['msg']}" + (
            f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        )
        return problem(422, detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    async def _outage(request: Request, exc: Exception) -> JSONResponse:
        log.warning(
            "database unavailable on %s %s: %s", request.method, request.url.path, outage_cause(exc)
        )
        return problem(
            503,
            f"the database is unavailable; retry after {OUTAGE_RETRY_AFTER} s (a submission "
            "retried with the same Idempotency-Key is never doubled)",
            headers={"Retry-After": str(OUTAGE_RETRY_AFTER)},
        )

    for outage in OUTAGES:
        app.add_exception_handler(outage, _outage)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal error; it has been logged")
