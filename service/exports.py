"""Exports: one declared Arrow schema per table, and the rows that fill them.

Every table starts with the experiment's columns (``EXPERIMENT_FIELDS``: its id, name,
tags, status and the dataset), then its kind's spec columns, then one row's own columns.
The schemas are module constants: a column's type never depends on the values, so an
export of a running experiment and of a finished one, or of two experiments with other
specs, have equal schemas and ``pa.concat_tables`` joins them without promotion. A value
the row does not have (yet) is null.

Tables (shared/API.md, Exports):

- ``TRAINING``: one row per run of a training sweep (params, status, verdict, ``final_*``,
  ``latest_*``).
- ``CENSUS``: one row per certified cone of a census.
- ``WIDTHS``: one row per census width (pooled over data seeds) and, for a census over
  ``data_seeds``, one more per width and data seed.
- ``OPTIMUM``: one row per neuron of the certified optimal network.
- ``CURVES``: one row per recorded epoch of each run of a training sweep (long format).

Naming: a nested spec field is flattened with "_" (``dataset.n`` -> ``dataset_n``,
``optimizer.name`` -> ``optimizer_name``); the spec's own ``seed`` is ``experiment_seed``
(``seed`` is a run's seed index). Swept spec fields (``weight_decay``, ``optimizer.lr``,
``data_seeds``) are per-row columns holding the row's own value (``weight_decay``, ``lr``,
``data_seed``), so every column is a scalar; ``data_seed`` is the dataset seed the row
used (the dataset's own seed when the spec does not sweep data seeds; null for custom
data). service/arrow_tables.py turns rows into batches of a schema and writes them as
Parquet or as CSV (the same columns, lists as JSON text, null as an empty cell).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from service.arrow_tables import coerce
from service.curves import FIELDS as CURVE_FIELDS
from service.curves import INT_FIELDS as CURVE_INT_FIELDS

Row = dict[str, Any]

_I, _F, _B, _S = pa.int64(), pa.float64(), pa.bool_(), pa.string()


def _fields(*pairs: tuple[str, pa.DataType]) -> list[pa.Field]:
    return [pa.field(name, kind) for name, kind in pairs]


#: The experiment's own columns, first in every table.
EXPERIMENT_FIELDS = [
    pa.field("experiment_id", _S, nullable=False),
    *_fields(
        ("name", _S),
        ("tags", pa.list_(_S)),
        ("experiment_status", _S),
        ("dataset_generator", _S),
        ("dataset_n", _I),
        ("dataset_d", _I),
        ("dataset_seed", _I),
        ("dataset_teacher_width", _I),
        ("dataset_rho", _F),
        ("dataset_perturbation", _F),
        ("dataset_rng", _S),
        ("experiment_seed", _I),
    ),
]
#: The verdict tolerances of census and training specs.
_TOLERANCES = _fields(("tolerance", _F), ("relative_tolerance", _F))

#: A training run's params: its width, init scale, seed index, and its data seed, weight
#: decay and lr (the spec's own where it does not sweep them).
RUN_PARAMS = _fields(
    ("width", _I),
    ("init_scale", _F),
    ("seed", _I),
    ("data_seed", _I),
    ("weight_decay", _F),
    ("lr", _F),
)

#: A training sweep: one row per run. ``weight_decay``, ``lr`` and ``data_seed`` are the
#: run's own; ``final_*`` are the run's final values once its batch is done (workers/jobs.py
#: ``_run_update``); ``latest_*`` its last checkpointed point while it trains.
TRAINING = pa.schema(
    [
        *EXPERIMENT_FIELDS,
        *_fields(
            ("max_epochs", _I),
            ("grad_tol", _F),
            ("log_growth", _F),
            *((f.name, f.type) for f in _TOLERANCES),
            ("optimizer_name", _S),
            ("optimizer_batch_size", _I),
            ("device", _S),
            ("test_points", _I),
            ("seeds", _I),
            ("run_id", _S),
            ("run_index", _I),
            ("status", _S),
            ("verdict", _S),
        ),
        *RUN_PARAMS,
        *_fields(
            ("final_epoch", _I),
            ("final_mse", _F),
            ("final_reg_loss", _F),
            ("final_grad_norm_sq", _F),
            ("final_gap", _F),
            ("final_num_neurons", _I),
            ("final_cone_value", _F),
            ("final_cone_global", _B),
            ("final_projected_verdict", _S),
            ("final_birth_margin", _F),
            ("final_strict", _B),
            ("final_stop", _S),
            ("final_sharpness_init", _F),
            ("final_lr_warning", _S),
            ("final_norm_ratio", _F),
            ("final_test_mse", _F),
            ("latest_epoch", _I),
            ("latest_loss", _F),
            ("latest_gap", _F),
            ("latest_grad_norm_sq", _F),
        ),
    ]
)

#: A census's spec columns, shared by its cone and width tables.
_CENSUS_SPEC = _fields(
    ("weight_decay", _F),
    ("samples_per_width", _I),
    ("sampling", _S),
    *((f.name, f.type) for f in _TOLERANCES),
)

#: A census: one row per certified cone (the /cones items); ``patterns`` are the distinct
#: signed cones' activation patterns as "0"/"1" strings, ``signs`` their signs.
CENSUS = pa.schema(
    [
        *EXPERIMENT_FIELDS,
        *_CENSUS_SPEC,
        *_fields(
            ("width", _I),
            ("sample", _I),
            ("data_seed", _I),
            ("verdict", _S),
            ("value", _F),
            ("gap", _F),
            ("covered", _F),
            ("method", _S),
            ("num_neurons", _I),
            ("polished", _B),
            ("birth_margin", _F),
            ("strict", _B),
            ("stationarity_residual", _F),
            ("patterns", pa.list_(_S)),
            ("signs", pa.list_(_I)),
        ),
    ]
)

#: The shares of a census width row that carry a Wilson 95% interval.
SHARES = ("p_global", "p_spurious", "p_no_local_min", "p_spurious_strict")

#: A census's per-width rows (the result's ``rows``). ``pooled`` is true for the row over
#: all the experiment's data (every data seed); with ``data_seeds``, each width adds one
#: row per data seed (``pooled`` false), with that realisation's ``optimum``. Each share's
#: interval is ``<share>_ci_low`` and ``<share>_ci_high``. Empty until the census succeeds.
WIDTHS = pa.schema(
    [
        *EXPERIMENT_FIELDS,
        *_CENSUS_SPEC,
        *_fields(
            ("width", _I),
            ("data_seed", _I),
            ("pooled", _B),
            ("optimum", _F),
            ("samples", _I),
            *((share, _F) for share in SHARES),
            ("p_covered", _F),
            *((f"{share}_ci_{end}", _F) for share in SHARES for end in ("low", "high")),
        ),
    ]
)

#: An optimum: one row per neuron of the certified optimal network f(x) = sum a relu(w.x),
#: with the network's value (``optimum``) and certificate on every row; ``w_norm`` is
#: ||w||_2 (equal to |a| at the optimum's balanced scaling). No rows until it succeeds.
OPTIMUM = pa.schema(
    [
        *EXPERIMENT_FIELDS,
        *_fields(
            ("weight_decay", _F),
            ("data_seed", _I),
            ("optimum", _F),
            ("certificate_gap_bound", _F),
            ("certificate_max_dual_violation", _F),
            ("method", _S),
            ("num_patterns", _I),
            ("num_signed_cones", _I),
            ("theory_bound", _I),
            ("num_neurons", _I),
            ("neuron", _I),
            ("a", _F),
            ("w", pa.list_(_F)),
            ("w_norm", _F),
        ),
    ]
)

#: Every run's curve of a training sweep, one row per recorded point (the columns of
#: GET .../runs/{run_id}/curve); join with TRAINING on (experiment_id, run_id) for the rest.
CURVES = pa.schema(
    [
        pa.field("experiment_id", _S, nullable=False),
        *_fields(
            ("run_id", _S),
            ("run_index", _I),
        ),
        *RUN_PARAMS,
        *_fields(
            *((name, _I if name in CURVE_INT_FIELDS else _F) for name in CURVE_FIELDS),
        ),
    ]
)

#: The row table of each kind (GET .../export.parquet).
BY_KIND: dict[str, pa.Schema] = {"training": TRAINING, "census": CENSUS, "optimum": OPTIMUM}


# --- the rows ----------------------------------------------------------------------------


def experiment_columns(
    spec: Mapping[str, Any],
    *,
    experiment_id: str,
    name: str | None,
    tags: Sequence[str],
    status: str,
) -> Row:
    """The columns every row of one experiment shares: EXPERIMENT_FIELDS and the spec's
    scalar fields, for any kind (a table keeps the columns its schema has; a swept field's
    value is left to each row)."""
    data = spec.get("dataset") or {}
    columns: Row = {
        "experiment_id": experiment_id,
        "name": name,
        "tags": list(tags),
        "experiment_status": status,
        "experiment_seed": spec.get("seed"),
        **_dataset_columns(data),
    }
    for key in ("tolerance", "relative_tolerance", "samples_per_width", "sampling"):
        columns[key] = spec.get(key)
    for key in ("max_epochs", "grad_tol", "log_growth", "device", "test_points", "seeds"):
        columns[key] = spec.get(key)
    opt = spec.get("optimizer") or {}
    columns["optimizer_name"] = opt.get("name")
    columns["optimizer_batch_size"] = opt.get("batch_size")
    columns["weight_decay"] = _scalar(spec.get("weight_decay"))
    columns["lr"] = _scalar(opt.get("lr"))
    columns["data_seed"] = None if spec.get("data_seeds") else data.get("seed")
    return columns


def _dataset_columns(data: Mapping[str, Any]) -> Row:
    X, generator = data.get("X"), data.get("generator")
    n, d = data.get("n"), data.get("d")
    if generator == "theorem2":  # n = d
        n = d
    elif isinstance(X, list) and X:  # custom data
        n, d = len(X), len(X[0])
    out = {"dataset_generator": generator, "dataset_n": n, "dataset_d": d}
    for key in ("seed", "teacher_width", "rho", "perturbation", "rng"):
        out[f"dataset_{key}"] = data.get(key)
    return out


def _scalar(value: Any) -> Any:
    """A spec value that may be a sweep: the value itself, or None for a list."""
    return None if isinstance(value, list) else value


def training_row(base: Mapping[str, Any], run: Any) -> Row:
    """A run's row: ``base`` (experiment_columns) with its params, final and latest."""
    row: Row = {**base, **(run.params or {}), "run_id": run.id, "run_index": run.index}
    row.update(status=run.status, verdict=run.verdict)
    row.update({f"final_{k}": v for k, v in (run.final or {}).items()})
    row.update({f"latest_{k}": v for k, v in (getattr(run, "latest", None) or {}).items()})
    return row


