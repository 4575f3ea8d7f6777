"""The embedded broker (kombu's filesystem transport) under a consumer that polls while
messages are written: every message arrives whole (service/dispatch.py)."""

from __future__ import annotations

import threading
from pathlib import Path
from queue import Empty

from kombu import Connection

from service.dispatch import AtomicFilesystemTransport

MESSAGES = 400


def _connection(folder: Path) -> Connection:
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(folder / "control"),
        "store_processed": False,
        "polling_interval": 0.001,
    }
    return Connection(transport=AtomicFilesystemTransport, transport_options=options)


def test_a_polling_consumer_never_reads_a_message_half_written(tmp_path):
    payload = {"args": ["x" * 20_000], "n": 0}  # large enough that a write takes a while

    def produce() -> None:
        with _connection(tmp_path) as conn, conn.SimpleQueue("cpu") as queue:
            for i in range(MESSAGES):
                queue.put({**payload, "n": i})

    writer = threading.Thread(target=produce)
    got: list[int] = []
    with _connection(tmp_path) as conn, conn.SimpleQueue("cpu") as queue:
        writer.start()
        while len(got) < MESSAGES:
            try:
                message = queue.get(timeout=10)
            except Empty:
                break
            assert message.payload["args"] == payload["args"]
            got.append(message.payload["n"])
            message.ack()
    writer.join()
    assert sorted(got) == list(range(MESSAGES))
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".msg", ".part")]  # all taken
