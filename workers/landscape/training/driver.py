"""The host loop of a training sweep on torch: chunks of steps, curve points, compaction.

This is the path of SGD, of CUDA, of ``compiled=False`` and of full-batch GD on a
CPU without a C compiler; full-batch GD on the CPU otherwise runs on the native
kernel of training.native, which follows the same chunks and curve schedule.

The batch holds the runs still training, in ascending run order, plus zero
"filler" rows (run index -1, never active) when fewer than two runs remain, so
that the compiled step never sees a batch of one. The host reads the device once
per chunk: chunk boundaries are the multiples of ``CHUNK`` epochs, and that is
where stopped runs are finalised and dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from workers.landscape.training import kernels
from workers.landscape.training.curves import (
    count_cones,
    effective_rank,
    next_record_epoch,
    point_stats,
    shuffle_permutations,
)
from workers.landscape.training.state import (
    COLLAPSED,
    CONVERGED,
    DIVERGED,
    NOT_CONVERGED,
    RUNNING,
    SweepState,
)

CHUNK = 256
_MIN_BATCH = 2


@dataclass(frozen=True)
class SweepConfig:
    """The optimisation settings of a sweep (see ``train_sweep``)."""

    weight_decay: float
    optimizer: str
    lr: float
    batch_size: int | None
    max_epochs: int
    grad_tol: float
    log_growth: float
    stop_on_collapse: bool = False

    @property
    def detects_collapse(self) -> bool:
        """Whether a run stops as collapsed when every neuron is inactive on all
        data: when ``stop_on_collapse`` and ``2 lr weight_decay < 1``, where such
        a state is absorbing (see training.kernels.collapsed)."""
        return self.stop_on_collapse and 2.0 * self.lr * self.weight_decay < 1.0


class Sweep:
    """Steps the running runs of ``state`` on one device; ``state`` is updated in place.

    Args:
        X: (n, d) float64 data. y: (n,) float64 labels.
        state: the sweep state (fresh or resumed).
        config: optimisation settings.
        device: torch device.
        compiled: use torch.compile for the steps.
        cpu_threads: OpenMP threads of the compiled CPU kernels (see Kernel).
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        state: SweepState,
        config: SweepConfig,
        device: torch.device,
        *,
        compiled: bool,
        cpu_threads: int = 1,
    ) -> None:
        self.state, self.config, self.device = state, config, device
        self.X = torch.tensor(X, dtype=torch.float64, device=device)
        self.y = torch.tensor(y, dtype=torch.float64, device=device)

        def scalar(value: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
            return torch.tensor(value, dtype=dtype, device=device)

        self.lam, self.lr, self.tol = (
            scalar(config.weight_decay),
            scalar(config.lr),
            scalar(config.grad_tol),
        )
        self.max_epochs = scalar(config.max_epochs, torch.int64)
        self.collapse = scalar(config.detects_collapse, torch.bool)

        def kernel(fn: Callable[..., Any], batched: int = 4) -> kernels.Kernel:
            return kernels.Kernel(fn, batched, compiled, device, cpu_threads)

        self.gd_step = kernel(kernels.gd_step)
        self.gd_steps = kernel(kernels.gd_steps)
        self.gd_step_record = kernel(kernels.gd_step_record)
        self.evaluate = kernel(kernels.full_evaluation)
        self.evaluate_record = kernel(kernels.full_evaluation_record)
        self.update = kernel(kernels.minibatch_update, batched=5)
        self._load_batch(np.flatnonzero(state.status == RUNNING))

    def has_running(self) -> bool:
        """Whether any run is still training."""
        return bool(np.any(self.ids >= 0))

    def _load_batch(self, ids: np.ndarray) -> None:
        """Move the running runs ``ids`` (ascending) from the state to the device."""
        st = self.state
        pad = max(0, _MIN_BATCH - ids.size)
        self.ids = np.concatenate([ids, np.full(pad, -1, dtype=np.int64)])
        W = np.concatenate([st.W[ids], np.zeros((pad, *st.W.shape[1:]))])
        a = np.concatenate([st.a[ids], np.zeros((pad, st.a.shape[1]))])
        dev = self.device
        self.W = torch.tensor(W.transpose(0, 2, 1), device=dev).contiguous()  # (R, d, m)
        self.a = torch.tensor(a, device=dev)
        self.active = torch.tensor(self.ids >= 0, device=dev)
        epochs = np.where(self.ids >= 0, st.epoch[np.maximum(self.ids, 0)], 0)
        self.epoch = torch.tensor(epochs, dtype=torch.int64, device=dev)

    def advance_chunk(self) -> None:
        """Step to the next chunk boundary (or max_epochs), then finalise stopped runs."""
        st, cfg = self.state, self.config
        start = st.global_epoch
        steps = min(CHUNK - start % CHUNK, cfg.max_epochs + 1 - start)
        records: list[tuple[torch.Tensor, ...]] = []
        epochs: list[int] = []
        metrics: tuple[torch.Tensor, ...] = ()
        epoch, end = start, start + steps
        while epoch < end:
            multi = kernels.STEPS_PER_CALL
            if cfg.optimizer == "gd" and min(end, st.next_record) - epoch >= multi:
                metrics = self._gd_steps()
                epoch += multi
                continue
            active = self.active
            record = epoch == st.next_record
            metrics = self._step(epoch, record)
            if record:
                records.append((active, *metrics))
                epochs.append(epoch)
                st.next_record = next_record_epoch(epoch, cfg.log_growth)
            epoch += 1
        st.global_epoch = end
        self._store_records(epochs, records)
        self._finalise(metrics[:5])

    def _gd_steps(self) -> tuple[torch.Tensor, ...]:
        """``STEPS_PER_CALL`` GD epochs in one call; returns the last step's metrics."""
        out = self.gd_steps(
            self.W, self.a, self.active, self.epoch, self.X, self.y,
            self.lam, self.lr, self.tol, self.max_epochs, self.collapse,
        )  # fmt: skip
        self.W, self.a, self.active, self.epoch = out[:4]
        return tuple(out[4:])

    def _step(self, epoch: int, record: bool) -> tuple[torch.Tensor, ...]:
        """One epoch of every active run.

        Returns:
            (mse, loss, gns, pns, dead) at the weights before the step, followed,
            when ``record``, by their Gram matrices and cone codes.
        """
        if self.config.optimizer == "gd":
            step = self.gd_step_record if record else self.gd_step
            out = step(
                self.W, self.a, self.active, self.epoch, self.X, self.y,
                self.lam, self.lr, self.tol, self.max_epochs, self.collapse,
            )  # fmt: skip
            self.W, self.a, self.active, self.epoch = out[:4]
            return tuple(out[4:])
        evaluate = self.evaluate_record if record else self.evaluate
        alive, *metrics = evaluate(
            self.W, self.a, self.active, self.epoch, self.X, self.y,
            self.lam, self.tol, self.max_epochs, self.collapse,
        )  # fmt: skip
        n, size = self.X.shape[0], int(self.config.batch_size or 1)
        keys = self.state.shuffle_keys[np.maximum(self.ids, 0)]
        perm = torch.tensor(shuffle_permutations(keys, epoch, n), device=self.device)
        W, a = self.W, self.a
        for lo in range(0, n, size):
            idx = perm[:, lo : lo + size]
            W, a = self.update(W, a, alive, self.X[idx], self.y[idx], self.lam, self.lr)
        self.W, self.a, self.active = W, a, alive
        self.epoch = self.epoch + alive.to(torch.int64)
        return tuple(metrics)

    def _store_records(self, epochs: list[int], records: list[tuple[torch.Tensor, ...]]) -> None:
        """Move a chunk's curve points to the state (one transfer per chunk)."""
        if not records:
            return
        active, mse, loss, gns, pns, _, grams, codes = (
            torch.stack(c) for c in zip(*records, strict=True)
        )
        neurons = count_cones(codes.flatten(0, 1), self.X.shape[0] + 1).view(active.shape)
        stats = torch.stack([mse, loss, gns, pns, effective_rank(grams), neurons], dim=2)
        masks, values = active.cpu().numpy(), stats.cpu().numpy()  # (k, R), (k, R, 6)
        rows, cols = np.nonzero(masks)
        self.state.add_points(self.ids[cols], np.asarray(epochs)[rows], values[rows, cols])

    def _finalise(self, metrics: tuple[torch.Tensor, ...]) -> None:
        """Record runs that stopped during the chunk, then drop them from the batch.

        A stopped run is frozen, so the metrics of the chunk's last step are its
        metrics at its final epoch. ``metrics``: (mse, loss, gns, pns, dead).
        """
        st = self.state
        active = self.active.cpu().numpy()
        stopped = np.flatnonzero(~active & (self.ids >= 0))
        if stopped.size == 0:
            return
        rows = torch.tensor(stopped, device=self.device)
        W, a = self.W[rows], self.a[rows]
        mse, loss, gns, pns, dead = (m[rows] for m in metrics)
        stats = point_stats(W, a, self.X, (mse, loss, gns, pns)).cpu().numpy()
        ids = self.ids[stopped]
        st.epoch[ids] = self.epoch[rows].cpu().numpy()
        st.W[ids] = W.transpose(1, 2).cpu().numpy()
        st.a[ids] = a.cpu().numpy()
        st.final[ids] = stats
        finite = np.isfinite(stats[:, 1]) & np.isfinite(stats[:, 2])
        converged = stats[:, 2] < self.config.grad_tol
        stuck = np.where(dead.cpu().numpy(), COLLAPSED, NOT_CONVERGED)
        st.status[ids] = np.where(~finite, DIVERGED, np.where(converged, CONVERGED, stuck))
        new = st.last_point[ids] != st.epoch[ids]
        st.add_points(ids[new], st.epoch[ids][new], stats[new])
        keep = np.flatnonzero(active & (self.ids >= 0))
        self._load_batch_from_device(keep)

    def _load_batch_from_device(self, keep: np.ndarray) -> None:
        """Compact the batch to the rows ``keep`` (padding to two rows)."""
        pad = max(0, _MIN_BATCH - keep.size)
        rows = torch.tensor(keep, dtype=torch.int64, device=self.device)
        self.ids = np.concatenate([self.ids[keep], np.full(pad, -1, dtype=np.int64)])
        W, a, epoch = self.W[rows], self.a[rows], self.epoch[rows]
        if pad:
            W = torch.cat([W, W.new_zeros((pad, *W.shape[1:]))])
            a = torch.cat([a, a.new_zeros((pad, a.shape[1]))])
            epoch = torch.cat([epoch, epoch.new_zeros(pad)])
        self.W, self.a, self.epoch = W.contiguous(), a.contiguous(), epoch
        self.active = torch.tensor(self.ids >= 0, device=self.device)

    def sync_state(self) -> SweepState:
        """Copy the running runs' weights and epochs into the state and return it."""
        st = self.state
        rows = np.flatnonzero(self.ids >= 0)
        if rows.size:
            ids = self.ids[rows]
            index = torch.tensor(rows, device=self.device)
            st.W[ids] = self.W[index].transpose(1, 2).cpu().numpy()
            st.a[ids] = self.a[index].cpu().numpy()
            st.epoch[ids] = self.epoch[index].cpu().numpy()
        return st
