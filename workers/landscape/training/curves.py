"""Curve points of training runs: spacing rule and per-point statistics (SCIENCE §6).

A curve point has, in this column order, ``CURVE_COLUMNS``. Points are kept as
flat arrays (one row per point, with the run index alongside) until a sweep ends.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..geometry.network import ACTIVE_NEURON_THRESHOLD as NEURON_THRESHOLD

Tensor = torch.Tensor

CURVE_COLUMNS = (
    "epoch",
    "mse",
    "reg_loss",
    "grad_norm_sq",
    "gap",
    "param_norm_sq",
    "effective_rank",
    "num_neurons",
)
# Columns of the stored statistics: CURVE_COLUMNS without epoch and gap.
STAT_COLUMNS = ("mse", "reg_loss", "grad_norm_sq", "param_norm_sq", "effective_rank", "num_neurons")

_BITS_PER_WORD = 52
_TABLE_BITS = 10
# Largest k = min(d, m) whose Gram matrix is a broadcast reduction (see gram).
_BROADCAST_GRAM = 8


def next_record_epoch(previous: int, log_growth: float) -> int:
    """The first epoch recorded after ``previous``.

    The rule: record ``epoch`` when ``epoch >= previous * log_growth`` and
    ``epoch >= previous + 1`` (the product is evaluated in float64).
    """
    return max(previous + 1, math.ceil(previous * log_growth))


def gram(W: Tensor) -> Tensor:
    """(R, k, k) Gram matrices of the (R, d, m) transposed inner weights, k = min(d, m):
    ``W Wᵀ`` when d <= m, else ``Wᵀ W`` (the same non-zero eigenvalues), O(m d k) each.

    For k <= 8 it is written as a broadcast reduction rather than a bmm so that it
    fuses into the compiled kernels (a bmm is an external call with its own
    threading); larger ones use bmm, which needs no (R, d, k, k) intermediate.
    """
    d, m = W.shape[-2:]
    if min(d, m) > _BROADCAST_GRAM:
        return W @ W.transpose(-1, -2) if d <= m else W.transpose(-1, -2) @ W
    if d <= m:
        return (W.unsqueeze(1) * W.unsqueeze(2)).sum(3)
    return (W.unsqueeze(2) * W.unsqueeze(3)).sum(1)


def effective_rank(grams: Tensor) -> Tensor:
    """exp of the entropy of the normalised singular values of each run's W.

    The singular values are the square roots of the eigenvalues of the k×k Gram
    matrix (see ``gram``; LAPACK's symmetric eigensolver, batched; singular values
    below ~1e-8 of the largest are lost, which changes the entropy by less than
    ~1e-7). A zero W has effective rank 0, a non-finite W gives NaN.

    Args:
        grams: (..., k, k) Gram matrices (see ``gram``).

    Returns:
        (...,) float64.
    """
    finite = torch.isfinite(grams).all(-1).all(-1)
    grams = torch.where(finite[..., None, None], grams, 0.0)
    sigma = torch.linalg.eigvalsh(grams).clamp_min(0.0).sqrt()
    total = sigma.sum(-1, keepdim=True)
    p = sigma / torch.where(total > 0, total, 1.0)
    entropy = -(torch.where(p > 0, p * torch.log(torch.where(p > 0, p, 1.0)), 0.0)).sum(-1)
    rank = torch.where(total.squeeze(-1) > 0, torch.exp(entropy), 0.0)
    return torch.where(finite, rank, torch.nan)


def cone_codes(Z: Tensor, W: Tensor, a: Tensor) -> Tensor:
    """Integer codes of the signed cones of the neurons, -1 for negligible neurons.

    Bit k < n of neuron j is ``1[x_k . w_j > 0]`` and bit n is ``1[a_j < 0]``; the
    n + 1 bits are packed into float64 words of 52 bits (exact integers). A neuron
    is negligible when ``|a_j| ||w_j|| <= 1e-6``.

    Args:
        Z: (R, n, m) pre-activations ``x_k . w_j``.
        W: (R, d, m) inner weights, transposed.
        a: (R, m) outer weights.

    Returns:
        (R, m, words) float64, words = ceil((n + 1) / 52).
    """
    big = a * a * (W * W).sum(1) > NEURON_THRESHOLD**2  # (R, m)
    n = Z.shape[1]
    if n < _BITS_PER_WORD:  # one word, written out: fuses into the step kernel
        code = torch.where(a < 0, 2.0**n, 0.0)
        for k in range(n):
            code = code + torch.where(Z[:, k] > 0, 2.0**k, 0.0)
        return torch.where(big, code, -1.0).unsqueeze(2)
    bits = torch.cat([Z > 0, (a < 0).unsqueeze(1)], dim=1).to(W.dtype)  # (R, n+1, m)
    words = []
    for start in range(0, n + 1, _BITS_PER_WORD):
        chunk = bits[:, start : start + _BITS_PER_WORD]
        powers = torch.exp2(torch.arange(chunk.shape[1], device=W.device, dtype=W.dtype))
        words.append(torch.where(big, (chunk * powers.view(1, -1, 1)).sum(1), -1.0))
    return torch.stack(words, dim=2)


def count_cones(codes: Tensor, n_bits: int) -> Tensor:
    """Number of distinct codes >= 0 in each row (see ``cone_codes``).

    With at most 10 bits the codes are marked in a table of all 2^n_bits values;
    otherwise they are counted by a lexicographic sort per row. Exact.

    Args:
        codes: (B, m, words) float64.
        n_bits: n + 1.

    Returns:
        (B,) float64 counts.
    """
    B, m, _ = codes.shape
    if n_bits <= _TABLE_BITS:
        index = torch.where(codes[:, :, 0] >= 0, codes[:, :, 0], 2.0**n_bits).to(torch.int64)
        table = torch.zeros((B, 2**n_bits + 1), dtype=torch.bool, device=codes.device)
        table.scatter_(1, index, True)
        return table[:, :-1].sum(1).to(codes.dtype)
    order = torch.sort(codes[:, :, -1], dim=1, stable=True).indices
    for w in reversed(range(codes.shape[2] - 1)):
        key = codes[:, :, w].gather(1, order)
        order = order.gather(1, torch.sort(key, dim=1, stable=True).indices)
    ranked = codes.gather(1, order.unsqueeze(2).expand_as(codes))
    distinct = 1 + (ranked[:, 1:] != ranked[:, :-1]).any(2).sum(1)
    return (distinct - (codes[:, :, 0] < 0).any(1).to(distinct.dtype)).to(codes.dtype)


def num_neurons(W: Tensor, a: Tensor, X: Tensor) -> Tensor:
    """Distinct signed cones among the neurons with ``|a_j| ||w_j|| > 1e-6``.

    Args:
        W: (R, d, m) inner weights, transposed.
        a: (R, m) outer weights.
        X: (n, d) data.

    Returns:
        (R,) float64 counts.
    """
    return count_cones(cone_codes(X @ W, W, a), X.shape[0] + 1)


def point_stats(
    W: Tensor, a: Tensor, X: Tensor, metrics: tuple[Tensor, Tensor, Tensor, Tensor]
) -> Tensor:
    """Stack the statistics of one curve point, columns ``STAT_COLUMNS``.

    Args:
        W: (R, d, m), a: (R, m): the weights the metrics were computed at.
        X: (n, d) data.
        metrics: (mse, reg_loss, grad_norm_sq, param_norm_sq), each (R,).

    Returns:
        (R, 6) float64.
    """
    return torch.stack([*metrics, effective_rank(gram(W)), num_neurons(W, a, X)], dim=1)


def shuffle_permutations(keys: np.ndarray, epoch: int, n: int) -> np.ndarray:
    """Per-run permutations of range(n) for one SGD epoch, counter-based.

    Each run's shuffle is a function of its key and the epoch only (sort by a
    splitmix64 hash of key, epoch and index), so resuming needs no RNG state
    beyond the epoch.

    Args:
        keys: (R,) uint64 per-run keys.
        epoch: the epoch being shuffled.
        n: number of data points.

    Returns:
        (R, n) int64 permutations.
    """
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64)[:, None] * np.uint64(0x9E3779B97F4A7C15)
        z = z + np.uint64(epoch) * np.uint64(0xD1B54A32D192ED03)
        z = z + np.arange(n, dtype=np.uint64)[None, :] * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return np.argsort(z, axis=1, kind="stable").astype(np.int64)


def assemble_curves(
    runs: np.ndarray, epochs: np.ndarray, stats: np.ndarray, num_runs: int, optimum: float
) -> list[dict[str, np.ndarray]]:
    """Split flat curve points into one dict of columns per run, sorted by epoch.

    Args:
        runs: (P,) int64 run index of each point.
        epochs: (P,) int64.
        stats: (P, 6) float64, columns ``STAT_COLUMNS``.
        num_runs: R.
        optimum: the global optimum, for the gap column.

    Returns:
        R dicts keyed by ``CURVE_COLUMNS``; epoch and num_neurons are int64.
    """
    order = np.lexsort((epochs, runs))
    bounds = np.searchsorted(runs[order], np.arange(num_runs + 1))
    curves = []
    for r in range(num_runs):
        idx = order[bounds[r] : bounds[r + 1]]
        s = stats[idx]
        curves.append(
            {
                "epoch": epochs[idx].astype(np.int64),
                "mse": s[:, 0].copy(),
                "reg_loss": s[:, 1].copy(),
                "grad_norm_sq": s[:, 2].copy(),
                "gap": s[:, 1] - optimum,
                "param_norm_sq": s[:, 3].copy(),
                "effective_rank": s[:, 4].copy(),
                "num_neurons": s[:, 5].astype(np.int64),
            }
        )
    return curves
