"""End-to-end ``shardmc run`` of simulated static XPCS data at a chosen size.

Each case writes a synthetic APS-U file with ``shardmc simulate`` (not timed), then runs
``shardmc run`` on its config in a subprocess, exactly as a user would (backend auto),
and reports:

* wall time of the command and the run's per-phase times (summary.json
  ``phase_seconds``: load, warm start, fit setup / shards / combine / deterministics /
  Monte Carlo error / diagnostics, importance correction, outputs, report);
* compile seconds, estimated per worker as its first shard's wall minus the median wall
  of its later shards (every shard has one padded shape: the difference is compiling or
  loading the programs), and the sampling seconds of all shards;
* peak RSS (bytes) of the driver and of the largest worker, polled every POLL_SECONDS;
* the combined posterior's z = (mean - truth) / sd of every physical parameter.

``--cold`` gives the run an empty persistent compile cache (SHARDMC_CACHE_DIR in a fresh
folder); otherwise the user's cache is used (run a case twice for a warm figure).

Usage: python benchmarks/scale.py --case small [--cold] [--out results.json]
Cases: small (3 x 141 frames, 29 610 points, K = 5), medium (3 x 1 000 frames,
1.5e6 points), large (3 x 2 582 frames, 1.0e7 points); or --angles/--frames/--shards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

#: name -> (angles, frames, shards; None: the simulated config's default).
CASES = {
    "small": (3, 141, 5),
    "medium": (3, 1_000, None),
    "large": (3, 2_582, None),
}
#: Interval (s) between two polls of the process tree's resident set sizes.
POLL_SECONDS = 0.2
SHARD_LINE = re.compile(r"shard (\d+): ok, sampling ([\d.]+) s \(warmup ([\d.]+) s\), "
                        r"wall ([\d.]+) s, worker (\S+)")


def shardmc_command() -> list[str]:
    """The ``shardmc`` entry point of this interpreter's environment."""
    return [sys.executable, "-m", "shardmc.workflow.cli"]


class PeakRSS(threading.Thread):
    """Polls a process and its descendants: peak RSS of the process and of its largest
    descendant (bytes)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.driver = 0
        self.worker = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.driver = max(self.driver, self.root.memory_info().rss)
                for child in self.root.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        self.worker = max(self.worker, child.memory_info().rss)
            except psutil.Error:
                return
            self.stop.wait(POLL_SECONDS)


def shard_times(log_text: str) -> dict[str, float]:
    """Compile estimate and shard sampling seconds from run.log's per-shard lines."""
    by_worker: dict[str, list[float]] = {}
    sampling = 0.0
    for match in SHARD_LINE.finditer(log_text):
        by_worker.setdefault(match.group(5), []).append(float(match.group(4)))
        sampling += float(match.group(2))
    compile_s = 0.0
    for walls in by_worker.values():
        if len(walls) > 1:
            compile_s += max(0.0, walls[0] - statistics.median(walls[1:]))
    return {"compile_estimate": round(compile_s, 2), "shard_sampling": round(sampling, 2),
            "workers": len(by_worker)}


def run_case(name: str, angles: int, frames: int, shards: int | None, cold: bool,
             folder: Path) -> dict:
    env = dict(os.environ)
    if cold:
        env["SHARDMC_CACHE_DIR"] = str(folder / "cache")
    data = folder / "data"
    simulate = [*shardmc_command(), "simulate", "--out", str(data), "--angles", str(angles),
                "--frames", str(frames)] + ([] if shards is None else ["--shards", str(shards)])
    t0 = time.perf_counter()
    subprocess.run(simulate, check=True, env=env, stdout=subprocess.DEVNULL)
    simulate_s = time.perf_counter() - t0
    print(f"[scale] {name}: simulated in {simulate_s:.0f} s; running", file=sys.stderr)
    run_dir = folder / "run"
    t0 = time.perf_counter()
    proc = subprocess.Popen([*shardmc_command(), "run", str(data / "config.yaml"), "--out",
                             str(run_dir), "--no-progress"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = PeakRSS(proc.pid)
    peak.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - t0
    peak.stop.set()
    peak.join()
    if proc.returncode != 0:
        raise SystemExit(f"shardmc run failed ({proc.returncode}):\n{output}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "case": name, "angles": angles, "frames": frames, "points": summary["num_points"],
        "num_shards": summary["num_shards"], "cold_cache": cold,
        "simulate_seconds": round(simulate_s, 1), "wall_seconds": round(wall, 1),
        "phase_seconds": summary["phase_seconds"],
        **shard_times((run_dir / "run.log").read_text()),
        "peak_rss_driver": peak.driver, "peak_rss_worker": peak.worker,
        "z": {r["parameter"]: round(r["z"], 2) for r in summary["parameters"]
              if r.get("z") is not None},
        "covered": {r["parameter"]: r["covered"] for r in summary["parameters"]
                    if r.get("covered") is not None},
        "warnings": summary["warnings"],
        "console": output.strip().splitlines(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), default="small")
    parser.add_argument("--angles", type=int)
    parser.add_argument("--frames", type=int)
    parser.add_argument("--shards", type=int)
    parser.add_argument("--cold", action="store_true", help="empty persistent compile cache")
    parser.add_argument("--keep", help="folder to write the data and run into (kept)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    angles, frames, shards = CASES[args.case]
    angles, frames = args.angles or angles, args.frames or frames
    shards = args.shards or shards
    with tempfile.TemporaryDirectory(prefix="shardmc-scale-") as tmp:
        folder = Path(args.keep or tmp)
        result = run_case(args.case, angles, frames, shards, args.cold, folder)
    result["cpus"] = os.cpu_count()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
