"""The ``shardmc`` command line. User mistakes exit with code 2 and one clear message."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shardmc.errors import ShardFailedError, ShardMCInputError

#: Exit codes: success, run failure, bad input.
EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
#: Exit codes of a command stopped by Ctrl-C (SIGINT) or SIGTERM: 128 + the signal
#: number, as a shell reports a process killed by that signal.
EXIT_SIGINT, EXIT_SIGTERM = 128 + signal.SIGINT, 128 + signal.SIGTERM
#: Signals that stop a command cleanly (workers stopped, shared memory removed).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Seconds after which an interrupt that Python dropped (see _StopSignals) is raised again.
REDELIVER_SECONDS = 0.1


def _bootstrap_jax() -> None:
    """Process settings for the CLI, before JAX starts: float64, quiet TF/XLA logs and the
    persistent compilation cache (``backends.cache.driver_cache_dir``; off with
    SHARDMC_COMPILE_CACHE=0): a second run of the same shapes loads its programs instead
    of compiling them."""
    os.environ.setdefault("JAX_ENABLE_X64", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # cache every program, not only those compiling in >= 1 s (JAX's default): a run
    # dispatches ~200 small ones, ~30 ms each to compile (6 s of a 30 000-point run)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    if "jax" in sys.modules or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return  # JAX reads its cache folder once, at import
    from shardmc.backends.cache import DRIVER_CACHE_ENV, driver_cache_dir

    if os.environ.get(DRIVER_CACHE_ENV, "1") == "0":
        return
    try:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(driver_cache_dir())
    except OSError as exc:  # no writable cache folder: compile every time
        logging.getLogger(__name__).info("no persistent compilation cache: %s", exc)


class _StopSignals:
    """While a command runs, SIGINT and SIGTERM raise KeyboardInterrupt in the main thread,
    so the ``finally`` blocks stop the workers and remove shared memory. Only the first
    signal raises: later ones would cut that clean-up short. Python only prints (and
    drops) a KeyboardInterrupt raised inside a ``__del__`` or a weakref callback; such a
    lost interrupt is raised again :data:`REDELIVER_SECONDS` later."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first signal received
        self._again = False  # the next signal re-delivers a lost interrupt
        self._previous: dict[int, Any] = {}
        self._hook: Callable[[Any], Any] = sys.unraisablehook

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():  # else: cannot set them
            self._previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
            self._hook, sys.unraisablehook = sys.unraisablehook, self._on_unraisable
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        if self._previous:
            sys.unraisablehook = self._hook
        self._previous = {}

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.signum is None or self._again:
            self.signum = self.signum or signum
            self._again = False
            raise KeyboardInterrupt

    def _on_unraisable(self, unraisable: Any) -> None:
        if self.signum is None or not isinstance(unraisable.exc_value, KeyboardInterrupt):
            self._hook(unraisable)
            return
        self._again = True  # the main thread gets the signal again, out of this context
        timer = threading.Timer(REDELIVER_SECONDS, self._redeliver)
        timer.daemon = True
        timer.start()

    def _redeliver(self) -> None:
        if self._previous and self._again:
            signal.pthread_kill(threading.main_thread().ident, self.signum)


def _interrupted(exc: KeyboardInterrupt, signum: int | None) -> int:
    """One line on stderr (how to resume, for a run) and the exit code of the signal."""
    from shardmc.workflow.runs import RunInterrupted

    if isinstance(exc, RunInterrupted):
        print(exc.resume_line(), file=sys.stderr)
    else:
        print("shardmc: interrupted", file=sys.stderr)
    return EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT


def _cmd_demo(args: argparse.Namespace) -> int:
    from shardmc.xpcs.demo import run_demo

    shards = {} if args.shards is None else {"num_shards": args.shards}
    run_demo(args.out, seed=args.seed, backend=args.backend, progress=not args.no_progress,
             **shards)
    return EXIT_OK


def _echo(args: argparse.Namespace):
    return (lambda _msg: None) if getattr(args, "quiet", False) else print


def _progress(args: argparse.Namespace) -> bool | None:
    return False if getattr(args, "no_progress", False) else None


def _cmd_run(args: argparse.Namespace) -> int:
    from shardmc.workflow.runs import resume_run, run_config

    if args.resume:
        if args.out is None:
            raise ShardMCInputError("--resume: needs --out DIR (the run directory to finish)")
        resume_run(args.out, progress=_progress(args), echo=_echo(args))
        out = args.out
    else:
        out, _ = run_config(args.config, args.out, overrides=args.overrides, force=args.force,
                            progress=_progress(args), echo=_echo(args))
    _echo(args)(f"Done. Results in {Path(out).resolve()}: posterior.nc, summary.json, "
                "fit.npz, plots/, report.html")
    return EXIT_OK


def _cmd_resume(args: argparse.Namespace) -> int:
    from shardmc.workflow.runs import resume_run

    resume_run(args.run_dir, progress=_progress(args), echo=_echo(args))
    _echo(args)(f"Done. Results in {Path(args.run_dir).resolve()}")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from shardmc.workflow.html_report import write_report

    path = write_report(args.run_dir)
    print(f"Report: {Path(path).resolve()}")
    return EXIT_OK


