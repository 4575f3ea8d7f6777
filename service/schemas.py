"""Response models of the HTTP API (shared/API.md)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from service.models import CensusCone as ConeRow
from service.models import Experiment as ExperimentRow
from service.models import Run as RunRow
from service.models import as_utc
from service.results import FinalField, ParamsField, ResultField


class Kind(StrEnum):
    """What an experiment computes (shared/API.md, Specs)."""

    optimum = "optimum"
    census = "census"
    training = "training"


class Status(StrEnum):
    """An experiment's life: queued, running, then succeeded, failed or cancelled."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class RunStatus(StrEnum):
    """A run's state: `running` while its batch trains, `done` once its final is stored."""

    queued = "queued"
    running = "running"
    done = "done"
    cancelled = "cancelled"
    failed = "failed"


class RunVerdict(StrEnum):
    """A training run's verdict (SCIENCE.md section 6)."""

    global_minimum = "global_minimum"
    spurious_local_minimum = "spurious_local_minimum"
    saddle_point = "saddle_point"
    not_converged = "not_converged"
    diverged = "diverged"
    collapsed = "collapsed"


class ConeVerdict(StrEnum):
    """What a census cone holds (SCIENCE.md section 4)."""

    global_ = "global"
    spurious = "spurious"
    no_local_min = "no_local_min"


#: What progress counts, per kind: a training sweep's epochs (each run's epochs trained, a
#: run that stopped early counting as max_epochs), a census's cones, an optimum's items.
PROGRESS_UNITS: dict[str, Literal["epochs", "cones", "items"]] = {
    "training": "epochs",
    "census": "cones",
    "optimum": "items",
}


class Progress(BaseModel):
    """Work done of work planned."""

    done: int = Field(description="units done")
    total: int = Field(description="units planned")
    unit: Literal["epochs", "cones", "items"] = Field(
        default="items",
        description="what done and total count: epochs (training: the sum over runs of "
        "epochs trained, a run stopped early counting as max_epochs), cones (census) or "
        "items (optimum)",
    )

    @classmethod
    def of(cls, kind: str, done: int, total: int) -> Progress:
        return cls(done=min(done, total), total=total, unit=PROGRESS_UNITS.get(kind, "items"))


class ErrorInfo(BaseModel):
    """Why an experiment failed."""

    type: str = Field(description="the kind of failure, e.g. the exception's name")
    detail: str = Field(description="what went wrong, for a person")


class StageWait(BaseModel):
    """Seconds from queued to started of a stage's items."""

    first: float | None = Field(description="of the first item to start")
    median: float | None = Field(description="median over the items started")
    max: float | None = Field(description="the longest")


class StageRun(BaseModel):
    """Seconds from started to finished of a stage's items."""

    sum: float | None = Field(description="summed over the items finished")
    max: float | None = Field(description="the longest")


class StageTiming(BaseModel):
    """Where one stage's time went (0: the certified optima; 1: census chunks or training
    batches)."""

    stage: int
    task: str = Field(description="what its items do: optimum, census_chunk, training_batch")
    items: int = Field(description="work items in the stage")
    finished: int = Field(description="of them finished (done, failed or cancelled)")
    wait: StageWait = Field(description="queued -> started, per item")
    run: StageRun = Field(description="started -> finished, per item")
    wall: float | None = Field(
        description="seconds from its first start to its last finish; null until all finished"
    )
    release: float | None = Field(
        description="seconds from the previous stage's last finish to this stage's first "
        "queued item (null for the first stage)"
    )


class Timings(BaseModel):
    """Where an experiment's time went, from its work items' queued, started and finished
    times (seconds; null where not known yet)."""

    submit_to_start: float | None = Field(description="created_at -> started_at")
    submit_to_done: float | None = Field(description="created_at -> finished_at")
    stages: list[StageTiming]


class Experiment(BaseModel):
    """A submitted experiment: its spec, where it stands and, once succeeded, its result."""

    id: str = Field(description="32 lowercase hex digits")
    kind: Kind = Field(description="the spec's kind")
    status: Status = Field(description="queued, running, then one of the terminal three")
    name: str | None = Field(description="The spec's name, as last changed by PATCH.")
    tags: list[str] = Field(description="The spec's tags, as last changed by PATCH, sorted.")
    notes: str | None = Field(description="The spec's notes, as last changed by PATCH.")
    progress: Progress = Field(description="work done of work planned")
    spec: dict[str, Any] = Field(description="the spec as submitted, defaults filled in")
    created_at: datetime | None = Field(description="when it was accepted (UTC)")
    started_at: datetime | None = Field(description="when a worker first took its work")
    finished_at: datetime | None = Field(description="when it reached a terminal status")
    error: ErrorInfo | None = Field(description="set when status is failed")
    timings: Timings | None = Field(
        default=None,
        description="per-stage timings; in GET /v1/experiments/{id} and the answers to "
        "submit, cancel and PATCH; null in lists",
    )
    result: ResultField = Field(
        description="null until it succeeds (and with fields=summary); then the kind's "
        "result: OptimumResult, CensusResult or TrainingResult"
    )

    @classmethod
    def of(
        cls,
        row: ExperimentRow,
        done: int,
        *,
        tags: Sequence[str],
        result: bool = True,
        timings: dict[str, Any] | None = None,
    ) -> Experiment:
        """The response for a row and its tags; `result=False` leaves the (unloaded)
        result out."""
        total = row.progress_total
        if row.status == "succeeded":
            done = total
        return cls(
            id=row.id,
            kind=row.kind,  # type: ignore[arg-type]
            status=row.status,  # type: ignore[arg-type]
            name=row.name,
            tags=sorted(tags),
            notes=row.notes,
            progress=Progress.of(row.kind, done, total),
            spec=row.spec,
            created_at=as_utc(row.created_at),
            started_at=row.started_at and as_utc(row.started_at),
            finished_at=row.finished_at and as_utc(row.finished_at),
            error=ErrorInfo(**row.error) if row.error else None,
            timings=None if timings is None else Timings.model_validate(timings),
            result=row.result if result else None,
        )


