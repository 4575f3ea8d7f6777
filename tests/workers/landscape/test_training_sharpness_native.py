"""The sharpness on the CPU comes from the native kernel's per-run Lanczos (issue 12);
it must give the batched eager-torch Lanczos's value (kept in training.sharpness as
``_sharpness_torch``, the CUDA and no-compiler path) to 1e-6 relative, and so the same
lr warnings, on runs of several widths, scales and data shapes."""

from __future__ import annotations

import numpy as np
import pytest

from workers.landscape.geometry.datasets import teacher, theorem2
from workers.landscape.training import RunSpec, init_network
from workers.landscape.training import native as training_native
from workers.landscape.training import sharpness as sharp_module
from workers.landscape.training.sharpness import lr_warning, sharpness

CASES = {
    "theorem2 small alpha": (theorem2(4, 1e-3, 0), 1e-4, [30, 25, 12, 30], 1e-3),
    "theorem2 large alpha": (theorem2(4, 1e-3, 0), 1e-4, [30, 7, 30], 1.0),
    "teacher d > n": (teacher(5, 9, 3, 1), 1e-3, [16, 3, 11], 0.1),
    "teacher n > d": (teacher(40, 3, 4, 2), 1e-2, [6, 20, 1], 0.5),
}


def weights(d: int, widths: list[int], alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(R, m, d) and (R, m) initial weights, narrower runs padded with zero neurons."""
    m = max(widths)
    W, a = np.zeros((len(widths), m, d)), np.zeros((len(widths), m))
    for r, width in enumerate(widths):
        W[r, :width], a[r, :width] = init_network(d, width, alpha, 10 + r)
    return W, a


@pytest.fixture(autouse=True)
def needs_kernel() -> None:
    if training_native.load_library(4, 4, 8, for_training=False) is None:
        pytest.skip("no C compiler: the sharpness uses the torch path only")


@pytest.mark.parametrize("case", CASES)
def test_native_sharpness_equals_the_eager_torch_lanczos(case: str) -> None:
    (X, y), lam, widths, alpha = CASES[case]
    W, a = weights(X.shape[1], widths, alpha)
    got = sharpness(X, y, lam, W, a, np.array(widths))
    start = np.random.default_rng(0).standard_normal((len(widths), W.shape[1], X.shape[1] + 1))
    problem, widths_ = (X, y, lam), np.array(widths)
    ref = sharp_module._sharpness_torch(problem, (W, a), widths_, start, "cpu", 48, 1e-8)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    for lr in (1e-3, 0.05, 1.0, 2.0 / ref.max() * 1.01):
        assert [lr_warning(lr, s) for s in got] == [lr_warning(lr, s) for s in ref]


def test_native_sharpness_of_padded_runs_is_that_of_their_own_width() -> None:
    X, y = theorem2(4, 1e-3, 0)
    W, a = weights(4, [9, 20], 0.3)
    alone = sharpness(X, y, 1e-4, W[:1, :9], a[:1, :9])[0]
    padded = sharpness(X, y, 1e-4, W, a, np.array([9, 20]))[0]
    assert padded == pytest.approx(alone, rel=1e-9)


def test_native_sharpness_is_nan_for_non_finite_weights() -> None:
    X, y = theorem2(4, 1e-3, 0)
    W, a = weights(4, [5, 5], 1.0)
    W[0, 2, 1] = np.inf
    got = sharpness(X, y, 1e-4, W, a)
    assert np.isnan(got[0]) and np.isfinite(got[1])


def test_the_sharpness_does_not_depend_on_the_training_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BENIGNITY_TRAINING_NATIVE=0 picks the torch training path; the sharpness on the
    CPU still comes from the kernel, so both paths report the same value bitwise."""
    X, y = theorem2(4, 1e-3, 0)
    W, a = weights(4, [RunSpec(12, 1e-3, 0).width] * 2, 1e-3)
    native = sharpness(X, y, 1e-4, W, a)
    monkeypatch.setenv("BENIGNITY_TRAINING_NATIVE", "0")
    np.testing.assert_array_equal(sharpness(X, y, 1e-4, W, a), native)
