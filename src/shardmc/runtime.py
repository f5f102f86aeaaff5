"""Process-level JAX settings, applied on request (never at import)."""

from __future__ import annotations


def enable_x64() -> None:
    """Run JAX in float64 (the physics and the combination need it)."""
    import jax

    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
