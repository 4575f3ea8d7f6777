"""The polish of restricted minimisers (census_polish) and the classification built on it."""

import numpy as np
import pytest
from scipy.linalg import null_space
from scipy.optimize import minimize

from workers.landscape import convex
from workers.landscape.convex import classify as census_classify
from workers.landscape.convex import newton
from workers.landscape.convex.certificate import cone_values, gap_bound
from workers.landscape.convex.classify import (
    FALLBACK_KINK_REL,
    FALLBACK_STATIONARITY_TOL,
    STATIONARITY_TOL,
    classify,
)
from workers.landscape.convex.polish import polish
from workers.landscape.convex.restricted import RestrictedSolver
from workers.landscape.convex.stationarity import clarke_stationarity
from workers.landscape.geometry import datasets
from workers.landscape.geometry.patterns import enumerate_patterns

LAM = 0.01
DATASETS = {
    "teacher d>n": lambda: datasets.teacher(5, 8, 3, 1),
    "teacher d<n": lambda: datasets.teacher(8, 3, 3, 0),
    "orthogonal": lambda: datasets.orthogonal(5, 8, 3, 2),
}


def restricted_programs(X, y, count, *, seed=0, max_cones=6):
    """Random sets of 1..max_cones signed cones with their Clarabel solutions (tol 1e-10)."""
    patterns = enumerate_patterns(X)
    patterns = patterns[patterns.any(axis=1)]
    solver = RestrictedSolver(X, y, LAM, tol=1e-10)
    rng = np.random.default_rng(seed)
    for _ in range(count):
        k = int(rng.integers(1, max_cones + 1))
        D = patterns[rng.choice(len(patterns), k, replace=False)]
        s = np.where(rng.random(k) < 0.5, 1, -1).astype(np.int8)
        yield D, s, solver.solve(D, s)


def member(D, s, pattern, sign):
    """Index of the signed cone (pattern, sign) among the rows of (D, s)."""
    return int(np.flatnonzero(np.all(np.equal(D, pattern), axis=1) & (s == sign))[0])


def network(U, signs):
    """Balanced neurons w = u / sqrt(||u||), a = s sqrt(||u||) of the rows of U."""
    root = np.sqrt(np.linalg.norm(U, axis=1))
    return U / root[:, None], np.where(np.asarray(signs) > 0, 1.0, -1.0) * root


def raw_network(X, U, signs):
    """The unpolished recovery: prune at 1e-6 relative, snap onto faces within 1e-4."""
    norms = np.linalg.norm(U, axis=1)
    keep = norms > 1e-6 * max(1.0, norms.max())
    U, signs = U[keep].copy(), np.asarray(signs)[keep]
    xnorm = np.linalg.norm(X, axis=1)
    for i, u in enumerate(U):
        faces = X[np.abs(X @ u) <= FALLBACK_KINK_REL * xnorm * np.linalg.norm(u)]
        if len(faces):
            U[i] = u - np.linalg.pinv(faces) @ (faces @ u)
    return network(U, signs)


def restricted_gap(X, y, D, s, value, prediction):
    """Weak-duality bound on value - (restricted minimum) at the residual of ``prediction``."""
    r = 2.0 / len(y) * (prediction - y)
    g = -np.asarray(s, dtype=np.float64)[:, None] * ((D * r) @ X)
    values, exact = cone_values(X, np.where(D, 1.0, -1.0), g)
    assert exact.all()
    return gap_bound(value, r, y, max(0.0, float(values.max()) / (2 * LAM) - 1.0))


