"""The dashboard at /ui: served without auth and only from this service (its assets,
Plotly from the installed package, a policy that forbids other origins), while its data
stays behind the /v1 API's tokens; and the runs filters it uses (width, init_scale, lr),
checked against a filter of the whole run list in Python."""

from __future__ import annotations

import math
import re
from itertools import product

import pytest

from service.ui import STATIC, plotly_bundle
from tests.service.test_api import make_client

TOKENS = "lab-a:tok-a,lab-b:tok-b"
A = {"Authorization": "Bearer tok-a"}

SWEEP = {
    "kind": "training",
    "dataset": {"generator": "theorem2", "d": 4, "seed": 0},
    "weight_decay": 1e-4,
    "widths": [5, 20],
    "init_scales": [1e-3, 0.1, 0.5],
    "seeds": 2,
    "optimizer": {"name": "gd", "lr": [0.01, 0.05]},
    "max_epochs": 10,
    "device": "cpu",
}


@pytest.fixture
def client(pg_engine, redis_client, monkeypatch):
    yield from make_client(pg_engine, monkeypatch, API_TOKENS=TOKENS)


def test_the_page_is_served_without_a_token_and_loads_only_local_assets(client):
    page = client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert client.get("/ui/").text == page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "connect-src 'self'" in policy and "http" not in policy
    sources = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert "data:," in sources  # no favicon request
    sources.remove("data:,")
    assert sources and all(s.startswith("/ui/assets/") for s in sources), sources
    for name in ("app.js", "style.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"https?://|//cdn|@import", text), name
        served = client.get(f"/ui/assets/{name}", headers={"Accept-Encoding": "identity"})
        assert served.status_code == 200 and served.text == text
    # the data is not: /v1 still wants the token
    assert client.get("/v1/experiments").status_code == 401
    assert client.get("/v1/experiments", headers=A).status_code == 200


def test_plotly_comes_from_the_installed_package_gzipped_and_revalidated(client):
    bundle = plotly_bundle().read_bytes()
    assert len(bundle) > 1_000_000 and b"plotly.js" in bundle[:2000]
    plain = client.get("/ui/assets/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and plain.content == bundle
    assert plain.headers["content-type"].startswith("text/javascript")
    packed = client.get("/ui/assets/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) < len(bundle) / 2
    assert packed.content == bundle  # httpx undoes the gzip
    etag = plain.headers["etag"]
    again = client.get("/ui/assets/plotly.min.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and not again.content
    assert client.get("/ui/assets/secrets.py").status_code == 404
    assert client.get("/ui/assets/..%2Fapp.py").status_code == 404


def _page(client, eid: str, **filters: object) -> list[dict]:
    got: list[dict] = []
    cursor = None
    while True:
        params = {**filters, "limit": 5, **({"cursor": cursor} if cursor else {})}
        resp = client.get(f"/v1/experiments/{eid}/runs", params=params, headers=A)
        assert resp.status_code == 200, resp.text
        got += resp.json()["items"]
        cursor = resp.json()["next_cursor"]
        if cursor is None:
            return got


def test_runs_filter_by_width_init_scale_and_lr_paged(client):
    eid = client.post("/v1/experiments", json=SWEEP, headers=A).json()["id"]
    every = _page(client, eid)
    assert len(every) == 2 * 2 * 3 * 2  # lr x widths x scales x seeds
    for width, alpha, lr in product([5, 20, None], [1e-3, 0.1, None], [0.05, None]):
        filters = {k: v for k, v in (("width", width), ("init_scale", alpha), ("lr", lr)) if v}
        expected = [
            r["id"]
            for r in every
            if all(math.isclose(r["params"][k], v, rel_tol=1e-12) for k, v in filters.items())
        ]
        assert [r["id"] for r in _page(client, eid, **filters)] == expected, filters
        assert expected or not filters
    assert _page(client, eid, init_scale=0.2) == []
    # an unswept lr: every run has the spec's lr, none has another
    one = client.post(
        "/v1/experiments", json={**SWEEP, "optimizer": {"name": "gd", "lr": 0.01}}, headers=A
    ).json()["id"]
    assert len(_page(client, one, lr=0.01)) == 12 and _page(client, one, lr=0.05) == []
    bad = client.get(f"/v1/experiments/{eid}/runs?init_scale=-1", headers=A)
    assert bad.status_code == 422
    other = client.get(
        f"/v1/experiments/{eid}/runs?width=5", headers={"Authorization": "Bearer tok-b"}
    )
    assert other.status_code == 404