def cone_row(base: Mapping[str, Any], cone: Any) -> Row:
    """A census cone's row: ``base`` with the cone's columns and its detail."""
    detail = cone.detail or {}
    row: Row = {**base, **detail}
    for key in ("width", "sample", "verdict", "value", "gap", "covered", "method"):
        row[key] = getattr(cone, key)
    if detail.get("data_seed") is not None:
        row["data_seed"] = detail["data_seed"]
    return row


def width_rows(base: Mapping[str, Any], result: Mapping[str, Any] | None) -> list[Row]:
    """A finished census's WIDTHS rows (none before its result)."""
    out = []
    for row in (result or {}).get("rows") or []:
        split = row.get("by_data_seed")
        optimum = None if split else (result or {}).get("optimum")
        pooled = {**base, **_width_fields(row), "pooled": True, "optimum": optimum}
        if split:
            pooled["data_seed"] = None
        out.append(pooled)
        for part in split or []:
            own = {**base, **_width_fields({**part, "width": row["width"]}), "pooled": False}
            out.append(own)
    return out


def _width_fields(row: Mapping[str, Any]) -> Row:
    out = {k: v for k, v in row.items() if k != "by_data_seed" and not k.endswith("_ci")}
    for share in SHARES:
        low, high = row.get(f"{share}_ci") or (None, None)
        out[f"{share}_ci_low"], out[f"{share}_ci_high"] = low, high
    return out


