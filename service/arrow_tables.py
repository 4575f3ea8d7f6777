"""Rows as Arrow batches of a declared schema, written as Parquet or CSV.

A value is converted to its column's type, never the column to its values: a row that
lacks a column gets null, and a value that does not fit (a fraction in an int64 column)
is an error rather than a silently changed type or a truncated number.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq


def batch(schema: pa.Schema, rows: Sequence[Mapping[str, Any]]) -> pa.RecordBatch:
    """Rows as a batch of exactly ``schema``: missing keys are null, other keys are dropped,
    and each value is converted to its column's type.

    Raises:
        ValueError: a value does not fit its column (a fraction in an int64 column, text in
            a float64 one): the declared schema and the stored rows disagree.
    """
    arrays = []
    for field in schema:
        convert = coerce(field.type)
        try:
            values = [convert(row.get(field.name)) for row in rows]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"export column {field.name} ({field.type}): {exc}") from exc
        arrays.append(pa.array(values, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def coerce(kind: pa.DataType) -> Callable[[Any], Any]:
    """The converter of a value to a column of type ``kind`` (int64, double, bool, string
    or lists of them); None stays None."""
    if pa.types.is_list(kind):
        item = coerce(kind.value_type)
        return lambda v: None if v is None else [item(x) for x in v]
    return _SCALARS[str(kind)]


def _to_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not float(value).is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


def _to_float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool | str):
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def _to_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"{value!r} is not true or false")


def _to_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


_SCALARS: dict[str, Callable[[Any], Any]] = {
    "int64": _to_int,
    "double": _to_float,
    "bool": _to_bool,
    "string": _to_str,
}


# --- files -------------------------------------------------------------------------------


def write_parquet(schema: pa.Schema, batches: Iterable[pa.RecordBatch], sink: IO[bytes]) -> None:
    """Parquet (zstd) of ``schema``, one row group per batch; with no batches, a file with
    the schema and no rows."""
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for part in batches:
            if part.num_rows:
                writer.write_batch(part)


def write_csv(schema: pa.Schema, batches: Iterable[pa.RecordBatch], sink: IO[bytes]) -> None:
    """UTF-8 CSV with the schema's names as header: null is an empty cell, floats keep
    every digit (repr), booleans are true/false, lists are JSON."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(schema.names)
    for part in batches:
        columns = [_csv_cells(part.column(i)) for i in range(part.num_columns)]
        writer.writerows(zip(*columns, strict=True))
        sink.write(buf.getvalue().encode())
        buf.seek(0)
        buf.truncate()
    sink.write(buf.getvalue().encode())


def _csv_cells(column: pa.Array) -> Iterator[str]:
    for value in column.to_pylist():
        yield _cell(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


WRITERS = {"parquet": write_parquet, "csv": write_csv}
