"""Batched GD/SGD kernels for two-layer ReLU networks (SCIENCE §1, §6).

All runs of a sweep are stacked along a leading run axis R. Internally the inner
weights are stored transposed, ``W: (R, d, m)``, so that the neuron axis m is the
innermost (contiguous) one: every elementwise op and every reduction then
vectorises over neurons, which is what makes the fused kernels fast for the small
n and d of this project. The outer weights are ``a: (R, m)``.

Every function here is elementwise or reduces within one run, so the numbers of a
run do not depend on which other runs share its batch. The step functions are
plain torch code that runs eagerly or through ``torch.compile``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from workers.landscape.training.curves import cone_codes, gram

Tensor = torch.Tensor

# Steps fused into one call of ``gd_steps``: fewer calls through the
# torch.compile wrapper, whose overhead is comparable to a step of 256 runs.
STEPS_PER_CALL = 4


def evaluate(
    W: Tensor, a: Tensor, X: Tensor, y: Tensor, lam: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Loss, gradient and norms of every run at its current weights.

    Args:
        W: (R, d, m) inner weights, transposed.
        a: (R, m) outer weights.
        X: (n, d) data, shared by all runs, or (R, n, d) per run (mini-batches).
        y: (n,) labels, or (R, n) per run.
        lam: () weight decay.

    Returns:
        ``(mse, loss, grad_norm_sq, param_norm_sq, grad_W, grad_a, Z)``: the
        first four are (R,), ``grad_W`` is (R, d, m), ``grad_a`` is (R, m) and
        ``Z = x_k . w_j`` is (R, n, m). The gradient of relu at 0 is taken as 0.
    """
    n = X.shape[-2]
    Xe = X.unsqueeze(-1)  # (.., n, d, 1)
    Z = (Xe * W.unsqueeze(1)).sum(2)  # (R, n, m)
    H = Z.clamp_min(0.0)
    res = (H * a.unsqueeze(1)).sum(2) - y  # (R, n)
    mse = (res * res).mean(1)
    param_norm_sq = (W * W).sum((1, 2)) + (a * a).sum(1)
    loss = mse + lam * param_norm_sq
    r = (2.0 / n) * res
    grad_a = (H * r.unsqueeze(2)).sum(1) + (2.0 * lam) * a
    G = torch.where(Z > 0, a.unsqueeze(1) * r.unsqueeze(2), 0.0)  # (R, n, m)
    grad_W = (G.unsqueeze(2) * Xe).sum(1) + (2.0 * lam) * W  # (R, d, m)
    grad_norm_sq = (grad_W * grad_W).sum((1, 2)) + (grad_a * grad_a).sum(1)
    return mse, loss, grad_norm_sq, param_norm_sq, grad_W, grad_a, Z


def collapsed(Z: Tensor, enabled: Tensor) -> Tensor:
    """(R,) bool: runs whose network has collapsed, when ``enabled``.

    Every neuron is inactive on every point (``x_k . w_j <= 0`` for all k, j;
    zero neurons included), so f = 0 on the data and the gradient of the data
    term is exactly 0 (relu'(0) = 0). A GD or SGD update then only multiplies
    the weights by ``1 - 2 lr lam``, which keeps every preactivation's sign when
    ``2 lr lam < 1``: the run can never leave the state and decays to the zero
    network. (training.driver.SweepConfig.detects_collapse enables the test
    only then: with ``2 lr lam >= 1`` the weights flip sign or grow instead.)

    Args:
        Z: (R, n, m) preactivations. enabled: () bool.
    """
    return ~(Z > 0).flatten(1).any(1) & enabled


def still_running(
    active: Tensor,
    epoch: Tensor,
    loss: Tensor,
    grad_norm_sq: Tensor,
    dead: Tensor,
    tol: Tensor,
    max_epochs: Tensor,
) -> Tensor:
    """(R,) bool: runs that take another step after being evaluated at ``epoch``.

    A run stops when its loss or gradient is not finite (diverged), when
    ``grad_norm_sq < tol`` (converged), when ``dead`` (collapsed, see
    ``collapsed``) or when ``epoch == max_epochs``; the final status takes them
    in that order of precedence.
    """
    finite = torch.isfinite(loss) & torch.isfinite(grad_norm_sq)
    return active & finite & (grad_norm_sq >= tol) & ~dead & (epoch < max_epochs)


def _gd(
    W: Tensor,
    a: Tensor,
    active: Tensor,
    epoch: Tensor,
    X: Tensor,
    y: Tensor,
    lam: Tensor,
    lr: Tensor,
    tol: Tensor,
    max_epochs: Tensor,
    collapse: Tensor,
) -> tuple[Tensor, ...]:
    mse, loss, gns, pns, gW, ga, Z = evaluate(W, a, X, y, lam)
    dead = collapsed(Z, collapse)
    alive = still_running(active, epoch, loss, gns, dead, tol, max_epochs)
    W_new = torch.where(alive.view(-1, 1, 1), W - lr * gW, W)
    a_new = torch.where(alive.view(-1, 1), a - lr * ga, a)
    return W_new, a_new, alive, epoch + alive.to(epoch.dtype), mse, loss, gns, pns, dead, Z


def gd_step(*args: Tensor) -> tuple[Tensor, ...]:
    """One full-batch GD step of every active run; stopped runs stay frozen.

    Args (positional):
        W: (R, d, m), a: (R, m): weights at each run's ``epoch``.
        active: (R,) bool, runs still training.
        epoch: (R,) int64, updates applied so far.
        X: (n, d), y: (n,): the data.
        lam, lr, tol: () float64 weight decay, learning rate and grad_tol.
        max_epochs: () int64.
        collapse: () bool, whether runs stop as collapsed (see ``collapsed``).

    Returns:
        ``(W, a, active, epoch, mse, loss, grad_norm_sq, param_norm_sq, dead)``:
        the new weights, mask and epochs, and the (R,) metrics at the weights
        passed in (``dead``: bool, see ``collapsed``).
    """
    return _gd(*args)[:9]


