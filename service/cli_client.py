"""The `benignity` commands that talk to the HTTP API, all through service.client.

Exit codes: 0 succeeded (or the command did what it was asked), 1 failed (or the API
refused), 2 usage (an ambiguous id prefix included), 3 cancelled, 4 unreachable,
5 still running when `--timeout` ran out. `status`, `wait` and `submit --wait` exit by
the experiment's status. Every id printed is a full id; every id taken may be a unique
prefix of one.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.client import (
    AmbiguousId,
    ApiError,
    Client,
    Experiment,
    PreconditionFailed,
    Unreachable,
    WaitTimeout,
    flat_run,
)

err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED, EXIT_UNREACHABLE, EXIT_TIMEOUT = 1, 2, 3, 4, 5
STATUS_EXIT = {"failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}

Url = Annotated[str, typer.Option(envvar="BENIGNITY_URL", help="The API's base URL.")]
Token = Annotated[str | None, typer.Option(envvar="BENIGNITY_TOKEN", help="Bearer token.")]
Id = Annotated[str, typer.Argument(help="An experiment id, or a unique prefix of one.")]
Ids = Annotated[list[str], typer.Argument(help="Experiment ids or unique prefixes.")]
Out = Annotated[Path, typer.Option("--output", "-o", help="File to write (its suffix: format).")]
Timeout = Annotated[
    float | None, typer.Option(help="Give up after this many seconds (exit 5).", min=0)
]
DEFAULT_URL = "http://127.0.0.1:8000"


class Fmt(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class DocFmt(StrEnum):
    table = "table"
    json = "json"


class DataFmt(StrEnum):
    json = "json"
    csv = "csv"


def handled(fn: F) -> F:
    """Turn the client's errors into one or two lines on stderr and an exit code."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Unreachable as exc:
            _say(f"cannot reach {exc.url} ({exc.reason}); is `benignity serve` running?")
            raise typer.Exit(EXIT_UNREACHABLE) from None
        except AmbiguousId as exc:
            _say(f"{exc}; give more of the id")
            raise typer.Exit(EXIT_USAGE) from None
        except ApiError as exc:
            _say(f"{exc.status} {exc.title}: {exc.detail}")
            fields = [f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in exc.errors]
            if fields and not (len(fields) == 1 and exc.errors[0].get("msg") == exc.detail):
                print("  " + "; ".join(fields), file=sys.stderr)
            raise typer.Exit(EXIT_FAILED) from None
        except WaitTimeout as exc:
            _say(f"{exc}; still waiting when --timeout ran out")
            raise typer.Exit(EXIT_TIMEOUT) from None

    return run  # type: ignore[return-value]


def _say(line: str) -> None:
    print(f"benignity: {line}", file=sys.stderr)


def _client(url: str, token: str | None) -> Client:
    # A person at a terminal: a few quick retries, then a clear answer (exit 4).
    return Client(url, token, retries=2, backoff=0.25)


def _fetch(url: str, token: str | None, experiment_id: str) -> Experiment:
    with _client(url, token) as client:
        return client.get(client.resolve(experiment_id))


def _exit_by(exp: Experiment) -> None:
    code = STATUS_EXIT.get(exp.status, 0)
    if code:
        raise typer.Exit(code)


def _status_line(exp: Experiment) -> str:
    p = exp.progress
    return f"{exp.id} {exp.kind} {exp.status} {p.done}/{p.total}"


def _dump(exp: Experiment) -> dict[str, Any]:
    return exp.model_dump(mode="json")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _out() -> Console:
    """stdout; when it is not a terminal, wide enough that tables keep full ids."""
    return Console(width=None if sys.stdout.isatty() else 240)


# --- submit, status, wait, cancel, rm ---------------------------------------------------


