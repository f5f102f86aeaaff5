"""Reading and writing XPCS two-time data: APS-U and APS-old HDF5 layouts, NPZ.

HDF5 layouts (REFERENCE.md):

* APS-U: ``xpcs/qmap/dynamic_v_list_dim0`` (q, Å⁻¹), ``xpcs/qmap/dynamic_v_list_dim1``
  (φ, degrees), ``xpcs/twotime/processed_bins`` (1-based bins; bin b -> q index
  (b−1)//n_φ, φ index (b−1) % n_φ), matrices in ``xpcs/twotime/correlation_map``
  (``c2_00001``, … sorted by name, one per processed bin).
* APS-old: ``xpcs/dqlist`` (1, N), ``xpcs/dphilist`` (1, N) degrees, matrices in
  ``exchange/C2T_all`` (sorted by name, one per column).

Matrices are upper-triangle halves: full = half + halfᵀ with the diagonal halved. Frames
``start_frame..end_frame`` (1-based, inclusive) are kept; frame k sits at
t0 + (k − start_frame) · dt with ``t0`` the time of the first kept frame since the time
origin (docs/xpcs.md, "Time origin"); without t0, frame times are dt · k from the start
frame (``time_origin="start"``, the reference's choice: t0 = 0) or from the file's first
frame (``"file"``: t0 = (start_frame − 1) · dt). The diagonal is replaced by the mean of
its neighbours (it is never fitted). Every error names the HDF5 dataset path at fault.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np

from shardmc.errors import ShardMCInputError
from shardmc.xpcs.data import XPCSData, correct_diagonal, reconstruct_half
from shardmc.xpcs.physics import DEFAULT_DT, DEFAULT_GAP, DEFAULT_Q

APS_U_Q = "xpcs/qmap/dynamic_v_list_dim0"
APS_U_PHI = "xpcs/qmap/dynamic_v_list_dim1"
APS_U_BINS = "xpcs/twotime/processed_bins"
APS_U_MAPS = "xpcs/twotime/correlation_map"
APS_OLD_Q = "xpcs/dqlist"
APS_OLD_PHI = "xpcs/dphilist"
APS_OLD_MAPS = "exchange/C2T_all"
FORMATS = ("aps_u", "aps_old")
TIME_ORIGINS = ("start", "file")

#: Default relative q tolerance: the nearest q must lie within 10 % of the requested q.
DEFAULT_Q_RTOL = 0.1
#: Default angle tolerance (degrees) when selecting angles by value.
DEFAULT_PHI_TOL = 0.5
NPZ_KEYS = ("c2", "t", "q", "phi", "dt", "gap")


class _Bin(NamedTuple):
    q: float
    phi: float
    path: str  # dataset path of the matrix


def _fail(path: Path, message: str) -> ShardMCInputError:
    return ShardMCInputError(f"{path}: {message}")


def _dataset(f: h5py.File, name: str, path: Path) -> np.ndarray:
    obj = f.get(name)
    if obj is None:
        raise _fail(path, f"dataset '{name}' is missing")
    if not isinstance(obj, h5py.Dataset):
        raise _fail(path, f"'{name}' is a group; expected a dataset")
    return obj[()]


def _vector(f: h5py.File, name: str, path: Path) -> np.ndarray:
    arr = np.asarray(_dataset(f, name, path))
    squeezed = np.squeeze(arr)
    if squeezed.ndim != 1 and arr.size != 1:
        raise _fail(path, f"dataset '{name}' has shape {arr.shape}; expected (N,) or (1, N)")
    vec = np.atleast_1d(squeezed).astype(np.float64)
    if not np.all(np.isfinite(vec)):
        raise _fail(path, f"dataset '{name}' holds non-finite values")
    return vec


def _matrix_names(f: h5py.File, group: str, path: Path) -> list[str]:
    obj = f.get(group)
    if obj is None:
        raise _fail(path, f"group '{group}' is missing")
    if not isinstance(obj, h5py.Group):
        raise _fail(path, f"'{group}' is a dataset; expected a group of matrices")
    return [f"{group}/{k}" for k in sorted(obj.keys())]


def _open_hdf5(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise _fail(path, f"cannot read as HDF5 ({exc}); expected an APS-U or APS-old "
                          "HDF5 file") from None


def detect_format(path: str | Path) -> str:
    """"aps_u" or "aps_old" from the datasets present; ShardMCInputError otherwise."""
    path = Path(path)
    with _open_hdf5(path) as f:
        if APS_U_Q in f and APS_U_MAPS in f:
            return "aps_u"
        if APS_OLD_Q in f and APS_OLD_MAPS in f:
            return "aps_old"
    raise _fail(path, f"unknown layout: expected '{APS_U_Q}' + '{APS_U_MAPS}' (APS-U) or "
                      f"'{APS_OLD_Q}' + '{APS_OLD_MAPS}' (APS-old)")


def _bins_aps_u(f: h5py.File, path: Path) -> list[_Bin]:
    q_list, phi_list = _vector(f, APS_U_Q, path), _vector(f, APS_U_PHI, path)
    bins = np.atleast_1d(np.squeeze(np.asarray(_dataset(f, APS_U_BINS, path))))
    if bins.ndim != 1 or not np.issubdtype(bins.dtype, np.integer):
        raise _fail(path, f"dataset '{APS_U_BINS}' has shape {bins.shape} and dtype "
                          f"{bins.dtype}; expected 1-D integers")
    names = _matrix_names(f, APS_U_MAPS, path)
    if len(names) != len(bins):
        raise _fail(path, f"group '{APS_U_MAPS}' holds {len(names)} matrices but "
                          f"'{APS_U_BINS}' lists {len(bins)} bins")
    n_q, n_phi = len(q_list), len(phi_list)
    out = []
    for b, name in zip(bins.tolist(), names, strict=True):
        qi, pi = (b - 1) // n_phi, (b - 1) % n_phi
        if b < 1 or qi >= n_q:
            raise _fail(path, f"dataset '{APS_U_BINS}' holds bin {b}, outside 1..{n_q * n_phi} "
                              f"({n_q} q x {n_phi} phi)")
        out.append(_Bin(float(q_list[qi]), float(phi_list[pi]), name))
    return out


def _bins_aps_old(f: h5py.File, path: Path) -> list[_Bin]:
    q_list, phi_list = _vector(f, APS_OLD_Q, path), _vector(f, APS_OLD_PHI, path)
    if q_list.shape != phi_list.shape:
        raise _fail(path, f"datasets '{APS_OLD_Q}' {q_list.shape} and '{APS_OLD_PHI}' "
                          f"{phi_list.shape} differ in length")
    names = _matrix_names(f, APS_OLD_MAPS, path)
    if len(names) != len(q_list):
        raise _fail(path, f"group '{APS_OLD_MAPS}' holds {len(names)} matrices but "
                          f"'{APS_OLD_Q}' lists {len(q_list)} (q, phi) pairs")
    return [_Bin(float(q), float(p), n) for q, p, n in zip(q_list, phi_list, names, strict=True)]


def _select_q(bins: list[_Bin], q: float, q_tolerance: float, q_path: str,
              path: Path) -> list[_Bin]:
    if not bins:
        raise _fail(path, f"no correlation matrices listed (see '{q_path}')")
    qs = np.array([b.q for b in bins])
    nearest = float(qs[np.argmin(np.abs(qs - q))])
    if abs(nearest - q) > q_tolerance * q:
        available = sorted({round(float(x), 8) for x in qs})
        raise _fail(path, f"q = {q} Å⁻¹ is not present in '{q_path}' (tolerance "
                          f"{q_tolerance:.0%}); nearest {nearest}, available {available}")
    return [b for b, qb in zip(bins, qs, strict=True) if abs(qb - nearest) <= q_tolerance * q]


def _select_phi(bins: list[_Bin], phi: Sequence[float] | None, phi_tolerance: float,
                phi_path: str, path: Path) -> list[_Bin]:
    if phi is None:
        return sorted(bins, key=lambda b: b.phi)
    angles = np.array([b.phi for b in bins])
    chosen = []
    for target in phi:
        i = int(np.argmin(np.abs(angles - target)))
        if abs(angles[i] - target) > phi_tolerance:
            raise _fail(path, f"angle {target} deg is not present in '{phi_path}' at the selected "
                              f"q (tolerance {phi_tolerance} deg); available "
                              f"{sorted(angles.tolist())}")
        chosen.append(bins[i])
    return chosen


def _frame_slice(n_frames: int, start_frame: int, end_frame: int | None, where: str,
                 path: Path) -> slice:
    end = n_frames if end_frame is None else int(end_frame)
    start = int(start_frame)
    if not (start >= 1 and end <= n_frames and end - start + 1 >= 2):
        raise _fail(path, f"empty frame range start_frame={start}, end_frame={end} for "
                          f"'{where}' with {n_frames} frames; expected "
                          f"1 <= start_frame < end_frame <= {n_frames}")
    return slice(start - 1, end)


def _matrix_shape(f: h5py.File, name: str, path: Path) -> tuple[int, ...]:
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise _fail(path, f"'{name}' is missing or not a dataset; expected a matrix")
    if len(obj.shape) != 2 or obj.shape[0] != obj.shape[1]:
        raise _fail(path, f"dataset '{name}' has shape {obj.shape}; expected a square "
                          "(n_frames, n_frames) matrix")
    return tuple(obj.shape)


def _read_matrix(f: h5py.File, b: _Bin, frames: slice, path: Path) -> np.ndarray:
    # the frame block of an upper-triangle half is the half of the block: read only it
    full = reconstruct_half(np.asarray(f[b.path][frames, frames], dtype=np.float64))
    off = ~np.eye(full.shape[0], dtype=bool)
    if not np.all(np.isfinite(full[off])):
        raise _fail(path, f"dataset '{b.path}' holds NaN/inf values in frames "
                          f"{frames.start + 1}..{frames.stop}")
    return full


def _check_t0(t0: float | None, time_origin: str) -> float | None:
    """t0 as a float (s), checked: finite, >= 0, and only with time_origin "start"."""
    if t0 is None:
        return None
    if time_origin != "start":
        raise ShardMCInputError(f"t0: expected None with time_origin={time_origin!r} (which "
                                f"places the frames itself), or time_origin='start'; found {t0}")
    t0 = float(t0)
    if not (np.isfinite(t0) and t0 >= 0):
        raise ShardMCInputError(f"t0: expected a finite time >= 0 (s), found {t0}")
    return t0


def load_hdf5(
    path: str | Path,
    *,
    q: float = DEFAULT_Q,
    q_tolerance: float = DEFAULT_Q_RTOL,
    phi: Sequence[float] | None = None,
    phi_tolerance: float = DEFAULT_PHI_TOL,
    start_frame: int = 1,
    end_frame: int | None = None,
    dt: float = DEFAULT_DT,
    gap: float = DEFAULT_GAP,
    time_origin: str = "start",
    layout: str = "auto",
    t0: float | None = None,
) -> XPCSData:
    """Two-time data at the q nearest ``q`` (within ``q_tolerance``, relative) from an HDF5 file.

    phi: angles (degrees) to keep, each matched within ``phi_tolerance``; None keeps all,
    sorted. start_frame/end_frame: 1-based inclusive frame range (None = last frame).
    t0: time (s) of the first kept frame since the time origin, frame k at
    t0 + (k − start_frame)·dt; None: from ``time_origin`` ("start": 0, "file":
    (start_frame − 1)·dt; t0 goes with "start" only). layout: "auto" | "aps_u" | "aps_old".
    """
    path = Path(path)
    if not path.exists():
        raise ShardMCInputError(f"{path}: file not found")
    if time_origin not in TIME_ORIGINS:
        raise ShardMCInputError(f"time_origin: expected one of {TIME_ORIGINS}, found "
                                f"{time_origin!r}")
    t0 = _check_t0(t0, time_origin)
    layout = detect_format(path) if layout == "auto" else layout
    if layout not in FORMATS:
        raise ShardMCInputError(f"layout: expected 'auto' or one of {FORMATS}, found {layout!r}")
    q_path, phi_path = (APS_U_Q, APS_U_PHI) if layout == "aps_u" else (APS_OLD_Q, APS_OLD_PHI)
    with _open_hdf5(path) as f:
        bins = _bins_aps_u(f, path) if layout == "aps_u" else _bins_aps_old(f, path)
        bins = _select_q(bins, float(q), q_tolerance, q_path, path)
        bins = _select_phi(bins, phi, phi_tolerance, phi_path, path)
        shape0 = _matrix_shape(f, bins[0].path, path)
        for b in bins[1:]:
            shape = _matrix_shape(f, b.path, path)
            if shape != shape0:
                raise _fail(path, f"dataset '{b.path}' has shape {shape}; expected {shape0} "
                                  f"like '{bins[0].path}'")
        frames = _frame_slice(shape0[0], start_frame, end_frame, bins[0].path, path)
        mats = [_read_matrix(f, b, frames, path) for b in bins]
    c2 = correct_diagonal(np.stack(mats))
    frame = np.arange(c2.shape[-1], dtype=np.float64)
    if t0 is None:
        t = dt * ((0 if time_origin == "start" else frames.start) + frame)
    else:
        t = t0 + dt * frame
    q_values = np.array([b.q for b in bins])  # one value (APS-U); APS-old bins may differ
    q_sel = float(q_values[0] if np.all(q_values == q_values[0]) else np.mean(q_values))
    return XPCSData(c2=c2, t=t, q=q_sel, phi=np.array([b.phi for b in bins]), dt=dt, gap=gap)


def _write_halves(group: h5py.Group, mats: Sequence[np.ndarray]) -> None:
    for i, mat in enumerate(mats, start=1):
        group.create_dataset(f"c2_{i:05d}", data=np.triu(np.asarray(mat, dtype=np.float64)))


def write_aps_u(path: str | Path, data: XPCSData, *, other_q: Sequence[float] = ()) -> Path:
    """Write ``data`` as an APS-U file (upper-triangle halves); ``other_q`` adds decoy q rows.

    Every (q, φ) bin is processed; decoy bins repeat the data's matrices.
    """
    path = Path(path)
    q_list = np.array(sorted({float(data.q), *map(float, other_q)}))
    n_phi = data.n_phi
    with h5py.File(path, "w") as f:
        f.create_dataset(APS_U_Q, data=q_list)
        f.create_dataset(APS_U_PHI, data=np.asarray(data.phi, dtype=np.float64))
        f.create_dataset(APS_U_BINS, data=np.arange(1, len(q_list) * n_phi + 1, dtype=np.int64))
        _write_halves(f.create_group(APS_U_MAPS), [data.c2[p] for _ in q_list
                                                   for p in range(n_phi)])
    return path


def write_aps_old(path: str | Path, data: XPCSData) -> Path:
    """Write ``data`` as an APS-old file (dqlist/dphilist (1, N), halves in C2T_all)."""
    path = Path(path)
    with h5py.File(path, "w") as f:
        f.create_dataset(APS_OLD_Q, data=np.full((1, data.n_phi), float(data.q)))
        f.create_dataset(APS_OLD_PHI, data=np.asarray(data.phi, dtype=np.float64)[None, :])
        _write_halves(f.create_group(APS_OLD_MAPS), list(data.c2))
    return path


def save_npz(path: str | Path, data: XPCSData) -> Path:
    """Save ``data`` to a compressed NPZ (keys c2, t, q, phi, dt, gap[, sigma])."""
    path = Path(path)
    arrays: dict[str, Any] = {"c2": data.c2, "t": data.t, "q": data.q, "phi": data.phi,
                              "dt": data.dt, "gap": data.gap}
    if data.sigma is not None:
        arrays["sigma"] = data.sigma
    with path.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def load_npz(path: str | Path) -> XPCSData:
    """Load data written by :func:`save_npz`; errors name the missing key."""
    path = Path(path)
    if not path.exists():
        raise ShardMCInputError(f"{path}: file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise _fail(path, f"cannot read as NPZ ({exc}); expected an archive written by "
                          "save_npz") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _fail(path, "holds a single array, not an NPZ archive of named arrays; "
                          f"expected keys {list(NPZ_KEYS)}")
    with archive as z:
        missing = [k for k in NPZ_KEYS if k not in z.files]
        if missing:
            raise _fail(path, f"NPZ key(s) {missing} missing; expected {list(NPZ_KEYS)}")
        sigma = z["sigma"] if "sigma" in z.files else None
        q, dt, gap = (_npz_scalar(z, key, path) for key in ("q", "dt", "gap"))
        return XPCSData(c2=z["c2"], t=z["t"], q=q, phi=z["phi"], dt=dt, sigma=sigma, gap=gap)


def _npz_scalar(z: Any, key: str, path: Path) -> float:
    value = np.asarray(z[key])
    if value.size != 1 or value.dtype.kind not in "iuf":
        raise _fail(path, f"NPZ key '{key}' holds shape {value.shape}, dtype {value.dtype}; "
                          "expected one number")
    return float(value.reshape(()))
