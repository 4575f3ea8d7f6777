"""The convex program of SCIENCE §3-§4 and what certifies its answers (imports ``geometry``).

The facade of the ``optimum`` experiment kind: :func:`global_optimum` returns a certified
:class:`Optimum`. ``census`` and ``training`` use the restricted program, the polish, the
classifier and the stationarity tests from here.
"""

from .optimum import Optimum, global_optimum
from .program import (
    AUTO_COLGEN_MIN_PATTERNS,
    DEFAULT_SOLVER_OPTS,
    POLISHED,
    ProgramSolution,
    network_solution,
    program_terms,
    residual_of,
    solve_program,
)

__all__ = [
    "AUTO_COLGEN_MIN_PATTERNS",
    "DEFAULT_SOLVER_OPTS",
    "POLISHED",
    "Optimum",
    "ProgramSolution",
    "global_optimum",
    "network_solution",
    "program_terms",
    "residual_of",
    "solve_program",
]
