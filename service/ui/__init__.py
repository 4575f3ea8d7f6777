"""The lab dashboard at /ui: a read-only, hand-written JavaScript page over the /v1 API.

The page itself, its script and its stylesheet are served without auth (they hold no
data); every number it shows comes from the /v1 endpoints, requested by the browser with
the bearer token the user types into the page, so the tenants' rules are the API's own.
Nothing loads from outside the service: Plotly's bundle is served from the installed
`plotly` package (its package data), and the Content-Security-Policy forbids other
origins. The numbers drawn are the ones shared/SCIENCE.md sections 3 to 6 define (the
optimum and its certificate, census shares against width, training verdicts and gaps).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from functools import cache
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

STATIC = Path(__file__).parent / "static"

#: name -> media type of the files the page loads; nothing else is served.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "plotly.min.js": "text/javascript; charset=utf-8",
}

#: Only this origin; Plotly sets inline styles on what it draws and exports PNGs as data URLs.
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


def plotly_bundle() -> Path:
    """plotly.min.js as the installed `plotly` package ships it (found without importing
    the Python package)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is not installed (pip install plotly==7.1.0)")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


@cache
def _asset(name: str) -> tuple[bytes, bytes, str]:
    """(body, its gzip, ETag) of an asset, read once per process."""
    path = plotly_bundle() if name == "plotly.min.js" else STATIC / name
    body = path.read_bytes()
    return body, gzip.compress(body, 6, mtime=0), f'"{hashlib.sha256(body).hexdigest()[:32]}"'


@cache
def _page() -> bytes:
    return (STATIC / "index.html").read_bytes()


# Plain (not async) handlers: FastAPI runs them in its thread pool, so the first read and
# gzip of plotly.min.js (4.8 MB) never stalls the event loop that answers every other request.
@router.get("/ui")
@router.get("/ui/")
def page() -> Response:
    """The dashboard's one HTML page (its routes are in the URL's fragment)."""
    body = _page()
    return Response(
        body,
        media_type="text/html; charset=utf-8",
        headers={**HEADERS, "Cache-Control": "no-cache"},
    )


@router.get("/ui/assets/{name}")
def asset(name: str, request: Request) -> Response:
    """The page's script, stylesheet and Plotly; gzip when the browser takes it,
    revalidated by ETag."""
    if name not in ASSETS:
        raise HTTPException(404, f"no asset {name!r}")
    body, packed, etag = _asset(name)
    headers = {**HEADERS, "ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(
            packed, media_type=ASSETS[name], headers={**headers, "Content-Encoding": "gzip"}
        )
    return Response(body, media_type=ASSETS[name], headers=headers)
