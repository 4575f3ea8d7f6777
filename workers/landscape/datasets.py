"""Dataset generators for the landscape experiments (SCIENCE.md section 7).

Every generator returns ``(X, y)`` with ``X`` of shape (n, d) and ``y`` of shape
(n,), both float64, and is deterministic for a given seed: it draws only from
its own ``np.random.default_rng(seed)`` and never touches a global RNG.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["GENERATORS", "build", "custom", "orthogonal", "teacher", "theorem2"]


def _positive_ints(**values: Any) -> list[int]:
    """The values as Python ints, in order; ValueError unless each is an integer >= 1."""
    out = []
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        out.append(int(value))
    return out


def _teacher_labels(X: np.ndarray, teacher_width: int, rng: np.random.Generator) -> np.ndarray:
    """Labels of a random ReLU teacher, y = sum_j b_j relu(t_j . x).

    Args:
        X: (n, d) float64 inputs.
        teacher_width: number k of teacher neurons.
        rng: source of t_j ~ N(0, I_d) (drawn first, as a (k, d) array) and
            b_j ~ N(0, 1) (drawn second, shape (k,)).

    Returns:
        (n,) float64 labels.
    """
    T = rng.standard_normal((teacher_width, X.shape[1]))
    b = rng.standard_normal(teacher_width)
    return np.maximum(X @ T.T, 0.0) @ b


def teacher(n: int, d: int, teacher_width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian inputs labelled by a random ReLU teacher.

    X has i.i.d. N(0, 1) entries; then the teacher's t_j ~ N(0, I_d) and
    b_j ~ N(0, 1) are drawn, in that order, from ``default_rng(seed)``.

    Args:
        n: number of points.
        d: input dimension.
        teacher_width: teacher width k >= 1.
        seed: non-negative integer seed.

    Returns:
        X: (n, d) float64, y: (n,) float64.

    Raises:
        ValueError: if a size is not a positive integer.
    """
    n, d, teacher_width = _positive_ints(n=n, d=d, teacher_width=teacher_width)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, _teacher_labels(X, teacher_width, rng)


def _haar_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed (d, d) orthogonal matrix: QR of a Gaussian, R's diagonal made positive."""
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    signs = np.where(np.diag(R) < 0.0, -1.0, 1.0)
    return Q * signs[None, :]


