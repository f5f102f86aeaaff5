"""A fit from a config file into a run directory, and resuming one (``shardmc run/resume``).

``run_config`` validates the config and data, writes the resolved config and the
manifest, computes (or, on resume, reloads) the warm start, and fits with the run store
plugged in: every shard is on disk as soon as it finishes, and a resumed run samples
only the shards without a file. The combined posterior, ``summary.json``, ``fit.npz``,
the plots and ``report.html`` follow. A resumed run's posterior is bit-identical to an
uninterrupted one: same config, data, seed and warm start give the same shard draws,
and stored draws round-trip exactly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from shardmc.core.progress import PhaseClock
from shardmc.errors import ShardMCInputError
from shardmc.workflow.store import (
    CONFIG_FILE,
    FIT_FILE,
    LOG_FILE,
    POSTERIOR_FILE,
    SUMMARY_FILE,
    WARM_START_FILE,
    RunStore,
    write_json,
    write_text,
)

log = logging.getLogger(__name__)

#: Central interval reported in summary.json and the report.
SUMMARY_INTERVAL = 0.9
#: Suffix of the truth file ``shardmc simulate`` writes beside a synthetic data file.
TRUTH_SUFFIX = ".truth.json"
#: Format of the log file in the run directory.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Manifest state of a run stopped by Ctrl-C or SIGTERM (``shardmc resume`` finishes it).
INTERRUPTED = "interrupted"


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM after its manifest was marked interrupted; a
    KeyboardInterrupt, so code that catches those still does."""

    def __init__(self, path: Path, on_disk: int, num_shards: int | None) -> None:
        super().__init__(f"run {path} interrupted")
        self.path, self.on_disk, self.num_shards = path, on_disk, num_shards

    def resume_line(self) -> str:
        """The one line ``shardmc`` prints: what is kept, and how to finish the run."""
        of = "" if self.num_shards is None else f" of {self.num_shards}"
        return (f"Interrupted: {self.on_disk}{of} shards are on disk in {self.path}; "
                f"finish with: shardmc resume {shlex.quote(str(self.path))}")


