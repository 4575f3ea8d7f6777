"""An operator's fault suite against a private stack; run by hand, not by CI.

    .venv/bin/python bench/faults.py [--only NAME ...] [--quick] [--logs DIR]
                                     [--root DIR | --commit REV]

Each test starts its own stack (bench/faults_stack.py: a fresh PostgreSQL database, or a
private cluster for the PostgreSQL test; a redis-server on a free port; `benignity api`;
1-2 `benignity worker`s with short heartbeat and reaper intervals), does to it what an
operator's bad day does, and removes all of it, also on Ctrl-C or an error. It prints
test | figure | lost | notes, and exits 1 if any accepted experiment was lost (not ended,
failed without a reason, or wrong results) or an acceptance figure failed: 0 lost; pollers
0 errors, /healthz under 1 s throughout, p99 under 250 ms. `--root DIR` runs the service
from another checkout (e.g. a fresh clone), `--commit REV` from `git archive REV`; the harness
itself imports none of the service.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faults_stack import ROOT
from faults_tests import TESTS, Ctx, Row


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def print_table(rows: list[Row]) -> None:
    print("\n| test | figure | lost | ok | notes |\n| --- | --- | --: | --- | --- |")
    for r in rows:
        notes = " ".join(r.notes.replace("|", "/").split())[:400]
        print(f"| {r.test} | {r.figure} | {r.lost} | {'ok' if r.ok else 'FAIL'} | {notes} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=list(TESTS), help="repeatable")
    parser.add_argument("--quick", action="store_true", help="smaller work, 10 s pollers")
    parser.add_argument("--logs", type=Path, help="copy each stack's logs here")
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout to run the service from")
    parser.add_argument("--commit", help="run the service from `git archive COMMIT` of this repo")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    export = Path(tempfile.mkdtemp(prefix="faults-src-")) if args.commit else None
    try:
        root, source = _source(args, export)
        rows = run(Ctx(args.quick, args.logs, root), args.only or list(TESTS))
    finally:
        if export is not None:
            shutil.rmtree(export, ignore_errors=True)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}, service {source}, load average now {load}")
    print_table(rows)
    return 0 if rows and all(r.ok for r in rows) else 1


def _source(args: argparse.Namespace, export: Path | None) -> tuple[Path, str]:
    """Where the service runs from, and how to name it in the report."""
    git = ["git", "-C", str(ROOT)]
    if export is not None:
        sha = subprocess.run([*git, "rev-parse", "--short", args.commit], capture_output=True)
        archive = subprocess.Popen([*git, "archive", args.commit], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(export)], stdin=archive.stdout, check=True)
        if archive.wait() != 0 or sha.returncode != 0:
            raise SystemExit(f"git archive {args.commit} failed")
        return export, f"commit {sha.stdout.decode().strip()} (git archive)"
    root = args.root.resolve()
    sha = subprocess.run(
        ["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True
    )
    return root, f"{root} at {sha.stdout.decode().strip() or 'unknown commit'}"


def run(ctx: Ctx, names: list[str]) -> list[Row]:
    rows: list[Row] = []
    try:
        for name in names:
            t0 = time.monotonic()
            print(f"== {name}", file=sys.stderr, flush=True)
            try:
                got = TESTS[name](ctx)
            except Exception as exc:  # noqa: BLE001 - one broken test must not stop the rest
                got = [Row(name, "harness error", "?", False, f"{type(exc).__name__}: {exc}")]
            rows += got
            for r in got:
                print(f"   {r.test}: {r.figure} [{'ok' if r.ok else 'FAIL'}]", file=sys.stderr)
            print(f"   ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        rows.append(Row("(interrupted)", "", "?", False, "stacks removed"))
    return rows


if __name__ == "__main__":
    sys.exit(main())
