"""Response models of the HTTP API (shared/API.md)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from service.models import CensusCone as ConeRow
from service.models import Experiment as ExperimentRow
from service.models import Run as RunRow
from service.models import as_utc


class Progress(BaseModel):
    done: int
    total: int


class ErrorInfo(BaseModel):
    type: str
    detail: str


class Experiment(BaseModel):
    id: str
    kind: Literal["optimum", "census", "training"]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    name: str | None = Field(description="The spec's name, as last changed by PATCH.")
    tags: list[str] = Field(description="The spec's tags, as last changed by PATCH, sorted.")
    notes: str | None = Field(description="The spec's notes, as last changed by PATCH.")
    progress: Progress
    spec: dict[str, Any]
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    error: ErrorInfo | None
    result: dict[str, Any] | None

    @classmethod
    def of(
        cls, row: ExperimentRow, done: int, *, tags: Sequence[str], result: bool = True
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
            progress=Progress(done=min(done, total), total=total),
            spec=row.spec,
            created_at=as_utc(row.created_at),
            started_at=row.started_at and as_utc(row.started_at),
            finished_at=row.finished_at and as_utc(row.finished_at),
            error=ErrorInfo(**row.error) if row.error else None,
            result=row.result if result else None,
        )


class ExperimentPage(BaseModel):
    items: list[Experiment]
    next_cursor: str | None


class Run(BaseModel):
    id: str
    params: dict[str, Any]
    status: str
    verdict: str | None
    final: dict[str, Any] | None

    @classmethod
    def of(cls, row: RunRow) -> Run:
        return cls(
            id=row.id, params=row.params, status=row.status, verdict=row.verdict, final=row.final
        )


class RunPage(BaseModel):
    items: list[Run]
    next_cursor: str | None


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


class Cone(BaseModel):
    """One sampled activation cone of a census: its signed cones, value and verdict."""

    width: int
    sample: int
    verdict: str
    value: float
    gap: float
    covered: float
    method: str
    patterns: list[str]
    signs: list[int]
    stationarity_residual: float | None
    num_neurons: int
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
            verdict=row.verdict,
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
    items: list[Cone]
    next_cursor: str | None
