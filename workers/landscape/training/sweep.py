"""Batched training sweeps of two-layer ReLU networks with weight decay (SCIENCE §1, §6).

A sweep trains many runs (width, init_scale, seed) on one dataset as one batched
computation. Full-batch GD on the CPU runs on a small C kernel (training.native,
compiled with the system C compiler at first use) that takes each run through a
chunk of epochs with exact per-run stopping and the curve statistics computed in
place. Otherwise (SGD, CUDA, no C compiler, or ``compiled=False``) it is one
tensor program (training.driver): every step updates all runs still training,
runs that stop are frozen by a mask and dropped from the batch at the next chunk
boundary; the step is a hand-fused closed-form forward/backward pass
(training.kernels) compiled with ``torch.compile``, or eager.

With ``stop_on_collapse``, both paths stop a run as "collapsed" at the first
epoch where every neuron is inactive on all data (training.kernels.collapsed):
the data term's gradient is then exactly 0 and GD only shrinks the weights
towards the zero network, so the rest of the run would be wasted. Each run
also gets the sharpness of L at its initial point (training.sharpness) and a
warning when lr > 2 / sharpness.

Loss: L(W, a) = (1/n) sum_k (f(x_k) - y_k)^2 + weight_decay (||W||_F^2 + ||a||^2).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workers.landscape.training.curves import CURVE_COLUMNS, assemble_curves
from workers.landscape.training.driver import Sweep, SweepConfig
from workers.landscape.training.native import NativeSweep, load_library, supported
from workers.landscape.training.sharpness import lr_warning, sharpness
from workers.landscape.training.state import RUNNING, STATUS_NAMES, SweepState

__all__ = [
    "CURVE_COLUMNS",
    "RunOutcome",
    "RunSpec",
    "SweepCancelled",
    "SweepState",
    "init_network",
    "resolve_device",
    "train_sweep",
]


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its width, initial scale α and per-run seed."""

    width: int
    init_scale: float
    seed: int


@dataclass(frozen=True)
class RunOutcome:
    """The end of one run.

    Attributes:
        status: "converged" | "not_converged" | "diverged" | "collapsed"
            (every neuron inactive on all data, so the run can only decay to the
            zero network; it stops at the first such epoch).
        epoch: updates applied when it stopped (for "collapsed": the epoch at
            which it collapsed).
        mse, reg_loss, grad_norm_sq, gap: at the final epoch (gap = reg_loss - optimum).
        num_neurons: distinct signed cones among neurons with |a_j| ||w_j|| > 1e-6.
        W: (width, d) float64 final inner weights.
        a: (width,) float64 final outer weights.
        curve: columns ``CURVE_COLUMNS``, each (points,); epoch and num_neurons int64.
        sharpness_init: largest eigenvalue of the Hessian of L at the initial
            point (full data; NaN if not finite).
        lr_warning: a sentence when lr > 2 / sharpness_init, else None.
    """

    status: str
    epoch: int
    mse: float
    reg_loss: float
    grad_norm_sq: float
    gap: float
    num_neurons: int
    W: np.ndarray
    a: np.ndarray
    curve: dict[str, np.ndarray]
    sharpness_init: float
    lr_warning: str | None


class SweepCancelled(Exception):
    """Raised when ``on_checkpoint`` returns False; the state it got is resumable."""


