"""A typed Python client of the HTTP API (shared/API.md); the `benignity` CLI uses it.

    from service.client import Client

    with Client() as bn:  # BENIGNITY_URL and BENIGNITY_TOKEN, else http://127.0.0.1:8000
        exp = bn.submit({"kind": "optimum", ...})  # an Idempotency-Key by default
        exp = bn.wait(exp.id)  # long-polls GET /v1/experiments/{id}?wait=S
        frame = bn.runs_frame(exp.id)  # pandas, one row per run

Requests are retried with exponential backoff on connection errors, on 429 and (for
requests that are safe to repeat) on 5xx, honouring Retry-After. A submit carries an
Idempotency-Key, so a retried submit never creates a second experiment.

The module imports only httpx, pydantic and the standard library, so scripts and the
CLI start fast; pandas loads when a frame is asked for (`pip install 'benignity[pandas]'`).
"""

from __future__ import annotations

import io
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import httpx

from service.client_types import (
    TERMINAL,
    UNSET,
    AmbiguousId,
    ApiError,
    BadAnswer,
    BenignityError,
    Cone,
    Conflict,
    ErrorInfo,
    Experiment,
    NotFound,
    Page,
    PreconditionFailed,
    Progress,
    Run,
    T,
    Unreachable,
    WaitTimeout,
)

if TYPE_CHECKING:
    import pandas

__all__ = [
    "TERMINAL",
    "UNSET",
    "AmbiguousId",
    "ApiError",
    "BadAnswer",
    "BenignityError",
    "Client",
    "Cone",
    "Conflict",
    "ErrorInfo",
    "Experiment",
    "NotFound",
    "Page",
    "PreconditionFailed",
    "Progress",
    "Run",
    "Unreachable",
    "WaitTimeout",
]

DEFAULT_URL = "http://127.0.0.1:8000"
#: Seconds one long-poll asks the server to hold (the server caps it at 60).
LONG_POLL = 30
FULL_ID = 32
#: Statuses retried; 5xx only for requests that are safe to repeat.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

# --- the client ---------------------------------------------------------------------------


