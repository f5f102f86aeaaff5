"""The run configuration schema: frozen pydantic models, unknown keys refused everywhere.

Each field's ``description`` is the comment the template (:mod:`shardmc.config.template`)
writes beside it, so it states meaning, units and allowed values. Checks that need more
than one field (priors against the physics, frame range, init strategy against the warm
start, combine options against the method) are model validators here; checks that need
the data (noise ``known`` needs sigma, num_shards against the number of points) run in
:func:`shardmc.config.build.build_run`.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shardmc.combine import COMBINERS
from shardmc.combine.covariance import SHRINKAGE_OPTIONS
from shardmc.config.backends import AutoBackendConfig, BackendConfig
from shardmc.config.errors import expected_phrase, found, key_text
from shardmc.config.types import (
    Bool,
    Count,
    NonNegInt,
    Number,
    Positive,
    Section,
    config_error,
)
from shardmc.core.exclusion import SHARD_FAILURE_POLICIES
from shardmc.core.input_checks import COMBINE_SPACES
from shardmc.core.sampling import CHAIN_METHODS, INIT_MASS, INIT_STRATEGIES, SamplerConfig
from shardmc.core.sharding import SHARDING_STRATEGIES
from shardmc.errors import ShardMCInputError
from shardmc.xpcs.loaders import DEFAULT_PHI_TOL, DEFAULT_Q_RTOL, TIME_ORIGINS
from shardmc.xpcs.models import LIKELIHOODS, NOISE_MODES, PARAMETERIZATIONS, PER_ANGLE_MODES
from shardmc.xpcs.parameters import PRIOR_KINDS, resolve_priors
from shardmc.xpcs.physics import (
    DEFAULT_DT,
    DEFAULT_GAP,
    DEFAULT_Q,
    PHYSICS_MODELS,
    SHEAR_CONVENTIONS,
)

#: File extensions ``data.format: auto`` reads as HDF5 (layout detected from the datasets).
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
NPZ_SUFFIXES = (".npz",)
DATA_FORMATS = ("auto", "aps_u", "aps_old", "npz")
#: Physical limits a prior override may not cross (the table's bounds are only defaults):
#: name -> (lowest lower, highest upper, lower must be strictly above the limit).
PRIOR_HARD_LIMITS: dict[str, tuple[float, float, bool]] = {
    "contrast": (0.0, 1.0, False),
    "f0": (0.0, 1.0, False),
    "f3": (0.0, 1.0, False),
    "sigma": (0.0, float("inf"), True),
}
#: XPCS sampling defaults that differ from :class:`SamplerConfig` (docs/xpcs.md: with the
#: warm start's fixed Laplace mass matrix 200 warmup steps sufficed; demo.DEMO_SAMPLER).
XPCS_SAMPLER_DEFAULTS = {"num_warmup": 200, "num_samples": 1000}
_SAMPLER = SamplerConfig()


# -- data ---------------------------------------------------------------------------------
def data_kind(file: str | Path, fmt: str) -> str | None:
    """"hdf5" or "npz" from ``format`` (or, for "auto", the extension); None if unknown."""
    if fmt != "auto":
        return "npz" if fmt == "npz" else "hdf5"
    suffix = Path(str(file)).suffix.lower()
    return "npz" if suffix in NPZ_SUFFIXES else "hdf5" if suffix in HDF5_SUFFIXES else None


class DataConfig(Section):
    file: Path = Field(description="two-time data file (required): .h5/.hdf5/.hdf (APS-U or "
                       "APS-old HDF5) or .npz; a relative path resolves against the config "
                       "file's folder")
    format: Literal[DATA_FORMATS] = Field("auto", description="file layout; auto: from the "
                                          "extension, HDF5 layout from its datasets")
    q: Positive = Field(DEFAULT_Q, description="wavevector (Å⁻¹); the nearest q bin is used")
    q_tolerance: Positive = Field(DEFAULT_Q_RTOL, description="relative tolerance on q "
                                  "(0.1 = the nearest bin must lie within 10 %)")
    phi: list[Number] | None = Field(None, min_length=1, description="angles to keep "
                                     "(degrees), e.g. [0, 45]; null: all, sorted")
    phi_tolerance: Annotated[Number, Field(ge=0)] = Field(
        DEFAULT_PHI_TOL, description="tolerance (degrees) when matching data.phi")
    start_frame: Count = Field(1, description="first frame kept (1-based, inclusive)")
    end_frame: Count | None = Field(None, description="last frame kept (1-based, "
                                    "inclusive); null: the last frame")
    time_origin: Literal[TIME_ORIGINS] = Field("start", description="with t0 null: t = 0 at "
                                               "the first kept frame (start) or the file's "
                                               "(file)")
    t0: Annotated[Number, Field(ge=0)] | None = Field(
        None, description="time (s) of the first kept frame since the time origin (start of "
        "aging, quench): frame k at t0 + (k - start_frame)·dt; null: set by time_origin "
        "(start: 0); docs/xpcs.md")
    dt: Positive | None = Field(None, description="frame time (s); HDF5 default 0.1, NPZ: "
                                "the file's (null)")
    gap: Positive | None = Field(None, description="rheometer gap h (Å); HDF5 default "
                                 "2e6, NPZ: the file's (null)")

    @model_validator(mode="before")
    @classmethod
    def _hdf5_defaults(cls, raw: Any) -> Any:
        """HDF5 files store no dt or gap: fill in the defaults so the resolved config shows them."""
        if isinstance(raw, dict):
            fmt, file = raw.get("format", "auto"), raw.get("file", "")
            if isinstance(fmt, str) and isinstance(file, str | Path) \
                    and data_kind(file, fmt) == "hdf5":
                defaults = {"dt": DEFAULT_DT, "gap": DEFAULT_GAP}
                raw = {**raw, **{k: v for k, v in defaults.items() if raw.get(k) is None}}
        return raw

    @field_validator("file")
    @classmethod
    def _resolve_and_check_file(cls, value: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        path = value.expanduser()
        if not path.is_absolute():
            path = Path(base or ".") / path
        path = path.absolute()
        if not path.is_file():
            what = "a folder" if path.is_dir() else "missing"
            raise config_error("", f"expected an existing data file, found {str(path)!r} ({what})")
        return path

    @field_validator("phi")
    @classmethod
    def _distinct_angles(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and len(set(value)) != len(value):
            dup = sorted({a for a in value if value.count(a) > 1})
            raise config_error("", f"expected distinct angles, found duplicate(s) {dup} in {value}")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> DataConfig:
        if data_kind(self.file, self.format) is None:
            raise config_error("format", f"expected 'aps_u', 'aps_old' or 'npz' for "
                               f"{self.file.name!r} (auto knows the extensions "
                               f"{', '.join(HDF5_SUFFIXES + NPZ_SUFFIXES)}), found 'auto'")
        if self.end_frame is not None and self.end_frame <= self.start_frame:
            raise config_error("end_frame", f"expected end_frame > start_frame "
                               f"({self.start_frame}), found {self.end_frame}")
        if self.t0 is not None and self.time_origin == "file":
            raise config_error("t0", f"expected null with time_origin 'file' (which places the "
                               f"frames itself), or time_origin 'start'; found t0 = {self.t0}")
        return self

    @property
    def kind(self) -> str:
        """"hdf5" or "npz"."""
        return data_kind(self.file, self.format) or "hdf5"


# -- model ----------------------------------------------------------------------------------
def _bounds_pair(value: Any) -> Any:
    """``[lower, upper]`` shorthand of a prior override -> mapping."""
    if isinstance(value, list | tuple) and len(value) == 2:
        return {"lower": value[0], "upper": value[1]}
    return value


class PriorOverride(Section):
    kind: Literal[PRIOR_KINDS] | None = Field(None, description="prior kind; null: the "
                                              "table's")
    lower: Number | None = Field(None, description="lower bound (physical units)")
    upper: Number | None = Field(None, description="upper bound (physical units)")
    loc: Number | None = Field(None, description="truncated_normal: mean; log_normal: median")
    scale: Number | None = Field(None, description="truncated_normal: sd; log_normal: sd of "
                                 "log(value)")


PriorEntry = Annotated[PriorOverride, BeforeValidator(_bounds_pair)]


def _check_hard_limits(name: str, lower: float, upper: float) -> None:
    if name not in PRIOR_HARD_LIMITS:
        return
    lo, hi, strict = PRIOR_HARD_LIMITS[name]
    bad_lower = lower <= lo if strict else lower < lo
    if bad_lower or upper > hi:
        op = ">" if strict else ">="
        raise config_error(f"priors.{name}", f"expected bounds inside the physical limits "
                           f"(lower {op} {lo}, upper <= {hi}), found [{lower}, {upper}]")


class ModelConfig(Section):
    physics: Literal[PHYSICS_MODELS] = Field(description="model of c2 (required)")
    per_angle_mode: Literal[PER_ANGLE_MODES] = Field(
        "individual", description="contrast/offset: sampled per angle (individual), one "
        "shared pair with >= 3 angles (auto), fixed from data quantiles (constant modes)")
    noise: Literal[NOISE_MODES] = Field("sampled", description="per-angle sigma sampled, "
                                        "or known (the data file must hold sigma)")
    shear_convention: Literal[SHEAR_CONVENTIONS] = Field(
        "published", description="laminar_flow shear factor: published sinc², or reference "
        "(homodyne 2.x compatibility)")
    parameterization: Literal[PARAMETERIZATIONS] = Field(
        "rates", description="power-law blocks sampled in rate coordinates (rates), or each "
        "parameter as its own site (physical); docs/xpcs.md")
    likelihood: Literal[LIKELIHOODS] = Field(
        "rows", description="data layout: dense frame rows with structured kernels (rows), "
        "or pooled points (points); docs/xpcs.md")
    priors: dict[str, PriorEntry] = Field(default_factory=dict, description="overrides by "
                                          "parameter name: {kind, lower, upper, loc, scale} "
                                          "or [lower, upper]")

    @model_validator(mode="after")
    def _check_priors(self) -> ModelConfig:
        """Every override resolves against the parameter table (parameters.resolve_priors)."""
        known = [p.name for p in resolve_priors(self.physics)]
        for name, override in self.priors.items():
            if name not in known:
                raise config_error(f"priors.{key_text(name)}", f"expected a parameter of physics "
                                   f"{self.physics!r} (one of {', '.join(known)}), found "
                                   f"{name!r}")
            fields = override.model_dump(exclude_none=True)
            try:
                spec = resolve_priors(self.physics, {name: fields})
            except ShardMCInputError as exc:
                text = str(exc).split(": ", 1)[-1]
                raise config_error(f"priors.{name}", text) from None
            prior = next(p for p in spec if p.name == name)
            _check_hard_limits(name, prior.lower, prior.upper)
        return self

    def prior_overrides(self) -> dict[str, dict[str, Any]]:
        """The overrides in parameters.resolve_priors format."""
        return {k: v.model_dump(exclude_none=True) for k, v in self.priors.items()}


# -- sharding, sampling, combination --------------------------------------------------------
class ShardingConfig(Section):
    num_shards: Count = Field(8, description="number of shards K (>= 1)")
    method: Literal[SHARDING_STRATEGIES] = Field(
        "stratified", description="assignment of frame rows (or points): stratified gives "
        "every shard a random share of every angle's rows (docs/xpcs.md)")


class SamplingConfig(Section):
    num_warmup: NonNegInt = Field(XPCS_SAMPLER_DEFAULTS["num_warmup"],
                                  description="NUTS warmup steps per chain")
    num_samples: Count = Field(XPCS_SAMPLER_DEFAULTS["num_samples"],
                               description="draws kept per chain")
    num_chains: Count = Field(_SAMPLER.num_chains, description="chains per shard")
    adaptive_sampling: Bool = Field(_SAMPLER.adaptive_sampling, description="scale warmup "
                                    "and draws down for small shards")
    min_warmup: NonNegInt = Field(_SAMPLER.min_warmup, description="adaptive floor of warmup")
    min_samples: Count = Field(_SAMPLER.min_samples, description="adaptive floor of draws")
    target_accept_prob: Annotated[Number, Field(gt=0, lt=1)] = Field(
        _SAMPLER.target_accept_prob, description="NUTS step-size target, in (0, 1)")
    max_tree_depth: Count = Field(_SAMPLER.max_tree_depth, description="NUTS tree depth cap")
    dense_mass: Bool = Field(_SAMPLER.dense_mass, description="dense (true) or diagonal mass "
                             "matrix")
    init_strategy: Literal[INIT_STRATEGIES] | None = Field(
        None, description="chain start; null: value (the warm start) when warm_start is "
        "true, else median")
    init_mass: Literal[INIT_MASS] = Field(_SAMPLER.init_mass, description="initial inverse "
                                          "mass matrix: the Hessian at the start (Laplace) "
                                          "or identity")
    adapt_mass_matrix: Bool | None = Field(
        None, description="adapt the mass matrix in warmup (it starts from init_mass); "
        "null: true, except false for model.parameterization physical with warm_start "
        "(docs/xpcs.md)")
    chain_method: Literal[CHAIN_METHODS] = Field(_SAMPLER.chain_method,
                                                 description="chains one after another or "
                                                 "vectorized")
    max_attempts: Count = Field(_SAMPLER.max_attempts, description="tries per shard "
                                "(retries raise target_accept_prob)")
    divergence_threshold: Annotated[Number, Field(ge=0, le=1)] = Field(
        _SAMPLER.divergence_threshold, description="divergence rate above which a shard is "
        "retried, in [0, 1]")
    laplace_target: Bool = Field(_SAMPLER.laplace_target, description="compute each "
                                 "shard's Laplace precision (Hessian at its posterior mean) "
                                 "as the consensus weights' shrinkage target")
    warm_start: Bool = Field(True, description="least-squares warm start initialises NUTS "
                             "(init_strategy value)")

    @model_validator(mode="before")
    @classmethod
    def _warm_start_defaults(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            warm = raw.get("warm_start", True)
            if isinstance(warm, bool):
                raw = {**raw}
                if raw.get("init_strategy") is None:
                    raw["init_strategy"] = "value" if warm else _SAMPLER.init_strategy
        return raw

    @model_validator(mode="after")
    def _value_needs_warm_start(self) -> SamplingConfig:
        if self.init_strategy == "value" and not self.warm_start:
            raise config_error("init_strategy", "expected 'median' or 'sample' without a "
                               "warm start (the values come from it), found 'value' with "
                               "warm_start false")
        return self

    def sampler_config(self) -> SamplerConfig:
        """The engine's :class:`SamplerConfig` (every field but warm_start; an unresolved
        adapt_mass_matrix is the engine's default)."""
        names = {f.name for f in dataclasses.fields(SamplerConfig)}
        return SamplerConfig(**{k: v for k, v in self.model_dump().items()
                                if k in names and v is not None})


