"""The datasets of issue 10: the paper's theorem2 draw (SCIENCE §8) and correlated data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workers.landscape import census, convex
from workers.landscape.geometry.datasets import build, correlated, orthogonal, theorem2
from workers.landscape.geometry.patterns import enumerate_patterns
from workers.landscape.training import RunSpec, train_sweep
from workers.landscape.training import native as training_native

# SCIENCE §8: seed 0, d = 4, λ = 1e-4. The optimum is given to 8 digits there (the
# issue's 1.97343950e-4 pads them with a zero); the service's own draw gives 1.97396020e-4.
PAPER_OPTIMUM, ISSUE_OPTIMUM, DEFAULT_OPTIMUM = 1.9734395e-4, 1.97343950e-4, 1.97396020e-4
# ... and gradient descent from α = 1e-3 stops at a spurious point this far above it.
PAPER_GAP = 1.45925e-6


def theorem2_points(d: int) -> np.ndarray:
    """The unperturbed points of SCIENCE §7, written out again."""
    X = np.zeros((d, d))
    X[0, 0] = 1.0
    X[1, :3] = (8 / 9, -4 / 9, 1 / 9)
    X[2, :3] = (8 / 9, 4 / 9, 1 / 9)
    for i in range(3, d):
        X[i, 0], X[i, i] = 8 / 9, math.sqrt(17) / 9
    return X


def paper_script(d: int, perturbation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The paper's draw as its runs make it, on numpy's global legacy generator.

    The global state is saved and restored, so that this test leaves it as it found it.
    """
    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        X = theorem2_points(d) + perturbation * np.random.randn(d, d)
    finally:
        np.random.set_state(saved)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    t = np.zeros(d)
    t[0], t[2] = 0.8, 0.6
    return X, X @ t


@pytest.mark.parametrize(
    ("d", "perturbation", "seed"), [(4, 1e-3, 0), (7, 0.05, 12), (3, 1e-3, 2**32 - 1)]
)
def test_paper_rng_is_the_legacy_global_draw(d: int, perturbation: float, seed: int) -> None:
    # RandomState(seed).normal(0, p, shape) and np.random.seed(seed); p * randn(shape)
    # agree bitwise (same Mersenne Twister seeding, same Box-Muller gauss; 0 + p g = p g).
    X_ref, y_ref = paper_script(d, perturbation, seed)
    X, y = theorem2(d, perturbation, seed, rng="paper")
    np.testing.assert_array_equal(X, X_ref)
    np.testing.assert_array_equal(y, y_ref)
    X_b, y_b = build(
        {
            "generator": "theorem2",
            "d": d,
            "perturbation": perturbation,
            "seed": seed,
            "rng": "paper",
        }
    )
    np.testing.assert_array_equal(X_b, X_ref)
    np.testing.assert_array_equal(y_b, y_ref)


def test_paper_rng_leaves_the_global_state_alone() -> None:
    before = np.random.get_state()
    theorem2(5, 1e-3, 3, rng="paper")
    after = np.random.get_state()
    assert before[0] == after[0] and before[2:] == after[2:]
    np.testing.assert_array_equal(before[1], after[1])


def test_default_rng_is_unchanged() -> None:
    # The documented default draw, and the default for specs stored before "rng" existed.
    d, p, seed = 5, 1e-3, 9
    X_ref = theorem2_points(d) + p * np.random.default_rng(seed).standard_normal((d, d))
    X_ref /= np.linalg.norm(X_ref, axis=1, keepdims=True)
    for X in (
        theorem2(d, p, seed)[0],
        theorem2(d, p, seed, rng="default")[0],
        build({"generator": "theorem2", "d": d, "perturbation": p, "seed": seed})[0],
        build({"generator": "theorem2", "d": d, "perturbation": p, "seed": seed, "rng": None})[0],
    ):
        np.testing.assert_array_equal(X, X_ref)
    assert not np.allclose(theorem2(d, p, seed, rng="paper")[0], X_ref, rtol=0, atol=1e-6)


def test_paper_rng_rejects_what_numpy_cannot_seed() -> None:
    with pytest.raises(ValueError, match="rng"):
        theorem2(4, rng="numpy")
    with pytest.raises(ValueError, match="2\\*\\*32"):
        theorem2(4, seed=2**32, rng="paper")
    theorem2(4, seed=2**32)  # the default generator takes any non-negative seed


def test_paper_optimum() -> None:
    X, y = theorem2(4, 1e-3, 0, rng="paper")
    opt = convex.global_optimum(X, y, 1e-4)
    # Certified: value - (global minimum) <= gap_bound, measured 3.2e-15.
    assert opt.gap_bound < 1e-13
    # Measured 1.97343951840e-4: within half a unit of SCIENCE's 8th digit (off by
    # 1.8e-12), and 9.3e-9 relative to the issue's 1.97343950e-4.
    assert abs(opt.value - PAPER_OPTIMUM) < 5e-12
    assert abs(opt.value / ISSUE_OPTIMUM - 1) < 1e-8
    X, y = theorem2(4, 1e-3, 0)
    assert abs(convex.global_optimum(X, y, 1e-4).value - DEFAULT_OPTIMUM) < 5e-13