def init_network(d: int, width: int, init_scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced Gaussian initialisation (SCIENCE §6), from numpy alone.

    W_jk ~ N(0, init_scale^2) i.i.d., a_j = s_j ||w_j|| with s_j uniform in {+1, -1}.

    Returns:
        W: (width, d) float64 and a: (width,) float64, a function of the
        arguments only (not of the device).
    """
    rng = np.random.default_rng(seed)
    W = rng.normal(0.0, init_scale, size=(width, d))
    signs = 2.0 * rng.integers(0, 2, size=width) - 1.0
    return W, signs * np.linalg.norm(W, axis=1)


def resolve_device(device: str, *, allow_cuda: bool) -> str:
    """Map a spec's device to a torch device string.

    "auto" gives "cuda" when ``allow_cuda`` and CUDA is available, else "cpu".
    An explicit CUDA device raises ValueError when CUDA is not allowed or absent.
    """
    if device == "auto":
        return "cuda" if allow_cuda and torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not (allow_cuda and torch.cuda.is_available()):
        raise ValueError(f"device {device!r} requested but CUDA is not allowed or not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}")
    return device


def train_sweep(
    X: np.ndarray,
    y: np.ndarray,
    weight_decay: float,
    runs: Sequence[RunSpec],
    *,
    optimizer: str = "gd",
    lr: float,
    batch_size: int | None = None,
    max_epochs: int,
    grad_tol: float = 1e-16,
    log_growth: float = 1.01,
    optimum: float,
    device: str = "cpu",
    state: SweepState | None = None,
    checkpoint_every: float = 30.0,
    on_checkpoint: Callable[[SweepState, int, int], bool] | None = None,
    compiled: bool = True,
    cpu_threads: int = 1,
    stop_on_collapse: bool = False,
) -> list[RunOutcome]:
    """Train all runs together with full-batch GD or mini-batch SGD, in float64.

    Each run stops at the first epoch where ||grad L||^2 < grad_tol (converged),
    where L or the gradient is not finite (diverged), where every neuron is
    inactive on all data (collapsed; only with ``stop_on_collapse`` and when
    2 lr weight_decay < 1), or at max_epochs, with that precedence. Curve
    points are taken at epoch 0, then whenever epoch >= previous * log_growth
    and >= previous + 1, and at each run's final epoch.

    Args:
        X: (n, d) data. y: (n,) labels.
        weight_decay: λ > 0.
        runs: the runs; narrower widths are padded with zero neurons, which stay 0.
        optimizer: "gd" or "sgd" (per-run shuffles, batches of batch_size, the
            last one smaller when batch_size does not divide n).
        lr: learning rate. max_epochs: epochs allowed.
        grad_tol: convergence threshold on ||grad L||^2 (full data).
        log_growth: curve spacing factor (> 1).
        optimum: the global optimum, for the gap.
        device: "cpu", "cuda[:k]" or "auto" (CUDA when available).
        state: a state from ``on_checkpoint`` to resume from; the result is
            identical to an uninterrupted sweep (bitwise for gd on one device).
        checkpoint_every: seconds of wall time between ``on_checkpoint`` calls.
        on_checkpoint: called as (state, runs_done, runs_total) every
            checkpoint_every seconds and at the end; returning False cancels.
        compiled: use compiled kernels: the native C kernel for GD on the CPU
            (environment BENIGNITY_TRAINING_NATIVE=0 disables it), else
            torch.compile (falls back to eager with a warning when compiling
            fails). False: eager torch.
        cpu_threads: threads of the CPU kernels (the native kernel splits the
            runs over threads; torch.compile gets inductor's cpp.threads for
            this compilation only; -1: torch's thread count). One suits a
            worker with one process per core or a shared machine.
        stop_on_collapse: stop a run, with status "collapsed", at the first
            epoch where x_k . w_j <= 0 for every point and neuron. From there GD
            can only shrink the weights by 1 - 2 lr weight_decay per epoch (the
            data term's gradient is exactly 0), so the run would sit until
            max_epochs or converge, after up to ~log(grad_tol)/(4 lr
            weight_decay) epochs, to the zero network. Not part of the state's
            fingerprint: a state resumes under either setting (runs already
            stopped keep their status).

    Returns:
        One RunOutcome per run, in the order of ``runs``.

    Raises:
        SweepCancelled: when on_checkpoint returns False.
        ValueError: for bad arguments or a state from another sweep.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    config = SweepConfig(
        weight_decay=float(weight_decay),
        optimizer=optimizer,
        lr=float(lr),
        batch_size=batch_size,
        max_epochs=int(max_epochs),
        grad_tol=float(grad_tol),
        log_growth=float(log_growth),
        stop_on_collapse=bool(stop_on_collapse),
    )
    _validate(X, y, runs, config)
    fingerprint = _fingerprint(X, y, runs, config)
    fresh = state is None
    if state is None:
        state = _initial_state(*_initial_weights(X.shape[1], runs), runs, fingerprint)
    elif state.fingerprint != fingerprint:
        raise ValueError("the state belongs to another sweep (data, runs or settings differ)")
    dev = torch.device(resolve_device(device, allow_cuda=True) if device == "auto" else device)
    sharp = _initial_sharpness(X, y, config, runs, state if fresh else None, dev)
    sweep: Sweep | NativeSweep
    lib = None
    if compiled and supported(X.shape[0], optimizer, dev):
        lib = load_library(X.shape[0], X.shape[1], state.W.shape[1])
    if lib is not None:
        sweep = NativeSweep(lib, X, y, state, config, cpu_threads=cpu_threads)
    else:
        sweep = Sweep(X, y, state, config, dev, compiled=compiled, cpu_threads=cpu_threads)
    last = time.monotonic()
    while sweep.has_running():
        sweep.advance_chunk()
        if on_checkpoint is not None and time.monotonic() - last >= checkpoint_every:
            _checkpoint(sweep, on_checkpoint)
            last = time.monotonic()
    if on_checkpoint is not None:
        _checkpoint(sweep, on_checkpoint)
    return _outcomes(state, runs, optimum, sharp, config.lr)


def _checkpoint(
    sweep: Sweep | NativeSweep, callback: Callable[[SweepState, int, int], bool]
) -> None:
    state = sweep.sync_state()
    if callback(state, state.runs_done, len(state.status)) is False:
        raise SweepCancelled(f"cancelled at epoch {state.global_epoch}")


def _validate(X: np.ndarray, y: np.ndarray, runs: Sequence[RunSpec], config: SweepConfig) -> None:
    if X.ndim != 2 or y.shape != (X.shape[0],) or X.shape[0] < 1:
        raise ValueError(f"X must be (n, d) and y (n,); got {X.shape} and {y.shape}")
    if not runs or any(r.width < 1 or not r.init_scale > 0 for r in runs):
        raise ValueError("runs must be non-empty, with width >= 1 and init_scale > 0")
    if config.optimizer not in ("gd", "sgd"):
        raise ValueError(f"optimizer must be 'gd' or 'sgd', got {config.optimizer!r}")
    if config.optimizer == "sgd" and not (config.batch_size and config.batch_size >= 1):
        raise ValueError("sgd needs batch_size >= 1")
    if not (config.lr > 0 and config.max_epochs >= 0 and config.log_growth > 1):
        raise ValueError("need lr > 0, max_epochs >= 0 and log_growth > 1")


def _fingerprint(X: np.ndarray, y: np.ndarray, runs: Sequence[RunSpec], config: SweepConfig) -> str:
    digest = hashlib.sha256(X.tobytes() + y.tobytes()).hexdigest()
    settings = {k: v for k, v in config.__dict__.items() if k != "stop_on_collapse"}
    spec = {
        "data": [list(X.shape), digest],
        "config": settings,
        "runs": [[r.width, float(r.init_scale), int(r.seed)] for r in runs],
    }
    return json.dumps(spec, sort_keys=True)


def _initial_weights(d: int, runs: Sequence[RunSpec]) -> tuple[np.ndarray, np.ndarray]:
    """(R, m, d) and (R, m) initial weights, narrower runs padded with zero neurons."""
    m = max(r.width for r in runs)
    W = np.zeros((len(runs), m, d))
    a = np.zeros((len(runs), m))
    for i, r in enumerate(runs):
        W[i, : r.width], a[i, : r.width] = init_network(d, r.width, r.init_scale, r.seed)
    return W, a


#: Sweeps allowed fewer epochs than this get no sharpness estimate (NaN, no lr warning).
SHARPNESS_MIN_EPOCHS = 2000


def _initial_sharpness(
    X: np.ndarray,
    y: np.ndarray,
    config: SweepConfig,
    runs: Sequence[RunSpec],
    fresh: SweepState | None,
    device: torch.device,
) -> np.ndarray:
    """(R,) sharpness of L at each run's initial point: from a fresh state's weights,
    or from the initialisation rebuilt (a resumed state holds later weights).

    NaN for every run when the sweep allows 1 to SHARPNESS_MIN_EPOCHS epochs: the
    Lanczos iteration costs up to about 100 epochs' worth of gradients, which must stay a
    small share of the sweep (a 255-epoch sweep of 64 runs of width 20,000 spent 9 s in
    it before training started)."""
    if 0 < config.max_epochs < SHARPNESS_MIN_EPOCHS:  # (0 epochs: the initial point only)
        return np.full(len(runs), np.nan)
    if fresh is not None:
        W, a = fresh.W, fresh.a
    else:
        W, a = _initial_weights(X.shape[1], runs)
    widths = np.array([r.width for r in runs])
    return sharpness(X, y, config.weight_decay, W, a, widths, device=device)


def _initial_state(
    W: np.ndarray, a: np.ndarray, runs: Sequence[RunSpec], fingerprint: str
) -> SweepState:
    seeds = np.array([r.seed for r in runs], dtype=np.int64)  # negative seeds wrap
    return SweepState(
        fingerprint=fingerprint,
        W=W,
        a=a,
        widths=np.array([r.width for r in runs], dtype=np.int64),
        epoch=np.zeros(len(runs), dtype=np.int64),
        status=np.full(len(runs), RUNNING, dtype=np.int8),
        final=np.full((len(runs), 6), np.nan),
        shuffle_keys=seeds.astype(np.uint64),
        global_epoch=0,
        next_record=0,
        last_point=np.full(len(runs), -1, dtype=np.int64),
        curve_run=np.zeros(0, dtype=np.int64),
        curve_epoch=np.zeros(0, dtype=np.int64),
        curve_stats=np.zeros((0, 6)),
    )


def _outcomes(
    state: SweepState, runs: Sequence[RunSpec], optimum: float, sharp: np.ndarray, lr: float
) -> list[RunOutcome]:
    curves = assemble_curves(
        state.curve_run, state.curve_epoch, state.curve_stats, len(runs), optimum
    )
    outcomes = []
    for i, r in enumerate(runs):
        mse, reg_loss, gns, _, _, neurons = state.final[i]
        outcomes.append(
            RunOutcome(
                status=STATUS_NAMES[int(state.status[i])],
                epoch=int(state.epoch[i]),
                mse=float(mse),
                reg_loss=float(reg_loss),
                grad_norm_sq=float(gns),
                gap=float(reg_loss - optimum),
                num_neurons=int(neurons),
                W=state.W[i, : r.width].copy(),
                a=state.a[i, : r.width].copy(),
                curve=curves[i],
                sharpness_init=float(sharp[i]),
                lr_warning=lr_warning(lr, float(sharp[i])),
            )
        )
    return outcomes
