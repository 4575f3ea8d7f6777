"""Step sizes (issue 10): sharpness at initialisation, the lr warning, and collapse to zero.

The sharpness is checked against the top eigenvalue of a dense Hessian built by
torch autograd (an independent computation), the collapse against a plain numpy
GD loop that looks for the first epoch with every neuron inactive.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from workers.landscape.geometry.datasets import theorem2
from workers.landscape.training import (
    RunSpec,
    SweepCancelled,
    SweepState,
    init_network,
    train_sweep,
)
from workers.landscape.training import native as training_native
from workers.landscape.training.sharpness import hessian_vector_product, lr_warning, sharpness
from workers.landscape.training.state import COLLAPSED, RUNNING

# SCIENCE §8: one point x = (0.6, 0.8, 0), y = 1.5, weight decay 0.1 -> optimum 0.29.
X1, Y1, LAM1, OPT1 = np.array([[0.6, 0.8, 0.0]]), np.array([1.5]), 0.1, 0.29


def dense_hessian(X: np.ndarray, y: np.ndarray, lam: float, W: np.ndarray, a: np.ndarray):
    """The (m (d + 1))^2 Hessian of L at (W, a) by autograd, variables (W row-major, a)."""
    m, d = W.shape
    Xt, yt = torch.tensor(X), torch.tensor(y)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        Wv, av = theta[: m * d].view(m, d), theta[m * d :]
        f = torch.relu(Xt @ Wv.T) @ av
        return ((f - yt) ** 2).mean() + lam * (theta**2).sum()

    theta = torch.cat([torch.tensor(W).flatten(), torch.tensor(a)])
    return torch.autograd.functional.hessian(loss, theta).numpy()


def tiny_problem(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((3, 2)), rng.standard_normal(3)


@pytest.mark.parametrize("seed", range(4))
def test_hessian_vector_product_equals_the_dense_hessian(seed: int) -> None:
    X, y = tiny_problem(seed)
    rng = np.random.default_rng(100 + seed)
    W, a, V, b = (rng.standard_normal(s) for s in ((3, 2), 3, (3, 2), 3))
    H = dense_hessian(X, y, 0.05, W, a)
    HV, Hb = hessian_vector_product(
        *(torch.tensor(t)[None] for t in (W, a, V, b)), torch.tensor(X), torch.tensor(y), 0.05
    )
    expected = H @ np.concatenate([V.ravel(), b])
    got = np.concatenate([HV[0].numpy().ravel(), Hb[0].numpy()])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize("seed", range(6))
def test_sharpness_is_the_top_eigenvalue_of_the_dense_hessian(seed: int) -> None:
    """Width 3, d 2, n 3 at random points, to 1e-6 relative (the Krylov space is
    exhausted after 9 steps, so the value is exact up to rounding)."""
    X, y = tiny_problem(seed)
    rng = np.random.default_rng(200 + seed)
    W, a = rng.standard_normal((2, 3, 2)), rng.standard_normal((2, 3))
    got = sharpness(X, y, 0.05, W, a)
    for r in range(2):
        eigenvalues = np.linalg.eigvalsh(dense_hessian(X, y, 0.05, W[r], a[r]))
        assert got[r] == pytest.approx(eigenvalues[-1], rel=1e-6)


def test_sharpness_finds_the_largest_not_the_largest_in_magnitude() -> None:
    """From a small initialisation the Hessian has eigenvalues near -s as well as +s
    (the a_j-w_j cross terms); power iteration could return either, Lanczos must
    return the top one."""
    X, y = theorem2(4, 1e-3, 0)
    W, a = init_network(4, 5, 1e-3, seed=0)
    eigenvalues = np.linalg.eigvalsh(dense_hessian(X, y, 1e-4, W, a))
    assert eigenvalues[0] < -0.9 * eigenvalues[-1]
    got = sharpness(X, y, 1e-4, W[None], a[None])[0]
    assert got == pytest.approx(eigenvalues[-1], rel=1e-6)


def test_padded_runs_get_the_sharpness_of_their_own_width() -> None:
    """A sweep pads narrower runs with zero neurons; their Hessian block (2λ I) is
    masked out, which matters when 2λ exceeds the run's own top eigenvalue."""
    X, y = tiny_problem(7)
    runs = [RunSpec(2, 1e-3, 0), RunSpec(5, 0.3, 1), RunSpec(1, 1e-2, 2)]
    lam = 5.0  # 2λ = 10 is above every top eigenvalue here
    outcomes = train_sweep(X, y, lam, runs, lr=1e-3, max_epochs=0, optimum=0.0)
    for run, out in zip(runs, outcomes, strict=True):
        W, a = init_network(2, run.width, run.init_scale, run.seed)
        top = np.linalg.eigvalsh(dense_hessian(X, y, lam, W, a))[-1]
        assert out.sharpness_init == pytest.approx(top, rel=1e-6)
        assert out.epoch == 0


