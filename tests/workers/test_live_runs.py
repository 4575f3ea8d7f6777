"""Live training, below the API: a batch's runs are `running` while it trains and go back to
`queued` when it is handed back; its partial curves and latest points are stored under the
lease only; progress counts epochs (a run that stops early counts as max_epochs) and never
falls; a cancel stores the curves once more before the job stops."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from service import crud, crud_recovery, crud_work
from service.curve_chunks import curve_of, decode_points
from service.curves import decode_curve, encode_curve
from service.models import Experiment, Run, WorkItem, new_id, utcnow
from tests.conftest import use_settings
from tests.e2e.test_training_e2e import SPEC as ONE_POINT_SPEC
from tests.workers.test_cone_analysis_jobs import FakeContext, filled
from tests.workers.test_sweeps_jobs import items, optima
from workers import jobs
from workers.landscape import training

MAX_EPOCHS = 20_000
#: 4 runs on one point (SCIENCE.md section 8) that stop early, converged or collapsed
SPEC = {**ONE_POINT_SPEC, "seeds": 1, "max_epochs": MAX_EPOCHS}

# --- the run lifecycle on PostgreSQL ---------------------------------------------------


def add_training(session: Session) -> tuple[Experiment, list[WorkItem]]:
    """A running training experiment of 4 runs in two batches, [0, 2) and [2, 4)."""
    exp = Experiment(id=new_id(), kind="training", status="queued", spec={}, spec_hash="h")
    batches = [
        WorkItem(
            id=new_id(),
            experiment_id=exp.id,
            task="training_batch",
            queue="cpu",
            stage=1,
            status="queued",
            payload={"runs": [start, start + 2]},
            progress_total=2 * MAX_EPOCHS,
        )
        for start in (0, 2)
    ]
    runs = [Run(experiment_id=exp.id, index=i, params={"width": 3}) for i in range(4)]
    session.add_all([exp, *batches, *runs])
    session.flush()
    return exp, batches


def statuses(session: Session, exp: Experiment) -> list[str]:
    session.expire_all()
    query = select(Run.status).where(Run.experiment_id == exp.id).order_by(Run.index)
    return list(session.scalars(query))


def claim(session: Session, item: WorkItem, lease: str) -> crud_work.Claimed:
    claimed = crud_work.claim_item(session, item_id=item.id, lease=lease, max_attempts=5)
    assert claimed is not None
    return claimed


def test_a_batch_runs_while_claimed_and_is_queued_again_when_handed_back(session):
    exp, (first, _) = add_training(session)
    claimed = claim(session, first, "a" * 32)
    assert statuses(session, exp) == ["running", "running", "queued", "queued"]
    session.refresh(first)
    assert first.started_at is not None

    assert crud_recovery.release_item(session, item=claimed) is not None  # shutdown
    assert statuses(session, exp) == ["queued"] * 4

    claimed = claim(session, first, "b" * 32)
    kill = {"item_id": first.id, "cause": "was killed by signal 9 (SIGKILL)", "max_kills": 3}
    assert crud_recovery.record_kill(session, lease_prefix="b" * 20, **kill) is not None
    assert statuses(session, exp) == ["queued"] * 4

    claim(session, first, "c" * 32)
    assert statuses(session, exp)[:2] == ["running", "running"]
    first.heartbeat_at = utcnow() - timedelta(seconds=60)  # its worker died
    session.flush()
    sent = crud_recovery.reap(session, heartbeat_timeout=5, requeue_after=1e6, window=10)
    assert [e.item_id for e in sent] == [first.id]
    assert statuses(session, exp) == ["queued"] * 4


def test_a_cancel_is_kept_when_the_batch_is_requeued_afterwards(session):
    exp, (first, _) = add_training(session)
    claim(session, first, "a" * 32)
    crud.cancel_experiment(session, experiment_id=exp.id)
    assert statuses(session, exp) == ["cancelled"] * 4
    first.heartbeat_at = utcnow() - timedelta(seconds=60)
    session.flush()
    crud_recovery.reap(session, heartbeat_timeout=5, requeue_after=1e6, window=10)
    assert statuses(session, exp) == ["cancelled"] * 4


def test_a_batch_that_used_up_its_attempts_fails_its_runs(session):
    exp, (first, _) = add_training(session)
    first.attempts = 5  # lost by a worker five times
    session.flush()
    assert crud_work.claim_item(session, item_id=first.id, lease="a" * 32, max_attempts=5) is None
    session.refresh(exp)
    assert exp.status == "failed" and statuses(session, exp) == ["failed"] * 4


def test_partial_runs_are_stored_only_under_the_lease(session):
    exp, (first, _) = add_training(session)
    claimed = claim(session, first, "a" * 32)
    curve = {
        "epoch": [0, 1, 2],
        "mse": [1.0, 0.5, 0.25],
        "reg_loss": [1.0, 0.6, 0.3],
        "grad_norm_sq": [4.0, 2.0, 1.0],
        "gap": [0.7, 0.3, 0.0],
        "param_norm_sq": [0.1, 0.2, 0.3],
        "effective_rank": [1.0, 1.0, 1.0],
        "num_neurons": [3, 2, 1],
    }
    latest = {"epoch": 2, "loss": 0.3, "gap": 0.0, "grad_norm_sq": 1.0}
    update = {"index": 1, "curve": encode_curve(curve), "latest": latest}
    stale = dict(item_id=first.id, lease="z" * 32, experiment_id=exp.id, updates=[update])
    assert crud_work.save_live(session, **stale) is False
    mine = {**stale, "lease": claimed.lease}
    assert crud_work.save_live(session, **mine) is True
    session.expire_all()
    run = session.scalars(select(Run).where(Run.experiment_id == exp.id, Run.index == 1)).one()
    assert run.status == "running" and run.latest == latest
    assert run.curve is not None and list(decode_curve(run.curve)["epoch"]) == [0, 1, 2]


# --- the job: epochs as progress, curves at each checkpoint ----------------------------


@dataclass
class Recorder(FakeContext):
    """A job's context that records its progress reports and saves (checkpoint, curve
    chunks, run updates), and reports a cancel from its `cancel_at`-th progress report on."""

    cancel_at: int | None = None
    reports: list[int] = field(default_factory=list)
    saves: list[dict[str, Any]] = field(default_factory=list)
    saved_after_cancel: bool = False

    def cancelled(self) -> bool:
        return self.cancel_at is not None and len(self.reports) >= self.cancel_at

    def progress(self, done: int) -> bool:
        self.reports.append(done)
        return not self.cancelled()

    def save_live(self, **saved: Any) -> bool:
        self.saves.append(saved)
        self.saved_after_cancel = self.cancelled()
        return True

    def curves_seen(self) -> list[dict[int, np.ndarray]]:
        """After each save, every run's epochs stored so far (chunks read as the API does)."""
        blobs: list[bytes] = []
        seen = []
        for saved in self.saves:
            blobs += [c["data"] for c in saved["chunks"]]
            runs = np.unique(decode_points(blobs)[0]) if blobs else []
            seen.append({int(i): curve_of(int(i), blobs, 0.0)["epoch"] for i in runs})
        return seen


