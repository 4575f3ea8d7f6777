"""Resumable state of a training sweep, serialised as a numpy npz (no pickle)."""

from __future__ import annotations

import io
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

RUNNING, CONVERGED, NOT_CONVERGED, DIVERGED, COLLAPSED = 0, 1, 2, 3, 4
STATUS_NAMES = {
    CONVERGED: "converged",
    NOT_CONVERGED: "not_converged",
    DIVERGED: "diverged",
    COLLAPSED: "collapsed",
}


@dataclass
class SweepState:
    """Everything needed to resume a sweep exactly.

    R is the number of runs, m the largest width (narrower runs are padded with
    zero neurons), P the number of curve points so far.

    Attributes:
        fingerprint: the sweep's data and settings; a resume must match it.
        W: (R, m, d) float64 inner weights, at each run's ``epoch``.
        a: (R, m) float64 outer weights.
        widths: (R,) int64.
        epoch: (R,) int64 updates applied to each run.
        status: (R,) int8, ``RUNNING``, ``CONVERGED``, ``NOT_CONVERGED``, ``DIVERGED``
            or ``COLLAPSED`` (stopped at the first epoch where every neuron was
            inactive on all data; see training.kernels.still_running).
        final: (R, 6) float64 statistics at the final epoch (``STAT_COLUMNS`` of
            training.curves); NaN while running.
        shuffle_keys: (R,) uint64 per-run keys of the SGD shuffles. The shuffle of
            an epoch is a function of key and epoch (counter-based), so this is
            the whole RNG state.
        global_epoch: epoch of every run still running.
        next_record: the next epoch that gets a curve point.
        last_point: (R,) int64 epoch of each run's latest curve point (-1: none).
        curve_run: (P,) int64 run index of each curve point.
        curve_epoch: (P,) int64.
        curve_stats: (P, 6) float64 (``STAT_COLUMNS``).
    """

    fingerprint: str
    W: np.ndarray
    a: np.ndarray
    widths: np.ndarray
    epoch: np.ndarray
    status: np.ndarray
    final: np.ndarray
    shuffle_keys: np.ndarray
    global_epoch: int
    next_record: int
    last_point: np.ndarray
    curve_run: np.ndarray
    curve_epoch: np.ndarray
    curve_stats: np.ndarray

    @property
    def runs_done(self) -> int:
        """Number of runs that have stopped."""
        return int(np.count_nonzero(self.status != RUNNING))

    def epochs_done(self, max_epochs: int) -> int:
        """Epochs trained so far over all runs, a run that has stopped counting as
        max_epochs: so the count never falls and ends at R x max_epochs."""
        trained = np.minimum(self.epoch, max_epochs)
        return int(np.where(self.status != RUNNING, max_epochs, trained).sum())

    def add_points(self, runs: np.ndarray, epochs: np.ndarray, stats: np.ndarray) -> None:
        """Append curve points: runs (k,), epochs (k,), stats (k, 6)."""
        if runs.size == 0:
            return
        self.curve_run = np.concatenate([self.curve_run, runs.astype(np.int64)])
        self.curve_epoch = np.concatenate([self.curve_epoch, epochs.astype(np.int64)])
        self.curve_stats = np.concatenate([self.curve_stats, stats], axis=0)
        self.last_point[runs] = epochs

    def to_bytes(self) -> bytes:
        """Serialise to npz bytes (plain arrays only, loadable without pickle)."""
        buffer = io.BytesIO()
        arrays: dict[str, Any] = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        np.savez(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> SweepState:
        """Inverse of ``to_bytes``."""
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            values = {f.name: npz[f.name] for f in fields(cls)}
        values["fingerprint"] = str(values["fingerprint"])
        values["global_epoch"] = int(values["global_epoch"])
        values["next_record"] = int(values["next_record"])
        return cls(**values)
