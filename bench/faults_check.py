"""What bench/faults.py asks of the stack: submit, watch, and judge every accepted experiment.

An accepted experiment is *lost* unless it ends `succeeded`, `cancelled`, or `failed` with a
reason, and a succeeded one has the right results (census: progress total reached and every
(width, sample) cone stored exactly once; training: every run of the grid with a final
point; optimum: a finite optimum and its certificate). Endings are read from the database
(one query, and it still answers when the API is wedged); results through the API.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import Engine, bindparam, text

TERMINAL = ("succeeded", "failed", "cancelled")
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
ENDINGS = text(
    "SELECT id, status, error->>'detail' AS reason FROM experiments WHERE id IN :ids"
).bindparams(bindparam("ids", expanding=True))


def census(samples: int, widths: tuple[int, ...] = (40, 80), seed: int = 4) -> dict[str, Any]:
    """About 1 s per 50 cones on one worker here (400 cones: 8 s)."""
    return {
        "kind": "census",
        "dataset": {"generator": "teacher", "n": 6, "d": 10, "seed": seed},
        "weight_decay": 0.01,
        "widths": list(widths),
        "samples_per_width": samples,
    }


def training(max_epochs: int = 3_000_000) -> dict[str, Any]:
    """tests/e2e/test_training_resume.py's sweep: 4 runs, no early stop, about 5 s."""
    return {
        "kind": "training",
        "dataset": {"generator": "theorem2", "d": 4, "seed": 0},
        "weight_decay": 1e-4,
        "widths": [20],
        "init_scales": [1e-3, 0.5],
        "seeds": 2,
        "optimizer": {"name": "gd", "lr": 0.05},
        "max_epochs": max_epochs,
        "grad_tol": 1e-30,
        "device": "cpu",
    }


def optimum(i: int) -> dict[str, Any]:
    """A small optimum (tens of milliseconds), different for each i."""
    n, d = 4 + i % 3, 2 + i % 2
    dataset = {"generator": "teacher", "n": n, "d": d, "teacher_width": 10, "seed": i}
    return {"kind": "optimum", "weight_decay": 0.01, "dataset": dataset}


@dataclass
class Verdict:
    """How the accepted experiments of one test ended."""

    ended: dict[str, str] = field(default_factory=dict)  # id -> terminal status
    lost: list[str] = field(default_factory=list)  # "id: why"
    failed: list[str] = field(default_factory=list)  # "id: reason" (ended, but unexpected)
    seconds: float = 0.0  # until the last one ended

    def note(self) -> str:
        parts = [f"{len(self.lost)} lost: {'; '.join(self.lost[:3])}"] if self.lost else []
        if self.failed:
            parts.append(f"{len(self.failed)} failed: {'; '.join(self.failed[:2])}")
        return "; ".join(parts)


class Client:
    """The API with a bearer token; every request has a timeout and retries until a deadline."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT
        )

    def submit(self, spec: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": key} if key else {}
        resp = self.http.post("/v1/experiments", json=spec, headers=headers)
        if resp.status_code not in (200, 202):
            raise RuntimeError(f"submit: {resp.status_code} {resp.text[:300]}")
        return resp.json()

    def get(self, path: str, retry_for: float = 60.0, **params: Any) -> Any:
        deadline = time.monotonic() + retry_for
        while True:
            try:
                resp = self.http.get(path, params=params)
                if resp.status_code == 200:
                    return resp.json()
                problem = f"{resp.status_code} {resp.text[:200]}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise RuntimeError(f"GET {path}: {problem}")
            time.sleep(1.0)

    def pages(self, path: str) -> list[dict[str, Any]]:
        items, cursor = [], None
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = self.get(path, **params)
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    def close(self) -> None:
        self.http.close()


def progress(engine: Engine, experiment_id: str) -> tuple[int, int, bool]:
    """(done, total, any checkpoint) of an experiment's work items, from the database."""
    sql = text(
        "SELECT coalesce(sum(progress_done), 0), coalesce(sum(progress_total), 0), "
        "bool_or(checkpoint IS NOT NULL) FROM work_items WHERE experiment_id = :id"
    )
    try:
        with engine.connect() as conn:
            done, total, ckpt = conn.execute(sql, {"id": experiment_id}).one()
        return int(done), int(total), bool(ckpt)
    except Exception:  # noqa: BLE001 - the database may be the thing that is down
        return 0, 0, False


