"""The client side of deploy/smoke.sh: experiments through the published API with a
bearer token, and the checks that their results are complete. Standard library only,
so it runs with any python3 on the host.

    python3 deploy/smoke_client.py wait-ready URL TOKEN WORKERS
    python3 deploy/smoke_client.py kinds URL TOKEN
    python3 deploy/smoke_client.py census URL TOKEN SAMPLES [WIDTHS]   (prints the id)
    python3 deploy/smoke_client.py progress URL TOKEN ID      (prints done/total)
    python3 deploy/smoke_client.py check-census URL TOKEN ID
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

OPTIMUM = {
    "kind": "optimum",
    "weight_decay": 0.01,
    "dataset": {"generator": "teacher", "n": 6, "d": 10, "teacher_width": 10, "seed": 0},
}
# SCIENCE.md section 8: one point x = (0.6, 0.8, 0), y = 1.5, weight decay 0.1 -> 0.29.
TRAINING = {  # device left to its default, "auto": a CPU-only stack must still run it
    "kind": "training",
    "dataset": {"generator": "custom", "X": [[0.6, 0.8, 0.0]], "y": [1.5]},
    "weight_decay": 0.1,
    "widths": [3, 10],
    "init_scales": [0.01, 1.0],
    "max_epochs": 200000,
}


def census(samples: int, widths: tuple[int, ...] = (5, 10, 20)) -> dict[str, Any]:
    return {
        "kind": "census",
        "weight_decay": 0.01,
        "dataset": {"generator": "teacher", "n": 6, "d": 10, "teacher_width": 10, "seed": 0},
        "widths": list(widths),
        "samples_per_width": samples,
    }


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url.rstrip("/"), token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def submit(self, spec: dict[str, Any]) -> str:
        return str(self.call("POST", "/v1/experiments", spec)["id"])

    def get(self, experiment_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/v1/experiments/{experiment_id}"))

    def wait(self, experiment_id: str, timeout: float = 600) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            exp = self.get(experiment_id)
            if exp["status"] in ("succeeded", "failed", "cancelled"):
                return exp
            if time.monotonic() > end:
                raise SystemExit(
                    f"experiment {experiment_id} still {exp['status']} after {timeout:g} s"
                )
            time.sleep(0.2)

    def pages(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            sep = "&" if "?" in path else "?"
            page = self.call(
                "GET", f"{path}{sep}limit=500" + (f"&cursor={cursor}" if cursor else "")
            )
            items += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return items


def fail(message: str) -> None:
    raise SystemExit(f"FAIL: {message}")


def succeeded(exp: dict[str, Any]) -> dict[str, Any]:
    if exp["status"] != "succeeded":
        fail(f"{exp['kind']} {exp['id']} ended {exp['status']}: {exp.get('error')}")
    done, total = exp["progress"]["done"], exp["progress"]["total"]
    if done != total:
        fail(f"{exp['kind']} {exp['id']} succeeded with progress {done}/{total}")
    return exp


def check_census(api: Api, experiment_id: str) -> str:
    exp = succeeded(api.get(experiment_id))
    spec = exp["spec"]
    expected = len(spec["widths"]) * spec["samples_per_width"]
    cones = api.pages(f"/v1/experiments/{experiment_id}/cones")
    keys = {(c["width"], c["sample"]) for c in cones}
    if len(cones) != expected or len(keys) != expected:
        fail(
            f"census {experiment_id}: {len(cones)} cones, {len(keys)} distinct, expected {expected}"
        )
    rows = exp["result"]["rows"]
    if sum(r["samples"] for r in rows) != expected:
        fail(f"census {experiment_id}: result rows count {sum(r['samples'] for r in rows)} cones")
    return f"census {len(keys)}/{expected} cones"


def kinds(api: Api) -> str:
    ids = {
        "optimum": api.submit(OPTIMUM),
        "census": api.submit(census(20)),
        "training": api.submit(TRAINING),
    }
    out = []
    opt = succeeded(api.wait(ids["optimum"]))
    cert = opt["result"]["certificate"]
    if not cert["max_dual_violation"] <= 1e-6 * 2 * OPTIMUM["weight_decay"]:
        fail(f"optimum certificate {cert}")
    out.append(f"optimum {opt['result']['optimum']:.6g} (gap_bound {cert['gap_bound']:.1e})")
    api.wait(ids["census"])
    out.append(check_census(api, ids["census"]))
    train = succeeded(api.wait(ids["training"]))
    if abs(train["result"]["optimum"] - 0.29) > 1e-7:
        fail(f"training optimum {train['result']['optimum']}, expected 0.29")
    runs = api.pages(f"/v1/experiments/{ids['training']}/runs")
    if len(runs) != 4 or any(r["verdict"] is None for r in runs):
        fail(f"training runs {[(r['status'], r['verdict']) for r in runs]}")
    out.append(f"training {len(runs)}/4 runs with verdicts")
    return ", ".join(out)


def wait_ready(url: str, token: str, workers: int, timeout: float = 300) -> None:
    """Until /readyz is 200 and shows `workers` live cpu workers."""
    end = time.monotonic() + timeout
    last = ""
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/readyz", timeout=5) as resp:
                body = json.loads(resp.read())
                last = body["checks"].get("workers", "")
                if last.startswith(f"cpu: {workers},"):
                    return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(1)
    fail(f"the API was not ready with {workers} cpu workers within {timeout:g} s (last: {last})")


def main(argv: list[str]) -> None:
    command, url, token, *rest = argv
    api = Api(url, token)
    if command == "wait-ready":
        wait_ready(url, token, int(rest[0]))
    elif command == "kinds":
        print(kinds(api))
    elif command == "census":
        widths = tuple(int(w) for w in rest[1].split(",")) if len(rest) > 1 else (5, 10, 20)
        print(api.submit(census(int(rest[0]), widths)))
    elif command == "progress":
        exp = api.get(rest[0])
        print(f"{exp['status']} {exp['progress']['done']}/{exp['progress']['total']}")
    elif command == "check-census":
        print(check_census(api, rest[0]))
    elif command == "wait":
        exp = api.wait(rest[0], float(rest[1]) if len(rest) > 1 else 600)
        print(exp["status"])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
