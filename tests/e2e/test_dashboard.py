"""The dashboard at /ui in headless Chromium (Debian's /usr/bin/chromium driven by
Playwright's Python API; no browser download), against a real stack: the API on a port of
its own with two tenants, PostgreSQL, Redis and a `benignity worker`.

A user logs in with a token, filters the list by tag, opens a census and sees its curve
drawn (one SVG point per width), filters its cones to the spurious ones, watches a running
training sweep's curve grow, and compares two censuses; another tenant's token sees none
of it. Every number the page shows is checked against the API's own answer.

With DASHBOARD_SHOTS=<folder>, each page is also saved there as a 1280x800 PNG.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REQUIRED, eventually, use_settings
from tests.e2e.conftest import wait_for
from tests.e2e.test_training_resume import SPEC as SWEEP_SPEC
from tests.service.test_api import SPEC as OPTIMUM_SPEC
from tests.services import ThreadedAPI

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKENS = "labA:tokA,labB:tokB"
SHOTS = os.environ.get("DASHBOARD_SHOTS")
WIDTHS = [2, 4, 8, 16]


def census(name: str, generator: str) -> dict[str, Any]:
    return {
        "kind": "census",
        "name": name,
        "tags": ["paper"],
        "dataset": {"generator": generator, "n": 4, "d": 8, "seed": 0},
        "weight_decay": 0.01,
        "widths": WIDTHS,
        "samples_per_width": 6,
    }


OPTIMUM = {**OPTIMUM_SPEC, "name": "opt-other", "tags": ["other"]}
# minutes of training if left alone (it is cancelled once its curve has been seen to grow)
SWEEP = {**SWEEP_SPEC, "name": "sweep-live", "tags": ["paper"], "max_epochs": 100_000_000}


def _unavailable(msg: str) -> None:
    if REQUIRED:
        pytest.fail(f"{msg} (REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(msg)


def _install_chromium() -> str:
    """apt-get install Debian's chromium (after apt-get update when the first try fails);
    what apt said, for the message when it could not."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return "no apt-get, or not root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    said = ""
    for update in (False, True):
        if update:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        said = (done.stdout + done.stderr)[-2000:]
        if done.returncode == 0 and CHROMIUM.exists():
            break
    return said


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium, installed with apt-get when it is missing."""
    if not CHROMIUM.exists():
        said = _install_chromium()
        if not CHROMIUM.exists():
            _unavailable(f"{CHROMIUM} is missing and apt-get could not install it: {said}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"playwright is not installed (pip install -e '.[dev]'): {exc}")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def server(stack, monkeypatch) -> Iterator[str]:
    """The API with two tenants, on a free port; its base URL."""
    use_settings(monkeypatch, API_TOKENS=TOKENS, RATE_LIMIT="")
    api = ThreadedAPI()
    yield api.url
    api.stop()


@pytest.fixture
def page(browser, server) -> Iterator[Any]:
    """A fresh 1280x800 tab (its own session storage); fails the test on a script error or
    on any request that leaves the service."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    errors: list[str] = []
    outside: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("request", lambda r: None if r.url.startswith(server) else outside.append(r.url))
    yield tab
    context.close()
    assert not errors, errors
    assert not outside, outside


def until(page, condition: str, timeout: float = 30.0) -> None:
    """Poll a JavaScript expression until it is true (page.wait_for_function would eval it
    inside the page, which the dashboard's Content-Security-Policy forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(f"() => Boolean({condition})"):
        if time.monotonic() > deadline:
            shot(page, "timed-out")
            raise AssertionError(f"not within {timeout} s: {condition}")
        time.sleep(0.1)


def client(server: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=server, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def log_in(page, server: str, token: str) -> None:
    page.goto(f"{server}/ui")
    page.fill("#token", token)
    page.press("#token", "Enter")
    page.wait_for_selector("#experiments tbody tr")


def shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.wait_for_timeout(300)  # let Plotly finish its transitions
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


def points(page, plot: str) -> list[int]:
    """SVG markers per trace of a Plotly plot."""
    return page.eval_on_selector_all(
        f"{plot} .scatterlayer .trace", "ts => ts.map(t => t.querySelectorAll('path.point').length)"
    )


def vertices(page, plot: str) -> list[int]:
    """Vertices of each trace's SVG line (drawn unsimplified)."""
    return page.eval_on_selector_all(
        f"{plot} .scatterlayer .trace path.js-line",
        "ls => ls.map(l => (l.getAttribute('d').match(/[ML]/g) || []).length)",
    )


