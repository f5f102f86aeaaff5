"""``Posterior.diagnose()``: what is wrong with a CMC run, in words a user can act on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shardmc.combine.bimodal import detect_modes
from shardmc.combine.mc_error import (
    COMBINE_MC_ERROR_TARGET,
    COMBINE_MC_ERROR_WARN,
    draws_for_error,
)
from shardmc.core import heterogeneity as H
from shardmc.core.diagnostics import BFMI_MIN, ESS_MIN, RHAT_MAX
from shardmc.core.sampling import (
    DIVERGENCE_RATE_CRITICAL,
    DIVERGENCE_RATE_HIGH,
    DIVERGENCE_RATE_TARGET,
)

#: Family-wise level of the per-parameter heterogeneity test (Bonferroni over parameters).
HETEROGENEITY_P_VALUE = 0.001
#: Bounds-aware CV of shard means: the reference warned above 0.5 and aborted above 1.0.
CV_WARN, CV_SEVERE = 0.5, 1.0
#: A parameter's sub-posteriors count as non-Gaussian when the median over shards of
#: |skewness| or of excess kurtosis passes these (MC sd of either is ~sqrt(6/ESS)).
SKEW_MAX, KURTOSIS_MAX = 0.5, 1.0
#: Fraction of transitions at the maximum tree depth above which a shard is flagged.
TREE_DEPTH_SATURATION_MAX = 0.01
#: Shards named in one message before "and N more".
MAX_LISTED = 8

SEVERITIES = ("info", "warning", "error")


@dataclass
class Issue:
    """One problem: how bad, what kind, the message, and the shards and parameters."""

    severity: str
    kind: str
    message: str
    shards: list[int] = field(default_factory=list)
    params: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"[{self.severity}] {self.message}"


@dataclass
class DiagnosisReport:
    """Problems found (``issues``), per-parameter and per-shard tables, the fraction of
    shards excluded, and the bounds-aware CV of the shard means (constrained names)."""

    issues: list[Issue]
    parameters: pd.DataFrame
    shards: pd.DataFrame
    failed_fraction: float
    cv: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))

    @property
    def ok(self) -> bool:
        """No warning or error."""
        return not any(i.severity != "info" for i in self.issues)

    def messages(self, min_severity: str = "info") -> list[str]:
        level = SEVERITIES.index(min_severity)
        return [i.message for i in self.issues if SEVERITIES.index(i.severity) >= level]

    def __str__(self) -> str:
        if not self.issues:
            return "shardmc diagnosis: no problems found"
        head = f"shardmc diagnosis: {len(self.issues)} finding(s)"
        return "\n".join([head, *(f"  - {i}" for i in self.issues)])

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "failed_fraction": self.failed_fraction,
                "issues": [vars(i) for i in self.issues],
                "parameters": self.parameters.reset_index(names="param").to_dict("records"),
                "shards": self.shards.reset_index(names="shard").to_dict("records"),
                "bounds_aware_cv": {str(k): float(v) for k, v in self.cv.items()}}


def _listing(labels: list[int]) -> str:
    head = ", ".join(map(str, labels[:MAX_LISTED]))
    return head + (f" and {len(labels) - MAX_LISTED} more" if len(labels) > MAX_LISTED else "")


def _divergence_issues(rates: np.ndarray, labels: np.ndarray) -> list[Issue]:
    out = []
    levels = [(DIVERGENCE_RATE_CRITICAL, np.inf, "error", "critical"),
              (DIVERGENCE_RATE_HIGH, DIVERGENCE_RATE_CRITICAL, "warning", "high"),
              (DIVERGENCE_RATE_TARGET, DIVERGENCE_RATE_HIGH, "info", "target")]
    for lo, hi, severity, name in levels:
        idx = np.flatnonzero((rates > lo) & (rates <= hi))
        if idx.size == 0:
            continue
        if idx.size == 1:
            what = f"shard {labels[idx[0]]}: {rates[idx[0]]:.0%} divergent transitions"
        else:
            what = (f"shards {_listing(labels[idx].tolist())}: {rates[idx].min():.0%}-"
                    f"{rates[idx].max():.0%} divergent transitions")
        out.append(Issue(severity, "divergences",
                         f"{what} (above the {lo:.0%} {name} level): raise target_accept_prob, "
                         "reparameterise the model, or fit with on_shard_failure='exclude'",
                         labels[idx].tolist()))
    return out


def _per_param_shard_issue(mask: np.ndarray, labels: np.ndarray, coords: list[str],
                           kind: str, what: str, advice: str,
                           severity: str = "warning") -> list[Issue]:
    out = []
    k = mask.shape[0]
    for j in np.flatnonzero(mask.any(axis=0)):
        bad = labels[mask[:, j]].tolist()
        out.append(Issue(severity, kind, f"{coords[j]}: {what} in {len(bad)} of {k} shards "
                         f"(shards {_listing(bad)}): {advice}", bad, [coords[j]]))
    return out


def _convergence_issues(diag: dict[str, np.ndarray], labels, coords) -> list[Issue]:
    out = _per_param_shard_issue(diag["rhat"] > RHAT_MAX, labels, coords, "rhat",
                                 f"R-hat > {RHAT_MAX}", "run more warmup and samples or more "
                                 "chains per shard")
    out += _per_param_shard_issue(diag["ess_bulk"] < ESS_MIN, labels, coords, "ess",
                                  f"bulk ESS < {ESS_MIN}", "draw more samples per shard",
                                  "info")
    bfmi = np.nanmin(diag["bfmi"], axis=1)
    low = np.flatnonzero(bfmi < BFMI_MIN)
    if low.size:
        out.append(Issue("warning", "bfmi", f"shards {_listing(labels[low].tolist())}: E-BFMI "
                         f"{bfmi[low].min():.2f} < {BFMI_MIN} (poor energy exploration): "
                         "reparameterise (e.g. non-centred)", labels[low].tolist()))
    sat = np.flatnonzero(diag["tree_depth_saturation"] > TREE_DEPTH_SATURATION_MAX)
    if sat.size:
        out.append(Issue("warning", "tree_depth", f"shards {_listing(labels[sat].tolist())}: "
                         "transitions hit the maximum tree depth: raise max_tree_depth or "
                         "reparameterise", labels[sat].tolist()))
    return out


def _heterogeneity_issues(het, means, coords, labels, alpha) -> list[Issue]:
    out = []
    d = len(coords)
    for j in np.flatnonzero(het["p_value"] < alpha / d):
        far = labels[np.argsort(-np.abs(means[:, j] - np.median(means[:, j])))[:3]].tolist()
        out.append(Issue(
            "warning", "heterogeneity",
            f"{coords[j]}: shard means disagree beyond their own spread (Q = "
            f"{het['q'][j]:.1f} on {int(het['df'][j])} df, p = {het['p_value'][j]:.1e}, I2 = "
            f"{het['i2'][j]:.0%}); furthest shards {', '.join(map(str, far))}: check that the "
            "sharding is random or stratified by the source of variation, or use "
            "method='robust_consensus'", far, [coords[j]]))
    return out


def _cv_issues(cv: np.ndarray, names: list[str], bounded: np.ndarray,
               heterogeneous: set[str]) -> list[Issue]:
    """The reference's bounds-aware CV, for bounded parameters only (without a bound range
    the CV of a parameter near zero is meaningless). It mixes shard width with
    disagreement, so it is a warning only where Cochran's Q also finds disagreement."""
    out = []
    for j in np.flatnonzero((cv > CV_WARN) & bounded):
        level = CV_SEVERE if cv[j] > CV_SEVERE else CV_WARN
        sev = "warning" if names[j] in heterogeneous else "info"
        out.append(Issue(sev, "cv", f"{names[j]}: coefficient of variation of shard means "
                         f"{cv[j]:.2f} (> {level}, bounds-aware; the reference warned above "
                         f"{CV_WARN} and aborted above {CV_SEVERE})", params=[names[j]]))
    return out


