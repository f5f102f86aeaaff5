"""The run directory: resolved config, manifest, one file per finished shard, results.

Layout (DESIGN.md, "Outputs")::

    RUN/
      config.yaml         the resolved config (every default filled in)
      manifest.json       versions, seed, K, shard sizes, statuses and timings, hashes
      warm_start.json     initial values of NUTS (so a resumed run starts identically)
      shards/shard-00003-of-00008.npz   one per finished shard and prior scale 1/K'
      posterior.nc        the combined posterior (ArviZ InferenceData, NetCDF)
      summary.json        parameters with intervals, diagnostics, warnings
      fit.npz             c2 data, fitted c2 and residuals per angle
      plots/, report.html, run.log

Every file is written to a temporary name in the same folder and renamed into place
(``os.replace`` is atomic on POSIX), so a crash or SIGKILL never leaves a partial file
under a final name: a shard file that exists is a finished shard. No pickle anywhere:
NPZ is read with ``allow_pickle=False``; metadata is JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shardmc.core.sampling import SamplingStats, ShardResult
from shardmc.errors import ShardMCInputError

CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.json"
WARM_START_FILE = "warm_start.json"
SHARD_DIR = "shards"
POSTERIOR_FILE = "posterior.nc"
SUMMARY_FILE = "summary.json"
FIT_FILE = "fit.npz"
LOG_FILE = "run.log"
#: Shard statuses whose results are deterministic given the seed: kept on resume.
#: "failed" shards (errors, timeouts) are run again.
KEPT_STATUSES = ("ok", "divergent")
#: Manifest format version.
MANIFEST_VERSION = 1


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, write: Any) -> Path:
    """Call ``write(file object)`` on a temporary file beside ``path``, then rename it in."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (floats round-trip exactly)."""
    text = json.dumps(obj, indent=2, default=_json_default).encode()
    return atomic_write(path, lambda f: f.write(text))


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def shard_file_name(index: int, num_shards: int) -> str:
    """File of shard ``index`` sampled at prior scale 1/``num_shards``."""
    return f"shard-{index:05d}-of-{num_shards:05d}.npz"


def shard_to_arrays(result: ShardResult, num_shards: int) -> dict[str, np.ndarray]:
    """A shard result as plain arrays (strings as unicode arrays; nothing pickled)."""
    arrays: dict[str, np.ndarray] = {
        "index": np.int64(result.index), "num_shards": np.int64(num_shards),
        "status": np.str_(result.status), "num_points": np.int64(result.num_points),
        "error": np.str_(result.error or ""),
        "stats": np.str_(json.dumps(result.stats.to_dict(), default=_json_default)),
    }
    if result.draws is not None:
        arrays["draws"] = np.asarray(result.draws)
    if result.laplace_precision is not None:
        arrays["laplace_precision"] = np.asarray(result.laplace_precision)
    for name, value in result.sample_stats.items():
        arrays[f"sample_stats/{name}"] = np.asarray(value)
    return arrays


def shard_from_arrays(arrays: Mapping[str, np.ndarray]) -> ShardResult:
    """Inverse of :func:`shard_to_arrays`."""
    stats = json.loads(str(arrays["stats"]))
    prefix = "sample_stats/"
    return ShardResult(
        index=int(arrays["index"]), status=str(arrays["status"]),
        draws=np.asarray(arrays["draws"]) if "draws" in arrays else None,
        sample_stats={k[len(prefix):]: np.asarray(v) for k, v in arrays.items()
                      if k.startswith(prefix)},
        stats=SamplingStats(**stats), num_points=int(arrays["num_points"]),
        error=str(arrays["error"]) or None, prior_scale=1.0 / int(arrays["num_shards"]),
        laplace_precision=(np.asarray(arrays["laplace_precision"])
                           if "laplace_precision" in arrays else None))


def _unwritable(path: Path, exc: OSError) -> ShardMCInputError:
    return ShardMCInputError(f"run directory {path}: not writable ({exc.strerror or exc})")


