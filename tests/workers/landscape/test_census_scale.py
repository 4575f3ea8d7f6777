"""The census engine's shortcuts at scale (issue 12): bounded dual checks, capped rounds, the
polished working set, the batched atoms and the per-step timings, each against an
independent computation."""

import numpy as np
import pytest

from workers.landscape import census, convex
from workers.landscape.census import certify
from workers.landscape.convex import columns as census_columns
from workers.landscape.convex import polish as census_polish
from workers.landscape.convex.certificate import project_norm, projections
from workers.landscape.convex.columns import ColumnSolver
from workers.landscape.convex.restricted import RestrictedSolver
from workers.landscape.geometry import datasets
from workers.landscape.geometry.patterns import cone_keys, distinct_cones, enumerate_patterns

LAM = 0.01


@pytest.fixture(scope="module")
def teacher30():
    """n > d, as in the scale bench: many constraints per cone, many violators per round."""
    X, y = datasets.teacher(30, 4, 10, 0)
    patterns = enumerate_patterns(X)
    return X, y, patterns, convex.global_optimum(X, y, LAM, patterns=patterns)


def census_options(optimum, patterns, samples) -> dict:
    """Keyword arguments of ``census.certify_samples`` at width 40, random_vector sampling."""
    return dict(
        optimum=optimum.value, support=(optimum.support_patterns, optimum.support_signs),
        width=40, samples=samples, seed=0, sampling="random_vector", patterns=patterns,
        num_signed_cones=optimum.num_signed_cones,
    )  # fmt: skip


def random_cones(X, count, rng):
    orient = np.where(rng.random((count, X.shape[0])) < 0.5, 1.0, -1.0)
    return orient, rng.standard_normal((count, X.shape[1]))


@pytest.mark.parametrize("count", [5, 80])  # one by one, and through cone_values
def test_values_above_is_exact_above_the_floor(count):
    X, _ = datasets.teacher(5, 4, 3, 1)
    orient, G = random_cones(X, count, np.random.default_rng(count))
    exact = np.array([project_norm(o[:, None] * X, g) for o, g in zip(orient, G, strict=True)])
    floor = float(np.median(exact[exact > 1e-6]))
    atol = 1e-10 * np.abs(G).max()
    values = census_polish.values_above(X, orient, G, floor)
    above = exact > floor
    assert 0 < above.sum() < count
    np.testing.assert_allclose(values[above], exact[above], rtol=1e-9, atol=atol)
    assert np.all(values[~above] <= floor)
    # A valid upper bound (the exact value plus slack) changes nothing above the floor.
    rng = np.random.default_rng(1)
    bounded = census_polish.values_above(X, orient, G, floor, exact + rng.random(count) * floor)
    np.testing.assert_allclose(bounded[above], exact[above], rtol=1e-9, atol=atol)
    assert np.all(bounded[~above] <= floor)


def test_projections_are_the_certificates_projection():
    X, _ = datasets.teacher(12, 4, 3, 2)
    X[3] = 0.0  # a point at the origin gives no constraint
    orient, G = random_cones(X, 40, np.random.default_rng(3))
    P = projections(X, orient, G)
    norms = [project_norm(o[:, None] * X, g) for o, g in zip(orient, G, strict=True)]
    np.testing.assert_allclose(np.linalg.norm(P, axis=1), norms, rtol=1e-9, atol=1e-14)
    scale = np.linalg.norm(G, axis=1)[:, None] * np.linalg.norm(X, axis=1)[None, :]
    assert np.all(orient * (P @ X.T) >= -1e-10 * scale)  # in the cone
    # Moreau: the projection is orthogonal to what it removes.
    assert np.abs(np.einsum("ij,ij->i", P, P - G)).max() <= 1e-10 * np.abs(G).max() ** 2


def cones_of(X, patterns, size, rng):
    picks = rng.integers(0, len(patterns), size)
    signs = np.where(rng.random(size) < 0.5, 1, -1).astype(np.int8)
    cones, signs = distinct_cones(patterns[picks], signs)
    useful = cones.any(axis=1)
    return cones[useful], signs[useful]


def column_solver(X, y, optimum):
    """The census's solver and screen on (X, y), as ``certify_samples`` builds them."""
    solver = RestrictedSolver(X, y, LAM, tol=1e-10)
    support = (optimum.support_patterns, optimum.support_signs)
    screen = certify._screen(X, y, LAM, solver, support, optimum=optimum.value, tolerance=1e-7)
    return solver, ColumnSolver(solver, screen.atom, anchor=screen.residual)


