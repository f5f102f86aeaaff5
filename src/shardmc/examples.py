"""Small models and synthetic datasets with known answers, importable by worker processes.

Used by tests, benchmarks and docs. Every model is a top-level function (picklable).
"""

from __future__ import annotations

import numpy as np
import numpyro
import numpyro.distributions as dist

#: Prior sd of the regression coefficients and known noise sd of the conjugate model.
CONJUGATE_PRIOR_SD = 1.0
CONJUGATE_NOISE_SD = 1.0


def linear_regression_known_noise(x, y=None):
    """y ~ N(x @ beta, CONJUGATE_NOISE_SD^2), beta ~ N(0, CONJUGATE_PRIOR_SD^2 I)."""
    d = x.shape[-1]
    beta = numpyro.sample("beta", dist.Normal(0.0, CONJUGATE_PRIOR_SD).expand([d]).to_event(1))
    numpyro.sample("y", dist.Normal(x @ beta, CONJUGATE_NOISE_SD), obs=y)


def conjugate_posterior(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact posterior (mean, covariance) of :func:`linear_regression_known_noise`."""
    d = x.shape[1]
    precision = np.eye(d) / CONJUGATE_PRIOR_SD**2 + x.T @ x / CONJUGATE_NOISE_SD**2
    cov = np.linalg.inv(precision)
    return cov @ (x.T @ y) / CONJUGATE_NOISE_SD**2, cov


def linear_regression_data(num_points: int, num_features: int, seed: int = 0,
                           correlation: float = 0.3) -> dict[str, np.ndarray]:
    """Correlated Gaussian features and y from :func:`linear_regression_known_noise`."""
    rng = np.random.default_rng(seed)
    cov = np.full((num_features, num_features), correlation) + (1 - correlation) * np.eye(
        num_features)
    # Cholesky: unique for a positive-definite cov, so the data are the same on every
    # CPU (the default SVD's eigenvectors of an equicorrelation are not unique).
    x = rng.multivariate_normal(np.zeros(num_features), cov, size=num_points, method="cholesky")
    beta = rng.normal(0.0, CONJUGATE_PRIOR_SD, size=num_features)
    y = x @ beta + rng.normal(0.0, CONJUGATE_NOISE_SD, size=num_points)
    return {"x": x, "y": y}


def logistic_regression(x, y=None):
    """Bernoulli-logit regression with intercept; N(0, 2.5^2) priors."""
    d = x.shape[-1]
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 2.5))
    beta = numpyro.sample("beta", dist.Normal(0.0, 2.5).expand([d]).to_event(1))
    numpyro.sample("y", dist.Bernoulli(logits=alpha + x @ beta), obs=y)


def logistic_regression_data(num_points: int, num_features: int,
                             seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_points, num_features))
    beta = rng.normal(0.0, 0.5, size=num_features)
    p = 1.0 / (1.0 + np.exp(-(0.3 + x @ beta)))
    return {"x": x, "y": (rng.uniform(size=num_points) < p).astype(np.float64)}


def normal_scale(y):
    """y ~ N(0, sigma^2), sigma ~ HalfNormal(1): a positive, skewed posterior."""
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(0.0, sigma), obs=y)


def normal_scale_posterior_grid(y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Exact (normalised on ``grid``) posterior density of sigma in :func:`normal_scale`."""
    n, ss = y.size, float(np.sum(y**2))
    logp = -0.5 * grid**2 - n * np.log(grid) - 0.5 * ss / grid**2
    p = np.exp(logp - logp.max())
    return p / np.trapezoid(p, grid)