def _cmd_simulate(args: argparse.Namespace) -> int:
    from shardmc.xpcs.simulate_files import write_synthetic

    paths = write_synthetic(args.out, physics=args.physics, n_angles=args.angles,
                            n_frames=args.frames, noise=args.noise, seed=args.seed,
                            num_shards=args.shards, t0=args.t0)
    print("Wrote " + ", ".join(str(p) for p in paths))
    if args.shards is None:
        import yaml

        from shardmc.xpcs import simulate_files as S

        shards = yaml.safe_load(paths[-1].read_text())["sharding"]["num_shards"]
        print(f"num_shards {shards}: shards of at least {S.SIMULATED_SHARD_POINTS} points, "
              f"1 to {S.DEFAULT_SIMULATED_SHARDS} (smaller static shards mix badly; "
              "--shards sets it)")
    print(f"Next: shardmc run {paths[-1]} --out <run dir>")
    return EXIT_OK


def _cmd_config(args: argparse.Namespace) -> int:
    from shardmc.config import template

    text = template(args.template)
    if args.out is None:
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        print(f"Wrote {args.out}")
    return EXIT_OK


def _cmd_cluster_script(args: argparse.Namespace) -> int:
    from shardmc.backends.dask_cluster import job_script
    from shardmc.config import backend_options, load_config

    cfg = load_config(args.config, args.overrides)
    sys.stdout.write(job_script(backend_options(cfg.backend)).rstrip("\n") + "\n")
    return EXIT_OK


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardmc", description="Consensus Monte Carlo for large-data Bayesian inference.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log per-shard progress")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulate a laminar-flow XPCS dataset and fit it by CMC")
    demo.add_argument("--out", default=None,
                      help="run folder (default: shardmc-runs/demo-<timestamp>)")
    demo.add_argument("--shards", type=int, default=None,
                      help="number of shards K (default 4, DEMO_SHARDS)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--backend", default="auto", help="backend (default auto: picked from "
                      "the machine and the run)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.set_defaults(handler=_cmd_demo)

    run = sub.add_parser("run", help="fit the data of a YAML config into a run directory")
    run.add_argument("config", help="YAML config (see `shardmc config --template`)")
    run.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="override a config key (repeatable), e.g. "
                     "--set sampling.num_chains=2 --set backend.name=processes")
    run.add_argument("--out", default=None,
                     help="run directory (default: runs/<config name>-<timestamp>)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="finish the interrupted run in --out (same as `shardmc resume`)")
    mode.add_argument("--force", action="store_true",
                      help="overwrite the run files in a non-empty --out")
    _add_common(run)
    run.set_defaults(handler=_cmd_run)

    resume = sub.add_parser("resume", help="finish an interrupted run (only missing shards)")
    resume.add_argument("run_dir", help="run directory of the interrupted run")
    _add_common(resume)
    resume.set_defaults(handler=_cmd_resume)

    report = sub.add_parser("report", help="write report.html and plots of a finished run")
    report.add_argument("run_dir", help="run directory")
    report.set_defaults(handler=_cmd_report)

    sim = sub.add_parser("simulate", help="write a synthetic APS-U HDF5 file and a config")
    sim.add_argument("--out", required=True, help="folder for data.h5, truth and config.yaml")
    sim.add_argument("--physics", default="static",
                     choices=("static", "laminar_flow", "two_component"))
    sim.add_argument("--angles", type=int, default=3, help="number of angles (default 3)")
    sim.add_argument("--frames", type=int, default=60, help="frames per matrix (default 60)")
    sim.add_argument("--noise", type=float, default=None, help="noise sd of c2 (default: "
                     "the simulator's)")
    sim.add_argument("--shards", type=int, default=None,
                     help="num_shards in the config (default: shards of at least 5 000 "
                     "points, 1 to 4)")
    sim.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sim.add_argument("--t0", type=float, default=None, help="time (s) of the first frame, "
                     "written to the config as data.t0 (default: one frame time, 0.1)")
    sim.set_defaults(handler=_cmd_simulate)

    cfg = sub.add_parser("config", help="print (or write) a commented config template")
    cfg.add_argument("--template", default="laminar_flow",
                     choices=("static", "laminar_flow", "two_component"))
    cfg.add_argument("--out", default=None, help="write to this file instead of stdout")
    cfg.set_defaults(handler=_cmd_config)

    script = sub.add_parser("cluster-script",
                            help="print the PBS/SLURM job script a dask backend would submit")
    script.add_argument("--config", required=True, help="YAML config with a dask backend")
    script.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key (repeatable)")
    script.set_defaults(handler=_cmd_cluster_script)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shardmc`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # the console; run.log gets INFO regardless
        handler.setLevel(logging.INFO if args.verbose else logging.WARNING)
    if args.verbose:
        logging.getLogger("shardmc").setLevel(logging.INFO)
    _bootstrap_jax()

    stop = _StopSignals()
    try:
        with stop:
            return args.handler(args)
    except KeyboardInterrupt as exc:
        return _interrupted(exc, stop.signum)
    except (ShardMCInputError, FileNotFoundError, PermissionError) as exc:
        if args.debug:
            raise
        print(f"shardmc: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ShardFailedError as exc:
        if args.debug:
            raise
        text = f"{exc.message}{exc.hint('cli')}" if hasattr(exc, "message") else str(exc)
        print(f"shardmc: run failed: {text}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:
        if args.debug:
            raise
        print(f"shardmc: run failed: {type(exc).__name__}: {exc}\n"
              "(run again with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