def test_capped_rounds_and_polished_working_sets_reach_the_full_value(teacher30, monkeypatch):
    """With at most ADD_MAX violators a round, and with every working-set solution failing
    the KKT check (so it is polished, or solved over all members), the value is the one of
    the program over all members."""
    X, y, patterns, optimum = teacher30
    rng = np.random.default_rng(4)
    cases = [cones_of(X, patterns, size, rng) for size in (20, 60, 120)]
    solver, columns = column_solver(X, y, optimum)
    full = [solver.solve(cones, signs) for cones, signs in cases]
    for (cones, signs), reference in zip(cases, full, strict=True):
        found = columns.solve(cones, signs, cone_keys(cones, signs))
        assert found.value == pytest.approx(reference.value, abs=1e-8)
    assert columns.rounds > 0
    monkeypatch.setattr(census_columns, "COMPLEMENTARITY_RTOL", -1.0)  # never converged
    for (cones, signs), reference in zip(cases, full, strict=True):
        found = columns.solve(cones, signs, cone_keys(cones, signs))
        assert found.value == pytest.approx(reference.value, abs=1e-8)
        if found.status == "Polished":  # the exact minimiser over all members
            assert found.value <= reference.value + 1e-9
            r = (2.0 / len(y)) * (found.prediction - y)
            g = -signs[:, None] * ((cones * r) @ X)
            orient = np.where(cones, 1.0, -1.0)
            values = [project_norm(o[:, None] * X, v) for o, v in zip(orient, g, strict=True)]
            assert max(values) <= 2 * LAM * (1 + 1e-7)
    assert columns.polished > 0


def test_without_the_polish_a_failed_check_solves_over_all_members(teacher30, monkeypatch):
    X, y, patterns, optimum = teacher30
    cones, signs = cones_of(X, patterns, 60, np.random.default_rng(5))
    solver, columns = column_solver(X, y, optimum)
    monkeypatch.setattr(census_columns, "COMPLEMENTARITY_RTOL", -1.0)
    monkeypatch.setattr(ColumnSolver, "_polished", lambda self, *args: None)
    found = columns.solve(cones, signs, cone_keys(cones, signs))
    assert columns.fallbacks == 1 and found.status != "Polished"
    assert found.value == pytest.approx(solver.solve(cones, signs).value, abs=1e-10)


def test_timings_cover_every_step_and_change_no_record(teacher30):
    X, y, patterns, optimum = teacher30
    options = census_options(optimum, patterns, range(3))
    timings: dict[str, float] = {}
    timed = census.certify_samples(X, y, LAM, timings=timings, **options)
    plain = census.certify_samples(X, y, LAM, **options)
    assert set(timings) == set(census.STAGES)
    assert all(seconds >= 0.0 for seconds in timings.values())
    assert timings["solve"] > 0.0 and timings["sample"] > 0.0
    for a, b in zip(timed, plain, strict=True):
        assert (a.verdict, a.value, a.method) == (b.verdict, b.value, b.method)


def test_sparse_matrices_are_the_cached_ones_without_their_zeros():
    X, y = datasets.teacher(30, 4, 10, 1)
    solver = RestrictedSolver(X, y, LAM)
    rng = np.random.default_rng(6)
    D = rng.random((7, 30)) < 0.5
    s = np.where(rng.random(7) < 0.5, 1.0, -1.0)
    dense = solver._matrices(D, s)
    sparse = solver._sparse(D, s)
    np.testing.assert_array_equal(sparse[2].toarray(), dense[2].toarray())
    assert sparse[2].nnz < dense[2].nnz
    np.testing.assert_array_equal(sparse[0].toarray(), dense[0].toarray())  # P
    np.testing.assert_array_equal(sparse[1], dense[1])  # q
    np.testing.assert_array_equal(sparse[3], dense[3])  # b


@pytest.mark.parametrize(("n", "k"), [(8, 30), (70, 400), (40, 12)])
def test_gram_nnls_is_scipys_nnls_on_a_factor(n, k):
    """The first working set's NNLS without G: the minimiser of c'Gc/2 - b'c, c >= 0, as
    scipy's nnls finds it on the Cholesky factor of G = M'M + ridge I."""
    from scipy.optimize import nnls

    rng = np.random.default_rng(n + k)
    M = rng.standard_normal((n, k)) / np.sqrt(n)
    b = M.T @ rng.standard_normal(n) - 0.05
    ridge = 1e-10 * (1.0 + float(np.sum(M * M)))
    G = M.T @ M + ridge * np.eye(k)
    L = np.linalg.cholesky(G)
    expected, _ = nnls(L.T, np.linalg.solve(L, b), maxiter=50 * k + 100)
    found = census_columns.gram_nnls(M, ridge, b, max_iter=3 * k + 10)
    assert np.all(found >= 0)
    assert 0 < np.count_nonzero(found) < k
    np.testing.assert_array_equal(found > 0, expected > 0)
    np.testing.assert_allclose(found, expected, rtol=1e-6, atol=1e-9)
    # KKT: zero gradient on the support, nonpositive off it.
    grad = b - G @ found
    assert np.abs(grad[found > 0]).max() <= 1e-9
    assert grad[found == 0].max() <= 1e-9


def test_first_working_set_is_the_same_either_way(teacher30, monkeypatch):
    """The first working set through gram_nnls (forced) is the one through the factor."""
    X, y, patterns, optimum = teacher30
    _, columns = column_solver(X, y, optimum)
    rng = np.random.default_rng(7)
    for size in (20, 120):
        cones, signs = cones_of(X, patterns, size, rng)
        s = signs.astype(np.float64)
        args = (cones, s, signs, cone_keys(cones, signs))
        monkeypatch.setattr(census_columns, "GRAM_NNLS_MIN", 10**9)
        by_factor, norms = columns._first_set(*args)
        monkeypatch.setattr(census_columns, "GRAM_NNLS_MIN", 0)
        by_gram, again = columns._first_set(*args)
        assert by_factor.sum() > columns.initial
        np.testing.assert_array_equal(by_gram, by_factor)
        np.testing.assert_array_equal(again, norms)
