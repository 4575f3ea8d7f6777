"""What one work item will cost: peak memory, time and stored output, from a spec's shape.

``plans.plan`` refuses a spec when an item's estimate is over MAX_ITEM_MEMORY or
MAX_ITEM_SECONDS, or the stored result over MAX_RESULT_BYTES, and gives each item
``time_limit = max(MIN_TIME_LIMIT, TIME_LIMIT_FACTOR x seconds)`` and ``memory_estimate``.
The estimates are upper-ish bounds fitted to measurements, not predictions: pure
arithmetic on the shape, so that the API spends microseconds on any spec.

Shapes: n points, d dimensions, P activation patterns (``plans.pattern_bound``, already
capped at MAX_PATTERNS), m neurons per census sample or training run, R runs per
training batch (TRAINING_BATCH_RUNS), E epochs (max_epochs, the worst case), w signed
cones in an optimum's largest restricted program.

Model (bytes of peak RSS; seconds):

- Every item: BASE = 256 MiB, a worker process with numpy, CVXPY and torch loaded
  (116-129 MB measured without torch).
- ``optimum``: 24 P n (patterns, pricing) + 4 KiB n (CVXPY's rows per point)
  + 64 n w d (the program), with w = 2P for P <= 128 (one program over every cone),
  else min(2P, n + 1 + max(16, 2d)) (column generation's working set). Time:
  0.5 + 6e-5 n P d for P <= 128, else 1 + 3e-6 n^2 d sqrt(P).
- ``census_chunk`` of c cones of width m: memory BASE + P n (uniform keeps every
  pattern) + m (8d + 9n + 120) (the draws, their patterns and keys) + the restricted
  program of k = min(m, 2P) cones, 4 KiB n + 64 n k d. Time: c (0.05 + 4e-7 m (n + d)
  + 1e-5 n k d).
- ``training_batch``: R m (d + 1) 8 bytes per copy of the weights and R n m 8 per
  preactivation, curves 64 R T with T = 1 / (log_growth - 1) + ln E / ln log_growth
  points. The native C kernel (CPU, full-batch GD, n <= 63) holds 4 weight copies and
  2 preactivations, and takes 5 + E (1e-6 + 4e-9 R n m d) seconds; torch holds 16 and 24,
  plus 1 GiB and 180 s for torch.compile, and takes E s (2e-5 + 1.2e-8 R n m d / s)
  with s steps per epoch. Judging the runs adds R (0.05 + 1e-5 n min(m, 2P) d)
  (not measured separately; the restricted solves of the census rows bound it).
- Stored output: an optimum's neurons and support, k (24 d + n + 60) with
  k = min(n + 1, 2P) neurons; a census result 220 bytes per width, a training result
  260 per (width, init_scale).

Measured on this 2-core machine shared with other jobs (load 5-6, so times are
inflated), each in a fresh subprocess: wall time, and ru_maxrss after minus before.

| item | shape | measured | estimate |
| --- | --- | --- | --- |
| optimum | teacher n=6 d=10, P=64, full | 0.05 s, 7 MB | 0.7 s, 1 MB |
| optimum | n=30 d=3, P=872, colgen 7 rounds | 0.14 s, 6 MB | 1.2 s, 1 MB |
| optimum | n=200 d=3, P=39802, colgen 55 rounds | 25.9 s, 176 MB | 73 s, 200 MB |
| optimum | n=500 d=2, P=1000, 18 rounds | 43 s, 85 MB | 48 s, 47 MB |
| optimum | n=1000 d=2, P=2000, 20 rounds | 114 s, 123 MB | 269 s, 182 MB |
| optimum | n=2000 d=2, P=4000 | over 300 s | 1519 s, 717 MB |
| optimum | n=20000 d=1, P=2 | 1.1 s, 81 MB | 2.9 s, 88 MB |
| optimum | n=81601 d=1, P=2 (the issue's 49.6 GiB) | 4.8 s, 311 MB | 10 s, 359 MB |
| census | n=6 d=10, m=10, uniform | 19 ms/cone | 0.05 s/cone |
| census | n=6 d=10, m=640, uniform | 3.3 ms/cone | 0.13 s/cone |
| census | n=6 d=10, m=100000, random_vector | 0.43 s/cone, 13 MB | 0.8 s, 26 MB |
| census | n=6 d=10, m=1000000, uniform | 4.0 s/cone, 42 MB | 6.5 s, 255 MB |
| census | n=40 d=3, m=2000, random_vector | 0.10 s/cone | 2.5 s/cone |
| training | native, n=4 d=4 m=100 R=16, 50k epochs | 4.4 s, 2 MB | 11 s, 2 MB |
| training | torch, n=100 d=10 m=100 R=64, 2000 epochs | 155 s, 868 MB | 401 s, 1.2 GB |
| training | torch, n=1000 d=10 m=100 R=64, 500 epochs | 141 s, 922 MB | 1207 s, 2.3 GB |
| training | torch, n=200 d=50 m=2000 R=32, 100 epochs | 188 s, 3830 MB | 7350 s, 4.0 GB |

(Estimates exclude BASE and, for training, include judging the runs, which the
measurements did not; the torch rows are dominated by torch.compile.) GPU steps were
not measured; the torch constants are the CPU ones, an upper bound for a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BASE_MEMORY = 256 * 1024**2
_OPT_PER_POINT = 4096
_NATIVE_MAX_N = 63  # workers.landscape.training_native.MAX_N
_FULL_MAX_PATTERNS = 128  # workers.landscape.convex.AUTO_COLGEN_MIN_PATTERNS
TORCH_COMPILE_MEMORY = 1024**3
TORCH_COMPILE_SECONDS = 180.0


@dataclass(frozen=True)
class Estimate:
    """One work item's cost: peak RSS in bytes, wall seconds, and the shape they come from."""

    memory: int
    seconds: float
    shape: str


