"""Experiments and their runs.

Handlers are async: their database work runs in `Database.run` (one short
session in a thread) and their answer is serialised there too. Each tenant sees
only its own experiments; another tenant's id answers 404, as an unknown one does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, Literal

import anyio.to_thread
from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from pydantic import BeforeValidator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import crud, crud_find, dispatch, plans, timings, watch
from service.config import Settings
from service.crud import INT_MAX
from service.deps import DatabaseDep, Principal, PrincipalDep, SettingsDep
from service.pollcache import PollCache
from service.problems import ProblemError
from service.responses import JSON, body_of, etag_of, json_response, matches
from service.schemas import Cone, ConePage, Experiment, ExperimentPage, Kind, Run, RunPage, Status
from service.specs import MAX_TAGS, ExperimentPatch, ExperimentSpec, Tag

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])
log = logging.getLogger("benignity.api")

Verdict = Literal[
    "global_minimum",
    "spurious_local_minimum",
    "saddle_point",
    "not_converged",
    "diverged",
    "collapsed",
    "global",
    "spurious",
    "no_local_min",
]
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[
    str | None, Query(max_length=1000, description="`next_cursor` of the previous page, as is.")
]
Fields = Annotated[
    Literal["full", "summary"],
    Query(description="`summary` leaves each experiment's result out (null)."),
]
ID = re.compile(crud.ID_PATTERN)
#: Seconds a client over its work-item quota is asked to wait.
QUOTA_RETRY_AFTER = 30


def snapshot_body(session: Session, experiment_id: str, who: Principal) -> bytes:
    """The Experiment's JSON in one query, its stored result spliced in as stored.

    A result of many megabytes is then held once as text, not as Python objects
    and a second serialisation. Stored text that is not strict JSON (NaN from an
    old SQLite row) is parsed, which writes it as null.
    """
    snap = None
    if ID.fullmatch(experiment_id):
        snap = crud.snapshot(session, experiment_id=experiment_id, tenant=who.scope)
    if snap is None:
        raise ProblemError(404, f"no experiment {experiment_id}")
    raw: str | None = snap.result_text
    tags = crud_find.split_tags(snap.tag_text)
    times = timings.experiment_timings(
        session,
        experiment_id=snap.id,
        terminal=snap.status in crud.TERMINAL,
        created_at=snap.created_at,
        started_at=snap.started_at,
        finished_at=snap.finished_at,
    )
    head = Experiment.of(
        snap,  # type: ignore[arg-type]
        snap.done,
        tags=tags,
        result=False,
        timings=times,
    )
    if raw is None or raw == "null":
        return body_of(head)
    if "NaN" in raw or "Infinity" in raw:
        return body_of(head.model_copy(update={"result": json.loads(raw)}))
    prefix = body_of(head)
    assert prefix.endswith(b'"result":null}')
    stored = raw.encode()
    del raw, snap  # at most two copies alive at once: the text's bytes and the body
    return b"".join((prefix[: -len(b"null}")], stored, b"}"))


def found(session: Session, experiment_id: str, who: Principal) -> crud.Experiment:
    """The caller's experiment; 404 for an unknown, malformed or other tenant's id."""
    row = None
    if ID.fullmatch(experiment_id):
        row = crud.get_experiment(session, experiment_id=experiment_id, tenant=who.scope)
    if row is None:
        raise ProblemError(404, f"no experiment {experiment_id}")
    return row


def _cursor_error(exc: ValueError) -> ProblemError:
    return ProblemError(422, str(exc), errors=[{"loc": ["query", "cursor"], "msg": str(exc)}])


@router.post(
    "",
    status_code=202,
    response_model=Experiment,
    responses={200: {"model": Experiment}, 415: {}, 429: {}},
)
async def submit(
    request: Request,
    spec: Annotated[ExperimentSpec, Body()],
    db: DatabaseDep,
    settings: SettingsDep,
    who: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Submit an experiment; it runs in the background."""
    body = spec.model_dump(mode="json")
    # An Idempotency-Key's body is compared without defaults, so that a field added later
    # with a default does not turn a replay of the same body into a conflict.
    given = spec.model_dump(mode="json", exclude_defaults=True)
    digest = hashlib.sha256(json.dumps(given, sort_keys=True).encode()).hexdigest()
    key = idempotency_key or None
    if key:
        replay = await db.run(lambda s: _replay(s, who, key, digest))
        if replay is not None:
            return json_response(request, replay[1], headers=replay[0])
    try:
        plan = await anyio.to_thread.run_sync(plans.plan, spec, settings)
    except plans.SpecRejected as exc:
        raise ProblemError(422, exc.msg, errors=[{"loc": list(exc.loc), "msg": exc.msg}]) from exc

    def create(session: Session) -> tuple[str, bytes, list[crud.Envelope]]:
        _check_quota(session, who, settings, len(plan.items))
        row, envelopes = crud.create_experiment(
            session,
            kind=spec.kind,
            spec=body,
            spec_hash=digest,
            idempotency_key=key,
            items=plan.items,
            runs=plan.runs,
            tenant=who.tenant,
            window=settings.dispatch_window,
        )
        session.commit()
        return row.id, snapshot_body(session, row.id, who), envelopes

    try:
        exp_id, answer, envelopes = await db.run(create)
    except IntegrityError:  # a concurrent request with the same Idempotency-Key won
        replay = await db.run(lambda s: _replay(s, who, key or "", digest))
        if replay is None:
            raise
        return json_response(request, replay[1], headers=replay[0])
    try:
        await anyio.to_thread.run_sync(dispatch.send, envelopes)
    except Exception as exc:  # noqa: BLE001 - the reaper re-sends what the broker did not take
        log.warning("broker unavailable (%s); the reaper will send experiment %s", exc, exp_id)
    location = {"Location": f"/v1/experiments/{exp_id}"}
    return json_response(request, answer, status_code=202, headers=location)