class Client:
    """The API at `base_url`, with retries; use as a context manager or call `close()`.

    Args:
        base_url: the API's root; default BENIGNITY_URL, else http://127.0.0.1:8000.
        token: a bearer token; default BENIGNITY_TOKEN.
        timeout: seconds per request (a long-poll adds the seconds it waits).
        retries: further attempts after a connection error, a 429 or a retriable 5xx.
        backoff: seconds before the first retry; each next one waits twice as long
            (with jitter), or as long as Retry-After says, at most `max_delay`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_delay: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("BENIGNITY_URL") or DEFAULT_URL).rstrip("/")
        token = token if token is not None else os.environ.get("BENIGNITY_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout, self.retries, self.backoff, self.max_delay = (
            timeout,
            retries,
            backoff,
            max_delay,
        )
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )
        self._long_poll = True  # until the server says it takes no `wait`

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- transport ----------------------------------------------------------------------

    def request(
        self, method: str, path: str, *, safe: bool | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One API call with retries; error statuses are returned, not raised.

        `safe` says whether repeating the request is harmless (default: every method but
        POST, and a POST with an Idempotency-Key). A refused connection is always
        retried: nothing reached the server.
        """
        if safe is None:
            safe = method != "POST" or "Idempotency-Key" in (kwargs.get("headers") or {})
        if "params" in kwargs:
            kwargs["params"] = _params(kwargs["params"])
        attempt = 0
        while True:
            try:
                resp = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                connect = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                hopeless = isinstance(exc, httpx.UnsupportedProtocol)
                if attempt >= self.retries or not (connect or safe) or hopeless:
                    raise Unreachable(self.base_url, _reason(exc)) from None
                delay = self._delay(attempt, None)
            else:
                retry = resp.status_code == 429 or (safe and resp.status_code in RETRY_STATUSES)
                if attempt >= self.retries or not retry:
                    return resp
                delay = self._delay(attempt, resp.headers.get("retry-after"))
                resp.close()
            time.sleep(delay)
            attempt += 1

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = self.backoff * 2**attempt * random.uniform(0.5, 1.0)
        asked = _retry_after(retry_after)
        if asked is not None:
            delay = max(delay, asked)
        return min(delay, self.max_delay)

    def _ok(self, resp: httpx.Response) -> httpx.Response:
        if resp.is_error:
            raise ApiError.of(resp)
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._ok(self.request(method, path, **kwargs))
        with self._answer(resp):
            return resp.json()

    def _bytes(self, path: str, **kwargs: Any) -> bytes:
        return self._ok(self.request("GET", path, **kwargs)).content

    def _experiment(self, resp: httpx.Response) -> Experiment:
        with self._answer(self._ok(resp)):
            exp = Experiment.model_validate(resp.json())
        exp._etag = resp.headers.get("etag")
        return exp

    @contextmanager
    def _answer(self, resp: httpx.Response) -> Iterator[None]:
        """Turn an answer that is not the JSON expected (a proxy's page, say) into BadAnswer."""
        try:
            yield
        except (ValueError, KeyError, TypeError) as exc:  # pydantic's ValidationError included
            raise BadAnswer(
                f"{resp.request.method} {resp.request.url} answered {resp.status_code} with "
                f"{resp.headers.get('content-type', 'no content type')}, not the JSON expected "
                f"({type(exc).__name__})"
            ) from exc

    def _pages(self, path: str, model: type[T], params: dict[str, Any]) -> Iterator[T]:
        cursor = None
        while True:
            resp = self._ok(self.request("GET", path, params={**params, "cursor": cursor}))
            with self._answer(resp):
                page = resp.json()
                items = [model.model_validate(item) for item in page["items"]]
                cursor = page.get("next_cursor")
            yield from items
            if not cursor:
                return

    # --- experiments --------------------------------------------------------------------

    def submit(
        self,
        spec: Mapping[str, Any] | str | bytes,
        idempotency_key: str | None = None,
        *,
        idempotent: bool = True,
    ) -> Experiment:
        """Submit a spec (a mapping, or JSON text sent as is); returns the new experiment.

        Every submit carries an Idempotency-Key (a fresh uuid4 unless given; none with
        `idempotent=False`): retries of it, and resubmits under the same key, return
        the one experiment the first created.
        """
        body = spec if isinstance(spec, str | bytes) else json.dumps(spec)
        headers = {"Content-Type": "application/json"}
        if idempotency_key or idempotent:
            headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
        return self._experiment(
            self.request("POST", "/v1/experiments", content=body, headers=headers)
        )

    def get(self, experiment_id: str) -> Experiment:
        """One experiment, with its progress and, once it succeeded, its result."""
        return self._experiment(self.request("GET", f"/v1/experiments/{experiment_id}"))

    def wait(
        self,
        experiment_id: str,
        timeout: float | None = None,
        on_progress: Callable[[Experiment], object] | None = None,
        *,
        poll: float = 0.5,
    ) -> Experiment:
        """Block until the experiment finishes; returns its final state.

        Long-polls `?wait=S` with If-None-Match, so each change arrives as it happens;
        against a server without long-polls it polls every `poll` seconds instead.
        `on_progress` gets the first state and each changed one. Raises WaitTimeout
        after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        exp = self.get(experiment_id)
        if on_progress:
            on_progress(exp)
        while not exp.finished:
            left = LONG_POLL if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(exp)
            new = self._next_state(exp, min(left, LONG_POLL), poll)
            if new is None:
                continue
            changed = (new.status, new.progress) != (exp.status, exp.progress)
            exp = new
            if changed and on_progress:
                on_progress(exp)
        return exp

    def _next_state(self, exp: Experiment, seconds: float, poll: float) -> Experiment | None:
        """The experiment's next state, or None if it did not change (304)."""
        path = f"/v1/experiments/{exp.id}"
        headers = {"If-None-Match": exp.etag} if exp.etag else {}
        started = time.monotonic()
        if self._long_poll:
            held = max(1, round(seconds))
            resp = self.request(
                "GET", path, params={"wait": held}, headers=headers, timeout=held + self.timeout
            )
            if resp.status_code == 422 and ApiError.of(resp).names_param("wait"):
                self._long_poll = False  # a server that predates long-polls
            elif resp.status_code != 304 or time.monotonic() - started >= min(poll, held):
                return None if resp.status_code == 304 else self._experiment(resp)
        time.sleep(max(0.0, poll - (time.monotonic() - started)))
        resp = self.request("GET", path, headers=headers)
        return None if resp.status_code == 304 else self._experiment(resp)

    def experiments(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        tag: str | Iterable[str] | None = None,
        name: str | None = None,
        generator: str | None = None,
        n: int | None = None,
        d: int | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        id_prefix: str | None = None,
        fields: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Experiment]:
        """Your experiments, newest first, matching every filter given, page by page.

        `tag` may be several tags (all must match); `fields="summary"` leaves results out.
        """
        params = {
            "kind": kind,
            "status": status,
            "tag": [tag] if isinstance(tag, str) else tag,
            "name": name,
            "generator": generator,
            "n": n,
            "d": d,
            "created_after": created_after,
            "created_before": created_before,
            "id_prefix": id_prefix,
            "fields": fields,
            "limit": page_size,
        }
        return self._pages("/v1/experiments", Experiment, params)

    def resolve(self, id_or_prefix: str) -> str:
        """The full id of the one experiment whose id starts with `id_or_prefix`.

        Raises NotFound when none does and AmbiguousId when several do. Uses the list's
        `id_prefix` filter, or, on a server without it, pages through the list.
        """
        prefix = id_or_prefix.strip().lower()
        if len(prefix) >= FULL_ID:
            return prefix
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            raise NotFound(404, "Not Found", f"no experiment {id_or_prefix} (ids are hex)")
        try:
            ids = [e.id for e in self.experiments(id_prefix=prefix, fields="summary")]
        except ApiError as exc:
            if exc.status != 422 or not exc.names_param("id_prefix"):
                raise
            everything = self.experiments(fields="summary", page_size=1000)
            ids = [e.id for e in everything if e.id.startswith(prefix)]
        return unique(prefix, ids, "experiment")

    def cancel(self, experiment_id: str) -> Experiment:
        """Cancel an unfinished experiment (Conflict if it has finished)."""
        resp = self.request("POST", f"/v1/experiments/{experiment_id}/cancel", safe=True)
        return self._experiment(resp)

    def delete(self, experiment_id: str) -> None:
        """Delete a finished experiment and all it owns (Conflict while it runs)."""
        self._ok(self.request("DELETE", f"/v1/experiments/{experiment_id}"))

    def patch(
        self,
        experiment_id: str,
        *,
        name: str | None = UNSET,
        tags: Iterable[str] = UNSET,
        notes: str | None = UNSET,
        if_match: str | None = None,
    ) -> Experiment:
        """Replace the fields given (None clears name or notes); `if_match` is an ETag
        that must still be current (PreconditionFailed otherwise)."""
        body: dict[str, Any] = {"name": name, "notes": notes}
        body = {k: v for k, v in body.items() if v is not UNSET}
        if tags is not UNSET:
            body["tags"] = [*tags]
        headers = {"If-Match": if_match} if if_match else {}
        resp = self.request("PATCH", f"/v1/experiments/{experiment_id}", json=body, headers=headers)
        return self._experiment(resp)

    def notifications(self, experiment_id: str) -> list[dict[str, Any]]:
        """The experiment's webhook deliveries (spec `notify`): event, status, attempts, ..."""
        page = self._json("GET", f"/v1/experiments/{experiment_id}/notifications")
        return list(page["items"])

    # --- runs, cones and curves ---------------------------------------------------------

    def runs(
        self, experiment_id: str, verdict: str | None = None, *, page_size: int = 1000
    ) -> Iterator[Run]:
        """The experiment's runs in grid order (all pages)."""
        params = {"verdict": verdict, "limit": page_size}
        return self._pages(f"/v1/experiments/{experiment_id}/runs", Run, params)

    def cones(
        self,
        experiment_id: str,
        width: int | None = None,
        verdict: str | None = None,
        *,
        page_size: int = 1000,
    ) -> Iterator[Cone]:
        """A census's sampled cones (all pages)."""
        params = {"width": width, "verdict": verdict, "limit": page_size}
        return self._pages(f"/v1/experiments/{experiment_id}/cones", Cone, params)

    def resolve_run(self, experiment_id: str, id_or_prefix: str) -> str:
        """The full id of the experiment's one run whose id starts with `id_or_prefix`."""
        prefix = id_or_prefix.strip().lower()
        if len(prefix) >= FULL_ID:
            return prefix
        return unique(prefix, [r.id for r in self.runs(experiment_id) if r.id.startswith(prefix)])

    def curve(
        self, experiment_id: str, run_id: str, max_points: int | None = None
    ) -> dict[str, list[Any]]:
        """A run's curve as columns (epoch, mse, reg_loss, grad_norm_sq, gap, ...)."""
        path = f"/v1/experiments/{experiment_id}/runs/{run_id}/curve"
        return self._json("GET", path, params={"max_points": max_points})  # type: ignore[no-any-return]

    def curve_csv(self, experiment_id: str, run_id: str, max_points: int | None = None) -> bytes:
        """A run's curve as CSV (non-finite values written as nan/inf)."""
        path = f"/v1/experiments/{experiment_id}/runs/{run_id}/curve"
        return self._bytes(path, params={"max_points": max_points, "format": "csv"})

    # --- files --------------------------------------------------------------------------

    def figure(self, experiment_id: str, fmt: str = "png") -> bytes:
        """The experiment's figure, `png` or `svg`."""
        return self._bytes(f"/v1/experiments/{experiment_id}/figure.{fmt}")

    def export(self, experiment_id: str, fmt: str = "parquet") -> bytes:
        """The experiment's table (a row per run, cone or neuron), `parquet` or `csv`."""
        return self._bytes(f"/v1/experiments/{experiment_id}/export.{fmt}")

    def widths(self, experiment_id: str, fmt: str = "parquet") -> bytes:
        """A census's per-width rows, `parquet` or `csv`."""
        return self._bytes(f"/v1/experiments/{experiment_id}/widths.{fmt}")

    def curves(self, experiment_id: str, fmt: str = "parquet") -> bytes:
        """All the experiment's runs' curves in one long table, `parquet` or `csv`."""
        return self._bytes(f"/v1/experiments/{experiment_id}/curves.{fmt}")

    def export_many(
        self,
        kind: str | None = None,
        ids: Iterable[str] | None = None,
        tag: str | None = None,
        *,
        table: str = "rows",
        fmt: str = "parquet",
    ) -> bytes:
        """One table across experiments of one kind: the `ids` given, or a `tag`'s.

        `table` is rows (a row per run, cone or neuron), widths (census) or curves
        (training); `kind` is needed only when the experiments' kinds differ.
        """
        params = {
            "kind": kind,
            "ids": ",".join(ids) if ids is not None else None,
            "tag": tag,
            "table": None if table == "rows" else table,
        }
        return self._bytes(f"/v1/export.{fmt}", params=params)

    # --- pandas -------------------------------------------------------------------------

    def runs_frame(self, experiment_id: str, verdict: str | None = None) -> pandas.DataFrame:
        """The runs as a DataFrame: a row per run, params and `final_*` values as columns."""
        pd = _pandas()
        rows = [flat_run(experiment_id, r) for r in self.runs(experiment_id, verdict=verdict)]
        return pd.DataFrame(rows, columns=None if rows else RUN_COLUMNS)

    def cones_frame(
        self, experiment_id: str, width: int | None = None, verdict: str | None = None
    ) -> pandas.DataFrame:
        """A census's cones as a DataFrame, a row per sampled cone."""
        pd = _pandas()
        cones = self.cones(experiment_id, width=width, verdict=verdict)
        rows = [{"experiment_id": experiment_id, **c.model_dump()} for c in cones]
        return pd.DataFrame(rows, columns=None if rows else CONE_COLUMNS)

    def to_pandas(self, experiment_id: str, table: str = "runs") -> pandas.DataFrame:
        """`runs_frame` (table="runs") or `cones_frame` (table="cones")."""
        if table not in ("runs", "cones"):
            raise ValueError(f"table must be runs or cones, not {table!r}")
        return (
            self.runs_frame(experiment_id) if table == "runs" else self.cones_frame(experiment_id)
        )

    def export_frame(self, experiment_id: str) -> pandas.DataFrame:
        """The experiment's Parquet export, read into a DataFrame."""
        return _pandas().read_parquet(io.BytesIO(self.export(experiment_id, "parquet")))

    list = experiments  # last: inside the class, `list` then no longer names the builtin


