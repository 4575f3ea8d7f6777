"""Finding experiments: names, tags and notes; list filters; PATCH and DELETE."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from service.models import (
    CensusCone,
    Experiment,
    ExperimentTag,
    Notification,
    Run,
    WorkItem,
    as_utc,
)
from tests.service.test_api import SPEC, assert_problem, broker, make_client  # noqa: F401 - fixture
from tests.service.test_tenants import A1, ROOT, TOKENS, B

LIST = "/v1/experiments"
CENSUS = {**SPEC, "kind": "census", "widths": [2], "samples_per_width": 2}
TRAINING = {**SPEC, "kind": "training", "widths": [2], "init_scales": [1.0], "max_epochs": 5}


@pytest.fixture
def client(pg_engine, broker, monkeypatch) -> Iterator[TestClient]:  # noqa: F811
    """A client of its own tenant: the session's database holds experiments that other
    test files committed, and lists here must see only this test's."""
    tenant = uuid.uuid4().hex[:12]
    for client in make_client(pg_engine, monkeypatch, API_TOKENS=f"{tenant}:{tenant}-token"):
        client.headers["Authorization"] = f"Bearer {tenant}-token"
        yield client


@pytest.fixture
def tenants(pg_engine, broker, monkeypatch) -> Iterator[TestClient]:  # noqa: F811
    yield from make_client(pg_engine, monkeypatch, API_TOKENS=TOKENS, ADMIN_TENANT="ops")


def submit(client: TestClient, headers: dict[str, str] | None = None, **fields: object) -> dict:
    resp = client.post(LIST, json={**SPEC, **fields}, headers=headers)
    assert resp.status_code == 202, resp.text
    return resp.json()


def ids(client: TestClient, headers: dict[str, str] | None = None, **params: object) -> list[str]:
    """Every id the list gives for these filters, following next_cursor."""
    out, cursor = [], None
    while True:
        query = {"limit": 1000, **params, "cursor": cursor}
        resp = client.get(
            LIST, params={k: v for k, v in query.items() if v is not None}, headers=headers
        )
        assert resp.status_code == 200, resp.text
        page = resp.json()
        out += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return out


def sql(client: TestClient) -> Session:
    """A session on the test's own connection (its rows are rolled back with the test's)."""
    from service.db import database

    db = client.portal.call(client.app.dependency_overrides[database])  # type: ignore[union-attr]
    return db.factory()


def test_an_experiment_shows_its_name_sorted_tags_and_notes(client):
    exp = submit(client, name="Lambda sweep", tags=["zeta", "alpha", "m:1"], notes="first try")
    assert (exp["name"], exp["tags"], exp["notes"]) == (
        "Lambda sweep",
        ["alpha", "m:1", "zeta"],
        "first try",
    )
    assert client.get(f"{LIST}/{exp['id']}").json() == exp
    (listed,) = client.get(LIST).json()["items"]
    assert listed == {**exp, "timings": None}  # a list leaves the per-stage timings out
    bare = submit(client)
    assert (bare["name"], bare["tags"], bare["notes"]) == (None, [], None)


def test_tags_all_must_match(client):
    both = submit(client, tags=["a", "b"])["id"]
    only_a = submit(client, tags=["a"])["id"]
    only_b = submit(client, tags=["b", "c"])["id"]
    submit(client)
    assert ids(client, tag=["a", "b"]) == [both]
    assert ids(client, tag=["a"]) == [only_a, both]
    assert ids(client, tag=["b"]) == [only_b, both]
    assert ids(client, tag=["a", "a"]) == [only_a, both]  # a repeated tag is one condition
    assert ids(client, tag=["a", "c"]) == []
    assert_problem(client.get(LIST, params={"tag": "no spaces"}), 422, "tag")


def test_name_is_a_case_insensitive_substring_with_wildcards_taken_literally(client):
    percent = submit(client, name="Sweep 100% done")["id"]
    underscore = submit(client, name="sweep_b")["id"]
    other = submit(client, name="Other")["id"]
    submit(client)
    assert ids(client, name="SWEEP") == [underscore, percent]
    assert ids(client, name="100%") == [percent]
    assert ids(client, name="%") == [percent]
    assert ids(client, name="_") == [underscore]
    assert ids(client, name="p 1") == [percent]
    assert ids(client, name="oth") == [other]
    assert ids(client, name="\\") == []
    assert_problem(client.get(LIST, params={"name": ""}), 422, "name")


