"""Test-wide setup: float64 JAX (what shardmc.fit and the CLI use)."""

import jax

jax.config.update("jax_enable_x64", True)
