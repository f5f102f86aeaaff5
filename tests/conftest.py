"""Test-wide setup: float64 JAX (what shardmc.fit and the CLI use), a persistent
compilation cache for the session, and compiled programs dropped after each test module.

The suite compiles the same programs in many tests (each fit re-traces its closures);
with a session cache folder XLA compiles each of them once and later tests load it, as
the ``shardmc`` command does across runs (``shardmc.backends.cache.driver_cache_dir``).

Every XLA:CPU executable keeps memory mappings while its jit cache holds it; the whole
suite in one process compiles thousands of programs and passed Linux's default
``vm.max_map_count`` (65 530), where XLA's compiler then aborts (SIGABRT/SIGSEGV in
``backend_compile_and_load``). Measured: ``tests/unit`` alone ends at ~23 700 mappings.
"""

import gc
import os
import tempfile

import jax
import pytest

jax.config.update("jax_enable_x64", True)

#: Set by the first process of a session (the xdist controller) for its workers.
SESSION_CACHE_ENV = "SHARDMC_SESSION_CACHE"


def pytest_configure(config):
    """One cache folder per test session (``SHARDMC_TEST_CACHE`` keeps one across runs);
    xdist workers and ``shardmc`` subprocesses share it through the environment."""
    folder = (os.environ.get("SHARDMC_TEST_CACHE") or os.environ.get(SESSION_CACHE_ENV)
              or tempfile.mkdtemp(prefix="shardmc-xla-"))
    os.environ[SESSION_CACHE_ENV] = folder
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    jax.config.update("jax_compilation_cache_dir", folder)
    # every program, as the shardmc command caches them (not only those taking >= 1 s)
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_collection_modifyitems(config, items):
    """Files holding ``slow`` tests run first, the rest in their usual order: the test
    command hands whole files to two xdist workers (``--dist loadfile``), and starting
    the longest first keeps one long file from running alone at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    yield
    jax.clear_caches()
    gc.collect()
