"""Curve points of a training batch while it trains, stored apart from its checkpoint.

At each checkpoint the worker appends the points recorded since the last one, in blocks
of at most RUNS_PER_CHUNK runs, to the ``curve_chunks`` table: each an Arrow IPC stream
(zstd) of the raw points (run, epoch and the six statistics of SCIENCE.md section 6,
float64, bit for bit), with the batch's optimum for the gap column. A running run's
curve is read from the chunks of its block; a resumed batch takes its history back from
them. When the batch finishes, each run's whole curve goes to ``runs.curve`` and its
chunks are dropped.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from service.curves import FIELDS, INT_FIELDS

#: Runs per chunk: a run's curve is read from the chunks of its block only.
RUNS_PER_CHUNK = 1024
#: The raw statistics of a point, in the order a SweepState keeps them.
STATS = ("mse", "reg_loss", "grad_norm_sq", "param_norm_sq", "effective_rank", "num_neurons")
_SCHEMA = pa.schema(
    [pa.field("run", pa.int64()), pa.field("epoch", pa.int64())]
    + [pa.field(name, pa.float64()) for name in STATS]
)
_WRITE = ipc.IpcWriteOptions(compression="zstd")

Points = tuple[np.ndarray, np.ndarray, np.ndarray]


def encode_points(runs: np.ndarray, epochs: np.ndarray, stats: np.ndarray) -> bytes:
    """Points (k,) runs, (k,) epochs, (k, 6) stats as an Arrow IPC stream (zstd)."""
    columns = [pa.array(runs.astype(np.int64)), pa.array(epochs.astype(np.int64))]
    columns += [pa.array(np.ascontiguousarray(stats[:, j], dtype=np.float64)) for j in range(6)]
    sink = io.BytesIO()
    with ipc.new_stream(sink, _SCHEMA, options=_WRITE) as writer:
        writer.write_batch(pa.record_batch(columns, schema=_SCHEMA))
    return sink.getvalue()


def decode_points(blobs: Iterable[bytes]) -> Points:
    """The points of chunks, concatenated in the order given."""
    tables = [ipc.open_stream(pa.py_buffer(b)).read_all() for b in blobs]
    if not tables:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 6))
    table = pa.concat_tables(tables)
    stats = np.column_stack([table[name].to_numpy() for name in STATS]).reshape(-1, 6)
    return table["run"].to_numpy(), table["epoch"].to_numpy(), stats


def chunks(
    points: Points, *, start: int, stop: int, optimum: float, seq: int
) -> list[dict[str, Any]]:
    """Rows of ``curve_chunks`` (without experiment and item) for a batch's new points:
    `start`, `stop` its runs, points' runs counted from `start`; blocks without points
    are left out."""
    runs, epochs, stats = points
    out = []
    for first in range(start, stop, RUNS_PER_CHUNK):
        last = min(first + RUNS_PER_CHUNK, stop)
        mine = (runs >= first - start) & (runs < last - start)
        if not mine.any():
            continue
        data = encode_points(runs[mine] + start, epochs[mine], stats[mine])
        out.append(
            {
                "seq": seq,
                "first_run": first,
                "stop_run": last,
                "points": int(mine.sum()),
                "optimum": float(optimum),
                "data": data,
            }
        )
    return out


def curves_of(points: Points, optimum: float) -> dict[int, dict[str, np.ndarray]]:
    """The curve columns (service.curves.FIELDS) of each run with points, sorted by epoch,
    as the finished run's would read."""
    runs, epochs, stats = points
    order = np.lexsort((epochs, runs))
    runs, epochs, stats = runs[order], epochs[order], stats[order]
    found, starts = np.unique(runs, return_index=True)
    out = {}
    for index, lo, hi in zip(found.tolist(), starts, [*starts[1:], runs.size], strict=True):
        s = stats[lo:hi]
        columns = {
            "epoch": epochs[lo:hi].astype(np.int64),
            "mse": s[:, 0],
            "reg_loss": s[:, 1],
            "grad_norm_sq": s[:, 2],
            "gap": s[:, 1] - optimum,
            "param_norm_sq": s[:, 3],
            "effective_rank": s[:, 4],
            "num_neurons": s[:, 5].astype(np.int64) if np.isfinite(s[:, 5]).all() else s[:, 5],
        }
        out[int(index)] = {name: columns[name] for name in FIELDS}
    return out


def curve_of(index: int, blobs: Iterable[bytes], optimum: float) -> dict[str, np.ndarray]:
    """The curve of run `index` from its block's chunks (empty without points)."""
    runs, epochs, stats = decode_points(blobs)
    mine = runs == index
    found = curves_of((runs[mine], epochs[mine], stats[mine]), optimum)
    return found.get(index) or {
        name: np.zeros(0, np.int64 if name in INT_FIELDS else np.float64) for name in FIELDS
    }


def partial_curves(
    indices: Iterable[int], rows: Iterable[tuple[int, int, float, bytes]]
) -> dict[int, dict[str, np.ndarray]]:
    """The curves of runs `indices` from the chunks `rows` (first_run, stop_run, optimum,
    data) in the order written; each block is decoded once."""
    blocks: dict[tuple[int, int], tuple[float, list[bytes]]] = {}
    for first, stop, optimum, data in rows:
        blocks.setdefault((first, stop), (optimum, []))[1].append(data)
    wanted, out = set(indices), {}
    for (first, stop), (optimum, blobs) in blocks.items():
        if any(first <= i < stop for i in wanted):
            found = curves_of(decode_points(blobs), optimum)
            out.update({i: c for i, c in found.items() if i in wanted})
    return out
