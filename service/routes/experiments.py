"""Experiments and their runs."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Header, Query, Response
from sqlalchemy.exc import IntegrityError

from service import crud, dispatch, plans
from service.deps import SessionDep, SettingsDep
from service.problems import ProblemError
from service.schemas import Cone, ConePage, Experiment, ExperimentPage, Run, RunPage
from service.specs import ExperimentSpec

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])
log = logging.getLogger("benignity.api")

Kind = Literal["optimum", "census", "training"]
Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Verdict = Literal[
    "global_minimum",
    "spurious_local_minimum",
    "saddle_point",
    "not_converged",
    "diverged",
    "global",
    "spurious",
    "no_local_min",
]
Limit = Annotated[int, Query(ge=1, le=1000)]


def _view(session: SessionDep, row: crud.Experiment) -> Experiment:
    done = crud.progress_of(session, experiment_ids=[row.id]).get(row.id, 0)
    return Experiment.of(row, done)


def _found(session: SessionDep, experiment_id: str) -> crud.Experiment:
    row = crud.get_experiment(session, experiment_id=experiment_id)
    if row is None:
        raise ProblemError(404, f"no experiment {experiment_id}")
    return row


def _cursor_error(exc: ValueError) -> ProblemError:
    return ProblemError(422, str(exc), errors=[{"loc": ["query", "cursor"], "msg": str(exc)}])


@router.post("", status_code=202, responses={200: {"model": Experiment}})
def submit(
    spec: Annotated[ExperimentSpec, Body()],
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Experiment:
    """Submit an experiment; it runs in the background."""
    body = spec.model_dump(mode="json")
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    if idempotency_key:
        found = crud.find_by_idempotency_key(session, key=idempotency_key)
        if found is not None:
            return _replay(session, found, digest, response)
    try:
        plan = plans.plan(spec, settings)
    except plans.SpecRejected as exc:
        raise ProblemError(422, exc.msg, errors=[{"loc": list(exc.loc), "msg": exc.msg}]) from exc
    try:
        row, envelopes = crud.create_experiment(
            session,
            kind=spec.kind,
            spec=body,
            spec_hash=digest,
            idempotency_key=idempotency_key,
            items=plan.items,
            runs=plan.runs,
        )
        session.commit()
    except IntegrityError:  # a concurrent request with the same Idempotency-Key won
        session.rollback()
        found = crud.find_by_idempotency_key(session, key=idempotency_key or "")
        if found is None:
            raise
        return _replay(session, found, digest, response)
    try:
        dispatch.send(envelopes)
    except Exception:  # noqa: BLE001 - the reaper re-sends what the broker did not take
        log.exception("broker unavailable; experiment %s will be sent by the reaper", row.id)
    response.headers["Location"] = f"/v1/experiments/{row.id}"
    return _view(session, row)


def _replay(
    session: SessionDep, found: crud.Experiment, digest: str, response: Response
) -> Experiment:
    if found.spec_hash != digest:
        msg = "this Idempotency-Key was used with a different body"
        raise ProblemError(422, msg, errors=[{"loc": ["header", "Idempotency-Key"], "msg": msg}])
    response.status_code = 200
    response.headers["Location"] = f"/v1/experiments/{found.id}"
    return _view(session, found)


@router.get("")
def list_experiments(
    session: SessionDep,
    kind: Kind | None = None,
    status: Status | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> ExperimentPage:
    """List experiments, newest first."""
    try:
        rows, nxt = crud.list_experiments(
            session, kind=kind, status=status, limit=limit, cursor=cursor
        )
    except ValueError as exc:
        raise _cursor_error(exc) from exc
    done = crud.progress_of(session, experiment_ids=[r.id for r in rows])
    return ExperimentPage(
        items=[Experiment.of(r, done.get(r.id, 0)) for r in rows], next_cursor=nxt
    )


@router.get("/{experiment_id}", responses={404: {}})
def get_experiment(experiment_id: str, session: SessionDep) -> Experiment:
    """One experiment, with its progress and, once done, its result."""
    return _view(session, _found(session, experiment_id))


@router.post("/{experiment_id}/cancel", status_code=202, responses={404: {}, 409: {}})
def cancel(experiment_id: str, session: SessionDep) -> Experiment:
    """Cancel an experiment that has not finished."""
    _found(session, experiment_id)
    try:
        row = crud.cancel_experiment(session, experiment_id=experiment_id)
    except crud.Conflict as exc:
        raise ProblemError(409, str(exc)) from exc
    session.commit()
    assert row is not None
    return _view(session, row)


@router.get("/{experiment_id}/runs", responses={404: {}})
def list_runs(
    experiment_id: str,
    session: SessionDep,
    verdict: Verdict | None = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> RunPage:
    """The experiment's runs in grid order."""
    _found(session, experiment_id)
    try:
        rows, nxt = crud.list_runs(
            session, experiment_id=experiment_id, verdict=verdict, limit=limit, cursor=cursor
        )
    except ValueError as exc:
        raise _cursor_error(exc) from exc
    return RunPage(items=[Run.of(r) for r in rows], next_cursor=nxt)


@router.get("/{experiment_id}/cones", responses={404: {}})
def list_cones(
    experiment_id: str,
    session: SessionDep,
    width: Annotated[int | None, Query(ge=1)] = None,
    verdict: Literal["global", "spurious", "no_local_min"] | None = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> ConePage:
    """A census's sampled cones with their signed cones, values and verdicts."""
    _found(session, experiment_id)
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
    return ConePage(items=[Cone.of(r) for r in rows], next_cursor=nxt)
