"""Combiner accuracy against full-data answers; prints one JSON document.

Cases: (a) "gaussian": linear regression with correlated features and known noise
(d = 10, exact conjugate posterior); (b) "logistic": logistic regression, 200 000 rows,
10 features + intercept, K = 10 and 50, against full-data NUTS (numpyro MCMC); (c)
"skewed": normal scale (sigma > 0) with 5 points per shard, against the exact posterior
on a grid; (d) "xpcs": homodyne static against full-data NUTS (see :func:`xpcs_case`).

Each case is fitted once per K and data set (shardmc.fit, default combiner and, in full
mode, the default sampler settings); every combiner then recombines the same shard draws,
is constrained and compared with ``shardmc.accuracy.compare``. The skewed case averages
the metrics over replicate data sets ("passes" becomes the fraction that pass). The
default combination, corrected by importance sampling on the full data
(``shardmc.importance_refine``), is reported as "consensus+importance"; it is the
default of case (d), as ``shardmc run`` applies it to XPCS fits. Goal for the default on
(a), (b), (d): |standardised mean error| <= 0.1, SD ratio in [0.9, 1.1], marginal
accuracy >= 0.95, every parameter.

Usage: python benchmarks/accuracy.py [--quick] [--cases gaussian logistic skewed xpcs]
                                    [--no-refine]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import shardmc
from shardmc import examples as ex
from shardmc.accuracy import compare
from shardmc.combine import combine, option_names
from shardmc.core import params as P
from shardmc.core.refine import importance_refine

# benchmarks/dask.py would shadow the dask package (xarray imports it lazily): keep
# this script's folder off sys.path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(
    os.path.abspath(__file__))]

#: Reported name -> (combiner, options). "consensus_pooled" measures pooled shrinkage.
#: "consensus_sample_cov" is consensus weighted by the shards' sample covariances alone.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    name: (name, {}) for name in ("consensus", "gaussian", "robust_consensus",
                                  "simple_average", "hierarchical", "bimodal",
                                  "semiparametric", "swiss", "auto")}
METHODS["consensus_pooled"] = ("consensus", {"shrinkage": "pooled"})
METHODS["consensus_sample_cov"] = ("consensus", {"laplace": None})  # weights from draws
DEFAULT_METHOD = "consensus"
#: Reported name of the default combination corrected by importance sampling.
REFINED = "consensus+importance"
#: Replicate data sets of the skewed case (one data set is too noisy to rank combiners).
SKEWED_REPLICATES, SKEWED_REPLICATES_QUICK = 10, 5
#: Reference draws kept from exact answers.
REFERENCE_DRAWS = 20_000


Reference = Callable[[], tuple[dict[str, np.ndarray], str]]


@dataclass
class Case:
    """A problem: model, data sets (replicates) with their references (named constrained
    draws), shard counts and sampler settings."""

    name: str
    model: Callable
    datasets: list[dict[str, np.ndarray]]
    references: list[Reference]
    shard_counts: list[int]
    sampler: dict[str, Any]
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Model-aware combiners (name -> fit(method=...) function) measured besides METHODS.
    extra_methods: dict[str, Callable] = field(default_factory=dict)
    default_method: str = DEFAULT_METHOD


def gaussian_case(quick: bool) -> Case:
    n = 20_000 if quick else 100_000
    data = ex.linear_regression_data(n, 10, seed=1, correlation=0.9)

    def reference():
        mean, cov = ex.conjugate_posterior(data["x"], data["y"])
        rng = np.random.default_rng(0)
        return {"beta": rng.multivariate_normal(mean, cov, REFERENCE_DRAWS,
                                                         method="cholesky")}, "exact conjugate"

    return Case("gaussian", ex.linear_regression_known_noise, [data], [reference],
                [5] if quick else [10], _sampler(quick))


def logistic_case(quick: bool) -> Case:
    n = 20_000 if quick else 200_000
    data = ex.logistic_regression_data(n, 10, seed=2)

    def reference():
        import jax
        from numpyro.infer import MCMC, NUTS
        mcmc = MCMC(NUTS(ex.logistic_regression, dense_mass=True), num_warmup=500,
                    num_samples=1000 if quick else 1500, num_chains=2,
                    chain_method="sequential", progress_bar=False)
        mcmc.run(jax.random.PRNGKey(0), data["x"], data["y"])
        draws = {k: np.asarray(v) for k, v in mcmc.get_samples().items()}
        return draws, "full-data NUTS (numpyro, 2 chains, dense mass)"

    return Case("logistic", ex.logistic_regression, [data], [reference],
                [5, 10] if quick else [10, 50], _sampler(quick))


def _scale_reference(y: np.ndarray) -> Reference:
    def reference():
        grid = np.linspace(1e-3, 4.0, 40_001)
        cdf = np.cumsum(ex.normal_scale_posterior_grid(y, grid))
        u = np.random.default_rng(0).uniform(size=REFERENCE_DRAWS)
        return {"sigma": np.interp(u, cdf / cdf[-1], grid)}, "exact (grid)"

    return reference


def skewed_case(quick: bool) -> Case:
    k, per_shard = 10, 5
    reps = SKEWED_REPLICATES_QUICK if quick else SKEWED_REPLICATES
    ys = [np.random.default_rng(100 + r).normal(0.0, 1.0, k * per_shard) for r in range(reps)]
    return Case("skewed", ex.normal_scale, [{"y": y} for y in ys],
                [_scale_reference(y) for y in ys], [k], _sampler(quick))


def xpcs_case(quick: bool) -> Case:
    """(d) XPCS homodyne static (3 angles, synthetic c2) against full-data NUTS of the same
    model (shardmc, K = 1, 4 chains x 3000 draws), with the XPCS defaults: rate blocks,
    warm start, dense mass from the Laplace start adapted in whitened coordinates."""
    from shardmc import xpcs

    data, _ = xpcs.simulate("static", n_angles=3, n_t=40 if quick else 60, seed=3)
    model = xpcs.XPCSModel.create("static", data.n_phi)
    points, kwargs = xpcs.prepare(model, data)
    start = xpcs.warm_start(model, data, seed=0)
    sampler = {"num_chains": 2, "num_warmup": 300, "num_samples": 1000,
               "adaptive_sampling": False, "init_strategy": "value",
               "init_values": start.init_values}

    def reference():
        post = shardmc.fit(model, points, 1, model_kwargs=kwargs, seed=1,
                           **{**sampler, "num_chains": 4, "num_warmup": 500,
                              "num_samples": 3000})
        names = model.parameter_names
        return ({n: post.samples[n] for n in names},
                "full-data NUTS (shardmc, K = 1, 4 x 3000 draws, rate blocks)")

    # The XPCS default is what `shardmc run` does: consensus, then the importance
    # correction on the full data (combine.importance_refine).
    return Case("xpcs_static", model, [points], [reference], [4] if quick else [8], sampler,
                model_kwargs=kwargs, default_method=REFINED)


CASES: dict[str, Callable[[bool], Case]] = {
    "gaussian": gaussian_case, "logistic": logistic_case, "skewed": skewed_case,
    "xpcs": xpcs_case,
}


def _sampler(quick: bool) -> dict[str, Any]:
    """Full: the library's default SamplerConfig (4 chains, 500 warmup, 1500 samples,
    adaptive counts for small shards). Quick: 2 chains, 300 + 1000, fixed."""
    if quick:
        return {"num_chains": 2, "num_warmup": 300, "num_samples": 1000,
                "adaptive_sampling": False}
    return {}


def _layout_of(model: Callable, data: dict[str, np.ndarray],
               model_kwargs: dict[str, Any]) -> P.ParamLayout:
    subset = {k: v[:16] for k, v in data.items()}
    return P.build_layout(P.trace_model(model, {**model_kwargs, **subset}))


def _layout(case: Case) -> P.ParamLayout:
    return _layout_of(case.model, case.datasets[0], case.model_kwargs)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _round(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


def _named(case: Case, layout: P.ParamLayout, draws: np.ndarray,
           ref: dict) -> dict[str, np.ndarray]:
    """Constrained draws by site, plus the deterministic sites the reference names (the
    XPCS physical parameters of rate blocks), recomputed as shardmc.fit does."""
    named = P.constrain(layout, draws)
    missing = tuple(n for n in ref if n not in named)
    subset = {k: v[:16] for k, v in case.datasets[0].items()}
    named.update(P.deterministic_values(case.model, {**case.model_kwargs, **subset}, missing,
                                        named))
    return named


def _combine_all(case: Case, shard_draws: np.ndarray, layout: P.ParamLayout, ref: dict,
                 methods: list[str], extra: dict[str, Callable],
                 laplace: np.ndarray | None) -> dict[str, dict[str, Any]]:
    """Every method on the same shard draws; those that take them get the shards' Laplace
    precisions, as ``shardmc.fit`` passes them (``consensus_sample_cov``: without)."""
    out = {}
    for name in [*methods, *extra]:
        t1 = time.perf_counter()
        if name in extra:
            draws, _ = extra[name](shard_draws, coords=layout.coordinate_names(), seed=0)
            chosen = {}
        else:
            method, options = METHODS[name]
            if "laplace" in option_names(method) and "laplace" not in options:
                options = {**options, "laplace": laplace}
            res = combine(shard_draws, method, seed=0, **options)
            draws, chosen = res.draws, ({"chosen": res.method} if method == "auto" else {})
        combine_s = time.perf_counter() - t1
        comp = compare(_named(case, layout, draws, ref), ref)
        out[name] = {**comp.worst(), "passes": float(comp.passes()), "combine_s": combine_s,
                     **chosen}
    return out


def _mean_over(replicates: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per method: the mean of each metric over replicates (``passes``: the fraction)."""
    out = {}
    for name, first in replicates[0].items():
        row = {}
        for key, value in first.items():
            vals = [r[name][key] for r in replicates]
            row[key] = (round(float(np.mean(vals)), 4) if isinstance(value, float)
                        else vals[0])
        out[name] = row
    return out


