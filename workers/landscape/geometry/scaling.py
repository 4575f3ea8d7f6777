"""Solving at unit scale: every program sees data of unit size, whatever the user sent.

The loss of SCIENCE §1 is homogeneous. With ``X = s X̂`` and ``y = c ŷ``,

    L(X, y, λ; W, a) = c² L(X̂, ŷ, λ̂; Ŵ, â),   λ̂ = λ / (s c),   (W, a) = k (Ŵ, â),  k = sqrt(c / s),

since ``relu(X W^T) a = s k² relu(X̂ Ŵ^T) â = c relu(X̂ Ŵ^T) â`` and ``λ k² = c² λ̂``. The
activation patterns and signed cones are the same for both. So a program on (X, y, λ) is
solved on (X̂, ŷ, λ̂) and its answer mapped back: values by c², weights by k, the signed-cone
variables ``u = |a| w`` by k² = c / s, dual quantities (``X^T r`` against ``2 λ``) by s c, and
gradients of L by c² / k.

The solvers' tolerances (Clarabel's, the polish's, the stationarity test's) are absolute
numbers chosen for data of unit size; on (X̂, ŷ, λ̂) they hold whatever the units of the
user's data. Without this, y scaled by 1e-4 moved the optimum of teacher (30, 3) by 1.9e-5
relative, and y and λ scaled by 1e-3 turned non-stationary census cones into "spurious".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MIN_UNIT_WEIGHT_DECAY",
    "RELATIVE_TOLERANCE",
    "SCALE_FLOOR",
    "Scaling",
    "loss_scale",
    "loss_tolerance",
]

#: The smallest positive λ̂ the solvers take: far above float64's smallest normal number
#: (2.2e-308), so that 2 λ̂, 1 / λ̂ and the certificate's ratios stay finite.
MIN_UNIT_WEIGHT_DECAY = 1e-290


@dataclass(frozen=True)
class Scaling:
    """The sizes s (largest ``||x_k||``) and c (root mean square of y) of one dataset.

    Attributes:
        x: s, or 1 when X is zero.
        y: c, or 1 when y is zero.
    """

    x: float
    y: float

    @classmethod
    def of(cls, X: np.ndarray, y: np.ndarray) -> Scaling:
        """The scaling that brings X and y to unit size."""
        s = float(np.linalg.norm(X, axis=1).max(initial=0.0))
        c = float(np.sqrt(np.mean(np.square(y)))) if np.size(y) else 0.0
        return cls(s if s > 0 else 1.0, c if c > 0 else 1.0)

    def data(
        self, X: np.ndarray, y: np.ndarray, weight_decay: float
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """(X̂, ŷ, λ̂): the same problem at unit size.

        Raises:
            ValueError: when λ > 0 but λ̂ is below ``MIN_UNIT_WEIGHT_DECAY`` (it would
                underflow, and 1 / λ̂ or the dual certificate would not be finite).
        """
        unit = weight_decay / self.x / self.y
        if weight_decay > 0 and unit < MIN_UNIT_WEIGHT_DECAY:
            raise ValueError(
                f"weight_decay {weight_decay:g} is {unit:g} at unit scale "
                f"(/ max ||x|| {self.x:g} / rms(y) {self.y:g}), below {MIN_UNIT_WEIGHT_DECAY:g}"
            )
        return X / self.x, y / self.y, unit

    @property
    def value(self) -> float:
        """Loss values: L = value * L̂."""
        return self.y**2

    @property
    def weights(self) -> float:
        """Network weights: (W, a) = weights * (Ŵ, â)."""
        return math.sqrt(self.y / self.x)

    @property
    def cone(self) -> float:
        """Signed-cone variables: u = cone * û."""
        return self.y / self.x

    @property
    def dual(self) -> float:
        """Dual quantities: X^T r and 2 λ = dual * (their hat values)."""
        return self.x * self.y

    @property
    def gradient(self) -> float:
        """Gradients of L: grad = gradient * grad̂."""
        return self.y**2 / self.weights


#: The default of ``relative_tolerance`` (shared/API.md, "Tolerances").
RELATIVE_TOLERANCE = 1e-7
#: The loss scale is at least this times mean(y²) (the loss of the zero network). Restricted
#: programs are solved to Clarabel's 1e-10 at unit scale, where mean(y²) = 1: cones holding a
#: global minimum were measured up to 2.4e-11 above the optimum there (theorem2 d = 5 and 6,
#: λ = 1e-5, whose optimum is 3.5e-5 mean(y²)), which 1e-7 times the optimum alone (3.5e-12)
#: would call not global. With the floor, 1e-7 times the scale is at least 1e-10 mean(y²).
SCALE_FLOOR = 1e-3


def loss_scale(optimum: float, X: np.ndarray, y: np.ndarray, weight_decay: float) -> float:
    """The scale of loss differences that relative tolerances multiply.

    ``max(optimum, SCALE_FLOOR mean(y²))``: the global optimum, floored because it can be a
    tiny fraction of mean(y²) when λ is small (then solver noise, about 1e-10 mean(y²), would
    exceed a tolerance relative to the optimum). Both terms scale as c² when y and λ are
    multiplied by c, as L does. When y is zero (so is the optimum) it is ``(λ / max ||x_k||)²``,
    which scales the same way.

    Args:
        optimum: the certified global optimum, in the units of y².
        X: (n, d) float64 data.
        y: (n,) float64 labels.
        weight_decay: λ > 0.
    """
    y = np.asarray(y, dtype=np.float64)
    scale = max(float(optimum), SCALE_FLOOR * float(np.mean(y * y)))
    if scale > 0:
        return scale
    return (weight_decay / Scaling.of(np.asarray(X, dtype=np.float64), y).x) ** 2


def loss_tolerance(
    optimum: float,
    X: np.ndarray,
    y: np.ndarray,
    weight_decay: float,
    *,
    tolerance: float | None = None,
    relative_tolerance: float = RELATIVE_TOLERANCE,
) -> float:
    """The absolute tolerance on loss differences that verdicts use, in the units of y².

    An explicit ``tolerance`` is used as it is (stored specs keep their absolute meaning);
    otherwise ``relative_tolerance * loss_scale(optimum, X, y, weight_decay)``.
    """
    if tolerance is not None:
        return float(tolerance)
    return float(relative_tolerance) * loss_scale(optimum, X, y, weight_decay)