def rows(page, table: str) -> list[str]:
    return page.eval_on_selector_all(f"{table} tbody tr", "rs => rs.map(r => r.innerText)")


def test_a_researcher_browses_filters_watches_and_compares(server, page, start_worker):
    lab = client(server, "tokA")
    teacher = lab.post("/v1/experiments", json=census("census-teacher", "teacher")).json()
    orth = lab.post("/v1/experiments", json=census("census-orth", "orthogonal")).json()
    opt = lab.post("/v1/experiments", json=OPTIMUM).json()
    start_worker()
    for exp in (teacher, orth, opt):
        assert wait_for(lab, exp["id"], timeout=180)["status"] == "succeeded"

    # without a token the page says so; with one it lists the lab's experiments
    page.goto(f"{server}/ui")
    page.wait_for_selector("main .error")
    assert "token" in page.inner_text("main .error")
    shot(page, "0-no-token")
    log_in(page, server, "tokA")
    until(page, "document.querySelectorAll('#experiments tr[data-id]').length === 3")
    shot(page, "1-experiments")

    # filter by tag: the optimum tagged "other" goes
    page.fill("#f-tag", "paper")
    page.click("form.filters button[type=submit]")
    until(page, "document.querySelectorAll('#experiments tr[data-id]').length === 2")
    assert "#/?tag=paper" in page.url
    listed = page.eval_on_selector_all(
        "#experiments tr[data-id]", "rs => rs.map(r => r.dataset.id)"
    )
    assert listed == [orth["id"], teacher["id"]]  # newest first

    # open the teacher census: its three share curves, one SVG point per width
    page.click(f"#experiments tr[data-id='{teacher['id']}'] a")
    page.wait_for_selector("#census-plot .scatterlayer .trace path.point")
    result = lab.get(f"/v1/experiments/{teacher['id']}").json()["result"]
    drawn = points(page, "#census-plot")
    assert drawn[:3] == [len(WIDTHS)] * 3, drawn
    shares = page.evaluate(
        "() => document.getElementById('census-plot').data.slice(0, 3).map(t => t.y)"
    )
    assert shares == [
        [r[k] for r in result["rows"]] for k in ("p_global", "p_spurious", "p_no_local_min")
    ]
    svg = page.eval_on_selector("#census-plot", "el => el.textContent")
    assert f"signed cones = {result['num_signed_cones']}" in svg  # the theory lines
    assert f"min(n^d, 2^n) = {result['theory_bound']}" in svg
    facts = page.inner_text("#census-facts")
    assert str(result["num_signed_cones"]) in facts and "m½" in facts
    shot(page, "2-census")

    # the cones, filtered to the spurious ones: the API's own page
    page.select_option("#f-verdict", "spurious")
    page.click("#cones-filter")
    spurious = lab.get(
        f"/v1/experiments/{teacher['id']}/cones", params={"verdict": "spurious", "limit": 25}
    ).json()["items"]
    assert spurious, "this census has spurious cones"
    until(
        page,
        f"document.querySelectorAll('#cones tbody tr').length === {len(spurious)} && "
        "[...document.querySelectorAll('#cones tbody tr')]"
        ".every(r => r.innerText.includes('spurious'))",
    )
    shown = [r.split("\t")[:2] for r in rows(page, "#cones")]
    assert shown == [[str(c["width"]), str(c["sample"])] for c in spurious]
    page.evaluate("window.scrollTo(0, document.getElementById('cones').offsetTop - 120)")
    shot(page, "3-census-cones-spurious")

    # a training sweep while it runs: a run's curve grows on screen
    sweep = lab.post("/v1/experiments", json=SWEEP).json()
    page.goto(f"{server}/ui#/e/{sweep['id']}")
    until(
        page,
        "[...document.querySelectorAll('#curve-plot path.js-line')]"
        ".some(l => (l.getAttribute('d').match(/L/g) || []).length > 10)",
        timeout=120,
    )
    before = vertices(page, "#curve-plot")
    assert len(before) == 3  # the first three runs are ticked
    until(
        page,
        f"(document.querySelector('#curve-plot path.js-line').getAttribute('d')"
        f".match(/L/g) || []).length + 1 > {before[0]}",
        timeout=60,
    )
    status = page.inner_text("#head-facts")
    assert "running" in status and "epochs" in status
    shot(page, "4-training-live")
    assert lab.post(f"/v1/experiments/{sweep['id']}/cancel").status_code == 202
    until(
        page, "document.querySelector('#head-facts [data-status]').dataset.status === 'cancelled'"
    )
    # once the worker has let go of the runs, a fresh page draws the whole kept curve
    runs_url = f"/v1/experiments/{sweep['id']}/runs"
    eventually(
        lambda: lab.get(runs_url).json()["items"],
        timeout=60,
        until=lambda runs: not any(r["status"] == "running" for r in runs),
        what="the runs' stopping after the cancel",
        interval=0.2,
    )
    first_run = lab.get(runs_url, params={"limit": 1}).json()["items"][0]
    curve = lab.get(f"{runs_url}/{first_run['id']}/curve", params={"max_points": 2000}).json()
    page.reload()
    until(page, "document.querySelector('#curve-plot path.js-line')")
    assert vertices(page, "#curve-plot")[0] == sum(e > 0 for e in curve["epoch"]) > before[0]

    # the optimum's certificate and neurons
    page.goto(f"{server}/ui#/e/{opt['id']}")
    page.wait_for_selector("#neurons tbody tr")
    solved = lab.get(f"/v1/experiments/{opt['id']}").json()["result"]
    assert len(rows(page, "#neurons")) == len(solved["neurons"])
    assert "certified" in page.inner_text("#optimum-facts")
    shot(page, "5-optimum")

    # compare the two censuses: one p_global curve each, one point per width
    page.goto(f"{server}/ui#/compare")
    page.check(f"input[value='{teacher['id']}']")
    page.check(f"input[value='{orth['id']}']")
    page.click("#compare-go")
    until(page, "document.querySelectorAll('#compare-census .scatterlayer .trace').length === 2")
    assert points(page, "#compare-census") == [len(WIDTHS), len(WIDTHS)]
    legend = page.eval_on_selector("#compare-census .legend", "el => el.textContent")
    assert "census-teacher" in legend and "census-orth" in legend
    assert len(rows(page, "#compared")) == 2
    shot(page, "6-compare")