def wait_progress(engine: Engine, experiment_id: str, *, checkpoint: bool = False) -> None:
    """Until some work of the experiment is done (or checkpointed); 120 s at most."""
    deadline = time.monotonic() + 120
    while True:
        done, _, ckpt = progress(engine, experiment_id)
        if (ckpt if checkpoint else done > 0) or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def wait_ended(engine: Engine, ids: list[str], timeout: float) -> Verdict:
    """Wait until every experiment is terminal, or the deadline; judges endings, not results."""
    t0 = time.monotonic()
    rows: dict[str, tuple[str, str | None]] = {}
    while True:
        try:
            with engine.connect() as conn:
                for i in range(0, len(ids), 500):
                    found = conn.execute(ENDINGS, {"ids": ids[i : i + 500]})
                    rows.update({r.id: (r.status, r.reason) for r in found})
        except Exception:  # noqa: BLE001 - keep waiting through a database outage
            pass
        if all(rows.get(i, ("",))[0] in TERMINAL for i in ids) or time.monotonic() - t0 > timeout:
            break
        time.sleep(0.5)
    verdict = Verdict(seconds=time.monotonic() - t0)
    for i in ids:
        status, reason = rows.get(i, ("missing", None))
        if status not in TERMINAL:
            verdict.lost.append(f"{i[:8]} still {status} after {timeout:g} s")
        elif status == "failed" and not reason:
            verdict.lost.append(f"{i[:8]} failed without a reason")
        else:
            verdict.ended[i] = status
            if status == "failed":
                verdict.failed.append(f"{i[:8]}: {reason[:160]}")
    return verdict


def check_results(client: Client, verdict: Verdict) -> None:
    """Adds to verdict.lost every succeeded experiment whose results are wrong."""
    for exp_id, status in verdict.ended.items():
        if status != "succeeded":
            continue
        try:
            problem = _wrong(client, client.get(f"/v1/experiments/{exp_id}"))
        except Exception as exc:  # noqa: BLE001 - unreadable results are not results
            problem = f"unreadable: {exc}"
        if problem:
            verdict.lost.append(f"{exp_id[:8]} {problem}")


def _wrong(client: Client, exp: dict[str, Any]) -> str:
    spec, result, prog = exp["spec"], exp["result"] or {}, exp["progress"]
    if prog["done"] != prog["total"]:
        return f"progress {prog['done']}/{prog['total']}"
    if exp["kind"] == "optimum":
        value = result.get("optimum")
        ok = isinstance(value, float) and math.isfinite(value) and "certificate" in result
        return "" if ok else f"bad optimum {value!r}"
    if exp["kind"] == "census":
        want = len(spec["widths"]) * spec["samples_per_width"]
        cones = client.pages(f"/v1/experiments/{exp['id']}/cones")
        keys = {(c["width"], c["sample"]) for c in cones}
        samples = sum(r["samples"] for r in result.get("rows", []))
        ok = len(cones) == len(keys) == samples == want
        return (
            "" if ok else f"cones {len(cones)}, distinct {len(keys)}, rows {samples}, want {want}"
        )
    runs = client.pages(f"/v1/experiments/{exp['id']}/runs")
    want = len(spec["widths"]) * len(spec["init_scales"]) * spec["seeds"]
    ok = len(runs) == want and all(r["final"] and r["verdict"] for r in runs)
    return "" if ok else f"{len(runs)} runs of {want}, or one without a final point"


def finals(client: Client, experiment_id: str) -> list[tuple[Any, ...]]:
    """Each run's params, verdict and final point, in grid order (compared exactly)."""
    runs = client.pages(f"/v1/experiments/{experiment_id}/runs")
    return [(r["params"], r["verdict"], r["final"]) for r in runs]
