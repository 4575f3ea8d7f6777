"""Typed models of what the workers store: each kind's result, a run's params and final.

They document the JSON that the server already returns (workers/jobs.py writes it);
the server does not validate stored results through them, so a field added later
still passes through (extra fields are allowed). A field that some experiments lack
(older ones, or one that does not sweep data seeds) is optional. The science behind
each number is shared/SCIENCE.md; the section is named in the descriptions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, TypeAdapter
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema as cs

#: A share in [0, 1]; null where it is undefined (no samples, or a count not recorded).
Share = float | None
#: A Wilson 95% interval [low, high] of a share; null when there are no samples.
Interval = list[float] | None


class _Open(BaseModel):
    """Extra fields are allowed: a newer worker may add some."""

    model_config = ConfigDict(extra="allow")


class Neuron(_Open):
    """One neuron of the optimal network: x -> a * relu(w . x)."""

    w: list[float] = Field(description="input weights, length d")
    a: float = Field(description="output weight")


class Certificate(_Open):
    """Why the optimum is global (SCIENCE.md section 3: the dual certificate)."""

    max_dual_violation: float | None = Field(
        default=None,
        description="largest violation of the dual constraints over every signed cone; "
        "at most about 1e-6 for a certified optimum",
    )
    gap_bound: float | None = Field(
        default=None,
        description="by weak duality, optimum minus the true global minimum is at most this",
    )


class CellOptimum(_Open):
    """The optimum of one (data seed, weight decay) cell of a sweep."""

    data_seed: int | None = Field(default=None, description="dataset seed of the cell")
    weight_decay: float | None = Field(default=None, description="weight decay of the cell")
    optimum: float | None = Field(default=None, description="global minimum of the loss")
    num_patterns: int | None = Field(default=None, description="activation patterns")
    num_signed_cones: int | None = Field(default=None, description="signed cones")


_OPTIMUM = "the global minimum of the regularised loss L (SCIENCE.md section 3)"
_PATTERNS = "number of distinct activation patterns of the data (SCIENCE.md section 2)"
_CONES = "number of signed cones: each pattern with either sign, 2 num_patterns"
_BOUND = "min(n^d, 2^n), the theoretical bound on the number of patterns"
_OPTIMA = (
    "present when the spec sweeps data_seeds or weight_decay: the optimum of each "
    "(data seed, weight decay) cell; the top-level fields are the first cell's"
)


class OptimumResult(_Open):
    """Result of an `optimum` experiment: the certified global optimum and a network
    that attains it (SCIENCE.md section 3)."""

    optimum: float = Field(description=_OPTIMUM)
    num_patterns: int | None = Field(default=None, description=_PATTERNS)
    num_signed_cones: int | None = Field(default=None, description=_CONES)
    theory_bound: int | None = Field(default=None, description=_BOUND)
    neurons: list[Neuron] = Field(description="a network that attains the optimum")
    certificate: Certificate | None = Field(default=None, description="the duality certificate")
    method: str | None = Field(
        default=None, description="how the convex program was solved (solver and path)"
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "optimum": 0.1304,
                    "num_patterns": 64,
                    "num_signed_cones": 128,
                    "theory_bound": 64,
                    "neurons": [{"w": [0.4, -0.1, 0.9], "a": 0.7}],
                    "certificate": {"max_dual_violation": 1e-9, "gap_bound": 2e-12},
                    "method": "clarabel",
                }
            ]
        }
    )


class CensusRow(_Open):
    """One width of a census (SCIENCE.md section 5): verdict shares over its samples.

    Also the `final` of a census run (each width is one run)."""

    width: int = Field(description="network width m: signed cones drawn per sample")
    samples: int = Field(description="samples certified at this width (all data seeds)")
    p_global: Share = Field(default=None, description="share holding a global minimum")
    p_spurious: Share = Field(default=None, description="share holding a spurious local minimum")
    p_no_local_min: Share = Field(default=None, description="share holding no local minimum")
    p_spurious_strict: Share = Field(
        default=None,
        description="share holding a strict spurious minimum (birth_margin >= 0); null for "
        "samples certified before the birth test existed",
    )
    p_covered: Share = Field(default=None, description="mean fraction of all signed cones hit")
    p_global_ci: Interval = Field(default=None, description="Wilson 95% interval of p_global")
    p_spurious_ci: Interval = Field(default=None, description="Wilson 95% interval of p_spurious")
    p_no_local_min_ci: Interval = Field(
        default=None, description="Wilson 95% interval of p_no_local_min"
    )
    p_spurious_strict_ci: Interval = Field(
        default=None, description="Wilson 95% interval of p_spurious_strict"
    )
    by_data_seed: list[dict[str, Any]] | None = Field(
        default=None,
        description="with data_seeds: the same fields per realisation, with its data_seed "
        "and optimum",
    )


class Threshold(_Open):
    """Empirical widths where p_global first reaches 0.5 and 0.95, interpolated linearly in
    log width; null when no width reaches the level."""

    m_half: float | None = Field(default=None, description="width where p_global reaches 0.5")
    m_95: float | None = Field(default=None, description="width where p_global reaches 0.95")


class CensusResult(_Open):
    """Result of a `census` experiment: per-width verdict shares (SCIENCE.md section 5)."""

    optimum: float | None = Field(default=None, description=_OPTIMUM)
    num_patterns: int | None = Field(default=None, description=_PATTERNS)
    num_signed_cones: int | None = Field(default=None, description=_CONES)
    theory_bound: int | None = Field(default=None, description=_BOUND)
    optima: list[CellOptimum] | None = Field(default=None, description=_OPTIMA)
    rows: list[CensusRow] = Field(description="one row per width, in the spec's order")
    threshold: Threshold | None = Field(default=None, description="empirical thresholds")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "optimum": 0.021,
                    "num_patterns": 16,
                    "num_signed_cones": 32,
                    "theory_bound": 16,
                    "rows": [
                        {
                            "width": 8,
                            "samples": 12,
                            "p_global": 0.25,
                            "p_spurious": 0.0,
                            "p_no_local_min": 0.75,
                            "p_spurious_strict": 0.0,
                            "p_covered": 0.24,
                            "p_global_ci": [0.09, 0.53],
                        }
                    ],
                    "threshold": {"m_half": 31.5, "m_95": None},
                }
            ]
        }
    )


class TrainingGroup(_Open):
    """The runs of one (width, init_scale) cell, and of one data seed, weight decay and lr
    where the spec sweeps them: their count and verdict shares (SCIENCE.md section 6)."""

    width: int = Field(description="network width")
    init_scale: float = Field(description="initialisation scale alpha")
    data_seed: int | None = Field(default=None, description="present when data_seeds is swept")
    weight_decay: float | None = Field(default=None, description="present when swept")
    lr: float | None = Field(default=None, description="present when the lr is swept")
    runs: int | None = Field(default=None, description="runs in the group")
    p_global: Share = Field(default=None, description="share of runs at a global minimum")
    p_spurious: Share = Field(default=None, description="share at a spurious local minimum")
    p_saddle: Share = Field(default=None, description="share at a saddle point")
    p_not_converged: Share = Field(default=None, description="share that reached max_epochs")
    p_diverged: Share = Field(default=None, description="share whose loss went non-finite")
    p_collapsed: Share = Field(default=None, description="share whose network collapsed to 0")
    p_cone_global: Share = Field(
        default=None, description="share whose final cone holds a global minimum"
    )
    p_global_ci: Interval = Field(default=None, description="Wilson 95% interval of p_global")
    p_spurious_ci: Interval = Field(default=None, description="Wilson 95% interval of p_spurious")
    p_cone_global_ci: Interval = Field(
        default=None, description="Wilson 95% interval of p_cone_global"
    )


class TrainingResult(_Open):
    """Result of a `training` experiment: verdict shares per group of runs
    (SCIENCE.md section 6); each run's own numbers are on its Run."""

    optimum: float | None = Field(default=None, description=_OPTIMUM)
    optima: list[CellOptimum] | None = Field(default=None, description=_OPTIMA)
    groups: list[TrainingGroup] = Field(description="one group per cell, in grid order")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "optimum": 0.0815,
                    "groups": [
                        {
                            "width": 10,
                            "init_scale": 1.0,
                            "runs": 2,
                            "p_global": 1.0,
                            "p_spurious": 0.0,
                            "p_saddle": 0.0,
                            "p_not_converged": 0.0,
                            "p_diverged": 0.0,
                            "p_collapsed": 0.0,
                            "p_cone_global": 1.0,
                            "p_global_ci": [0.34, 1.0],
                        }
                    ],
                }
            ]
        }
    )


