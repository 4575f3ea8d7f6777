"""The experiment specs: the body of POST /v1/experiments (shared/API.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

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
    """Unknown fields are refused, and so are strings and booleans for numbers ("0.01" is
    not 0.01): pydantic's strict mode, in which an integer is still a valid float."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


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


#: A tag: letters, digits and . _ : / = - (1 to 64 characters).
Tag = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:/=-]+$")]
#: Tags on one experiment.
MAX_TAGS = 32


class _Names(_Strict):
    """What a person or a pipeline calls an experiment."""

    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="A short name to find the experiment by (the list's `name` filter).",
    )
    tags: list[Tag] = Field(
        default_factory=list,
        max_length=MAX_TAGS,
        description="Labels to filter and export by (`?tag=`); PATCH changes them.",
    )
    notes: str | None = Field(
        default=None, max_length=10_000, description="Free text; PATCH changes it."
    )

    @field_validator("tags")
    @classmethod
    def _distinct_tags(cls, tags: list[str]) -> list[str]:
        _distinct(tags, "tags")
        return tags


class ExperimentPatch(_Names):
    """The body of PATCH /v1/experiments/{id}: each field given replaces the current one
    (null clears a name or notes; [] clears the tags); a field left out is kept."""


class _Labels(_Names):
    """The names, and where to tell of the experiment's end."""

    notify: str | None = Field(
        default=None,
        max_length=2000,
        pattern=r"^https?://[^\s]+$",
        description="An http(s) URL that gets a POST, signed with HMAC-SHA256, at each "
        "terminal status (succeeded, failed, cancelled).",
    )


class _Common(_Labels):
    dataset: Dataset
    weight_decay: Positive
    seed: int = Field(default=0, ge=0)


#: Positive numbers swept by a training spec: 1 to MAX_SWEEP distinct values.
MAX_SWEEP = 20
#: Dataset seeds of one census or training spec: 1 to MAX_DATA_SEEDS distinct values.
MAX_DATA_SEEDS = 100
Sweep = Annotated[list[Positive], Field(min_length=1, max_length=MAX_SWEEP)]


def _distinct(values: list[Any] | None, what: str) -> None:
    if values is not None and len(set(values)) != len(values):
        raise ValueError(f"{what} must be distinct, got {values}")