def _replay(
    session: Session, who: Principal, key: str, digest: str
) -> tuple[dict[str, str], bytes] | None:
    """The tenant's earlier experiment under this Idempotency-Key, if there is one."""
    found_ = crud.find_by_idempotency_key(session, key=key, tenant=who.tenant)
    if found_ is None:
        return None
    if found_.spec_hash != digest:
        msg = "this Idempotency-Key was used with a different body"
        raise ProblemError(422, msg, errors=[{"loc": ["header", "Idempotency-Key"], "msg": msg}])
    return {"Location": f"/v1/experiments/{found_.id}"}, snapshot_body(session, found_.id, who)


def _check_quota(session: Session, who: Principal, settings: Settings, new_items: int) -> None:
    active = crud.active_items(session, tenant=who.tenant)
    if active + new_items > settings.quota_active_items:
        raise ProblemError(
            429,
            f"tenant {who.tenant or '(default)'} has {active} work items queued or running; "
            f"this spec adds {new_items}, over the quota of {settings.quota_active_items}. "
            "Retry when some have finished.",
            headers={"Retry-After": str(QUOTA_RETRY_AFTER)},
        )


Generator = Literal["teacher", "orthogonal", "theorem2", "correlated", "custom"]
Size = Annotated[int | None, Query(ge=1, le=INT_MAX)]


def _iso_8601(value: object) -> object:
    """An ISO 8601 date or time (a bare number, which pydantic would read as seconds
    since 1970, is refused)."""
    if not isinstance(value, str):
        return value
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        why = "" if str(exc).startswith("Invalid isoformat") else f" ({exc})"
        raise ValueError(
            "expected an ISO 8601 date or time such as 2026-05-01 or 2026-05-01T12:00:00Z, "
            f"not {value!r}{why}"
        ) from None


IsoTime = Annotated[datetime, BeforeValidator(_iso_8601)]


async def experiment_filters(
    kind: Kind | None = None,
    status: Status | None = None,
    tag: Annotated[
        list[Tag] | None,
        Query(max_length=MAX_TAGS, description="Repeat it: an experiment must carry each."),
    ] = None,
    name: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="A part of the name, in any case."),
    ] = None,
    generator: Annotated[Generator | None, Query(description="The dataset's generator.")] = None,
    n: Annotated[Size, Query(description="The dataset's number of points.")] = None,
    d: Annotated[Size, Query(description="The dataset's input dimension.")] = None,
    created_after: Annotated[
        IsoTime | None, Query(description="ISO 8601; created at or after it (UTC if naive).")
    ] = None,
    created_before: Annotated[
        IsoTime | None, Query(description="ISO 8601; created before it (UTC if naive).")
    ] = None,
    id_prefix: Annotated[
        str | None, Query(pattern="^[0-9a-f]{1,32}$", description="The id's first hex digits.")
    ] = None,
) -> crud_find.Filters:
    """The list's filters, from the query string."""
    return crud_find.Filters(
        kind=kind,
        status=status,
        tags=tuple(tag or ()),
        name=name,
        generator=generator,
        n=n,
        d=d,
        created_after=created_after,
        created_before=created_before,
        id_prefix=id_prefix,
    )


