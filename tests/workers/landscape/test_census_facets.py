"""The census's restricted programs on facet rows only (issue 12): the same program, the same
records, and a safe fallback when the facet rows do not describe the cone. Data: teacher
(30, 4) of test_census_scale, 30 rows per signed cone, a handful of them facets."""

import numpy as np
import pytest
from scipy.optimize import linprog

from tests.workers.landscape.test_census_scale import census_options, teacher30  # noqa: F401 - fixture
from workers.landscape import census
from workers.landscape.convex import restricted
from workers.landscape.convex.restricted import RestrictedSolver

LAM = 0.01


def draw(patterns, count, rng):
    index = rng.choice(len(patterns), count, replace=False)
    return patterns[index], rng.choice([-1.0, 1.0], count)


def test_facet_rows_imply_the_other_rows(teacher30):  # noqa: F811
    """Each dropped row is implied by the kept ones: min a.v over the facet rows' cone (in a
    box) is 0, found by an LP over the row-space coordinates."""
    X, y, patterns, _ = teacher30
    solver = RestrictedSolver(X, y, LAM)
    assert solver.hull
    rng = np.random.default_rng(0)
    kept = []
    for pattern in patterns[rng.choice(len(patterns), 12, replace=False)]:
        A = np.where(pattern, 1.0, -1.0)[:, None] * solver.XQ
        rows = solver.facet_rows(pattern)
        kept.append(len(rows))
        r = A.shape[1]
        for dropped in np.setdiff1d(np.arange(len(A)), rows):
            found = linprog(
                A[dropped], A_ub=-A[rows], b_ub=np.zeros(len(rows)), bounds=[(-1, 1)] * r
            )
            assert found.status == 0
            assert found.fun >= -1e-9 * np.linalg.norm(A[dropped])
    assert np.mean(kept) < 0.5 * len(X)  # the reduction is real


def test_facet_program_matches_all_rows(teacher30):  # noqa: F811
    """The same minimum as the program on all rows, and a point feasible for all rows."""
    X, y, patterns, _ = teacher30
    facets = RestrictedSolver(X, y, LAM, tol=1e-10)
    full = RestrictedSolver(X, y, LAM, tol=1e-10)
    full.hull = False
    rng = np.random.default_rng(1)
    for count in (3, 12, 40):
        D, s = draw(patterns, count, rng)
        a, b = facets.solve(D, s), full.solve(D, s)
        assert a.value == pytest.approx(b.value, rel=1e-7, abs=1e-10)
        slack = np.einsum("ik,kd,id->ik", np.where(D, 1.0, -1.0), X, a.U)
        assert slack.min() >= -1e-7 * max(1.0, np.abs(a.U).max())
    assert facets.refused == 0


def test_wrong_facets_fall_back_to_all_rows(teacher30, monkeypatch):  # noqa: F811
    """Facet rows that leave the cone open (one row kept) are caught by the full-row check:
    the program is solved again on all rows."""
    X, y, patterns, _ = teacher30
    solver = RestrictedSolver(X, y, LAM, tol=1e-10)
    full = RestrictedSolver(X, y, LAM, tol=1e-10)
    full.hull = False
    monkeypatch.setattr(restricted, "facet_rows", lambda A: np.array([0]))
    D, s = draw(patterns, 20, np.random.default_rng(2))
    a, b = solver.solve(D, s), full.solve(D, s)
    assert solver.refused == 1
    assert a.value == pytest.approx(b.value, rel=1e-9, abs=1e-12)


def test_census_records_do_not_depend_on_the_facets(teacher30, monkeypatch):  # noqa: F811
    """certify_samples with and without facet rows: identical verdicts and methods, values
    within the polish's precision."""
    X, y, patterns, optimum = teacher30

    options = census_options(optimum, patterns, range(12))

    def run():
        return census.certify_samples(X, y, LAM, **options)

    with_facets = run()
    monkeypatch.setattr(restricted, "MAX_HULL_RANK", 0)
    without = run()
    assert [r.verdict for r in with_facets] == [r.verdict for r in without]
    assert [r.method for r in with_facets] == [r.method for r in without]
    solved = [r.method == "solved" for r in with_facets]
    assert sum(solved) >= 6
    np.testing.assert_allclose(
        [r.value for r in with_facets], [r.value for r in without], rtol=1e-9, atol=1e-12
    )


def test_facets_in_the_row_space_of_a_rank_deficient_x(teacher30):  # noqa: F811
    """X of rank 4 in d = 6 (two copied columns, a zero row): the facets are found in the
    row-space coordinates and the program is the one on all rows."""
    X, y, patterns, _ = teacher30
    X = np.hstack([X, X[:, :2] - X[:, 2:4]])
    X[5] = 0.0
    facets = RestrictedSolver(X, y, LAM, tol=1e-10)
    full = RestrictedSolver(X, y, LAM, tol=1e-10)
    full.hull = False
    assert facets.XQ.shape[1] == 4 and facets.hull
    rng = np.random.default_rng(4)
    for count in (5, 25):
        D, s = draw(patterns, count, rng)
        a, b = facets.solve(D, s), full.solve(D, s)
        assert a.value == pytest.approx(b.value, rel=1e-7, abs=1e-10)
    assert facets.refused == 0
    assert all(5 not in facets.facet_rows(pattern) for pattern in patterns[:50])
