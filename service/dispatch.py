"""Enqueue work by task name, after the commit that created it.

The API holds only a Celery *client*: it never imports worker code, so the API
process never loads torch. workers/celery_app.py builds its app from the same
configuration.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from functools import lru_cache
from time import monotonic
from typing import Any

from celery import Celery
from kombu import Exchange, Queue
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

from service.config import Settings, get_settings
from service.crud import Envelope

EXECUTE = "benignity.execute"
QUEUES = ("cpu", "gpu")


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings shared by the API's client and the workers."""
    conf: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_queues": [Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES],
        "task_default_queue": "cpu",
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "broker_transport_options": {"visibility_timeout": 3600},
    }
    if settings.broker_url.startswith("filesystem"):
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.01,
        }
        conf["broker_transport"] = f"{__name__}:AtomicFilesystemTransport"
    return conf


class _AtomicChannel(filesystem.Channel):  # type: ignore[misc]
    """kombu's filesystem channel, but a message appears in the queue folder whole.

    kombu creates the message file, then writes it; a consumer polling every 10 ms can
    move and read the file in between, read nothing, and its worker stops on the
    JSONDecodeError ("Unrecoverable error", seen in bench/e2e.py's embedded stack). Here
    the message is written under a name no consumer takes (a leading dot) and renamed
    into place, which is atomic on one filesystem."""

    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class AtomicFilesystemTransport(filesystem.Transport):  # type: ignore[misc]
    """The embedded broker's transport (see _AtomicChannel)."""

    Channel = _AtomicChannel


@lru_cache
def client() -> Celery:
    """A Celery client for the configured broker."""
    app = Celery("benignity-client")
    app.conf.update(celery_config(get_settings()))
    return app


def time_limits(hard: float | None) -> dict[str, float]:
    """Celery's time limits for a hard limit of `hard` seconds (none when None).

    The soft limit comes 10% before the hard one, but never more than 10 s before:
    it raises in the task, which then fails its experiment with the reason. The hard
    limit kills the pool process, for code that the soft one cannot interrupt.
    """
    if hard is None:
        return {}
    return {"time_limit": hard, "soft_time_limit": hard - min(10.0, 0.1 * hard)}


def send(envelopes: Iterable[Envelope], app: Celery | None = None) -> None:
    """Send one message per work item; callers do this only after their commit."""
    app = app or client()
    for env in envelopes:
        app.send_task(
            EXECUTE,
            args=[env.item_id],
            queue=env.queue,
            routing_key=env.queue,
            **time_limits(env.time_limit),
        )


def reset() -> None:
    client.cache_clear()