class TrainingFinal(_Open):
    """A training run's last point and its verdict's evidence (SCIENCE.md section 6)."""

    epoch: int = Field(description="epochs trained")
    mse: float | None = Field(default=None, description="mean squared error; null if diverged")
    reg_loss: float | None = Field(default=None, description="regularised loss L")
    grad_norm_sq: float | None = Field(default=None, description="squared gradient norm")
    gap: float | None = Field(default=None, description="reg_loss minus the global optimum")
    num_neurons: int | None = Field(default=None, description="distinct active signed cones")
    cone_value: float | None = Field(
        default=None, description="the restricted program's value on the run's own cone"
    )
    cone_global: bool | None = Field(
        default=None, description="whether the run's own cone holds a global minimum"
    )
    projected_verdict: str | None = Field(
        default=None,
        description="not_converged runs: the verdict it would get if it converged in its cone",
    )
    birth_margin: float | None = Field(
        default=None,
        description="2 weight_decay minus the largest cone projection at the residual; "
        "negative when a new small neuron lowers the loss",
    )
    strict: bool | None = Field(default=None, description="spurious: no neuron free to grow")
    stop: Literal["converged", "not_converged", "diverged", "collapsed"] | None = Field(
        default=None, description="why training stopped"
    )
    sharpness_init: float | None = Field(
        default=None, description="largest eigenvalue of the Hessian of L at the initial point"
    )
    lr_warning: str | None = Field(
        default=None, description="a sentence when lr > 2 / sharpness_init, else null"
    )
    norm_ratio: float | None = Field(
        default=None, description="teacher data: the network's norm over the optimum's"
    )
    test_mse: float | None = Field(
        default=None, description="teacher data with test_points: MSE on fresh points"
    )


