"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

import logging
from difflib import get_close_matches
from http import HTTPStatus
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
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


def validation_errors(exc: RequestValidationError, body_type: Any = None) -> list[dict[str, Any]]:
    """pydantic's errors as [{loc, msg}], in words that say what to send instead.

    A JSON syntax error gives its line, column and reason. Unknown fields come first,
    each naming the closest field that `body_type` (the route's body) takes at its
    place; a required field missing beside its near miss says so. A string or a
    boolean for a number says which it got.
    """
    errors = _best_members(list(exc.errors()))
    near = _near_misses(errors, body_type)
    sent_as = {(*loc[:-1], hint): loc[-1] for loc, hint in near.items()}
    first: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for err in errors:
        loc = tuple(err["loc"])
        msg = _message(err, exc.body, near.get(loc), sent_as.get(loc))
        if err.get("type") == "json_invalid":
            loc = loc[:1]
        out = _untagged(loc)
        if err.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            out.append(str(err.get("ctx", {}).get("discriminator", "")).strip("'"))
        entry = {"loc": out, "msg": msg}
        (first if err.get("type") == "extra_forbidden" else rest).append(entry)
    return first + rest


#: pydantic's error types for a value that is not a number of the field's kind.
_NUMBER_ERRORS = {"int_type": "an integer", "float_type": "a number"}


def _message(err: Any, body: Any, hint: str | None, sent_as: str | None) -> str:
    kind, value = err.get("type"), err.get("input")
    if kind == "json_invalid":
        return _json_syntax(body, err["loc"][-1], err.get("ctx", {}).get("error", "invalid JSON"))
    if kind == "extra_forbidden":
        field = err["loc"][-1]
        return f"unknown field {field!r}" + (f"; did you mean {hint!r}?" if hint else "")
    if kind == "missing" and sent_as is not None:
        return f"Field required (was it sent as {sent_as!r}?)"
    if kind in _NUMBER_ERRORS and isinstance(value, (str, bool)):
        got = "a boolean" if isinstance(value, bool) else "a string"
        return f"expected {_NUMBER_ERRORS[kind]}, not {got}"
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def _json_syntax(body: Any, pos: Any, reason: str) -> str:
    """Where in the request body the JSON broke, as line and column (both from 1)."""
    if not isinstance(body, str) or not isinstance(pos, int):
        return f"JSON syntax error: {reason}"
    line = body.count("\n", 0, pos) + 1
    column = pos - body.rfind("\n", 0, pos)
    return f"JSON syntax error at line {line}, column {column}: {reason}"


def _near_misses(errors: list[Any], body_type: Any) -> dict[tuple[Any, ...], str]:
    """For each unknown field's location, the closest field the body takes there."""
    out = {}
    for err in errors:
        loc = tuple(err["loc"])
        if err.get("type") != "extra_forbidden" or body_type is None or loc[:1] != ("body",):
            continue
        known = sorted({f for m in _models_at(body_type, loc[1:-1]) for f in m.model_fields})
        near = get_close_matches(str(loc[-1]), known, n=1)
        if near:
            out[loc] = near[0]
    return out


def _models_at(root: Any, path: tuple[Any, ...]) -> list[type[BaseModel]]:
    """The models that can stand at `path` (a pydantic error location, union tags
    included) inside a value of type `root`."""
    here = _members(root)
    for part in path:
        here = [t for each in here for t in _step(each, part)]
    return [t for t in here if isinstance(t, type) and issubclass(t, BaseModel)]


def _members(tp: Any) -> list[Any]:
    """The types a value of `tp` can have: Annotated and Optional unwrapped, unions split."""
    if get_origin(tp) is Annotated:
        return _members(get_args(tp)[0])
    if get_origin(tp) in (Union, UnionType):
        return [t for arg in get_args(tp) for t in _members(arg)]
    return [tp]


def _step(tp: Any, part: Any) -> list[Any]:
    """The types one location step below `tp`: a field, a list item or a union's tag."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(part) if isinstance(part, str) else None
        if field is not None:
            return _members(field.annotation)
        tags = (get_args(f.annotation) for f in tp.model_fields.values())
        return [tp] if any(part in args for args in tags) else []
    if get_origin(tp) is list and isinstance(part, int):
        return _members(get_args(tp)[0])
    return []


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


#: The member labels pydantic puts in the location of a plain union (`float | list[float]`).
_MEMBER_LABELS = {"float", "int", "str", "bool", "none", "list", "dict"}


def _untagged(loc: tuple[Any, ...]) -> list[Any]:
    """Drop the tags pydantic puts in the location of a union: a tagged union's
    discriminator value, and a plain union's member label ("constrained-float")."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        after = loc[i - 1] if i else None
        if part in _TAGS and (after == "body" or after == "dataset"):
            continue
        if not _is_member_label(part):
            out.append(part)
    return out


def _best_members(errors: list[Any]) -> list[Any]:
    """The errors of a plain union's members that fit the input's kind.

    `weight_decay: float | list[float]` given [] fails as a float and as a list; only
    the list's error ("at least 1 item") helps. A member whose only error is that
    the input is not of its type is dropped when another member got further; when
    none did, the first member speaks for all.
    """
    unions: dict[tuple[Any, ...], dict[Any, list[Any]]] = {}
    for err in errors:
        loc = tuple(err["loc"])
        k = next((i for i, part in enumerate(loc) if _is_member_label(part)), None)
        if k is not None:
            unions.setdefault(loc[:k], {}).setdefault(loc[k], []).append(err)
    dropped: set[int] = set()
    for members in unions.values():
        groups = list(members.values())
        misfits = [g for g in groups if all(_misfit(e) for e in g)]
        for group in misfits if len(misfits) < len(groups) else groups[1:]:
            dropped |= {id(e) for e in group}
    return [e for e in errors if id(e) not in dropped]


def _misfit(err: Any) -> bool:
    """Whether the error only says the input is not of the member's type."""
    loc = err["loc"]
    return str(err.get("type", "")).endswith("_type") and _is_member_label(loc[-1])


def _is_member_label(part: Any) -> bool:
    return isinstance(part, str) and (
        part in _MEMBER_LABELS or part.startswith("constrained-") or "[" in part
    )


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem+json."""

    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        return problem(exc.status, exc.detail, errors=exc.errors, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        body_field = getattr(request.scope.get("route"), "body_field", None)
        errors = validation_errors(exc, body_field and body_field.field_info.annotation)
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
