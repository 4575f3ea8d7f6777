"""The OpenAPI document as the server behaves, and the docs pages that show it offline.

FastAPI's generated document is amended in one pass over every operation (`amend`), so
routes added later get the same treatment without declaring anything:

- every 4xx and 5xx response is application/problem+json (`Problem`), FastAPI's
  HTTPValidationError 422 included, and the errors any operation can give are listed
  (401, 404, 422 and 429 on /v1; 400, 413 and 415 where there is a body; 409 on DELETE;
  412 with If-Match, 304 with If-None-Match; 500 and 503);
- a path ending in `.png`, `.svg`, `.parquet` or `.csv`, or in `.{param}` whose values
  are those suffixes, answers with their media types, not JSON;
- POST /v1/experiments shows one example spec per kind.

The bearer security scheme comes from `service.deps` (HTTPBearer). `/docs` and `/redoc`
load Swagger UI and ReDoc from the pinned `fastapi-offline` package's static files,
served here, so they work on a machine without internet access.
"""

from __future__ import annotations

import copy
import re
from http import HTTPStatus
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from service.problems import MEDIA_TYPE as PROBLEM_MEDIA

Schema = dict[str, Any]

#: Where the docs pages' JavaScript, CSS and icon are served from.
ASSETS = "/docs-assets"
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"

#: Media types of file-like responses, by the path's suffix; binary first.
MEDIA_TYPES = {
    "png": "image/png",
    "svg": "image/svg+xml",
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv",
}
TEXT_TYPES = {"text/csv"}
#: Non-JSON answers of fixed paths.
PLAIN = {"/metrics": "text/plain"}

#: The errors any /v1 operation can give (auth, unknown id or parameter, rate limit).
V1_ERRORS = (401, 404, 422, 429)
#: The errors of an operation with a request body (unreadable, too large, not JSON).
BODY_ERRORS = (400, 413, 415)
#: The errors of every operation (a crash, the database away).
ALL_ERRORS = (500, 503)

PROBLEM_SCHEMA: Schema = {
    "title": "Problem",
    "description": "An RFC 9457 problem: every 4xx and 5xx answer of the API.",
    "type": "object",
    "properties": {
        "type": {"type": "string", "description": "a URI naming the kind of problem"},
        "title": {"type": "string", "description": "the status's phrase"},
        "status": {"type": "integer", "description": "the HTTP status"},
        "detail": {"type": "string", "description": "what went wrong, for a person"},
        "errors": {
            "type": "array",
            "description": "bad input: one entry per offending field",
            "items": {"$ref": "#/components/schemas/ProblemField"},
        },
    },
    "required": ["type", "title", "status", "detail"],
}
PROBLEM_FIELD_SCHEMA: Schema = {
    "title": "ProblemField",
    "description": "One offending input and the reason.",
    "type": "object",
    "properties": {
        "loc": {
            "type": "array",
            "description": 'where: e.g. ["body", "dataset", "n"] or ["query", "limit"]',
            "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        },
        "msg": {"type": "string", "description": "why it was refused"},
    },
    "required": ["loc", "msg"],
}
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
}
HEADERS = {
    401: {
        "WWW-Authenticate": {"description": "the bearer challenge", "schema": {"type": "string"}}
    },
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}

#: One quick spec per kind, shown on POST /v1/experiments.
SPEC_EXAMPLES: dict[str, Schema] = {
    "optimum": {
        "summary": "The certified global optimum of a small teacher dataset",
        "value": {
            "kind": "optimum",
            "dataset": {"generator": "teacher", "n": 6, "d": 10, "seed": 1},
            "weight_decay": 0.01,
        },
    },
    "census": {
        "summary": "Which sampled cones hold a global minimum, at three widths",
        "value": {
            "kind": "census",
            "dataset": {"generator": "teacher", "n": 4, "d": 8, "seed": 0},
            "weight_decay": 0.01,
            "widths": [2, 8, 160],
            "samples_per_width": 12,
        },
    },
    "training": {
        "summary": "Gradient descent from two scales, two seeds each",
        "value": {
            "kind": "training",
            "dataset": {"generator": "custom", "X": [[0.6, 0.8, 0.0]], "y": [1.5]},
            "weight_decay": 0.1,
            "widths": [3, 10],
            "init_scales": [0.01, 1.0],
            "seeds": 2,
            "optimizer": {"name": "gd", "lr": 0.05},
            "max_epochs": 20000,
            "device": "cpu",
        },
    },
}


def operation_id(route: APIRoute) -> str:
    """A route's operationId: its handler's name (`submit`, `get_experiment`), which a
    generated client makes its function's name; `amend` tells apart any two that clash."""
    return route.name