def test_degenerate_face_is_recovered_exactly():
    # One cone, D = (1, 0): the minimiser u = (y1 - n λ, 0) lies on the face x2 . u = 0
    # with a zero multiplier, which the interior point leaves at a slack of order sqrt(mu).
    X, y, lam = np.eye(2), np.array([1.0, 0.5]), 0.1
    D, s = np.array([[True, False]]), np.array([1])
    sol = RestrictedSolver(X, y, lam, tol=1e-10).solve(D, s)
    assert abs(sol.U[0, 1]) > 1e-9  # the interior point is off the face
    found = polish(X, y, lam, D, s, sol.U, sol.value)
    assert found is not None and found.faces.tolist() == [[False, True]]
    np.testing.assert_allclose(found.U, [[0.8, 0.0]], rtol=0, atol=1e-15)
    assert found.value == pytest.approx(0.5 * (0.04 + 0.25) + 0.16, rel=1e-15)


@pytest.mark.parametrize("name", DATASETS)
def test_polished_point_is_feasible_and_attains_the_restricted_value(name):
    X, y = DATASETS[name]()
    checked = 0
    for D, s, sol in restricted_programs(X, y, 40, seed=1):
        found = polish(X, y, LAM, D, s, sol.U, sol.value)
        assert found is not None
        # its rows are members of the set, inside their (closed) cones, with the stated value
        index = [member(D, s, p, g) for p, g in zip(found.patterns, found.signs, strict=True)]
        slack = np.where(D[index], 1.0, -1.0) * (found.U @ X.T)
        scale = np.linalg.norm(found.U, axis=1)[:, None] * np.linalg.norm(X, axis=1)[None, :]
        assert np.all(slack >= -1e-13 * scale)
        value, prediction = convex.program_terms(X, y, LAM, found.patterns, found.signs, found.U)
        assert value == pytest.approx(found.value, rel=1e-14)
        # never worse than Clarabel, equal to it within its accuracy, and optimal by weak
        # duality. Clarabel's "Solved" at tol 1e-10 leaves U accurate to about 1e-8 only:
        # with OPENBLAS_CORETYPE=Haswell one program here came out 2.05e-8 above the
        # polished point, whose weak-duality gap (the last check) is below 1e-12.
        assert found.value <= sol.value + 1e-10 * sol.value
        assert found.value == pytest.approx(sol.value, rel=1e-7)
        assert restricted_gap(X, y, D, s, found.value, prediction) <= 1e-12 * found.value
        checked += 1
    assert checked == 40


def test_both_solvers_polish_to_the_same_point():
    X, y = DATASETS["teacher d>n"]()
    for D, s, sol in restricted_programs(X, y, 12, seed=2):
        slow = convex.solve_program(X, y, LAM, D, s)
        a = polish(X, y, LAM, D, s, sol.U, sol.value)
        b = polish(X, y, LAM, D, s, slow.U, slow.value)
        assert a is not None and b is not None
        assert a.value == pytest.approx(b.value, rel=1e-13)
        pa = convex.program_terms(X, y, LAM, a.patterns, a.signs, a.U)[1]
        pb = convex.program_terms(X, y, LAM, b.patterns, b.signs, b.U)[1]
        np.testing.assert_allclose(pa, pb, rtol=0, atol=1e-11)  # the optimal fit is unique


def scipy_on_faces(X, y, lam, found):
    """Independent minimisation on the polish's faces: scipy BFGS over u_i = B_i z_i."""
    bases = [null_space(X[face]) if face.any() else np.eye(X.shape[1]) for face in found.faces]
    cols = [
        s * (D[:, None] * (X @ B))
        for s, D, B in zip(found.signs, found.patterns, bases, strict=True)
    ]
    cuts = np.cumsum([B.shape[1] for B in bases])[:-1]
    A = np.hstack(cols)

    def f(z):
        err = A @ z - y
        parts = np.split(z, cuts)
        grad = 2 / len(y) * A.T @ err + 2 * lam * np.concatenate(
            [p / np.linalg.norm(p) for p in parts]
        )
        return err @ err / len(y) + 2 * lam * sum(np.linalg.norm(p) for p in parts), grad

    start = np.concatenate([B.T @ u for B, u in zip(bases, found.U, strict=True)])
    start = start * (1 + 1e-3 * np.random.default_rng(0).standard_normal(start.shape))
    result = minimize(f, start, jac=True, method="BFGS", options={"gtol": 1e-12, "maxiter": 5000})
    U = np.stack([B @ p for B, p in zip(bases, np.split(result.x, cuts), strict=True)])
    return U, result.fun


