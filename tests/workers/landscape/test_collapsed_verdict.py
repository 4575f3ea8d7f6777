"""A run that collapsed to the zero network is judged as the zero network's limit:
a saddle point when the zero network is above the optimum, a global minimum when it
attains it (SCIENCE §8: one point x = (0.6, 0.8, 0), y = 1.5)."""

import numpy as np
import pytest

from workers.landscape.convex import global_optimum
from workers.landscape.geometry.datasets import theorem2
from workers.landscape.training import RunSpec, train_sweep
from workers.landscape.training.verdicts import VERDICTS, VerdictJudge

X1, Y1 = np.array([[0.6, 0.8, 0.0]]), np.array([1.5])


@pytest.mark.parametrize(("lam", "projected"), [(0.1, "saddle_point"), (2.0, "global_minimum")])
def test_a_collapsed_run_projects_onto_the_zero_network(lam, projected):
    optimum = global_optimum(X1, Y1, lam).value
    judge = VerdictJudge(X1, Y1, lam, optimum=optimum)
    W, a = np.array([[-1.0, -1.0, 0.0]]), np.array([0.5])  # inactive on the one point
    verdict = judge.judge("collapsed", 2.25 + lam * 2.25, W, a)
    assert "collapsed" in VERDICTS and verdict.verdict == "collapsed"
    assert verdict.cone_value == pytest.approx(2.25)  # the zero network's loss, mean(y²)
    assert verdict.projected_verdict == projected
    assert verdict.cone_global is (projected == "global_minimum")


def test_theorem2_runs_that_collapse_are_judged_collapsed():
    # lr 0.05 from alpha = 1 blows up and kills every neuron within a few epochs (issue 10)
    X, y = theorem2(4, 1e-3, 0)
    lam = 1e-4
    optimum = global_optimum(X, y, lam).value
    runs = [RunSpec(100, 1.0, seed) for seed in (0, 2)]
    outs = train_sweep(
        X, y, lam, runs, lr=0.05, max_epochs=100_000, optimum=optimum, stop_on_collapse=True
    )
    judge = VerdictJudge(X, y, lam, optimum=optimum)
    for out in outs:
        assert out.status == "collapsed" and out.epoch < 100, (out.status, out.epoch)
        verdict = judge.judge(out.status, out.reg_loss, out.W, out.a)
        assert (verdict.verdict, verdict.projected_verdict) == ("collapsed", "saddle_point")