#: Types of the combiners' keyword options (checked before sampling; an option a new
#: combiner adds and this table lacks is passed through unchecked).
COMBINE_OPTION_TYPES: dict[str, Any] = {
    "diagonal": Bool,
    "rescale": Bool,
    "shrinkage": Literal[SHRINKAGE_OPTIONS],
    "shard_weights": Annotated[list[Annotated[Number, Field(ge=0)]], Field(min_length=1)],
    "num_draws": Count | None,
    "threshold": Positive | None,
    "chunk_size": Count,
    "bandwidth": Positive | None,
    "num_chains": Count,
    "burn_in": NonNegInt,
    "thin": Count,
}
#: Options the engine sets itself (``seed`` comes from run.seed).
COMBINE_RESERVED_OPTIONS = ("seed",)


@cache
def _option_adapter(name: str) -> TypeAdapter:
    return TypeAdapter(COMBINE_OPTION_TYPES[name])


def _check_option_value(name: str, value: Any) -> None:
    if name in COMBINE_RESERVED_OPTIONS:
        raise config_error(f"options.{name}", f"expected no {name!r} option (the run's "
                           f"seed, run.seed, is used), found {found(value)}")
    if name not in COMBINE_OPTION_TYPES:
        return
    try:
        _option_adapter(name).validate_python(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise config_error(f"options.{name}", f"expected {expected_phrase(err, None)}, found "
                           f"{found(err.get('input'))}") from None


#: XPCS combiner of :mod:`shardmc.xpcs.rates` (consensus in rate space) for
#: model.parameterization physical, where plain consensus comes out ~2x too narrow on static
#: / laminar_flow shards (docs/xpcs.md). Under "rates" the sampled coordinates already are
#: rate coordinates and plain consensus (the default) combines there.
RATE_SPACE_METHOD = "rate_space_consensus"
#: Options of RATE_SPACE_METHOD (passed to its consensus step).
RATE_SPACE_OPTIONS = ("shrinkage",)


class CombineConfig(Section):
    method: Literal[(RATE_SPACE_METHOD, *COMBINERS)] = Field(
        "consensus", description="how shard draws are combined: a generic combiner, or "
        "rate_space_consensus (XPCS power-law rates, then consensus; model.parameterization "
        "physical only)")
    space: Literal[COMBINE_SPACES] = Field("unconstrained", description="space the draws "
                                           "are combined in")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword options of "
                                    "the method (see docs/combining.md)")
    importance_refine: Bool = Field(True, description="correct the combined posterior by "
                                    "importance sampling on the full data (Pareto-smoothed; "
                                    "one likelihood evaluation per draw, in the driver); kept "
                                    "only when its Pareto k-hat is below 0.7")

    @model_validator(mode="after")
    def _known_options(self) -> CombineConfig:
        from shardmc.combine import ENGINE_OPTIONS, option_names

        if self.method == RATE_SPACE_METHOD and self.space != "unconstrained":
            raise config_error("space", f"expected 'unconstrained' with method "
                               f"{RATE_SPACE_METHOD!r}, found {self.space!r}")
        allowed = (RATE_SPACE_OPTIONS if self.method == RATE_SPACE_METHOD
                   else [n for n in option_names(self.method) if n not in ENGINE_OPTIONS])
        for key in self.options:
            if key not in allowed:
                raise config_error(f"options.{key_text(key)}", f"expected an option of method "
                                   f"{self.method!r} (one of {', '.join(allowed) or 'none'}), "
                                   f"found {key!r}")
            _check_option_value(key, self.options[key])
        return self