def submit(
    spec: Annotated[Path, typer.Argument(help="A spec, as JSON (- reads standard input).")],
    wait: Annotated[bool, typer.Option(help="Wait, with a progress bar.")] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Resubmits under the same key return the same experiment."),
    ] = None,
    timeout: Timeout = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Submit SPEC.json; prints the experiment (and waits for it with --wait)."""
    try:
        body = sys.stdin.buffer.read() if str(spec) == "-" else spec.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {spec}: {exc.strerror}", param_hint="SPEC") from None
    with _client(url, token) as client:
        exp = client.submit(body, idempotency_key=idempotency_key)
        if wait:
            exp = _wait(client, exp.id, timeout)
    _print_json(_dump(exp))
    _exit_by(exp)


def _wait(client: Client, experiment_id: str, timeout: float | None) -> Experiment:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=err, transient=False) as bar:
        task = bar.add_task(experiment_id, total=None)

        def show(exp: Experiment) -> None:
            unit = f" {exp.progress.unit}" if exp.progress.unit else ""
            bar.update(
                task,
                completed=exp.progress.done,
                total=exp.progress.total or None,
                description=f"{exp.kind} {exp.id} {exp.status}{unit}",
            )

        exp = client.wait(experiment_id, timeout=timeout, on_progress=show)
        show(exp)
    return exp


def status(experiment_id: Id, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Print an experiment's status and progress; exits by its status."""
    exp = _fetch(url, token, experiment_id)
    print(_status_line(exp))
    if exp.error:
        print(f"error: {exp.error.type}: {exp.error.detail}")
    _exit_by(exp)


def wait(
    experiment_id: Id, timeout: Timeout = None, url: Url = DEFAULT_URL, token: Token = None
) -> None:
    """Wait for an experiment to finish, with a progress bar; exits by its status."""
    with _client(url, token) as client:
        exp = _wait(client, client.resolve(experiment_id), timeout)
    print(_status_line(exp))
    if exp.error:
        print(f"error: {exp.error.type}: {exp.error.detail}")
    _exit_by(exp)


def cancel(experiment_id: Id, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Cancel an experiment that has not finished (its running work stops soon after)."""
    with _client(url, token) as client:
        exp = client.cancel(client.resolve(experiment_id))
    print(_status_line(exp))


def rm(
    experiment_ids: Ids,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Delete finished experiments with their runs, cones and curves."""
    with _client(url, token) as client:
        ids = [client.resolve(i) for i in experiment_ids]
        if not yes:
            if not sys.stdin.isatty():
                _say("rm deletes for good; pass --yes to confirm")
                raise typer.Exit(EXIT_USAGE)
            typer.confirm(f"delete {len(ids)} experiment(s): {', '.join(ids)}?", abort=True)
        for experiment_id in ids:
            client.delete(experiment_id)
            print(f"deleted {experiment_id}")


# --- list, show, results, runs ------------------------------------------------------------

LIST_COLUMNS = ["id", "kind", "status", "done", "total", "name", "tags", "created_at"]


def list_(
    kind: Annotated[str | None, typer.Option(help="optimum, census or training.")] = None,
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, ...")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Has this tag (repeatable).")] = None,
    name: Annotated[str | None, typer.Option(help="Name contains (any case).")] = None,
    generator: Annotated[str | None, typer.Option(help="The dataset's generator.")] = None,
    n: Annotated[int | None, typer.Option("--n", "-n", help="Data points.")] = None,
    d: Annotated[int | None, typer.Option("--d", "-d", help="Dimension.")] = None,
    created_after: Annotated[str | None, typer.Option(help="ISO 8601.")] = None,
    created_before: Annotated[str | None, typer.Option(help="ISO 8601.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 50,
    fmt: Annotated[Fmt, typer.Option("--format", help="Output.")] = Fmt.table,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """List your experiments, newest first."""
    with _client(url, token) as client:
        found = client.experiments(
            kind=kind,
            status=status,
            tag=tag or None,
            name=name,
            generator=generator,
            n=n,
            d=d,
            created_after=created_after,
            created_before=created_before,
            fields="summary",
            page_size=min(limit, 1000),
        )
        chosen = list(islice(found, limit))
    if fmt == Fmt.json:  # whole experiments (results left out), for scripts
        _print_json([_dump(e) for e in chosen])
        return
    _emit([_list_row(e) for e in chosen], LIST_COLUMNS, fmt)


def _list_row(exp: Experiment) -> dict[str, Any]:
    return {
        "id": exp.id,
        "kind": exp.kind,
        "status": exp.status,
        "done": exp.progress.done,
        "total": exp.progress.total,
        "name": exp.name,
        "tags": ",".join(exp.tags),
        "created_at": exp.created_at.isoformat() if exp.created_at else None,
    }


def _emit(rows: list[dict[str, Any]], columns: list[str] | None, fmt: Fmt) -> None:
    """Rows as a table, a JSON array or CSV (columns: the union of the rows' keys)."""
    if fmt == Fmt.json:
        _print_json(rows)
        return
    names = columns or list(dict.fromkeys(k for row in rows for k in row))
    if fmt == Fmt.csv:
        sys.stdout.write(_csv(rows, names))
        return
    table = Table(box=None, header_style="bold")
    for col in names:
        table.add_column(col.upper(), no_wrap=col.endswith("id"), overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(col)) for col in names))
    _out().print(table)


