"""The experiment specs: defaults, ranges and the reasons given for bad input."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from service.plans import cover_count
from service.specs import spec_adapter

TEACHER = {"generator": "teacher", "n": 6, "d": 10}


def parse(**spec):
    return spec_adapter.validate_python({"kind": "optimum", "weight_decay": 0.01, **spec})


def reasons(**spec) -> list[tuple[tuple, str]]:
    with pytest.raises(ValidationError) as info:
        parse(**spec)
    return [(e["loc"], e["msg"]) for e in info.value.errors()]


def test_defaults_are_filled_in():
    spec = parse(dataset=TEACHER).model_dump(mode="json")
    assert spec["dataset"] == {**TEACHER, "teacher_width": 10, "seed": 0}
    assert spec["seed"] == 0


def test_training_defaults():
    spec = spec_adapter.validate_python(
        {
            "kind": "training",
            "dataset": TEACHER,
            "weight_decay": 1e-4,
            "widths": [10],
            "init_scales": [1e-3],
            "max_epochs": 100,
        }
    ).model_dump(mode="json")
    assert spec["optimizer"] == {"name": "gd", "lr": 0.01, "batch_size": None}
    assert (spec["grad_tol"], spec["log_growth"]) == (1e-16, 1.01)
    # verdicts use a tolerance relative to the optimum unless an absolute one is given
    assert (spec["tolerance"], spec["relative_tolerance"]) == (None, 1e-7)
    assert spec["device"] == "auto" and spec["seeds"] == 1


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_weight_decay_must_be_positive_and_finite(bad):
    [(loc, _)] = reasons(dataset=TEACHER, weight_decay=bad)
    assert loc[-1] == "weight_decay"


def test_n_below_one_names_the_field():
    [(loc, msg)] = reasons(dataset={**TEACHER, "n": 0})
    assert loc[-1] == "n" and "greater than or equal to 1" in msg


def test_custom_lengths_must_match():
    [(loc, msg)] = reasons(dataset={"generator": "custom", "X": [[1, 0], [0, 1]], "y": [1.0]})
    assert "2 rows but y has 1" in msg


def test_custom_rejects_nan_and_ragged_rows():
    errs = reasons(dataset={"generator": "custom", "X": [[1, math.nan]], "y": [1.0]})
    assert any("finite" in msg for _, msg in errs)
    errs = reasons(dataset={"generator": "custom", "X": [[1, 0], [1]], "y": [1.0, 2.0]})
    assert any("ragged" in msg for _, msg in errs)


def test_orthogonal_needs_d_at_least_n():
    errs = reasons(dataset={"generator": "orthogonal", "n": 5, "d": 3})
    assert any("d >= n" in msg for _, msg in errs)


def test_theorem2_needs_d_at_least_three_and_sets_n():
    assert reasons(dataset={"generator": "theorem2", "d": 2})
    assert parse(dataset={"generator": "theorem2", "d": 4}).dataset.n == 4


def test_unknown_fields_are_rejected():
    errs = reasons(dataset=TEACHER, wieght_decay=0.1)
    assert any(loc[-1] == "wieght_decay" for loc, _ in errs)


def test_cover_count():
    assert cover_count(6, 10) == 64
    assert cover_count(40, 3) == 2 * (1 + 39 + math.comb(39, 2)) == 1562


def test_test_points_need_teacher_data():
    base = {
        "kind": "training",
        "weight_decay": 0.01,
        "widths": [3],
        "init_scales": [1.0],
        "max_epochs": 10,
        "test_points": 100,
    }
    teacher = {"generator": "teacher", "n": 4, "d": 2}
    assert spec_adapter.validate_python({**base, "dataset": teacher}).test_points == 100
    with pytest.raises(ValidationError, match="test_points needs teacher data"):
        spec_adapter.validate_python({**base, "dataset": {"generator": "theorem2", "d": 4}})
