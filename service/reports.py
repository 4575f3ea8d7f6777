"""Figures drawn from stored results (shared/API.md, section Figures).

Figures are built on `matplotlib.figure.Figure` objects, never pyplot, so that
request threads share no global state; savefig picks the Agg or SVG canvas
from the format.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

FORMATS = ("svg", "png")
GAP_FLOOR = 1e-16
MAX_LINES = 200
VERDICTS = (  # (verdict, share key in result["groups"], label, colour, end marker)
    ("global_minimum", "p_global", "global minimum", "#2a9d8f", "o"),
    ("spurious_local_minimum", "p_spurious", "spurious local min", "#e63946", "X"),
    ("saddle_point", "p_saddle", "saddle point", "#f4a261", "D"),
    ("not_converged", "p_not_converged", "not converged", "#8d99ae", "s"),
    ("diverged", "p_diverged", "diverged", "#264653", "^"),
    ("collapsed", "p_collapsed", "collapsed to zero", "#6d597a", "v"),
)
_MARKERS = {v[0]: v[4] for v in VERDICTS}
TrainingRun = tuple[dict[str, Any], str | None, dict[str, np.ndarray] | None]


def describe(spec: Mapping[str, Any] | None) -> str:
    """'n=6, d=10, λ=0.01' from an experiment's spec, or '' when it says too little."""
    if not spec:
        return ""
    ds = spec.get("dataset") or {}
    n = ds.get("n") or (len(ds["y"]) if "y" in ds else ds.get("d"))
    d = ds.get("d") or (len(ds["X"][0]) if ds.get("X") else None)
    parts = [f"{ds['generator']} data"] if "generator" in ds else []
    parts += [f"n={n}"] if n else []
    parts += [f"d={d}"] if d else []
    if "weight_decay" in spec:
        lam = spec["weight_decay"]
        values = lam if isinstance(lam, list) else [lam]
        parts.append("λ=" + "/".join(f"{v:g}" for v in values))
    if spec.get("data_seeds"):
        parts.append(f"{len(spec['data_seeds'])} data seeds")
    return ", ".join(parts)


def _save(fig: Figure, fmt: str) -> bytes:
    if fmt not in FORMATS:
        raise ValueError(f"unknown figure format {fmt!r}; use one of {FORMATS}")
    buf = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {}
    fig.savefig(buf, format=fmt, dpi=150, metadata=metadata)
    return buf.getvalue()


# --- census ----------------------------------------------------------------------------


def census_figure(
    result: Mapping[str, Any], fmt: str, *, spec: Mapping[str, Any] | None = None
) -> bytes:
    """Outcome shares of a census against width, with the cone counts marked.

    P(global) and P(spurious) are shaded with their Wilson 95% intervals when the
    rows carry them (`p_global_ci`, `p_spurious_ci`; results stored before them do not).

    Args:
        result: a census result (shared/API.md): rows, num_signed_cones,
            theory_bound, threshold {m_half, m_95} (either may be None).
        fmt: "svg" or "png".
        spec: the experiment's spec, for n, d and λ in the title.

    Returns:
        The encoded image.
    """
    rows = sorted(result.get("rows") or [], key=lambda r: r["width"])
    widths = [r["width"] for r in rows]
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    series = (
        ("p_global", "P(global minimum)", "#2a9d8f", "o"),
        ("p_spurious", "P(spurious local minimum)", "#e63946", "X"),
        ("p_covered", "mean fraction of signed cones hit", "#457b9d", "s"),
    )
    banded = [_wilson_band(ax, rows, key, colour) for key, _, colour, _ in series[:2]]
    for key, label, colour, marker in series:
        values = [r.get(key) for r in rows]
        ax.plot(
            widths,
            [np.nan if v is None else v for v in values],
            color=colour,
            marker=marker,
            ms=5,
            lw=1.6,
            label=label,
        )
    cones, bound = result.get("num_signed_cones"), result.get("theory_bound")
    if cones:
        ax.axvline(cones, color="0.25", lw=1.2, label=f"signed cones = {cones}")
    if bound:
        ax.axvline(bound, color="0.25", lw=1.2, ls=":", label=f"min(n^d, 2^n) = {bound}")
    _mark_thresholds(ax, result.get("threshold") or {})
    ax.set_xscale("log")
    if 0 < len(widths) <= 12:
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.minorticks_off()
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("width m (number of sampled signed cones)")
    ax.set_ylabel("fraction of samples")
    ax.grid(True, which="both", alpha=0.25)
    handles, _ = ax.get_legend_handles_labels()
    if any(banded):
        handles.append(Patch(color="0.5", alpha=0.25, label="95% Wilson interval (shaded)"))
    ax.legend(handles=handles, loc="best", fontsize=8, framealpha=0.9)
    samples = {r.get("samples") for r in rows} - {None}
    per = f", {samples.pop()} samples per width" if len(samples) == 1 else ""
    ax.set_title(_title("Census of sampled cones", spec, per), fontsize=10)
    return _save(fig, fmt)