def gd_steps(*args: Tensor) -> tuple[Tensor, ...]:
    """``STEPS_PER_CALL`` consecutive ``gd_step`` calls in one kernel.

    Same arguments and outputs as ``gd_step``; the metrics are those of the last
    step. A run that stops in between stays frozen, so its metrics at the last
    step are those at its final epoch.
    """
    state, rest = args[:4], args[4:]
    for _ in range(STEPS_PER_CALL):
        out = _gd(*state, *rest)
        state = out[:4]
    return out[:9]


def gd_step_record(*args: Tensor) -> tuple[Tensor, ...]:
    """``gd_step`` plus, at the weights passed in, what a curve point needs: the
    (R, d, d) Gram matrices and the (R, m, words) cone codes."""
    W, a = args[0], args[1]
    out = _gd(*args)
    return (*out[:9], gram(W), cone_codes(out[9], W, a))


def _full(
    W: Tensor,
    a: Tensor,
    active: Tensor,
    epoch: Tensor,
    X: Tensor,
    y: Tensor,
    lam: Tensor,
    tol: Tensor,
    max_epochs: Tensor,
    collapse: Tensor,
) -> tuple[Tensor, ...]:
    mse, loss, gns, pns, _, _, Z = evaluate(W, a, X, y, lam)
    dead = collapsed(Z, collapse)
    alive = still_running(active, epoch, loss, gns, dead, tol, max_epochs)
    return alive, mse, loss, gns, pns, dead, Z


def full_evaluation(*args: Tensor) -> tuple[Tensor, ...]:
    """Metrics on the full data and the stopping rule, without an update (SGD).

    Args (positional): W, a, active, epoch, X, y, lam, tol, max_epochs, collapse
    (see gd_step).

    Returns:
        ``(alive, mse, loss, grad_norm_sq, param_norm_sq, dead)``, each (R,).
    """
    return _full(*args)[:6]


def full_evaluation_record(*args: Tensor) -> tuple[Tensor, ...]:
    """``full_evaluation`` plus the Gram matrices and cone codes (see gd_step_record)."""
    W, a = args[0], args[1]
    out = _full(*args)
    return (*out[:6], gram(W), cone_codes(out[6], W, a))


def minibatch_update(
    W: Tensor, a: Tensor, alive: Tensor, Xb: Tensor, yb: Tensor, lam: Tensor, lr: Tensor
) -> tuple[Tensor, Tensor]:
    """One SGD update on the mean loss of a per-run mini-batch.

    Args:
        W: (R, d, m), a: (R, m): weights.
        alive: (R,) bool, runs that move.
        Xb: (R, b, d), yb: (R, b): each run's mini-batch.
        lam, lr: () float64.

    Returns:
        The updated ``(W, a)``.
    """
    _, _, _, _, gW, ga, _ = evaluate(W, a, Xb, yb, lam)
    W = torch.where(alive.view(-1, 1, 1), W - lr * gW, W)
    a = torch.where(alive.view(-1, 1), a - lr * ga, a)
    return W, a


class Kernel:
    """A step function run through ``torch.compile``, with an eager fallback.

    The run axis (dim 0 of the leading ``batched`` arguments) is marked dynamic
    so that shrinking the batch does not recompile. Batches are kept at two rows
    or more (see the sweep driver), which avoids the size-1 specialisation. If
    compiling fails (no C++ compiler, no Triton on a GPU, a daemonic worker
    process that cannot spawn compile workers), the kernel warns once and runs
    eagerly: slower, same numbers up to rounding.

    On CPU the generated kernel uses ``cpu_threads`` OpenMP threads (inductor's
    ``cpp.threads``, set for this compilation only; -1: torch's thread count).
    One thread is the default: the kernels are small, and on a machine shared
    with other processes a two-thread parallel region was measured 10-100x
    slower than one thread (the threads wait on each other).

    Args:
        fn: the step function.
        batched: how many leading arguments carry the run axis.
        compiled: False to run eagerly from the start.
        device: where the arguments live.
        cpu_threads: OpenMP threads of a compiled CPU kernel.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        batched: int,
        compiled: bool,
        device: torch.device,
        cpu_threads: int = 1,
    ) -> None:
        self._eager = fn
        self._batched = batched
        self._compiled = compiled
        self._fn: Callable[..., Any] = fn
        self._marked = False
        if compiled:
            options: dict[str, str | int | bool | Callable[..., Any]] | None = None
            if device.type == "cpu":
                options = {"cpp.threads": cpu_threads}
            self._fn = torch.compile(fn, dynamic=False, options=options)

    @property
    def compiled(self) -> bool:
        """Whether calls go through ``torch.compile``."""
        return self._compiled

    def __call__(self, *args: Tensor) -> Any:
        if not self._compiled:
            return self._fn(*args)
        if not self._marked:  # later batch sizes match the symbolic size
            for t in args[: self._batched]:
                torch._dynamo.maybe_mark_dynamic(t, 0)
            self._marked = True
        try:
            return self._fn(*args)
        except Exception as exc:  # any compiler failure: run eagerly
            warnings.warn(
                f"torch.compile failed ({type(exc).__name__}: {exc}); training eagerly",
                RuntimeWarning,
                stacklevel=2,
            )
            self._fn, self._compiled = self._eager, False
            return self._fn(*args)
