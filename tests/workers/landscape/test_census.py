"""The census (SCIENCE §4-§5): shape, restricted values, fast path vs straightforward path."""

import json

import numpy as np
import pytest

from workers.landscape import census, convex
from workers.landscape.census.sampling import distinct_keyed
from workers.landscape.census.screen import GlobalScreen
from workers.landscape.convex import columns as census_columns
from workers.landscape.convex import restricted
from workers.landscape.convex.columns import ColumnSolver
from workers.landscape.convex.restricted import RestrictedSolver
from workers.landscape.geometry import datasets
from workers.landscape.geometry.patterns import cone_keys, distinct_cones, enumerate_patterns

LAM = 0.01


def problem(X, y, lam=LAM):
    patterns = enumerate_patterns(X)
    return patterns, convex.global_optimum(X, y, lam, patterns=patterns)


def run(X, y, patterns, optimum, width, samples, *, seed=0, lam=LAM, **kwargs):
    options = {"sampling": "uniform", "patterns": patterns} | kwargs
    return census.certify_samples(
        X, y, lam, optimum=optimum.value,
        support=(optimum.support_patterns, optimum.support_signs),
        width=width, samples=samples, seed=seed,
        num_signed_cones=optimum.num_signed_cones, **options,
    )  # fmt: skip


@pytest.fixture(scope="module")
def teacher48():
    X, y = datasets.teacher(4, 8, 3, 0)
    return (X, y, *problem(X, y))


def test_coupon_collector_shape(teacher48):
    X, y, patterns, optimum = teacher48
    assert optimum.num_signed_cones == 32
    records = []
    for width in (4, 32, 160):  # well below, at, and 5x the number of signed cones
        records += run(X, y, patterns, optimum, width, range(20), seed=3)
    rows = census.summarize(records)
    assert [row["width"] for row in rows] == [4, 32, 160]
    assert rows[0]["p_global"] <= 0.1
    assert rows[2]["p_global"] >= 0.95
    assert rows[0]["p_covered"] < rows[1]["p_covered"] < rows[2]["p_covered"] <= 1.0
    for row in rows:
        total = row["p_global"] + row["p_spurious"] + row["p_no_local_min"]
        assert total == pytest.approx(1.0)
    found = census.thresholds(rows)
    assert 4 < found["m_half"] <= found["m_95"] <= 160


def test_restricted_values_all_cones_and_random_subsets(teacher48):
    X, y, patterns, optimum = teacher48
    cones = np.repeat(patterns, 2, axis=0)
    signs = np.tile(np.array([1, -1], dtype=np.int8), len(patterns))
    solver = RestrictedSolver(X, y, LAM, tol=1e-10)
    assert solver.solve(cones, signs).value == pytest.approx(optimum.value, abs=1e-8)
    full = convex.solve_program(X, y, LAM, cones, signs)
    assert full.value == pytest.approx(optimum.value, abs=1e-8)
    rng = np.random.default_rng(5)
    for _ in range(15):
        subset = rng.choice(len(signs), size=rng.integers(1, 20), replace=False)
        assert solver.solve(cones[subset], signs[subset]).value >= optimum.value - 1e-9


def test_solvers_of_one_shape_share_a_layout_not_their_data(teacher48):
    """Two solvers of the same (n, rank X, k) reuse one cached layout; each keeps its own y,
    λ and values (interleaved solves against CVXPY's, independent)."""
    X, y, patterns, _ = teacher48
    other_y, other_lam = -0.5 * y + 0.1, 3 * LAM
    first = RestrictedSolver(X, y, LAM, tol=1e-10)
    second = RestrictedSolver(X, other_y, other_lam, tol=1e-10)
    rng = np.random.default_rng(7)
    for _ in range(4):
        picks = rng.choice(len(patterns), size=5, replace=False)
        cones, signs = patterns[picks], np.where(rng.random(5) < 0.5, 1, -1).astype(np.int8)
        for solver, labels, lam in ((first, y, LAM), (second, other_y, other_lam)):
            want = convex.solve_program(X, labels, lam, cones, signs).value
            assert solver.solve(cones, signs).value == pytest.approx(want, rel=1e-7, abs=1e-9)
    assert first._structure[5][1] is second._structure[5][1]  # one P for the shape
    # A large layout (teacher (70, 4) at width 1000 has 565,000 entries) is not kept.
    n, r = first.XQ.shape
    size = restricted.SHARED_LAYOUT_ENTRIES // (r * (2 * n + 1)) + 1
    before = restricted._shared_layout.cache_info().currsize
    first._build_structure(size)
    assert restricted._shared_layout.cache_info().currsize == before


