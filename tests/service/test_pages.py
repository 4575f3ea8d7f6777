"""List pages carry a bounded amount of stored results; `fields=summary` carries none."""

from __future__ import annotations

import json

from tests.conftest import use_settings
from tests.service.test_reports import add_experiment, api  # noqa: F401 - the fixture

CENSUS = {"kind": "census", "widths": [4], "samples_per_width": 2, "weight_decay": 0.01,
          "dataset": {"generator": "teacher", "n": 4, "d": 2}}  # fmt: skip


def test_a_page_stops_once_its_results_pass_max_result_bytes(api, monkeypatch):  # noqa: F811
    client, db = api
    big = {"rows": [{"width": w, "note": "x" * 1200} for w in range(1)]}
    mine = {add_experiment(db, CENSUS, big, [])[0] for _ in range(3)}
    db.commit()
    use_settings(monkeypatch, MAX_RESULT_BYTES="2000")

    seen, cursor, pages = [], None, 0
    while True:
        params = {"kind": "census", "limit": 50, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/experiments", params=params).json()
        pages += 1
        sizes = [len(json.dumps(e["result"])) for e in page["items"] if e["result"] is not None]
        assert len(sizes) <= 1 or sum(sizes) <= 2000, sizes
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert mine <= set(seen) and len(seen) == len(set(seen))
    assert pages >= 3  # each big result needed a page of its own

    summary = client.get("/v1/experiments", params={"kind": "census", "fields": "summary"}).json()
    assert mine <= {e["id"] for e in summary["items"]}
    assert all(e["result"] is None for e in summary["items"])
    one = client.get(f"/v1/experiments/{next(iter(mine))}").json()
    assert one["result"] == big  # the full answer is still there


def test_a_large_result_is_served_as_stored(api):  # noqa: F811
    client, db = api
    result = {"optimum": 0.125, "neurons": [{"w": [0.1 * i] * 50, "a": -1.5} for i in range(2000)]}
    spec = {"kind": "optimum", "weight_decay": 0.01,
            "dataset": {"generator": "teacher", "n": 4, "d": 2}}  # fmt: skip
    exp_id = add_experiment(db, spec, result, [])[0]
    db.commit()
    resp = client.get(f"/v1/experiments/{exp_id}")
    assert resp.status_code == 200 and len(resp.content) > 500_000
    body = resp.json()
    assert body["result"] == result and body["status"] == "succeeded"
    assert body["id"] == exp_id and body["progress"] == {"done": 0, "total": 0, "unit": "items"}
    again = client.get(f"/v1/experiments/{exp_id}", headers={"If-None-Match": resp.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
