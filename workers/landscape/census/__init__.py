"""The census of activation cones, SCIENCE §5 (imports ``convex`` and ``geometry``).

The facade of the ``census`` experiment kind: :func:`certify_samples` draws, screens, solves,
polishes and classifies cones and yields one :class:`ConeRecord` each; :func:`summarize` and
:func:`thresholds` roll them up per width (through :func:`tally` and :func:`roll_up`, which
the service's fan-in uses over the tallies of census chunks).
"""

from .certify import (
    SAMPLINGS,
    STAGES,
    STATIONARITY_TOL,
    VERDICTS,
    CensusCancelled,
    Classification,
    ConeRecord,
    certify_samples,
    classify,
    sample_cones,
    summarize,
    thresholds,
)
from .records import intervals, roll_up, tally

__all__ = [
    "SAMPLINGS",
    "STAGES",
    "STATIONARITY_TOL",
    "VERDICTS",
    "CensusCancelled",
    "Classification",
    "ConeRecord",
    "certify_samples",
    "classify",
    "intervals",
    "roll_up",
    "sample_cones",
    "summarize",
    "tally",
    "thresholds",
]