class RunParams(_Open):
    """A run's cell of the grid: a census width, or a training (width, init_scale, seed)
    and the swept data seed, weight decay and lr."""

    width: int = Field(description="network width")
    samples: int | None = Field(default=None, description="census: samples at this width")
    init_scale: float | None = Field(default=None, description="training: alpha")
    seed: int | None = Field(default=None, description="training: initialisation seed")
    data_seed: int | None = Field(default=None, description="training: when swept")
    weight_decay: float | None = Field(default=None, description="training: when swept")
    lr: float | None = Field(default=None, description="training: when swept")


class Documented:
    """Annotated marker: the field's JSON schema is that of `shown`, while the field keeps
    its own (looser) type at run time, so stored JSON passes through unchanged."""

    def __init__(self, shown: Any) -> None:
        self.shown = TypeAdapter(shown).core_schema

    def __get_pydantic_json_schema__(
        self, _: cs.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # pydantic's handler carries its generator: the shown models land in the same
        # definitions (the document's components), referenced by name
        generator = handler.generate_json_schema  # type: ignore[attr-defined]
        return generator.generate_inner(self.shown)  # type: ignore[no-any-return]


#: Experiment.result: exactly one of the kinds' results matches (each requires a field
#: only it has: neurons, rows or groups).
ResultField = Annotated[
    dict[str, Any] | None,
    Documented(OptimumResult | CensusResult | TrainingResult | None),
]
FinalField = Annotated[dict[str, Any] | None, Documented(CensusRow | TrainingFinal | None)]
ParamsField = Annotated[dict[str, Any], Documented(RunParams)]
