"""Compact curve storage: exact round trips and log-epoch downsampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.curves import FIELDS, decode_curve, downsample, encode_curve


def log_epochs(last: int, growth: float = 1.01) -> np.ndarray:
    """Epoch 0, then the SCIENCE.md section 6 rule, then the final epoch."""
    epochs = [0]
    while epochs[-1] < last:
        epochs.append(min(last, max(epochs[-1] + 1, math.ceil(epochs[-1] * growth))))
    return np.array(epochs, dtype=np.int64)


def make_curve(epochs: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    size = len(epochs)
    cols = {
        name: rng.standard_normal(size) * 10.0 ** rng.integers(-300, 300, size) for name in FIELDS
    }
    cols["epoch"] = epochs
    cols["num_neurons"] = rng.integers(0, 1000, size)
    return cols


def test_round_trip_is_bit_exact_with_integer_columns():
    cols = make_curve(log_epochs(10**9))
    cols["mse"][:4] = [np.nan, np.inf, -np.inf, 5e-324]  # non-finite and subnormal survive
    cols["gap"][0] = -0.0
    blob = encode_curve(cols)
    out = decode_curve(blob)
    assert list(out) == list(FIELDS)
    for name in FIELDS:
        assert out[name].dtype == (np.int64 if name in ("epoch", "num_neurons") else np.float64)
        assert out[name].tobytes() == np.asarray(cols[name], dtype=out[name].dtype).tobytes()
    assert len(blob) < 8 * len(FIELDS) * len(cols["epoch"]) + 4096


def test_round_trip_accepts_lists_and_whole_floats():
    cols = {name: [0.5, 1.5, 2.5] for name in FIELDS}
    cols["epoch"], cols["num_neurons"] = [0.0, 1.0, 2.0], [3.0, 2.0, 1.0]
    out = decode_curve(encode_curve(cols))
    assert out["epoch"].tolist() == [0, 1, 2] and out["num_neurons"].tolist() == [3, 2, 1]
    assert out["mse"].tolist() == [0.5, 1.5, 2.5]


def test_non_finite_neuron_count_reads_back_as_nan():
    cols = {name: np.ones(3) for name in FIELDS}
    cols["epoch"] = np.arange(3)
    cols["num_neurons"] = np.array([4.0, np.nan, 2.0])
    out = decode_curve(encode_curve(cols))
    assert out["num_neurons"].dtype == np.float64
    assert np.isnan(out["num_neurons"][1]) and out["num_neurons"][[0, 2]].tolist() == [4.0, 2.0]


def test_empty_curve_round_trips():
    out = decode_curve(encode_curve({name: [] for name in FIELDS}))
    assert all(len(col) == 0 for col in out.values())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("gap"), "missing ['gap']"),
        (lambda c: c.update(extra=c["mse"]), "unknown ['extra']"),
        (lambda c: c.update(mse=c["mse"][:-1]), "differ in length"),
        (lambda c: c.update(epoch=c["epoch"] + 0.5), "whole numbers"),
        (lambda c: c.update(epoch=np.where(c["epoch"] == 0, np.nan, c["epoch"])), "non-finite"),
    ],
)
def test_encode_rejects_malformed_columns(change, message):
    cols = {
        name: np.asarray(col, dtype=np.float64) for name, col in make_curve(log_epochs(50)).items()
    }
    change(cols)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        encode_curve(cols)


@pytest.mark.parametrize("max_points", [2, 3, 10, 57, 200])
def test_downsample_keeps_ends_and_at_most_max_points(max_points):
    cols = make_curve(log_epochs(10**8))
    out = downsample(cols, max_points)
    epochs = out["epoch"]
    assert 2 <= len(epochs) <= max_points
    assert epochs[0] == 0 and epochs[-1] == 10**8
    assert np.all(np.diff(epochs) > 0)
    rows = np.searchsorted(cols["epoch"], epochs)  # every column is cut at the same points
    for name in FIELDS:
        assert np.array_equal(out[name], cols[name][rows], equal_nan=True)


def test_downsample_spreads_points_evenly_in_log_epoch():
    cols = make_curve(log_epochs(10**8))
    epochs = downsample(cols, 60)["epoch"].astype(float)
    assert len(epochs) >= 50  # only the dense early epochs collapse
    steps = np.diff(np.log1p(epochs))[5:]
    ideal = np.log1p(1e8) / 59
    assert np.all(steps < 2.5 * ideal) and np.all(steps > 0.4 * ideal)


def test_downsample_returns_short_curves_whole_and_checks_max_points():
    cols = make_curve(log_epochs(20))
    out = downsample(cols, 1000)
    assert all(np.array_equal(out[k], cols[k]) for k in FIELDS)
    with pytest.raises(ValueError, match="at least 2"):
        downsample(cols, 1)