ExperimentFilters = Annotated[crud_find.Filters, Depends(experiment_filters)]


@router.get("", response_model=ExperimentPage)
async def list_experiments(
    request: Request,
    db: DatabaseDep,
    who: PrincipalDep,
    settings: SettingsDep,
    filters: ExperimentFilters,
    limit: Limit = 50,
    cursor: Cursor = None,
    fields: Fields = "full",
) -> Response:
    """List your experiments, newest first, filtered; a page ends early once its results
    pass MAX_RESULT_BYTES (follow next_cursor)."""

    def page(session: Session) -> bytes:
        try:
            rows, nxt = crud.list_experiments(
                session,
                filters=filters,
                limit=limit,
                cursor=cursor,
                tenant=who.scope,
                result_bytes=settings.max_result_bytes if fields == "full" else None,
            )
        except ValueError as exc:
            raise _cursor_error(exc) from exc
        ids = [r.id for r in rows]
        done = crud.progress_of(session, experiment_ids=ids)
        tags = crud_find.tags_of(session, experiment_ids=ids)
        items = [
            Experiment.of(r, done.get(r.id, 0), tags=tags.get(r.id, []), result=fields == "full")
            for r in rows
        ]
        return body_of(ExperimentPage(items=items, next_cursor=nxt))

    return json_response(request, await db.run(page))


Wait = Annotated[
    float | None,
    Query(
        ge=0,
        description="Long-poll: answer as soon as status or progress differs from the "
        "If-None-Match ETag (or from the state on arrival), else after this many seconds "
        f"(at most {watch.MAX_WAIT:g}; more is capped).",
    ),
]


@router.get("/{experiment_id}", response_model=Experiment, responses={304: {}, 404: {}})
async def get_experiment(
    request: Request, experiment_id: str, db: DatabaseDep, who: PrincipalDep, wait: Wait = None
) -> Response:
    """One experiment, with its progress and, once done, its result."""
    polls: PollCache = request.app.state.polls

    def read() -> Awaitable[bytes]:
        return polls.get(
            (experiment_id, who.scope),
            lambda: db.run(lambda s: snapshot_body(s, experiment_id, who)),
        )

    if wait:
        return json_response(request, await watch.long_poll(request, experiment_id, read, wait))
    return json_response(request, await read())


@router.post(
    "/{experiment_id}/cancel",
    status_code=202,
    response_model=Experiment,
    responses={404: {}, 409: {}},
)
async def cancel(
    request: Request, experiment_id: str, db: DatabaseDep, who: PrincipalDep
) -> Response:
    """Cancel an experiment that has not finished."""

    def work(session: Session) -> bytes:
        found(session, experiment_id, who)
        try:
            row = crud.cancel_experiment(session, experiment_id=experiment_id)
        except crud.Conflict as exc:
            raise ProblemError(409, str(exc)) from exc
        session.commit()
        assert row is not None
        return snapshot_body(session, row.id, who)

    body = await db.run(work)
    request.app.state.polls.evict(experiment_id)
    return json_response(request, body, status_code=202)


@router.patch(
    "/{experiment_id}",
    response_model=Experiment,
    responses={404: {}, 412: {}, 415: {}},
)
async def relabel(
    request: Request,
    experiment_id: str,
    patch: Annotated[ExperimentPatch, Body()],
    db: DatabaseDep,
    who: PrincipalDep,
    if_match: Annotated[str | None, Header(max_length=1000)] = None,
) -> Response:
    """Change an experiment's name, tags or notes; the fields left out are kept."""
    changes = patch.model_dump(include=patch.model_fields_set)

    def work(session: Session) -> bytes:
        found(session, experiment_id, who)
        crud_find.lock(session, experiment_id=experiment_id)
        if if_match is not None:
            current = etag_of(snapshot_body(session, experiment_id, who))
            if not matches(if_match, current):
                raise ProblemError(
                    412,
                    f"If-Match {if_match} is not the current ETag {current}: the experiment "
                    "changed since you read it; GET it again and retry",
                    errors=[{"loc": ["header", "If-Match"], "msg": "stale ETag"}],
                )
        crud_find.relabel(session, experiment_id=experiment_id, changes=changes)
        session.commit()
        return snapshot_body(session, experiment_id, who)

    body = await db.run(work)
    request.app.state.polls.evict(experiment_id)
    return Response(body, media_type=JSON, headers={"ETag": etag_of(body)})


