"""Watching an experiment on a real stack: the long-poll and the webhooks.

The API runs in uvicorn (in a thread of this process, so the test can read its
watcher's counters); workers, PostgreSQL and Redis are real. Webhooks go to a
receiver on 127.0.0.1 that this test runs, and their signatures are checked
here with an HMAC written independently of service/notify.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from tests.conftest import eventually, use_settings
from tests.e2e.test_optimum_e2e import SLOW
from tests.e2e.test_optimum_e2e import SPEC as QUICK

# QUICK takes well under a second of work; SLOW a few seconds, so that long-polls are
# waiting when it ends.
FAST_WEBHOOKS = {"NOTIFY_BACKOFF": "1", "NOTIFY_TIMEOUT": "3", "NOTIFY_RESEND_AFTER": "2"}
TERMINAL = ("succeeded", "failed", "cancelled")


class Server:
    """The API in uvicorn, in a thread of this process."""

    def __init__(self) -> None:
        from service.app import create_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.app: FastAPI = create_app()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning")
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
        self.thread.start()
        eventually(lambda: self.uvicorn.started, 30, what="uvicorn to start")

    @property
    def watcher(self) -> Any:
        return self.app.state.watcher

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def env(stack, monkeypatch) -> dict[str, str]:
    """The stack's environment with quick webhook retries, for the API and the workers."""
    stack.update(FAST_WEBHOOKS)
    use_settings(monkeypatch, **FAST_WEBHOOKS)
    return stack