class RunSection(Section):
    seed: NonNegInt = Field(0, description="seed of the whole run (shard k uses "
                            "fold_in(seed, k))")
    on_shard_failure: Literal[SHARD_FAILURE_POLICIES] = Field(
        "fail", description="a failed shard fails the run, or is excluded and the prior "
        "re-tempered")
    early_abort: Bool = Field(True, description="with fail: stop once most of the first "
                              "shards failed or diverged at the critical rate")
    progress: Bool = Field(True, description="show a progress bar")


# -- the whole run --------------------------------------------------------------------------
class RunConfig(Section):
    """One run: data, model, sharding, sampling plan, combination, backend, run options."""

    data: DataConfig
    model: ModelConfig
    sharding: ShardingConfig = Field(default_factory=ShardingConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    combine: CombineConfig = Field(default_factory=CombineConfig)
    backend: BackendConfig = Field(default_factory=AutoBackendConfig)
    run: RunSection = Field(default_factory=RunSection)

    @model_validator(mode="before")
    @classmethod
    def _backend_name_default(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("backend"), dict) \
                and "name" not in raw["backend"]:
            raw = {**raw, "backend": {"name": "auto", **raw["backend"]}}
        return raw

    @model_validator(mode="before")
    @classmethod
    def _adapt_mass_default(cls, raw: Any) -> Any:
        """sampling.adapt_mass_matrix null: false for a physical parameterisation started
        from the warm start (its fixed Laplace mass matrix), true otherwise (docs/xpcs.md)."""
        if not isinstance(raw, dict):
            return raw
        model, sampling = raw.get("model"), raw.get("sampling", {})
        if isinstance(model, dict) and isinstance(sampling, dict) \
                and sampling.get("adapt_mass_matrix") is None:
            physical = model.get("parameterization", "rates") == "physical"
            warm = sampling.get("warm_start", True) is True
            raw = {**raw, "sampling": {**sampling,
                                       "adapt_mass_matrix": not (physical and warm)}}
        return raw

    @model_validator(mode="after")
    def _rate_space_needs_physical(self) -> RunConfig:
        if self.combine.method == RATE_SPACE_METHOD \
                and self.model.parameterization != "physical":
            raise config_error("combine.method", f"expected a generic combiner with "
                               f"model.parameterization {self.model.parameterization!r} (its "
                               f"blocks are sampled in rate coordinates already), found "
                               f"{RATE_SPACE_METHOD!r}")
        return self

    @model_validator(mode="after")
    def _weights_per_shard(self) -> RunConfig:
        weights = self.combine.options.get("shard_weights")
        k = self.sharding.num_shards
        if weights is not None and len(weights) != k:
            raise config_error("combine.options.shard_weights", f"expected {k} weights (one "
                               f"per shard, sharding.num_shards), found {len(weights)}")
        return self
