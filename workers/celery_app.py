"""The Celery app of the workers: JSON messages only, queues cpu and gpu.

Shutdown: on SIGTERM (to the main process, which passes it on to the pool
processes that run a task, or to the whole process group) a pool process that
runs an item sets `stopping`; the job stops at its next check (training within
about a second), saves a checkpoint and hands the item back to the queue. An
idle pool process is ended by the pool as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Any

from celery import Celery, bootsteps, signals
from celery.worker import state as worker_state

from service import db
from service.config import get_settings
from service.dispatch import celery_config
from workers.landscape.training.native_cache import set_cache_dir

log = logging.getLogger("benignity.worker")

app = Celery("benignity", include=["workers.tasks"])
app.conf.update(celery_config(get_settings()))
set_cache_dir(get_settings().native_cache_dir)  # compiled training kernels
_reaper_stop = threading.Event()
#: In a pool process: the worker is shutting down, so stop the running item and hand it back.
stopping = threading.Event()
#: In a pool process: an item is running (set by the task around its job).
busy = threading.Event()


@signals.worker_process_init.connect
def _fresh_engine(**_: Any) -> None:
    """A forked pool process must not share the parent's database connections."""
    db.reset_caches()


def stop_gently_on_sigterm() -> None:
    """In a pool process, make SIGTERM ask the running item to stop at its next check.

    Called as each task starts: billiard sets its own handler after the process
    initialisers have run. An idle process still ends on SIGTERM, by that handler.
    """
    global _billiard_sigterm
    current = signal.getsignal(signal.SIGTERM)
    if current is not _on_sigterm:
        _billiard_sigterm = current
        signal.signal(signal.SIGTERM, _on_sigterm)


_billiard_sigterm: Any = signal.SIG_DFL


def _on_sigterm(signum: int, frame: Any) -> None:
    stopping.set()
    if busy.is_set():
        return
    if callable(_billiard_sigterm):
        _billiard_sigterm(signum, frame)
    else:  # nothing to save: end as the default action would
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


@signals.worker_shutting_down.connect
def _pass_sigterm_on(**_: Any) -> None:
    """In the main process, on a warm shutdown: tell each pool process that runs a task.

    Idle ones are left to the pool, which ends them once their tasks are done (an idle
    pool process ended by a signal would make the warm shutdown wait forever).
    """
    pids = {r.worker_pid for r in worker_state.active_requests if r.worker_pid}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


class _BrokerWatch(bootsteps.StartStopStep):
    """Wakes the reaper each time the consumer (re)connects to the broker, so that
    work whose messages a restarted broker lost is sent again at once."""

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, parent: Any) -> None:
        from workers.reaper import wake

        wake()


app.steps["consumer"].add(_BrokerWatch)


@signals.worker_ready.connect
def _start_reaper(**_: Any) -> None:
    from workers.reaper import Presence, reaper_loop

    global _presence
    presence = _presence = Presence(sorted(app.amqp.queues.consume_from))
    try:  # at once, so that work sent from now on can be routed to this worker
        presence.beat(force=True)
    except Exception as exc:  # noqa: BLE001 - the reaper's loop tries again
        log.warning("could not record this worker in the registry yet: %s", exc)
    args = (app, _reaper_stop, presence)
    threading.Thread(target=reaper_loop, args=args, name="reaper", daemon=True).start()
    log.info("reaper started; this worker serves %s as %s", presence.queues, presence.name)


@signals.worker_shutdown.connect
def _stop_reaper(**_: Any) -> None:
    """Stop the reaper, and mark this worker stopped so no more work is routed to it."""
    from workers.reaper import say_stopped, wake

    _reaper_stop.set()
    wake()
    if _presence is not None:
        say_stopped(_presence)


_presence: Any = None