@pytest.fixture
def server(env) -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.stop()


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers the given statuses in turn (then 200)."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        answers = list(statuses)
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(answers.pop(0) if answers else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(*statuses: int) -> Receiver:
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


def when(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def verify(secret: bytes, headers: dict[str, str], body: bytes) -> None:
    """The Benignity-Signature of the contract, checked independently."""
    parts = dict(p.split("=", 1) for p in headers["benignity-signature"].split(","))
    expected = hmac.new(secret, f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)
    assert abs(int(parts["t"]) - time.time()) < 120


def notifications(base: str, experiment_id: str) -> list[dict]:
    answer = httpx.get(f"{base}/v1/experiments/{experiment_id}/notifications")
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def settled(base: str, spec: dict, hook: Receiver) -> list[dict]:
    """Submit `spec` notifying `hook`; its notifications once the first is settled."""
    exp = httpx.post(f"{base}/v1/experiments", json={**spec, "notify": hook.url}).json()
    return eventually(
        lambda: notifications(base, exp["id"]),
        120,
        until=lambda n: n and n[0]["status"] != "pending",
        what="the webhook to settle",
    )


# --- the long-poll ------------------------------------------------------------------


@pytest.mark.parametrize("poll_cache", ["0.5", "0"])
def test_a_long_poll_answers_within_a_second_of_completion(
    env, monkeypatch, start_worker, poll_cache
):
    use_settings(monkeypatch, POLL_CACHE_SECONDS=poll_cache)
    server = Server()
    try:
        watch_to_the_end(server.url, start_worker)
    finally:
        server.stop()


def watch_to_the_end(base: str, start_worker: Callable[[], Any]) -> None:
    exp = httpx.post(f"{base}/v1/experiments", json=SLOW).json()
    url = f"{base}/v1/experiments/{exp['id']}"
    first = httpx.get(url)
    tag, body = first.headers["etag"], first.json()
    assert body["status"] == "queued"  # no worker yet: the long-polls start before the work
    threading.Thread(target=start_worker, daemon=True).start()
    calls, seen_at = [], None
    while body["status"] not in TERMINAL:
        began = time.time()
        answer = httpx.get(url, params={"wait": 30}, headers={"If-None-Match": tag}, timeout=40)
        seen_at = time.time()
        calls.append((answer.status_code, seen_at - began))
        if answer.status_code == 200:
            tag, body = answer.headers["etag"], answer.json()
    assert body["status"] == "succeeded", body
    late = seen_at - when(body["finished_at"])
    assert late < 1.0, f"the client learnt of completion {late:.2f} s after it ({calls})"
    print(f"learnt of completion {late:.3f} s after it; calls (status, seconds): {calls}")
    # each answer came from a change (queued -> running -> succeeded), not from a tight loop
    assert 2 <= len(calls) <= 4, calls


def finished(base: str) -> tuple[str, str]:
    """The URL and ETag of a QUICK experiment, once it has finished."""
    exp = httpx.post(f"{base}/v1/experiments", json=QUICK).json()
    url = f"{base}/v1/experiments/{exp['id']}"
    eventually(lambda: httpx.get(url).json()["status"], 120, until=lambda s: s in TERMINAL)
    return url, httpx.get(url).headers["etag"]


def test_an_unchanged_experiment_answers_304_after_the_wait(server, start_worker):
    start_worker()
    url, tag = finished(server.url)

    began = time.monotonic()
    answer = httpx.get(url, params={"wait": 1.5}, headers={"If-None-Match": tag}, timeout=10)
    took = time.monotonic() - began
    assert answer.status_code == 304 and answer.headers["etag"] == tag
    assert 1.5 <= took < 3.0, took

    began = time.monotonic()  # a client that is behind gets the body at once
    answer = httpx.get(url, params={"wait": 30}, headers={"If-None-Match": '"old"'}, timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "succeeded"
    assert time.monotonic() - began < 1.0

    answer = httpx.get(url, params={"wait": 1})  # no ETag: the state on arrival, then 200
    assert answer.status_code == 200 and answer.headers["etag"] == tag

    bad = httpx.get(url, params={"wait": -1})
    assert bad.status_code == 422, bad.text
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert bad.json()["errors"][0]["loc"] == ["query", "wait"]


def test_many_waiters_share_one_read_per_tick(server, start_worker):
    start_worker()
    url, tag = finished(server.url)
    watcher, wait, waiters = server.watcher, 4.0, 50
    reads = watcher.reads
    client = httpx.Client(limits=httpx.Limits(max_connections=waiters), timeout=30)

    def long_poll(_: int) -> int:
        headers = {"If-None-Match": tag}
        return client.get(url, params={"wait": wait}, headers=headers).status_code

    with client, ThreadPoolExecutor(1) as monitor, ThreadPoolExecutor(waiters) as pool:
        peak = monitor.submit(
            eventually, lambda: watcher.waiters, 10, until=lambda n: n == waiters, interval=0.01
        )
        statuses = list(pool.map(long_poll, range(waiters)))
        assert peak.result() == waiters  # all 50 waited at once
    assert statuses == [304] * waiters
    ticks = watcher.reads - reads
    print(f"{waiters} waiters for {wait:g} s: {ticks} state reads")
    interval = server.app.state.watcher.interval
    # one state read per tick for all 50 (their arrivals spread over a few ticks), not 50
    assert 1 <= ticks <= (wait + 1.5) / interval + 2, ticks
    eventually(lambda: (watcher.waiters, watcher.watches), 2, until=lambda w: w == (0, {}))


def test_a_client_that_leaves_releases_its_waiter(server):
    exp = httpx.post(f"{server.url}/v1/experiments", json=QUICK).json()  # no worker: stays queued
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        request = f"GET /v1/experiments/{exp['id']}?wait=30 HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(request.encode())
        eventually(lambda: server.watcher.waiters, 5, until=lambda n: n == 1)
    eventually(lambda: server.watcher.waiters, 3, until=lambda n: n == 0, what="release")
    eventually(lambda: server.watcher.watches, 3, until=lambda w: w == {})


def test_another_tenants_experiment_is_404_with_wait_and_notifications(env, monkeypatch):
    from fastapi.testclient import TestClient

    from service.app import create_app

    use_settings(monkeypatch, API_TOKENS="a:token-a,b:token-b")
    with TestClient(create_app()) as api:
        a, b = ({"Authorization": f"Bearer token-{t}"} for t in "ab")
        exp = api.post("/v1/experiments", json=QUICK, headers=a).json()
        began = time.monotonic()
        assert api.get(f"/v1/experiments/{exp['id']}?wait=5", headers=b).status_code == 404
        assert time.monotonic() - began < 2
        assert api.get(f"/v1/experiments/{exp['id']}/notifications", headers=b).status_code == 404
        mine = api.get(f"/v1/experiments/{exp['id']}/notifications", headers=a)
        assert mine.status_code == 200 and mine.json() == {"items": []}


# --- webhooks -----------------------------------------------------------------------


def test_a_webhook_is_delivered_signed_with_the_generated_secret(server, start_worker, receiver):
    hook = receiver()
    start_worker()
    items = settled(server.url, QUICK, hook)
    assert [(n["event"], n["status"], n["attempts"]) for n in items] == [
        ("experiment.succeeded", "delivered", 1)
    ]
    assert items[0]["response_status"] == 200 and items[0]["delivered_at"]
    assert len(hook.calls) == 1
    headers, body = hook.calls[0]
    # no WEBHOOK_SECRET: the worker made one in BENIGNITY_HOME, readable only by its owner
    secret_file = _home() / "webhook_secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    verify(secret_file.read_text().strip().encode(), headers, body)
    payload = json.loads(body)
    assert payload["event"] == "experiment.succeeded"
    assert payload["experiment"]["id"] == items[0]["experiment_id"]
    assert payload["experiment"]["status"] == "succeeded"
    assert payload["experiment"]["result"] is None
    assert headers["benignity-event"] == "experiment.succeeded"
    assert headers["benignity-delivery"] == str(items[0]["id"])
    assert datetime.fromisoformat(payload["sent_at"])


def _home():
    from service.config import get_settings

    return get_settings().benignity_home


def test_a_webhook_is_retried_until_the_receiver_takes_it(env, server, start_worker, receiver):
    hook = receiver(500, 500)
    start_worker()
    items = settled(server.url, QUICK, hook)
    assert [(n["status"], n["attempts"], n["response_status"]) for n in items] == [
        ("delivered", 3, 200)
    ]
    assert len(hook.calls) == 3
    assert len({h["benignity-delivery"] for h, _ in hook.calls}) == 1  # one delivery, 3 tries


def test_a_webhook_that_is_never_taken_fails_after_its_attempts(
    env, monkeypatch, receiver, start_worker
):
    use_settings(monkeypatch, NOTIFY_ATTEMPTS="2", WEBHOOK_SECRET="s3cret")
    env.update(NOTIFY_ATTEMPTS="2", WEBHOOK_SECRET="s3cret")
    srv = Server()
    try:
        hook = receiver(503, 503, 503)
        start_worker()
        items = settled(srv.url, QUICK, hook)
        assert [(n["status"], n["attempts"], n["response_status"]) for n in items] == [
            ("failed", 2, 503)
        ]
        assert "503" in items[0]["error"]
        for headers, body in hook.calls:
            verify(b"s3cret", headers, body)
    finally:
        srv.stop()


def test_a_failure_notifies_with_its_reason(server, start_worker, receiver):
    hook = receiver()
    start_worker()
    failing = {  # accepted, but the interior-point solve fails on it (tests/e2e/test_failures)
        "kind": "optimum",
        "dataset": {"generator": "teacher", "n": 6, "d": 3, "teacher_width": 10, "seed": 0},
        "weight_decay": 1e100,
    }
    items = settled(server.url, failing, hook)
    assert [(n["event"], n["status"]) for n in items] == [("experiment.failed", "delivered")]
    payload = json.loads(hook.calls[0][1])
    assert payload["event"] == "experiment.failed"
    assert payload["experiment"]["error"]["type"] == "SolverError"


def test_cancel_notifies_even_when_its_message_was_lost(
    server, start_worker, receiver, redis_client
):
    """The cancel's message is lost (the broker is emptied before any worker runs); the
    reaper sends it again, and the webhook arrives."""
    hook = receiver()
    exp = httpx.post(f"{server.url}/v1/experiments", json={**SLOW, "notify": hook.url}).json()
    answer = httpx.post(f"{server.url}/v1/experiments/{exp['id']}/cancel")
    assert answer.status_code == 202 and answer.json()["status"] == "cancelled"
    assert [n["status"] for n in notifications(server.url, exp["id"])] == ["pending"]
    redis_client.flushdb()  # every message, the notification's included, is gone
    start_worker()
    items = eventually(
        lambda: notifications(server.url, exp["id"]),
        60,
        until=lambda n: n[0]["status"] != "pending",
        what="the reaper to re-send the notification",
    )
    assert [(n["event"], n["status"]) for n in items] == [("experiment.cancelled", "delivered")]
    assert len(hook.calls) == 1
    assert json.loads(hook.calls[0][1])["experiment"]["status"] == "cancelled"


def test_notify_hosts_refuses_other_hosts_at_submit(env, monkeypatch):
    from fastapi.testclient import TestClient

    from service.app import create_app

    use_settings(monkeypatch, NOTIFY_HOSTS="hooks.example.org, 127.0.0.1")
    with TestClient(create_app()) as api:
        bad = api.post("/v1/experiments", json={**QUICK, "notify": "http://10.0.0.1/x"})
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"][0]["loc"] == ["body", "notify"]
        assert "NOTIFY_HOSTS" in bad.json()["errors"][0]["msg"]
        good = api.post("/v1/experiments", json={**QUICK, "notify": "http://127.0.0.1:9/x"})
        assert good.status_code == 202, good.text
