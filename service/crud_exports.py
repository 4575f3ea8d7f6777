"""Read queries behind exports: experiments by ids or tag, and their rows page by page, so
that an export holds one page in memory, never a whole experiment."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy import or_, select, tuple_
from sqlalchemy.orm import Session, defer

from service.models import CensusCone, CurveChunk, Experiment, ExperimentTag, Run


def kinds_of(
    session: Session, *, experiment_ids: Sequence[str], tenant: str | None
) -> dict[str, str]:
    """{id: kind} of those experiments that exist and belong to ``tenant`` (None: any)."""
    if not experiment_ids:
        return {}
    query = select(Experiment.id, Experiment.kind).where(Experiment.id.in_(experiment_ids))
    if tenant is not None:
        query = query.where(Experiment.tenant == tenant)
    return {eid: kind for eid, kind in session.execute(query)}


def tagged(
    session: Session, *, tag: str, tenant: str | None, kind: str | None, limit: int
) -> list[tuple[str, str]]:
    """(id, kind) of up to ``limit`` experiments with the tag, oldest first."""
    query = (
        select(Experiment.id, Experiment.kind)
        .join(ExperimentTag, ExperimentTag.experiment_id == Experiment.id)
        .where(ExperimentTag.tag == tag)
        .order_by(Experiment.created_at, Experiment.id)
        .limit(limit)
    )
    if tenant is not None:
        query = query.where(Experiment.tenant == tenant)
    if kind is not None:
        query = query.where(Experiment.kind == kind)
    return [(eid, k) for eid, k in session.execute(query)]


def tags_of(session: Session, *, experiment_id: str) -> list[str]:
    """The experiment's tags, sorted."""
    query = (
        select(ExperimentTag.tag)
        .where(ExperimentTag.experiment_id == experiment_id)
        .order_by(ExperimentTag.tag)
    )
    return list(session.scalars(query))


def run_pages(
    session: Session, *, experiment_id: str, size: int, curves: bool = False
) -> Iterator[list[Run]]:
    """The experiment's runs in grid order, ``size`` at a time (each page is dropped from
    the session before the next is read). Without ``curves``, every run and no curve blob;
    with it, only the runs that have a curve, with their blobs, or curve chunks."""
    after = -1
    while True:
        query = select(Run).where(Run.experiment_id == experiment_id, Run.index > after)
        if curves:  # or points in curve chunks: a partial curve while its batch trains
            chunked = (
                select(CurveChunk.id)
                .where(
                    CurveChunk.experiment_id == Run.experiment_id,
                    CurveChunk.first_run <= Run.index,
                    CurveChunk.stop_run > Run.index,
                )
                .exists()
            )
            query = query.where(or_(Run.curve.is_not(None), chunked))
        else:
            query = query.options(defer(Run.curve, raiseload=True))
        page = list(session.scalars(query.order_by(Run.index).limit(size)))
        if not page:
            return
        yield page
        _forget(session, page)
        after = page[-1].index


def cone_pages(session: Session, *, experiment_id: str, size: int) -> Iterator[list[CensusCone]]:
    """A census's cones by (width, sample), ``size`` at a time."""
    after = (-1, -1)
    while True:
        query = (
            select(CensusCone)
            .where(CensusCone.experiment_id == experiment_id)
            .where(tuple_(CensusCone.width, CensusCone.sample) > after)
            .order_by(CensusCone.width, CensusCone.sample)
            .limit(size)
        )
        page = list(session.scalars(query))
        if not page:
            return
        yield page
        _forget(session, page)
        after = (page[-1].width, page[-1].sample)


def chunks_of(
    session: Session, *, experiment_id: str, first: int, last: int
) -> list[tuple[int, int, float, bytes]]:
    """(first_run, stop_run, optimum, data) of the curve chunks that hold runs from
    `first` to `last`, in the order written."""
    query = (
        select(CurveChunk.first_run, CurveChunk.stop_run, CurveChunk.optimum, CurveChunk.data)
        .where(
            CurveChunk.experiment_id == experiment_id,
            CurveChunk.first_run <= last,
            CurveChunk.stop_run > first,
        )
        .order_by(CurveChunk.item_id, CurveChunk.seq, CurveChunk.first_run)
    )
    return [(a, b, c, d) for a, b, c, d in session.execute(query)]


def _forget(session: Session, rows: Sequence[object]) -> None:
    """Drop a page's rows from the session, so that its identity map does not keep them."""
    for row in rows:
        session.expunge(row)
