"""``shardmc report DIR``: PNG plots and one self-contained ``report.html`` of a run directory.

Reads what the run store writes (``posterior.nc``, ``manifest.json``, ``summary.json``,
``fit.npz``, ``truth.json``, ``config.yaml``; all but ``posterior.nc`` optional, missing keys
tolerated). :func:`write_report` always redraws the plots, so the report never shows figures
of an earlier state of the run. The HTML embeds every PNG as a base64 data URI and has
inline CSS only: no JavaScript, no external links, so it can be mailed or archived alone.
The page is the Jinja2 template ``templates/report.html.j2`` (autoescaped); this module
gathers what it shows.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shardmc.errors import ShardMCInputError

PLOTS_DIR = "plots"
REPORT_FILE = "report.html"
POSTERIOR_FILE = "posterior.nc"
#: Central interval of the summary table when summary.json is missing.
INTERVAL = 0.9
#: Manifest shard statuses that mean the run did not finish (``shardmc resume`` helps).
UNFINISHED_STATUSES = ("pending", "running", "failed")
#: Relative tolerance when checking reconstructed per-shard means against the provenance.
SHARD_MEAN_RTOL = 1e-6

#: The page template (Jinja2, autoescaped), shipped as package data.
TEMPLATE = "report.html.j2"


def _template() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("shardmc.workflow", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return env.get_template(TEMPLATE)


@dataclass
class Run:
    """What a run directory holds; the optional files are empty when missing."""

    path: Path
    posterior: Any
    manifest: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    truth: dict[str, Any] = field(default_factory=dict)
    config_text: str = ""


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        out = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardMCInputError(f"{path}: expected a JSON object, found unreadable JSON "
                                f"({exc})") from exc
    if not isinstance(out, dict):
        raise ShardMCInputError(f"{path}: expected a JSON object, found {type(out).__name__}")
    return out


def _unfinished_shards(manifest: dict[str, Any]) -> list[int]:
    """Shards of the manifest's K that are pending, failed or not recorded at all."""
    shards = [s for s in manifest.get("shards") or [] if isinstance(s, dict)]
    k = manifest.get("num_shards")
    at_k = [s for s in shards if s.get("of", k) == k]
    done = {s.get("index") for s in at_k if s.get("status") not in UNFINISHED_STATUSES}
    listed = {s.get("index") for s in at_k}
    missing = [i for i in range(k) if i not in listed] if isinstance(k, int) else []
    return sorted({*(s.get("index") for s in at_k if s.get("index") not in done), *missing},
                  key=str)


def load_run(run_dir: str | Path) -> Run:
    """The files of ``run_dir``; ShardMCInputError if it or its posterior.nc is missing."""
    import shardmc

    path = Path(run_dir)
    if not path.is_dir():
        raise ShardMCInputError(f"run directory: expected an existing directory, found {path}")
    manifest = _read_json(path / "manifest.json")
    if not (path / POSTERIOR_FILE).is_file():
        pending = _unfinished_shards(manifest)
        state = manifest.get("state")
        hint = (f"; {len(pending)} shard(s) unfinished ({', '.join(map(str, pending[:8]))})"
                if pending else f"; the manifest says the run is {state!r}" if state else "")
        hint += (f": finish the run with `shardmc resume {path}`" if pending or state in
                 ("running", "failed") else "; the run has not finished")
        raise ShardMCInputError(f"{path / POSTERIOR_FILE}: expected the combined posterior of "
                                f"the run, found no such file{hint}")
    config = path / "config.yaml"
    truth = _read_json(path / "truth.json")
    return Run(path, shardmc.load(path / POSTERIOR_FILE), manifest,
               _read_json(path / "summary.json"), truth,
               config.read_text(errors="replace") if config.is_file() else "")


# -- what to plot --------------------------------------------------------------------------
def main_parameters(run: Run) -> list[str]:
    """Scalar parameters of the summary table (summary.json order), else every scalar site
    except ``log_<x>`` duplicates of a site ``x``."""
    samples = run.posterior.samples
    listed = [r.get("parameter") for r in run.summary.get("parameters") or []]
    names = [n for n in listed if n in samples and np.ndim(samples[n]) == 1]
    if names:
        return names
    return [n for n, v in samples.items() if np.ndim(v) == 1
            and not (n.startswith("log_") and n[4:] in samples)]