def _refined(case: Case, post: Any, data: dict[str, np.ndarray], ref: dict) -> dict[str, Any]:
    """The default combination corrected by importance sampling on the full data
    (:func:`shardmc.core.refine.importance_refine`), with its Pareto k-hat and ESS."""
    t1 = time.perf_counter()
    refined = importance_refine(post, case.model, data, model_kwargs=case.model_kwargs)
    comp = compare({n: refined.samples[n] for n in ref}, ref)
    info = refined.provenance["refine"]
    return {**comp.worst(), "passes": float(comp.passes()),
            "combine_s": time.perf_counter() - t1, "pareto_k": info["pareto_k"],
            "importance_ess": float(info["importance_ess"])}


def run_case(case: Case, methods: list[str], refine: bool = True) -> list[dict[str, Any]]:
    layout = _layout(case)
    t0 = time.perf_counter()
    refs = [reference() for reference in case.references]  # once per data set, for all K
    ref_s = time.perf_counter() - t0
    ref_kind = refs[0][1]
    rows = []
    for k in case.shard_counts:
        per_rep, fit_s, warnings, mc_errors = [], 0.0, [], []
        for data, (ref, _) in zip(case.datasets, refs, strict=True):
            t0 = time.perf_counter()
            post = shardmc.fit(case.model, data, k, seed=0, model_kwargs=case.model_kwargs,
                               method=DEFAULT_METHOD, **case.sampler)
            fit_s += time.perf_counter() - t0
            shard_draws = post.shard_draws.reshape(k, -1, post.shard_draws.shape[-1])
            per_rep.append(_combine_all(case, shard_draws, layout, ref, methods,
                                        case.extra_methods, post.shard_laplace))
            if refine:
                per_rep[-1][REFINED] = _refined(case, post, data, ref)
            warnings = post.diagnose().messages("warning")[:5]
            rec = post.provenance.get("combine_mc_error") or {}
            mc_errors.append(max(rec.get("sd_units") or [float("nan")]))
        _log(f"{case.name}: K = {k}: {len(case.datasets)} data set(s), fits {fit_s:.1f} s, "
             f"reference {ref_s:.1f} s")
        results = _mean_over(per_rep)
        rows.append({"case": case.name, "num_shards": k,
                     "num_points": int(next(iter(case.datasets[0].values())).shape[0]),
                     "replicates": len(case.datasets), "reference": ref_kind,
                     "reference_s": round(ref_s, 1), "fit_s": round(fit_s, 1),
                     "draws_per_shard": int(post.shard_draws.shape[1] * post.shard_draws.shape[2]),
                     "default_method": case.default_method,
                     "default_goal_met": results.get(case.default_method, {}).get("passes"),
                     "diagnose_warnings": warnings,
                     # jackknife MC error of the default combination (worst coordinate, sd)
                     "default_mc_error_max": round(float(np.mean(mc_errors)), 4),
                     "results": results})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller data sets and runs")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--no-refine", action="store_true",
                        help=f"skip the importance-corrected default ({REFINED})")
    parser.add_argument("--replicates", type=int, default=None,
                        help="data sets for the skewed case (default 10, quick 5)")
    args = parser.parse_args()
    shardmc.enable_x64()
    out: dict[str, Any] = {"benchmark": "accuracy", "quick": args.quick,
                           "goal": {"max_abs_std_mean_error": 0.1, "sd_ratio": [0.9, 1.1],
                                    "min_marginal_accuracy": 0.95},
                           "cases": [], "pending": {}}
    t0 = time.perf_counter()
    for name in args.cases:
        try:
            case = CASES[name](args.quick)
        except NotImplementedError as exc:
            out["pending"][name] = str(exc)
            continue
        if args.replicates and len(case.datasets) > 1:
            case.datasets = case.datasets[:args.replicates]
            case.references = case.references[:args.replicates]
        out["cases"].extend(run_case(case, list(args.methods), not args.no_refine))
    out["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