def _shape_issues(sk, ku, coords) -> list[Issue]:
    out = []
    med_s, med_k = np.median(np.abs(sk), axis=0), np.median(ku, axis=0)
    for j in np.flatnonzero((med_s > SKEW_MAX) | (med_k > KURTOSIS_MAX)):
        out.append(Issue(
            "warning", "gaussianity",
            f"{coords[j]}: sub-posteriors are non-Gaussian (median |skew| {med_s[j]:.2f}, "
            f"excess kurtosis {med_k[j]:.2f} over {sk.shape[0]} shards); consensus assumes "
            "Gaussian shards: correct it with shardmc.importance_refine(post, model, "
            "data), use fewer, larger shards, or reparameterise", params=[coords[j]]))
    return out


def _combination_issues(prov: dict, draws: np.ndarray, labels: np.ndarray) -> list[Issue]:
    out = []
    info = prov.get("combine_info") or {}
    weights = np.asarray(info.get("weights") or [], dtype=float)
    if "prior_power" in info and weights.size == labels.size and (weights < 1).any():
        low = np.flatnonzero(weights < 1)
        out.append(Issue("warning", "robust", f"shards {_listing(labels[low].tolist())} were "
                         f"down-weighted (weights {', '.join(f'{w:.2g}' for w in weights[low][:5])}"
                         f"); the combined target holds the prior to the power "
                         f"{info['prior_power']:.3f}: find out why these shards disagree",
                         labels[low].tolist()))
    if info.get("num_modes") != 2 and draws.shape[0] >= 2:
        split = detect_modes(draws)
        if split.bimodal:
            minor = labels[split.labels == 1].tolist()
            out.append(Issue("warning", "modes", f"shards split into two modes ({split.reason})"
                             f"; minor mode in shards {_listing(minor)}: use method='bimodal' "
                             "or 'auto'", minor))
    return out