def test_generator_n_and_d(client):
    teacher = submit(client)["id"]  # teacher, n 6, d 10
    orthogonal = submit(client, dataset={"generator": "orthogonal", "n": 3, "d": 10})["id"]
    theorem2 = submit(client, dataset={"generator": "theorem2", "d": 4})["id"]
    custom = submit(client, dataset={"generator": "custom", "X": [[1.0, 2.0]] * 3, "y": [1] * 3})
    assert ids(client, generator="orthogonal") == [orthogonal]
    assert ids(client, d=10) == [orthogonal, teacher]
    assert ids(client, n=3) == [custom["id"], orthogonal]
    assert ids(client, n=4, d=4) == [theorem2]
    assert ids(client, generator="custom", d=2) == [custom["id"]]
    assert ids(client, generator="teacher", n=3) == []
    for bad in ({"generator": "gaussian"}, {"n": 0}, {"d": "ten"}, {"n": 2**31}):
        (name,) = bad
        problem = assert_problem(client.get(LIST, params=bad), 422, name)
        assert problem["errors"][0]["loc"] == ["query", name]


def test_created_after_and_before(client):
    made = [submit(client, seed=i) for i in range(4)]
    times = [e["created_at"] for e in made]
    assert ids(client, created_after=times[2]) == [made[3]["id"], made[2]["id"]]
    assert ids(client, created_before=times[2]) == [made[1]["id"], made[0]["id"]]
    assert ids(client, created_after=times[1], created_before=times[3]) == [
        made[2]["id"],
        made[1]["id"],
    ]
    east = datetime.fromisoformat(times[2]).astimezone(timezone(timedelta(hours=5)))
    assert ids(client, created_after=east.isoformat()) == [made[3]["id"], made[2]["id"]]
    later = (datetime.fromisoformat(times[3]) + timedelta(hours=1)).replace(tzinfo=None)
    assert ids(client, created_after=later.isoformat()) == []  # naive times are UTC
    assert len(ids(client, created_before=later.isoformat())) == 4
    for bad in ("yesterday", "2026-13-01", "1700000000"):
        problem = assert_problem(client.get(LIST, params={"created_after": bad}), 422, "ISO 8601")
        assert problem["errors"][0]["loc"] == ["query", "created_after"], problem
    assert_problem(client.get(LIST, params={"created_before": "1700000000"}), 422, "ISO 8601")


def test_id_prefix(client):
    made = [submit(client, seed=i)["id"] for i in range(3)]
    for exp_id in made:
        prefix = next(
            exp_id[:k] for k in range(1, 33) if sum(i.startswith(exp_id[:k]) for i in made) == 1
        )
        assert ids(client, id_prefix=prefix) == [exp_id]
        assert ids(client, id_prefix=exp_id) == [exp_id]
    for bad in ("ABC", "xyz", "0" * 33, "%"):
        assert_problem(client.get(LIST, params={"id_prefix": bad}), 422, "id_prefix")


