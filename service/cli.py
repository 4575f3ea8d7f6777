"""The `benignity` command: servers, workers and migrations; the HTTP API's client
commands live in service/cli_client.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from service.cli_client import register

app = typer.Typer(help="Run and certify loss-landscape experiments.", no_args_is_help=True)
err = Console(stderr=True)

Host = Annotated[str, typer.Option(help="Address to bind.")]
Port = Annotated[int, typer.Option(help="Port to bind.")]


def _worker_argv(queues: str, concurrency: int | None) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app:app",
        "worker",
        "--queues",
        queues,
        "--loglevel",
        "INFO",
        "--hostname",
        f"benignity-{os.getpid()}@%h",
    ]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    return argv


# One worker process per core: each numerical library in it gets one thread, so
# processes do not fight over cores (2 processes on 2 cores: 1.7x, not 1.07x).
SINGLE_THREADED = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def _embedded_env() -> dict[str, str]:
    """Pin the resolved settings into the environment so child processes agree."""
    from service.config import get_settings

    settings = get_settings()
    settings.benignity_home.mkdir(parents=True, exist_ok=True)
    env = {**SINGLE_THREADED, **os.environ}
    env.update(
        BENIGNITY_HOME=str(settings.benignity_home),
        DATABASE_URL=settings.database_url,
        BROKER_URL=settings.broker_url,
    )
    os.environ.update(env)
    return env


@app.command()
def serve(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 2,
) -> None:
    """The API and a real Celery worker in one command (embedded defaults need no server)."""
    import uvicorn

    from service.migrate import upgrade

    env = _embedded_env()
    upgrade()
    err.print(f"[bold]benignity[/] database {env['DATABASE_URL']}, broker {env['BROKER_URL']}")
    worker = subprocess.Popen(
        _worker_argv("cpu,gpu", concurrency), env=env, preexec_fn=_stop_with(os.getpid())
    )
    # uvicorn shuts down gracefully on SIGTERM, then raises it again once its own handler
    # is gone; with the default handler that would end this process before the `finally`
    # below and leave the worker running. Leave through the `finally` instead.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        uvicorn.run("service.app:create_app", factory=True, host=host, port=port)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _stop_with(parent: int) -> Any:
    """For `serve`'s worker: SIGTERM when `serve` dies, even by SIGKILL (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None

    def arm() -> None:  # runs in the child between fork and exec
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # `serve` died before the line above took effect
            os._exit(1)

    return arm


@app.command()
def api(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    workers: Annotated[int, typer.Option(help="API processes (each has its own pool).")] = 1,
) -> None:
    """The HTTP API alone."""
    import uvicorn

    uvicorn.run("service.app:create_app", factory=True, host=host, port=port, workers=workers)


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated: cpu, gpu.")] = "cpu,gpu",
    concurrency: Annotated[
        int | None,
        typer.Option(envvar="WORKER_CONCURRENCY", help="Processes (0 or unset: one per core)."),
    ] = None,
) -> None:
    """A Celery worker alone, consuming the given queues."""
    argv = _worker_argv(queues, concurrency)
    os.execvpe(argv[0], argv, _embedded_env())


@app.command()
def migrate() -> None:
    """`alembic upgrade head` against DATABASE_URL."""
    from service.migrate import upgrade

    _embedded_env()
    upgrade()
    err.print("database is at the latest revision")


@app.command()
def healthcheck(
    role: Annotated[str, typer.Argument(help="api or worker.")],
    url: Annotated[str, typer.Option(help="The API to probe (role api).")] = (
        "http://127.0.0.1:8000"
    ),
    max_age: Annotated[float, typer.Option(help="Seconds (role worker).")] = 30.0,
) -> None:
    """Exit 0 when this host's API answers /healthz, or its worker's reaper ticked within
    MAX_AGE seconds (BENIGNITY_HOME/worker.alive); for container health checks."""
    if role == "api":
        try:
            httpx.get(f"{url.rstrip('/')}/healthz", timeout=5).raise_for_status()
        except httpx.HTTPError as exc:
            err.print(f"api: {exc}", soft_wrap=True)
            raise typer.Exit(1) from None
    elif role == "worker":
        from service.config import get_settings

        path = get_settings().worker_alive_file
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            err.print(f"worker: {path} does not exist (not started yet?)", soft_wrap=True)
            raise typer.Exit(1) from None
        if age > max_age:
            err.print(
                f"worker: its reaper last ticked {age:.0f} s ago (over {max_age:g} s)",
                soft_wrap=True,
            )
            raise typer.Exit(1)
    else:
        err.print(f"role must be api or worker, not {role!r}")
        raise typer.Exit(2)


register(app)

if __name__ == "__main__":
    app()
