"""Resumable state of a training sweep, serialised as a numpy npz (no pickle).

A checkpoint (``to_bytes(history=False)``) holds the state only, O(runs x width x d):
weights, epochs, status, final statistics and shuffle keys. The curve points are the
sweep's history; the service stores them apart, as they are handed out (``points``),
and gives them back on resume (``with_points``). Its float arrays are byte-shuffled and
zstd-compressed (SCIENCE.md section 6: a resume is bit for bit).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

#: Start of a compressed state (``to_bytes``); a bare npz (older checkpoints) starts "PK".
MAGIC = b"BNSS1"
#: Curve fields of SweepState, left out of a checkpoint.
HISTORY = ("curve_run", "curve_epoch", "curve_stats")

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

    @property
    def num_points(self) -> int:
        """Curve points recorded so far."""
        return int(self.curve_run.size)

    def points(self, since: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The curve points from the `since`-th on, in the order recorded: runs (k,),
        epochs (k,), stats (k, 6)."""
        return self.curve_run[since:], self.curve_epoch[since:], self.curve_stats[since:]

    def with_points(self, runs: np.ndarray, epochs: np.ndarray, stats: np.ndarray) -> SweepState:
        """This state with the curve points before it put back (a checkpoint's history)."""
        return replace(
            self,
            curve_run=np.concatenate([runs.astype(np.int64), self.curve_run]),
            curve_epoch=np.concatenate([epochs.astype(np.int64), self.curve_epoch]),
            curve_stats=np.concatenate([stats.reshape(-1, 6), self.curve_stats], axis=0),
        )

    def to_bytes(self, *, history: bool = True) -> bytes:
        """Serialise: an npz of plain arrays (loadable without pickle), float arrays
        byte-shuffled, zstd-compressed; without `history`, the curve points are left out
        (a checkpoint: ``with_points`` puts them back)."""
        import pyarrow as pa

        buffer = io.BytesIO()
        arrays: dict[str, Any] = {}
        for f in fields(self):
            value = np.asarray(getattr(self, f.name))
            if not history and f.name in HISTORY:
                value = value[:0]
            if value.dtype == np.float64:  # bytes of equal weight together: exponents pack
                arrays[f"{f.name}.shape"] = np.asarray(value.shape, dtype=np.int64)
                value = np.ascontiguousarray(value).view(np.uint8).reshape(-1, 8).T.copy()
            arrays[f.name] = value
        np.savez(buffer, allow_pickle=False, **arrays)
        raw = buffer.getvalue()
        packed = pa.compress(raw, codec="zstd", asbytes=True)
        return MAGIC + struct.pack("<Q", len(raw)) + packed

    @classmethod
    def from_bytes(cls, data: bytes) -> SweepState:
        """Inverse of ``to_bytes``; also reads the bare npz of older checkpoints."""
        if data.startswith(MAGIC):
            import pyarrow as pa

            head = len(MAGIC) + 8
            (size,) = struct.unpack("<Q", data[len(MAGIC) : head])
            data = pa.decompress(data[head:], decompressed_size=size, codec="zstd", asbytes=True)
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            values = {f.name: npz[f.name] for f in fields(cls)}
            for name, value in values.items():
                if f"{name}.shape" in npz.files:
                    shape = tuple(int(k) for k in npz[f"{name}.shape"])
                    values[name] = np.ascontiguousarray(value.T).view(np.float64).reshape(shape)
        values["fingerprint"] = str(values["fingerprint"])
        values["global_epoch"] = int(values["global_epoch"])
        values["next_record"] = int(values["next_record"])
        return cls(**values)
