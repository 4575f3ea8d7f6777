"""Dataset generators (SCIENCE.md section 7): shapes, determinism, defining properties."""

from __future__ import annotations

import numpy as np
import pytest

from workers.landscape.geometry.datasets import build, custom, orthogonal, teacher, theorem2


def test_teacher_shapes_and_labels() -> None:
    X, y = teacher(6, 10, 3, seed=0)
    assert X.shape == (6, 10) and y.shape == (6,)
    assert X.dtype == np.float64 and y.dtype == np.float64
    # Independent recomputation of the documented draw order: X, then T, then b.
    rng = np.random.default_rng(0)
    X_ref = rng.standard_normal((6, 10))
    T = rng.standard_normal((3, 10))
    b = rng.standard_normal(3)
    np.testing.assert_array_equal(X, X_ref)
    np.testing.assert_allclose(
        y, sum(b[j] * np.maximum(X_ref @ T[j], 0) for j in range(3)), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("gen", [teacher, orthogonal])
def test_deterministic_per_seed(gen) -> None:
    X1, y1 = gen(5, 8, 4, seed=3)
    X2, y2 = gen(5, 8, 4, seed=3)
    X3, _ = gen(5, 8, 4, seed=4)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)


def test_orthogonal_rows_are_orthonormal() -> None:
    X, y = orthogonal(5, 8, 10, seed=0)
    assert X.shape == (5, 8) and y.shape == (5,)
    np.testing.assert_allclose(X @ X.T, np.eye(5), atol=1e-12)
    X, _ = orthogonal(7, 7, 2, seed=1)
    np.testing.assert_allclose(X.T @ X, np.eye(7), atol=1e-12)


def test_orthogonal_is_haar_on_average() -> None:
    # For Haar Q, E[Q_11] = 0 and E[Q_11^2] = 1/d; with 2000 draws the standard
    # errors are about 0.01 and 0.004, so 5-sigma bounds are 0.05 and 0.02.
    first = np.array([orthogonal(1, 4, 1, seed=s)[0][0, 0] for s in range(2000)])
    assert abs(first.mean()) < 0.05
    assert abs((first**2).mean() - 0.25) < 0.02


def test_orthogonal_needs_d_at_least_n() -> None:
    with pytest.raises(ValueError):
        orthogonal(5, 4, 3, seed=0)


def test_theorem2_points_and_linear_labels() -> None:
    X, y = theorem2(5, perturbation=1e-3, seed=0)
    assert X.shape == (5, 5) and y.shape == (5,)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-14)
    t = np.array([0.8, 0.0, 0.6, 0.0, 0.0])
    np.testing.assert_allclose(y, X @ t, rtol=0, atol=1e-15)
    exact, _ = theorem2(5, perturbation=0.0)
    expected = np.array(
        [
            [1, 0, 0, 0, 0],
            [8 / 9, -4 / 9, 1 / 9, 0, 0],
            [8 / 9, 4 / 9, 1 / 9, 0, 0],
            [8 / 9, 0, 0, np.sqrt(17) / 9, 0],
            [8 / 9, 0, 0, 0, np.sqrt(17) / 9],
        ]
    )
    np.testing.assert_allclose(exact, expected, atol=1e-15)
    # The noise is of the requested size: rows move by about 1e-3, far less than 1e-2.
    assert 1e-5 < np.abs(X - exact).max() < 1e-2


def test_theorem2_validation_and_determinism() -> None:
    np.testing.assert_array_equal(theorem2(4, seed=2)[0], theorem2(4, seed=2)[0])
    with pytest.raises(ValueError):
        theorem2(2)
    with pytest.raises(ValueError):
        theorem2(4, perturbation=-1.0)


def test_custom_returns_float64_copies() -> None:
    X_in = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.int64)
    y_in = [0.5, 1, 2]
    X, y = custom(X_in, y_in)
    assert X.dtype == np.float64 and y.dtype == np.float64
    assert X.shape == (3, 2) and y.shape == (3,)
    X[0, 0] = 99
    assert X_in[0, 0] == 1


@pytest.mark.parametrize(
    ("X", "y"),
    [
        ([1.0, 2.0], [1.0, 2.0]),  # X not 2-d
        ([[1.0, 2.0]], [1.0, 2.0]),  # y length mismatch
        ([[1.0, 2.0]], [[1.0]]),  # y not 1-d
        ([[1.0, np.nan]], [1.0]),
        ([[1.0, 2.0]], [np.inf]),
        (np.zeros((0, 3)), []),  # no points
        ([["a", "b"]], [1.0]),
    ],
)
def test_custom_rejects_bad_input(X, y) -> None:
    with pytest.raises(ValueError):
        custom(X, y)


def test_build_dispatches() -> None:
    X, y = build({"generator": "teacher", "n": 6, "d": 10, "teacher_width": 10, "seed": 0})
    np.testing.assert_array_equal(X, teacher(6, 10, 10, 0)[0])
    X, _ = build({"generator": "orthogonal", "n": 5, "d": 8, "teacher_width": 10, "seed": 0})
    np.testing.assert_array_equal(X, orthogonal(5, 8, 10, 0)[0])
    X, y = build({"generator": "theorem2", "d": 4, "perturbation": 0.001, "seed": 0})
    np.testing.assert_array_equal(X, theorem2(4, 0.001, 0)[0])
    X, _ = build({"generator": "theorem2", "d": 4, "perturbation": None, "n": None})
    np.testing.assert_array_equal(X, theorem2(4)[0])
    X, y = build({"generator": "custom", "X": [[1, 2], [3, 4]], "y": [1, 0]})
    assert X.shape == (2, 2) and y.tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    "spec",
    [
        {"generator": "nope"},
        {"n": 3},
        {"generator": "teacher", "n": 3, "d": 2, "seed": 0},  # teacher_width missing
        {"generator": "teacher", "n": 0, "d": 2, "teacher_width": 1, "seed": 0},
        {"generator": "teacher", "n": 2.5, "d": 2, "teacher_width": 1, "seed": 0},
        {"generator": "theorem2", "d": 4, "n": 5},
        {"generator": "custom", "X": [[1.0]], "y": [1.0, 2.0]},
    ],
)
def test_build_rejects_bad_specs(spec) -> None:
    with pytest.raises(ValueError):
        build(spec)
