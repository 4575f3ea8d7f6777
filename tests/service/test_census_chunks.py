"""A census's chunks (service/plans.py): sized by the distinct signed cones a solve can
meet, min(width, 2 patterns), and by the neurons drawn; at least two per width; the
item count checked before planning is the count planned."""

from __future__ import annotations

import pytest

from service.config import Settings
from service.plans import SpecRejected, census_chunk_size, plan
from service.specs import spec_adapter


def census(n: int, d: int, widths: list[int], samples: int) -> dict:
    return {
        "kind": "census",
        "dataset": {"generator": "teacher", "n": n, "d": d, "seed": 0},
        "weight_decay": 0.01,
        "widths": widths,
        "samples_per_width": samples,
    }


def chunks(body: dict, **limits: int) -> dict[int, list[int]]:
    """Cones per chunk, per width."""
    settings = Settings(database_url="sqlite:///unused.db", **limits)
    out: dict[int, list[int]] = {}
    for item in plan(spec_adapter.validate_python(body), settings).items:
        if item["task"] == "census_chunk":
            p = item["payload"]
            out.setdefault(p["width"], []).append(p["stop"] - p["start"])
    return out


def test_wide_cones_of_few_patterns_go_in_large_chunks() -> None:
    # teacher n=6, d=10: 64 patterns, at most 128 distinct signed cones at any width
    assert chunks(census(6, 10, [40, 160, 640], 200)) == {
        40: [100] * 2,
        160: [100] * 2,
        640: [100] * 2,
    }
    assert chunks(census(6, 10, [640], 1000)) == {640: [125] * 8}
    # many patterns: a wide cone can hold as many distinct cones as neurons
    assert census_chunk_size(640, 1000, patterns=10_000) == 25
    assert census_chunk_size(640, 1000) == 25  # count unknown
    # the neurons drawn bound it too (160,000 a chunk), whatever the pattern count
    assert census_chunk_size(100_000, 1000, patterns=64) == 1
    assert census_chunk_size(4000, 1000, patterns=64) == 40


def test_the_item_count_checked_is_the_count_planned() -> None:
    body = census(6, 10, [40, 640, 5000], 300)
    planned = chunks(body)
    count = 1 + sum(len(sizes) for sizes in planned.values())
    assert all(sum(sizes) == 300 for sizes in planned.values())
    chunks(body, max_items_per_experiment=count)
    with pytest.raises(SpecRejected, match=f"{count} work items"):
        chunks(body, max_items_per_experiment=count - 1)
