"""Checkpoints hold state, not history: a checkpoint's size does not grow with the curve
points, a 16,384-run batch (width 100, d=4) checkpoints in under 64 MiB, and the points go
to curve chunks apart from it, in the checkpoint's own transaction, never in a heartbeat.
A batch that dies after a save and resumes from the checkpoint and the chunks ends with the
same runs, curves included, as one that never stopped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import select

from service import crud, crud_work
from service.curve_chunks import RUNS_PER_CHUNK, chunks, curve_of, decode_points
from service.models import CurveChunk, WorkItem
from tests.conftest import use_settings
from tests.workers.test_cone_analysis_jobs import FakeContext
from tests.workers.test_live_runs import add_training, batch, claim, spec  # noqa: F401
from tests.workers.test_sweeps_jobs import optima
from workers import jobs
from workers.landscape.training import SweepState


def state(runs: int, width: int, d: int, points: int, seed: int = 0) -> SweepState:
    rng = np.random.default_rng(seed)
    return SweepState(
        fingerprint="f",
        W=rng.standard_normal((runs, width, d)) * 0.3,
        a=rng.standard_normal((runs, width)) * 0.1,
        widths=np.full(runs, width),
        epoch=rng.integers(0, 20_000, runs),
        status=rng.integers(0, 5, runs).astype(np.int8),
        final=rng.standard_normal((runs, 6)),
        shuffle_keys=rng.integers(0, 2**63, runs).astype(np.uint64),
        global_epoch=1234,
        next_record=1300,
        last_point=rng.integers(0, 1234, runs),
        curve_run=rng.integers(0, runs, points),
        curve_epoch=rng.integers(0, 1234, points),
        curve_stats=rng.standard_normal((points, 6)),
    )


def test_a_checkpoint_holds_the_state_exactly_and_no_history():
    few, many = state(64, 10, 3, 10), state(64, 10, 3, 200_000)
    assert len(many.to_bytes(history=False)) == pytest.approx(
        len(few.to_bytes(history=False)), rel=0.05
    )
    assert len(many.to_bytes()) > 5 * len(many.to_bytes(history=False))
    back = SweepState.from_bytes(many.to_bytes(history=False))
    for name in ("W", "a", "widths", "epoch", "status", "final", "shuffle_keys", "last_point"):
        np.testing.assert_array_equal(getattr(back, name), getattr(many, name))
        assert getattr(back, name).dtype == getattr(many, name).dtype
    assert (back.global_epoch, back.next_record, back.num_points) == (1234, 1300, 0)
    # with the points put back, as the chunks hold them, the whole state again
    whole = back.with_points(*many.points())
    for name in ("curve_run", "curve_epoch", "curve_stats"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(many, name))
    full = SweepState.from_bytes(many.to_bytes())  # with history, as before
    np.testing.assert_array_equal(full.curve_stats, many.curve_stats)


def test_a_16384_run_batch_checkpoints_in_under_64_mib():
    big = state(16_384, 100, 4, 1000)
    raw = big.W.nbytes + big.a.nbytes
    blob = big.to_bytes(history=False)
    assert len(blob) < 64 * 2**20, len(blob)
    assert len(blob) < raw  # byte-shuffled and compressed: below the weights' raw size


def test_chunks_split_new_points_by_block_and_read_back_as_curves():
    rng = np.random.default_rng(3)
    runs = rng.integers(0, 2500, 20_000)
    epochs = np.arange(20_000)
    stats = rng.standard_normal((20_000, 6))
    stats[:, 5] = rng.integers(0, 9, 20_000)
    rows = chunks((runs, epochs, stats), start=100, stop=2600, optimum=0.25, seq=3)
    assert [(r["first_run"], r["stop_run"]) for r in rows] == [
        (100, 100 + RUNS_PER_CHUNK),
        (100 + RUNS_PER_CHUNK, 100 + 2 * RUNS_PER_CHUNK),
        (100 + 2 * RUNS_PER_CHUNK, 2600),
    ]
    assert sum(r["points"] for r in rows) == 20_000 and {r["seq"] for r in rows} == {3}
    back_runs, back_epochs, back_stats = decode_points(r["data"] for r in rows)
    assert sorted(zip(back_runs.tolist(), back_epochs.tolist(), strict=True)) == sorted(
        zip((runs + 100).tolist(), epochs.tolist(), strict=True)
    )
    mine = runs == 7
    (block,) = [r for r in rows if r["first_run"] <= 107 < r["stop_run"]]
    curve = curve_of(107, [block["data"]], 0.25)
    np.testing.assert_array_equal(curve["epoch"], epochs[mine])
    np.testing.assert_array_equal(curve["reg_loss"], stats[mine, 1])
    np.testing.assert_array_equal(curve["gap"], stats[mine, 1] - 0.25)
    np.testing.assert_array_equal(curve["num_neurons"], stats[mine, 5].astype(np.int64))


def test_points_and_checkpoint_go_together_under_the_lease_and_never_with_a_heartbeat(
    session,
):
    exp, (first, _) = add_training(session)
    held = claim(session, first, "a" * 32)
    rng = np.random.default_rng(0)
    points = (np.array([0, 1, 1]), np.array([0, 0, 5]), rng.standard_normal((3, 6)))
    rows = chunks(points, start=0, stop=2, optimum=0.5, seq=0)
    latest = [{"index": 1, "latest": {"epoch": 5, "loss": 1.0, "gap": 0.5, "grad_norm_sq": 2.0}}]
    mine = dict(item_id=first.id, experiment_id=exp.id, chunks=rows, updates=latest)
    assert not crud_work.save_live(session, lease="z" * 32, checkpoint=b"x", **mine)
    assert session.scalar(select(CurveChunk.id).where(CurveChunk.item_id == first.id)) is None
    assert crud_work.save_live(session, lease=held.lease, checkpoint=b"state", done=7, **mine)
    assert crud_work.heartbeat(session, item_id=first.id, lease=held.lease, done=9)
    session.expire_all()
    item = session.get(WorkItem, first.id)
    assert item is not None and item.checkpoint == b"state" and item.progress_done == 9
    assert crud_work.item_chunks(session, item_id=first.id) == (1, [rows[0]["data"]])
    optimum, blobs = crud.run_chunks(session, experiment_id=exp.id, index=1)
    assert optimum == 0.5 and list(curve_of(1, blobs, optimum)["epoch"]) == [0, 5]
    assert crud.run_chunks(session, experiment_id=exp.id, index=2) != (0.5, blobs)
    # a chunk of an attempt that died after its save is replaced by the next attempt's
    again = chunks(points, start=0, stop=2, optimum=0.5, seq=0)
    assert crud_work.save_live(session, lease=held.lease, **{**mine, "chunks": again})
    assert crud_work.item_chunks(session, item_id=first.id)[0] == 1
    # done: the curves are in the runs, the chunks go
    assert crud_work.complete_item(session, item=held, output={})
    assert crud_work.item_chunks(session, item_id=first.id) == (0, [])


class Died(Exception):
    """The worker died right after a save was committed."""


@dataclass
class Dying(FakeContext):
    """A context that stores saves as the database would, and dies after `die_after`."""

    die_after: int | None = None
    stored: list[bytes] = field(default_factory=list)
    last: bytes | None = None

    def save_live(self, **saved: Any) -> bool:
        self.last = saved["checkpoint"]
        self.stored += [c["data"] for c in saved["chunks"]]
        if self.die_after is not None and len(self.stored) >= self.die_after:
            raise Died
        return True

    def stored_points(self) -> tuple[int, list[bytes]]:
        return len(self.stored), list(self.stored)


def test_a_batch_resumed_from_its_checkpoint_and_chunks_ends_as_one_that_never_stopped(
    spec,  # noqa: F811
    batch,  # noqa: F811
    monkeypatch,
):
    use_settings(monkeypatch, CHECKPOINT_INTERVAL="0.000001")
    monkeypatch.setattr(jobs, "STOP_CHECK_INTERVAL", 0.0)  # a save at every chunk of epochs
    outputs = {0: optima(spec)}
    clean = jobs.training_job(FakeContext(spec, batch["payload"], outputs=outputs))
    dying = Dying(spec, batch["payload"], outputs=outputs, die_after=3)
    with pytest.raises(Died):
        jobs.training_job(dying)
    assert dying.last is not None and SweepState.from_bytes(dying.last).num_points == 0
    resumed_ctx = Dying(spec, batch["payload"], checkpoint=dying.last, outputs=outputs)
    resumed_ctx.stored = list(dying.stored)
    resumed = jobs.training_job(resumed_ctx)
    assert resumed.output["resumed_from"] > 0 and clean.output["resumed_from"] == 0
    assert resumed.runs == clean.runs  # finals, verdicts, latest points and curve blobs


def test_a_curves_export_holds_the_partial_curves_of_a_batch_that_trains(session):
    from service.curves import encode_curve
    from service.routes.exports import experiment_batches

    exp, (first, _) = add_training(session)
    held = claim(session, first, "a" * 32)
    rng = np.random.default_rng(1)
    points = (np.array([1, 0, 1, 1]), np.array([0, 0, 3, 9]), rng.standard_normal((4, 6)))
    rows = chunks(points, start=0, stop=2, optimum=0.5, seq=0)
    assert crud_work.save_live(
        session, item_id=first.id, lease=held.lease, experiment_id=exp.id, chunks=rows
    )
    done = {name: [1.0, 2.0] for name in ("mse", "reg_loss", "grad_norm_sq", "gap")}
    done |= {"epoch": [0, 4], "param_norm_sq": [1.0, 1.0], "effective_rank": [1.0, 1.0]}
    done["num_neurons"] = [3, 2]
    crud_work.update_runs(
        session, experiment_id=exp.id, updates=[{"index": 3, "curve": encode_curve(done)}]
    )
    session.expire_all()
    table = pa.Table.from_batches(list(experiment_batches(session, exp, "curves")))
    got = table.select(["run_index", "epoch", "reg_loss", "gap"]).to_pylist()
    stats = points[2]
    assert got == [
        {"run_index": 0, "epoch": 0, "reg_loss": stats[1, 1], "gap": stats[1, 1] - 0.5},
        *(
            {"run_index": 1, "epoch": e, "reg_loss": stats[k, 1], "gap": stats[k, 1] - 0.5}
            for k, e in ((0, 0), (2, 3), (3, 9))
        ),
        {"run_index": 3, "epoch": 0, "reg_loss": 1.0, "gap": 1.0},
        {"run_index": 3, "epoch": 4, "reg_loss": 2.0, "gap": 2.0},
    ]
