"""The importance correction's multivariate t proposal: its log density from the Cholesky
factor equals scipy's where scipy accepts the covariance, and keeps working past the
condition number (~5e9) at which scipy calls a covariance singular."""

import numpy as np
import pytest
from scipy.stats import multivariate_t

from shardmc.core.refine import PROPOSAL_DF, _t_proposal, t_log_density


def test_t_log_density_equals_scipy_on_a_well_conditioned_covariance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    cov, center = a @ a.T + 0.5 * np.eye(4), rng.normal(size=4)
    x = rng.normal(size=(50, 4)) * 3
    ours = t_log_density(x, center, np.linalg.cholesky(cov), PROPOSAL_DF)
    ref = multivariate_t(loc=center, shape=cov, df=PROPOSAL_DF).logpdf(x)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_proposal_accepts_an_ill_conditioned_covariance():
    """Scales 1e-6 .. 1e3 (condition number 1e18 in variance): scipy refuses it; the t
    density of x equals the unit-scale density of x/s minus Σ log s."""
    scales = np.array([1e-6, 1.0, 1e3])
    cov, center = np.diag(scales**2), np.zeros(3)
    with pytest.raises(np.linalg.LinAlgError):
        multivariate_t(loc=center, shape=cov, df=PROPOSAL_DF)
    draws, log_q = _t_proposal(center, cov, 200, PROPOSAL_DF, np.random.default_rng(1))
    unit = multivariate_t(loc=center, shape=np.eye(3), df=PROPOSAL_DF).logpdf(draws / scales)
    np.testing.assert_allclose(log_q, unit - np.log(scales).sum(), rtol=1e-12)
    with pytest.raises(np.linalg.LinAlgError):  # truly singular: the caller decides
        _t_proposal(center, np.diag([1.0, 0.0, 1.0]), 10, PROPOSAL_DF,
                    np.random.default_rng(1))
