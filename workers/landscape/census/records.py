"""A census's records: one per sampled cone, and the per-width rows they add up to (SCIENCE §5)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "VERDICTS",
    "WILSON_Z",
    "ConeRecord",
    "intervals",
    "roll_up",
    "summarize",
    "tally",
    "thresholds",
    "wilson_interval",
]

#: The two-sided 95% normal quantile, Φ⁻¹(0.975).
WILSON_Z = 1.959963984540054
#: What a census cone holds (SCIENCE §4).
VERDICTS = ("global", "spurious", "no_local_min")


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
            "patterns": pattern_strings(self.patterns),
            "signs": [int(s) for s in np.asarray(self.signs).tolist()],
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


def pattern_strings(patterns: np.ndarray) -> list[str]:
    """Each row of a (k, n) 0/1 array as a string of '0' and '1' (row i: its n entries)."""
    rows = np.asarray(patterns)
    if rows.size == 0:
        return [""] * len(rows)
    n = rows.shape[1]
    codes = np.ascontiguousarray(rows != 0, dtype=np.uint8) + ord("0")
    return codes.view(f"S{n}").ravel().astype(f"U{n}").tolist()  # type: ignore[no-any-return]


def tally(records: Sequence[ConeRecord]) -> dict:
    """What some cones add to a census row: ``samples``, ``counts`` (of each verdict, and
    ``spurious_strict``: spurious and strict) and ``covered_sum`` (the sum of ``covered``).

    A census chunk's output holds its tally, and :func:`roll_up` adds tallies up to a row,
    so that a row is the same whether its cones were certified in one call or in chunks.
    """
    counts = {v: sum(r.verdict == v for r in records) for v in VERDICTS}
    counts["spurious_strict"] = sum(r.verdict == "spurious" and r.strict is True for r in records)
    return {
        "samples": len(records),
        "counts": counts,
        "covered_sum": float(sum(r.covered for r in records)),
    }


def roll_up(tallies: Sequence[Mapping]) -> dict:
    """A census row's fields from tallies (:func:`tally`) of one width's cones.

    Returns samples, the verdict shares p_global, p_spurious, p_no_local_min and
    p_spurious_strict (fractions of the samples), p_covered (mean ``covered``), and for
    each share its Wilson 95% interval as <share>_ci (:func:`intervals`). A tally without
    ``spurious_strict`` (a chunk certified before the birth test existed) makes
    p_spurious_strict and its interval None.
    """
    total = sum(t["samples"] for t in tallies)
    count: dict[str, int | None] = {
        f"p_{v}": sum(t["counts"][v] for t in tallies) for v in VERDICTS
    }
    strict = [t["counts"].get("spurious_strict") for t in tallies]
    count["p_spurious_strict"] = None if None in strict else sum(strict)
    return {
        "samples": total,
        **{key: None if k is None else k / total for key, k in count.items()},
        "p_covered": sum(t["covered_sum"] for t in tallies) / total,
        **intervals(count, total),
    }


def intervals(counts: Mapping[str, int | None], total: int) -> dict[str, list[float] | None]:
    """Wilson 95% intervals of the shares counts / total, as <share>_ci; None for no
    samples or an unknown count (None)."""
    return {
        f"{key}_ci": None if k is None else wilson_interval(k, total) for key, k in counts.items()
    }


def summarize(records: Sequence[ConeRecord]) -> list[dict]:
    """Per-width rows of a census (SCIENCE §5, step 4).

    Args:
        records: ConeRecords of any widths, in any order.

    Returns:
        One dict per width, sorted by width: ``{"width": width, **roll_up([tally])}`` of
        that width's records (:func:`roll_up`).
    """
    by_width: dict[int, list[ConeRecord]] = {}
    for record in records:
        by_width.setdefault(record.width, []).append(record)
    return [{"width": w, **roll_up([tally(by_width[w])])} for w in sorted(by_width)]


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
