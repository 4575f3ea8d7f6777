"""Gradient descent sweeps and their verdicts, SCIENCE §6 (imports ``convex`` and ``geometry``).

The facade of the ``training`` experiment kind: :func:`train_sweep` trains a batch of runs
(native C kernel, or torch), and ``verdicts.VerdictJudge`` certifies where each run ended.
"""

from .sweep import (
    CURVE_COLUMNS,
    SHARPNESS_MIN_EPOCHS,
    RunOutcome,
    RunSpec,
    SweepCancelled,
    SweepState,
    init_network,
    resolve_device,
    train_sweep,
)

__all__ = [
    "CURVE_COLUMNS",
    "SHARPNESS_MIN_EPOCHS",
    "RunOutcome",
    "RunSpec",
    "SweepCancelled",
    "SweepState",
    "init_network",
    "resolve_device",
    "train_sweep",
]
