"""shardmc: Consensus Monte Carlo for large-data Bayesian inference on JAX and NumPyro.

Importing the package has no side effects: it sets no environment variable and no JAX
configuration. Call :func:`shardmc.enable_x64` (or use the CLI) to run in float64.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "fit": "shardmc.core.engine",
    "importance_refine": "shardmc.core.refine",
    "load": "shardmc.core.posterior",
    "Posterior": "shardmc.core.posterior",
    "SamplerConfig": "shardmc.core.sampling",
    "SamplingPlan": "shardmc.core.sampling",
    "SamplingStats": "shardmc.core.sampling",
    "select_backend": "shardmc.backends",
    "BackendCapabilities": "shardmc.backends",
    "ShardMCInputError": "shardmc.errors",
    "ShardFailedError": "shardmc.errors",
    "enable_x64": "shardmc.runtime",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'shardmc' has no attribute {name!r}")
