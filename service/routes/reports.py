"""Curves, figures and exports of an experiment's runs."""

from __future__ import annotations

import csv
import io
import math
from typing import IO, Annotated, Literal

import anyio
import anyio.to_thread
import numpy as np
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from service import crud, crud_reports, curve_chunks, curves, reports
from service.db import Database
from service.deps import DatabaseDep, Principal, PrincipalDep
from service.problems import ProblemError
from service.responses import body_of, json_response
from service.routes import exports as export_routes
from service.routes.experiments import ID, found

router = APIRouter(prefix="/v1/experiments", tags=["reports"])

FIGURE_TYPES = {"svg": "image/svg+xml", "png": "image/png"}
FIGURE_KINDS = ("census", "training")


class Curve(BaseModel):
    """A run's curve as columns (shared/API.md); non-finite values are null."""

    epoch: list[int]
    mse: list[float | None]
    reg_loss: list[float | None]
    grad_norm_sq: list[float | None]
    gap: list[float | None]
    param_norm_sq: list[float | None]
    effective_rank: list[float | None]
    num_neurons: list[int | None]


@router.get(
    "/{experiment_id}/runs/{run_id}/curve",
    response_model=Curve,
    responses={200: {"content": {"text/csv": {}}}, 404: {}},
)
async def get_curve(
    request: Request,
    experiment_id: str,
    run_id: str,
    db: DatabaseDep,
    who: PrincipalDep,
    max_points: Annotated[int | None, Query(ge=2, le=1_000_000)] = None,
    fmt: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
) -> Response:
    """A run's curve as columns, optionally downsampled evenly in log-epoch. While the run
    trains, its partial curve as of its batch's last checkpoint (empty before the first)."""

    def work(session: Session) -> bytes:
        found(session, experiment_id, who)
        run = None
        if ID.fullmatch(run_id):
            run = crud.get_run(session, experiment_id=experiment_id, run_id=run_id)
        if run is None:
            raise ProblemError(404, f"no run {run_id} in experiment {experiment_id}")
        optimum, chunks = math.nan, list[bytes]()
        if run.curve is None:  # while its batch trains: the points to its last checkpoint
            optimum, chunks = crud.run_chunks(session, experiment_id=experiment_id, index=run.index)
        if run.curve is not None:
            columns = curves.decode_curve(run.curve)
        elif chunks:
            columns = curve_chunks.curve_of(run.index, chunks, optimum)
        elif run.status == "running":  # its batch has not reached its first checkpoint
            columns = _empty_curve()
        else:
            raise ProblemError(404, f"run {run_id} has no curve yet (its status is {run.status})")
        if max_points is not None:
            columns = curves.downsample(columns, max_points)
        if fmt == "csv":
            return _curve_csv(columns)
        return body_of(
            Curve.model_validate(
                {name: [_finite(v) for v in col.tolist()] for name, col in columns.items()}
            )
        )

    body = await db.run(work)
    if fmt == "csv":
        return Response(body, media_type="text/csv")
    return json_response(request, body)


def _empty_curve() -> dict[str, np.ndarray]:
    return {
        name: np.zeros(0, dtype=np.int64 if name in curves.INT_FIELDS else np.float64)
        for name in curves.FIELDS
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _curve_csv(columns: dict[str, np.ndarray]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(curves.FIELDS)
    values = [columns[name].tolist() for name in curves.FIELDS]
    writer.writerows(zip(*[[repr(v) for v in col] for col in values], strict=True))
    return buf.getvalue().encode()


@router.get("/{experiment_id}/figure.{fmt}", responses={404: {}, 409: {}})
async def get_figure(
    request: Request,
    experiment_id: str,
    fmt: Literal["svg", "png"],
    db: DatabaseDep,
    who: PrincipalDep,
) -> Response:
    """The experiment's figure, drawn from its result (shared/API.md, Figures)."""

    def fetch(session: Session) -> tuple[str, dict, dict, list[reports.TrainingRun], int]:
        exp = found(session, experiment_id, who)
        if exp.kind not in FIGURE_KINDS:
            raise ProblemError(404, f"experiments of kind {exp.kind} have no figure")
        if exp.result is None:
            if exp.status in ("failed", "cancelled"):
                raise ProblemError(409, f"experiment {exp.status}; it has no result to draw")
            raise ProblemError(409, "experiment is running; the figure is drawn from its result")
        runs, total = ([], 0) if exp.kind == "census" else _sampled_runs(session, experiment_id)
        return exp.kind, exp.result, exp.spec, runs, total

    kind, result, spec, runs, total = await db.run(fetch)

    def draw() -> bytes:
        if kind == "census":
            return reports.census_figure(result, fmt, spec=spec)
        return reports.training_figure(result, runs, fmt, spec=spec, total_runs=total)

    image = await anyio.to_thread.run_sync(draw, limiter=request.app.state.drawing)
    return Response(image, media_type=FIGURE_TYPES[fmt])


def _sampled_runs(session: Session, experiment_id: str) -> tuple[list[reports.TrainingRun], int]:
    """The runs a training figure draws (a per-init_scale sample, with curves), and the count."""
    summaries = crud_reports.run_summaries(session, experiment_id=experiment_id)
    chosen = [summaries[i] for i in reports.sample_runs([s[1] for s in summaries])]
    blobs = crud_reports.curves_of(session, run_ids=[s[0] for s in chosen])
    runs = [
        (params, verdict, curves.decode_curve(blobs[rid]) if rid in blobs else None)
        for rid, params, verdict in chosen
    ]
    return runs, len(summaries)


@router.get("/{experiment_id}/export.{fmt}", responses={**export_routes.FILE_RESPONSES, 404: {}})
async def export(
    experiment_id: str, fmt: Literal["csv", "parquet"], db: DatabaseDep, who: PrincipalDep
) -> Response:
    """The experiment's rows (a run, a cone or a neuron each) under its kind's declared schema."""
    return await _export_table(experiment_id, fmt, "rows", db, who)


@router.get("/{experiment_id}/widths.{fmt}", responses={**export_routes.FILE_RESPONSES, 404: {}})
async def export_widths(
    experiment_id: str, fmt: Literal["csv", "parquet"], db: DatabaseDep, who: PrincipalDep
) -> Response:
    """A census's per-width rows (shares and their intervals), once it has succeeded."""
    return await _export_table(experiment_id, fmt, "widths", db, who)


@router.get("/{experiment_id}/curves.{fmt}", responses={**export_routes.FILE_RESPONSES, 404: {}})
async def export_curves(
    experiment_id: str,
    fmt: Literal["csv", "parquet"],
    db: DatabaseDep,
    who: PrincipalDep,
    max_points: Annotated[
        int | None, Query(ge=2, le=1_000_000, description="At most this many points per run.")
    ] = None,
) -> Response:
    """Every run's curve of a training sweep, one row per recorded point (long format)."""
    return await _export_table(experiment_id, fmt, "curves", db, who, max_points=max_points)


async def _export_table(
    experiment_id: str,
    fmt: Literal["csv", "parquet"],
    table: export_routes.Table,
    db: Database,
    who: Principal,
    *,
    max_points: int | None = None,
) -> Response:
    def work(session: Session) -> IO[bytes]:
        exp = found(session, experiment_id, who)
        export_routes.check_table(exp.kind, table)
        batches = export_routes.experiment_batches(session, exp, table, max_points=max_points)
        return export_routes.spool(export_routes.schema_of(exp.kind, table), batches, fmt)

    sink = await db.run(work)
    name = experiment_id if table == "rows" else f"{experiment_id}-{table}"
    return export_routes.file_response(sink, fmt, name)