def test_column_generation_matches_the_full_restricted_program():
    """Solving on a working subset and adding dual violators reaches the full set's value."""
    rng = np.random.default_rng(2)
    solved = 0
    for X, y in (datasets.teacher(5, 8, 3, 1), datasets.orthogonal(5, 8, 3, 2)):
        patterns, optimum = problem(X, y)
        solver = RestrictedSolver(X, y, LAM, tol=1e-10)
        support = solver.solve(optimum.support_patterns, optimum.support_signs)
        screen = GlobalScreen(
            X, y, LAM, prediction=support.prediction, optimum=optimum.value, margin=5e-8,
            support_keys=set(cone_keys(optimum.support_patterns, optimum.support_signs)),
        )  # fmt: skip
        columns = ColumnSolver(solver, screen.atom)
        for size in (3, 8, 20, 40):
            picks = rng.integers(0, len(patterns), size)
            signs = np.where(rng.random(size) < 0.5, 1, -1).astype(np.int8)
            cones, signs = distinct_cones(patterns[picks], signs)
            useful = cones.any(axis=1)
            cones, signs = cones[useful], signs[useful]
            full = solver.solve(cones, signs)
            found = columns.solve(cones, signs, cone_keys(cones, signs))
            assert found.value == pytest.approx(full.value, abs=1e-8)
            assert found.U.shape == full.U.shape
            np.testing.assert_allclose(found.prediction, full.prediction, atol=1e-5)
            solved += 1
    assert solved == 8


def test_column_generation_falls_back_to_the_full_program(teacher48, monkeypatch):
    X, y, patterns, optimum = teacher48
    whole = run(X, y, patterns, optimum, 12, range(4))
    monkeypatch.setattr(census_columns, "COMPLEMENTARITY_RTOL", -1.0)  # never converged
    again = run(X, y, patterns, optimum, 12, range(4))
    for a, b in zip(whole, again, strict=True):
        assert a.verdict == b.verdict and a.value == pytest.approx(b.value, abs=1e-8)


def datasets_for_agreement():
    yield "teacher", *datasets.teacher(5, 8, 3, 1)
    yield "orthogonal", *datasets.orthogonal(5, 8, 3, 2)
    yield "theorem2", *datasets.theorem2(5, 1e-3, 0)


def test_fast_path_matches_straightforward_program():
    compared, verdicts = 0, set()
    for _, X, y in datasets_for_agreement():
        patterns, optimum = problem(X, y)
        for width in (3, 12, 40, 120):
            for record in run(X, y, patterns, optimum, width, range(18), seed=7):
                slow = convex.solve_program(X, y, LAM, record.patterns, record.signs)
                found = census.classify(
                    X, y, LAM, record.patterns, record.signs, slow.U, slow.value,
                    optimum=optimum.value,
                )  # fmt: skip
                assert found.verdict == record.verdict, (record, found, slow.value)
                assert slow.value >= optimum.value - 1e-8
                if record.method == "solved":
                    assert record.value == pytest.approx(slow.value, abs=1e-7)
                compared += 1
                verdicts.add(record.verdict)
    assert compared >= 200
    assert verdicts == {"global", "spurious", "no_local_min"}


def test_chunks_reproduce_and_progress_cancels(teacher48):
    X, y, patterns, optimum = teacher48
    whole = run(X, y, patterns, optimum, 12, range(6), sampling="random_vector")
    part = run(X, y, patterns, optimum, 12, [4, 5], sampling="random_vector")
    for a, b in zip(whole[4:], part, strict=True):
        assert (a.sample, a.verdict, a.value) == (b.sample, b.verdict, b.value)
        np.testing.assert_array_equal(a.patterns, b.patterns)
    seen = []
    with pytest.raises(census.CensusCancelled) as stopped:
        run(X, y, patterns, optimum, 12, range(6), on_progress=lambda k: seen.append(k) or k < 2)
    assert seen == [1, 2] and len(stopped.value.records) == 2
    json.dumps([record.as_dict() for record in whole])


