"""Read queries behind figures, exports and curves; they skip the curve blobs they do not need."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from service.models import Run


def runs_without_curves(session: Session, *, experiment_id: str) -> list[Run]:
    """Every run of the experiment in grid order, with `curve` left unloaded."""
    query = (
        select(Run)
        .where(Run.experiment_id == experiment_id)
        .options(defer(Run.curve, raiseload=True))
        .order_by(Run.index)
    )
    return list(session.scalars(query))


def run_summaries(
    session: Session, *, experiment_id: str
) -> list[tuple[str, dict[str, Any], str | None]]:
    """(id, params, verdict) of every run of the experiment, in grid order."""
    query = (
        select(Run.id, Run.params, Run.verdict)
        .where(Run.experiment_id == experiment_id)
        .order_by(Run.index)
    )
    return [(rid, params, verdict) for rid, params, verdict in session.execute(query)]


def curves_of(session: Session, *, run_ids: Sequence[str]) -> dict[str, bytes]:
    """The stored curve blobs of these runs; runs without a curve are left out."""
    if not run_ids:
        return {}
    query = select(Run.id, Run.curve).where(Run.id.in_(run_ids), Run.curve.is_not(None))
    return {rid: blob for rid, blob in session.execute(query) if blob is not None}
