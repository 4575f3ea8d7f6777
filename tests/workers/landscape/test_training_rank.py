"""The effective rank of the curve points (SCIENCE §6) against an independent numpy SVD,
on the torch path, the native kernel's Jacobi and its LAPACK hand-back, for d <= m and
d > m."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.landscape.training import RunSpec, init_network, train_sweep
from workers.landscape.training import native as training_native
from workers.landscape.training.curves import effective_rank, gram


def svd_rank(W: np.ndarray) -> float:
    """exp of the entropy of the normalised singular values, straight from the SVD."""
    s = np.linalg.svd(W, compute_uv=False)
    p = s[s > 0] / s.sum()
    return float(np.exp(-np.sum(p * np.log(p))))


@pytest.mark.parametrize("d, m", [(4, 100), (3, 2), (200, 20), (20, 300), (200, 300)])
def test_gram_effective_rank_matches_svd(d: int, m: int) -> None:
    rng = np.random.default_rng(d * 1000 + m)
    W = rng.standard_normal((3, d, m)) * np.array([1.0, 1e-3, 1e3])[:, None, None]
    W[1, :, : m // 2] *= 0.1  # uneven singular values
    ranks = effective_rank(gram(torch.from_numpy(W))).numpy()
    assert gram(torch.from_numpy(W)).shape == (3, min(d, m), min(d, m))
    np.testing.assert_allclose(ranks, [svd_rank(w) for w in W], rtol=1e-9)


def test_effective_rank_of_zero_and_non_finite_weights() -> None:
    W = np.zeros((3, 12, 10))
    W[1, 0, 0] = np.inf
    W[2, 3, 4] = 2.0
    np.testing.assert_array_equal(effective_rank(gram(torch.from_numpy(W))), [0.0, np.nan, 1.0])


# (JACOBI_K, KERNEL_K) of each native rank path.
KERNEL_PATHS = {"jacobi": (10**6, 0), "tridiagonal": (0, 10**6), "lapack": (0, 0)}


@pytest.fixture(params=["jacobi", "tridiagonal", "lapack", "torch"])
def rank_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The kernel computing every rank itself (Jacobi, or Householder + implicit QR), the
    kernel handing every Gram matrix to LAPACK on the host, and the torch (eager) path."""
    if request.param == "torch":
        monkeypatch.setenv("BENIGNITY_TRAINING_NATIVE", "0")
    elif training_native.load_library(6, 200, 20) is None:
        pytest.skip("no C compiler: the native kernel is not available")
    else:
        jacobi_k, kernel_k = KERNEL_PATHS[str(request.param)]
        monkeypatch.setattr(training_native, "JACOBI_K", jacobi_k)
        monkeypatch.setattr(training_native, "KERNEL_K", kernel_k)
    return str(request.param)


@pytest.mark.parametrize("d, m", [(200, 20), (30, 300), (5, 40)])
def test_curve_effective_rank_matches_svd_of_the_weights(rank_path: str, d: int, m: int) -> None:
    """Point 0 is the initial W, the last point the final W: both against the SVD."""
    rng = np.random.default_rng(7)
    X, y = rng.standard_normal((6, d)) / np.sqrt(d), rng.standard_normal(6)
    runs = [RunSpec(m, scale, seed) for seed, scale in enumerate((1e-3, 0.1, 0.3))]
    out = train_sweep(X, y, 1e-2, runs, lr=1e-2, max_epochs=5, optimum=0.0, compiled=False)
    assert [o.status for o in out] == ["not_converged"] * len(runs)
    for run, o in zip(runs, out, strict=True):
        W0 = init_network(d, m, run.init_scale, run.seed)[0]
        rank = o.curve["effective_rank"]
        assert len(rank) == 6 and np.all((rank >= 1.0) & (rank <= min(d, m)))
        np.testing.assert_allclose(rank[0], svd_rank(W0), rtol=1e-9)
        np.testing.assert_allclose(rank[-1], svd_rank(o.W), rtol=1e-9)


def test_native_rank_paths_agree_along_the_curve(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jacobi or Householder + QR in the kernel and LAPACK on the host give the same
    curve (and the rest of the curve is untouched), with chunks cut every 3 points."""
    if training_native.load_library(4, 40, 12) is None:
        pytest.skip("no C compiler: the native kernel is not available")
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((4, 40)) / np.sqrt(40), rng.standard_normal(4)
    runs = [RunSpec(12, 0.5, seed) for seed in range(3)]
    curves = []
    for jacobi_k, kernel_k in KERNEL_PATHS.values():
        monkeypatch.setattr(training_native, "JACOBI_K", jacobi_k)
        monkeypatch.setattr(training_native, "KERNEL_K", kernel_k)
        monkeypatch.setattr(training_native, "_RECORD_BYTES", 3 * (6 + 144) * 8 * len(runs))
        out = train_sweep(X, y, 1e-3, runs, lr=1e-2, max_epochs=300, optimum=0.0)
        curves.append([o.curve for o in out])
    for jac, tri, lap in zip(*curves, strict=True):
        assert len(jac["epoch"]) > 40
        for key in jac:
            for kernel in (jac, tri):
                if key == "effective_rank":
                    np.testing.assert_allclose(kernel[key], lap[key], rtol=1e-9)
                else:
                    np.testing.assert_array_equal(kernel[key], lap[key])
