"""The package as a user installs it: a wheel from `pip install .` carries everything
`benignity migrate` needs, and every package of service/ and workers/ is in it."""

from __future__ import annotations

import os
import site
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_pyproject():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("service", "workers")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_a_plain_install_migrates_a_fresh_sqlite_database(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = wheels.glob("benignity-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    purelib = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # the dependencies come from this test's environment (no torch download); the
    # project itself only from the wheel
    Path(purelib, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    away = tmp_path / "elsewhere"  # not the checkout: nothing of it is importable from here
    away.mkdir()
    db = away / "fresh.db"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATABASE_URL")}
    env.update(DATABASE_URL=f"sqlite:///{db}", BENIGNITY_HOME=str(away / "home"))
    where = subprocess.run(
        [py, "-c", "import service, benignity_migrations; print(service.__file__)"],
        cwd=away, env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert where.startswith(purelib), where
    done = subprocess.run(
        [venv / "bin" / "benignity", "migrate"],
        cwd=away, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        (head,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"experiments", "work_items", "runs", "census_cones"} <= tables
    latest = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("0*.py"))[-1]
    assert latest.startswith(head), (head, latest)
