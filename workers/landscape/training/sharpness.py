"""Sharpness of the loss at a run's initial point, and the step-size warning (SCIENCE §1, §6).

The sharpness is the largest eigenvalue of the Hessian of
L(W, a) = (1/n) sum_k (f(x_k) - y_k)^2 + λ (||W||_F^2 + ||a||^2), with relu'' = 0
and relu'(0) = 0 (torch's convention, and the gradient's of SCIENCE §6). Gradient
descent on a quadratic with curvature s is stable only for lr < 2 / s, so a run
whose lr exceeds 2 / sharpness at initialisation may blow up in its first epochs.

The Hessian-vector product is closed-form (about two gradient evaluations), batched
over the runs of a sweep in float64, and the largest eigenvalue comes from a
batched Lanczos iteration: unlike power iteration it converges to the largest
*algebraic* eigenvalue (the Hessian at initialisation has negative eigenvalues
about as large as its positive ones, from the a_j-w_j cross terms) and needs few
products. It starts from the unit gradient plus 1% of a random unit vector: the
gradient at initialisation lies mostly in the top of the spectrum (the
Gauss-Newton part J^T r at large α, the cross terms at small α), and measured
on theorem2 data (width 100, d = n = 4, 256 runs) it needs 8 products at α = 0.1
and 1, and 24 at α = 1e-3 and 1e-2, for a relative error of 2e-9 or better,
against 16 and 32-40 from a random start. Lanczos stops when every run's top
Ritz value moved by less than ``rtol`` relative over ``_CHECK_EVERY`` steps (the
value returned is then typically far more accurate than rtol: 1e-11 at α = 1e-3),
at ``max_steps``, or when a run's Krylov space is exhausted (its value is then
exact).

On the CPU the iteration runs in the native kernel (training.native, one run at a
time with its weights in L1, per-run stopping, the top Ritz value by Newton's
method checked with Sturm counts; about 8x faster than the eager torch version on
the bench's 256 runs),
whichever path trains; the batched eager torch version below serves CUDA and
machines without a C compiler. Both give the same values to ~1e-11 relative
(tests/workers/landscape/test_training_sharpness_native.py).

Narrower runs padded with zero neurons are handled exactly: the padding coordinates
are masked out of every Lanczos vector, so each run's value is that of its own width.
"""

from __future__ import annotations

import numpy as np
import torch

from workers.landscape.training.native import load_library, native_sharpness

Tensor = torch.Tensor

__all__ = ["hessian_vector_product", "lr_warning", "sharpness"]

_CHECK_EVERY = 8
# Weight of the random unit vector added to the unit gradient in the Lanczos start.
_RANDOM_SHARE = 0.01
# Elements of the (runs, n, m) intermediates of one block of runs: 512 KiB each on
# the CPU, where cache-sized blocks were measured 15% faster than one block of
# 1024 runs (width 100, n = 4), and 128 MiB on a GPU.
_BLOCK_ELEMENTS = {"cpu": 1 << 16, "cuda": 1 << 24}


def hessian_vector_product(
    W: Tensor, a: Tensor, V: Tensor, b: Tensor, X: Tensor, y: Tensor, lam: float
) -> tuple[Tensor, Tensor]:
    """Hessian of L at (W, a) times the direction (V, b), for every run.

    With z_kj = w_j . x_k, s_kj = 1[z_kj > 0], r_k = f(x_k) - y_k and
    dr_k = sum_j (b_j relu(z_kj) + a_j s_kj v_j . x_k):

        H_a_j = (2/n) sum_k (dr_k relu(z_kj) + r_k s_kj v_j . x_k) + 2λ b_j
        H_w_j = (2/n) sum_k (dr_k a_j + r_k b_j) s_kj x_k + 2λ v_j

    Args:
        W: (R, m, d) inner weights. a: (R, m) outer weights.
        V: (R, m, d), b: (R, m): the direction.
        X: (n, d) data. y: (n,) labels. lam: weight decay λ.

    Returns:
        (HV, Hb): (R, m, d) and (R, m).
    """
    return _product(_point(W, a, X, y), V, b, X, lam)