def test_another_tenant_sees_none_of_it(server, page):
    lab_a = client(server, "tokA")
    mine = lab_a.post("/v1/experiments", json=OPTIMUM).json()["id"]  # queued: no worker

    log_in(page, server, "tokB")
    page.wait_for_selector("#experiments tbody td[colspan]")
    assert "No experiments" in page.inner_text("#experiments tbody")
    page.goto(f"{server}/ui#/e/{mine}")
    page.wait_for_selector("main .error")
    assert f"404: no experiment {mine}" in page.inner_text("main .error")
    page.goto(f"{server}/ui#/compare?ids={mine}")
    page.wait_for_selector("main .error")

    # by keyboard alone: forget B's token, type A's, tab to the experiment's link, open it
    page.click("#logout")
    page.goto(f"{server}/ui")
    tab_to(page, "document.activeElement.id === 'token'")
    page.keyboard.type("tokA")
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#experiments tr[data-id='{mine}']")
    tab_to(page, f"document.activeElement.getAttribute('href') === '#/e/{mine}'")
    ring = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert ring == "solid"  # the focus is visible
    page.keyboard.press("Enter")
    page.wait_for_selector("#head-facts")
    assert page.url.endswith(f"#/e/{mine}") and "queued" in page.inner_text("#head-facts")


