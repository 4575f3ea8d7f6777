"""Compact storage of training curves, shared by the workers and the API.

A curve is a set of equal-length columns, one point per recorded epoch
(shared/SCIENCE.md section 6). It is stored in `runs.curve` as an Arrow IPC
stream with zstd compression: float64 values survive bit for bit, `epoch` is
int64, and `num_neurons` is int64 (a non-finite count, which only a diverged
run produces, is stored as null and read back as NaN in a float64 column).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

FIELDS = (
    "epoch",
    "mse",
    "reg_loss",
    "grad_norm_sq",
    "gap",
    "param_norm_sq",
    "effective_rank",
    "num_neurons",
)
INT_FIELDS = frozenset({"epoch", "num_neurons"})
_SCHEMA = pa.schema(
    [pa.field(name, pa.int64() if name in INT_FIELDS else pa.float64()) for name in FIELDS]
)
_WRITE = ipc.IpcWriteOptions(compression="zstd")

Columns = Mapping[str, np.ndarray | Sequence[float]]


def encode_curve(columns: Columns) -> bytes:
    """Pack a curve's columns into a compact binary blob.

    Args:
        columns: every name of FIELDS, each a (T,) array or sequence; epoch must
            hold whole numbers.

    Returns:
        An Arrow IPC stream (zstd), typically a few bytes per point and column.

    Raises:
        ValueError: a column is missing or unknown, lengths differ, or an epoch
            is not a finite whole number.
    """
    missing = [f for f in FIELDS if f not in columns]
    unknown = sorted(set(columns) - set(FIELDS))
    if missing or unknown:
        raise ValueError(f"curve columns: missing {missing}, unknown {unknown}")
    lengths = {name: len(columns[name]) for name in FIELDS}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"curve columns differ in length: {lengths}")
    arrays = [_arrow_column(name, columns[name]) for name in FIELDS]
    sink = io.BytesIO()
    with ipc.new_stream(sink, _SCHEMA, options=_WRITE) as writer:
        writer.write_batch(pa.record_batch(arrays, schema=_SCHEMA))
    return sink.getvalue()


def _arrow_column(name: str, values: np.ndarray | Sequence[float]) -> pa.Array:
    data = np.asarray(values, dtype=np.float64 if name not in INT_FIELDS else None)
    if name not in INT_FIELDS:
        return pa.array(data, type=pa.float64())
    if data.dtype.kind in "iub":
        return pa.array(data.astype(np.int64), type=pa.int64())
    floats = data.astype(np.float64)
    finite = np.isfinite(floats)
    if np.any(finite & (floats != np.round(floats))):
        raise ValueError(f"curve column {name} holds values that are not whole numbers")
    if name == "epoch" and not finite.all():
        raise ValueError("curve column epoch holds non-finite values")
    ints = np.where(finite, floats, 0).astype(np.int64)
    return pa.array(ints, type=pa.int64(), mask=~finite)


def decode_curve(blob: bytes) -> dict[str, np.ndarray]:
    """Inverse of encode_curve.

    Args:
        blob: bytes written by encode_curve.

    Returns:
        The columns in FIELDS order, each (T,): float64, and int64 for epoch and
        num_neurons (float64 with NaN where a count was not finite).
    """
    table = ipc.open_stream(pa.py_buffer(blob)).read_all()
    out: dict[str, np.ndarray] = {}
    for name in FIELDS:
        column = table.column(name)
        if column.null_count:
            out[name] = column.to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            out[name] = column.to_numpy().copy()
    return out


def downsample(columns: Mapping[str, np.ndarray], max_points: int) -> dict[str, np.ndarray]:
    """At most `max_points` points of a curve, evenly spread in log-epoch.

    The first and last points are always kept. The others are the points
    nearest to `max_points` targets evenly spaced in log(1 + epoch), so epoch 0
    counts; where targets crowd onto one point (the dense early epochs), it is
    kept once, so fewer than `max_points` may come back.

    Args:
        columns: (T,) arrays with an `epoch` column, increasing.
        max_points: at least 2.

    Returns:
        The same columns, each (k,) with k <= min(T, max_points).

    Raises:
        ValueError: when max_points < 2.
    """
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    epoch = np.asarray(columns["epoch"], dtype=np.float64)
    size = len(epoch)
    if size <= max_points:
        return {name: np.asarray(col) for name, col in columns.items()}
    logs = np.log1p(np.maximum(epoch, 0.0))
    targets = np.linspace(logs[0], logs[-1], max_points)
    right = np.clip(np.searchsorted(logs, targets), 1, size - 1)
    nearer_left = (targets - logs[right - 1]) <= (logs[right] - targets)
    index = np.unique(np.concatenate([[0, size - 1], np.where(nearer_left, right - 1, right)]))
    return {name: np.asarray(col)[index] for name, col in columns.items()}