def _wilson_band(ax: Axes, rows: Sequence[Mapping[str, Any]], key: str, colour: str) -> bool:
    """Shade the rows' `<key>_ci` intervals (gid wilson-band-<key>); rows from results
    stored before the intervals existed have none, and then nothing is drawn."""
    ci = [r.get(f"{key}_ci") for r in rows]
    if not any(ci):
        return False
    lo, hi = (np.array([np.nan if c is None else c[i] for c in ci], dtype=float) for i in (0, 1))
    widths = [r["width"] for r in rows]
    band = ax.fill_between(widths, lo, hi, color=colour, alpha=0.15, lw=0, zorder=1)
    band.set_gid(f"wilson-band-{key}")
    return True


def _mark_thresholds(ax: Axes, threshold: Mapping[str, Any]) -> None:
    marks = [
        (threshold[key], level, f"{text} ≈ {threshold[key]:.4g}")
        for key, level, text in (("m_half", 0.5, "m½"), ("m_95", 0.95, "m₉₅"))
        if threshold.get(key) is not None
    ]
    if marks:
        xs, ys, texts = zip(*marks, strict=True)
        label = "P(global) thresholds: " + ", ".join(texts)
        ax.plot(xs, ys, marker="v", ms=8, color="black", ls="none", zorder=5, label=label)


def _title(head: str, spec: Mapping[str, Any] | None, tail: str = "") -> str:
    what = describe(spec)
    return f"{head}{' — ' + what if what else ''}{tail}"


# --- training --------------------------------------------------------------------------


