"""Failed and divergent shards: the run fails naming them (default), or they are excluded
and the survivors re-run with the prior re-tempered to 1/K' (DESIGN invariant 5)."""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import shardmc
from shardmc.backends import BackendCapabilities, SequentialBackend
from shardmc.errors import ShardFailedError, ShardMCInputError

K = 4
N = 40
NOISE_SD = 3.0
SMALL = {"num_chains": 2, "num_warmup": 200, "num_samples": 500, "adaptive_sampling": False,
         "max_attempts": 2}


def poisoned_normal_mean(y, poison):
    """y ~ N(mu, NOISE_SD^2), mu ~ N(0, 1); a point with poison = 1 has a NaN likelihood,
    so the shard holding it cannot be sampled (non-finite log density)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    scale = jnp.where(poison > 0, jnp.nan, NOISE_SD)
    numpyro.sample("y", dist.Normal(mu, scale), obs=y)


def exact_posterior(y: np.ndarray) -> tuple[float, float]:
    precision = 1.0 + y.size / NOISE_SD**2
    return float(y.sum() / NOISE_SD**2 / precision), float(precision**-0.5)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    poison = np.zeros(N)
    poison[25] = 1.0  # contiguous sharding: row 25 is in shard 2 (rows 20-29)
    return {"y": rng.normal(0.7, NOISE_SD, N), "poison": poison}


class RecordingBackend:
    """Sequential execution that records each spec's (index, prior_scale) and can mark one
    shard of the first pass divergent, as if it diverged on every retry."""

    capabilities = BackendCapabilities(name="recording")

    def __init__(self, divergent: int | None = None) -> None:
        self.calls: list[tuple[int, float]] = []
        self.divergent = divergent

    def map(self, fn, specs):
        for result, spec in zip(SequentialBackend().map(fn, specs_list := list(specs)),
                                specs_list, strict=True):
            self.calls.append((spec.index, spec.prior_scale))
            if spec.index == self.divergent and spec.prior_scale == 1.0 / K:
                result.status = "divergent"
                result.error = "divergence rate 18.0% above the threshold 10% after 2 attempts"
            yield result

    def close(self) -> None:
        pass


def test_failed_shard_fails_the_run_by_default_naming_it(data):
    with pytest.raises(ShardFailedError, match=r"1 of 4 shards failed:\n  shard 2: failed") as e:
        shardmc.fit(poisoned_normal_mean, data, K, sharding="contiguous", **SMALL)
    assert "on_shard_failure='exclude'" in str(e.value)


def test_failed_shard_is_excluded_and_prior_retempered(data):
    backend = RecordingBackend()
    post = shardmc.fit(poisoned_normal_mean, data, K, sharding="contiguous", backend=backend,
                       on_shard_failure="exclude", **SMALL)
    # first pass at 1/4, then the three survivors again at 1/3: exact for their data
    assert backend.calls == [(k, 1 / K) for k in range(K)] + [(k, 1 / 3) for k in (0, 1, 3)]
    prov = post.provenance
    assert prov["on_shard_failure"] == "exclude" and prov["prior_scale"] == 1 / 3
    assert prov["shards_used"] == [0, 1, 3]
    [record] = prov["excluded_shards"]
    assert record["index"] == 2 and record["status"] == "failed"
    assert post.num_shards == 3 and post.diagnostics["rhat"].shape[0] == 3
    # exact posterior given the survivors' data (prior N(0, 1) held once, not 3/4 times)
    keep = np.r_[0:20, 30:40]
    mean, sd = exact_posterior(data["y"][keep])
    mu = post.samples["mu"]
    # MC error: ~2000 combined draws, ESS >= ~500: mean to 5 sd / sqrt(500), sd to ~10 %
    assert abs(mu.mean() - mean) < 5 * sd / np.sqrt(500)
    assert abs(mu.std() / sd - 1) < 0.1
    report = post.diagnose()
    assert any(i.kind == "excluded" and i.shards == [2] for i in report.issues)
    assert report.failed_fraction == pytest.approx(0.25)


def test_divergent_shard_fails_or_is_excluded(data):
    clean = {"y": data["y"], "poison": np.zeros(N)}
    with pytest.raises(ShardFailedError, match=r"shard 1: divergent: divergence rate 18\.0%"):
        shardmc.fit(poisoned_normal_mean, clean, K, sharding="contiguous",
                    backend=RecordingBackend(divergent=1), **SMALL)
    backend = RecordingBackend(divergent=1)
    post = shardmc.fit(poisoned_normal_mean, clean, K, sharding="contiguous", backend=backend,
                       on_shard_failure="exclude", **SMALL)
    assert [c for c in backend.calls[K:]] == [(k, 1 / 3) for k in (0, 2, 3)]
    assert post.provenance["shards_used"] == [0, 2, 3]
    assert post.provenance["excluded_shards"][0]["status"] == "divergent"
    text = str(post.diagnose())
    assert "1 of 4 shards (25%) were excluded (shard 1: divergent)" in text


def test_exclusion_refuses_when_too_many_shards_fail(data):
    poison = np.zeros(N)
    poison[[10, 18, 26]] = 1.0  # 5 contiguous shards of 8: shards 1, 2, 3
    with pytest.raises(ShardFailedError, match="3 of 5 shards failed, more than the 50%"):
        shardmc.fit(poisoned_normal_mean, {"y": data["y"], "poison": poison}, 5,
                    sharding="contiguous", on_shard_failure="exclude", **SMALL)


def test_bad_policy_is_rejected_before_sampling(data):
    with pytest.raises(ShardMCInputError, match="on_shard_failure: expected one of"):
        shardmc.fit(poisoned_normal_mean, data, K, on_shard_failure="drop")


def _middle_two_poisoned(y: np.ndarray) -> dict[str, np.ndarray]:
    poison = np.zeros(N)
    poison[[15, 25]] = 1.0  # contiguous shards 1 and 2 of 4 (the probe traces 0 and 3)
    return {"y": y, "poison": poison}


def test_early_abort_stops_once_most_of_the_first_shards_failed(data):
    backend = RecordingBackend()
    done = []
    with pytest.raises(ShardFailedError) as e:
        shardmc.fit(poisoned_normal_mean, _middle_two_poisoned(data["y"]), K,
                    sharding="contiguous", backend=backend, on_shard_done=done.append, **SMALL)
    text = str(e.value)
    assert text.startswith("early abort: 2 of the first 3 shards to finish failed")
    assert "the other 1 shard(s) were not sampled" in text
    assert "shard 1: failed" in text and "shard 2: failed" in text
    assert "on_shard_failure='exclude'" in text and "early_abort=False" in text
    assert backend.calls == [(0, 1 / K), (1, 1 / K), (2, 1 / K)]  # shard 3 never started
    assert [r.index for r in done] == [0, 1, 2]  # the finished shards were handed over
    # the command line names the same remedies as config keys
    assert "--set run.on_shard_failure=exclude" in e.value.hint("cli")
    assert "--set run.early_abort=false" in e.value.hint("cli")


def test_without_early_abort_every_shard_runs_before_the_run_fails(data):
    backend = RecordingBackend()
    with pytest.raises(ShardFailedError, match=r"^2 of 4 shards failed:\n  shard 1: failed"):
        shardmc.fit(poisoned_normal_mean, _middle_two_poisoned(data["y"]), K,
                    sharding="contiguous", backend=backend, early_abort=False, **SMALL)
    assert [c[0] for c in backend.calls] == [0, 1, 2, 3]


def test_early_abort_is_off_when_failed_shards_are_excluded(data):
    backend = RecordingBackend()
    post = shardmc.fit(poisoned_normal_mean, _middle_two_poisoned(data["y"]), K,
                       sharding="contiguous", backend=backend, on_shard_failure="exclude",
                       **SMALL)
    assert [c[0] for c in backend.calls] == [0, 1, 2, 3, 0, 3]
    assert post.provenance["shards_used"] == [0, 3]
