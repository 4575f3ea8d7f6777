"""One flat row per run of an experiment, written as CSV or Parquet (GET .../export)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from service.models import Run as RunRow


def run_rows(
    kind: str, runs: Sequence[RunRow], *, result: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One flat row per run, for export.

    Args:
        kind: the experiment's kind.
        runs: run rows in grid order (their curves are not read).
        result: the experiment's result; for a census, a width's row fields come
            from it when the run's `final` lacks them.

    Returns:
        Dicts with id, index, status, verdict, then the params (nested keys
        joined with "_"), then `final` as final_<field> for training, or the
        width's row fields (samples, p_global, ...) for a census. A training
        sweep's params add data_seed, weight_decay and lr, each only when the
        spec sweeps it, so those columns appear exactly then; a census over
        data_seeds pools them per width, with `by_data_seed` as one JSON column.
    """
    by_width = {r.get("width"): r for r in (result or {}).get("rows") or []}
    out = []
    for run in runs:
        row: dict[str, Any] = {
            "id": run.id,
            "index": run.index,
            "status": run.status,
            "verdict": run.verdict,
        }
        row.update(_flatten(run.params or {}))
        if kind == "census":
            found = by_width.get((run.params or {}).get("width"), {})
            extra = {k: v for k, v in {**found, **(run.final or {})}.items() if k != "width"}
            row.update({k: v for k, v in _flatten(extra).items() if k not in row})
        else:
            row.update(_flatten(run.final or {}, "final"))
        out.append(row)
    return out


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {"id": None, "index": None, "status": None, "verdict": None}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return repr(value) if isinstance(value, float) else value


def to_csv(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """UTF-8 CSV with a header row; None is an empty cell, floats keep every digit."""
    columns = _columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue().encode()


_KNOWN = {"id": pa.string(), "index": pa.int64(), "status": pa.string(), "verdict": pa.string()}


def _arrow_type(name: str, values: Sequence[Any]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if not present:
        return _KNOWN.get(name, pa.string())
    if all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.float64()
    return pa.string()


def to_parquet(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Parquet (zstd) with one typed column per field; None is null.

    A column's type follows its values: bool, int64, float64 (ints and floats
    mixed), else string (lists and dicts as JSON). A column with no values is
    typed as string, or by its known type (index is int64).
    """
    arrays, fields = [], []
    for name in _columns(rows):
        values = [row.get(name) for row in rows]
        kind = _arrow_type(name, values)
        if kind == pa.string():
            values = [v if v is None or isinstance(v, str) else _text(v) for v in values]
        elif kind == pa.float64():
            values = [None if v is None else float(v) for v in values]
        arrays.append(pa.array(values, type=kind))
        fields.append(pa.field(name, kind))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)