@contextmanager
def _marks_interrupt(store: RunStore):
    """Turn a KeyboardInterrupt in the block into RunInterrupted, with the manifest's state
    set to "interrupted" (and the time) first."""
    try:
        yield
    except KeyboardInterrupt as exc:
        manifest = store.update_manifest(state=INTERRUPTED,
                                         interrupted=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        k = manifest.get("num_shards")
        on_disk = store.kept_shards(k) if k else len(store.finished_shards())
        log.info("interrupted: %d of %s shards on disk", on_disk, k)
        raise RunInterrupted(store.path, on_disk, k) from exc


@contextmanager
def run_log(path: Path):
    """Send the ``shardmc`` loggers' INFO records to ``path`` while the block runs."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("shardmc")
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()


def truth_path(data_file: str | Path) -> Path:
    """Where ``shardmc simulate`` keeps the true parameters of ``data_file``."""
    data_file = Path(data_file)
    return data_file.with_name(data_file.stem + TRUTH_SUFFIX)


def _warm_start_values(store: RunStore, inputs: Any, seed: int, enabled: bool,
                       echo: Callable[[str], None]) -> dict[str, Any]:
    """Initial values: reloaded from the run directory, else computed and stored there."""
    path = store.path / WARM_START_FILE
    if path.is_file():
        stored = json.loads(path.read_text())
        return {k: np.asarray(v, dtype=np.float64) for k, v in stored["init_values"].items()}
    if not enabled:
        write_json(path, {"init_values": {}})
        return {}
    from shardmc.xpcs import warm_start

    t0 = time.perf_counter()
    start = warm_start(inputs.model, inputs.data, seed=seed, laplace=False)  # init values only
    starts = (f", best of {len(start.start_costs)} starts (costs "
              + ", ".join(f"{c:.5g}" for c in start.start_costs) + ")"
              if len(start.start_costs) > 1 else "")
    echo(f"Least-squares warm start: {start.nfev} evaluations, cost {start.cost:.4g}{starts} "
         f"({time.perf_counter() - t0:.1f} s).")
    values = {k: np.asarray(v, dtype=np.float64) for k, v in start.init_values.items()}
    write_json(path, {"init_values": values, "cost": float(start.cost), "nfev": start.nfev,
                      "start_costs": list(start.start_costs)})
    return values


def _diagnosis_lines(post: Any) -> list[str]:
    """Posterior.diagnose()'s findings, one line each (a problem diagnosing is reported,
    never allowed to lose a finished run)."""
    try:
        return list(post.diagnose().messages())
    except Exception as exc:
        return [f"diagnosis unavailable: {type(exc).__name__}: {exc}"]


def _with_time_origin(post: Any, inputs: Any) -> Any:
    """The posterior with the data's time origin in its provenance; where the dt/2 rate
    floor matters (docs/xpcs.md, "Time origin") its finding goes to the log, once."""
    from shardmc.core.diagnosis import time_origin_issues
    from shardmc.xpcs.timeorigin import record_time_origin

    post = record_time_origin(post, inputs.model, inputs.data)
    for issue in time_origin_issues(post.provenance, post.samples):
        log.log(logging.WARNING if issue.severity == "warning" else logging.INFO,
                issue.message)
    return post


def write_results(store: RunStore, inputs: Any, data_file: Path, post: Any,
                  seconds: float) -> dict[str, Any]:
    """posterior.nc, fit.npz and summary.json of a finished fit (the posterior saved with
    the time origin of the data in its provenance)."""
    from shardmc.xpcs import fitted_c2
    from shardmc.xpcs.demo import recovery_table

    post = _with_time_origin(post, inputs)
    post.save(store.path / POSTERIOR_FILE)
    medians = {k: np.median(v, axis=0) for k, v in post.samples.items()}
    fitted = np.asarray(fitted_c2(inputs.model, medians, inputs.data))
    data = inputs.data
    arrays = {"c2": np.asarray(data.c2), "fitted": fitted, "residual": data.c2 - fitted,
              "t": np.asarray(data.t), "phi": np.asarray(data.phi),
              "q": np.float64(data.q)}
    from shardmc.workflow.store import atomic_write

    atomic_write(store.path / FIT_FILE, lambda f: np.savez(f, **arrays))
    truth_file = truth_path(data_file)
    truth = json.loads(truth_file.read_text()) if truth_file.is_file() else {}
    if truth:
        write_json(store.path / "truth.json", truth)
    summary = {
        "physics": inputs.model.physics, "num_points": inputs.data.num_points,
        "num_shards": int(post.num_shards), "seconds": round(seconds, 1),
        "interval": SUMMARY_INTERVAL,
        "parameters": recovery_table(post.samples, truth, inputs.model.parameter_names,
                                     SUMMARY_INTERVAL),
        "warnings": list(post.warnings()), "diagnosis": _diagnosis_lines(post),
    }
    write_json(store.path / SUMMARY_FILE, summary)
    return summary


def _manifest(inputs: Any, data_file: Path, hashes: dict[str, str]) -> dict[str, Any]:
    from shardmc.core.engine import _versions

    fk = inputs.fit_kwargs
    return {"versions": _versions(),
            "state": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seed": fk.get("seed", 0), "num_shards": fk.get("num_shards"),
            "num_points": inputs.data.num_points,
            "data_file": str(data_file), **hashes, "shards": []}


def _check_unchanged(store: RunStore, hashes: dict[str, str]) -> None:
    manifest = store.read_manifest()
    for key, what in (("config_hash", "config"), ("data_hash", "data file")):
        if manifest.get(key) != hashes[key]:
            raise ShardMCInputError(
                f"resume {store.path}: the {what} changed since the run started "
                f"({key} {str(manifest.get(key))[:12]}… → {hashes[key][:12]}…); "
                "start a new run instead (shardmc run CONFIG --out NEW_DIR)")


def execute(cfg: Any, store: RunStore, *, resume: bool, progress: bool | None = None,
            echo: Callable[[str], None] = print, report: bool = True,
            inputs: Any = None, clock: PhaseClock | None = None) -> dict[str, Any]:
    """Fit ``cfg`` into ``store`` (a new run, or a resumed one); returns the summary.
    inputs: ``config.build_run(cfg)`` when the caller already has it (``clock``: where its
    "load" phase was timed). The summary's ``phase_seconds`` times each phase (s): load,
    warm_start, fit (``fit.<phase>`` inside it, see ``shardmc.fit``), importance,
    outputs, report. Ctrl-C or SIGTERM (a KeyboardInterrupt) marks the manifest "interrupted" and
    raises RunInterrupted."""
    import shardmc
    from shardmc import config as C

    t0, clock = time.perf_counter(), clock or PhaseClock()
    if inputs is None:
        with clock.phase("load"):
            inputs = C.build_run(cfg)
    data_file = Path(cfg.data.file)
    hashes = {"config_hash": C.config_hash(cfg), "data_hash": C.data_hash(data_file)}
    if resume:
        _check_unchanged(store, hashes)
        echo(f"Resuming {store.path}: {store.verify_shards()} shard file(s) on disk.")
        store.update_manifest(state="running", resumed=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    else:
        write_text(store.path / CONFIG_FILE, C.resolved_yaml(cfg))
        store.write_manifest(_manifest(inputs, data_file, hashes))
    fit_kwargs = dict(inputs.fit_kwargs)
    if progress is not None:
        fit_kwargs["progress"] = progress
    with run_log(store.path / LOG_FILE), _marks_interrupt(store):
        n = inputs.data.num_points
        k = fit_kwargs.get("num_shards")
        echo(f"{inputs.model.physics}: {inputs.data.n_phi} angle(s) x {inputs.data.n_t} "
             f"frames = {n} points; {k} shard{'' if k == 1 else 's'}.")
        with clock.phase("warm_start"):
            init = _warm_start_values(store, inputs, inputs.seed, inputs.warm_start, echo)
        if init:
            fit_kwargs.setdefault("init_strategy", "value")
            fit_kwargs["init_values"] = init
        try:
            with clock.phase("fit"):
                post = shardmc.fit(inputs.model, inputs.points,
                                   model_kwargs=inputs.model_kwargs,
                                   on_shard_done=store.write_shard, lookup=store.lookup,
                                   **fit_kwargs)
            clock.seconds.update({f"fit.{name}": v for name, v in
                                  post.provenance.get("phase_seconds", {}).items()})
            if cfg.combine.importance_refine and post.num_shards == 1:
                echo("Importance correction not needed: one shard samples the full "
                     "posterior.")
            elif cfg.combine.importance_refine:
                with clock.phase("importance"):
                    post = _refined(post, inputs, n, echo)
        except Exception:
            store.update_manifest(state="failed")
            raise
        with clock.phase("outputs"):
            summary = write_results(store, inputs, data_file, post, time.perf_counter() - t0)
        _report_warnings(summary, echo)
        store.update_manifest(state="finished",
                              finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              seconds=summary["seconds"])
        if report:
            from shardmc.workflow.html_report import write_report

            with clock.phase("report"):
                write_report(store.path)
        summary["phase_seconds"] = dict(clock.seconds)
        write_json(store.path / SUMMARY_FILE, summary)
        log.info("run phases (s): %s", ", ".join(f"{k} {v:.2f}"
                                                 for k, v in clock.seconds.items()))
    return summary


def _report_warnings(summary: dict[str, Any], echo: Callable[[str], None]) -> None:
    """The run's diagnostic warnings (R-hat, ESS, divergences of its shards): one line each
    on the console and in run.log, with where the full diagnosis is."""
    lines = summary["warnings"]
    for line in lines:
        echo(f"warning: {line}")
        log.info("warning: %s", line)
    if lines:
        echo(f"{len(lines)} warning(s); the diagnosis with remedies is in summary.json "
             "(\"diagnosis\") and report.html.")


def _refined(post: Any, inputs: Any, n: int, echo: Callable[[str], None]) -> Any:
    """The importance-corrected posterior (combine.importance_refine) when its Pareto
    k-hat says it can be trusted; else the CMC posterior, with the attempt recorded."""
    from shardmc.core.refine import importance_refine

    try:
        refined = importance_refine(post, inputs.model, inputs.points,
                                    model_kwargs=inputs.model_kwargs, seed=inputs.seed)
    except np.linalg.LinAlgError:
        echo("Importance correction skipped: the combined draws' covariance is not "
             "positive definite (a parameter without spread); the CMC posterior is kept.")
        return dataclasses.replace(post, provenance={
            **post.provenance, "refine": {"applied": False, "reason": "singular covariance"}})
    info = refined.provenance["refine"]
    text = (f"Importance correction on all {n} points: Pareto k-hat {info['pareto_k']:.2f}, "
            f"importance ESS {info['importance_ess']:.0f} of {info['proposal_draws']}")
    if info["reliable"]:
        echo(text + ".")
        return refined
    echo(text + f": above {info['pareto_k_max']}, not trusted; the CMC posterior is kept.")
    return dataclasses.replace(post, provenance={**post.provenance,
                                                 "refine": {**info, "applied": False}})


def run_config(config_path: str | Path, out: str | Path | None = None, *,
               overrides: Sequence[str] = (), force: bool = False,
               progress: bool | None = None,
               echo: Callable[[str], None] = print) -> tuple[Path, dict[str, Any]]:
    """``shardmc run``: a new run directory (``out``; default runs/<config>-<time>)."""
    from shardmc import config as C

    cfg = C.load_config(config_path, overrides)
    if out is None:
        out = Path("runs") / f"{Path(config_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    clock = PhaseClock()
    with clock.phase("load"):
        inputs = C.build_run(cfg)  # every data check before the run directory is touched
    store = RunStore.create(out, force=force)
    summary = execute(cfg, store, resume=False, progress=progress, echo=echo, inputs=inputs,
                      clock=clock)
    return store.path, summary


def resume_run(run_dir: str | Path, *, progress: bool | None = None,
               echo: Callable[[str], None] = print) -> dict[str, Any]:
    """``shardmc resume DIR``: finish an interrupted run with the config stored in it."""
    from shardmc import config as C

    store = RunStore.open(run_dir)
    config_file = store.path / CONFIG_FILE
    if not config_file.is_file():
        raise ShardMCInputError(f"resume {store.path}: no {CONFIG_FILE} in the run directory")
    cfg = C.load_config(config_file)
    return execute(cfg, store, resume=True, progress=progress, echo=echo)