@pytest.mark.parametrize("name", DATASETS)
def test_polish_agrees_with_scipy_on_the_face(name):
    X, y = DATASETS[name]()
    compared = 0
    for D, s, sol in restricted_programs(X, y, 8, seed=3, max_cones=3):
        found = polish(X, y, LAM, D, s, sol.U, sol.value)
        assert found is not None
        if len(found.U) == 0:
            continue
        U, value = scipy_on_faces(X, y, LAM, found)
        assert found.value <= value + 1e-15
        assert value == pytest.approx(found.value, rel=1e-13)
        np.testing.assert_allclose(U, found.U, rtol=0, atol=1e-6 * np.abs(found.U).max())
        compared += 1
    assert compared >= 4


@pytest.mark.parametrize("name", DATASETS)
def test_spurious_points_are_stationary_to_rounding_and_perturbed_ones_are_not(name):
    X, y = DATASETS[name]()
    optimum = convex.global_optimum(X, y, LAM).value
    rng = np.random.default_rng(4)
    points, raw_above = 0, 0
    for D, s, sol in restricted_programs(X, y, 250, seed=5):
        if sol.value <= optimum + 1e-7:
            continue
        raw = clarke_stationarity(X, y, *raw_network(X, sol.U, s), LAM, tol=1.0, kink_tol=1e-12)
        if raw.residual > FALLBACK_STATIONARITY_TOL:  # not a stationary point even unpolished
            continue
        found = polish(X, y, LAM, D, s, sol.U, sol.value)
        assert found is not None
        if len(found.U) == 0:
            continue
        W, a = network(found.U, found.signs)
        exact = clarke_stationarity(X, y, W, a, LAM, tol=STATIONARITY_TOL, kink_tol=1e-12)
        assert exact.residual <= 1e-3 * STATIONARITY_TOL, (raw, exact)
        W2 = W + 1e-5 * rng.standard_normal(W.shape)
        a2 = a + 1e-5 * rng.standard_normal(a.shape)
        moved = clarke_stationarity(X, y, W2, a2, LAM, tol=STATIONARITY_TOL, kink_tol=1e-12)
        assert moved.residual >= 100 * STATIONARITY_TOL
        points += 1
        raw_above += raw.residual > STATIONARITY_TOL
    assert points >= 5
    assert raw_above >= 1  # without the polish the tight tolerance would reject some of them


def on_faces(X, face, direction):
    """The component of ``direction`` along the faces x_k . u = 0, k in ``face``."""
    return direction - np.linalg.pinv(X[face]) @ (X[face] @ direction) if face.any() else direction


def test_active_set_releases_a_snapped_face_and_adds_a_missed_one():
    """Moved along its faces, a row whose nearest inactive constraint is brought within 1e-5
    relative (so it is taken active) or whose active constraint is left by 1e-3 (so it is not)
    polishes back to the same exact point."""
    X, y = DATASETS["teacher d<n"]()
    xnorm = np.linalg.norm(X, axis=1)
    tried = {"release": 0, "add": 0}
    for D, s, sol in restricted_programs(X, y, 30, seed=6, max_cones=2):
        exact = polish(X, y, LAM, D, s, sol.U, sol.value)
        assert exact is not None
        for j, (u, face) in enumerate(zip(exact.U, exact.faces, strict=True)):
            i = member(D, s, exact.patterns[j], exact.signs[j])
            cos = np.abs(X @ u) / (xnorm * np.linalg.norm(u))
            starts = []
            if (~face).any():
                k = int(np.argmin(np.where(face, np.inf, cos)))
                step = on_faces(X, face, X[k])
                starts.append(("release", u - (1 - 1e-5) * (X[k] @ u) / (X[k] @ step) * step))
            if face.any():
                k = int(np.flatnonzero(face)[0])
                others = face.copy()
                others[k] = False
                step = on_faces(X, others, np.where(D[i, k], 1.0, -1.0) * X[k])
                starts.append(("add", u + 1e-3 * np.linalg.norm(u) * step / np.linalg.norm(step)))
            for mode, row in starts:
                start = sol.U.copy()
                start[i] = row
                again = polish(X, y, LAM, D, s, start, sol.value)
                assert again is not None and again.faces.tolist() == exact.faces.tolist(), mode
                atol = 1e-12 * np.abs(exact.U).max()
                np.testing.assert_allclose(again.U, exact.U, rtol=0, atol=atol)
                tried[mode] += 1
    assert tried["release"] >= 3 and tried["add"] >= 3


