"""The experiment specs: the body of POST /v1/experiments (shared/API.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

Finite = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


#: An absolute tolerance on loss differences, in the units of y² (opt-in; SCIENCE.md).
Tolerance = Annotated[
    float | None,
    Field(
        gt=0,
        allow_inf_nan=False,
        description="Absolute tolerance on loss differences, in the units of y squared. "
        "Leave it out to use relative_tolerance, so verdicts do not depend on units.",
    ),
]
#: A tolerance relative to the scale of the problem (README, "Tolerances").
RelativeTolerance = Annotated[
    float,
    Field(
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description="Tolerance on loss differences relative to the global optimum "
        "(used when tolerance is not given).",
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TeacherDataset(_Strict):
    """Gaussian inputs labelled by a random ReLU teacher."""

    generator: Literal["teacher"]
    n: int = Field(ge=1, le=100_000)
    d: int = Field(ge=1, le=10_000)
    teacher_width: int = Field(default=10, ge=1, le=10_000)
    seed: int = Field(default=0, ge=0)


class OrthogonalDataset(TeacherDataset):
    """The first n rows of a Haar-random d x d orthogonal matrix; needs d >= n."""

    generator: Literal["orthogonal"]  # type: ignore[assignment]

    @model_validator(mode="after")
    def _d_at_least_n(self) -> OrthogonalDataset:
        if self.d < self.n:
            raise ValueError(f"orthogonal data needs d >= n, got n={self.n}, d={self.d}")
        return self


class Theorem2Dataset(_Strict):
    """The n = d construction of the paper's Theorem 2 (SCIENCE.md section 7)."""

    generator: Literal["theorem2"]
    d: int = Field(ge=3, le=10_000)
    perturbation: float = Field(default=1e-3, ge=0, allow_inf_nan=False)
    seed: int = Field(default=0, ge=0)
    rng: Literal["default", "paper"] = Field(
        default="default",
        description='"paper": the perturbation as the paper draws it (numpy\'s legacy '
        "np.random.seed(seed), one d x d normal draw); default: the service's own generator.",
    )

    @model_validator(mode="after")
    def _paper_seed_fits(self) -> Theorem2Dataset:
        if self.rng == "paper" and self.seed >= 2**32:
            raise ValueError(
                f'rng "paper" takes seeds below 2**32 (numpy\'s legacy seeding), got {self.seed}'
            )
        return self

    @property
    def n(self) -> int:
        return self.d


class CorrelatedDataset(_Strict):
    """Unit-norm inputs with pairwise correlation rho (rho = 0: orthogonal data), labelled
    by a random ReLU teacher; needs d >= n."""

    generator: Literal["correlated"]
    n: int = Field(ge=1, le=10_000)
    d: int = Field(ge=1, le=10_000)
    rho: float = Field(ge=0, lt=1, allow_inf_nan=False)
    teacher_width: int = Field(default=10, ge=1, le=10_000)
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _d_at_least_n(self) -> CorrelatedDataset:
        if self.d < self.n:
            raise ValueError(f"correlated data needs d >= n, got n={self.n}, d={self.d}")
        return self


class CustomDataset(_Strict):
    """Caller-supplied inputs X (n rows of d numbers) and labels y (n numbers)."""

    generator: Literal["custom"]
    X: list[list[Finite]] = Field(min_length=1)
    y: list[Finite] = Field(min_length=1)

    @field_validator("X")
    @classmethod
    def _rectangular(cls, rows: list[list[float]]) -> list[list[float]]:
        width = len(rows[0])
        if width == 0:
            raise ValueError("rows of X must have at least one column")
        for i, row in enumerate(rows):
            if len(row) != width:
                raise ValueError(f"X is ragged: row 0 has {width} columns, row {i} has {len(row)}")
        return rows

    @model_validator(mode="after")
    def _lengths_match(self) -> CustomDataset:
        if len(self.X) != len(self.y):
            raise ValueError(f"X has {len(self.X)} rows but y has {len(self.y)} labels")
        return self

    @property
    def n(self) -> int:
        return len(self.X)

    @property
    def d(self) -> int:
        return len(self.X[0])


Dataset = Annotated[
    TeacherDataset | OrthogonalDataset | Theorem2Dataset | CorrelatedDataset | CustomDataset,
    Field(discriminator="generator"),
]


class _Common(_Strict):
    dataset: Dataset
    weight_decay: Positive
    seed: int = Field(default=0, ge=0)


class OptimumSpec(_Common):
    """The global minimum of the regularised loss, certified by the dual."""

    kind: Literal["optimum"]


class CensusSpec(_Common):
    """The fraction of activation cones that hold a global minimum, per width."""

    kind: Literal["census"]
    widths: list[Annotated[int, Field(ge=1, le=1_000_000)]] = Field(min_length=1, max_length=200)
    samples_per_width: int = Field(ge=1, le=100_000)
    sampling: Literal["uniform", "random_vector", "rejection"] = "uniform"
    tolerance: Tolerance = None
    relative_tolerance: RelativeTolerance = 1e-7


class Optimizer(_Strict):
    """Full-batch gradient descent or mini-batch SGD."""

    name: Literal["gd", "sgd"] = "gd"
    lr: Positive = 0.01
    batch_size: int | None = Field(default=None, ge=1)


class TrainingSpec(_Common):
    """A sweep of gradient-descent runs over widths, initialisation scales and seeds."""

    kind: Literal["training"]
    widths: list[Annotated[int, Field(ge=1, le=100_000)]] = Field(min_length=1, max_length=100)
    init_scales: list[Positive] = Field(min_length=1, max_length=100)
    seeds: int = Field(default=1, ge=1, le=100_000)
    optimizer: Optimizer = Field(default_factory=Optimizer)
    max_epochs: int = Field(ge=1, le=1_000_000_000)
    grad_tol: Positive = 1e-16
    log_growth: float = Field(default=1.01, gt=1, le=10, allow_inf_nan=False)
    tolerance: Tolerance = None
    relative_tolerance: RelativeTolerance = 1e-7
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @property
    def num_runs(self) -> int:
        return len(self.widths) * len(self.init_scales) * self.seeds


ExperimentSpec = Annotated[OptimumSpec | CensusSpec | TrainingSpec, Field(discriminator="kind")]
spec_adapter: TypeAdapter[OptimumSpec | CensusSpec | TrainingSpec] = TypeAdapter(ExperimentSpec)