@pytest.fixture
def spec() -> dict[str, Any]:
    return filled(SPEC)


@pytest.fixture
def batch(spec) -> dict[str, Any]:
    (item,) = [i for i in items(spec) if i["task"] == "training_batch"]
    return item


def test_progress_counts_epochs_and_curves_grow_at_each_checkpoint(spec, batch, monkeypatch):
    use_settings(monkeypatch, CHECKPOINT_INTERVAL="0.000001")
    monkeypatch.setattr(jobs, "STOP_CHECK_INTERVAL", 0.0)  # a checkpoint at every chunk
    assert batch["progress_total"] == 4 * MAX_EPOCHS
    ctx = Recorder(spec, batch["payload"], outputs={0: optima(spec)})
    out = jobs.training_job(ctx)

    reports = ctx.reports
    assert reports == sorted(reports) and reports[-1] == batch["progress_total"]
    assert any(0 < r < batch["progress_total"] for r in reports), reports
    # every run stops early here (converged or collapsed), so the count jumps at each stop
    assert all(u["final"]["epoch"] < MAX_EPOCHS for u in out.runs)

    by_run: dict[int, list[np.ndarray]] = {}
    for saved, seen in zip(ctx.saves, ctx.curves_seen(), strict=True):
        # each save: a checkpoint of the state only, chunks of new points, latest points
        assert training.SweepState.from_bytes(saved["checkpoint"]).num_points == 0
        assert all(c["points"] > 0 for c in saved["chunks"])
        for u in saved["updates"]:
            assert set(u) == {"index", "latest"}
            assert u["latest"]["epoch"] == seen[u["index"]][-1]
            by_run.setdefault(u["index"], []).append(seen[u["index"]])
    assert set(by_run) == {0, 1, 2, 3}
    for stored in by_run.values():
        for before, after in zip(stored, stored[1:], strict=False):
            assert len(after) > len(before) and list(after[: len(before)]) == list(before)
    grown = max(by_run.values(), key=len)
    assert len(grown) >= 2, "no run's curve was stored twice while it trained"
    for u in out.runs:  # done: the final curve extends the partial ones, latest is its end
        final = decode_curve(u["curve"])
        assert list(final["epoch"][: len(by_run[u["index"]][-1])]) == list(by_run[u["index"]][-1])
        assert u["latest"] == jobs.latest_point(final)
        assert u["latest"]["epoch"] == u["final"]["epoch"]