def _point(W: Tensor, a: Tensor, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """What the products at (W, a) share: relu(z), s a and s r, each (R, n, m)."""
    Z = torch.einsum("kd,rmd->rkm", X, W)
    S = (Z > 0).to(W.dtype)
    H = Z * S
    res = (H * a.unsqueeze(1)).sum(2) - y  # (R, n)
    return H, S * a.unsqueeze(1), S * res.unsqueeze(2)


def _product(
    point: tuple[Tensor, Tensor, Tensor], V: Tensor, b: Tensor, X: Tensor, lam: float
) -> tuple[Tensor, Tensor]:
    H, Sa, Sres = point
    c = 2.0 / X.shape[0]
    dZ = torch.einsum("kd,rmd->rkm", X, V)
    dres = (H * b.unsqueeze(1) + Sa * dZ).sum(2, keepdim=True)  # (R, n, 1)
    Hb = c * (dres * H + Sres * dZ).sum(1) + (2.0 * lam) * b
    coef = dres * Sa + Sres * b.unsqueeze(1)
    HV = c * torch.einsum("rkm,kd->rmd", coef, X) + (2.0 * lam) * V
    return HV, Hb


def sharpness(
    X: np.ndarray,
    y: np.ndarray,
    weight_decay: float,
    W: np.ndarray,
    a: np.ndarray,
    widths: np.ndarray | None = None,
    *,
    device: str | torch.device = "cpu",
    max_steps: int = 48,
    rtol: float = 1e-8,
    seed: int = 0,
) -> np.ndarray:
    """Largest Hessian eigenvalue of L at each run's weights, by batched Lanczos.

    Args:
        X: (n, d) float64 data. y: (n,) float64 labels. weight_decay: λ.
        W: (R, m, d) float64 inner weights. a: (R, m) float64 outer weights.
        widths: (R,) int: run r uses its first widths[r] neurons (the rest is
            padding); None: all m.
        device: where to compute.
        max_steps: Lanczos steps at most (each one Hessian-vector product).
        rtol: relative change of the top Ritz value over ``_CHECK_EVERY`` steps
            at which a run counts as converged.
        seed: of the random part of the start vectors (the result does not
            depend on it to about rtol).

    Returns:
        (R,) float64 sharpness; NaN for a run whose weights are not finite.
    """
    R, m, d = W.shape
    widths = np.full(R, m) if widths is None else np.asarray(widths)
    start = np.random.default_rng(seed).standard_normal((R, m, d + 1))
    kind = torch.device(device).type
    lib = load_library(X.shape[0], d, m, for_training=False) if kind == "cpu" else None
    if lib is not None and R:
        return native_sharpness(
            lib, X, y, weight_decay, W, a, widths, start,
            share=_RANDOM_SHARE, max_steps=max_steps, rtol=rtol, every=_CHECK_EVERY,
        )  # fmt: skip
    return _sharpness_torch((X, y, weight_decay), (W, a), widths, start, device, max_steps, rtol)


def _sharpness_torch(
    problem: tuple[np.ndarray, np.ndarray, float],
    weights: tuple[np.ndarray, np.ndarray],
    widths: np.ndarray,
    start: np.ndarray,
    device: str | torch.device,
    max_steps: int,
    rtol: float,
) -> np.ndarray:
    """``sharpness`` in batched eager torch, blocks of runs (CUDA, or no C compiler):
    problem (X, y, weight_decay), weights (W, a)."""
    (X, y, weight_decay), (W, a) = problem, weights
    R, m, d = W.shape
    elements = _BLOCK_ELEMENTS.get(torch.device(device).type, _BLOCK_ELEMENTS["cuda"])
    block = max(1, elements // max(1, X.shape[0] * m))
    out = np.empty(R)
    for lo in range(0, R, block):
        hi = min(R, lo + block)
        mask = (np.arange(m)[None, :] < widths[lo:hi, None]).astype(np.float64)
        Xt, yt, Wt, at, qt, mt = (
            torch.tensor(t, dtype=torch.float64, device=device)
            for t in (X, y, W[lo:hi], a[lo:hi], start[lo:hi], mask)
        )
        top = _lanczos(Xt, yt, Wt, at, qt, mt, float(weight_decay), max_steps, rtol)
        out[lo:hi] = top.cpu().numpy()
    return out


def _lanczos(
    X: Tensor,
    y: Tensor,
    W: Tensor,
    a: Tensor,
    start: Tensor,
    mask: Tensor,
    lam: float,
    max_steps: int,
    rtol: float,
) -> Tensor:
    """Top Ritz value of each run (see ``sharpness``); vectors are (R, m, d + 1).

    Plain Lanczos (no reorthogonalisation: lost orthogonality only repeats
    converged Ritz values, it never moves the largest one outside the spectrum).
    A run whose Krylov space is exhausted (beta ~ 0) is closed: its later
    diagonal entries repeat its first Rayleigh quotient, which is not above its
    largest Ritz value, and its off-diagonal entries are 0.
    """
    d = W.shape[2]
    point = _point(W, a, X, y)
    mask3 = mask.unsqueeze(2)
    dims = mask.sum(1) * (d + 1)

    def product(q: Tensor) -> Tensor:
        HV, Hb = _product(point, q[..., :d], q[..., d], X, lam)
        return torch.cat([HV, Hb.unsqueeze(2)], dim=2) * mask3

    def dot(u: Tensor, v: Tensor) -> Tensor:
        return (u * v).sum((1, 2))

    def unit(u: Tensor) -> Tensor:
        u = u * mask3
        norm = dot(u, u).sqrt().view(-1, 1, 1)
        return u / torch.where(norm > 0, norm, 1.0)

    q = unit(unit(_gradient(point, W, a, X, lam)) + _RANDOM_SHARE * unit(start))
    q_prev = torch.zeros_like(q)
    beta = torch.zeros(q.shape[0], dtype=q.dtype, device=q.device)
    open_ = torch.ones_like(beta, dtype=torch.bool)
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    scale = torch.zeros_like(beta)
    previous = torch.full_like(beta, torch.inf)
    for step in range(min(max_steps, int(dims.max().item()))):
        v = product(q)
        alpha = dot(q, v)
        alpha = torch.where(open_, alpha, alphas[0]) if alphas else alpha
        v = v - alpha.view(-1, 1, 1) * q - beta.view(-1, 1, 1) * q_prev
        alphas.append(alpha)
        scale = torch.maximum(scale, alpha.abs())
        beta = dot(v, v).sqrt()
        open_ = open_ & (beta > 1e-12 * scale) & (step + 1 < dims)
        beta = torch.where(open_, beta, 0.0)
        betas.append(beta)
        q_prev, q = q, v / torch.where(open_, beta, 1.0).view(-1, 1, 1)
        if not bool(open_.any()):
            break
        if (step + 1) % _CHECK_EVERY == 0:
            top = _top_ritz(alphas, betas)
            if not bool((open_ & ((top - previous).abs() > rtol * top.abs())).any()):
                return top
            previous = top
    return _top_ritz(alphas, betas)


def _gradient(
    point: tuple[Tensor, Tensor, Tensor], W: Tensor, a: Tensor, X: Tensor, lam: float
) -> Tensor:
    """(R, m, d + 1) gradient of L at the point (the Lanczos start, see ``sharpness``)."""
    H, _, Sres = point
    c = 2.0 / X.shape[0]
    ga = c * (Sres * H).sum(1) + (2.0 * lam) * a
    gW = c * torch.einsum("rkm,kd->rmd", Sres * a.unsqueeze(1), X) + (2.0 * lam) * W
    return torch.cat([gW, ga.unsqueeze(2)], dim=2)


def _top_ritz(alphas: list[Tensor], betas: list[Tensor]) -> Tensor:
    """Largest eigenvalue of each run's tridiagonal matrix (alphas, betas[:-1])."""
    T = torch.diag_embed(torch.stack(alphas, 1))
    if len(alphas) > 1:
        off = torch.diag_embed(torch.stack(betas[:-1], 1), offset=1)
        T = T + off + off.transpose(1, 2)
    finite = torch.isfinite(T).all(2).all(1)
    T = torch.where(finite.view(-1, 1, 1), T, 0.0)
    return torch.where(finite, torch.linalg.eigvalsh(T)[:, -1], torch.nan)


def lr_warning(lr: float, sharpness: float) -> str | None:
    """A warning when lr > 2 / sharpness (GD may be unstable from the start), else None."""
    if not (np.isfinite(sharpness) and lr * sharpness > 2.0):
        return None
    return (
        f"lr {lr:g} exceeds 2/sharpness = {2.0 / sharpness:.3g} at initialisation: "
        "gradient descent may be unstable"
    )