def _program_memory(n: int, d: int, cones: int) -> int:
    return _OPT_PER_POINT * n + 64 * n * cones * d


def optimum(n: int, d: int, patterns: int) -> Estimate:
    """The ``optimum`` item (also the first item of every census and training)."""
    if patterns <= _FULL_MAX_PATTERNS:
        cones, seconds = 2 * patterns, 0.5 + 6e-5 * n * patterns * d
    else:
        cones = min(2 * patterns, n + 1 + max(16, 2 * d))
        seconds = 1.0 + 3e-6 * n * n * d * math.sqrt(patterns)
    memory = BASE_MEMORY + 24 * patterns * n + _program_memory(n, d, cones)
    return Estimate(memory, seconds, f"n {n} x d {d}, {patterns} patterns")


def census_chunk(
    n: int, d: int, patterns: int, *, width: int, cones: int, uniform: bool
) -> Estimate:
    """One ``census_chunk`` item: ``cones`` samples of ``width`` neurons each."""
    k = min(width, 2 * patterns)
    memory = (
        BASE_MEMORY
        + (patterns * n if uniform else 0)
        + width * (8 * d + 9 * n + 120)
        + _program_memory(n, d, k)
    )
    seconds = cones * (0.05 + 4e-7 * width * (n + d) + 1e-5 * n * k * d)
    return Estimate(memory, seconds, f"{cones} cones x width {width}, n {n} x d {d}")


def curve_points(epochs: int, log_growth: float) -> float:
    """An upper bound on a run's curve points (SCIENCE §6: epoch 0, log-spaced, the end)."""
    return 2.0 + 1.0 / (log_growth - 1.0) + math.log(max(epochs, 1)) / math.log(log_growth)


def training_batch(
    n: int,
    d: int,
    patterns: int,
    *,
    runs: int,
    width: int,
    epochs: int,
    steps_per_epoch: int,
    native: bool,
    log_growth: float,
) -> Estimate:
    """One ``training_batch`` item: ``runs`` runs padded to ``width`` neurons."""
    weights, activations = 8 * runs * width * (d + 1), 8 * runs * n * width
    curves = int(64 * runs * curve_points(epochs, log_growth))
    work = runs * n * width * d
    judge = runs * (0.05 + 1e-5 * n * min(width, 2 * patterns) * d)
    if native:
        memory = 4 * weights + 2 * activations
        seconds = 5.0 + epochs * (1e-6 + 4e-9 * work)
    else:
        memory = TORCH_COMPILE_MEMORY + 16 * weights + 24 * activations
        seconds = TORCH_COMPILE_SECONDS + epochs * steps_per_epoch * 2e-5 + epochs * 1.2e-8 * work
    shape = f"{runs} runs x width {width} x d {d}, n {n}, {epochs} epochs"
    return Estimate(BASE_MEMORY + memory + curves, seconds + judge, shape)


def uses_native(n: int, optimizer: str, device: str) -> bool:
    """Whether a training batch runs on the native C kernel (else torch)."""
    return n <= _NATIVE_MAX_N and optimizer == "gd" and device != "cuda"


def optimum_output_bytes(n: int, d: int, patterns: int) -> int:
    """The stored output of an optimum: neurons (k x d numbers) and support (k x n bits)."""
    k = min(n + 1, 2 * patterns)
    return 400 + k * (24 * d + n + 60)


def result_bytes(
    kind: str, *, widths: int, init_scales: int, optima: int = 1, cells: int = 1
) -> int:
    """The experiment's result JSON beyond the optimum's neurons.

    ``optima``: the realisations (census) or (data seed, weight decay) pairs, each listed
    in ``optima`` when more than one; ``cells``: the census realisations, each with its
    own row per width (``by_data_seed``), or the training (data seed, λ, lr) cells.
    """
    listed = 0 if optima == 1 and cells == 1 else 120 * optima
    if kind == "census":
        return 400 + 220 * widths * (1 + (cells if cells > 1 else 0)) + listed
    if kind == "training":
        return 200 + 260 * widths * init_scales * cells + listed
    return 0


def human_bytes(size: float) -> str:
    """1.5 GB, 340 MB, 12 kB (decimal units)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} bytes"


def human_seconds(seconds: float) -> str:
    """7.2 h, 35 min, 12 s."""
    if seconds >= 86400 * 365:
        return f"{seconds / (86400 * 365):.1e} years"
    for unit, scale in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.1f} {unit}"
    return f"{seconds:.1f} s"