def tab_to(page, condition: str, presses: int = 40) -> None:
    """Press Tab until the condition holds."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate(f"() => {condition}"):
            return
    raise AssertionError(f"not reached by {presses} Tabs: {condition}")


PAINT = os.environ.get("DASHBOARD_PAINT") == "1"
BIG = {
    **SWEEP_SPEC,
    "name": "sweep-16384",
    "widths": [10, 20],
    "init_scales": [2.0 ** (-k / 4) for k in range(64)],
    "seeds": 128,  # 2 widths x 64 scales x 128 seeds = 16,384 runs, the default MAX_RUNS
    "max_epochs": 1000,
}


@pytest.mark.skipif(not PAINT, reason="a measurement: DASHBOARD_PAINT=1 runs it")
def test_first_paint_of_a_16384_run_sweep(server, browser, pg_engine):
    """Prints how long a fresh tab takes to show a finished 16,384-run sweep's page: its
    run table, its curves and its final-gap panel (bench/README.md). No timing is asserted."""
    from sqlalchemy import text, update
    from sqlalchemy.orm import Session

    from service.models import Experiment

    lab = client(server, "tokA")
    made = lab.post("/v1/experiments", json=BIG)
    assert made.status_code == 202, made.text
    eid = made.json()["id"]
    groups = [
        {"width": w, "init_scale": a, "runs": 128, "p_global": 2 / 3, "p_spurious": 1 / 3}
        for w in BIG["widths"]
        for a in BIG["init_scales"]
    ]
    with Session(pg_engine) as s:  # as if it had trained: a verdict and a final per run
        s.execute(
            text(
                "UPDATE runs SET status = 'done', verdict = CASE WHEN index % 3 = 0 THEN "
                "'spurious_local_minimum' ELSE 'global_minimum' END, final = json_build_object("
                "'epoch', 1000, 'gap', power(10.0, -(index % 12)), 'grad_norm_sq', 1e-20, "
                "'reg_loss', 0.1, 'mse', 0.05, 'num_neurons', 3) WHERE experiment_id = :id"
            ),
            {"id": eid},
        )
        s.execute(
            update(Experiment)
            .where(Experiment.id == eid)
            .values(status="succeeded", result={"optimum": 0.09, "groups": groups})
        )
        s.commit()
    assert lab.get(f"/v1/experiments/{eid}").json()["status"] == "succeeded"
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(
        "new MutationObserver(() => {"
        " const now = performance.now();"
        " if (!window.__table && document.querySelector('#runs tbody tr[data-run]'))"
        "  window.__table = now;"
        " if (!window.__finals && document.querySelector('#final-gap-plot .scatterlayer .trace'))"
        "  window.__finals = now;"
        "}).observe(document, {subtree: true, childList: true});"
    )
    tab = context.new_page()
    tab.goto(f"{server}/ui")
    tab.evaluate("t => sessionStorage.setItem('benignity.token', t)", "tokA")
    for attempt in range(3):
        tab.goto("about:blank")
        tab.goto(f"{server}/ui#/e/{eid}")
        until(tab, "window.__table && window.__finals", timeout=60)
        table, finals = tab.evaluate("() => [window.__table, window.__finals]")
        paint = tab.evaluate(
            "() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime"
        )
        rows_shown = len(rows(tab, "#runs"))
        print(
            f"16,384-run sweep, load {attempt + 1}: first contentful paint {paint:.0f} ms, "
            f"run table ({rows_shown} rows) {table:.0f} ms, final-gap panel {finals:.0f} ms"
        )
    context.close()