def install(app: FastAPI) -> None:
    """Serve the amended document at /openapi.json, and /docs and /redoc offline."""
    generate = app.openapi

    def openapi() -> Schema:
        if app.openapi_schema is None:
            app.openapi_schema = amend(copy.deepcopy(generate()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(ASSETS, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def amend(doc: Schema) -> Schema:
    """The document with problem+json errors, file media types and spec examples."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas["ProblemField"] = PROBLEM_FIELD_SCHEMA
    taken: set[str] = set()
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            if op.get("operationId") in taken:  # two handlers of one name
                op["operationId"] += "_" + re.sub(r"\W+", "_", f"{method}{path}").strip("_")
            taken.add(op.get("operationId", ""))
            _errors(path, method, op)
            _media(path, op, doc)
            if (path, method) == ("/v1/experiments", "post"):
                body = op["requestBody"]["content"]["application/json"]
                body["examples"] = SPEC_EXAMPLES
    for unused in ("HTTPValidationError", "ValidationError"):
        if not _referenced(doc, f"#/components/schemas/{unused}"):
            schemas.pop(unused, None)
    return doc


def _errors(path: str, method: str, op: Schema) -> None:
    """Every 4xx and 5xx as problem+json; the generic ones added where missing."""
    responses = op.setdefault("responses", {})
    codes = list(ALL_ERRORS)
    if path.startswith("/v1/"):
        codes += V1_ERRORS
    if "requestBody" in op:
        codes += BODY_ERRORS
    headers = {p["name"].lower() for p in op.get("parameters", []) if p.get("in") == "header"}
    if "if-match" in headers:
        codes.append(412)  # the client's ETag is stale
    if method == "delete":
        codes.append(409)  # not in a state that allows it
    for code in codes:
        responses.setdefault(str(code), {})
    if "if-none-match" in headers:
        responses.setdefault("304", {"description": "Not Modified: the client's ETag matches"})
    for code, response in responses.items():
        if code.isdigit() and 400 <= int(code) < 600 and _problem_shaped(response):
            status = int(code)
            response["description"] = HTTPStatus(status).phrase
            response["content"] = {
                PROBLEM_MEDIA: {"schema": {"$ref": "#/components/schemas/Problem"}}
            }
            if status in HEADERS:
                response["headers"] = HEADERS[status]
    op["responses"] = dict(sorted(responses.items(), key=lambda kv: kv[0].rjust(3, "0")))


def _problem_shaped(response: Schema) -> bool:
    """Whether a declared error response is FastAPI's default or empty (a problem), rather
    than a model of its own (e.g. /readyz's 503 Health)."""
    content = response.get("content") or {}
    refs = [m.get("schema", {}).get("$ref", "") for m in content.values()]
    return not content or all(r.endswith("/HTTPValidationError") for r in refs)


def _media(path: str, op: Schema, doc: Schema) -> None:
    """The 200 of a file-like path in its real media types."""
    suffixes = _suffixes(path, op, doc)
    if path in PLAIN:
        types = [PLAIN[path]]
    elif suffixes:
        types = [MEDIA_TYPES[s] for s in MEDIA_TYPES if s in suffixes]
    else:
        return
    ok = op.get("responses", {}).get("200")
    if ok is None:
        return
    ok["content"] = {
        t: {"schema": {"type": "string"} if t in TEXT_TYPES or t in PLAIN.values() else _BINARY}
        for t in types
    }


_BINARY: Schema = {"type": "string", "format": "binary"}


def _suffixes(path: str, op: Schema, doc: Schema) -> set[str]:
    """The file suffixes a path can end in: `x.png`, or `x.{fmt}` with fmt's values."""
    last = path.rsplit("/", 1)[-1]
    if "." not in last:
        return set()
    suffix = last.rsplit(".", 1)[1]
    if suffix in MEDIA_TYPES:
        return {suffix}
    if not (suffix.startswith("{") and suffix.endswith("}")):
        return set()
    name = suffix[1:-1]
    for param in op.get("parameters", []):
        if param.get("in") == "path" and param.get("name") == name:
            return {v for v in _enum(param.get("schema", {}), doc) if v in MEDIA_TYPES}
    return set()


def _enum(schema: Schema, doc: Schema) -> list[Any]:
    """The values a (possibly referenced or combined) schema allows."""
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = doc["components"]["schemas"].get(ref.rsplit("/", 1)[1], {})
    values = list(schema.get("enum", []))
    if "const" in schema:
        values.append(schema["const"])
    for part in schema.get("anyOf", []) + schema.get("oneOf", []):
        values += _enum(part, doc)
    return values


def _referenced(node: Any, ref: str) -> bool:
    if isinstance(node, dict):
        return node.get("$ref") == ref or any(_referenced(v, ref) for v in node.values())
    if isinstance(node, list):
        return any(_referenced(v, ref) for v in node)
    return False