def _mc_error_issues(prov: dict) -> list[Issue]:
    rec = prov.get("combine_mc_error")
    if not rec:
        return []
    err = np.asarray(rec["sd_units"], dtype=float)
    if not np.isfinite(err).any() or np.nanmax(err) <= COMBINE_MC_ERROR_WARN:
        return []
    worst = int(np.nanargmax(err))
    bad = [c for c, e in zip(rec["coords"], err, strict=True) if e > COMBINE_MC_ERROR_WARN]
    need = draws_for_error(rec["draws_per_shard"], float(err[worst]))
    return [Issue("warning", "mc_error",
                  f"combined means are uncertain by up to {err[worst]:.2f} posterior sd "
                  f"({rec['coords'][worst]}; {len(bad)} of {err.size} parameters above "
                  f"{COMBINE_MC_ERROR_WARN}) from the shards' finite draws "
                  f"({rec['draws_per_shard']} each, {rec['method']}): about {need} draws per "
                  f"shard (num_samples x num_chains) bring it to {COMBINE_MC_ERROR_TARGET}",
                  params=bad)]


def _refine_issues(prov: dict) -> list[Issue]:
    info = prov.get("refine")
    if not info:
        return []
    if "reason" in info:
        return [Issue("warning", "refine", f"importance correction skipped ({info['reason']}):"
                      " the CMC posterior is kept")]
    text = (f"importance correction on the full data: Pareto k-hat {info['pareto_k']:.2f}, "
            f"importance ESS {info['importance_ess']:.0f} of {info['proposal_draws']} draws")
    if info["reliable"]:
        return [Issue("info", "refine", text)]
    kept = "" if info.get("applied", True) else "; not applied, the CMC draws are kept"
    return [Issue("warning", "refine", text + f" (k-hat above {info['pareto_k_max']}: the CMC "
                  "posterior is too "
                  f"far from the full one for the correction to be trusted{kept}; use larger "
                  "shards)")]


def time_origin_issues(prov: dict, samples: dict[str, Any]) -> list[Issue]:
    """The dt/2 rate floor of an XPCS fit (``prov["xpcs_time"]``, docs/xpcs.md "Time
    origin"): a warning where an exponent's posterior median is < 0, else info."""
    info = prov.get("xpcs_time") or {}
    if not info.get("message"):
        return []
    names = [n for n in info.get("negative_exponents", []) if n in samples]
    medians = {n: float(np.median(samples[n])) for n in names
               if np.ndim(samples[n]) == 1}
    below = {n: m for n, m in medians.items() if m < 0}
    if below:
        fitted = ", ".join(f"{n} {m:.3g}" for n, m in below.items())
        return [Issue("warning", "time_origin", f"{info['message']}; posterior median "
                      f"{fitted}", params=list(below))]
    return [Issue("info", "time_origin", info["message"], params=names)]


def _exclusion_issues(prov: dict) -> tuple[list[Issue], float]:
    excluded = prov.get("excluded_shards") or []
    total = int(prov.get("num_shards") or 0)
    if not excluded or not total:
        return [], 0.0
    frac = len(excluded) / total
    causes = "; ".join(f"shard {e['index']}: {e['status']}" for e in excluded[:MAX_LISTED])
    return [Issue("warning", "excluded",
                  f"{len(excluded)} of {total} shards ({frac:.0%}) were excluded ({causes}); "
                  f"the posterior uses the other {total - len(excluded)} with the prior "
                  f"re-tempered to 1/{total - len(excluded)} and conditions on their data only",
                  [int(e["index"]) for e in excluded])], frac


