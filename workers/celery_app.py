"""The Celery app of the workers: JSON messages only, queues cpu and gpu."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, signals

from service import db
from service.config import get_settings
from service.dispatch import celery_config

log = logging.getLogger("benignity.worker")

app = Celery("benignity", include=["workers.tasks"])
app.conf.update(celery_config(get_settings()))
_reaper_stop = threading.Event()


@signals.worker_process_init.connect
def _fresh_engine(**_: Any) -> None:
    """A forked pool process must not share the parent's database connections."""
    db.reset_caches()


@signals.worker_ready.connect
def _start_reaper(**_: Any) -> None:
    from workers.reaper import reaper_loop

    args = (app, _reaper_stop)
    threading.Thread(target=reaper_loop, args=args, name="reaper", daemon=True).start()
    log.info("reaper started")


@signals.worker_shutdown.connect
def _stop_reaper(**_: Any) -> None:
    _reaper_stop.set()
