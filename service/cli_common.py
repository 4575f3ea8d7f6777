"""What the `benignity` client commands share: options, error handling, exit codes, output.

Exit codes: 0 succeeded (or the command did what it was asked), 1 failed (or the API
refused), 2 usage (an ambiguous id prefix included), 3 cancelled, 4 unreachable,
5 still running when `--timeout` ran out.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import sys
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from service.client import (
    AmbiguousId,
    ApiError,
    BenignityError,
    Client,
    Experiment,
    Unreachable,
    WaitTimeout,
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
            say(f"cannot reach {exc.url} ({exc.reason}); is `benignity serve` running?")
            raise typer.Exit(EXIT_UNREACHABLE) from None
        except AmbiguousId as exc:
            say(f"{exc}; give more of the id")
            raise typer.Exit(EXIT_USAGE) from None
        except ApiError as exc:
            say(f"{exc.status} {exc.title}: {exc.detail}")
            fields = [f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in exc.errors]
            if fields and not (len(fields) == 1 and exc.errors[0].get("msg") == exc.detail):
                print("  " + "; ".join(fields), file=sys.stderr)
            raise typer.Exit(EXIT_FAILED) from None
        except WaitTimeout as exc:
            say(f"{exc}; still waiting when --timeout ran out")
            raise typer.Exit(EXIT_TIMEOUT) from None
        except BenignityError as exc:  # BadAnswer, and whatever comes later
            say(str(exc))
            raise typer.Exit(EXIT_FAILED) from None

    return run  # type: ignore[return-value]


def say(line: str) -> None:
    print(f"benignity: {line}", file=sys.stderr)


def connect(url: str, token: str | None) -> Client:
    # A person at a terminal: a few quick retries, then a clear answer (exit 4); a quota's
    # Retry-After of 30 s is not waited out in silence.
    return Client(url, token, retries=2, backoff=0.25, max_delay=5)


def fetch(url: str, token: str | None, experiment_id: str) -> Experiment:
    with connect(url, token) as client:
        return client.get(client.resolve(experiment_id))


def exit_by(exp: Experiment) -> None:
    code = STATUS_EXIT.get(exp.status, 0)
    if code:
        raise typer.Exit(code)


def status_line(exp: Experiment) -> str:
    p = exp.progress
    return f"{exp.id} {exp.kind} {exp.status} {p.done}/{p.total}"


def dump(exp: Experiment) -> dict[str, Any]:
    return exp.model_dump(mode="json")


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def out() -> Console:
    """stdout; when it is not a terminal, wide enough that tables keep full ids."""
    return Console(width=None if sys.stdout.isatty() else 240)


def emit(rows: list[dict[str, Any]], columns: list[str] | None, fmt: Fmt) -> None:
    """Rows as a table, a JSON array or CSV (columns: the union of the rows' keys)."""
    if fmt == Fmt.json:
        print_json(rows)
        return
    names = columns or list(dict.fromkeys(k for row in rows for k in row))
    if fmt == Fmt.csv:
        sys.stdout.write(to_csv(rows, names))
        return
    table = Table(box=None, header_style="bold")
    for col in names:
        table.add_column(col.upper(), no_wrap=col.endswith("id"), overflow="fold")
    for row in rows:
        table.add_row(*(cell(row.get(col)) for col in names))
    out().print(table)


def to_csv(rows: Iterable[dict[str, Any]], names: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=names, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
