"""ASGI middleware: request body limit, JSON bodies only, request metrics and the pollers'
fast path."""

from __future__ import annotations

import json
import re
import time
from types import SimpleNamespace

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import get_settings
from service.crud import ID_PATTERN
from service.deps import PRINCIPAL, identify
from service.problems import ProblemError, problem
from service.responses import etag_of, matches

#: Methods that get their own label; any other method is counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUESTS = Counter("benignity_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("benignity_http_request_seconds", "HTTP request latency", ["method", "route"])


class BodyLimit:
    """Answer 413 problem+json when a request body exceeds `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send, int(declared))
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(send, size)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send, size: int) -> None:
        body = json.dumps(
            {
                "type": "https://benignity.dev/problems/content-too-large",
                "title": "Content Too Large",
                "status": 413,
                "detail": f"request body of {size}+ bytes is over the limit of "
                f"{self.max_bytes} bytes",
            }
        ).encode()
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


#: Methods whose body, when they have one, must be JSON.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class JsonOnly:
    """Answer 415 problem+json to a POST, PUT or PATCH whose body is not declared as JSON.

    A request without a body (Content-Length 0, no chunked encoding) passes, so
    `POST .../cancel` needs no Content-Type; one with a body must say
    `application/json` (or a `+json` type), which `curl -d` and form posts do not.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"0").strip()
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        has_body = chunked or not length.isdigit() or int(length) > 0
        declared = headers.get(b"content-type", b"").decode("latin-1")
        if not has_body or _is_json(declared):
            await self.app(scope, receive, send)
            return
        got = f"Content-Type {declared!r}" if declared else "no Content-Type"
        detail = (
            "the request body must be JSON: send it with `Content-Type: application/json` "
            f"(this request has {got})"
        )
        error = {"loc": ["header", "Content-Type"], "msg": detail}
        answer = problem(415, detail, errors=[error], headers={"Connection": "close"})
        await answer(scope, receive, send)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class Metrics:
    """Count and time every request by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = _route_of(scope)
            method = scope["method"] if scope["method"] in METHODS else "other"
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(time.perf_counter() - start)


def _route_of(scope: Scope) -> str:
    """The matched route's template (never the raw path), or "unmatched"."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


#: The route a poll answered from the cache is counted under.
POLL_ROUTE = SimpleNamespace(path="/v1/experiments/{experiment_id}")
POLL_PATH = re.compile(f"/v1/experiments/({ID_PATTERN})")


class PollFastPath:
    """Answer a repeated `GET /v1/experiments/{id}` from the poll cache before routing.

    Pollers are most of a busy API's requests; a cache hit here costs the caller's
    identification and a few bytes copied, not FastAPI's routing and dependency
    resolution. The caller is identified exactly as `deps.require_token` does and
    sees only its tenant's entries. Anything else (a miss, a query string, an
    authentication problem) goes on to the app, which answers as always; the
    caller identified here is passed along, so its rate is counted once.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            POLL_PATH.fullmatch(scope["path"])
            if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]
            else None
        )
        if match is None:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization")
        try:
            who = identify(
                get_settings(), state.rate_limit, authorization and authorization.decode("latin-1")
            )
        except ProblemError:
            await self.app(scope, receive, send)  # the app answers the problem as always
            return
        scope[PRINCIPAL] = who
        body = state.polls.peek((match.group(1), who.scope))
        if body is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = POLL_ROUTE
        tag = etag_of(body)
        fresh = matches(headers.get(b"if-none-match", b"").decode("latin-1"), tag)
        out = [(b"etag", tag.encode())]
        if not fresh:
            out += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 304 if fresh else 200, "headers": out})
        await send({"type": "http.response.body", "body": b"" if fresh else body})