def _scalar_truth(run: Run) -> dict[str, float]:
    truth = dict(run.truth)
    for row in run.summary.get("parameters") or []:
        if row.get("truth") is not None:
            truth.setdefault(row.get("parameter"), row["truth"])
    return {k: float(v) for k, v in truth.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _constrain(z: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    """NumPyro's bijection from the real line to (lo, hi), [lo, inf), (-inf, hi] or R."""
    if lo is not None and hi is not None:
        return lo + (hi - lo) / (1.0 + np.exp(-z))
    if lo is not None:
        return lo + np.exp(z)
    if hi is not None:
        return hi - np.exp(z)
    return z


def shard_constrained_moments(posterior: Any, names: list[str]) -> tuple[
        list[str], np.ndarray, np.ndarray]:
    """Per-shard mean and sd of each of ``names`` in its own units: (names kept, means
    (K, p), sds (K, p)). Uses the support bounds recorded in the provenance
    (``shard_constrained``) to map each shard's unconstrained draws; ``x`` sampled as
    ``log_x`` is exponentiated. The sd is NaN where the reconstruction does not reproduce
    the recorded shard means (a non-elementwise transform); the mean is then the recorded
    one. Deterministic sites (XPCS rate blocks' parameters) take the moments recorded in
    ``shard_deterministic``. Names with neither are dropped."""
    info = posterior.provenance.get("shard_constrained") or {}
    coords, bounds = list(info.get("coords") or []), info.get("bounds") or []
    recorded = np.asarray(info.get("means") or np.zeros((0, 0)), float)
    flat = posterior.shard_draws.reshape(posterior.shard_draws.shape[0], -1,
                                         posterior.shard_draws.shape[-1])
    derived = posterior.provenance.get("shard_deterministic") or {}
    kept, means, sds = [], [], []
    for name in names:
        coord, log = (name, False) if name in coords else (f"log_{name}", True)
        if name in (derived.get("names") or []) and coord not in coords:
            i = derived["names"].index(name)  # a deterministic site: recorded moments
            kept.append(name)
            means.append(np.asarray(derived["means"][i], float))
            sds.append(np.asarray(derived["sds"][i], float))
            continue
        if coord not in coords or coord not in posterior.coords:
            continue
        j, u = coords.index(coord), posterior.coords.index(coord)
        x = _constrain(flat[:, :, u], *bounds[j])
        ok = np.allclose(x.mean(axis=1), recorded[:, j], rtol=SHARD_MEAN_RTOL,
                         atol=SHARD_MEAN_RTOL * np.abs(recorded[:, j]).max(initial=1.0))
        x = np.exp(x) if log else x
        kept.append(name)
        if ok:
            means.append(x.mean(axis=1))
            sds.append(x.std(axis=1, ddof=1))
        else:
            means.append(np.exp(recorded[:, j]) if log else recorded[:, j])
            sds.append(np.full(flat.shape[0], np.nan))
    k = flat.shape[0]
    return kept, np.reshape(np.transpose(means), (k, len(kept))), np.reshape(
        np.transpose(sds), (k, len(kept)))


def _shard_labels(posterior: Any) -> list[int]:
    used = posterior.provenance.get("shards_used")
    return list(used) if used else list(range(posterior.num_shards))


def _draws_per_shard(posterior: Any) -> int:
    return int(posterior.shard_draws.shape[1] * posterior.shard_draws.shape[2])


def _plots(run: Run) -> tuple[list[Path], list[str]]:
    from shardmc.xpcs import plots as P

    out = run.path / PLOTS_DIR
    out.mkdir(exist_ok=True)
    for old in out.glob("c2_angle_*.png"):
        old.unlink()
    paths, notes = [], []
    fit = run.path / "fit.npz"
    if fit.is_file():
        with np.load(fit, allow_pickle=False) as f:
            paths += P.plot_c2_arrays(f["c2"], f["fitted"], f["t"], f["phi"], out,
                                      f["residual"] if "residual" in f.files else None)
    else:
        notes.append("fit.npz is missing: no c2 data / fit / residual maps.")
    post, names, truth = run.posterior, main_parameters(run), _scalar_truth(run)
    paths.append(P.plot_corner(post.samples, names, out / "corner.png", truth))
    kept, means, sds = shard_constrained_moments(post, names)
    if kept:
        paths.append(P.plot_shard_forest(kept, means, np.nan_to_num(sds), post.samples,
                                         out / "shard_forest.png",
                                         labels=_shard_labels(post), truth=truth))
    else:
        notes.append("no per-shard constrained values in the provenance: no forest plot.")
    if np.isnan(sds).any():
        notes.append("forest plot: per-shard sd not shown for " + ", ".join(
            n for n, bad in zip(kept, np.isnan(sds).any(axis=0), strict=True) if bad))
    paths.append(P.plot_divergences(post.diagnostics["divergences"], _draws_per_shard(post),
                                    out / "divergences.png", labels=_shard_labels(post)))
    return paths, notes


def make_plots(run_dir: Path) -> list[Path]:
    """Write plots/c2_angle_<i>.png (when fit.npz exists), corner.png, shard_forest.png
    and divergences.png into ``run_dir``; returns their paths."""
    return _plots(load_run(run_dir))[0]


# -- HTML ----------------------------------------------------------------------------------
def _num(x: Any, spec: str = ".5g") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    return format(x, spec) if isinstance(x, (int, float, np.number)) else str(x)


def _time_origin_fact(info: dict[str, Any] | None) -> str | None:
    """First frame time and frame time of an XPCS run (docs/xpcs.md, "Time origin")."""
    if not info:
        return None
    floored = info.get("floored_frames") or 0
    note = f", {floored} below the dt/2 rate floor" if floored else ""
    return f"first frame at t0 = {info['t0']:g} s, dt = {info['dt']:g} s{note}"


def _facts(run: Run) -> list[tuple[str, Any]]:
    m, s, p = run.manifest, run.summary, run.posterior.provenance
    sampler = p.get("sampler") or {}
    versions = m.get("versions") or p.get("versions") or {}
    facts = [
        ("physics", s.get("physics")), ("points", s.get("num_points") or m.get("num_points")
                                        or p.get("num_points")),
        ("shards (K)", m.get("num_shards") or p.get("num_shards")),
        ("backend", p.get("backend") or m.get("backend")),
        ("combination", f"{p.get('method', '?')} in {p.get('space', '?')} space"),
        ("sampler", ", ".join(f"{k} {sampler[k]}" for k in ("num_chains", "num_warmup",
                                                             "num_samples") if k in sampler)),
        ("seed", m.get("seed", p.get("seed"))),
        ("time origin", _time_origin_fact(p.get("xpcs_time"))),
        ("wall time", f"{s['seconds']:.1f} s" if isinstance(s.get("seconds"), (int, float))
         else None),
        ("started", m.get("started")), ("finished", m.get("finished")),
        ("shardmc", versions.get("shardmc")),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items())),
        ("config hash", m.get("config_hash")), ("data hash", m.get("data_hash")),
    ]
    return [(k, v) for k, v in facts if v not in (None, "")]