def test_paper_spurious_gap() -> None:
    # About 3 s on the native kernel (610k epochs per run); far longer on torch.
    if training_native.load_library(4, 4, 100) is None:
        pytest.skip("no C compiler: the native kernel is not available")
    X, y = theorem2(4, 1e-3, 0, rng="paper")
    optimum = convex.global_optimum(X, y, 1e-4).value
    runs = [RunSpec(100, 1e-3, seed) for seed in range(2)]
    outs = train_sweep(
        X, y, 1e-4, runs, lr=0.05, max_epochs=2_000_000, grad_tol=1e-16, optimum=optimum
    )
    for out in outs:
        assert out.status == "converged"
        # Measured 1.4592549384e-6 for both seeds (they agree to 1e-18).
        assert abs(out.gap - PAPER_GAP) < 5e-12


# --- correlated data ---------------------------------------------------------------


@pytest.mark.parametrize(("n", "d", "rho"), [(6, 10, 0.3), (5, 5, 0.9), (1, 3, 0.5), (8, 20, 0.99)])
def test_correlated_gram(n: int, d: int, rho: float) -> None:
    X, y = correlated(n, d, rho, teacher_width=4, seed=1)
    assert X.shape == (n, d) and y.shape == (n,)
    assert X.dtype == np.float64 and y.dtype == np.float64
    np.testing.assert_allclose(X @ X.T, (1 - rho) * np.eye(n) + rho, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=0, atol=1e-12)
    # Labels from a ReLU teacher drawn after the matrix (as for `orthogonal`).
    rng = np.random.default_rng(1)
    rng.standard_normal((d, d))
    T, b = rng.standard_normal((4, d)), rng.standard_normal(4)
    np.testing.assert_allclose(y, np.maximum(X @ T.T, 0) @ b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 5])
def test_correlated_at_zero_is_orthogonal(seed: int) -> None:
    X_o, y_o = orthogonal(6, 10, 7, seed)
    for X, y in (
        correlated(6, 10, 0.0, 7, seed),
        correlated(6, 10, 0, 7, seed),
        build(
            {
                "generator": "correlated",
                "n": 6,
                "d": 10,
                "rho": 0.0,
                "teacher_width": 7,
                "seed": seed,
            }
        ),
    ):
        np.testing.assert_array_equal(X, X_o)
        np.testing.assert_array_equal(y, y_o)


def test_correlated_defaults_and_validation() -> None:
    X, y = build({"generator": "correlated", "n": 4, "d": 6, "rho": 0.2})
    X_ref, y_ref = correlated(4, 6, 0.2, teacher_width=10, seed=0)
    np.testing.assert_array_equal(X, X_ref)
    np.testing.assert_array_equal(y, y_ref)
    for rho in (1.0, -0.1, math.nan, math.inf, True, "0.5"):
        with pytest.raises(ValueError, match="rho"):
            correlated(4, 6, rho)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="d >= n"):
        correlated(6, 4, 0.5)
    with pytest.raises(ValueError, match="needs"):
        build({"generator": "correlated", "n": 4, "d": 6})


LAM, WIDTHS, SAMPLES = 0.01, (20, 80), 40


def census_rows(X: np.ndarray, y: np.ndarray, seed: int) -> tuple[int, list[dict]]:
    """The number of patterns and a uniform census of the data (SCIENCE §5)."""
    patterns = enumerate_patterns(X)
    opt = convex.global_optimum(X, y, LAM, patterns=patterns)
    records = []
    for width in WIDTHS:
        records += census.certify_samples(
            X,
            y,
            LAM,
            optimum=opt.value,
            support=(opt.support_patterns, opt.support_signs),
            width=width,
            samples=range(SAMPLES),
            seed=seed,
            sampling="uniform",
            patterns=patterns,
            num_signed_cones=opt.num_signed_cones,
        )
    return len(patterns), census.summarize(records)


def binomially_close(p: float, q: float, samples: int, sigmas: float = 3.0) -> bool:
    """|p - q| within `sigmas` standard errors of a difference of two binomial means."""
    pooled = min(max((p + q) / 2, 1 / samples), 1 - 1 / samples)
    return abs(p - q) <= sigmas * math.sqrt(2 * pooled * (1 - pooled) / samples)


def test_correlated_census() -> None:
    # The data are identical, so the census would be too with one census seed: draw
    # the cones with another seed so that the comparison is of the two distributions.
    count_o, rows_o = census_rows(*orthogonal(6, 10, 10, 0), seed=0)
    count_0, rows_0 = census_rows(*correlated(6, 10, 0.0, 10, 0), seed=1)
    count_5, rows_5 = census_rows(*correlated(6, 10, 0.5, 10, 0), seed=0)
    # Correlated points are independent for rho < 1: all 2^n patterns (plans.pattern_bound).
    assert count_o == count_0 == count_5 == 2**6
    for row_o, row_0 in zip(rows_o, rows_0, strict=True):
        assert binomially_close(row_o["p_global"], row_0["p_global"], SAMPLES)
    # Measured at m = 20: p_global 0.5 on orthogonal data, 0.05 at rho = 0.5 (3 SE = 0.3),
    # and p_spurious 0.5 against 0.
    assert not binomially_close(rows_o[0]["p_global"], rows_5[0]["p_global"], SAMPLES)
    assert rows_o[0]["p_spurious"] > rows_5[0]["p_spurious"]