@router.delete("/{experiment_id}", status_code=204, responses={404: {}, 409: {}})
async def delete_experiment(
    request: Request, experiment_id: str, db: DatabaseDep, who: PrincipalDep
) -> Response:
    """Delete a finished experiment with its runs, cones and everything else it owns."""

    def work(session: Session) -> None:
        found(session, experiment_id, who)
        try:
            crud_find.delete_experiment(session, experiment_id=experiment_id)
        except crud_find.Unfinished as exc:
            raise ProblemError(409, str(exc)) from exc
        session.commit()

    await db.run(work)
    request.app.state.polls.evict(experiment_id)
    return Response(status_code=204)


@router.get("/{experiment_id}/runs", response_model=RunPage, responses={304: {}, 404: {}})
async def list_runs(
    request: Request,
    experiment_id: str,
    db: DatabaseDep,
    who: PrincipalDep,
    verdict: Verdict | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    width: Annotated[int | None, Query(ge=1, le=INT_MAX, description="Runs of this width.")] = None,
    init_scale: Annotated[
        float | None, Query(gt=0, allow_inf_nan=False, description="Training runs of this α.")
    ] = None,
    lr: Annotated[
        float | None,
        Query(gt=0, allow_inf_nan=False, description="Training runs of this learning rate."),
    ] = None,
) -> Response:
    """The experiment's runs in grid order, filtered by verdict and by their params."""
    wanted = {
        key: float(value)
        for key, value in (("width", width), ("init_scale", init_scale))
        if value is not None
    }

    def page(session: Session) -> bytes:
        exp = found(session, experiment_id, who)
        if lr is not None:  # params name the lr only where the spec sweeps it
            if _lr_swept(exp.spec):
                wanted["lr"] = lr
            elif not _same_lr(exp.spec, lr):
                return body_of(RunPage(items=[], next_cursor=None))
        try:
            rows, nxt = crud.list_runs(
                session,
                experiment_id=experiment_id,
                verdict=verdict,
                limit=limit,
                cursor=cursor,
                params=wanted,
            )
        except ValueError as exc:
            raise _cursor_error(exc) from exc
        return body_of(RunPage(items=[Run.of(r) for r in rows], next_cursor=nxt))

    return json_response(request, await db.run(page))


def _lr_swept(spec: dict) -> bool:
    """Whether the spec sweeps lr (then each run's params name its lr)."""
    return isinstance((spec.get("optimizer") or {}).get("lr"), list)


def _same_lr(spec: dict, lr: float) -> bool:
    """Whether an unswept spec's one lr is `lr` (1e-9 relative)."""
    mine = (spec.get("optimizer") or {}).get("lr")
    return isinstance(mine, int | float) and abs(mine - lr) <= abs(lr) * 1e-9


@router.get("/{experiment_id}/cones", response_model=ConePage, responses={304: {}, 404: {}})
async def list_cones(
    request: Request,
    experiment_id: str,
    db: DatabaseDep,
    who: PrincipalDep,
    width: Annotated[int | None, Query(ge=1, le=INT_MAX)] = None,
    verdict: Literal["global", "spurious", "no_local_min"] | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    """A census's sampled cones with their signed cones, values and verdicts."""

    def page(session: Session) -> bytes:
        found(session, experiment_id, who)
        try:
            rows, nxt = crud.list_cones(
                session,
                experiment_id=experiment_id,
                width=width,
                verdict=verdict,
                limit=limit,
                cursor=cursor,
            )
        except ValueError as exc:
            raise _cursor_error(exc) from exc
        return body_of(ConePage(items=[Cone.of(r) for r in rows], next_cursor=nxt))

    return json_response(request, await db.run(page))
