"""Verdicts do not depend on units: y and λ multiplied by c give the same verdicts.

Multiplying y and λ by c multiplies the whole landscape by c² (with the network scaled by
sqrt(c)), so every verdict must stay. With the old absolute tolerance of 1e-7 they did not:
the census below (35 global, 7 spurious and 78 no_local_min cones of 120) turned 26 global
cones into "spurious" at c = 1e3 (solved values within solver accuracy of the optimum, which
the scaling by c² puts above 1e-7), and 73 non-global cones into "global" at c = 1e-3 (gaps
scaled down below 1e-7); in the sweep, the
spurious run (gap 0.031, so 3.1e-8 after the scaling by 1e-3) became a global minimum.

Both tests go through the functions the jobs call (``census.certify_samples``,
``training.train_sweep`` and ``verdicts.VerdictJudge``) with the spec's default tolerances.
"""

from __future__ import annotations

import numpy as np
import pytest

from workers.landscape import census, convex, training
from workers.landscape.geometry import datasets, scaling
from workers.landscape.geometry.patterns import enumerate_patterns
from workers.landscape.training import verdicts

LAM = 0.01


def census_records(X, y, lam, patterns) -> list[census.ConeRecord]:
    """120 cones of a uniform census at widths 10, 40 and 160, default tolerances."""
    opt = convex.global_optimum(X, y, lam, patterns=patterns)
    return [
        record
        for width in (10, 40, 160)
        for record in census.certify_samples(
            X,
            y,
            lam,
            optimum=opt.value,
            support=(opt.support_patterns, opt.support_signs),
            width=width,
            samples=range(40),
            seed=0,
            sampling="uniform",
            patterns=patterns,
            num_signed_cones=2 * len(patterns),
        )
    ]


@pytest.fixture(scope="module")
def teacher_census():
    X, y = datasets.teacher(6, 10, 3, 0)
    patterns = enumerate_patterns(X)
    return X, y, patterns, census_records(X, y, LAM, patterns)


@pytest.mark.parametrize("c", [1e3, 1e-3])
def test_a_census_gives_the_same_verdicts_with_y_and_lambda_scaled(teacher_census, c):
    X, y, patterns, base = teacher_census
    scaled = census_records(X, c * y, LAM * c, patterns)
    verdicts_base = [r.verdict for r in base]
    assert {"global", "spurious", "no_local_min"} <= set(verdicts_base)
    assert [r.verdict for r in scaled] == verdicts_base
    for b, r in zip(base, scaled, strict=True):
        assert r.value == pytest.approx(c**2 * b.value, rel=1e-7)


def sweep(X, y, lam, c, runs, **options):
    """The runs in units where y and λ are times c: lr / c, α sqrt(c), grad_tol c³ map
    gradient descent's iterates exactly onto sqrt(c) times the original ones."""
    opt = convex.global_optimum(X, c * y, lam * c).value
    specs = [training.RunSpec(w, alpha * np.sqrt(c), seed) for w, alpha, seed in runs]
    outs = training.train_sweep(
        X,
        c * y,
        lam * c,
        specs,
        lr=0.02 / c,
        max_epochs=7000,
        grad_tol=1e-16 * c**3,
        optimum=opt,
        device="cpu",
    )
    judge = verdicts.VerdictJudge(X, c * y, lam * c, optimum=opt, **options)
    return outs, [judge.judge(o.status, o.reg_loss, o.W, o.a) for o in outs]


RUNS = [(w, alpha, seed) for w in (2, 10) for alpha in (1e-2, 0.5) for seed in range(3)]


@pytest.fixture(scope="module")
def teacher_sweep():
    X, y = datasets.teacher(4, 3, 2, 1)
    return X, y, sweep(X, y, 0.05, 1.0, RUNS)


@pytest.mark.parametrize("c", [1e3, 1e-3])
def test_a_training_sweep_gives_the_same_verdicts_with_y_and_lambda_scaled(teacher_sweep, c):
    X, y, (outs, base) = teacher_sweep
    scaled_outs, scaled = sweep(X, y, 0.05, c, RUNS)
    found = [v.verdict for v in base]
    assert {"global_minimum", "spurious_local_minimum", "not_converged"} <= set(found)
    assert [v.verdict for v in scaled] == found
    for out, scaled_out in zip(outs, scaled_outs, strict=True):
        assert scaled_out.epoch == out.epoch
        assert scaled_out.reg_loss == pytest.approx(c**2 * out.reg_loss, rel=1e-9)


@pytest.mark.parametrize("c", [1e3, 1e-3])
def test_the_new_verdict_fields_are_the_same_in_any_units(teacher_census, teacher_sweep, c):
    X, y, patterns, base = teacher_census
    scaled = census_records(X, c * y, LAM * c, patterns)
    spurious = [(b, r) for b, r in zip(base, scaled, strict=True) if b.verdict == "spurious"]
    assert spurious
    for b, r in spurious:  # margins are in the units of λ
        assert b.birth_margin < 0 and r.birth_margin == pytest.approx(c * b.birth_margin, rel=1e-7)
        assert r.strict == b.strict
    assert census.summarize(scaled) == census.summarize(base)
    X, y, (_, judged) = teacher_sweep
    _, again = sweep(X, y, 0.05, c, RUNS)
    for b, r in zip(judged, again, strict=True):
        assert (r.cone_global, r.projected_verdict, r.strict) == (
            b.cone_global,
            b.projected_verdict,
            b.strict,
        )
        if b.birth_margin is not None:
            assert r.birth_margin == pytest.approx(c * b.birth_margin, rel=1e-7)


def test_an_explicit_tolerance_keeps_its_absolute_meaning():
    X, y = datasets.teacher(6, 10, 3, 0)
    opt = 0.5
    assert scaling.loss_tolerance(opt, X, y, LAM, tolerance=1e-7) == 1e-7
    assert scaling.loss_tolerance(opt, X, 1e3 * y, LAM, tolerance=1e-7) == 1e-7
    relative = scaling.loss_tolerance(opt, X, y, LAM, relative_tolerance=1e-6)
    assert relative == pytest.approx(1e-6 * max(opt, scaling.SCALE_FLOOR * np.mean(y**2)))


def test_the_loss_scale_is_floored_and_defined_for_zero_labels():
    X, y = datasets.teacher(5, 3, 2, 0)
    mean_sq = float(np.mean(y**2))
    assert scaling.loss_scale(1e-12, X, y, 1e-9) == pytest.approx(1e-3 * mean_sq)
    assert scaling.loss_scale(0.4 * mean_sq, X, y, 0.1) == 0.4 * mean_sq
    zero = scaling.loss_scale(0.0, 3.0 * X, 0 * y, 0.2)
    assert zero == pytest.approx((0.2 / (3.0 * np.linalg.norm(X, axis=1).max())) ** 2)
    # with y = 0 only λ sets a scale: λ times c scales it by c², as L
    assert scaling.loss_scale(0.0, X, 0 * y, 0.2e3) == pytest.approx(
        1e6 * scaling.loss_scale(0.0, X, 0 * y, 0.2)
    )
