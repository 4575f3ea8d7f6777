"""The on-disk cache of compiled training kernels: where it lives, what may be loaded
from it, one build per shape family, pruning, and the last build's status.

Layout: one directory (``cache_dir()``) holding ``gd_<family>_<hash>.so`` files,
where the hash covers the C source, the compiler command and the CPU, and
``build-status.json``, the outcome of the latest build (read by the API's
/readyz)::

    {"ok": false, "error": "<first 2000 characters of the compiler's message>",
     "at": "2025-01-01T12:00:00+00:00", "compiler": "gcc -O3 ...", "family": "n4_d4"}

with ``"error": null`` and ``"path"`` (the .so) when ``ok`` is true.

Safety on shared hosts: the directory is created 0700, and nothing is loaded from
it unless it is a real directory (not a symlink) owned by this uid and not writable
by group or others, and the .so is a regular file owned by this uid and not
writable by group or others. A refused cache is logged once and ``load`` returns
None, so the caller falls back to the torch path, as it does without a compiler.
Builds are written atomically (a private temporary directory, then a rename);
each load marks the file as used (mtime), and after each build all but the
``MAX_BUILDS`` most recently used builds are deleted.

This module uses only the standard library (celery_app imports it to set the
directory without loading torch).
"""

from __future__ import annotations

import ctypes
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

MAX_BUILDS = 32
STATUS_FILE = "build-status.json"
ERROR_CHARS = 2000
_cache_root: Path | None = None
_warned: set[str] = set()


def set_cache_dir(path: str | os.PathLike[str] | None) -> None:
    """Use ``path`` for compiled kernels from now on (None: back to the default)."""
    global _cache_root
    _cache_root = None if path is None else Path(os.path.abspath(path))


def cache_dir() -> Path:
    """The directory set by ``set_cache_dir``, else $BENIGNITY_NATIVE_CACHE, else
    $XDG_CACHE_HOME/benignity/native, else ~/.cache/benignity/native."""
    if _cache_root is not None:
        return _cache_root
    if os.environ.get("BENIGNITY_NATIVE_CACHE"):
        return Path(os.path.abspath(os.environ["BENIGNITY_NATIVE_CACHE"]))
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "benignity" / "native"


def compiler_command() -> list[str] | None:
    """$CC (split like a shell word list), else gcc or cc on the PATH; None if none."""
    cc = os.environ.get("CC")
    if cc:
        return shlex.split(cc)
    found = shutil.which("gcc") or shutil.which("cc")
    return [found] if found else None


def _unsafe(st: os.stat_result, kind: str, is_kind: bool) -> str | None:
    """Why a file with this lstat may not be trusted, or None when it may."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not is_kind:
        return f"is not a {kind}"
    if st.st_uid != os.getuid():
        return f"is owned by uid {st.st_uid}, not {os.getuid()}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _check_dir(path: Path) -> str | None:
    """Create ``path`` 0700 if missing; the reason it may not be used, or None."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:  # exists as a file or a dangling link, or no permission
        if not path.is_symlink():
            return f"cannot be created ({exc})"
    try:
        st = path.lstat()
    except OSError as exc:
        return f"cannot be read ({exc})"
    reason = _unsafe(st, "directory", stat.S_ISDIR(st.st_mode))
    if reason is None and stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)  # ours and not writable by others: tighten 0755 to 0700
    return reason


def _check_file(path: Path) -> str | None:
    st = path.lstat()
    return _unsafe(st, "regular file", stat.S_ISREG(st.st_mode))


def _refuse(path: Path, reason: str) -> None:
    if str(path) not in _warned:
        _warned.add(str(path))
        log.warning(
            "native kernel cache %s %s: not loading from it; training uses the torch path",
            path,
            reason,
        )


def _cpu_key() -> str:
    """The CPU model and flags (the kernel is built for this CPU's instruction set)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
        return "".join(lines)
    except OSError:
        return platform.processor()


def build_path(root: Path, source: str, command: Sequence[str], family: str) -> Path:
    """The .so of this source, compiler command and family on this CPU."""
    key = "\0".join([source, *command, _cpu_key(), platform.machine()])
    return root / f"gd_{family}_{hashlib.sha256(key.encode()).hexdigest()[:20]}.so"


def load(source: str, command: Sequence[str], family: str) -> ctypes.CDLL | None:
    """The library compiled from ``source`` with ``command`` (compiler and flags,
    without source and output), built into the cache at first use; None when the
    cache is refused or the build fails (both logged once)."""
    root = cache_dir()
    reason = _check_dir(root)
    if reason is not None:
        _refuse(root, reason)
        return None
    path = build_path(root, source, command, family)
    for _ in range(2):  # twice: a concurrent prune may delete the file after the build
        if not os.path.lexists(path) and not _build(source, command, path, family):
            return None
        try:
            reason = _check_file(path)
            if reason is None:
                os.utime(path)  # most recently used, for pruning
        except FileNotFoundError:
            continue
        if reason is not None:
            _refuse(path, reason)
            return None
        try:
            return ctypes.CDLL(str(path))
        except OSError as exc:
            _refuse(path, f"cannot be loaded ({exc})")
            return None
    return None


def _build(source: str, command: Sequence[str], path: Path, family: str) -> bool:
    """Compile to ``path`` atomically, record the outcome, prune; whether it built."""
    label = shlex.join(command)
    try:
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            src, target = os.path.join(tmp, "kernel.c"), os.path.join(tmp, "kernel.so")
            with open(src, "w") as f:
                f.write(source)
            done = subprocess.run(
                [*command, src, "-o", target, "-lm"], capture_output=True, timeout=120
            )
            if done.returncode != 0:
                message = (done.stderr or done.stdout).decode(errors="replace")
                return _failed(path.parent, family, label, message or f"exit {done.returncode}")
            os.chmod(target, 0o700)  # not group-writable whatever the umask
            os.replace(target, path)
    except (OSError, subprocess.SubprocessError) as exc:
        return _failed(path.parent, family, label, f"{type(exc).__name__}: {exc}")
    write_status(path.parent, ok=True, compiler=label, family=family, path=str(path))
    prune(path.parent)
    return True


def _failed(root: Path, family: str, compiler: str, message: str) -> bool:
    if f"build:{family}:{compiler}" not in _warned:
        _warned.add(f"build:{family}:{compiler}")
        log.warning(
            "native kernel build failed (%s, family %s); training uses the torch path:\n%s",
            compiler,
            family,
            message.strip(),
        )
    write_status(root, ok=False, compiler=compiler, family=family, error=message[:ERROR_CHARS])
    return False


def write_status(root: Path, *, ok: bool, compiler: str, family: str, **extra: str) -> None:
    """Replace ``root/build-status.json`` atomically (format: the module docstring)."""
    at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    status = {"ok": ok, "error": extra.pop("error", None), "at": at, "compiler": compiler}
    status |= {"family": family, **extra}
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".status-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(status, f)
        os.replace(tmp, root / STATUS_FILE)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def prune(root: Path, keep: int | None = None) -> None:
    """Delete all but the ``keep`` (default MAX_BUILDS) most recently used builds."""
    keep = MAX_BUILDS if keep is None else keep
    builds = []
    for entry in os.scandir(root):
        if entry.name.startswith("gd_") and entry.name.endswith(".so"):
            try:
                builds.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
            except OSError:  # deleted by a concurrent prune
                continue
    builds.sort(reverse=True)
    for _, old in builds[keep:]:
        try:
            os.unlink(old)
        except OSError:
            continue