def sample_runs(params: Sequence[Mapping[str, Any]], limit: int = MAX_LINES) -> list[int]:
    """Positions of at most ~`limit` runs to draw: evenly spaced within each init_scale.

    The choice is deterministic (it depends only on the order of `params`), and
    every init_scale keeps at least one run.
    """
    groups: dict[float, list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault(float(p.get("init_scale", math.nan)), []).append(i)
    per = max(1, limit // max(1, len(groups)))
    chosen: list[int] = []
    for members in groups.values():
        if len(members) <= per:
            chosen += members
        else:
            picks = np.linspace(0, len(members) - 1, per).round().astype(int)
            chosen += [members[k] for k in np.unique(picks)]
    return sorted(chosen)


def training_figure(
    result: Mapping[str, Any],
    runs: Sequence[TrainingRun],
    fmt: str,
    *,
    spec: Mapping[str, Any] | None = None,
    total_runs: int | None = None,
) -> bytes:
    """Optimality gap against epoch per run, final gap against init_scale, verdict shares.

    The middle panel is the paper's Theorem 2 figure: each drawn run's final gap
    against its init_scale α (log-log), coloured by verdict, with the median final
    gap of the spurious runs marked as the spurious level.

    Args:
        result: a training result (shared/API.md) with `groups` and `optimum`.
        runs: (params, verdict, curve or None) per run; curves as decode_curve
            returns them. At most ~MAX_LINES are drawn, sampled per init_scale.
        fmt: "svg" or "png".
        spec: the experiment's spec, for n, d and λ in the title.
        total_runs: how many runs the experiment has, when `runs` is already a sample.

    Returns:
        The encoded image.
    """
    with_curves = [r for r in runs if r[2] is not None and len(r[2]["epoch"])]
    drawn = [with_curves[i] for i in sample_runs([r[0] for r in with_curves])]
    groups = result.get("groups") or []
    scales = sorted(
        {float(r[0]["init_scale"]) for r in runs if "init_scale" in r[0]}
        | {float(g["init_scale"]) for g in groups}
    )
    cmap = colormaps["viridis"]
    colour = {s: cmap(0.85 * i / max(1, len(scales) - 1)) for i, s in enumerate(scales)}
    fig = Figure(figsize=(12, 5), layout="constrained")
    gap_ax, final_ax, bar_ax = fig.subplots(1, 3, width_ratios=[1.7, 1.25, 1])
    _gap_panel(gap_ax, drawn, colour)
    _final_gap_panel(final_ax, drawn)
    _share_panel(bar_ax, groups, scales, colour)
    total = total_runs if total_runs is not None else len(runs)
    shown = f"{len(drawn)} of {total} runs drawn" if len(drawn) < total else f"{total} runs"
    opt = result.get("optimum")
    tail = f", optimum L* = {opt:.6g}" if isinstance(opt, int | float) else ""
    fig.suptitle(_title("Gradient descent", spec, tail) + f"\n{shown}", fontsize=10)
    return _save(fig, fmt)


def _gap_panel(ax: Axes, drawn: Sequence[TrainingRun], colour: Mapping[float, Any]) -> None:
    seen = {verdict for _, verdict, _ in drawn}
    for params, verdict, curve in drawn:
        assert curve is not None
        epoch = np.asarray(curve["epoch"], dtype=np.float64)
        gap = np.clip(np.asarray(curve["gap"], dtype=np.float64), GAP_FLOOR, None)
        c = colour.get(float(params.get("init_scale", math.nan)), "0.5")
        ax.plot(epoch, gap, color=c, lw=0.8, alpha=0.6)
        marker = _MARKERS.get(verdict or "")
        if marker:
            ax.plot(epoch[-1:], gap[-1:], marker=marker, color=c, ms=5, mec="black", mew=0.4)
    ax.set_xscale("symlog", linthresh=1, linscale=0.3)
    ax.set_xlim(left=0)
    ax.set_yscale("log")
    ax.set_xlabel("epoch (log scale; 0 to 1 linear)")
    ax.set_ylabel(f"gap L − L*  (clipped below at {GAP_FLOOR:g})")
    ax.grid(True, which="major", alpha=0.25)
    handles = [Line2D([], [], color=c, lw=2, label=f"α = {s:g}") for s, c in colour.items()]
    ends = [
        Line2D([], [], color="0.5", marker=m, ls="none", mec="black", mew=0.4, label=lab)
        for verdict, _, lab, _, m in VERDICTS
        if verdict in seen
    ]
    first = ax.legend(handles=handles, title="init_scale", fontsize=8, loc="lower left")
    ax.add_artist(first)
    if ends:
        ax.legend(handles=ends, title="verdict (final point)", fontsize=7, loc="center left")


def _final_gap_panel(ax: Axes, drawn: Sequence[TrainingRun]) -> int:
    """Each judged run's final gap against its init_scale α (log-log), coloured by verdict.

    The final gap is the last point of the run's curve (training records the epoch a run
    stops at). Gaps at or below GAP_FLOOR (0 or negative at the solver's precision) are
    drawn at GAP_FLOOR; non-finite gaps (diverged runs) at the top of the panel. Each
    verdict's points form one line with gid ``final-gap-vs-alpha-<verdict>``, spread
    slightly apart in α per verdict; the spurious level (gid ``spurious-level``) is the
    median final gap of the spurious_local_minimum runs.

    Returns:
        The number of points drawn: one per run with a verdict and an init_scale > 0.
    """
    ax.set_gid("final-gap-vs-alpha")
    points = _final_points(drawn)
    finite = [g for _, _, g in points if math.isfinite(g)]
    top = 10 * max(finite, default=0.1)
    style = {v[0]: v for v in VERDICTS}
    order = [v[0] for v in VERDICTS] + sorted({v for v, _, _ in points} - set(style))
    for k, verdict in enumerate(order):
        mine = [(alpha, gap) for v, alpha, gap in points if v == verdict]
        if not mine:
            continue
        _, _, label, col, marker = style.get(verdict, (verdict, "", verdict, "0.5", "o"))
        spread = 10 ** (0.035 * (k - 2))  # so verdicts at the same α do not hide each other
        xs = [alpha * spread for alpha, _ in mine]
        ys = [gap if math.isfinite(gap) else top for _, gap in mine]
        if any(not math.isfinite(g) for _, g in mine):
            label += " (non-finite gap, drawn at top)"
        ax.plot(
            xs,
            ys,
            ls="none",
            marker=marker,
            color=col,
            ms=5,
            mec="black",
            mew=0.4,
            alpha=0.75,
            label=label,
            gid=f"final-gap-vs-alpha-{verdict}",
        )
    spurious = [g for v, _, g in points if v == "spurious_local_minimum" and math.isfinite(g)]
    if spurious:
        level = float(np.median(spurious))
        ax.axhline(
            level,
            color=style["spurious_local_minimum"][3],
            ls="--",
            lw=1.2,
            label=f"spurious level (median) = {level:.3g}",
            gid="spurious-level",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("init_scale α")
    ax.set_ylabel(f"final gap L − L*  (≤ {GAP_FLOOR:g} drawn at {GAP_FLOOR:g})")
    ax.set_title("final gap per run (Theorem 2)", fontsize=9)
    ax.grid(True, which="major", alpha=0.25)
    if points:
        ax.legend(fontsize=7, loc="best")
    return len(points)


def _final_points(drawn: Sequence[TrainingRun]) -> list[tuple[str, float, float]]:
    """(verdict, α, final gap clipped below at GAP_FLOOR; NaN when not finite) per judged run."""
    points = []
    for params, verdict, curve in drawn:
        alpha = float(params.get("init_scale", math.nan))
        if verdict is None or curve is None or not len(curve["gap"]) or not alpha > 0:
            continue
        gap = float(curve["gap"][-1])
        points.append((verdict, alpha, max(gap, GAP_FLOOR) if math.isfinite(gap) else math.nan))
    return points


def _share_panel(
    ax: Axes,
    groups: Sequence[Mapping[str, Any]],
    scales: Sequence[float],
    colour: Mapping[float, Any],
) -> None:
    runs = {s: 0.0 for s in scales}
    shares = {s: dict.fromkeys((v[1] for v in VERDICTS), 0.0) for s in scales}
    for g in groups:
        s, weight = float(g["init_scale"]), float(g.get("runs") or 0)
        runs[s] += weight
        for _, key, *_ in VERDICTS:
            shares[s][key] += weight * float(g.get(key) or 0.0)
    x = np.arange(len(scales))
    bottom = np.zeros(len(scales))
    for _, key, label, col, _ in VERDICTS:
        height = np.array([shares[s][key] / runs[s] if runs[s] else 0.0 for s in scales])
        if not height.any():
            continue
        ax.bar(x, height, bottom=bottom, color=col, label=label, width=0.7)
        bottom += height
    ax.set_xticks(x, [f"{s:g}" for s in scales])
    for tick, s in zip(ax.get_xticklabels(), scales, strict=True):
        tick.set_color(colour[s])
    for xi, s in zip(x, scales, strict=True):
        ax.annotate(
            f"{int(runs[s])}",
            (xi, 1.0),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            fontsize=7,
        )
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("init_scale α")
    ax.set_ylabel("share of runs (all widths, weighted by runs)")
    ax.set_title("verdicts per init_scale (runs above bars)", fontsize=9)
    if scales:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
