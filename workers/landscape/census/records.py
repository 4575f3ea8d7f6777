"""A census's records: one per sampled cone, and the per-width rows they add up to (SCIENCE §5)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["WILSON_Z", "ConeRecord", "summarize", "thresholds", "wilson_interval"]

#: The two-sided 95% normal quantile, Φ⁻¹(0.975).
WILSON_Z = 1.959963984540054


@dataclass(frozen=True)
class ConeRecord:
    """One sampled cone of a census, kept so a user can see why it got its verdict.

    Attributes:
        width: m, the number of neurons drawn.
        sample: the sample index within this width.
        patterns: (k, n) bool, the distinct signed cones' patterns, sorted.
        signs: (k,) int8 in {+1, -1}.
        value: the restricted program's value (the optimum itself when screened).
        verdict: "global", "spurious" or "no_local_min".
        covered: k / number of signed cones of the data.
        method: "screened" (contains the known global support, no solve) or "solved".
        gap: value - optimum.
        stationarity_residual: minimal Clarke gradient norm of the recovered network; NaN
            when not tested (verdict "global").
        num_neurons: neurons of the recovered network; 0 when not tested.
        polished: whether the stationarity test ran on the polished, exact minimiser
            (:func:`convex.polish.polish`) rather than the interior point.
        birth_margin: for a spurious cone, 2 λ minus the largest projection norm over all
            signed cones at its minimiser's residual, in the units of λ
            (:func:`.stationarity.birth_test`); NaN otherwise.
        strict: for a spurious cone, False when the margin is negative and a neuron of the
            width-m network is free to grow; None otherwise.
    """

    width: int
    sample: int
    patterns: np.ndarray
    signs: np.ndarray
    value: float
    verdict: str
    covered: float
    method: str
    gap: float
    stationarity_residual: float
    num_neurons: int
    polished: bool = False
    birth_margin: float = math.nan
    strict: bool | None = None

    def as_dict(self) -> dict:
        """JSON-ready form: patterns as '0'/'1' strings, NaN residual and margin as None."""
        residual, margin = self.stationarity_residual, self.birth_margin
        return {
            "width": self.width,
            "sample": self.sample,
            "patterns": ["".join("1" if b else "0" for b in row) for row in self.patterns],
            "signs": [int(s) for s in self.signs],
            "value": self.value,
            "verdict": self.verdict,
            "covered": self.covered,
            "method": self.method,
            "gap": self.gap,
            "stationarity_residual": None if math.isnan(residual) else residual,
            "num_neurons": self.num_neurons,
            "polished": self.polished,
            "birth_margin": None if math.isnan(margin) else margin,
            "strict": self.strict,
        }


def summarize(records: Sequence[ConeRecord]) -> list[dict]:
    """Per-width rows of a census (SCIENCE §5, step 4).

    Args:
        records: ConeRecords of any widths, in any order.

    Returns:
        One dict per width, sorted by width, with keys width, samples, p_global, p_spurious,
        p_no_local_min, p_spurious_strict (spurious and strict; fractions of that width's
        samples), p_covered (mean ``covered``), and for each of the four fractions its
        Wilson 95% interval as <key>_ci = [lo, hi] (:func:`wilson_interval`).
    """
    by_width: dict[int, list[ConeRecord]] = {}
    for record in records:
        by_width.setdefault(record.width, []).append(record)
    rows = []
    for width in sorted(by_width):
        group = by_width[width]
        verdicts = [r.verdict for r in group]
        counts = {
            "p_global": verdicts.count("global"),
            "p_spurious": verdicts.count("spurious"),
            "p_no_local_min": verdicts.count("no_local_min"),
            "p_spurious_strict": sum(r.verdict == "spurious" and r.strict is True for r in group),
        }
        rows.append(
            {
                "width": width,
                "samples": len(group),
                **{key: count / len(group) for key, count in counts.items()},
                "p_covered": float(np.mean([r.covered for r in group])),
                **{f"{key}_ci": wilson_interval(c, len(group)) for key, c in counts.items()},
            }
        )
    return rows


def wilson_interval(k: int, n: int, z: float = WILSON_Z) -> list[float] | None:
    """The Wilson score interval of a binomial proportion k / n (95% for the default z).

    With p = k / n, the interval is the set of proportions π with
    |p - π| <= z sqrt(π (1 - π) / n), whose ends are
    (k + z²/2 ± z sqrt(k (n - k) / n + z²/4)) / (n + z²).
    At k = 0 the lower end is exactly 0, at k = n the upper end exactly 1
    (Newcombe 1998, method 3; scipy's ``proportion_ci(method="wilson")``).

    Args:
        k: successes, 0 <= k <= n.
        n: trials.
        z: the normal quantile of the confidence level.

    Returns:
        [lo, hi] with 0 <= lo <= k / n <= hi <= 1, or None when n = 0 (no samples).
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return None
    z2 = z * z
    centre = (k + z2 / 2) / (n + z2)
    half = z * math.sqrt(k * (n - k) / n + z2 / 4) / (n + z2)
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return [lo, hi]


def thresholds(rows: list[dict]) -> dict:
    """Empirical widths where p_global first reaches 0.5 and 0.95.

    Interpolation is linear in log m between the last grid width below the level and the
    first at or above it (widths are usually log-spaced, and the coupon-collector rise is
    smooth in log m). If the first width already reaches the level, that width is returned;
    if none does, None.

    Args:
        rows: rows of :func:`summarize` (any order).

    Returns:
        {"m_half": float | None, "m_95": float | None}.
    """
    ordered = sorted(rows, key=lambda row: row["width"])
    return {"m_half": _crossing(ordered, 0.5), "m_95": _crossing(ordered, 0.95)}


def _crossing(rows: list[dict], level: float) -> float | None:
    for i, row in enumerate(rows):
        if row["p_global"] >= level:
            if i == 0:
                return float(row["width"])
            lo, hi = rows[i - 1], row
            frac = (level - lo["p_global"]) / (hi["p_global"] - lo["p_global"])
            log_m = math.log(lo["width"]) + frac * (math.log(hi["width"]) - math.log(lo["width"]))
            return float(math.exp(log_m))
    return None
