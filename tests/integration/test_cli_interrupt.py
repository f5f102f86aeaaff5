"""Ctrl-C and SIGTERM during `shardmc run` on the processes backend, in real processes:
the workers stop, the driver's shared memory is unlinked (no resource_tracker warning),
the manifest says "interrupted", stderr has one line saying how to resume, and the exit
code is 128 + the signal. SIGTERM comes once the first shard is on disk; Ctrl-C while
the worker still starts (nothing on disk yet), sent to the driver's whole process group
as a terminal does: workers run in their own session, so only the driver sees it."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from shardmc.workflow.cli import EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM

#: Small shards, no warm start, one worker: when the first shard file appears, the other
#: shards (their shared-memory segments in place) still take a few tenths of a second each.
K = 8
OVERRIDES = ["--set", "backend.name=processes", "--set", "backend.workers=1",
             "--set", "sampling.num_chains=1", "--set", "sampling.num_warmup=60",
             "--set", "sampling.num_samples=200", "--set", "sampling.warm_start=false"]
#: Seconds allowed for the moment to signal (the first shard: worker start-up and
#: compiling included), for the driver to exit after it, for orphans to go, for one call.
START_WAIT, EXIT_WAIT, GONE_WAIT, CALL_TIMEOUT = 300, 60, 10, 600
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}

pytestmark = pytest.mark.skipif(not Path("/dev/shm").is_dir(),
                                reason="needs POSIX shared memory in /dev/shm")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shardmc", *args], capture_output=True,
                          text=True, timeout=CALL_TIMEOUT, env=ENV)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sim")
    proc = _cli("simulate", "--out", str(folder), "--physics", "static", "--angles", "1",
                "--frames", "30", "--shards", str(K), "--seed", "2")
    assert proc.returncode == EXIT_OK, proc.stderr
    return folder / "config.yaml"


def _segments(pid: int) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"shardmc_{pid}_*"))


def _running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (zombies waiting for a reaper count as gone)."""
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def _first_shard(proc: subprocess.Popen, out: Path) -> bool:
    return any((out / "shards").glob("shard-*.npz"))


def _worker_started(proc: subprocess.Popen, out: Path) -> bool:
    children = psutil.Process(proc.pid).children()
    return bool(_segments(proc.pid)) and any(
        "shardmc.backends.worker" in " ".join(c.cmdline()) for c in children)


def _wait_until(proc: subprocess.Popen, out: Path, moment) -> None:
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(psutil.Error):  # a child exiting meanwhile
            if moment(proc, out):
                return
        time.sleep(0.05)
    raise AssertionError(f"no {moment.__name__} after {START_WAIT} s (exit {proc.poll()})")


def _interrupt(config: Path, out: Path, signum: int, moment):
    """Run, signal it at ``moment``; (the process, its stderr, its children then)."""
    proc = subprocess.Popen([sys.executable, "-m", "shardmc", "run", str(config),
                             *OVERRIDES, "--out", str(out), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=ENV, start_new_session=True)
    try:
        _wait_until(proc, out, moment)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert _segments(proc.pid), "every shard finished before the signal"
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)  # Ctrl-C in a terminal: the whole process group
        else:
            os.kill(proc.pid, signum)
        _, stderr = proc.communicate(timeout=EXIT_WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc, stderr, children


@pytest.mark.parametrize(("signum", "code", "moment"),
                         [(signal.SIGTERM, EXIT_SIGTERM, _first_shard),
                          (signal.SIGINT, EXIT_SIGINT, _worker_started)],
                         ids=["SIGTERM", "SIGINT"])
def test_interrupted_run_stops_cleanly(config, tmp_path, signum, code, moment):
    out = tmp_path / "run"
    proc, stderr, children = _interrupt(config, out, signum, moment)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "leaked shared_memory" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("Interrupted:")]
    assert len(lines) == 1, stderr
    match = re.fullmatch(rf"Interrupted: (\d+) of {K} shards are on disk in (.+); "
                         r"finish with: shardmc resume (.+)", lines[0])
    assert match and match[2] == match[3] == str(out), lines[0]
    kept = len(list((out / "shards").glob(f"shard-*-of-{K:05d}.npz")))
    assert int(match[1]) == kept < K and (kept >= 1 or moment is _worker_started)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["state"] == "interrupted" and manifest["interrupted"]
    assert _segments(proc.pid) == []
    deadline = time.monotonic() + GONE_WAIT
    while _running(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running(children) == [], "worker processes outlived the driver"