def test_samplers_give_patterns_of_the_data(teacher48):
    X, _, patterns, _ = teacher48
    known = {row.tobytes() for row in patterns}
    rng = np.random.default_rng(0)
    for sampling in census.SAMPLINGS:
        cones, signs = census.sample_cones(X, 50, sampling, rng, patterns=patterns)
        assert cones.shape == (50, 4) and set(np.unique(signs)) <= {-1, 1}
        assert {row.tobytes() for row in cones} <= known
    with pytest.raises(ValueError):
        census.sample_cones(X, 5, "uniform", rng)
    # d < n: rejection keeps only realisable bit vectors
    Xs = np.random.default_rng(1).standard_normal((7, 2))
    known = {row.tobytes() for row in enumerate_patterns(Xs)}
    cones, _ = census.sample_cones(Xs, 30, "rejection", rng)
    assert {row.tobytes() for row in cones} <= known
    unique, _ = distinct_cones(cones, np.ones(30, dtype=np.int8))
    assert len(unique) == len({row.tobytes() for row in cones})


@pytest.mark.parametrize(("m", "n"), [(1, 3), (40, 6), (640, 6), (300, 13), (50, 70)])
def test_distinct_keyed_is_distinct_cones_with_their_keys(m, n):
    """One pass of the census against the two calls it replaces, and against a plain set
    of (pattern, sign) rows (independent), in the keys' order."""
    rng = np.random.default_rng(m + n)
    pool = rng.random((max(2, m // 4), n)) < 0.5  # repeats are likely
    patterns = pool[rng.integers(0, len(pool), m)]
    signs = np.where(rng.random(m) < 0.5, 1, -1).astype(np.int8)
    cones, kept, keys = distinct_keyed(patterns, signs)
    expected, expected_signs = distinct_cones(patterns, signs)
    np.testing.assert_array_equal(cones, expected)
    np.testing.assert_array_equal(kept, expected_signs)
    assert kept.dtype == np.int8 and cones.dtype == bool
    assert list(keys) == list(cone_keys(expected, expected_signs))
    rows = {(p.tobytes(), int(s)) for p, s in zip(patterns, signs, strict=True)}
    assert {(p.tobytes(), int(s)) for p, s in zip(cones, kept, strict=True)} == rows
    assert list(keys) == sorted(keys)


def test_thresholds_interpolate_in_log_width():
    rows = [
        {"width": 10, "p_global": 0.0},
        {"width": 40, "p_global": 0.25},
        {"width": 160, "p_global": 0.75},
        {"width": 640, "p_global": 1.0},
    ]
    found = census.thresholds(rows)
    assert found["m_half"] == pytest.approx(80.0)  # halfway between 40 and 160 in log m
    assert found["m_95"] == pytest.approx(160 * 4**0.8)
    assert census.thresholds(rows[:2]) == {"m_half": None, "m_95": None}
    assert census.thresholds([{"width": 5, "p_global": 1.0}])["m_half"] == 5.0


def test_a_support_that_misses_the_optimum_screens_nothing_on_its_own():
    # Drop the largest neuron of the global support: cones holding the rest must be solved.
    X, y = datasets.teacher(5, 8, 3, 1)
    patterns, optimum = problem(X, y)
    keep = np.argsort(np.linalg.norm(optimum.U, axis=1))[:-1]
    partial = (optimum.support_patterns[keep], optimum.support_signs[keep])
    for width in (12, 40):
        records = census.certify_samples(
            X, y, LAM, optimum=optimum.value, support=partial, width=width,
            samples=range(12), seed=5, sampling="uniform", patterns=patterns,
            num_signed_cones=optimum.num_signed_cones,
        )  # fmt: skip
        for record in records:
            slow = convex.solve_program(X, y, LAM, record.patterns, record.signs)
            assert (record.verdict == "global") == (slow.value <= optimum.value + 1e-7), record


@pytest.mark.parametrize("shape", [(0, 6), (1, 1), (7, 6), (128, 6), (40, 70)])
def test_pattern_strings_spell_each_row(shape):
    from workers.landscape.census.records import pattern_strings

    rows = np.random.default_rng(sum(shape)).random(shape) < 0.5
    expected = ["".join("1" if b else "0" for b in row) for row in rows]
    assert pattern_strings(rows) == expected
    assert pattern_strings(rows.astype(np.int8)) == expected
    assert pattern_strings(rows[:, ::-1]) == [s[::-1] for s in expected]  # not contiguous