def test_pages_of_a_filtered_list(client):
    tagged = []
    for i in range(7):
        exp = submit(client, seed=i, tags=["keep"] if i % 2 == 0 else ["drop"])
        if i % 2 == 0:
            tagged.append(exp["id"])
    seen, cursor, pages = [], None, 0
    while True:
        params = {
            "tag": "keep",
            "limit": 2,
            "fields": "summary",
            **({"cursor": cursor} if cursor else {}),
        }
        page = client.get(LIST, params=params).json()
        assert all(e["tags"] == ["keep"] and e["result"] is None for e in page["items"])
        seen += [e["id"] for e in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == tagged[::-1] and pages == 2


def test_a_list_page_reads_tags_in_one_query(client, pg_engine):
    for i in range(2):
        submit(client, seed=i, tags=["x", f"t{i}"])

    def statements(limit: int) -> int:
        count = 0

        def seen(*_: object) -> None:
            nonlocal count
            count += 1

        event.listen(pg_engine, "before_cursor_execute", seen)
        try:
            assert len(client.get(LIST, params={"limit": limit}).json()["items"]) == limit
        finally:
            event.remove(pg_engine, "before_cursor_execute", seen)
        return count

    for i in range(2, 6):
        submit(client, seed=i, tags=["x", f"t{i}"])
    one, six = statements(1), statements(6)
    assert one == six and one > 0, (one, six)


def test_patch_replaces_the_given_fields_only(client):
    exp = submit(client, name="first", tags=["a", "b"], notes="n1")
    url = f"{LIST}/{exp['id']}"
    assert client.get(url).json()["tags"] == ["a", "b"]  # now in the poll cache
    resp = client.patch(url, json={"tags": ["c", "b"], "notes": "n2"})
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert (got["name"], got["tags"], got["notes"]) == ("first", ["b", "c"], "n2")
    assert got["spec"] == exp["spec"]  # the spec stays as submitted
    again = client.get(url)
    assert again.json() == got and again.headers["etag"] == resp.headers["etag"]
    assert ids(client, tag="c") == [exp["id"]] and ids(client, tag="a") == []
    cleared = client.patch(url, json={"name": None, "tags": []}).json()
    assert (cleared["name"], cleared["tags"], cleared["notes"]) == (None, [], "n2")
    assert client.patch(url, json={}).json() == cleared
    assert ids(client, name="first") == []


def test_patch_with_if_match(client):
    exp = submit(client, notes="v1")
    url = f"{LIST}/{exp['id']}"
    tag = client.get(url).headers["etag"]
    ok = client.patch(url, json={"notes": "v2"}, headers={"If-Match": tag})
    assert ok.status_code == 200 and ok.headers["etag"] != tag
    stale = client.patch(url, json={"notes": "v3"}, headers={"If-Match": tag})
    problem = assert_problem(stale, 412, "GET it again")
    assert problem["errors"][0]["loc"] == ["header", "If-Match"]
    assert client.get(url).json()["notes"] == "v2"  # the stale write changed nothing
    fresh = client.patch(url, json={"notes": "v3"}, headers={"If-Match": ok.headers["etag"]})
    assert fresh.status_code == 200 and fresh.json()["notes"] == "v3"
    assert client.patch(url, json={"notes": "v4"}, headers={"If-Match": "*"}).status_code == 200


def test_patch_refuses_what_a_spec_would(client):
    exp = submit(client)
    url = f"{LIST}/{exp['id']}"
    problem = assert_problem(client.patch(url, json={"note": "x"}), 422)
    assert problem["errors"][0] == {
        "loc": ["body", "note"],
        "msg": "unknown field 'note'; did you mean 'notes'?",
    }
    assert_problem(client.patch(url, json={"notify": "http://x.test/"}), 422, "notify")
    assert_problem(client.patch(url, json={"tags": ["a b"]}), 422, "tags")
    assert_problem(client.patch(url, json={"tags": ["a", "a"]}), 422, "distinct")
    assert_problem(client.patch(url, json={"tags": [f"t{i}" for i in range(33)]}), 422, "tags")
    assert_problem(client.patch(url, json={"name": "x" * 201}), 422, "name")
    assert_problem(client.patch(url, json={"name": 5}), 422, "name")
    assert_problem(client.patch(url, json={"tags": None}), 422, "tags")
    assert_problem(client.patch(url, json=["notes"]), 422)
    assert_problem(client.patch(f"{LIST}/{'0' * 32}", json={"notes": "x"}), 404)
    assert_problem(client.patch(f"{LIST}/nope", json={"notes": "x"}), 404)
    assert client.get(url).json() == exp


def test_delete_refuses_unfinished_experiments(client):
    exp = submit(client)
    url = f"{LIST}/{exp['id']}"
    assert_problem(client.delete(url), 409, "cancel it first", "queued")
    assert client.get(url).json()["status"] == "queued"


def owned(client: TestClient, experiment_id: str) -> dict[str, int]:
    with sql(client) as session:
        return {
            table.__tablename__: session.scalar(
                select(func.count()).select_from(table).where(table.experiment_id == experiment_id)
            )
            for table in (Run, WorkItem, CensusCone, ExperimentTag, Notification)
        }


def test_delete_removes_a_finished_experiment_and_all_it_owns(client):
    census = submit(client, **CENSUS, tags=["gone"])
    training = submit(client, **TRAINING, tags=["gone", "kept"])
    with sql(client) as session:
        for exp in (census, training):
            session.add(
                Notification(experiment_id=exp["id"], event="cancelled", url="http://x.test/")
            )
        cone = {
            "verdict": "global",
            "value": 1.0,
            "gap": 0.0,
            "covered": 1.0,
            "method": "x",
            "detail": {},
        }
        session.add_all(
            CensusCone(experiment_id=census["id"], width=2, sample=s, **cone) for s in (0, 1)
        )
        session.commit()
    for exp in (census, training):
        assert client.post(f"{LIST}/{exp['id']}/cancel").status_code == 202
    before = owned(client, census["id"])
    assert all(before.values()), before
    kept = owned(client, training["id"])
    assert kept["runs"] == 1 and kept["experiment_tags"] == 2

    url = f"{LIST}/{census['id']}"
    assert client.get(url).status_code == 200  # now in the poll cache
    resp = client.delete(url)
    assert resp.status_code == 204 and resp.content == b""
    assert owned(client, census["id"]) == dict.fromkeys(before, 0)
    assert owned(client, training["id"]) == kept  # another experiment's rows stay
    assert_problem(client.get(url), 404)
    assert_problem(client.get(f"{url}/cones"), 404)
    assert_problem(client.delete(url), 404)
    assert ids(client, tag="gone") == [training["id"]]


def test_tenants_find_patch_and_delete_only_their_own(tenants):
    client = tenants
    mine = submit(client, A1, name="shared name", tags=["t"])
    theirs = submit(client, B, name="shared name", tags=["t"])
    for who, own in ((A1, mine["id"]), (B, theirs["id"])):
        assert ids(client, who, tag="t") == [own]
        assert ids(client, who, name="SHARED") == [own]
        assert ids(client, who, id_prefix=theirs["id"]) == ([own] if who is B else [])
    assert ids(client, ROOT, tag="t") == [theirs["id"], mine["id"]]

    url = f"{LIST}/{theirs['id']}"
    assert_problem(client.patch(url, json={"notes": "mine now"}, headers=A1), 404, "no experiment")
    assert client.post(f"{url}/cancel", headers=B).status_code == 202
    assert_problem(client.delete(url, headers=A1), 404, "no experiment")
    assert client.get(url, headers=B).json()["notes"] is None
    assert client.patch(url, json={"notes": "ops"}, headers=ROOT).json()["notes"] == "ops"
    assert client.delete(url, headers=B).status_code == 204
    assert_problem(client.get(url, headers=ROOT), 404)


def test_the_same_queries_on_sqlite(tmp_path):
    """The embedded database (`benignity serve` without DATABASE_URL) filters, aggregates
    tags, relabels and deletes as PostgreSQL does."""
    from service import crud, crud_find
    from service.db import make_engine
    from service.models import Base

    engine = make_engine(f"sqlite:///{tmp_path / 'find.db'}")
    Base.metadata.create_all(engine)
    made = []
    with Session(engine) as session:
        for i, (name, tags) in enumerate([("a_b", ["x", "y"]), ("A%B", ["y"]), ("ab", [])]):
            spec = {**TRAINING, "seed": i, "name": name, "tags": tags}
            exp, _ = crud.create_experiment(
                session, kind="training", spec=spec, spec_hash="h", idempotency_key=None,
                items=[{"task": "train"}], runs=[{"width": 2}],
            )  # fmt: skip
            made.append(exp.id)
        session.commit()

        def found(**filters: object) -> list[str]:
            f = crud_find.Filters(**filters)  # type: ignore[arg-type]
            rows, _ = crud.list_experiments(session, filters=f, limit=10, cursor=None)
            return sorted(r.id for r in rows)

        assert found(tags=("x", "y")) == [made[0]]
        assert found(name="a_") == [made[0]] and found(name="%") == [made[1]]
        assert found(name="A") == sorted(made) and found(id_prefix=made[2][:32]) == [made[2]]
        created = session.get(Experiment, made[1]).created_at  # type: ignore[union-attr]
        east = as_utc(created).astimezone(timezone(timedelta(hours=5)))  # the same moment
        assert found(created_after=east) == sorted(made[1:])
        assert found(created_before=east) == [made[0]]
        snap = crud.snapshot(session, experiment_id=made[0], tenant=None)
        assert snap is not None and crud_find.split_tags(snap.tag_text) == ["x", "y"]
        crud_find.relabel(session, experiment_id=made[0], changes={"tags": ["z"], "notes": "n"})
        session.commit()
        assert crud_find.tags_of(session, experiment_ids=made) == {made[0]: ["z"], made[1]: ["y"]}
        with pytest.raises(crud_find.Unfinished, match="cancel it first"):
            crud_find.delete_experiment(session, experiment_id=made[0])
        crud.cancel_experiment(session, experiment_id=made[0])
        crud_find.delete_experiment(session, experiment_id=made[0])
        session.commit()
        assert found() == sorted(made[1:])
        left = {
            t.__tablename__: session.scalar(select(func.count()).select_from(t))
            for t in (Run, WorkItem, ExperimentTag)
        }
        assert left == {"runs": 2, "work_items": 2, "experiment_tags": 1}  # the others' rows
    engine.dispose()
