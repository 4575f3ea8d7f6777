"""Exports as CSV or Parquet: one experiment's tables, and one table over many experiments.

Every table has a declared schema (service/exports.py). Rows are read a page at a time
and written to a spooled file (in memory up to SPOOL_BYTES, then on disk), which the
response then streams, so an export holds one page of rows in memory, not a whole
experiment. A multi-experiment export takes at most MAX_EXPERIMENTS experiments.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO, Annotated, Any, Literal

import pyarrow as pa
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from service import arrow_tables, crud, crud_exports, curve_chunks, curves, exports
from service.deps import DatabaseDep, Principal, PrincipalDep
from service.models import Experiment
from service.problems import ProblemError
from service.routes.experiments import ID
from service.schemas import Kind

router = APIRouter(prefix="/v1", tags=["exports"])

Format = Literal["csv", "parquet"]
Table = Literal["rows", "widths", "curves"]

#: Experiments in one multi-experiment export (more is a 422: narrow by kind, or split).
MAX_EXPERIMENTS = 200
#: Runs or cones read from the database at once; runs with curves read at once.
PAGE_ROWS = 2000
PAGE_CURVES = 50
#: An export stays in memory up to this size, then spills to a temporary file.
SPOOL_BYTES = 32 * 2**20
MEDIA_TYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
#: The OpenAPI description of a 200 that is a file.
FILE_RESPONSES: dict[int | str, dict] = {
    200: {
        "content": {"text/csv": {}, "application/vnd.apache.parquet": {}},
        "description": "The table as CSV or Parquet (attachment).",
    }
}
#: The kind each table other than "rows" needs.
TABLE_KIND = {"widths": "census", "curves": "training"}


def schema_of(kind: str, table: Table) -> pa.Schema:
    """The declared schema of a kind's table."""
    if table == "widths":
        return exports.WIDTHS
    if table == "curves":
        return exports.CURVES
    return exports.BY_KIND[kind]


def check_table(kind: str, table: Table) -> None:
    """404 when experiments of this kind have no such table."""
    needed = TABLE_KIND.get(table)
    if needed is not None and kind != needed:
        raise ProblemError(404, f"experiments of kind {kind} have no {table} table")


def experiment_batches(
    session: Session, exp: Experiment, table: Table, *, max_points: int | None = None
) -> Iterator[pa.RecordBatch]:
    """One experiment's table as batches of its declared schema, a page at a time."""
    tags = crud_exports.tags_of(session, experiment_id=exp.id)
    base = exports.experiment_columns(
        exp.spec, experiment_id=exp.id, name=exp.name, tags=tags, status=exp.status
    )
    schema = schema_of(exp.kind, table)
    if table == "widths":
        yield arrow_tables.batch(schema, exports.width_rows(base, exp.result))
    elif table == "curves":
        yield from _curve_batches(session, base, max_points)
    elif exp.kind == "optimum":
        yield arrow_tables.batch(schema, exports.neuron_rows(base, exp.result))
    elif exp.kind == "census":
        for cones in crud_exports.cone_pages(session, experiment_id=exp.id, size=PAGE_ROWS):
            yield arrow_tables.batch(schema, [exports.cone_row(base, c) for c in cones])
    else:
        for runs in crud_exports.run_pages(session, experiment_id=exp.id, size=PAGE_ROWS):
            yield arrow_tables.batch(schema, [exports.training_row(base, r) for r in runs])


def _curve_batches(
    session: Session, base: dict[str, Any], max_points: int | None
) -> Iterator[pa.RecordBatch]:
    experiment_id = base["experiment_id"]
    for runs in crud_exports.run_pages(
        session, experiment_id=experiment_id, size=PAGE_CURVES, curves=True
    ):
        parts = []
        training = [r.index for r in runs if r.curve is None]  # batches that still train
        partial = {}
        if training:
            rows = crud_exports.chunks_of(
                session, experiment_id=experiment_id, first=min(training), last=max(training)
            )
            partial = curve_chunks.partial_curves(training, rows)
        for run in runs:
            if run.curve is None and run.index not in partial:
                continue  # its batch finished since the page was read: in the next export
            columns = (
                curves.decode_curve(run.curve) if run.curve is not None else partial[run.index]
            )
            if max_points is not None:
                columns = curves.downsample(columns, max_points)
            parts.append(exports.curve_batch(base, run, columns))
        if parts:
            yield pa.concat_batches(parts)  # a page of runs is one Parquet row group


def spool(schema: pa.Schema, batches: Iterator[pa.RecordBatch], fmt: Format) -> IO[bytes]:
    """The table written as ``fmt`` to a spooled file, rewound."""
    sink = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - streamed later
    try:
        arrow_tables.WRITERS[fmt](schema, batches, sink)
        sink.seek(0)
    except BaseException:
        sink.close()
        raise
    return sink


