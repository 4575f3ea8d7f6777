"""GET of an experiment with a large stored result: the spliced answer against parsing
the result and serialising it again (the way before), in one process; prints the ratios.

    .venv/bin/python bench/large_result.py [--database-url URL] [--neurons 800] [--d 1000]

The result holds `neurons` neurons of dimension `d` (800 x 1000: about 11.7 MB of JSON).
Memory is tracemalloc's peak of Python allocations while one answer is built; time is
the best of 3. The database is a fresh SQLite file unless --database-url names one
(a PostgreSQL database that this script may create tables in).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from service import crud
from service.deps import Principal
from service.models import Base, Experiment, new_id
from service.responses import body_of
from service.routes.experiments import snapshot_body
from service.schemas import Experiment as ExperimentView

ADMIN = Principal(tenant="", admin=True)


def parsed_body(session: Session, experiment_id: str) -> bytes:
    """The baseline: load the row (the driver parses the JSON), build the model, dump it."""
    row = crud.get_experiment(session, experiment_id=experiment_id)
    assert row is not None
    done = crud.progress_of(session, experiment_ids=[row.id]).get(row.id, 0)
    return body_of(ExperimentView.of(row, done))


def measure(engine, build: Callable[[Session], bytes]) -> tuple[float, float, int]:
    """(best seconds of 3, peak MB of Python allocations, body bytes)."""
    best, peak, size = float("inf"), 0.0, 0
    for _ in range(3):
        with Session(engine) as session:
            tracemalloc.start()
            t = time.perf_counter()
            body = build(session)
            best = min(best, time.perf_counter() - t)
            peak = max(peak, tracemalloc.get_traced_memory()[1] / 1e6)
            tracemalloc.stop()
            size = len(body)
    return best, peak, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--neurons", type=int, default=800)
    parser.add_argument("--d", type=int, default=1000)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{os.path.join(tempfile.mkdtemp(), 'bench.db')}"
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    result = {
        "optimum": 0.125,
        "neurons": [{"w": [0.123456789 * i] * args.d, "a": 1.0} for i in range(args.neurons)],
    }
    with Session(engine) as session:
        exp = Experiment(id=new_id(), kind="optimum", status="succeeded", spec={},
                         result=result, spec_hash="0" * 64, progress_total=1)  # fmt: skip
        session.add(exp)
        session.commit()
        exp_id = exp.id
    del result
    base = measure(engine, lambda s: parsed_body(s, exp_id))
    ours = measure(engine, lambda s: snapshot_body(s, exp_id, ADMIN))
    print(f"{engine.dialect.name}, result of {args.neurons} neurons x d {args.d}")
    for name, (sec, peak, size) in (("parse and re-serialise", base), ("spliced as stored", ours)):
        print(f"{name:>24}: {sec * 1e3:7.0f} ms, peak {peak:6.1f} MB, body {size / 1e6:.1f} MB")
    print(f"ratio: {base[0] / ours[0]:.1f}x faster, {base[1] / ours[1]:.1f}x less peak memory")


if __name__ == "__main__":
    main()
