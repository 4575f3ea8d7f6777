"""The `benignity` commands that fetch files: a run's curve, a figure, exports."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli_common import DEFAULT_URL, DataFmt, Id, Out, Token, Url, connect, err


def curve(
    experiment_id: Id,
    run_id: Annotated[str, typer.Argument(help="A run id, or a unique prefix of one.")],
    max_points: Annotated[int | None, typer.Option(min=2, help="Downsample in log-epoch.")] = None,
    fmt: Annotated[DataFmt | None, typer.Option("--format", help="csv or json.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write.")] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """A run's curve (epoch, mse, reg_loss, gap, ...), printed or written as CSV or JSON."""
    chosen = fmt or (DataFmt(output.suffix[1:]) if output and output.suffix == ".json" else None)
    chosen = chosen or DataFmt.csv
    with connect(url, token) as client:
        exp_id = client.resolve(experiment_id)
        rid = client.resolve_run(exp_id, run_id)
        if chosen == DataFmt.csv:
            body = client.curve_csv(exp_id, rid, max_points=max_points)
        else:
            body = json.dumps(client.curve(exp_id, rid, max_points=max_points)).encode() + b"\n"
    _write(body, output)


def _write(body: bytes, output: Path | None) -> None:
    if output is None or str(output) == "-":
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
        return
    output.write_bytes(body)
    err.print(f"wrote {output} ({len(body)} bytes)", highlight=False, soft_wrap=True)


def _suffix(output: Path, allowed: tuple[str, ...], fmt: str | None) -> str:
    chosen = fmt or output.suffix.lstrip(".").lower()
    if chosen not in allowed:
        raise typer.BadParameter(
            f"name a .{' or .'.join(allowed)} file, or give --format", param_hint="--output"
        )
    return chosen


def figure(
    experiment_id: Id,
    output: Out,
    fmt: Annotated[str | None, typer.Option("--format", help="png or svg.")] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Write an experiment's figure (census or training) as PNG or SVG."""
    chosen = _suffix(output, ("png", "svg"), fmt)
    with connect(url, token) as client:
        body = client.figure(client.resolve(experiment_id), chosen)
    _write(body, output)


class Table_(StrEnum):
    rows = "rows"
    widths = "widths"
    curves = "curves"


def export(
    experiment_ids: Annotated[
        list[str] | None, typer.Argument(help="Experiment ids or unique prefixes.")
    ] = None,
    output: Out = Path("export.parquet"),
    kind: Annotated[
        str | None, typer.Option(help="With --tag: only this kind (needed if kinds differ).")
    ] = None,
    tag: Annotated[str | None, typer.Option(help="Every experiment with this tag.")] = None,
    table: Annotated[
        Table_, typer.Option(help="rows (a row per run, cone or neuron), widths or curves.")
    ] = Table_.rows,
    fmt: Annotated[str | None, typer.Option("--format", help="parquet or csv.")] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Write an experiment's table as Parquet or CSV; several experiments (ids, or --tag)
    of one kind as one table."""
    ids = experiment_ids or []
    if not ids and not tag:
        raise typer.BadParameter("give an experiment id, or --tag", param_hint="EXPERIMENT_IDS")
    chosen = _suffix(output, ("parquet", "csv"), fmt)
    with connect(url, token) as client:
        full = [client.resolve(i) for i in ids]
        if len(full) > 1 or tag is not None:
            body = client.export_many(kind, ids=full or None, tag=tag, table=table, fmt=chosen)
        elif table == Table_.curves:
            body = client.curves(full[0], chosen)
        elif table == Table_.widths:
            body = client.widths(full[0], chosen)
        else:
            body = client.export(full[0], chosen)
    _write(body, output)


COMMANDS: list[tuple[Any, str | None]] = [(curve, None), (figure, None), (export, None)]