def file_response(sink: IO[bytes], fmt: Format, filename: str) -> StreamingResponse:
    """Stream a spooled export as an attachment, closing the file at the end."""
    size = sink.seek(0, 2)
    sink.seek(0)

    def chunks() -> Iterator[bytes]:
        with sink:
            while block := sink.read(1 << 20):
                yield block

    headers = {
        "Content-Disposition": f'attachment; filename="{filename}.{fmt}"',
        "Content-Length": str(size),
    }
    return StreamingResponse(chunks(), media_type=MEDIA_TYPES[fmt], headers=headers)


@router.get("/export.{fmt}", responses={**FILE_RESPONSES, 404: {}, 422: {}})
async def export_many(
    fmt: Format,
    db: DatabaseDep,
    who: PrincipalDep,
    ids: Annotated[
        list[str] | None,
        Query(description="Experiment ids, comma-separated or repeated (at most 200)."),
    ] = None,
    tag: Annotated[str | None, Query(description="Every experiment with this tag.")] = None,
    kind: Annotated[
        Kind | None, Query(description="Needed unless all the experiments share one kind.")
    ] = None,
    table: Annotated[
        Table, Query(description="rows (per kind), widths (census) or curves (training).")
    ] = "rows",
    max_points: Annotated[
        int | None,
        Query(ge=2, le=1_000_000, description="table=curves: at most this many points per run."),
    ] = None,
) -> StreamingResponse:
    """One table over many experiments of one kind, concatenated under its declared schema."""

    def work(session: Session) -> IO[bytes]:
        found_kind, chosen = _chosen(session, who, ids=ids, tag=tag, kind=kind)
        check_table(found_kind, table)
        batches = _batches(session, who, chosen, table, max_points)
        return spool(schema_of(found_kind, table), batches, fmt)

    sink = await db.run(work)
    return file_response(sink, fmt, "export" if table == "rows" else table)


def _batches(
    session: Session, who: Principal, chosen: list[str], table: Table, max_points: int | None
) -> Iterator[pa.RecordBatch]:
    for experiment_id in chosen:
        exp = crud.get_experiment(session, experiment_id=experiment_id, tenant=who.scope)
        if exp is None:  # deleted since it was chosen
            continue
        yield from experiment_batches(session, exp, table, max_points=max_points)
        session.expunge(exp)


def _chosen(
    session: Session, who: Principal, *, ids: list[str] | None, tag: str | None, kind: str | None
) -> tuple[str, list[str]]:
    """The kind and the ids of the experiments a multi-experiment export covers."""
    if (ids is None) == (tag is None):
        msg = "give either ids (comma-separated experiment ids) or tag, not both or neither"
        raise ProblemError(422, msg, errors=[{"loc": ["query", "ids"], "msg": msg}])
    if ids is not None:
        wanted = list(dict.fromkeys(i.strip() for part in ids for i in part.split(",")))
        wanted = [i for i in wanted if i]
        if not wanted:
            msg = "ids names no experiment"
            raise ProblemError(422, msg, errors=[{"loc": ["query", "ids"], "msg": msg}])
        _at_most(len(wanted), "ids")
        kinds = crud_exports.kinds_of(
            session, experiment_ids=[i for i in wanted if ID.fullmatch(i)], tenant=who.scope
        )
        missing = [i for i in wanted if i not in kinds]
        if missing:
            raise ProblemError(404, f"no experiment {', '.join(missing)}")
        return _one_kind(kind, [(i, kinds[i]) for i in wanted]), wanted
    assert tag is not None
    found = crud_exports.tagged(
        session, tag=tag, tenant=who.scope, kind=kind, limit=MAX_EXPERIMENTS + 1
    )
    _at_most(len(found), "tag")
    if not found and kind is None:
        raise ProblemError(404, f"no experiment is tagged {tag!r}")
    return _one_kind(kind, found), [i for i, _ in found]


def _at_most(count: int, loc: str) -> None:
    if count > MAX_EXPERIMENTS:
        msg = (
            f"an export covers at most {MAX_EXPERIMENTS} experiments, "
            f"this one {'would cover more' if loc == 'tag' else f'names {count}'}; "
            "narrow it (kind, a more specific tag) or split it"
        )
        raise ProblemError(422, msg, errors=[{"loc": ["query", loc], "msg": msg}])


def _one_kind(kind: str | None, found: list[tuple[str, str]]) -> str:
    """The kind of the export: ``kind`` when every experiment has it, else 422."""
    kinds = sorted({k for _, k in found})
    if kind is None:
        if len(kinds) == 1:
            return kinds[0]
        msg = f"the experiments are of kinds {', '.join(kinds)}; pass kind to choose one table"
        raise ProblemError(422, msg, errors=[{"loc": ["query", "kind"], "msg": msg}])
    others = [f"{i} ({k})" for i, k in found if k != kind]
    if others:
        msg = f"not of kind {kind}: {', '.join(others)}"
        raise ProblemError(422, msg, errors=[{"loc": ["query", "ids"], "msg": msg}])
    return kind
