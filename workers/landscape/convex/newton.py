"""Newton's method for the restricted program on fixed faces (used by :mod:`convex.polish`).

On fixed faces and a fixed support, the restricted program in the coordinates z_i of each
row's face is ``min (1/n) ||sum_i A_i z_i - y||^2 + 2 λ sum_i ||z_i||``: convex, and smooth
while every z_i != 0, so Newton converges quadratically from the interior point.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .small import lstsq

__all__ = ["MAX_STEPS", "NULL_SPACE_CACHE", "FaceObjective", "null_space"]

#: Newton steps per solve.
MAX_STEPS = 30


class FaceObjective:
    """``f(z) = (1/n) ||sum_i A_i z_i - y||^2 + 2 λ sum_i ||z_i||`` and its Newton minimiser.

    Args:
        blocks: the A_i, each (n, f_i) float64.
        y: (n,) float64 labels.
        lam: λ.
    """

    def __init__(self, blocks: list[np.ndarray], y: np.ndarray, lam: float) -> None:
        sizes = [b.shape[1] for b in blocks]
        self.A = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(y), 0))
        self.cuts = np.cumsum(sizes)[:-1]
        self.block = np.repeat(np.arange(len(sizes)), sizes)  # block of each coordinate
        self.same = self.block[:, None] == self.block[None, :]
        self.y, self.lam, self.n = y, lam, len(y)
        self.gram = (2.0 / self.n) * (self.A.T @ self.A)
        #: The size of the gradient's terms, ``2 λ + (2/n) ||A^T y||``.
        Aty = self.A.T @ y
        self.scale = 2.0 * lam + (2.0 / self.n) * math.sqrt(float(Aty @ Aty))

    def split(self, z: np.ndarray) -> list[np.ndarray]:
        """The blocks of the stacked z (views, as ``np.split(z, self.cuts)``)."""
        edges = [0, *self.cuts.tolist(), len(z)]
        return [z[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def norms(self, z: np.ndarray) -> np.ndarray:
        """(p,) the norms of the blocks of the stacked z."""
        return np.sqrt(np.bincount(self.block, weights=z * z, minlength=len(self.cuts) + 1))

    def value(self, z: np.ndarray) -> float:
        """f at the stacked z."""
        err = self.A @ z - self.y
        return float(err @ err) / self.n + 2.0 * self.lam * float(self.norms(z).sum())

    def derivatives(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(gradient, Hessian) at the stacked z, or None when a block is zero.

        Each block adds ``2 λ z_i / ||z_i||`` to the gradient and
        ``(2 λ / ||z_i||) (I - z_i z_i^T / ||z_i||^2)`` to its diagonal block of the Hessian.
        """
        norms = self.norms(z)
        if (norms == 0.0).any():
            return None
        spread = norms[self.block]
        unit = z / spread
        weight = 2.0 * self.lam / spread
        grad = (2.0 / self.n) * (self.A.T @ (self.A @ z - self.y)) + 2.0 * self.lam * unit
        root = unit * np.sqrt(weight)
        hess = self.gram + np.diag(weight) - self.same * (root[:, None] * root[None, :])
        return grad, hess

    def minimise(self, start: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
        """Newton from the blocks ``start``: (blocks, gradient norm; inf at a zero block).

        Steps are damped by a line search on f until the Newton decrement is below
        ``1e-12 max(1, f)``, then full; it stops when the gradient reaches rounding
        (``1e-16`` times ``scale``), stops decreasing in the full-step phase, or the line
        search finds no decrease. The point of smallest gradient is returned.
        """
        if not start:
            return [], 0.0
        z = np.concatenate(start)
        best_norm, best, local = math.inf, z, False
        for _ in range(MAX_STEPS):
            found = self.derivatives(z)
            if found is None:
                return self.split(z), math.inf
            grad, hess = found
            gradient_norm = math.sqrt(grad @ grad)
            if gradient_norm >= best_norm and local:  # rounding floor
                break
            if gradient_norm < best_norm:
                best_norm, best = gradient_norm, z
            if gradient_norm <= 1e-16 * self.scale:
                break
            step = -lstsq(hess, grad, 1e-14)
            decrement = -float(grad @ step)
            local = decrement <= 1e-12 * max(1.0, abs(self.value(z)))
            moved = z + step if local else self._line_search(z, step, decrement)
            if moved is None:
                break
            z = moved
        return self.split(best), best_norm

    def _line_search(self, z: np.ndarray, step: np.ndarray, decrement: float):
        """Backtracking (Armijo, with room for rounding in f); None when nothing decreases f."""
        f0 = self.value(z)
        slack = 1e-15 * max(1.0, abs(f0))
        t = 1.0
        for _ in range(40):
            trial = z + t * step
            if self.value(trial) <= f0 - 1e-4 * t * decrement + slack:
                return trial
            t *= 0.5
        return None


def null_space(M: np.ndarray, *, complement: bool = False) -> np.ndarray:
    """(r, f) orthonormal basis of the null space of M (m, r), or of its row space when
    ``complement``; singular values up to ``1e-12 max(m, r) s_max`` count as zero.

    Cached by M's bytes (``NULL_SPACE_CACHE`` entries): a census polishes many cones of
    one dataset, whose rows share the same few faces. The basis is read-only.
    """
    M = np.ascontiguousarray(M, dtype=np.float64)
    return _null_space(M.shape, M.tobytes(), complement)


#: Bases :func:`null_space` keeps (least recently used dropped first).
NULL_SPACE_CACHE = 4096


@functools.lru_cache(maxsize=NULL_SPACE_CACHE)
def _null_space(shape: tuple[int, ...], data: bytes, complement: bool) -> np.ndarray:
    M = np.frombuffer(data, dtype=np.float64).reshape(shape)
    r = M.shape[1]
    if M.shape[0] == 0:
        basis = np.zeros((r, 0)) if complement else np.eye(r)
    else:
        _, sv, Vt = np.linalg.svd(M)
        rank = int(np.sum(sv > 1e-12 * max(M.shape) * sv[0])) if sv.size and sv[0] > 0 else 0
        basis = Vt[:rank].T if complement else Vt[rank:].T
    basis.flags.writeable = False
    return basis
