"""Saddles apart from minima (SCIENCE §3 and §8): the birth margin and ``strict``.

``birth_margin`` = 2 λ - max over all signed cones of ||proj_K(-s X^T D r)|| at the point's
residual; negative exactly when a small new neuron lowers L. Margins here are checked against
the NNLS projections of ``reference.py`` over every enumerated pattern.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import nnls

from tests.workers.landscape.reference import projection_norms
from workers.landscape import census, convex, training
from workers.landscape.convex import stationarity
from workers.landscape.convex.certificate import dual_violations
from workers.landscape.convex.polish import polish
from workers.landscape.convex.stationarity import free_neuron, largest_cone_value
from workers.landscape.geometry import datasets
from workers.landscape.geometry.network import forward, loss, recover_network
from workers.landscape.geometry.patterns import enumerate_patterns
from workers.landscape.training.verdicts import VerdictJudge

LAM = 0.01


def reference_margin(X, y, W, a, lam) -> float:
    """2 λ minus the largest NNLS projection norm over every signed cone, at (W, a)."""
    r = (2.0 / len(y)) * (forward(X, W, a) - y)
    return 2.0 * lam - float(projection_norms(X, r, enumerate_patterns(X)).max())


@pytest.mark.parametrize("block", [1, 3, 1024])
def test_the_largest_cone_value_is_the_largest_projection(monkeypatch, block):
    monkeypatch.setattr(stationarity, "_BLOCK", block)  # small blocks exercise the pruning
    rng = np.random.default_rng(4)
    for X, _ in (datasets.teacher(6, 3, 2, 0), datasets.teacher(5, 8, 3, 1)):
        patterns = enumerate_patterns(X)
        for _ in range(3):
            r = rng.standard_normal(len(X))
            want = projection_norms(X, r, patterns).max()
            assert largest_cone_value(X, r, patterns) == pytest.approx(want, rel=1e-10)
            assert want == pytest.approx(dual_violations(X, r, patterns).max(), rel=1e-10)
            # Witnesses only raise the starting floor: random ones, ones on a face of their
            # cone (x_0 . w = 0), and the maximiser's own direction (the floor is the answer).
            W = rng.standard_normal((4, X.shape[1]))
            W[1] -= (W[1] @ X[0]) / (X[0] @ X[0]) * X[0]
            W[2] = 0.0
            got = largest_cone_value(X, r, patterns, witnesses=W)
            assert got == pytest.approx(want, rel=1e-10)
            best = _maximiser(X, r, patterns)
            assert largest_cone_value(X, r, patterns, witnesses=best) == pytest.approx(
                want, rel=1e-10
            )


def _maximiser(X, r, patterns) -> np.ndarray:
    """(1, d) the projection of the signed cone with the largest value (reference NNLS)."""
    values = projection_norms(X, r, patterns)
    i, col = np.unravel_index(np.argmax(values), values.shape)
    D, s = patterns[i], (1.0, -1.0)[col]
    A = np.where(D, 1.0, -1.0)[:, None] * X
    g = -s * X.T @ (D * r)
    mu, _ = nnls(A.T, -g, maxiter=1000)
    return (g + A.T @ mu)[None, :]


def test_which_networks_have_a_neuron_free_to_grow():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    W, a = np.array([[1.0, 0.2], [-0.1, 1.0]]), np.array([1.0, -1.0])  # two signed cones
    assert not free_neuron(X, W, a)
    assert free_neuron(X, 0 * W, 0 * a)  # the zero network
    assert free_neuron(X, W, a, width=3)  # a third, zero neuron
    assert free_neuron(X, np.vstack([W, 0.5 * W[:1]]), np.append(a, 0.5))  # same signed cone
    assert free_neuron(X, np.vstack([W, [[-1.0, -1.0]]]), np.append(a, 1.0))  # dead on all data
    assert free_neuron(X, np.vstack([W, [[1e-4, 0.0]]]), np.append(a, 1e-4))  # |a| ||w|| ~ 0


def test_the_zero_network_is_a_saddle_that_a_new_neuron_escapes():
    X, y = datasets.teacher(4, 8, 3, 0)
    opt = convex.global_optimum(X, y, LAM).value
    W, a = np.zeros((5, 8)), np.zeros(5)
    verdict = VerdictJudge(X, y, LAM, optimum=opt).judge("converged", float(np.mean(y**2)), W, a)
    assert verdict.verdict == "spurious_local_minimum"  # the label stays comparable
    assert verdict.birth_margin < 0 and verdict.strict is False
    assert verdict.birth_margin == pytest.approx(reference_margin(X, y, W, a, LAM), rel=1e-9)
    # in the caller's units: y and λ times 10 give 10 times the margin
    scaled = VerdictJudge(X, 10 * y, 10 * LAM, optimum=100 * opt)
    again = scaled.judge("converged", float(np.mean((10 * y) ** 2)), W, a)
    assert again.birth_margin == pytest.approx(10 * verdict.birth_margin, rel=1e-9)


def lone_spurious_neuron():
    """The exact minimiser of one signed cone, inside it and well above the optimum: a
    width-1 spurious point (polished, so that its loss is the cone's value to rounding)."""
    X, y = datasets.teacher(4, 8, 3, 0)
    opt = convex.global_optimum(X, y, LAM).value
    for pattern in enumerate_patterns(X)[::-1]:
        for sign in (1, -1):
            D, s = pattern[None, :], np.array([sign])
            sol = convex.solve_program(X, y, LAM, D, s)
            exact = polish(X, y, LAM, D, s, sol.U, sol.value)
            inside = exact is not None and len(exact.U) and not exact.faces.any()
            if inside and sol.value > opt + 1e-3:
                W, a = recover_network(exact.U, exact.signs)
                return X, y, opt, W, a
    raise AssertionError("no spurious cone found")


def test_a_spurious_point_is_strict_only_without_a_spare_neuron():
    X, y, opt, W, a = lone_spurious_neuron()
    judge = VerdictJudge(X, y, LAM, optimum=opt)
    lone = judge.judge("converged", loss(X, y, W, a, LAM), W, a)
    assert lone.verdict == "spurious_local_minimum"
    assert lone.birth_margin < -1e-3 and lone.strict is True  # nothing free to grow
    assert lone.birth_margin == pytest.approx(reference_margin(X, y, W, a, LAM), rel=1e-6)
    spare = (np.vstack([W, np.zeros_like(W)]), np.append(a, 0.0))  # width 2, one zero neuron
    halves = (np.vstack([W, W]) / np.sqrt(2), np.append(a, a) / np.sqrt(2))  # u split in two
    for W2, a2 in (spare, halves):
        wider = judge.judge("converged", loss(X, y, W2, a2, LAM), W2, a2)
        assert wider.verdict == "spurious_local_minimum" and wider.strict is False
        assert wider.birth_margin == pytest.approx(lone.birth_margin, rel=1e-9)


def paper_theorem2(d: int = 4, perturbation: float = 1e-3, seed: int = 0):
    """SCIENCE §1/§7/§8: the paper's theorem2 points, perturbed by numpy's legacy generator."""
    X = np.zeros((d, d))
    X[0, 0] = 1.0
    X[1, :3], X[2, :3] = (8 / 9, -4 / 9, 1 / 9), (8 / 9, 4 / 9, 1 / 9)
    for i in range(3, d):
        X[i, 0], X[i, i] = 8 / 9, np.sqrt(17) / 9
    X = X + perturbation * np.random.RandomState(seed).standard_normal((d, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    t = np.zeros(d)
    t[0], t[2] = 4 / 5, 3 / 5
    return X, X @ t


def test_the_theorem2_small_init_end_point_is_a_saddle_of_the_full_loss():
    """The issue's measurement: the cone [0 1 0 0] with s = +1 has 2.419e-4 > 2 λ = 2e-4 there."""
    X, y = paper_theorem2()
    lam = 1e-4
    opt = convex.global_optimum(X, y, lam).value
    assert opt == pytest.approx(1.9734395e-4, rel=1e-7)
    (out,) = training.train_sweep(
        X, y, lam, [training.RunSpec(100, 1e-3, 0)], lr=0.05, max_epochs=2_000_000,
        grad_tol=1e-16, optimum=opt, device="cpu",
    )  # fmt: skip
    assert out.status == "converged" and out.gap == pytest.approx(1.45925e-6, abs=1e-11)
    verdict = VerdictJudge(X, y, lam, optimum=opt).judge("converged", out.reg_loss, out.W, out.a)
    assert verdict.verdict == "spurious_local_minimum"
    assert verdict.birth_margin == pytest.approx(-4.1893e-5, rel=1e-4)
    assert verdict.birth_margin == pytest.approx(
        reference_margin(X, y, out.W, out.a, lam), rel=1e-9
    )
    assert verdict.strict is False  # its 100 neurons share one signed cone


@pytest.fixture(scope="module")
def small_census():
    X, y = datasets.teacher(4, 8, 3, 0)
    patterns = enumerate_patterns(X)
    opt = convex.global_optimum(X, y, LAM, patterns=patterns)
    records = [
        record
        for width in (1, 2, 4)
        for record in census.certify_samples(
            X, y, LAM, optimum=opt.value, support=(opt.support_patterns, opt.support_signs),
            width=width, samples=range(30), seed=1, sampling="uniform", patterns=patterns,
            num_signed_cones=2 * len(patterns),
        )
    ]  # fmt: skip
    return X, y, records


def test_spurious_census_cones_carry_their_birth_margin(small_census):
    X, y, records = small_census
    spurious = [r for r in records if r.verdict == "spurious"]
    assert {r.width for r in spurious} == {1, 2, 4}
    for record in records:
        entry = record.as_dict()
        if record.verdict != "spurious":
            assert entry["birth_margin"] is None and entry["strict"] is None
            continue
        assert entry["birth_margin"] == record.birth_margin < 0
        # the restricted minimiser, solved again by the straightforward path
        signs = np.asarray(record.signs)
        sol = convex.solve_program(X, y, LAM, record.patterns, signs)
        W, a = recover_network(sol.U, signs, threshold=1e-7)
        assert record.birth_margin == pytest.approx(reference_margin(X, y, W, a, LAM), rel=1e-5)
        # strict iff all m neurons carry distinct signed cones (none free to grow)
        assert record.strict is (record.num_neurons == record.width)
    assert any(r.strict for r in spurious) and not all(r.strict for r in spurious)


def test_census_rows_count_the_strict_spurious_cones(small_census):
    _, _, records = small_census
    for row in census.summarize(records):
        mine = [r for r in records if r.width == row["width"]]
        strict = sum(r.verdict == "spurious" and r.strict for r in mine) / len(mine)
        assert row["p_spurious_strict"] == strict <= row["p_spurious"]
