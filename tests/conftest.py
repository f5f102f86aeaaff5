"""Test-wide setup: float64 JAX (what shardmc.fit and the CLI use), and compiled programs
dropped after each test module.

Every XLA:CPU executable keeps memory mappings while its jit cache holds it; the whole
suite in one process compiles thousands of programs and passed Linux's default
``vm.max_map_count`` (65 530), where XLA's compiler then aborts (SIGABRT/SIGSEGV in
``backend_compile_and_load``). Measured: ``tests/unit`` alone ends at ~23 700 mappings.
"""

import gc

import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    yield
    jax.clear_caches()
    gc.collect()