def orthogonal(n: int, d: int, teacher_width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal inputs labelled by a random ReLU teacher.

    The rows of X are the first n rows of a Haar-random d x d orthogonal
    matrix, so X X^T = I_n to rounding (about 1e-15). Labels come from a ReLU
    teacher as in :func:`teacher`, drawn after the matrix from the same RNG.

    Args:
        n: number of points, n <= d.
        d: input dimension.
        teacher_width: teacher width k >= 1.
        seed: non-negative integer seed.

    Returns:
        X: (n, d) float64 with orthonormal rows, y: (n,) float64.

    Raises:
        ValueError: if a size is not a positive integer or d < n.
    """
    n, d, teacher_width = _positive_ints(n=n, d=d, teacher_width=teacher_width)
    if d < n:
        raise ValueError(f"orthogonal data needs d >= n, got n={n}, d={d}")
    rng = np.random.default_rng(seed)
    X = np.ascontiguousarray(_haar_orthogonal(d, rng)[:n])
    return X, _teacher_labels(X, teacher_width, rng)


def theorem2(d: int, perturbation: float = 1e-3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The data of the paper's Theorem 2, with n = d points in R^d.

    Points: x1 = e1, x2 = (8/9, -4/9, 1/9, 0, ...), x3 = (8/9, 4/9, 1/9, 0, ...),
    and x_i = (8/9, 0, ..., sqrt(17)/9 at coordinate i, ...) for i >= 4. Each
    gets i.i.d. N(0, perturbation^2) noise, then is renormalised to unit length
    (norms are 1 to about 1e-15). Labels are linear, y = X t with
    t = (4/5, 0, 3/5, 0, ...).

    Args:
        d: dimension, d >= 3; also the number of points.
        perturbation: noise standard deviation, >= 0 (0 gives the exact points).
        seed: non-negative integer seed.

    Returns:
        X: (d, d) float64 with unit rows, y: (d,) float64.

    Raises:
        ValueError: if d < 3 or perturbation is negative or not finite.
    """
    (d,) = _positive_ints(d=d)
    if d < 3:
        raise ValueError(f"theorem2 data needs d >= 3, got d={d}")
    if not np.isfinite(perturbation) or perturbation < 0:
        raise ValueError(f"perturbation must be finite and >= 0, got {perturbation!r}")
    X = np.zeros((d, d))
    X[0, 0] = 1.0
    X[1, :3] = (8 / 9, -4 / 9, 1 / 9)
    X[2, :3] = (8 / 9, 4 / 9, 1 / 9)
    for i in range(3, d):
        X[i, 0], X[i, i] = 8 / 9, np.sqrt(17.0) / 9
    rng = np.random.default_rng(seed)
    X = X + perturbation * rng.standard_normal((d, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    t = np.zeros(d)
    t[0], t[2] = 4 / 5, 3 / 5
    return X, X @ t


def custom(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate caller-supplied data.

    Args:
        X: array-like of shape (n, d), n >= 1, d >= 1, all finite.
        y: array-like of shape (n,), all finite.

    Returns:
        float64 copies of X (n, d) and y (n,).

    Raises:
        ValueError: on a wrong shape, a non-numeric entry, or a NaN/inf.
    """
    try:
        X_arr = np.array(X, dtype=np.float64)
        y_arr = np.array(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"X and y must be numeric arrays: {exc}") from exc
    if X_arr.ndim != 2 or X_arr.shape[0] < 1 or X_arr.shape[1] < 1:
        raise ValueError(f"X must have shape (n, d) with n, d >= 1, got {X_arr.shape}")
    if y_arr.shape != (X_arr.shape[0],):
        raise ValueError(f"y must have shape ({X_arr.shape[0]},), got {y_arr.shape}")
    if not (np.isfinite(X_arr).all() and np.isfinite(y_arr).all()):
        raise ValueError("X and y must be finite (no NaN or inf)")
    return X_arr, y_arr


GENERATORS: dict[str, tuple[Any, tuple[str, ...], tuple[str, ...]]] = {
    "teacher": (teacher, ("n", "d", "teacher_width", "seed"), ()),
    "orthogonal": (orthogonal, ("n", "d", "teacher_width", "seed"), ()),
    "theorem2": (theorem2, ("d",), ("perturbation", "seed")),
    "custom": (custom, ("X", "y"), ()),
}
"""Generator name -> (function, required keys, optional keys)."""


def build(spec: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Build a dataset from its JSON spec.

    Examples of specs: ``{"generator": "teacher", "n": 6, "d": 10,
    "teacher_width": 10, "seed": 0}``, ``{"generator": "theorem2", "d": 4,
    "perturbation": 0.001, "seed": 0}``, ``{"generator": "custom", "X": [[...]],
    "y": [...]}``. Keys that the generator does not take are ignored, except
    that a theorem2 spec with an ``n`` other than null or d is rejected.
    Optional keys that are missing or null take the generator's defaults.

    Args:
        spec: mapping with a ``generator`` key and that generator's arguments.

    Returns:
        X: (n, d) float64, y: (n,) float64.

    Raises:
        ValueError: on an unknown generator, a missing key, or invalid values.
    """
    name = spec.get("generator")
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; expected one of {sorted(GENERATORS)}")
    func, required, optional = GENERATORS[name]
    missing = [key for key in required if spec.get(key) is None]
    if missing:
        raise ValueError(f"generator {name!r} needs {missing}")
    if name == "theorem2" and spec.get("n") not in (None, spec["d"]):
        raise ValueError(f"theorem2 data has n = d, got n={spec['n']}, d={spec['d']}")
    kwargs = {key: spec[key] for key in required}
    kwargs.update({key: spec[key] for key in optional if spec.get(key) is not None})
    return func(**kwargs)
