"""The jobs behind each work item, and the fan-in that turns their outputs into a result.

Jobs call the pure core in workers.landscape; they see the database only
through the Context the task hands them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from service.models import Run


class Stopped(Exception):
    """The experiment was cancelled, or another worker took the item over."""


class Context(Protocol):
    spec: dict[str, Any]
    payload: dict[str, Any]
    checkpoint: bytes | None

    def progress(self, done: int) -> bool: ...

    def save_checkpoint(self, blob: bytes) -> bool: ...

    def stage_outputs(self, stage: int) -> list[dict[str, Any]]: ...


@dataclass
class Outcome:
    """A job's JSON output, plus updates of run rows (each names its run by `index`)."""

    output: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)


def _dataset(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    from workers.landscape import datasets

    return datasets.build(spec["dataset"])


def optimum_job(ctx: Context) -> Outcome:
    """The certified global optimum of the spec's dataset (SCIENCE.md section 3)."""
    from workers.landscape import convex, patterns

    X, y = _dataset(ctx.spec)
    opt = convex.global_optimum(X, y, float(ctx.spec["weight_decay"]))
    n, d = X.shape
    neurons = [{"w": w.tolist(), "a": float(a)} for w, a in zip(opt.W, opt.a, strict=True)]
    if not ctx.progress(1):
        raise Stopped
    return Outcome(
        output={
            "optimum": float(opt.value),
            "num_patterns": int(opt.num_patterns),
            "num_signed_cones": int(opt.num_signed_cones),
            "theory_bound": int(patterns.theory_bound(n, d)),
            "neurons": neurons,
            "certificate": {"max_dual_violation": float(opt.max_dual_violation)},
            "method": opt.method,
        }
    )


JOBS: dict[str, Callable[[Context], Outcome]] = {"optimum": optimum_job}


def run(task: str, ctx: Context) -> Outcome:
    """Run the job named `task`."""
    return JOBS[task](ctx)


def finalize(
    kind: str, spec: dict[str, Any], outputs: dict[int, list[dict[str, Any]]], runs: Sequence[Run]
) -> dict[str, Any]:
    """The experiment's result from its items' outputs (fan-in)."""
    if kind == "optimum":
        return outputs[0][0]
    raise ValueError(f"no finalizer for kind {kind!r}")
