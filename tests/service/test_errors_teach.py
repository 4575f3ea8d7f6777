"""Errors that say what to send instead: Content-Type, JSON syntax, misspelt fields and
numbers sent as strings."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.service.test_api import SPEC, assert_problem, broker, make_client  # noqa: F401 - fixture


@pytest.fixture
def client(pg_engine, broker, monkeypatch) -> Iterator[TestClient]:  # noqa: F811
    yield from make_client(pg_engine, monkeypatch, API_TOKENS="")


TRAINING = {
    **SPEC,
    "kind": "training",
    "widths": [2],
    "init_scales": [1.0],
    "max_epochs": 10,
}


@pytest.mark.parametrize(
    ("headers", "said"),
    [
        ({"content-type": "text/plain"}, "'text/plain'"),
        ({"content-type": "application/x-www-form-urlencoded"}, "x-www-form-urlencoded"),
        ({}, "no Content-Type"),
    ],
)
def test_a_body_that_is_not_declared_json_is_415_saying_what_to_send(client, headers, said):
    resp = client.post("/v1/experiments", content=json.dumps(SPEC), headers=headers)
    body = assert_problem(resp, 415, "Content-Type: application/json", said)
    assert body["errors"][0]["loc"] == ["header", "Content-Type"]
    assert client.get("/v1/experiments").json()["items"] == []  # nothing was created


def test_form_posts_and_patches_are_415_too(client):
    assert_problem(
        client.post("/v1/experiments", data={"kind": "optimum"}), 415, "application/json"
    )
    chunks = iter([json.dumps(SPEC).encode()])  # sent chunked, with no Content-Length
    chunked = client.post("/v1/experiments", content=chunks, headers={"content-type": "text/plain"})
    assert_problem(chunked, 415, "'text/plain'")
    exp = client.post("/v1/experiments", json=SPEC).json()
    resp = client.patch(f"/v1/experiments/{exp['id']}", content=b'{"notes": "x"}')
    assert_problem(resp, 415, "Content-Type: application/json")


def test_json_with_a_charset_or_a_json_suffix_is_accepted_and_bodiless_posts_need_none(client):
    for media in ("application/json; charset=utf-8", "application/merge-patch+json"):
        resp = client.post(
            "/v1/experiments", content=json.dumps(SPEC), headers={"content-type": media}
        )
        assert resp.status_code == 202, resp.text
    exp = resp.json()
    assert client.post(f"/v1/experiments/{exp['id']}/cancel").status_code == 202


def test_a_json_syntax_error_gives_line_column_and_reason(client):
    raw = '{\n  "kind": "optimum",\n  "weight_decay": 0.01\n  "seed": 1\n}'
    resp = client.post("/v1/experiments", content=raw, headers={"content-type": "application/json"})
    body = assert_problem(resp, 422)
    msg = "JSON syntax error at line 4, column 3: Expecting ',' delimiter"
    assert body["errors"] == [{"loc": ["body"], "msg": msg}]
    assert msg in body["detail"]
    truncated = client.post(
        "/v1/experiments", content=b'{"kind": ', headers={"content-type": "application/json"}
    )
    assert_problem(truncated, 422, "line 1, column 10: Expecting value")


def test_an_unknown_field_names_the_closest_one_first(client):
    body = {k: v for k, v in SPEC.items() if k != "weight_decay"} | {"weight_decy": 0.01}
    problem = assert_problem(client.post("/v1/experiments", json=body), 422)
    first = problem["errors"][0]
    assert first == {
        "loc": ["body", "weight_decy"],
        "msg": "unknown field 'weight_decy'; did you mean 'weight_decay'?",
    }
    assert problem["detail"].startswith("body.weight_decy: unknown field 'weight_decy'")
    missing = [e for e in problem["errors"] if e["loc"] == ["body", "weight_decay"]]
    assert missing and "was it sent as 'weight_decy'" in missing[0]["msg"]


def test_unknown_fields_in_nested_models_and_training_specs(client):
    nested = {**SPEC, "dataset": {"generator": "teacher", "n": 6, "d": 10, "teacher_widht": 3}}
    problem = assert_problem(client.post("/v1/experiments", json=nested), 422)
    assert problem["errors"][0] == {
        "loc": ["body", "dataset", "teacher_widht"],
        "msg": "unknown field 'teacher_widht'; did you mean 'teacher_width'?",
    }
    training = {**TRAINING, "optimizer": {"name": "gd", "learning_rate": 0.1}, "max_epoch": 5}
    problem = assert_problem(client.post("/v1/experiments", json=training), 422)
    hints = {tuple(e["loc"]): e["msg"] for e in problem["errors"][:2]}
    assert hints == {
        ("body", "optimizer", "learning_rate"): "unknown field 'learning_rate'",
        ("body", "max_epoch"): "unknown field 'max_epoch'; did you mean 'max_epochs'?",
    }


def test_a_field_far_from_any_gets_no_guess(client):
    problem = assert_problem(client.post("/v1/experiments", json={**SPEC, "zzz": 1}), 422)
    assert problem["errors"] == [{"loc": ["body", "zzz"], "msg": "unknown field 'zzz'"}]


@pytest.mark.parametrize(
    ("change", "loc", "msg"),
    [
        ({"weight_decay": "0.01"}, ["body", "weight_decay"], "expected a number, not a string"),
        ({"weight_decay": True}, ["body", "weight_decay"], "expected a number, not a boolean"),
        ({"seed": "3"}, ["body", "seed"], "expected an integer, not a string"),
        (
            {"dataset": {"generator": "teacher", "n": "6", "d": 10}},
            ["body", "dataset", "n"],
            "expected an integer, not a string",
        ),
        (
            {"dataset": {"generator": "custom", "X": [[1, "2"]], "y": [1.0]}},
            ["body", "dataset", "X", 0, 1],
            "expected a number, not a string",
        ),
    ],
)
def test_numbers_are_strict(client, change, loc, msg):
    problem = assert_problem(client.post("/v1/experiments", json={**SPEC, **change}), 422)
    assert {"loc": loc, "msg": msg} in problem["errors"], problem


def test_integers_still_pass_for_floats(client):
    body = {**SPEC, "weight_decay": 1, "dataset": {"generator": "custom", "X": [[1, 2]], "y": [3]}}
    resp = client.post("/v1/experiments", json=body)
    assert resp.status_code == 202, resp.text
    assert resp.json()["spec"]["weight_decay"] == 1.0
    assert resp.json()["spec"]["dataset"]["X"] == [[1.0, 2.0]]


def test_a_training_sweep_given_as_a_string_is_refused(client):
    problem = assert_problem(
        client.post("/v1/experiments", json={**TRAINING, "weight_decay": "0.01"}), 422
    )
    assert problem["errors"] == [
        {"loc": ["body", "weight_decay"], "msg": "expected a number, not a string"}
    ]
    lrs = {**TRAINING, "optimizer": {"lr": [0.1, "0.2"]}}
    problem = assert_problem(client.post("/v1/experiments", json=lrs), 422)
    assert {"loc": ["body", "optimizer", "lr", 1], "msg": "expected a number, not a string"} in (
        problem["errors"]
    )