class RunStore:
    """The run directory at ``path``; ``on_shard_done`` and ``lookup`` plug into ``fit``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.shard_dir = self.path / SHARD_DIR

    # -- creation --------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, *, force: bool = False) -> RunStore:
        """A new run directory. Refuses a non-empty one unless ``force`` (which clears
        the files the store owns, not anything else)."""
        store = cls(path)
        if store.path.exists() and not store.path.is_dir():
            raise ShardMCInputError(f"--out: {store.path} exists and is not a directory")
        if store.path.is_dir() and any(store.path.iterdir()):
            if not force:
                raise ShardMCInputError(
                    f"--out: run directory {store.path} is not empty; use `shardmc resume "
                    f"{store.path}` to finish it, or --force to overwrite it")
            store.clear()
        try:
            store.shard_dir.mkdir(parents=True, exist_ok=True)
            probe = store.path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise _unwritable(store.path, exc) from exc
        return store

    @classmethod
    def open(cls, path: str | Path) -> RunStore:
        """An existing run directory (for resume and report)."""
        store = cls(path)
        if not (store.path / MANIFEST_FILE).is_file():
            raise ShardMCInputError(
                f"run directory {store.path}: no {MANIFEST_FILE}; not a shardmc run directory")
        if not os.access(store.path, os.W_OK):
            raise ShardMCInputError(f"run directory {store.path}: not writable")
        store.shard_dir.mkdir(exist_ok=True)
        return store

    def clear(self) -> None:
        """Remove what a run writes (for --force)."""
        for name in (CONFIG_FILE, MANIFEST_FILE, WARM_START_FILE, POSTERIOR_FILE,
                     SUMMARY_FILE, FIT_FILE, LOG_FILE, "report.html", "truth.json"):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        for sub in (SHARD_DIR, "plots"):
            folder = self.path / sub
            if folder.is_dir():
                for f in folder.iterdir():
                    if f.is_file():
                        f.unlink()

    # -- metadata --------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any]:
        path = self.path / MANIFEST_FILE
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ShardMCInputError(f"{path}: unreadable manifest ({exc})") from exc

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        write_json(self.path / MANIFEST_FILE,
                   {**manifest, "manifest_version": MANIFEST_VERSION,
                    "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        manifest = {**self.read_manifest(), **fields}
        self.write_manifest(manifest)
        return manifest

    # -- shards ----------------------------------------------------------------------
    def shard_path(self, index: int, num_shards: int) -> Path:
        return self.shard_dir / shard_file_name(index, num_shards)

    def write_shard(self, result: ShardResult) -> Path:
        """``fit(on_shard_done=...)``: persist one shard's result atomically (at its prior
        scale 1/K', stamped by the engine), then record it in the manifest."""
        num_shards = round(1.0 / result.prior_scale)
        arrays = shard_to_arrays(result, num_shards)
        path = atomic_write(self.shard_path(result.index, num_shards),
                            lambda f: np.savez(f, **arrays))
        manifest = self.read_manifest()
        shards = {(s["index"], s["of"]): s for s in manifest.get("shards", [])}
        shards[(result.index, num_shards)] = {
            "index": int(result.index), "of": num_shards, "status": result.status,
            "seconds": round(float(result.stats.total_time), 3),
            "attempts": int(result.stats.attempts), "num_points": int(result.num_points),
            "divergence_rate": float(result.stats.divergence_rate), "file": path.name,
            "error": (result.error or "").strip().splitlines()[-1:] or None}
        manifest["shards"] = sorted(shards.values(), key=lambda s: (-s["of"], s["index"]))
        self.write_manifest(manifest)
        return path

    def read_shard(self, index: int, num_shards: int) -> ShardResult | None:
        """The stored result of shard ``index`` at prior scale 1/``num_shards``, or None.

        Raises ShardMCInputError for a file that exists but cannot be read back."""
        path = self.shard_path(index, num_shards)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                result = shard_from_arrays({k: npz[k] for k in npz.files})
        except Exception as exc:
            raise ShardMCInputError(
                f"{path}: corrupted shard file ({type(exc).__name__}: {exc}); delete it and "
                "run `shardmc resume` again to re-sample that shard") from exc
        if result.index != index:
            raise ShardMCInputError(f"{path}: corrupted shard file (holds shard "
                                    f"{result.index}, expected {index})")
        return result

    def lookup(self, index: int, prior_scale: float) -> ShardResult | None:
        """``fit(lookup=...)``: a kept (ok or divergent) result, else None (run it)."""
        result = self.read_shard(index, round(1.0 / prior_scale))
        return result if result is not None and result.status in KEPT_STATUSES else None

    def verify_shards(self) -> int:
        """Read back every shard file (raises ShardMCInputError naming a corrupted one);
        returns how many there are. Resume calls this before any work."""
        paths = sorted(self.shard_dir.glob("shard-*-of-*.npz"))
        for path in paths:
            index, of = (int(x) for x in path.stem.removeprefix("shard-").split("-of-"))
            self.read_shard(index, of)
        return len(paths)

    def kept_shards(self, num_shards: int) -> int:
        """How many shards at prior scale 1/``num_shards`` have a file with a kept status:
        those a resume will not sample again (unreadable files do not count)."""
        kept = 0
        for path in self.shard_dir.glob(f"shard-*-of-{num_shards:05d}.npz"):
            try:
                with np.load(path, allow_pickle=False) as npz:
                    kept += str(npz["status"]) in KEPT_STATUSES
            except Exception:  # a corrupted file: resume names it
                continue
        return kept

    def finished_shards(self) -> list[str]:
        return sorted(p.name for p in self.shard_dir.glob("shard-*.npz"))