def _summary_rows(run: Run) -> list[dict[str, Any]]:
    if run.summary.get("parameters"):
        return list(run.summary["parameters"])
    interval = run.summary.get("interval", INTERVAL)
    table = run.posterior.summary(interval)
    lo, hi = table.columns[2], table.columns[4]
    truth = _scalar_truth(run)
    rows = []
    for name in main_parameters(run):
        r = table.loc[name]
        t = truth.get(name)
        rows.append({"parameter": name, "mean": r["mean"], "sd": r["sd"], "lower": r[lo],
                     "upper": r[hi], "truth": t,
                     "covered": None if t is None else bool(r[lo] <= t <= r[hi])})
    return rows


def _summary_table(run: Run) -> dict[str, list]:
    rows = _summary_rows(run)
    interval = float(run.summary.get("interval", INTERVAL))
    has_truth = any(r.get("truth") is not None for r in rows)
    head = ["parameter", "mean", "sd", f"{interval:.0%} interval"]
    head += ["truth", "covered"] if has_truth else []
    out: list[list[Any]] = []
    for r in rows:
        cells: list[Any] = [r.get("parameter"), _num(r.get("mean")), _num(r.get("sd")),
                            f"[{_num(r.get('lower'))}, {_num(r.get('upper'))}]"]
        if has_truth:
            cov = r.get("covered")
            cells += [_num(r.get("truth")), "—" if cov is None else
                      ("yes" if cov else {"css": "no", "text": "NO"})]
        out.append(cells)
    return {"head": head, "rows": out}


