"""The native kernel's build cache: ownership checks, one build per shape family,
pruning, and failed builds recorded in build-status.json with the torch fallback."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from workers.landscape.geometry.datasets import theorem2
from workers.landscape.training import RunOutcome, RunSpec, train_sweep
from workers.landscape.training import native as training_native
from workers.landscape.training import native_cache as kernel_cache

LOGGER = kernel_cache.__name__
CC = shutil.which("gcc") or shutil.which("cc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler")

# A planted library: its constructor writes a marker file when the library is loaded.
PLANTED = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen(MARKER, "w");
    if (f) { fputs("planted code ran", f); fclose(f); }
}
int gd_chunk(void) { return 0; }
int sharpness(void) { return 0; }
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache directory (not yet created) and a fresh loader state."""
    root = tmp_path / "native"
    monkeypatch.setattr(kernel_cache, "_cache_root", root)
    monkeypatch.setattr(kernel_cache, "_warned", set())
    monkeypatch.setattr(training_native, "_libraries", {})
    monkeypatch.delenv("BENIGNITY_TRAINING_NATIVE", raising=False)
    monkeypatch.delenv("CC", raising=False)
    return root


def expected_path(root: Path, n: int, d: int) -> Path:
    """The .so the loader would load for data (n, d), computed as the loader does."""
    family, defines = training_native.shape_family(n, d)
    command = [*(kernel_cache.compiler_command() or []), *training_native._FLAGS, *defines]
    return kernel_cache.build_path(root, training_native._SOURCE, command, family)


def plant(path: Path, marker: Path) -> None:
    """Compile PLANTED to ``path`` (0700), to write ``marker`` when it is loaded."""
    source = marker.with_suffix(".c")
    source.write_text(PLANTED)
    define = f'-DMARKER="{marker}"'
    subprocess.run([CC or "cc", "-shared", "-fPIC", define, source, "-o", path], check=True)
    path.chmod(0o700)


def sweep(width: int, seeds: int, epochs: int, compiled: bool = True) -> list[RunOutcome]:
    """GD on theorem2 data (n = d = 4): the native kernel when ``compiled`` and it loads."""
    X, y = theorem2(4, 1e-3, 0)
    runs = [RunSpec(width, 1e-3, seed) for seed in range(seeds)]
    return train_sweep(X, y, 1e-4, runs, lr=0.05, max_epochs=epochs, optimum=0.0, compiled=compiled)


def builds(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("gd_*.so"))


@needs_cc
def test_a_planted_library_in_our_own_cache_is_loaded(cache: Path, tmp_path: Path) -> None:
    """The control for the refusals below: the planted file is what the loader loads."""
    cache.mkdir(mode=0o700)
    marker = tmp_path / "marker"
    plant(expected_path(cache, 4, 4), marker)
    assert training_native.load_library(4, 4, 100) is not None
    assert marker.read_text() == "planted code ran"


def make_unsafe(kind: str, cache: Path, tmp_path: Path) -> Path:
    """Make the cache unsafe in one way; the directory the planted file goes in."""
    if kind == "symlink":
        real = tmp_path / "elsewhere"
        real.mkdir(mode=0o700)
        cache.symlink_to(real)
        return real
    cache.mkdir(mode=0o700)
    if kind == "group-writable":
        cache.chmod(0o770)
    elif kind == "other owner":
        os.chown(cache, os.getuid() + 4321, -1)
    return cache


UNSAFE = ["group-writable", "symlink", "other owner", "file other owner", "file writable"]


