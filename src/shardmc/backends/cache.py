"""The persistent JAX compilation cache: one private folder per host CPU, for worker
processes and (sub-folder ``driver``) for the ``shardmc`` command's own process.

Compiled CPU code is specific to the instruction set it was built for, and XLA's
threading decisions depend on the CPU count a process sees, so the folder is keyed by
CPU model, feature flags, visible CPU count and JAX version. It lives under the user's
cache directory and is created with mode 0700 (compiled code is executable content:
nobody else may write it).
"""

from __future__ import annotations

import hashlib
import os
import platform
import stat
from importlib import metadata
from pathlib import Path

#: Environment variable that overrides the cache root (default: $XDG_CACHE_HOME or ~/.cache).
CACHE_ROOT_ENV = "SHARDMC_CACHE_DIR"
#: Size cap of the cache folder in bytes; JAX evicts least recently used entries beyond it
#: (only where the ``filelock`` package is installed: JAX needs it for the cap).
CACHE_MAX_BYTES = 2 * 1024**3
#: Permission bits of every folder the cache creates.
CACHE_MODE = 0o700
#: Sub-folder of the driver's (the ``shardmc`` command's own process) programs.
DRIVER_SUBDIR = "driver"
#: Environment variable that turns the command line's persistent cache off when set to 0.
DRIVER_CACHE_ENV = "SHARDMC_COMPILE_CACHE"


def _cpu_identity() -> str:
    parts = [platform.system(), platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part"):
                    parts.append(line.strip())
                if line.strip() == "":
                    break  # the first processor's block describes them all
    except OSError:
        pass
    for dist in ("jax", "jaxlib"):
        try:
            parts.append(f"{dist}={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist}=?")
    if hasattr(os, "sched_getaffinity"):
        parts.append(f"cpus={len(os.sched_getaffinity(0))}")
    else:
        parts.append(f"cpus={os.cpu_count()}")
    return "\n".join(parts)


def host_key() -> str:
    """16 hex digits identifying this host's CPU, CPU count and JAX version."""
    return hashlib.sha256(_cpu_identity().encode()).hexdigest()[:16]


def cache_root() -> Path:
    env = os.environ.get(CACHE_ROOT_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "shardmc"


def compile_cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Create (mode 0700) and return ``<root>/xla/<host key>``.

    Raises PermissionError if the folder exists but belongs to another user or is
    writable by group or others.
    """
    base = Path(root) if root is not None else cache_root()
    path = base / "xla" / host_key()
    for p in (base, base / "xla", path):
        if not p.exists():
            p.mkdir(mode=CACHE_MODE, parents=True, exist_ok=True)
            os.chmod(p, CACHE_MODE)
    st = path.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise PermissionError(f"compile cache {path} belongs to another user")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(f"compile cache {path} is writable by group or others")
    return path


def driver_cache_dir(root: str | os.PathLike | None = None) -> Path:
    """``compile_cache_dir(root)/driver`` (mode 0700): the command line's own programs
    (warm start, in-process shards, importance correction), apart from the workers', which
    run with other thread counts."""
    path = compile_cache_dir(root) / DRIVER_SUBDIR
    if not path.exists():
        path.mkdir(mode=CACHE_MODE, exist_ok=True)
        os.chmod(path, CACHE_MODE)
    return path