def test_warning_appears_exactly_when_lr_exceeds_two_over_sharpness() -> None:
    X, y = theorem2(4, 1e-3, 0)
    runs = [RunSpec(100, 1.0, 0), RunSpec(100, 1e-3, 0)]
    first = train_sweep(X, y, 1e-4, runs, lr=0.05, max_epochs=0, optimum=0.0)
    sharp, small = (o.sharpness_init for o in first)
    assert sharp > 2 / 0.05 > small  # α = 1 is too sharp for lr 0.05, α = 1e-3 is not
    for lr, warned in ((2 / sharp * (1 + 1e-9), True), (2 / sharp * (1 - 1e-9), False)):
        out = train_sweep(X, y, 1e-4, runs, lr=lr, max_epochs=0, optimum=0.0)
        assert out[0].sharpness_init == sharp  # a function of the initial point only
        assert (out[0].lr_warning is not None) is warned
        assert out[1].lr_warning is None
    message = lr_warning(0.05, sharp)
    assert message is not None
    assert message.startswith("lr 0.05 exceeds 2/sharpness = ")
    assert f"{2 / sharp:.3g}" in message and "unstable" in message
    assert lr_warning(2.0, 1.0) is None and lr_warning(2.0 + 1e-12, 1.0) is not None
    assert lr_warning(1.0, float("nan")) is None


def numpy_first_dead_epoch(X, y, lam, lr, W, a, epochs) -> int | None:
    """The first epoch at which every x_k . w_j <= 0, in a plain numpy GD loop."""
    n = X.shape[0]
    for epoch in range(epochs + 1):
        Z = W @ X.T
        if np.all(Z <= 0):
            return epoch
        H = np.maximum(Z, 0.0)
        r = (2.0 / n) * (H.T @ a - y)
        grad_a = H @ r + 2 * lam * a
        grad_W = ((Z > 0) * np.outer(a, r)) @ X + 2 * lam * W
        W, a = W - lr * grad_W, a - lr * grad_a
    return None


