"""The time origin a fit assumes, and the dt/2 rate floor (docs/xpcs.md, "Time origin").

Power-law rates r(t) = A t^p + B are evaluated at max(t, dt/2) (``physics.rate_times``).
Frame times count from the time origin (the start of aging, the quench): the first kept
frame sits at ``data.t0`` (``XPCSData.t[0]``, config ``data.t0``). For p < 0 the rates
at the first frames dominate the decay, so the fitted A, p and B depend on that
assumption, most of all where frames lie below the floor (t0 < dt/2). This module records
the assumption in a posterior's provenance (:data:`PROVENANCE_KEY`), where
``Posterior.diagnose()`` finds it, with the message saying what it means.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from shardmc.xpcs.data import XPCSData
from shardmc.xpcs.models import RATE_BLOCKS, XPCSModel

#: Provenance key of the time-origin record (a JSON-able dict, see :func:`time_origin_record`).
PROVENANCE_KEY = "xpcs_time"


def negative_blocks(model: XPCSModel) -> list[tuple[str, str, str]]:
    """The model's power-law blocks (amplitude, exponent, offset) whose exponent's prior
    allows values < 0."""
    names = set(model.parameter_names)
    return [b for b in RATE_BLOCKS.values()
            if set(b) <= names and model.prior[b[1]].lower < 0]


def floor_message(t0: float, dt: float, floored_frames: int,
                  blocks: list[tuple[str, str, str]]) -> str | None:
    """What the dt/2 floor means for this fit, or None where it does not apply (no frame
    below dt/2, or no block whose exponent may be < 0). t0, dt in s."""
    if floored_frames <= 0 or not blocks:
        return None
    exponents = list(dict.fromkeys(b[1] for b in blocks))
    signs = " or ".join(f"{e} < 0" for e in exponents)
    fitted = "; ".join(", ".join(b) for b in blocks)
    frames = "1 frame lies" if floored_frames == 1 else f"{floored_frames} frames lie"
    return (f"time origin: the first frame sits at t0 = {t0:g} s and {frames} below the rate "
            f"floor dt/2 = {dt / 2:g} s, where power-law rates are evaluated at dt/2; the prior "
            f"allows {signs}, and then the fitted {fitted} depend on the assumed time of the "
            "first frame (static data simulated with the first frame at t = dt and fitted "
            "with t0 = 0: D0, alpha, D_offset 10-25 posterior sd off, docs/xpcs.md \"Time "
            "origin\"): state the time of the first kept frame since the start of aging or "
            "the quench with data.t0 (s; XPCSData.with_t0 in Python)")


def time_origin_record(model: XPCSModel, data: XPCSData) -> dict[str, Any]:
    """JSON-able record of the time origin: t0, dt, floor (s), floored_frames,
    negative_exponents and ``message`` (:func:`floor_message`, None where it does not apply)."""
    blocks = negative_blocks(model)
    floored = data.floored_frames
    return {"t0": data.t0, "dt": data.dt, "floor": data.rate_time_floor,
            "floored_frames": floored,
            "negative_exponents": list(dict.fromkeys(b[1] for b in blocks)),
            "message": floor_message(data.t0, data.dt, floored, blocks)}


def record_time_origin(posterior: Any, model: XPCSModel, data: XPCSData) -> Any:
    """A copy of a :class:`shardmc.Posterior` of ``model`` fitted to ``data`` with the time
    origin in its provenance (``provenance["xpcs_time"]``), so that ``diagnose()`` reports
    the dt/2 floor where it matters. ``shardmc run`` does this itself."""
    record = time_origin_record(model, data)
    return dataclasses.replace(posterior, provenance={**(posterior.provenance or {}),
                                                      PROVENANCE_KEY: record})
