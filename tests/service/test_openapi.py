"""The OpenAPI document says what the server does, and /docs works offline.

None of these needs the database: the document, the docs pages and a refused token are
answered before any query.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, FastAPI, Header, Response
from fastapi.testclient import TestClient

from service import openapi
from service.specs import spec_adapter
from tests.conftest import use_settings

Doc = dict[str, Any]


@pytest.fixture
def app(monkeypatch, tmp_path) -> FastAPI:
    use_settings(monkeypatch, BENIGNITY_HOME=str(tmp_path), API_TOKENS="", RATE_LIMIT="")
    from service.app import create_app

    return create_app()


@pytest.fixture
def doc(app) -> Doc:
    return app.openapi()


def operations(doc: Doc) -> Iterator[tuple[str, str, Doc]]:
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def schema(doc: Doc, name: str) -> Doc:
    return doc["components"]["schemas"][name]


def test_every_error_of_every_operation_is_problem_json(doc):
    checked = 0
    for path, method, op in operations(doc):
        codes = {int(c) for c in op["responses"] if c.isdigit()}
        assert {500, 503} <= codes, (method, path)
        if path.startswith("/v1/"):
            assert {401, 404, 422, 429} <= codes, (method, path)
        if "requestBody" in op:
            assert {400, 413, 415} <= codes, (method, path)
        for code, response in op["responses"].items():
            if (method, path, code) == ("get", "/readyz", "503"):
                continue  # readiness answers its checks as Health
            if 400 <= int(code) < 600:
                assert list(response["content"]) == ["application/problem+json"], (path, code)
                ref = response["content"]["application/problem+json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Problem"
                checked += 1
    assert checked > 50
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    problem = schema(doc, "Problem")
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    assert schema(doc, "ProblemField")["required"] == ["loc", "msg"]
    limited = doc["paths"]["/v1/experiments"]["post"]["responses"]["429"]
    assert "Retry-After" in limited["headers"]


def test_files_are_declared_in_their_media_types(doc):
    def ok(path: str) -> Doc:
        return doc["paths"][path]["get"]["responses"]["200"]["content"]

    exp = "/v1/experiments/{experiment_id}"
    assert set(ok(f"{exp}/figure.{{fmt}}")) == {"image/png", "image/svg+xml"}
    assert set(ok(f"{exp}/export.{{fmt}}")) == {"application/vnd.apache.parquet", "text/csv"}
    assert ok(f"{exp}/figure.{{fmt}}")["image/png"]["schema"] == {
        "type": "string",
        "format": "binary",
    }
    assert set(ok(f"{exp}/runs/{{run_id}}/curve")) == {"application/json", "text/csv"}
    assert list(ok("/metrics")) == ["text/plain"]


def test_routes_added_later_get_problems_and_media_types_without_declaring_them():
    app = FastAPI()
    router = APIRouter(prefix="/v1")

    @router.get("/things/{thing_id}/data.parquet", responses={409: {}})
    async def data(thing_id: str) -> Response:
        return Response(b"", media_type="application/vnd.apache.parquet")

    @router.delete("/things/{thing_id}", status_code=204)
    async def remove(thing_id: str) -> None:
        return None

    @router.patch("/things/{thing_id}")
    async def change(
        thing_id: str,
        if_match: Annotated[str | None, Header()] = None,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> dict[str, str]:
        return {}

    app.include_router(router)
    doc = openapi.amend(app.openapi())
    parquet = doc["paths"]["/v1/things/{thing_id}/data.parquet"]["get"]["responses"]
    assert list(parquet["200"]["content"]) == ["application/vnd.apache.parquet"]
    assert list(parquet["409"]["content"]) == ["application/problem+json"]
    removed = doc["paths"]["/v1/things/{thing_id}"]["delete"]["responses"]
    assert list(removed["422"]["content"]) == ["application/problem+json"]
    assert "404" in removed and "HTTPValidationError" not in doc["components"]["schemas"]
    assert list(removed["409"]["content"]) == ["application/problem+json"]
    changed = doc["paths"]["/v1/things/{thing_id}"]["patch"]["responses"]
    assert list(changed["412"]["content"]) == ["application/problem+json"]
    assert "content" not in changed["304"]


def test_bearer_is_a_security_scheme_not_a_header_parameter(doc):
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, method, op in operations(doc):
        names = {p["name"].lower() for p in op.get("parameters", [])}
        assert "authorization" not in names, (method, path)
        assert (op.get("security") == [{"bearer": []}]) == path.startswith("/v1/"), path


def test_the_token_is_refused_as_before(monkeypatch, tmp_path):
    use_settings(monkeypatch, BENIGNITY_HOME=str(tmp_path), API_TOKENS="lab:s3cret")
    from service.app import create_app

    client = TestClient(create_app())
    for given, detail in [
        (None, "missing bearer token"),
        ("Basic s3cret", "missing bearer token"),
        ("Bearer ", "missing bearer token"),
        ("Bearer wrong", "invalid bearer token"),
        ("Bearer    ", "invalid bearer token"),
    ]:
        headers = {"Authorization": given} if given is not None else {}
        r = client.get("/v1/experiments", headers=headers)
        assert r.status_code == 401, (given, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"] == 'Bearer realm="benignity"'
        assert r.json()["detail"] == detail, given


def test_status_kind_and_verdicts_are_enums(doc):
    assert schema(doc, "Status")["enum"] == [
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    ]
    assert schema(doc, "Kind")["enum"] == ["optimum", "census", "training"]
    assert "done" in schema(doc, "RunStatus")["enum"]
    assert "spurious_local_minimum" in schema(doc, "RunVerdict")["enum"]
    assert schema(doc, "ConeVerdict")["enum"] == ["global", "spurious", "no_local_min"]
    props = {name: schema(doc, name)["properties"] for name in ("Experiment", "Run", "Cone")}
    assert props["Experiment"]["status"]["$ref"].endswith("/Status")
    assert props["Run"]["status"]["$ref"].endswith("/RunStatus")
    assert props["Cone"]["verdict"]["$ref"].endswith("/ConeVerdict")


def test_results_params_and_final_are_typed_and_every_field_described(doc):
    def refs(prop: Doc) -> set[str]:
        return {p["$ref"].rsplit("/", 1)[1] for p in prop["anyOf"] if "$ref" in p}

    experiment, run = schema(doc, "Experiment"), schema(doc, "Run")
    assert refs(experiment["properties"]["result"]) == {
        "OptimumResult",
        "CensusResult",
        "TrainingResult",
    }
    assert refs(run["properties"]["final"]) == {"CensusRow", "TrainingFinal"}
    assert run["properties"]["params"]["$ref"].endswith("/RunParams")
    # each result requires a field only it has, so exactly one matches a stored result
    required = {
        n: set(schema(doc, n)["required"]) for n in refs(experiment["properties"]["result"])
    }
    assert required["OptimumResult"] >= {"neurons"} and required["CensusResult"] == {"rows"}
    assert required["TrainingResult"] == {"groups"}
    for name in ("OptimumResult", "CensusResult", "TrainingResult"):
        assert schema(doc, name)["additionalProperties"] is True
        assert schema(doc, name)["examples"], name
    for name in ("Experiment", "Run", "Cone", "CensusRow", "TrainingFinal", "TrainingGroup"):
        for field, prop in schema(doc, name)["properties"].items():
            assert prop.get("description"), f"{name}.{field} has no description"


def test_submit_shows_one_valid_example_per_kind(doc):
    body = doc["paths"]["/v1/experiments"]["post"]["requestBody"]["content"]["application/json"]
    examples = body["examples"]
    assert set(examples) == {"optimum", "census", "training"}
    for kind, example in examples.items():
        assert spec_adapter.validate_python(example["value"]).kind == kind


def test_operation_ids_are_the_handlers_names(doc):
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids))
    assert {"submit", "get_experiment", "list_runs", "get_figure", "export"} <= set(ids)


def test_docs_load_only_local_assets(app):
    client = TestClient(app)  # no lifespan: nothing here touches the database
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        urls = re.findall(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']""", html.text)
        urls += re.findall(r"""url:\s*['"]([^'"]+)['"]""", html.text)
        assert urls, html.text
        assert "http://" not in html.text and "https://" not in html.text, html.text
        assets = [u for u in urls if u.startswith(openapi.ASSETS)]
        assert assets, urls
        for url in urls:
            assert url.startswith("/"), url
            got = client.get(url)
            assert got.status_code == 200 and got.content, url
        kinds = {client.get(u).headers["content-type"].split(";")[0] for u in assets}
        assert "text/javascript" in kinds or "application/javascript" in kinds, kinds
    css = client.get(f"{openapi.ASSETS}/swagger-ui.css")
    assert css.headers["content-type"].startswith("text/css")
