"""Finding experiments by their labels and dataset, relabelling and deleting them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session

from service.models import Base, Experiment, ExperimentTag, as_utc

#: The statuses an experiment can be deleted in.
FINISHED = ("succeeded", "failed", "cancelled")
#: What separates tags in their aggregated text (a tag never holds one: specs.Tag).
TAG_SEPARATOR = ","


class Unfinished(Exception):
    """The experiment is still queued or running."""


@dataclass(frozen=True)
class Filters:
    """What a list of experiments is narrowed to; None (or no tags) leaves a column free.

    `tags` must all be on an experiment; `name` is a case-insensitive substring;
    `created_after` <= created_at < `created_before`; `id_prefix` is lowercase hex.
    """

    kind: str | None = None
    status: str | None = None
    tags: tuple[str, ...] = ()
    name: str | None = None
    generator: str | None = None
    n: int | None = None
    d: int | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    id_prefix: str | None = None


def narrowed(query: Select[Any], f: Filters) -> Select[Any]:
    """`query` over experiments, narrowed by `f`."""
    equal = {"kind": f.kind, "status": f.status, "generator": f.generator, "n": f.n, "d": f.d}
    for column, value in equal.items():
        if value is not None:
            query = query.where(getattr(Experiment, column) == value)
    if f.tags:
        wanted = sorted(set(f.tags))
        tagged = (
            select(ExperimentTag.experiment_id)
            .where(ExperimentTag.tag.in_(wanted))
            .group_by(ExperimentTag.experiment_id)
            .having(func.count() == len(wanted))
        )
        query = query.where(Experiment.id.in_(tagged))
    if f.name is not None:
        query = query.where(Experiment.name.icontains(f.name, autoescape=True))
    if f.created_after is not None:
        query = query.where(Experiment.created_at >= in_utc(f.created_after))
    if f.created_before is not None:
        query = query.where(Experiment.created_at < in_utc(f.created_before))
    if f.id_prefix is not None:
        query = query.where(Experiment.id.startswith(f.id_prefix, autoescape=True))
    return query


def in_utc(moment: datetime) -> datetime:
    """The same moment in UTC (a naive time is taken as UTC). SQLite compares times as
    text without their offset, so a parameter must be in the zone the rows are stored in."""
    return as_utc(moment).astimezone(UTC)


def tag_text() -> Any:
    """A correlated subquery: the experiment's tags joined by TAG_SEPARATOR (or null)."""
    return (
        select(func.aggregate_strings(ExperimentTag.tag, TAG_SEPARATOR))
        .where(ExperimentTag.experiment_id == Experiment.id)
        .scalar_subquery()
    )


def split_tags(text: str | None) -> list[str]:
    """Tags from tag_text's value, sorted."""
    return sorted(text.split(TAG_SEPARATOR)) if text else []


def tags_of(session: Session, *, experiment_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each experiment's tags, sorted, in one query (experiments without tags are absent)."""
    if not experiment_ids:
        return {}
    query = (
        select(ExperimentTag.experiment_id, ExperimentTag.tag)
        .where(ExperimentTag.experiment_id.in_(experiment_ids))
        .order_by(ExperimentTag.experiment_id, ExperimentTag.tag)
    )
    out: dict[str, list[str]] = {}
    for eid, tag in session.execute(query):
        out.setdefault(eid, []).append(tag)
    return out


def lock(session: Session, *, experiment_id: str) -> Experiment | None:
    """The experiment, its row locked until the transaction ends (FOR UPDATE)."""
    query = select(Experiment).where(Experiment.id == experiment_id).with_for_update()
    return session.scalars(query).one_or_none()


def relabel(session: Session, *, experiment_id: str, changes: dict[str, Any]) -> None:
    """Replace the experiment's name, notes and tags by those in `changes` (others kept)."""
    columns = {k: changes[k] for k in ("name", "notes") if k in changes}
    if columns:
        session.execute(update(Experiment).where(Experiment.id == experiment_id).values(columns))
    if "tags" in changes:
        session.execute(delete(ExperimentTag).where(ExperimentTag.experiment_id == experiment_id))
        session.add_all(ExperimentTag(experiment_id=experiment_id, tag=t) for t in changes["tags"])
    session.flush()


def delete_experiment(session: Session, *, experiment_id: str) -> None:
    """Delete a finished experiment and every row that refers to it.

    Each table with a foreign key to experiments is cleared explicitly, so that
    nothing depends on the database cascading (SQLite does only with its pragma).
    Raises Unfinished (and deletes nothing) while it is queued or running.
    """
    exp = lock(session, experiment_id=experiment_id)
    if exp is None:
        return
    if exp.status not in FINISHED:
        raise Unfinished(
            f"experiment {experiment_id} is {exp.status}; cancel it first "
            f"(POST /v1/experiments/{experiment_id}/cancel), then delete it"
        )
    for table in reversed(Base.metadata.sorted_tables):
        for fk in table.foreign_keys:
            if fk.column.table is Experiment.__table__:
                session.execute(delete(table).where(fk.parent == experiment_id))
    session.execute(delete(Experiment).where(Experiment.id == experiment_id))
    session.expunge(exp)
