"""The GPU check of issue 5: a 16,384-run sweep on CUDA, against the CPU path.

Prepared for a session that is lent a GPU (the `device` tool); run it there as

    python bench/training_gpu.py --runs 16384 --epochs 20000

It trains a 16,384-run float64 GD sweep (width 100, n = d = 4, theorem2 data,
init scale 1e-3, a fixed epoch budget with grad_tol 0 so no run stops early)
with workers.landscape.training.train_sweep on "cuda", prints run-steps per
second, then runs a 256-run slice of the same sweep on the CPU path in the same
process and prints the ratio. The goal in the issue is 1e8 run-steps/s on an H200.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from workers.landscape.geometry.datasets import theorem2
from workers.landscape.training import RunSpec, train_sweep


def rate(device: str, runs: int, epochs: int) -> tuple[float, float]:
    X, y = theorem2(4, 1e-3, 0)
    specs = [RunSpec(100, 1e-3, seed) for seed in range(runs)]
    kwargs = dict(lr=0.05, max_epochs=epochs, grad_tol=0.0, optimum=0.0, device=device)
    train_sweep(X, y, 1e-4, specs[: min(runs, 64)], **{**kwargs, "max_epochs": 50})  # compile
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    outs = train_sweep(X, y, 1e-4, specs, **kwargs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    steps = float(np.sum([o.epoch for o in outs]))
    return steps / seconds, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=16384)
    parser.add_argument("--epochs", type=int, default=20000)
    parser.add_argument("--cpu-runs", type=int, default=256)
    parser.add_argument("--cpu-epochs", type=int, default=2000)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark is for a machine with a GPU")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    gpu, gpu_s = rate("cuda", args.runs, args.epochs)
    print(f"cuda: {args.runs} runs x {args.epochs} epochs in {gpu_s:.1f} s: {gpu:.3e} run-steps/s")
    cpu, cpu_s = rate("cpu", args.cpu_runs, args.cpu_epochs)
    print(
        f"cpu : {args.cpu_runs} runs x {args.cpu_epochs} epochs in {cpu_s:.1f} s: "
        f"{cpu:.3e} run-steps/s"
    )
    print(f"ratio cuda / cpu: {gpu / cpu:.1f}x")


if __name__ == "__main__":
    main()
