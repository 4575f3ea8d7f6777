"""JSON responses serialised off the event loop, with ETags.

Handlers build their pydantic response inside the database thread and serialise
it there (`body_of`), so the event loop only moves bytes. Every JSON body gets a
strong ETag; a matching If-None-Match gets 304 with no body.
"""

from __future__ import annotations

import hashlib

from fastapi import Request, Response
from pydantic import BaseModel

JSON = "application/json"


def body_of(model: BaseModel) -> bytes:
    """The model's JSON, as the response will carry it."""
    return model.model_dump_json().encode()


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def json_response(
    request: Request,
    body: bytes,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """`body` as application/json with an ETag; 304 when the client already has it."""
    tag = etag_of(body)
    out = {"ETag": tag, **(headers or {})}
    if status_code == 200 and matches(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=out)
    return Response(body, status_code=status_code, media_type=JSON, headers=out)


def matches(header: str | None, tag: str) -> bool:
    """Whether an If-None-Match header names `tag` (or *)."""
    if not header:
        return False
    given = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in given or tag in given
