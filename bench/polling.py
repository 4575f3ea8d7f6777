"""Pollers against the API: the poll cache and its fast path, against the same API with
POLL_CACHE_SECONDS=0 (every GET reads the database), in one run; prints the ratios.

    .venv/bin/python bench/polling.py [--clients 200] [--seconds 20]

Each side is a private stack (bench/faults_stack.py: its own database and redis-server)
with one `benignity api` process and no workers; the load is bench/faults_load.py's
pollers on 8 experiments plus a /healthz probe in its own process. The API and the load
generator share this machine's cores, as in the issue's acceptance figure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faults_load import Polled, pollers  # noqa: E402
from faults_stack import Stack  # noqa: E402

SPEC = {
    "kind": "optimum",
    "weight_decay": 0.01,
    "dataset": {"generator": "teacher", "n": 6, "d": 10},
}


def measure(name: str, clients: int, seconds: float, **env: str) -> Polled:
    with Stack(name) as stack:
        stack.env.update(env)
        stack.start_api()
        headers = {"Authorization": f"Bearer {stack.token}"}
        ids = []
        for seed in range(8):
            body = {**SPEC, "dataset": {**SPEC["dataset"], "seed": seed}}
            ids.append(
                httpx.post(f"{stack.url}/v1/experiments", json=body, headers=headers).json()["id"]
            )
        assert stack.api_proc is not None
        return pollers(stack.url, stack.token, ids, clients, seconds, stack.api_proc.pid)


def line(name: str, p: Polled) -> str:
    return (
        f"{name:>22}: {p.rate:7.0f} req/s  p50 {p.quantile(0.5) * 1e3:6.1f} ms  "
        f"p99 {p.quantile(0.99) * 1e3:6.1f} ms  errors {sum(p.errors.values())}  "
        f"/healthz max {p.healthz.get('max', float('nan')) * 1e3:5.0f} ms  API CPU {p.api_cpu:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    base = measure("poll-uncached", args.clients, args.seconds, POLL_CACHE_SECONDS="0")
    ours = measure("poll-cached", args.clients, args.seconds)
    print(f"{args.clients} pollers for {args.seconds:g} s, one API process")
    print(line("uncached (baseline)", base))
    print(line("poll cache (default)", ours))
    print(
        f"ratio: throughput {ours.rate / base.rate:.1f}x, "
        f"p99 {base.quantile(0.99) / ours.quantile(0.99):.1f}x lower"
    )


if __name__ == "__main__":
    main()