class ExperimentPage(BaseModel):
    """A page of experiments, newest first."""

    items: list[Experiment]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null at the end"
    )


class LatestPoint(BaseModel):
    """A training run's latest curve point: at its batch's last checkpoint while it
    trains, its final point once done."""

    epoch: int = Field(description="the epoch of the point")
    loss: float | None = Field(description="the regularised loss (reg_loss); null if not finite")
    gap: float | None = Field(description="loss minus the global optimum; null if not finite")
    grad_norm_sq: float | None = Field(description="the squared gradient norm; null if not finite")


class Run(BaseModel):
    """One cell of an experiment's grid: a census width or a training run."""

    id: str = Field(description="32 lowercase hex digits")
    params: ParamsField = Field(description="the run's cell of the grid")
    status: RunStatus = Field(
        description="queued, running (its batch trains), done, cancelled or failed"
    )
    verdict: RunVerdict | None = Field(description="training runs, once done")
    final: FinalField = Field(
        description="once done: a training run's last point (TrainingFinal), or a census "
        "width's row (CensusRow)"
    )
    latest: LatestPoint | None = Field(
        default=None,
        description="training runs: the latest curve point, refreshed at each checkpoint "
        "while the run trains (null before its first checkpoint, and for census runs)",
    )

    @classmethod
    def of(cls, row: RunRow) -> Run:
        return cls(
            id=row.id,
            params=row.params,
            status=RunStatus(row.status),
            verdict=RunVerdict(row.verdict) if row.verdict else None,
            final=row.final,
            latest=LatestPoint(**row.latest) if row.latest else None,
        )


class RunPage(BaseModel):
    """A page of runs in grid order."""

    items: list[Run]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null at the end"
    )


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


class Cone(BaseModel):
    """One sampled activation cone of a census: its signed cones, value and verdict."""

    width: int = Field(description="the census width the cone was drawn at")
    sample: int = Field(description="the sample's index at that width")
    verdict: ConeVerdict = Field(description="what the cone holds (SCIENCE.md section 4)")
    value: float = Field(description="the restricted program's value on the cone")
    gap: float = Field(description="value minus the global optimum")
    covered: float = Field(description="fraction of all signed cones that the sample hit")
    method: str = Field(description="how the restricted program was solved")
    patterns: list[str] = Field(description="the sample's activation patterns, as 0/1 strings")
    signs: list[int] = Field(description="the sign (+1 or -1) of each pattern's cone")
    stationarity_residual: float | None = Field(
        description="residual of the stationarity test of the restricted minimiser"
    )
    num_neurons: int = Field(description="neurons of the restricted minimiser")
    polished: bool = Field(
        default=False,
        description="the stationarity test ran on the restricted minimiser polished to "
        "machine precision (Newton on its faces), not on the interior-point solution",
    )
    birth_margin: float | None = Field(
        default=None,
        description="spurious cones: 2 weight_decay minus the largest cone projection at "
        "the point's residual (weight_decay's units); negative when a new small neuron "
        "lowers the loss",
    )
    data_seed: int | None = Field(
        default=None, description="the dataset seed of the cone's realisation (data_seeds)"
    )
    strict: bool | None = Field(
        default=None,
        description="spurious cones: false when birth_margin is negative and the network "
        "has a neuron free to grow (a saddle at its width)",
    )

    @classmethod
    def of(cls, row: ConeRow) -> Cone:
        d = row.detail
        return cls(
            width=row.width,
            sample=row.sample,
            verdict=ConeVerdict(row.verdict),
            value=row.value,
            gap=row.gap,
            covered=row.covered,
            method=row.method,
            patterns=d.get("patterns", []),
            signs=d.get("signs", []),
            stationarity_residual=d.get("stationarity_residual"),
            num_neurons=d.get("num_neurons", 0),
            polished=d.get("polished", False),
            birth_margin=d.get("birth_margin"),
            strict=d.get("strict"),
            data_seed=d.get("data_seed"),
        )


class ConePage(BaseModel):
    """A page of a census's cones."""

    items: list[Cone]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null at the end"
    )
