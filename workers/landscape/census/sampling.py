"""Drawing the signed cones of a census sample (SCIENCE §5, step 1), and telling them apart."""

from __future__ import annotations

import numpy as np

from ..geometry.patterns import is_feasible

__all__ = ["SAMPLINGS", "distinct_keyed", "sample_cones"]

SAMPLINGS = ("uniform", "random_vector", "rejection")
#: :func:`distinct_keyed` finds the distinct signed cones of n points by a table of their
#: ``2^(n+1)`` bit strings while n + 1 is at most this, else by sorting.
TABLE_BITS = 12


def sample_cones(
    X: np.ndarray,
    m: int,
    sampling: str,
    rng: np.random.Generator,
    *,
    patterns: np.ndarray | None = None,
    max_draws: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the signed cones of m neurons.

    Draw order (fixed, so a seed reproduces a sample): the m signs first, as
    ``rng.integers(0, 2, m)`` mapped to -1/+1; then the patterns:

    - "uniform": ``rng.integers(0, P, m)`` indices into ``patterns``;
    - "random_vector": ``rng.standard_normal((m, d))`` vectors u, pattern ``1[X u > 0]``;
    - "rejection": one ``rng.integers(0, 2, n)`` bit vector at a time, kept when
      ``patterns.is_feasible`` says some u realises it (an LP; answers are cached per call).

    Args:
        X: (n, d) float64 data.
        m: number of neurons, >= 1.
        sampling: "uniform", "random_vector" or "rejection".
        rng: the generator to draw from.
        patterns: (P, n) bool, every pattern of X; required for "uniform".
        max_draws: "rejection" gives up after this many bit vectors (default 1000 m + 10^4).

    Returns:
        (patterns, signs): (m, n) bool and (m,) int8 in {+1, -1}; repeats are kept.

    Raises:
        ValueError: on an unknown sampling, a missing ``patterns`` for "uniform", or when
            "rejection" exhausts ``max_draws``.
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    signs = (2 * rng.integers(0, 2, m) - 1).astype(np.int8)
    if sampling == "uniform":
        if patterns is None:
            raise ValueError("uniform sampling needs the enumerated patterns")
        patterns = np.asarray(patterns, dtype=bool).reshape(-1, n)
        return patterns[rng.integers(0, len(patterns), m)], signs
    if sampling == "random_vector":
        return rng.standard_normal((m, d)) @ X.T > 0, signs
    if sampling == "rejection":
        return _rejection(X, m, rng, max_draws or 1000 * m + 10_000), signs
    raise ValueError(f"unknown sampling {sampling!r}; expected one of {SAMPLINGS}")


def _rejection(X: np.ndarray, m: int, rng: np.random.Generator, max_draws: int) -> np.ndarray:
    """m uniform random bit vectors that are patterns of X, by rejection."""
    n = X.shape[0]
    feasible: dict[bytes, bool] = {}
    kept = np.zeros((m, n), dtype=bool)
    count = 0
    for _ in range(max_draws):
        bits = rng.integers(0, 2, n).astype(bool)
        key = bits.tobytes()
        if key not in feasible:
            feasible[key] = bool(is_feasible(X, bits))
        if feasible[key]:
            kept[count] = bits
            count += 1
            if count == m:
                return kept
    raise ValueError(f"rejection sampling kept {count} of {m} patterns in {max_draws} draws")


def distinct_keyed(
    patterns: np.ndarray, signs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``patterns.distinct_cones`` and the ``cone_keys`` of what it returns, in one pass.

    The packed bits of each signed cone (its key) are sorted as one big-endian integer
    (n < 64) or as fixed-width byte strings (a void view), which orders them as the keys
    compare, without a Python object per drawn cone: at width 640 about 3x less than the
    two calls. With n + 1 <= ``TABLE_BITS`` a table of every bit string replaces the sort.

    Args:
        patterns: (m, n) bool.
        signs: (m,) in {+1, -1}.

    Returns:
        (patterns, signs, keys): (k, n) bool, (k,) int8 and (k,) object array of bytes, the
        distinct signed cones sorted by key.
    """
    patterns = np.asarray(patterns, dtype=bool)
    signs = np.asarray(signs, dtype=np.int8)
    n = patterns.shape[1]
    if n + 1 <= TABLE_BITS:
        first = _first_by_table(patterns, signs)
        packed = np.packbits(
            np.concatenate([patterns[first], (signs[first] > 0)[:, None]], axis=1), axis=1
        )
        width = packed.shape[1]
    else:
        packed = np.packbits(np.concatenate([patterns, (signs > 0)[:, None]], axis=1), axis=1)
        width = packed.shape[1]
        if width <= 8:  # n < 64: one big-endian integer per key, ordered as the bytes are
            padded = np.zeros((len(packed), 8), dtype=np.uint8)
            padded[:, :width] = packed
            rows: np.ndarray = padded.view(">u8").reshape(-1).astype(np.uint64)
        else:
            rows = np.ascontiguousarray(packed).view(np.dtype((np.void, width))).reshape(-1)
        _, first = np.unique(rows, return_index=True)
        packed = packed[first]
    buffer = packed.tobytes()
    keys = np.empty(len(first), dtype=object)
    keys[:] = [buffer[i : i + width] for i in range(0, len(buffer), width)]
    return patterns[first], signs[first], keys


def _first_by_table(patterns: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Indices of one draw of each distinct signed cone, in increasing order of its bits
    read as an integer (pattern bits first, the sign bit last: the order of the keys), by a
    table of the ``2^(n+1)`` possible cones instead of a sort."""
    m, n = patterns.shape
    codes = patterns @ (1 << np.arange(n, 0, -1, dtype=np.int64)) + (signs > 0)
    size = 1 << (n + 1)
    present = np.zeros(size, dtype=bool)
    present[codes] = True
    where = np.empty(size, dtype=np.intp)
    where[codes] = np.arange(m)  # any draw of a cone will do: its rows are equal
    return where[np.nonzero(present)[0]]
