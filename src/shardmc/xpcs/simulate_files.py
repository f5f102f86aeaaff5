"""``shardmc simulate``: a synthetic APS-U file, its truth and a config that fits it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from shardmc.errors import ShardMCInputError

#: File names written into the output folder.
DATA_FILE = "data.h5"
TRUTH_FILE = "data.truth.json"  # ``shardmc.workflow.runs.truth_path(DATA_FILE)``
CONFIG_FILE = "config.yaml"
#: The first simulated frame sits this many frame times after the time origin (the default
#: t0), as a detector's first exposure ends: no frame lies below the dt/2 rate floor, so no
#: fit of it depends on that floor (docs/xpcs.md, "Time origin").
SIMULATED_T0_FRAMES = 1
#: Sampler settings of the generated config (and the demo): four chains so that R-hat can
#: see a chain that wandered into a shard's heavy D0 tail, and warmup enough to adapt to
#: it. On the demo data (K = 4) 2 chains x 200 + 300 gave R-hat up to 1.015 on 3 of 4
#: shards; 4 x 250 + 500 left one at 1.013; 4 x 400 + 500 none (max 1.007, min bulk ESS
#: 620; docs/xpcs.md, "Demo, then and now").
SIMULATED_SAMPLING = {"num_chains": 4, "num_warmup": 400, "num_samples": 500}
#: The generated config's num_shards (when --shards is not given): as many shards as hold
#: SIMULATED_SHARD_POINTS points each, at least 1 and at most DEFAULT_SIMULATED_SHARDS.
#: Below it a static shard's sub-posterior of D0 runs into a heavy tail (up to the prior's
#: bound) that four chains do not mix in; measured over simulated seeds 0-3 with the
#: settings above: shards of 1 327 points warned R-hat > 1.01 on 3 of 4 seeds, 2 370 on 4
#: of 4 (one consensus 2.5 sd off), 2 655 on 1 of 3, 3 712 on 1 of 4; 5 310 and 7 425 on
#: none (docs/xpcs.md, "Shard size").
SIMULATED_SHARD_POINTS = 5_000
DEFAULT_SIMULATED_SHARDS = 4


def simulated_shards(num_points: int) -> int:
    """num_shards of the generated config for ``num_points`` points (see
    SIMULATED_SHARD_POINTS)."""
    return max(1, min(DEFAULT_SIMULATED_SHARDS, num_points // SIMULATED_SHARD_POINTS))


def simulated_config(physics: str, data_file: str, q: float, dt: float, gap: float,
                     num_shards: int, seed: int, t0: float = 0.0) -> dict[str, Any]:
    """The config dict of a run on a file written by :func:`write_synthetic`; ``t0`` (s):
    the time of its first frame, stated as data.t0 (APS-U files store no times)."""
    return {
        "data": {"file": data_file, "q": q, "dt": dt, "gap": gap, "start_frame": 1, "t0": t0},
        "model": {"physics": physics},
        "sharding": {"num_shards": num_shards},
        "sampling": dict(SIMULATED_SAMPLING),
        "run": {"seed": seed},
    }


def write_synthetic(out: str | Path, *, physics: str = "static", n_angles: int = 3,
                    n_frames: int = 60, noise: float | None = None, seed: int = 0,
                    num_shards: int | None = None, t0: float | None = None) -> list[Path]:
    """Write data.h5 (APS-U layout), data.truth.json and config.yaml into ``out``; the
    first frame sits at ``t0`` (s; default SIMULATED_T0_FRAMES frame times; recorded as
    the config's data.t0); ``num_shards`` defaults to :func:`simulated_shards`."""
    from shardmc.runtime import enable_x64
    from shardmc.xpcs import simulate, write_aps_u
    from shardmc.xpcs.physics import DEFAULT_DT

    t0 = SIMULATED_T0_FRAMES * DEFAULT_DT if t0 is None else t0

    for name, value, low in (("--angles", n_angles, 1), ("--frames", n_frames, 3),
                             ("--shards", 1 if num_shards is None else num_shards, 1)):
        if value < low:
            raise ShardMCInputError(f"{name}: expected an integer >= {low}, found {value}")
    if noise is not None and not noise > 0:
        raise ShardMCInputError(f"--noise: expected a positive number, found {noise}")
    if not t0 >= 0:
        raise ShardMCInputError(f"--t0: expected a time >= 0 (s), found {t0}")
    enable_x64()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    kwargs = {} if noise is None else {"noise": noise}
    data, truth = simulate(physics, n_angles=n_angles, n_t=n_frames, seed=seed, t0=float(t0),
                           **kwargs)
    if num_shards is None:
        num_shards = simulated_shards(data.num_points)
    data_path = write_aps_u(folder / DATA_FILE, data)
    truth_path = folder / TRUTH_FILE
    scalars = {k: float(v) for k, v in truth.items() if getattr(v, "ndim", 0) == 0}
    scalars["t0"] = data.t0  # the time origin the data were generated with (s)
    truth_path.write_text(json.dumps(scalars, indent=2))
    cfg = simulated_config(physics, DATA_FILE, float(data.q), float(data.dt), float(data.gap),
                           num_shards, seed, data.t0)
    config_path = folder / CONFIG_FILE
    config_path.write_text(
        f"# shardmc run config for the synthetic {physics} data in {DATA_FILE} "
        f"(seed {seed}, first frame at t0 = {data.t0:g} s).\n# Every other key takes its "
        f"default: `shardmc config --template {physics}` lists them all.\n"
        + yaml.safe_dump(cfg, sort_keys=False))
    return [data_path, truth_path, config_path]
