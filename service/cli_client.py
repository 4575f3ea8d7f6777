"""The `benignity` commands that talk to the HTTP API, all through service.client.

`status`, `wait` and `submit --wait` exit by the experiment's status (service/cli_common.py
lists the codes). Every id printed is a full id; every id taken may be a unique prefix.
The file commands (curve, figure, export) are in service/cli_files.py.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from service import cli_files
from service.cli_common import (
    DEFAULT_URL,
    EXIT_FAILED,
    EXIT_USAGE,
    DocFmt,
    Fmt,
    Id,
    Ids,
    Timeout,
    Token,
    Url,
    cell,
    connect,
    dump,
    emit,
    err,
    exit_by,
    fetch,
    handled,
    out,
    print_json,
    say,
    status_line,
)
from service.client import Client, Experiment, PreconditionFailed, Run, flat_run

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
    with connect(url, token) as client:
        exp = client.submit(body, idempotency_key=idempotency_key)
        if wait:
            exp = _wait(client, exp.id, timeout)
    print_json(dump(exp))
    exit_by(exp)


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
    exp = fetch(url, token, experiment_id)
    print(status_line(exp))
    if exp.error:
        print(f"error: {exp.error.type}: {exp.error.detail}")
    exit_by(exp)


def wait(
    experiment_id: Id, timeout: Timeout = None, url: Url = DEFAULT_URL, token: Token = None
) -> None:
    """Wait for an experiment to finish, with a progress bar; exits by its status."""
    with connect(url, token) as client:
        exp = _wait(client, client.resolve(experiment_id), timeout)
    print(status_line(exp))
    if exp.error:
        print(f"error: {exp.error.type}: {exp.error.detail}")
    exit_by(exp)


def cancel(experiment_id: Id, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Cancel an experiment that has not finished (its running work stops soon after)."""
    with connect(url, token) as client:
        exp = client.cancel(client.resolve(experiment_id))
    print(status_line(exp))


def rm(
    experiment_ids: Ids,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Delete finished experiments with their runs, cones and curves."""
    with connect(url, token) as client:
        ids = [client.resolve(i) for i in experiment_ids]
        if not yes:
            if not sys.stdin.isatty():
                say("rm deletes for good; pass --yes to confirm")
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
    with connect(url, token) as client:
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
        print_json([dump(e) for e in chosen])
        return
    emit([_list_row(e) for e in chosen], LIST_COLUMNS, fmt)


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


def show(
    experiment_id: Id,
    fmt: Annotated[DocFmt, typer.Option("--format", help="Output.")] = DocFmt.table,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """An experiment's details: labels, dataset, progress, times and a summary of its result
    (for a training sweep still running: its runs by status and verdict so far)."""
    with connect(url, token) as client:
        exp = client.get(client.resolve(experiment_id))
        so_far = list(client.runs(exp.id)) if exp.kind == "training" and not exp.finished else []
    if fmt == DocFmt.json:
        print_json(dump(exp))
        return
    console = out()
    for key, value in [*_details(exp), *_so_far(so_far)]:
        console.print(f"[bold]{key:>16}[/]  {value}", highlight=False, soft_wrap=True)
    rows, columns = _summary(exp)
    if rows:
        console.print()
        emit(rows, columns, Fmt.table)


def _so_far(runs: list[Run]) -> Iterator[tuple[str, str]]:
    """Runs counted by status, and the verdicts reached so far."""
    if runs:
        yield "runs", _counts(r.status for r in runs)
        verdicts = [r.verdict for r in runs if r.verdict]
        if verdicts:
            yield "verdicts so far", _counts(verdicts)


def _counts(values: Iterable[str]) -> str:
    return ", ".join(f"{n} {value}" for value, n in Counter(values).most_common())


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
            yield key, cell(result[key])
    if "neurons" in result:
        yield "neurons", str(len(result["neurons"]))
    reached = {k: v for k, v in (result.get("threshold") or {}).items() if v is not None}
    if "threshold" in result:
        shown = ", ".join(f"{k}={cell(v)}" for k, v in reached.items())
        yield "threshold", shown or "not reached at these widths"


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
    exp = fetch(url, token, experiment_id)
    if exp.result is None:
        say(f"experiment {exp.id} is {exp.status}; no result yet")
        raise typer.Exit(EXIT_FAILED)
    if fmt == Fmt.json:
        print_json(exp.result)
        return
    rows = exp.result.get("rows") or exp.result.get("groups")
    if rows is None:
        rows = [
            {"neuron": i, "a": n["a"], **{f"w{j}": v for j, v in enumerate(n["w"])}}
            for i, n in enumerate(exp.result.get("neurons", []))
        ]
    if fmt == Fmt.csv and not rows:
        return
    emit(rows, list(rows[0]) if rows else None, fmt)


def runs(
    experiment_id: Id,
    verdict: Annotated[str | None, typer.Option(help="Only runs with this verdict.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many.")] = None,
    fmt: Annotated[Fmt, typer.Option("--format", help="Output.")] = Fmt.table,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """An experiment's runs: params, status, verdict and final values, one row each."""
    with connect(url, token) as client:
        exp_id = client.resolve(experiment_id)
        found = islice(client.runs(exp_id, verdict=verdict), limit)
        rows = [flat_run(exp_id, r) for r in found]
    columns = None
    if fmt == Fmt.table:  # narrow enough for a terminal; json and csv carry every column
        present = dict.fromkeys(k for r in rows for k in r)
        columns = [k for k in present if not k.startswith(("final_", "latest_", "experiment_"))]
        columns += [k for k in RUN_FINALS if k in present]
    emit(rows, columns, fmt)


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
    with connect(url, token) as client:
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


COMMANDS: list[tuple[Any, str | None]] = [
    (submit, None),
    (status, None),
    (wait, None),
    (show, None),
    (list_, "list"),
    (results, None),
    (runs, None),
    *cli_files.COMMANDS,
    (tag, None),
    (cancel, None),
    (rm, None),
]


def register(app: typer.Typer) -> None:
    """Add the client commands to the `benignity` app."""
    for command, name in COMMANDS:
        app.command(name=name)(handled(command))