class _Realisations(_Common):
    """Several datasets in one experiment: each data seed replaces ``dataset.seed``."""

    data_seeds: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_DATA_SEEDS,
        description="Dataset seeds, each replacing dataset.seed (one realisation of the data, "
        "with its own certified optimum); leave it out for the dataset's own seed.",
    )

    @field_validator("data_seeds")
    @classmethod
    def _seeded_data(cls, seeds: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if seeds is None:
            return seeds
        _distinct(seeds, "data_seeds")
        dataset = info.data.get("dataset")
        if isinstance(dataset, CustomDataset):
            raise ValueError("custom data has no seed: data_seeds needs a generated dataset")
        if isinstance(dataset, Theorem2Dataset) and dataset.rng == "paper":
            big = [s for s in seeds if s >= 2**32]
            if big:
                raise ValueError(f'rng "paper" takes seeds below 2**32, got {big[0]}')
        return seeds


class OptimumSpec(_Common):
    """The global minimum of the regularised loss, certified by the dual."""

    kind: Literal["optimum"]


class CensusSpec(_Realisations):
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
    lr: Positive | Sweep = Field(
        default=0.01, description="The step size, or a list of 1 to 20 distinct ones to sweep."
    )
    batch_size: int | None = Field(default=None, ge=1)

    @field_validator("lr")
    @classmethod
    def _distinct_lr(cls, value: float | list[float]) -> float | list[float]:
        _distinct(value if isinstance(value, list) else None, "lr")
        return value


class TrainingSpec(_Realisations):
    """A sweep of gradient-descent runs over widths, initialisation scales and seeds, and
    optionally data seeds, weight decays and step sizes."""

    kind: Literal["training"]
    weight_decay: Positive | Sweep = Field(  # type: ignore[assignment]
        description="λ > 0, or a list of 1 to 20 distinct ones to sweep."
    )
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
    test_points: int = Field(
        default=0,
        ge=0,
        le=100_000,
        description="teacher data: fresh points of the same teacher on which each run's "
        "final.test_mse is measured (0: none)",
    )

    @model_validator(mode="after")
    def _test_points_need_a_teacher(self) -> TrainingSpec:
        if self.test_points and self.dataset.generator != "teacher":
            raise ValueError(
                f"test_points needs teacher data (fresh points of its teacher), "
                f"not {self.dataset.generator!r} data"
            )
        return self

    @field_validator("weight_decay")
    @classmethod
    def _distinct_weight_decay(cls, value: float | list[float]) -> float | list[float]:
        _distinct(value if isinstance(value, list) else None, "weight_decay")
        return value

    @property
    def num_cells(self) -> int:
        """The (data seed, weight decay, lr) combinations, each with widths x scales x seeds."""
        return len(realisations(self.data_seeds)) * len(weight_decays(self)) * len(lrs(self))

    @property
    def num_runs(self) -> int:
        return self.num_cells * len(self.widths) * len(self.init_scales) * self.seeds


ExperimentSpec = Annotated[OptimumSpec | CensusSpec | TrainingSpec, Field(discriminator="kind")]
spec_adapter: TypeAdapter[OptimumSpec | CensusSpec | TrainingSpec] = TypeAdapter(ExperimentSpec)


# --- the sweeps, on a validated spec or its stored JSON --------------------------------


def realisations(data_seeds: list[int] | None) -> list[int | None]:
    """The data seeds of a spec in order; [None] (the dataset's own seed) without them."""
    return [None] if not data_seeds else [int(s) for s in data_seeds]


def weight_decays(spec: Any) -> list[float]:
    """A spec's weight decays, from a spec model or its stored JSON (a number or a list)."""
    value = spec["weight_decay"] if isinstance(spec, Mapping) else spec.weight_decay
    return [float(v) for v in value] if isinstance(value, list) else [float(value)]


def lrs(spec: Any) -> list[float]:
    """A training spec's step sizes, from a spec model or its stored JSON."""
    opt = spec["optimizer"] if isinstance(spec, Mapping) else spec.optimizer
    value = opt["lr"] if isinstance(opt, Mapping) else opt.lr
    return [float(v) for v in value] if isinstance(value, list) else [float(value)]


def realise(dataset: Mapping[str, Any], data_seed: int | None) -> dict[str, Any]:
    """The dataset JSON of one realisation: ``seed`` replaced by data_seed (None: as given)."""
    return dict(dataset) if data_seed is None else {**dataset, "seed": int(data_seed)}


def swept(spec: Mapping[str, Any]) -> dict[str, bool]:
    """Which of data_seed, weight_decay and lr a stored spec sweeps (lists given)."""
    opt = spec.get("optimizer") or {}
    return {
        "data_seed": bool(spec.get("data_seeds")),
        "weight_decay": isinstance(spec.get("weight_decay"), list),
        "lr": isinstance(opt.get("lr"), list),
    }


def training_grid(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A stored training spec's runs in grid order, as their params.

    Data seed, weight decay and lr are outermost, so that each (data seed, λ, lr) cell is
    a contiguous block (batches train one X, y, λ and lr); each run's params name only the
    swept ones, so a spec without lists has the params {width, init_scale, seed} of old.
    """
    flags = swept(spec)
    runs = []
    for data_seed in realisations(spec.get("data_seeds")):
        for lam in weight_decays(spec):
            for lr in lrs(spec):
                cell = {"data_seed": data_seed, "weight_decay": lam, "lr": lr}
                named = {k: v for k, v in cell.items() if flags[k]}
                runs += [
                    {"width": w, "init_scale": a, "seed": s, **named}
                    for w in spec["widths"]
                    for a in spec["init_scales"]
                    for s in range(spec["seeds"])
                ]
    return runs
