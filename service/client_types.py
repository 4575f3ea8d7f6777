"""The client's errors and models (service/client.py); pydantic and httpx only.

Models take extra fields: what the server adds later comes through as extras rather
than being dropped or refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, PrivateAttr

TERMINAL = ("succeeded", "failed", "cancelled")

# --- errors -------------------------------------------------------------------------------


class BenignityError(Exception):
    """Anything the client raises on purpose."""


class Unreachable(BenignityError):
    """The server could not be reached (after the retries)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url} ({reason})")
        self.url, self.reason = url, reason


class BadAnswer(BenignityError):
    """The server answered, but not with what the API promises (a proxy's page, say)."""


class ApiError(BenignityError):
    """An error answer of the API, from its problem+json body."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail = status, title, detail
        self.errors = errors or []
        self.type = type
        self.headers = dict(headers or {})

    @classmethod
    def of(cls, resp: httpx.Response) -> ApiError:
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            kind = resp.headers.get("content-type", "no content type").split(";")[0]
            snippet = " ".join(resp.text.split())[:120]
            body = {
                "detail": f"{resp.request.method} {resp.request.url} answered {kind}, not "
                f"problem+json (is this the benignity API?){': ' + snippet if snippet else ''}"
            }
        klass = {404: NotFound, 409: Conflict, 412: PreconditionFailed}.get(resp.status_code, cls)
        return klass(
            resp.status_code,
            str(body.get("title") or resp.reason_phrase),
            str(body.get("detail") or ""),
            errors=body.get("errors") if isinstance(body.get("errors"), list) else None,
            type=body.get("type"),
            headers=resp.headers,
        )

    def names_param(self, name: str) -> bool:
        """Whether the error is about the query parameter `name` (an unknown one, say)."""
        return any(list(e.get("loc", []))[:2] == ["query", name] for e in self.errors)


class NotFound(ApiError):
    """404: no such experiment, run or resource (or another tenant's)."""


class Conflict(ApiError):
    """409: the experiment is not in a state that allows this (finished, running)."""


class PreconditionFailed(ApiError):
    """412: an If-Match ETag is stale; read again and retry."""


class AmbiguousId(BenignityError):
    """An id prefix that matches more than one experiment (or run)."""

    def __init__(self, prefix: str, candidates: list[str]) -> None:
        shown = ", ".join(candidates[:10]) + (", ..." if len(candidates) > 10 else "")
        super().__init__(f"id prefix {prefix!r} matches {len(candidates)}: {shown}")
        self.prefix, self.candidates = prefix, candidates


class WaitTimeout(BenignityError):
    """`wait` ran out of time; `experiment` is the last state seen."""

    def __init__(self, experiment: Experiment) -> None:
        super().__init__(f"experiment {experiment.id} is still {experiment.status}")
        self.experiment = experiment


# --- models -------------------------------------------------------------------------------


class _Model(BaseModel):
    # Fields the server adds later come through as extras rather than being dropped.
    model_config = ConfigDict(extra="allow")


class Progress(_Model):
    done: int
    total: int
    unit: str | None = None


class ErrorInfo(_Model):
    type: str
    detail: str


class Experiment(_Model):
    id: str
    kind: str
    status: str
    progress: Progress
    spec: dict[str, Any]
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: ErrorInfo | None = None
    result: dict[str, Any] | None = None
    name: str | None = None
    tags: list[str] = []
    notes: str | None = None
    _etag: str | None = PrivateAttr(default=None)

    @property
    def etag(self) -> str | None:
        """The ETag the server sent with this state (for If-None-Match and If-Match)."""
        return self._etag

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


class Run(_Model):
    id: str
    params: dict[str, Any]
    status: str
    verdict: str | None = None
    final: dict[str, Any] | None = None
    latest: dict[str, Any] | None = None


class Cone(_Model):
    width: int
    sample: int
    verdict: str
    value: float | None = None
    gap: float | None = None


T = TypeVar("T", bound=_Model)


class Page(_Model, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: "Leave this field as it is" for `patch` (None means "set it to null").
UNSET: Any = _Unset()