RUN_COLUMNS = ["experiment_id", "run_id", "status", "verdict"]
CONE_COLUMNS = ["experiment_id", "width", "sample", "verdict", "value", "gap"]


def flat_run(experiment_id: str, run: Run) -> dict[str, Any]:
    """A run as one flat row: its params as they are, `final_*` and `latest_*` values."""
    extras = {k: v for k, v in (run.model_extra or {}).items() if not isinstance(v, dict | list)}
    return {
        "experiment_id": experiment_id,
        "run_id": run.id,
        "status": run.status,
        "verdict": run.verdict,
        **run.params,
        **{f"final_{k}": v for k, v in (run.final or {}).items()},
        **{f"latest_{k}": v for k, v in (run.latest or {}).items()},
        **extras,
    }


def unique(prefix: str, ids: list[str], what: str = "run") -> str:
    """The one id of `ids` (those matching `prefix`); NotFound or AmbiguousId otherwise."""
    if not ids:
        raise NotFound(404, "Not Found", f"no {what} id starts with {prefix!r}")
    if len(ids) > 1:
        raise AmbiguousId(prefix, sorted(ids))
    return ids[0]


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "DataFrames need pandas: pip install 'benignity[pandas]' (or pip install pandas)"
        ) from None
    return pandas


def _params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Query parameters without the unset ones; datetimes as ISO 8601."""
    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        elif not isinstance(value, str | int | float) and isinstance(value, Iterable):
            value = [*value]
        out[key] = value
    return out


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _reason(exc: httpx.TransportError) -> str:
    """A few words on why a request got no answer."""
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if "name or service" in text or "nodename" in text or "resolution" in text:
        return "unknown host"
    return str(exc) or type(exc).__name__