@pytest.fixture(params=["native", "compiled", "eager"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    if request.param == "native" and training_native.load_library(4, 4, 100) is None:
        pytest.skip("no C compiler: the native kernel is not available")
    if request.param != "native":
        monkeypatch.setenv("BENIGNITY_TRAINING_NATIVE", "0")
    return {"compiled": request.param != "eager"}


def test_theorem2_collapse_at_lr_005_and_alpha_1_is_caught_early(path: dict[str, Any]) -> None:
    """The measured problem: theorem2 d = 4, λ = 1e-4, lr 0.05, α = 1, width 100. The
    loss jumps to ~1e4-1e5 in the first epochs, every neuron dies by epoch 2-4 (all
    but seed 1), and without the check the runs sit there until max_epochs."""
    X, y = theorem2(4, 1e-3, 0)
    lam, lr, max_epochs = 1e-4, 0.05, 20_000
    runs = [RunSpec(100, 1.0, seed) for seed in range(8)]
    caught = train_sweep(
        X, y, lam, runs, lr=lr, max_epochs=max_epochs, optimum=0.0, stop_on_collapse=True, **path
    )
    for run, out in zip(runs, caught, strict=True):
        W, a = init_network(4, 100, 1.0, run.seed)
        dead = numpy_first_dead_epoch(X, y, lam, lr, W, a, max_epochs)
        assert out.lr_warning is not None and out.sharpness_init > 2 / lr
        if dead is None:  # seed 1 keeps two live neurons
            assert out.status == "not_converged" and out.epoch == max_epochs
            continue
        assert dead <= 4
        assert out.status == "collapsed" and out.epoch == dead
        assert out.curve["epoch"][-1] == dead and out.curve["reg_loss"].max() > 1e3
        assert np.all(out.W @ X.T <= 0)
        assert out.mse == pytest.approx(np.mean(y**2), rel=1e-14)
    assert sum(o.status == "collapsed" for o in caught) == 7
    plain = train_sweep(X, y, lam, runs, lr=lr, max_epochs=max_epochs, optimum=0.0, **path)
    assert {o.status for o in plain} == {"not_converged"}


def test_collapse_is_off_by_default_and_when_weight_decay_steps_flip_signs() -> None:
    """2 lr λ >= 1 makes a dead network's weights change sign or grow, so it is not
    absorbing: an lr 20 run on the one-point data diverges as before."""
    runs = [RunSpec(6, 1.0, 0), RunSpec(4, 2.0, 1)]
    outcomes = train_sweep(
        X1, Y1, LAM1, runs, lr=20.0, max_epochs=2_000, optimum=OPT1, stop_on_collapse=True
    )
    assert {o.status for o in outcomes} == {"diverged"}
    runs = [RunSpec(6, 1e-3, 0)]  # every neuron dies by epoch 23 at lr 0.02
    off = train_sweep(X1, Y1, LAM1, runs, lr=0.02, max_epochs=3_000, optimum=OPT1)
    on = train_sweep(
        X1, Y1, LAM1, runs, lr=0.02, max_epochs=3_000, optimum=OPT1, stop_on_collapse=True
    )
    assert off[0].status == "converged" and off[0].epoch > 1_000  # to the zero network
    assert on[0].status == "collapsed" and on[0].epoch == 23


@pytest.mark.parametrize("engine", ["native", "torch", "sgd"])
def test_resume_keeps_collapsed_runs_stopped(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs collapse at epochs 5 and 23 of the first chunk; a state saved after that
    records them, and resuming gives the uninterrupted sweep's results bitwise."""
    if engine == "native" and training_native.load_library(1, 3, 6) is None:
        pytest.skip("no C compiler: the native kernel is not available")
    if engine != "native":
        monkeypatch.setenv("BENIGNITY_TRAINING_NATIVE", "0")
    runs = [RunSpec(6, 1e-3, 0), RunSpec(6, 1.0, 3), RunSpec(4, 0.5, 5), RunSpec(2, 1.0, 1)]
    settings: dict[str, Any] = dict(
        lr=0.02, max_epochs=3_000, optimum=OPT1, stop_on_collapse=True, compiled=False
    )
    if engine == "sgd":
        settings.update(optimizer="sgd", batch_size=1)
    reference = train_sweep(X1, Y1, LAM1, runs, **settings)
    assert "collapsed" in {o.status for o in reference}
    saved: list[bytes] = []

    def cancel_on_third(state: SweepState, done: int, total: int) -> bool:
        saved.append(state.to_bytes())
        return len(saved) < 3

    with pytest.raises(SweepCancelled):
        train_sweep(
            X1, Y1, LAM1, runs, **settings, checkpoint_every=0.0, on_checkpoint=cancel_on_third
        )
    state = SweepState.from_bytes(saved[-1])
    assert 0 < state.global_epoch < 3_000
    stopped = [i for i, o in enumerate(reference) if o.status == "collapsed"]
    assert all(state.status[i] == COLLAPSED for i in stopped)
    assert RUNNING in state.status
    resumed = train_sweep(X1, Y1, LAM1, runs, **settings, state=state)
    for ref, res in zip(reference, resumed, strict=True):
        assert (ref.status, ref.epoch, ref.reg_loss) == (res.status, res.epoch, res.reg_loss)
        assert ref.sharpness_init == res.sharpness_init
        np.testing.assert_array_equal(ref.W, res.W)
        for key, column in ref.curve.items():
            np.testing.assert_array_equal(column, res.curve[key])


def test_native_and_torch_collapse_at_the_same_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    if training_native.load_library(1, 3, 6) is None:
        pytest.skip("no C compiler: the native kernel is not available")
    runs = [RunSpec(6, 1e-3, 0), RunSpec(6, 1.0, 3), RunSpec(4, 0.5, 5), RunSpec(2, 1.0, 1)]
    settings: dict[str, Any] = dict(lr=0.02, max_epochs=3_000, optimum=OPT1, stop_on_collapse=True)
    native = train_sweep(X1, Y1, LAM1, runs, **settings)
    monkeypatch.setenv("BENIGNITY_TRAINING_NATIVE", "0")
    torch_path = train_sweep(X1, Y1, LAM1, runs, **settings, compiled=False)
    assert [o.status for o in native] == ["collapsed", "collapsed", "not_converged", "collapsed"]
    for nat, ref in zip(native, torch_path, strict=True):
        assert (nat.status, nat.epoch, nat.num_neurons) == (ref.status, ref.epoch, ref.num_neurons)
        np.testing.assert_allclose(nat.W, ref.W, rtol=1e-9, atol=1e-12)
        assert nat.sharpness_init == ref.sharpness_init


def test_short_sweeps_skip_the_sharpness_estimate():
    """Below SHARPNESS_MIN_EPOCHS the Lanczos iteration would be a large share of the work."""
    from workers.landscape.training import SHARPNESS_MIN_EPOCHS

    X, y = np.array([[0.6, 0.8, 0.0]]), np.array([1.5])
    runs = [RunSpec(3, 1.0, 0)]
    short = train_sweep(X, y, 0.1, runs, lr=50.0, max_epochs=10, optimum=0.29)[0]
    assert np.isnan(short.sharpness_init) and short.lr_warning is None
    full = train_sweep(X, y, 0.1, runs, lr=50.0, max_epochs=0, optimum=0.29)[0]
    assert np.isfinite(full.sharpness_init) and full.lr_warning is not None
    assert SHARPNESS_MIN_EPOCHS >= 1000
