"""Dataset generators for the landscape experiments (SCIENCE.md section 7).

Every generator returns ``(X, y)`` with ``X`` of shape (n, d) and ``y`` of shape
(n,), both float64, and is deterministic for a given seed: it draws only from
its own ``np.random.default_rng(seed)`` (or, for ``theorem2(..., rng="paper")``,
its own legacy ``np.random.RandomState(seed)``) and never touches a global RNG.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "GENERATORS",
    "THEOREM2_RNGS",
    "build",
    "correlated",
    "custom",
    "orthogonal",
    "teacher",
    "theorem2",
]

#: The perturbation sources of :func:`theorem2`.
THEOREM2_RNGS = ("default", "paper")
#: The legacy generator's seeds are 32-bit: np.random.seed(2**32) raises ValueError.
_LEGACY_SEED_LIMIT = 2**32


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


def teacher_test_points(
    n: int, d: int, teacher_width: int, seed: int, n_test: int, test_seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Fresh N(0, 1) inputs labelled by the teacher of ``teacher(n, d, teacher_width, seed)``.

    The teacher is drawn as there, after the n training inputs from ``default_rng(seed)``;
    the test inputs come from their own stream ``default_rng([test_seed, seed])``, so they
    are fresh even when test_seed == seed.

    Returns:
        X_test: (n_test, d) float64, y_test: (n_test,) float64.
    """
    n, d, teacher_width, n_test = _positive_ints(
        n=n, d=d, teacher_width=teacher_width, n_test=n_test
    )
    rng = np.random.default_rng(seed)
    rng.standard_normal((n, d))  # the training inputs: the teacher comes after them
    X_test = np.random.default_rng([test_seed, seed]).standard_normal((n_test, d))
    return X_test, _teacher_labels(X_test, teacher_width, rng)


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


def correlated(
    n: int, d: int, rho: float, teacher_width: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm inputs with pairwise correlation rho, labelled by a random ReLU teacher.

    X = C Q, where Q (n, d) is the first n rows of the same Haar-random orthogonal
    matrix that :func:`orthogonal` draws from ``default_rng(seed)``, and C is the
    lower Cholesky factor of the target Gram matrix G = (1 - rho) I_n + rho 1 1^T.
    So X X^T = C C^T = G to rounding (about 1e-15): unit rows, x_i . x_j = rho.
    The teacher (as in :func:`teacher`) is drawn after the matrix from the same RNG.
    With rho = 0, C = I exactly, so X and y are bitwise those of
    ``orthogonal(n, d, teacher_width, seed)``. (The law of X does not depend on
    the choice of square root of G: another one is C O with O orthogonal, and O Q
    is again the first n rows of a Haar matrix.)

    Args:
        n: number of points, n <= d.
        d: input dimension.
        rho: pairwise correlation, 0 <= rho < 1 (G is positive definite, so the
            points are linearly independent and have all 2^n patterns).
        teacher_width: teacher width k >= 1.
        seed: non-negative integer seed.

    Returns:
        X: (n, d) float64 with unit rows, y: (n,) float64.

    Raises:
        ValueError: if a size is not a positive integer, d < n, or rho is not in [0, 1).
    """
    n, d, teacher_width = _positive_ints(n=n, d=d, teacher_width=teacher_width)
    if d < n:
        raise ValueError(f"correlated data needs d >= n, got n={n}, d={d}")
    if isinstance(rho, bool) or not isinstance(rho, (int, float, np.integer, np.floating)):
        raise ValueError(f"rho must be a number, got {rho!r}")
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"rho must be in [0, 1), got {rho!r}")
    rng = np.random.default_rng(seed)
    gram = (1.0 - rho) * np.eye(n) + rho * np.ones((n, n))
    X = np.linalg.cholesky(gram) @ _haar_orthogonal(d, rng)[:n]
    return X, _teacher_labels(X, teacher_width, rng)


def _theorem2_noise(d: int, perturbation: float, seed: int, rng: str) -> np.ndarray:
    """The (d, d) N(0, perturbation^2) perturbation of :func:`theorem2`, from its own RNG."""
    if rng == "default":
        return perturbation * np.random.default_rng(seed).standard_normal((d, d))
    if rng == "paper":
        if not 0 <= seed < _LEGACY_SEED_LIMIT:
            raise ValueError(f'rng "paper" needs 0 <= seed < 2**32, got {seed!r}')
        # The legacy Mersenne Twister seeded as np.random.seed(seed) does, then
        # np.random.normal(0, perturbation, (d, d)): the same numbers as the paper's
        # global draw, without touching the process's global state.
        return np.random.RandomState(seed).normal(0.0, perturbation, (d, d))
    raise ValueError(f"rng must be one of {list(THEOREM2_RNGS)}, got {rng!r}")


def theorem2(
    d: int, perturbation: float = 1e-3, seed: int = 0, rng: str = "default"
) -> tuple[np.ndarray, np.ndarray]:
    """The data of the paper's Theorem 2, with n = d points in R^d.

    Points: x1 = e1, x2 = (8/9, -4/9, 1/9, 0, ...), x3 = (8/9, 4/9, 1/9, 0, ...),
    and x_i = (8/9, 0, ..., sqrt(17)/9 at coordinate i, ...) for i >= 4. Each
    gets i.i.d. N(0, perturbation^2) noise, one (d, d) draw added to the (d, d)
    matrix of points, then is renormalised to unit length (norms are 1 to about
    1e-15). Labels are linear, y = X t with t = (4/5, 0, 3/5, 0, ...).

    Args:
        d: dimension, d >= 3; also the number of points.
        perturbation: noise standard deviation, >= 0 (0 gives the exact points).
        seed: non-negative integer seed (below 2**32 for rng "paper").
        rng: where the noise comes from. "default": the service's
            ``perturbation * default_rng(seed).standard_normal((d, d))``.
            "paper": the paper's runs, ``np.random.seed(seed)`` then
            ``np.random.normal(0, perturbation, (d, d))``, reproduced bitwise by a
            private ``np.random.RandomState(seed)`` (the global state is untouched).
            With seed 0, d = 4 and weight_decay 1e-4 its optimum is 1.9734395e-4
            (SCIENCE.md section 8).

    Returns:
        X: (d, d) float64 with unit rows, y: (d,) float64.

    Raises:
        ValueError: if d < 3, perturbation is negative or not finite, rng is
            unknown, or rng is "paper" and seed >= 2**32.
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
    X = X + _theorem2_noise(d, perturbation, seed, rng)
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
    "correlated": (correlated, ("n", "d", "rho"), ("teacher_width", "seed")),
    "theorem2": (theorem2, ("d",), ("perturbation", "seed", "rng")),
    "custom": (custom, ("X", "y"), ()),
}
"""Generator name -> (function, required keys, optional keys)."""


def build(spec: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Build a dataset from its JSON spec.

    Examples of specs: ``{"generator": "teacher", "n": 6, "d": 10,
    "teacher_width": 10, "seed": 0}``, ``{"generator": "correlated", "n": 6, "d": 10,
    "rho": 0.5, "teacher_width": 10, "seed": 0}``, ``{"generator": "theorem2", "d": 4,
    "perturbation": 0.001, "seed": 0, "rng": "paper"}``, ``{"generator": "custom",
    "X": [[...]], "y": [...]}``. Keys that the generator does not take are ignored, except
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