def _mc_error_column(prov: dict, coords: list[str]) -> np.ndarray:
    rec = prov.get("combine_mc_error") or {}
    by_coord = dict(zip(rec.get("coords", []), rec.get("sd_units", []), strict=True))
    return np.array([by_coord.get(c, np.nan) for c in coords], dtype=float)


def diagnose(posterior: Any, *, bounds: dict[str, tuple[float, float]] | None = None,
             alpha: float = HETEROGENEITY_P_VALUE) -> DiagnosisReport:
    """Per-shard and cross-shard problems of a fitted :class:`~shardmc.core.posterior.Posterior`.

    bounds: optional (lower, upper) per constrained coordinate name for the bounds-aware CV
    (default: the model's support bounds recorded by ``fit``). alpha: family-wise level of
    the heterogeneity test.
    """
    draws = H.flat_shards(posterior.shard_draws)
    coords = list(posterior.coords)
    prov = posterior.provenance or {}
    k = draws.shape[0]
    labels = np.asarray(prov.get("shards_used") or list(range(k)))
    diag = posterior.diagnostics
    rates = diag["divergences"] / draws.shape[1]
    means, variances = draws.mean(axis=1), draws.var(axis=1, ddof=1)
    het = H.cochran_q(means, variances) if k > 1 else None
    sk, ku = H.shard_shape(draws)
    bimodal = H.shard_bimodality(draws)
    constrained = prov.get("shard_constrained")
    if constrained:
        cv_names, cv_means = constrained["coords"], np.asarray(constrained["means"])
        b = [(-np.inf if lo is None else lo, np.inf if hi is None else hi)
             for lo, hi in constrained["bounds"]]
    else:
        cv_names, cv_means, b = coords, means, [None] * len(coords)
    b = [(bounds or {}).get(n, lim) for n, lim in zip(cv_names, b, strict=True)]
    bounded = np.array([lim is not None and bool(np.all(np.isfinite(lim))) for lim in b])
    cv = H.bounds_aware_cv(cv_means, b) if k > 1 else np.zeros(len(cv_names))

    issues, failed = _exclusion_issues(prov)
    issues += _divergence_issues(rates, labels)
    issues += _convergence_issues(diag, labels, coords)
    if het is not None:
        het_issues = _heterogeneity_issues(het, means, coords, labels, alpha)
        issues += het_issues + _cv_issues(cv, cv_names, bounded,
                                          {p for i in het_issues for p in i.params})
    issues += _shape_issues(sk, ku, coords)
    issues += _per_param_shard_issue(bimodal, labels, coords, "bimodal", "bimodal",
                                     "the sub-posteriors have two modes and consensus averages "
                                     "them: check identifiability, or use method='bimodal' if "
                                     "shards land in different modes")
    issues += _combination_issues(prov, draws, labels)
    issues += _mc_error_issues(prov)
    issues += _refine_issues(prov)
    issues += time_origin_issues(prov, posterior.samples)
    issues.sort(key=lambda i: -SEVERITIES.index(i.severity))
    nan = np.full(len(coords), np.nan)
    params = pd.DataFrame({
        "q": het["q"] if het else nan, "p_value": het["p_value"] if het else nan,
        "i2": het["i2"] if het else nan, "median_skew": np.median(sk, axis=0),
        "median_excess_kurtosis": np.median(ku, axis=0),
        "bimodal_shards": bimodal.sum(axis=0),
        "combine_mc_error": _mc_error_column(prov, coords)}, index=coords)
    rhat = np.where(np.isfinite(diag["rhat"]), diag["rhat"], -np.inf).max(axis=1)
    shards = pd.DataFrame({
        "divergence_rate": rates, "max_rhat": np.where(np.isfinite(rhat), rhat, np.nan),
        "min_ess_bulk": diag["ess_bulk"].min(axis=1), "min_bfmi": np.nanmin(diag["bfmi"], axis=1),
    }, index=labels)
    return DiagnosisReport(issues, params, shards, failed,
                           pd.Series(cv, index=cv_names, name="bounds_aware_cv"))
