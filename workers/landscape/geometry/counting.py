"""Counting activation patterns without the data (SCIENCE §2): Cover's count and the theory's order.

Pure integer arithmetic, so the API process can size a spec (``service.plans``) without
importing the numerical core.
"""

from __future__ import annotations

import math

__all__ = ["cover_count", "theory_bound"]


def cover_count(n: int, rank: int, cap: int | None = None) -> int:
    """Activation patterns of n points in general position in R^rank (Cover's count), exact.

    2^n if rank >= n, else 2 * sum_{i=0}^{rank-1} C(n-1, i). Requires n, rank >= 1.

    With ``cap``, any count above it comes back as cap + 1, after at most about
    sqrt(cap) small integer steps whatever n and rank are (never a huge integer).
    """
    if n < 1 or rank < 1:
        raise ValueError(f"cover_count needs n, rank >= 1, got n={n}, rank={rank}")
    if cap is None:
        return 2**n if rank >= n else 2 * sum(math.comb(n - 1, i) for i in range(rank))
    if rank >= n:
        return 2**n if n < cap.bit_length() else cap + 1
    total, term = 0, 1  # term = C(n - 1, i)
    for i in range(rank):
        total += 2 * term
        if total > cap:
            return cap + 1
        term = term * (n - 1 - i) // (i + 1)
    return total


def theory_bound(n: int, d: int) -> int:
    """The order min(n^d, 2^n) of the pattern count, as an exact Python int."""
    return min(n**d, 2**n)
