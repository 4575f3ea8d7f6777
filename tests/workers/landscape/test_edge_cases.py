"""Sizes and values at the edge of what the service accepts: large n, n = 1, tiny λ."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from workers.landscape import census, convex
from workers.landscape.geometry import datasets, patterns
from workers.landscape.geometry.network import caratheodory
from workers.landscape.geometry.scaling import MIN_UNIT_WEIGHT_DECAY, Scaling


def test_caratheodory_on_many_points_and_few_neurons_needs_memory_linear_in_n():
    n, d, k = 80_000, 2, 6
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    U = rng.standard_normal((k, d))
    U[3:] = U[:3] * [[2.0], [0.5], [3.0]]  # dependent columns, so there is something to drop
    signs = np.array([1, -1, 1, 1, -1, 1])
    cones = X @ U.T > 0
    cones[:, 3:] = cones[:, :3]
    tracemalloc.start()
    reduced = caratheodory(X, U, cones.T, signs)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * (n * k * 8)  # an (n + 1) x (n + 1) matrix would be 51 GB
    kept = np.linalg.norm(reduced, axis=1) > 0
    assert kept.sum() <= 3

    def terms(V):
        return (cones * signs * (X @ V.T)).sum(axis=1), np.linalg.norm(V, axis=1).sum()

    for before, after in zip(terms(U), terms(reduced), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("d", "seed", "sampling"), [(1, 0, "uniform"), (3, 2, "random_vector")])
def test_a_census_of_one_point_classifies_every_cone(d, seed, sampling):
    X, y = datasets.teacher(1, d, 10, seed)
    every = patterns.enumerate_patterns(X)
    opt = convex.global_optimum(X, y, 0.01, patterns=every)
    records = census.certify_samples(
        X,
        y,
        0.01,
        optimum=opt.value,
        support=(opt.support_patterns, opt.support_signs),
        width=5,
        samples=range(4),
        seed=0,
        sampling=sampling,
        patterns=every,
        num_signed_cones=opt.num_signed_cones,
    )
    assert [r.sample for r in records] == [0, 1, 2, 3]
    assert all(r.value >= opt.value - 1e-9 for r in records)


def test_the_optimum_of_one_point_is_the_closed_form():
    X, y, lam = np.array([[0.6, 0.8, 0.0]]), np.array([1.5]), 0.1
    assert convex.global_optimum(X, y, lam).value == pytest.approx(0.29, rel=1e-7)


def test_a_weight_decay_that_underflows_at_unit_scale_is_refused_with_its_reason():
    X, y = datasets.teacher(6, 10, 10, 0)
    with pytest.raises(ValueError, match="at unit scale"):
        convex.global_optimum(X, y, 5e-324)
    scaling = Scaling.of(X, y)
    smallest = 2 * MIN_UNIT_WEIGHT_DECAY * scaling.x * scaling.y
    assert scaling.data(X, y, smallest)[2] >= MIN_UNIT_WEIGHT_DECAY