def neuron_rows(base: Mapping[str, Any], result: Mapping[str, Any] | None) -> list[Row]:
    """A certified optimum's OPTIMUM rows, one per neuron (none before its result)."""
    if not result:
        return []
    neurons = result.get("neurons") or []
    cert = result.get("certificate") or {}
    head = {
        **base,
        **{k: result.get(k) for k in ("optimum", "method", "num_patterns", "num_signed_cones")},
        "theory_bound": result.get("theory_bound"),
        "certificate_gap_bound": cert.get("gap_bound"),
        "certificate_max_dual_violation": cert.get("max_dual_violation"),
        "num_neurons": len(neurons),
    }
    for key in ("data_seed", "weight_decay"):
        if result.get(key) is not None:
            head[key] = result[key]
    return [
        {**head, "neuron": i, "a": k["a"], "w": k["w"], "w_norm": math.hypot(*k["w"])}
        for i, k in enumerate(neurons)
    ]


def curve_batch(
    base: Mapping[str, Any], run: Any, columns: Mapping[str, np.ndarray]
) -> pa.RecordBatch:
    """A CURVES batch of one run's curve (columns from ``curves.decode_curve``), with
    ``base`` (experiment_columns) for the params the run does not name; a NaN num_neurons
    (a diverged run's) is null."""
    size = len(columns["epoch"])
    head = {**base, **(run.params or {}), "run_id": run.id, "run_index": run.index}
    arrays = []
    for field in CURVES:
        if field.name in columns:
            values = np.asarray(columns[field.name])
            if field.type == _F or values.dtype.kind != "f":
                arrays.append(pa.array(values, type=field.type))
                continue
            missing = np.isnan(values)  # a count that was not finite
            whole = np.where(missing, 0, values).astype(np.int64)
            arrays.append(pa.array(whole, type=field.type, mask=missing))
        else:
            value = coerce(field.type)(head.get(field.name))
            arrays.append(pa.array([value] * size, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=CURVES)
