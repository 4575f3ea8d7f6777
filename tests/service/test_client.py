"""The Python client (service/client.py) against a live API on the test database.

No worker runs here: experiments stay queued unless cancelled, which is all these
tests need. The database lives as long as the test session, so a test counts only
the experiments it made (the e2e tests in tests/e2e/test_cli.py run them to the end). Faults are
injected at the client's transport, in front of the real server.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from service.client import (
    AmbiguousId,
    ApiError,
    BadAnswer,
    Client,
    Conflict,
    NotFound,
    PreconditionFailed,
    Unreachable,
    WaitTimeout,
)
from tests.services import free_port

OPTIMUM = {
    "kind": "optimum",
    "dataset": {"generator": "teacher", "n": 4, "d": 2, "seed": 0},
    "weight_decay": 0.01,
}
SWEEP = {
    "kind": "training",
    "dataset": {"generator": "teacher", "n": 4, "d": 2, "seed": 0},
    "weight_decay": 0.01,
    "widths": [3, 5],
    "init_scales": [0.01, 1.0],
    "seeds": 3,
    "optimizer": {"name": "gd", "lr": 0.05},
    "max_epochs": 1000,
    "device": "cpu",
}


@pytest.fixture
def server(live_server) -> str:
    return live_server(QUOTA_ACTIVE_ITEMS="100000")


@pytest.fixture
def client(server) -> Iterator[Client]:
    with Client(server, retries=2, backoff=0.05) as c:
        yield c


class Faulty(httpx.BaseTransport):
    """The real network, except that `fault(request, response)` may replace an answer."""

    def __init__(self, fault) -> None:  # type: ignore[no-untyped-def]
        self.inner = httpx.HTTPTransport()
        self.fault = fault
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self.inner.handle_request(request)
        replaced = self.fault(request, response)
        if replaced is not None:
            response.read()
            response.close()
            return replaced
        return response

    def close(self) -> None:
        self.inner.close()


def test_the_client_imports_no_server_or_numerical_code():
    code = (
        "import sys, service.client, service.cli_client; "
        "bad = [m for m in ('torch', 'cvxpy', 'sqlalchemy', 'numpy', 'pandas', 'fastapi', "
        "'celery') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_submit_get_and_list_are_typed(client):
    exp = client.submit(OPTIMUM)
    assert exp.kind == "optimum" and exp.status == "queued" and not exp.finished
    assert len(exp.id) == 32 and exp.etag
    got = client.get(exp.id)
    assert got.id == exp.id and got.progress.total == 1 and got.spec["weight_decay"] == 0.01
    assert exp.id in [e.id for e in client.list(kind="optimum")]
    assert exp.id not in [e.id for e in client.list(kind="census")]


def test_list_pages_through_everything(client):
    ids = [client.submit(OPTIMUM).id for _ in range(5)]
    listed = [e.id for e in client.experiments(page_size=2, fields="summary")]
    assert listed[:5] == ids[::-1]  # newest first, across pages
    assert len(listed) == len(set(listed)) == len(list(client.experiments(page_size=1000)))


def ids_of(client: Client) -> set[str]:
    return {e.id for e in client.experiments(fields="summary", page_size=1000)}


def test_a_retried_submit_creates_one_experiment(client, server):
    before = ids_of(client)

    def lose_first_answer(request: httpx.Request, response: httpx.Response):
        if request.method == "POST" and len(faulty.requests) == 1:
            raise httpx.ReadError("connection reset by peer", request=request)
        return None

    faulty = Faulty(lose_first_answer)
    with Client(server, retries=3, backoff=0.05, transport=faulty) as lossy:
        exp = lossy.submit(OPTIMUM)
    posts = [r for r in faulty.requests if r.method == "POST"]
    assert len(posts) == 2, "the submit was retried"
    assert posts[0].headers["Idempotency-Key"] == posts[1].headers["Idempotency-Key"]
    assert ids_of(client) - before == {exp.id}, "one experiment, not two"


def test_idempotency_keys_explicit_and_per_submit(client):
    first = client.submit(OPTIMUM, idempotency_key="nightly-42")
    again = client.submit(OPTIMUM, idempotency_key="nightly-42")
    other = client.submit(OPTIMUM)  # a fresh key: a new experiment
    assert again.id == first.id and other.id != first.id
    with pytest.raises(ApiError) as info:
        client.submit({**OPTIMUM, "weight_decay": 0.02}, idempotency_key="nightly-42")
    assert info.value.status == 422
    assert any(e["loc"] == ["header", "Idempotency-Key"] for e in info.value.errors)


def test_the_client_retries_until_the_server_comes_up(live_server):
    live_server()  # the test database's settings, for the server started late below
    from service.app import create_app

    port = free_port()
    late = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    timer = threading.Timer(1.5, late.run)
    started = time.monotonic()
    timer.start()
    try:
        with Client(f"http://127.0.0.1:{port}", retries=10, backoff=0.1, max_delay=0.5) as c:
            exp = c.submit(OPTIMUM)
            waited = time.monotonic() - started
            assert c.get(exp.id).status == "queued"
    finally:
        late.should_exit = True
        timer.join(timeout=30)
    assert waited >= 1.5 and exp.status == "queued"


def test_retry_after_is_honoured_on_503(client, server):
    def busy_once(request: httpx.Request, response: httpx.Response):
        if len(faulty.requests) == 1:
            body = {"title": "Service Unavailable", "status": 503, "detail": "database away"}
            return httpx.Response(503, headers={"Retry-After": "1"}, json=body)
        return None

    exp = client.submit(OPTIMUM)
    faulty = Faulty(busy_once)
    with Client(server, retries=2, backoff=0.01, transport=faulty) as patient:
        started = time.monotonic()
        assert patient.get(exp.id).id == exp.id
        assert time.monotonic() - started >= 1.0
    faulty.requests.clear()
    with Client(server, retries=0, transport=faulty) as hasty, pytest.raises(ApiError) as info:
        hasty.get(exp.id)
    assert info.value.status == 503 and info.value.detail == "database away"


def test_unreachable_after_the_retries():
    port = free_port()  # nothing listens there
    with (
        Client(f"http://127.0.0.1:{port}", retries=2, backoff=0.01) as c,
        pytest.raises(Unreachable) as info,
    ):
        c.get("0" * 32)
    assert info.value.reason == "connection refused"
    assert str(info.value) == f"cannot reach http://127.0.0.1:{port} (connection refused)"


def test_api_errors_carry_the_problem(client):
    with pytest.raises(ApiError) as info:
        client.submit({**OPTIMUM, "weight_decay": 0})
    assert info.value.status == 422 and "weight_decay" in str(info.value.errors)
    with pytest.raises(NotFound):
        client.get("f" * 32)
    exp = client.cancel(client.submit(OPTIMUM).id)
    assert exp.status == "cancelled" and exp.finished
    with pytest.raises(Conflict) as conflict:
        client.cancel(exp.id)
    assert "already finished" in conflict.value.detail


def test_resolve_takes_unique_prefixes(client):
    # 17 ids in 16 hex digits: some first digit is shared, by pigeonhole
    ids = [client.submit(OPTIMUM).id for _ in range(17)]
    shared = next(c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) > 1)
    with pytest.raises(AmbiguousId) as info:
        client.resolve(shared)
    assert set(info.value.candidates) >= {i for i in ids if i.startswith(shared)}
    everything = ids_of(client)
    for full in ids:
        assert client.resolve(full[:12]) == full
        assert client.resolve(full.upper()) == full
    with pytest.raises(NotFound):
        client.resolve("not-hex")
    prefixes = (f"{n:04x}" for n in range(65536))
    unused = next(p for p in prefixes if not any(i.startswith(p) for i in everything))
    with pytest.raises(NotFound):
        client.resolve(unused)


def test_resolve_falls_back_to_paging_on_a_server_without_id_prefix(client, server):
    def no_id_prefix(request: httpx.Request, response: httpx.Response):
        if "id_prefix" in request.url.params:
            err = [{"loc": ["query", "id_prefix"], "msg": "unknown query parameter"}]
            body = {"title": "Unprocessable", "status": 422, "detail": "x", "errors": err}
            return httpx.Response(422, json=body)
        return None

    ids = [client.submit(OPTIMUM).id for _ in range(3)]
    faulty = Faulty(no_id_prefix)
    with Client(server, transport=faulty) as old:
        assert [old.resolve(i[:10]) for i in ids] == ids
    assert any("id_prefix" not in r.url.params for r in faulty.requests)


def test_wait_returns_when_another_client_cancels(client, server):
    exp = client.submit(OPTIMUM)
    seen = []

    def cancel() -> None:
        with Client(server) as other:
            other.cancel(exp.id)

    canceller = threading.Timer(1.0, cancel)
    canceller.start()
    started = time.monotonic()
    done = client.wait(exp.id, timeout=30, on_progress=seen.append)
    canceller.join()
    assert done.status == "cancelled" and time.monotonic() - started < 10
    assert seen[0].status == "queued" and seen[-1].status == "cancelled"


def test_wait_times_out_with_the_last_state(client):
    exp = client.submit(OPTIMUM)
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as info:
        client.wait(exp.id, timeout=0.5)
    assert info.value.experiment.status == "queued"
    assert time.monotonic() - started < 5


def test_runs_pages_and_a_frame(client):
    exp = client.submit(SWEEP)
    runs = list(client.runs(exp.id, page_size=5))
    assert len(runs) == 12 and len({r.id for r in runs}) == 12
    assert runs[0].params == {"width": 3, "init_scale": 0.01, "seed": 0}
    frame = client.runs_frame(exp.id)
    assert len(frame) == 12
    assert {"experiment_id", "run_id", "status", "width", "init_scale", "seed"} <= set(frame)
    assert frame.groupby("init_scale").size().to_dict() == {0.01: 6, 1.0: 6}
    assert client.resolve_run(exp.id, runs[4].id[:10]) == runs[4].id


def test_an_answer_that_is_not_the_api_is_a_bad_answer(server):
    def proxy_page(request: httpx.Request, response: httpx.Response):
        return httpx.Response(
            200, text="<html>sign in</html>", headers={"content-type": "text/html"}
        )

    with Client(server, transport=Faulty(proxy_page)) as c:
        with pytest.raises(BadAnswer) as info:
            c.get("0" * 32)
        assert "text/html" in str(info.value)
        with pytest.raises(BadAnswer):
            list(c.runs("0" * 32))


def test_list_filters_by_tag_name_and_id_prefix(client, server):
    mark = uuid.uuid4().hex[:8]
    tagged = client.submit({**OPTIMUM, "name": f"Sweep {mark} A", "tags": [mark, "a"]})
    other = client.submit({**OPTIMUM, "name": f"sweep {mark} B", "tags": [mark]})
    assert [e.id for e in client.list(tag=mark)] == [other.id, tagged.id]
    assert [e.id for e in client.list(tag=[mark, "a"])] == [tagged.id]
    assert [e.id for e in client.list(name=f"SWEEP {mark} b")] == [other.id]
    assert [e.id for e in client.list(tag=mark, kind="census")] == []
    got = client.get(tagged.id)
    assert got.name == f"Sweep {mark} A" and sorted(got.tags) == sorted([mark, "a"])
    faulty = Faulty(lambda request, response: None)
    with Client(server, transport=faulty) as c:
        assert c.resolve(tagged.id[:10]) == tagged.id
    assert [r.url.params.get("id_prefix") for r in faulty.requests] == [tagged.id[:10]]


def test_patch_relabels_and_delete_removes(client):
    exp = client.submit({**OPTIMUM, "name": "before", "tags": ["x"]})
    changed = client.patch(exp.id, tags=["x", "y"], notes="looked at it", if_match=exp.etag)
    assert changed.tags == ["x", "y"] and changed.notes == "looked at it"
    assert changed.name == "before"  # fields left out are kept
    with pytest.raises(PreconditionFailed):
        client.patch(exp.id, name="stale", if_match=exp.etag)
    assert client.patch(exp.id, name=None).name is None
    with pytest.raises(Conflict):
        client.delete(exp.id)  # queued: cancel it first
    client.cancel(exp.id)
    client.delete(exp.id)
    with pytest.raises(NotFound):
        client.get(exp.id)


def test_wait_long_polls_instead_of_polling(client, server):
    exp = client.submit(OPTIMUM)
    faulty = Faulty(lambda request, response: None)

    def cancel() -> None:
        with Client(server) as other:
            other.cancel(exp.id)

    canceller = threading.Timer(2.0, cancel)
    canceller.start()
    with Client(server, transport=faulty) as watcher:
        started = time.monotonic()
        done = watcher.wait(exp.id, timeout=30)
        took = time.monotonic() - started
        assert watcher._long_poll  # the server took `wait`
    canceller.join()
    assert done.status == "cancelled" and 2.0 <= took < 3.5
    gets = [r for r in faulty.requests if r.method == "GET"]
    assert len(gets) <= 3 and "wait" in gets[1].url.params


def test_notifications_record_the_webhook_of_a_cancel(client):
    exp = client.submit({**OPTIMUM, "notify": f"http://127.0.0.1:{free_port()}/hook"})
    assert client.notifications(exp.id) == []
    client.cancel(exp.id)
    (note,) = client.notifications(exp.id)
    assert note["event"] == "experiment.cancelled" and note["url"].endswith("/hook")