def convergence_headline(posterior: Any) -> str:
    """One sentence on per-shard R-hat, bulk ESS, divergences and E-BFMI."""
    from shardmc.core.diagnostics import BFMI_MIN, ESS_MIN, RHAT_MAX
    from shardmc.core.sampling import DIVERGENCE_RATE_TARGET

    d, labels = posterior.diagnostics, _shard_labels(posterior)
    k, total = len(labels), posterior.provenance.get("num_shards") or len(labels)
    head = f"all {k} shards" if k == total else f"{k} of {total} shards used"
    rhat = np.asarray(d["rhat"], float)
    if not np.isfinite(rhat).any():
        r = "R-hat not available (1 chain per shard)"
    elif np.nanmax(rhat) <= RHAT_MAX:
        r = f"R-hat ≤ {RHAT_MAX}"
    else:
        bad = [labels[i] for i in np.flatnonzero(np.nanmax(rhat, axis=1) > RHAT_MAX)]
        r = (f"max R-hat {np.nanmax(rhat):.3f} (> {RHAT_MAX} in shards "
             f"{', '.join(map(str, bad[:8]))})")
    ess = np.where(np.isfinite(d["ess_bulk"]), d["ess_bulk"], np.inf).min(axis=1)
    e = (f"min bulk ESS {ess.min():.0f} (shard {labels[int(np.argmin(ess))]}; flagged below "
         f"{ESS_MIN})" if np.isfinite(ess).any() else "bulk ESS not available")
    div = np.asarray(d["divergences"], float)
    per = _draws_per_shard(posterior)
    v = (f"{div.sum() / (k * per):.1%} divergent transitions, at most {div.max() / per:.1%} "
         f"in one shard (target {DIVERGENCE_RATE_TARGET:.0%})")
    b = f"min E-BFMI {np.nanmin(d['bfmi']):.2f} (flagged below {BFMI_MIN})"
    return f"{head.capitalize()}: {r}; {e}; {v}; {b}."


def _heterogeneity_table(report: Any) -> dict[str, Any] | None:
    """Cochran's Q per coordinate, or None with one shard."""
    from shardmc.core.diagnosis import HETEROGENEITY_P_VALUE

    params = report.parameters
    if params["p_value"].isna().all():
        return None
    cut = HETEROGENEITY_P_VALUE / len(params)
    rows = [[name, _num(r["q"], ".1f"), _num(r["p_value"], ".2g"), _num(r["i2"], ".0%"),
             "disagree" if r["p_value"] < cut else "consistent"]
            for name, r in params.iterrows()]
    return {"cut": f"{cut:.2g}", "rows": rows}


def _diagnostics(run: Run, report: Any) -> dict[str, Any]:
    post = run.posterior
    serious = [i for i in report.issues if i.severity != "info"]
    notes = [i for i in report.issues if i.severity == "info"]
    verdict = ("no problems found" if not report.issues else
               f"{len(serious)} warning(s) or error(s), {len(notes)} note(s)")
    warnings = list(dict.fromkeys([*post.warnings(), *(run.summary.get("warnings") or [])]))
    return {"headline": convergence_headline(post), "verdict": verdict, "serious": serious,
            "notes": notes, "warnings": warnings,
            "heterogeneity": _heterogeneity_table(report)}


