"""Cross-shard statistics and the plain-language report of ``Posterior.diagnose()``."""

import numpy as np
import pytest

from shardmc.core import heterogeneity as H
from shardmc.core.posterior import Posterior

K, C, S = 40, 2, 500


def make_posterior(draws: np.ndarray, divergences=None, coords=None, provenance=None):
    """A Posterior around synthetic shard draws (K, C, S, d) with healthy diagnostics."""
    k, c, _, d = draws.shape
    diag = {"rhat": np.ones((k, d)), "ess_bulk": np.full((k, d), 800.0),
            "ess_tail": np.full((k, d), 800.0), "bfmi": np.ones((k, c)),
            "divergences": np.zeros(k, dtype=int) if divergences is None else divergences,
            "tree_depth_saturation": np.zeros(k)}
    flat = draws.reshape(-1, d)
    return Posterior(samples={"x": flat}, unconstrained=flat,
                     coords=coords or [f"x[{j}]" for j in range(d)], shard_draws=draws,
                     shard_stats={}, diagnostics=diag, provenance=provenance or {})


def homogeneous(seed: int, k: int = K, d: int = 2) -> np.ndarray:
    """CMC-like shards: sub-posteriors N(m_k, 1), shard means m_k ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(k, 1, 1, d))
    return means + rng.normal(size=(k, C, S, d))


def test_cochran_q_calibrated_and_sensitive():
    """Homogeneous shards: Q ~ chi2(K - 1), so p-values are roughly uniform; shards whose
    means scatter 3x their width give p ~ 0 and I2 near 1 - 1/9."""
    p = []
    for seed in range(30):
        x = H.flat_shards(homogeneous(seed))
        p.append(H.cochran_q(x.mean(1), x.var(1, ddof=1))["p_value"])
    p = np.concatenate(p)
    assert 0.3 < p.mean() < 0.7 and (p < 0.01).mean() < 0.05
    rng = np.random.default_rng(1)
    x = 3.0 * rng.normal(size=(K, 1, 1)) + rng.normal(size=(K, S, 1))
    het = H.cochran_q(x.mean(1), x.var(1, ddof=1))
    assert het["p_value"][0] < 1e-10 and het["i2"][0] == pytest.approx(1 - 1 / 9, abs=0.1)
    assert het["df"][0] == K - 1


def test_bounds_aware_cv_uses_the_bound_range_near_zero():
    means = np.array([[1e-3, 10.0], [2e-3, 11.0], [3e-3, 12.0]])
    raw = H.bounds_aware_cv(means)
    assert raw[0] == pytest.approx(0.5) and raw[1] == pytest.approx(1 / 11)
    aware = H.bounds_aware_cv(means, [(0.0, 0.5), None])
    assert aware[0] == pytest.approx(1e-3 / (0.01 * 0.5)) and aware[1] == raw[1]


def test_shape_and_mode_detection():
    rng = np.random.default_rng(2)
    normal = rng.normal(size=(3, 4000, 1))
    skewed = rng.gamma(2.0, size=(3, 4000, 1))
    sk, ku = H.shard_shape(np.concatenate([normal, skewed]))
    assert np.all(np.abs(sk[:3]) < 0.2) and np.all(sk[3:] > 1.0)  # gamma(2): skew sqrt(2)
    assert np.all(ku[3:] > 2.0)  # excess kurtosis 3
    two = np.where(rng.uniform(size=4000) < 0.4, 4.0, 0.0) + rng.normal(size=4000)
    assert H.count_modes(two) == 2 and H.count_modes(normal[0, :, 0]) == 1
    assert H.count_modes(skewed[0, :, 0]) == 1


def test_diagnose_healthy_run_reports_nothing():
    report = make_posterior(homogeneous(3)).diagnose()
    assert report.ok and report.issues == [], str(report)
    assert list(report.parameters.index) == ["x[0]", "x[1]"]
    assert report.shards.shape[0] == K and report.failed_fraction == 0.0


def test_diagnose_names_divergent_shards_and_bimodal_parameters():
    rng = np.random.default_rng(4)
    draws = homogeneous(4)
    for k in range(6):  # D0 bimodal in 6 of 40 shards
        flip = rng.uniform(size=(C, S)) < 0.4
        draws[k, :, :, 0] = np.where(flip, 5.0, 0.0) + rng.normal(size=(C, S))
    div = np.zeros(K, dtype=int)
    div[7] = int(0.18 * C * S)
    report = make_posterior(draws, div, coords=["D0", "alpha"]).diagnose()
    text = str(report)
    assert "shard 7: 18% divergent transitions (above the 10% high level)" in text
    assert "D0: bimodal in 6 of 40 shards (shards 0, 1, 2, 3, 4, 5)" in text
    assert not report.ok
    assert int(report.parameters.loc["D0", "bimodal_shards"]) == 6


def test_diagnose_flags_heterogeneous_and_skewed_shards():
    rng = np.random.default_rng(5)
    k = 10
    draws = homogeneous(5, k=k, d=2)
    draws[:, :, :, 0] += 4.0 * rng.normal(size=(k, 1, 1))  # shard means disagree
    draws[:, :, :, 1] = rng.gamma(2.0, size=(k, C, S))  # skewed sub-posteriors
    kinds = {i.kind: i for i in make_posterior(draws).diagnose().issues}
    assert kinds["heterogeneity"].params == ["x[0]"]
    assert "shard means disagree beyond their own spread" in kinds["heterogeneity"].message
    assert kinds["gaussianity"].params == ["x[1]"]
    assert "importance_refine" in kinds["gaussianity"].message


def test_diagnose_reports_shards_split_into_modes():
    draws = homogeneous(6, k=20, d=1)
    draws[:6] += 8.0
    issues = make_posterior(draws).diagnose().issues
    modes = [i for i in issues if i.kind == "modes"]
    assert modes and modes[0].shards == [0, 1, 2, 3, 4, 5]
    assert "method='bimodal'" in modes[0].message


def test_constrained_bounds_feed_the_cv():
    draws = homogeneous(7, k=8, d=1)
    prov = {"shard_constrained": {"coords": ["gamma_dot"], "bounds": [[0.0, 0.5]],
                                  "means": (1e-3 * (1 + draws.mean((1, 2)))).tolist()}}
    report = make_posterior(draws, provenance=prov).diagnose()
    assert not [i for i in report.issues if i.kind == "cv"]  # 1 % of 0.5 is the scale
    assert report.cv["gamma_dot"] < 0.5
    narrow = {**prov["shard_constrained"], "bounds": [[0.0, 0.01]]}
    report = make_posterior(draws, provenance={"shard_constrained": narrow}).diagnose()
    [issue] = [i for i in report.issues if i.kind == "cv"]
    assert issue.params == ["gamma_dot"] and issue.severity == "info"  # Q finds no problem
    unbounded = {**prov["shard_constrained"], "bounds": [[0.0, None]]}
    report = make_posterior(draws, provenance={"shard_constrained": unbounded}).diagnose()
    assert not [i for i in report.issues if i.kind == "cv"] and report.cv["gamma_dot"] > 0.5