def test_a_cancel_stores_the_curves_once_more_before_stopping(spec, batch, monkeypatch):
    use_settings(monkeypatch, CHECKPOINT_INTERVAL="3600")  # no periodic write
    monkeypatch.setattr(jobs, "STOP_CHECK_INTERVAL", 0.0)
    ctx = Recorder(spec, batch["payload"], outputs={0: optima(spec)}, cancel_at=4)
    with pytest.raises(jobs.Stopped):
        jobs.training_job(ctx)
    # one save at the first check (readable at once), one at the cancel, none in between
    assert len(ctx.saves) == 2 and ctx.saved_after_cancel
    first, last = ctx.curves_seen()
    assert sorted(first) == [0, 1, 2, 3] and last
    for index, epochs in last.items():  # the runs that trained on: up to the cancel
        assert epochs[0] == 0
        assert len(epochs) > len(first[index]) and epochs[-1] >= 3 * 256
    # the cancel stores every run's whole curve, as a finished run's is stored
    cancelled = {u["index"]: u for u in ctx.saves[-1]["updates"]}
    assert sorted(cancelled) == [0, 1, 2, 3]
    for index, u in cancelled.items():
        curve = decode_curve(u["curve"])
        assert list(curve["epoch"]) == list(last[index])
        assert u["latest"] == jobs.latest_point(curve)


@pytest.mark.parametrize("compiled", [True, False], ids=["native", "torch"])
def test_epochs_done_counts_a_stopped_run_as_max_epochs(compiled):
    X, y = np.array([[0.6, 0.8, 0.0]]), np.array([1.5])
    runs = [training.RunSpec(3, 0.01, 1), training.RunSpec(10, 1.0, 2)]
    seen: list[tuple[int, list[int]]] = []

    def record(state: training.SweepState, done: int, total: int) -> bool:
        seen.append((state.epochs_done(MAX_EPOCHS), state.status.tolist()))
        return True

    training.train_sweep(
        X, y, 0.1, runs, lr=0.05, max_epochs=MAX_EPOCHS, optimum=0.29,
        checkpoint_every=0.0, on_checkpoint=record, compiled=compiled,
    )  # fmt: skip
    counts = [c for c, _ in seen]
    assert counts == sorted(counts) and counts[-1] == 2 * MAX_EPOCHS
    first, status = seen[0]
    assert status == [0, 0] and first == 2 * 256  # both running after one chunk of 256 epochs
