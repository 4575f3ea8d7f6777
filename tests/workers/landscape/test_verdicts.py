"""Verdicts of trained networks, against constructed networks with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from workers.landscape import convex
from workers.landscape.geometry import datasets
from workers.landscape.geometry.network import loss, recover_network, signed_cones_of
from workers.landscape.geometry.patterns import enumerate_patterns
from workers.landscape.training.verdicts import VerdictJudge

TOL = 1e-7


def single_point():
    X, y = np.array([[0.6, 0.8, 0.0]]), np.array([1.5])
    t = (1.5 * 1.0 - 0.1) / 1.0  # SCIENCE.md section 8 with ||x|| = 1
    u = t * X[0]
    W, a = (u / np.sqrt(np.linalg.norm(u)))[None, :], np.array([np.sqrt(np.linalg.norm(u))])
    return X, y, W, a


def test_the_single_point_optimum_is_a_global_minimum():
    X, y, W, a = single_point()
    assert loss(X, y, W, a, 0.1) == pytest.approx(0.29, abs=1e-12)
    judge = VerdictJudge(X, y, 0.1, optimum=0.29)
    assert judge.judge("converged", loss(X, y, W, a, 0.1), W, a).verdict == "global_minimum"


def test_stopping_status_passes_through():
    X, y, W, a = single_point()
    judge = VerdictJudge(X, y, 0.1, optimum=0.29)
    assert judge.judge("diverged", float("nan"), W, a).verdict == "diverged"
    assert judge.judge("not_converged", 0.5, W, a).verdict == "not_converged"


def spurious_network(seed: int = 0):
    """The minimiser of a single signed cone whose value is well above the optimum."""
    X, y = datasets.teacher(4, 8, 10, seed)
    lam = 0.01
    opt = convex.global_optimum(X, y, lam).value
    patterns = enumerate_patterns(X)
    for pattern in patterns[::-1]:
        for sign in (1, -1):
            sol = convex.solve_program(X, y, lam, pattern[None, :], np.array([sign]))
            W, a = recover_network(sol.U, np.array([sign]))
            if len(a) and sol.value > opt + 1e-3:
                return X, y, lam, opt, W, a, sol.value
    raise AssertionError("no spurious cone found")


def test_the_minimiser_of_its_own_cone_is_spurious_and_a_shrunk_copy_is_a_saddle():
    X, y, lam, opt, W, a, value = spurious_network()
    assert loss(X, y, W, a, lam) == pytest.approx(value, rel=1e-7)
    judge = VerdictJudge(X, y, lam, optimum=opt, tolerance=TOL)
    verdict = judge.judge("converged", loss(X, y, W, a, lam), W, a)
    assert verdict.verdict == "spurious_local_minimum"
    assert verdict.cone_value == pytest.approx(value, rel=1e-7)
    # the same cone with smaller weights: its cone holds a lower value
    shrunk = judge.judge("converged", loss(X, y, 0.5 * W, 0.5 * a, lam), 0.5 * W, 0.5 * a)
    assert shrunk.verdict == "saddle_point" and shrunk.cone_value < value + TOL
    same = signed_cones_of(X, 0.5 * W, 0.5 * a)
    assert all(np.array_equal(p, q) for p, q in zip(same, signed_cones_of(X, W, a), strict=True))


def test_the_dead_network_is_judged_against_the_empty_cone():
    X, y, lam, opt, W, a, _ = spurious_network()
    judge = VerdictJudge(X, y, lam, optimum=opt)
    zero = judge.judge("converged", float(np.mean(y**2)), 0 * W, 0 * a)
    assert zero.verdict == "spurious_local_minimum"
    assert zero.cone_value == pytest.approx(float(np.mean(y**2)))


def test_small_init_on_theorem2_data_is_a_spurious_minimum_with_one_gap_for_all_seeds():
    """SCIENCE.md section 6: d=4, weight decay 1e-4, lr 0.05, width 100, alpha 1e-4.

    Trained to the paper's grad_tol of 1e-16 (about 385,000 epochs, under a second
    with the compiled CPU kernel).
    """
    from workers.landscape import training

    X, y = datasets.theorem2(4, 1e-3, 0)
    lam = 1e-4
    opt = convex.global_optimum(X, y, lam).value
    runs = [training.RunSpec(100, 1e-4, seed) for seed in (1, 2, 3)]
    outs = training.train_sweep(
        X, y, lam, runs, lr=0.05, max_epochs=1_000_000, grad_tol=1e-16, optimum=opt
    )
    assert all(o.status == "converged" and o.grad_norm_sq < 1e-16 for o in outs)
    judge = VerdictJudge(X, y, lam, optimum=opt, tolerance=TOL)
    verdicts = [judge.judge(o.status, o.reg_loss, o.W, o.a) for o in outs]
    assert [v.verdict for v in verdicts] == ["spurious_local_minimum"] * 3
    gaps = [o.gap for o in outs]
    assert min(gaps) > 1e-6 and max(gaps) - min(gaps) < 1e-12
    for out, verdict in zip(outs, verdicts, strict=True):
        assert verdict.cone_value == pytest.approx(out.reg_loss, abs=1e-10)