def _csv(rows: Iterable[dict[str, Any]], names: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=names, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def show(
    experiment_id: Id,
    fmt: Annotated[DocFmt, typer.Option("--format", help="Output.")] = DocFmt.table,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """An experiment's details: labels, dataset, progress, times and a summary of its result."""
    exp = _fetch(url, token, experiment_id)
    if fmt == DocFmt.json:
        _print_json(_dump(exp))
        return
    console = _out()
    for key, value in _details(exp):
        console.print(f"[bold]{key:>16}[/]  {value}", highlight=False, soft_wrap=True)
    rows, columns = _summary(exp)
    if rows:
        console.print()
        _emit(rows, columns, Fmt.table)


def _details(exp: Experiment) -> Iterator[tuple[str, str]]:
    p, spec = exp.progress, exp.spec
    yield "id", exp.id
    if exp.name:
        yield "name", exp.name
    yield "kind", exp.kind
    yield "status", exp.status
    yield "progress", f"{p.done}/{p.total}" + (f" {p.unit}" if p.unit else "")
    dataset = spec.get("dataset", {})
    shape = ", ".join(f"{k}={dataset[k]}" for k in ("n", "d", "seed") if k in dataset)
    yield "dataset", f"{dataset.get('generator')} ({shape})"
    yield "weight_decay", str(spec.get("weight_decay"))
    for key in ("created_at", "started_at", "finished_at"):
        when = getattr(exp, key)
        if when is not None:
            yield key.removesuffix("_at"), when.isoformat()
    if exp.tags:
        yield "tags", ", ".join(exp.tags)
    if exp.notes:
        yield "notes", exp.notes
    if exp.error:
        yield "error", f"{exp.error.type}: {exp.error.detail}"
    result = exp.result or {}
    for key in ("optimum", "num_patterns", "num_signed_cones", "theory_bound", "method"):
        if key in result:
            yield key, _cell(result[key])
    if "neurons" in result:
        yield "neurons", str(len(result["neurons"]))
    if result.get("threshold"):
        yield "threshold", ", ".join(f"{k}={_cell(v)}" for k, v in result["threshold"].items())


def _summary(exp: Experiment) -> tuple[list[dict[str, Any]], list[str] | None]:
    """The verdict shares of a census (per width) or a training sweep (per cell)."""
    result = exp.result or {}
    if exp.kind == "training":
        return [
            {
                k: v
                for k, v in g.items()
                if (k in TRAINING_SHARES or not k.startswith("p_"))
                and not isinstance(v, dict | list)
            }
            for g in result.get("groups") or []
        ], None
    if exp.kind == "census":
        rows = result.get("rows") or []
        return [{k: r.get(k) for k in CENSUS_SHARES} for r in rows], list(CENSUS_SHARES)
    return [], None


TRAINING_SHARES = ("p_global", "p_spurious", "p_saddle", "p_not_converged", "p_diverged")
CENSUS_SHARES = ("width", "samples", "p_global", "p_spurious", "p_no_local_min", "p_covered")


def results(
    experiment_id: Id,
    fmt: Annotated[Fmt, typer.Option("--format", help="json, csv or table.")] = Fmt.json,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Print an experiment's result as JSON, or its table as CSV or a table."""
    exp = _fetch(url, token, experiment_id)
    if exp.result is None:
        _say(f"experiment {exp.id} is {exp.status}; no result yet")
        raise typer.Exit(EXIT_FAILED)
    if fmt == Fmt.json:
        _print_json(exp.result)
        return
    rows = exp.result.get("rows") or exp.result.get("groups")
    if rows is None:
        rows = [
            {"neuron": i, "a": n["a"], **{f"w{j}": v for j, v in enumerate(n["w"])}}
            for i, n in enumerate(exp.result.get("neurons", []))
        ]
    if fmt == Fmt.csv and not rows:
        return
    _emit(rows, list(rows[0]) if rows else None, fmt)


def runs(
    experiment_id: Id,
    verdict: Annotated[str | None, typer.Option(help="Only runs with this verdict.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many.")] = None,
    fmt: Annotated[Fmt, typer.Option("--format", help="Output.")] = Fmt.table,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """An experiment's runs: params, status, verdict and final values, one row each."""
    with _client(url, token) as client:
        exp_id = client.resolve(experiment_id)
        found = islice(client.runs(exp_id, verdict=verdict), limit)
        rows = [flat_run(exp_id, r) for r in found]
    columns = None
    if fmt == Fmt.table:  # narrow enough for a terminal; json and csv carry every column
        present = dict.fromkeys(k for r in rows for k in r)
        columns = [k for k in present if not k.startswith(("final_", "latest_", "experiment_"))]
        columns += [k for k in RUN_FINALS if k in present]
    _emit(rows, columns, fmt)


RUN_FINALS = ("final_epoch", "final_reg_loss", "final_gap", "final_grad_norm_sq")


# --- tags -----------------------------------------------------------------------------


def tag(
    experiment_id: Id,
    add: Annotated[list[str] | None, typer.Option("--add", "-a", help="Tag to add.")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", "-r", help="To remove.")] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Add and remove an experiment's tags; prints the tags it ends with."""
    with _client(url, token) as client:
        exp_id = client.resolve(experiment_id)
        for attempt in range(5):  # read, change, write unless someone wrote in between
            exp = client.get(exp_id)
            gone = set(remove or ())
            tags = [t for t in exp.tags if t not in gone]
            tags += [t for t in dict.fromkeys(add or ()) if t not in tags and t not in gone]
            if tags == exp.tags:
                break
            try:
                exp = client.patch(exp_id, tags=tags, if_match=exp.etag)
                break
            except PreconditionFailed:  # it changed (progress, another writer): read again
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
    print(f"{exp.id} tags: {', '.join(exp.tags) or '(none)'}")


# --- files ----------------------------------------------------------------------------


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
    with _client(url, token) as client:
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
    with _client(url, token) as client:
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
    with _client(url, token) as client:
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


COMMANDS: list[tuple[Callable[..., Any], str | None]] = [
    (submit, None),
    (status, None),
    (wait, None),
    (show, None),
    (list_, "list"),
    (results, None),
    (runs, None),
    (curve, None),
    (figure, None),
    (export, None),
    (tag, None),
    (cancel, None),
    (rm, None),
]


def register(app: typer.Typer) -> None:
    """Add the client commands to the `benignity` app."""
    for command, name in COMMANDS:
        app.command(name=name)(handled(command))