def _caption(path: Path, run: Run) -> str:
    name = path.stem
    if name.startswith("c2_angle_"):
        return (f"Angle {name.rsplit('_', 1)[1]}: c2 data, model at the posterior median, and "
                "residual (data − model) over (t1, t2).")
    interval = float(run.summary.get("interval", INTERVAL))
    return {
        "corner": "Combined posterior of the main parameters: marginals and pairs "
                  "(red: truth, when known).",
        "shard_forest": "Per-shard posterior mean ± sd of the main parameters against the "
                        f"combined posterior mean (line) and {interval:.0%} interval (band).",
        "divergences": "Divergent post-warmup transitions per shard; lines at the 5 % "
                       "(target), 10 % (high) and 30 % (critical) rates.",
    }.get(name, name)


def _figure(path: Path, caption: str) -> dict[str, str]:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return {"src": f"data:image/png;base64,{data}", "alt": path.stem, "caption": caption}


def _shard_table(run: Run, report: Any) -> dict[str, list]:
    """One row per shard file in the manifest (a shard re-run at prior 1/K' after
    exclusions has a row per scale); diagnostics for the shards of the posterior."""
    post, m = run.posterior, run.manifest
    labels = _shard_labels(post)
    pos, used, per = {s: i for i, s in enumerate(labels)}, len(labels), _draws_per_shard(post)
    stats = post.provenance.get("shard_stats") or []
    sizes = m.get("shard_sizes") or post.provenance.get("shard_sizes") or []
    shards = [s for s in m.get("shards") or [] if isinstance(s, dict)]
    if not shards:
        shards = [{"index": s, "status": "ok"} for s in labels]
    rows = []
    for i, s in enumerate(shards):
        idx = s.get("index", i)
        j = pos.get(idx) if s.get("of", used) == used else None
        seconds = s.get("seconds")
        if seconds is None and j is not None and j < len(stats):
            seconds = stats[j].get("total_time")
        points = s.get("num_points") or (sizes[idx] if isinstance(idx, int)
                                          and idx < len(sizes) else None)
        if j is None:
            rate = s.get("divergence_rate")
            rows.append([idx, s.get("status", "?"), f"1/{s['of']}" if "of" in s else "—",
                         _num(points),
                         _num(seconds, ".1f"), "—" if rate is None else _num(rate, ".1%"),
                         "—", "—", "—"])
            continue
        n, d = int(post.diagnostics["divergences"][j]), report.shards.iloc[j]
        rows.append([idx, s.get("status", "?"), f"1/{s.get('of', used)}",
                     _num(points), _num(seconds, ".1f"), f"{n} ({n / per:.1%})",
                     _num(d["max_rhat"], ".3f"), _num(d["min_ess_bulk"], ".0f"),
                     _num(d["min_bfmi"], ".2f")])
    return {"head": ["shard", "status", "prior", "points", "seconds", "divergences",
                     "max R-hat", "min bulk ESS", "min E-BFMI"], "rows": rows}


def render_html(run: Run, plots: list[Path], notes: list[str]) -> str:
    """The report page of ``run`` with ``plots`` embedded (text escaped, no external refs)."""
    report = run.posterior.diagnose()
    return _template().render(
        title=f"shardmc report: {run.path.resolve().name}", facts=_facts(run),
        summary=_summary_table(run), diagnostics=_diagnostics(run, report),
        notes=notes, figures=[_figure(p, _caption(p, run)) for p in plots],
        shards=_shard_table(run, report), config_text=run.config_text)


def write_report(run_dir: str | Path) -> Path:
    """Redraw the plots of ``run_dir`` and write its self-contained ``report.html``;
    returns the report's path. ShardMCInputError if the directory or posterior.nc is
    missing (naming ``shardmc resume DIR`` when the manifest lists unfinished shards)."""
    run = load_run(run_dir)
    plots, notes = _plots(run)
    path = run.path / REPORT_FILE
    path.write_text(render_html(run, plots, notes), encoding="utf-8")
    return path