@needs_cc
@pytest.mark.parametrize("kind", UNSAFE)
def test_the_cache_refuses_what_it_does_not_own_and_loads_nothing(
    kind: str, cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if "other owner" in kind and os.getuid() != 0:
        pytest.skip("giving a file to another uid needs root")
    folder = make_unsafe(kind, cache, tmp_path)
    marker = tmp_path / "marker"
    planted = folder / expected_path(cache, 4, 4).name
    plant(planted, marker)
    if kind == "file other owner":
        os.chown(planted, os.getuid() + 4321, -1)
    elif kind == "file writable":
        planted.chmod(0o722)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert training_native.load_library(4, 4, 100) is None
        training_native._libraries.clear()
        assert training_native.load_library(4, 4, 100) is None
    assert not marker.exists()
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1, warnings
    assert "not loading from it" in warnings[0]
    assert planted.exists()  # left alone: the owner may want to look at it


@needs_cc
def test_a_shape_family_shares_one_build(cache: Path) -> None:
    """Widths 7 and 13 on the same (n, d) use one .so, also across processes (the
    in-process table is cleared in between), and train like the torch path."""
    for width in (7, 13):
        training_native._libraries.clear()
        native, eager = sweep(width, 2, 50), sweep(width, 2, 50, compiled=False)
        for nat, ref in zip(native, eager, strict=True):
            assert nat.epoch == ref.epoch == 50
            np.testing.assert_allclose(nat.W, ref.W, rtol=1e-10, atol=1e-14)
    assert builds(cache) == [expected_path(cache, 4, 4).name]
    status = json.loads((cache / kernel_cache.STATUS_FILE).read_text())
    assert status["ok"] is True and status["error"] is None and status["family"] == "n4_d4"
    assert (cache.stat().st_mode & 0o777) == 0o700


def test_pruning_keeps_the_most_recently_used(tmp_path: Path) -> None:
    for age, name in enumerate(["gd_e.so", "gd_d.so", "gd_c.so", "gd_b.so", "gd_a.so"]):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (1e9 - age * 100, 1e9 - age * 100))
    (tmp_path / kernel_cache.STATUS_FILE).write_text("{}")
    kernel_cache.prune(tmp_path, keep=2)
    assert builds(tmp_path) == ["gd_d.so", "gd_e.so"]
    assert (tmp_path / kernel_cache.STATUS_FILE).exists()


@needs_cc
def test_builds_beyond_the_limit_are_pruned(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_cache, "MAX_BUILDS", 2)
    for n in (1, 2, 3):
        assert training_native.load_library(n, 3, 5) is not None
    assert builds(cache) == sorted(expected_path(cache, n, 3).name for n in (2, 3))


BROKEN_CC = """#!/bin/sh
echo "kernel.c:1:1: error: the compiler is broken on purpose" >&2
exit 1
"""


@pytest.mark.parametrize("broken", ["script", "/bin/false"])
def test_a_failed_build_is_logged_once_recorded_and_training_falls_back(
    broken: str,
    cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if broken == "script":
        script = tmp_path / "broken-cc"
        script.write_text(BROKEN_CC)
        script.chmod(0o755)
        broken = str(script)
    monkeypatch.setenv("CC", broken)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert training_native.load_library(4, 4, 5) is None
        training_native._libraries.clear()  # another attempt, as a fresh process makes
        fallback = sweep(5, 1, 20)  # native requested: falls back to torch.compile
    eager = sweep(5, 1, 20, compiled=False)
    assert fallback[0].epoch == eager[0].epoch == 20
    np.testing.assert_allclose(fallback[0].W, eager[0].W, rtol=1e-12, atol=1e-15)
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1, warnings
    status = json.loads((cache / kernel_cache.STATUS_FILE).read_text())
    assert status["ok"] is False and status["family"] == "n4_d4"
    assert status["compiler"].startswith(broken)
    expected = "broken on purpose" if broken.endswith("broken-cc") else "exit 1"
    assert expected in status["error"] and expected in warnings[0]
    assert len(status["error"]) <= kernel_cache.ERROR_CHARS
    assert status["at"].endswith("+00:00")
    assert builds(cache) == [] and list(cache.iterdir()) == [cache / kernel_cache.STATUS_FILE]


def test_the_default_cache_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(kernel_cache, "_cache_root", None)
    monkeypatch.setenv("BENIGNITY_NATIVE_CACHE", str(tmp_path / "env"))
    assert kernel_cache.cache_dir() == tmp_path / "env"
    monkeypatch.delenv("BENIGNITY_NATIVE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert kernel_cache.cache_dir() == tmp_path / "xdg" / "benignity" / "native"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert kernel_cache.cache_dir() == tmp_path / "home" / ".cache" / "benignity" / "native"
    kernel_cache.set_cache_dir(tmp_path / "set")
    assert kernel_cache.cache_dir() == tmp_path / "set"