def test_a_noise_row_is_dropped_and_certified_zero():
    X, y = DATASETS["teacher d>n"]()
    for D, s, sol in restricted_programs(X, y, 10, seed=7):
        exact = polish(X, y, LAM, D, s, sol.U, sol.value)
        zero = np.flatnonzero(np.linalg.norm(sol.U, axis=1) < 1e-8)
        if exact is None or len(zero) == 0:
            continue
        noisy = sol.U.copy()
        inside = np.linalg.pinv(X) @ np.where(D[zero[0]], 1.0, -1.0)  # X u = +-1 (d > n)
        noisy[zero[0]] = 1e-4 * np.abs(sol.U).max() * inside / np.linalg.norm(inside)
        value = convex.program_terms(X, y, LAM, D, s, noisy)[0]
        again = polish(X, y, LAM, D, s, noisy, value)
        assert again is not None and again.value == pytest.approx(exact.value, rel=1e-14)
        assert len(again.U) == len(exact.U)  # the noise row is back to zero
        return
    pytest.fail("no restricted program with a zero row")


def test_classify_falls_back_to_the_interior_point(monkeypatch):
    X, y = DATASETS["orthogonal"]()
    optimum = convex.global_optimum(X, y, LAM).value
    for D, s, sol in restricted_programs(X, y, 40, seed=8):
        if sol.value <= optimum + 1e-7:
            continue
        polished = classify(X, y, LAM, D, s, sol.U, sol.value, optimum=optimum)
        with monkeypatch.context() as patch:
            patch.setattr(census_classify, "polish", lambda *args, **kwargs: None)
            fallback = classify(X, y, LAM, D, s, sol.U, sol.value, optimum=optimum)
        assert polished.polished and not fallback.polished
        assert polished.verdict == fallback.verdict == "spurious"
        assert polished.residual <= 1e-3 * STATIONARITY_TOL
        if fallback.residual > STATIONARITY_TOL:  # only the loose fallback tolerance accepts it
            return
    pytest.fail("no unpolished spurious point above the tight tolerance")


def test_cached_bases_and_pseudo_inverses_are_the_plain_ones():
    """The polish's null spaces and the classification's pseudo-inverses are cached by the
    bytes of their rows: same projectors as scipy's null_space / numpy's pinv computed
    afresh, read-only, and a repeat is a cache hit."""
    rng = np.random.default_rng(11)
    for rows in (rng.standard_normal((2, 5)), np.vstack([np.ones(4), np.ones(4)])):
        for complement in (False, True):
            got = newton.null_space(rows, complement=complement)
            want = null_space(rows) if not complement else null_space(null_space(rows).T)
            np.testing.assert_allclose(got @ got.T, want @ want.T, atol=1e-12)
            assert not got.flags.writeable
            assert newton.null_space(rows.copy(), complement=complement) is got
        inverse = census_classify._pinv(rows.shape, rows.tobytes())
        np.testing.assert_array_equal(inverse, np.linalg.pinv(rows))
        assert not inverse.flags.writeable
    assert newton.null_space(np.zeros((0, 3))).shape == (3, 3)
