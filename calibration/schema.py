"""Versioned calibration YAML: the one format that `sim` (domain-randomisation centres) and `real` read.

This module needs only the standard library, PyYAML and numpy, so a robot computer or the simulator can
read calibration results without OpenCV, SciPy or MuJoCo installed.

Every file has the same top level::

    schema_version: 1
    kind: camera_intrinsics | hand_eye | actuators
    created: 2026-01-01T12:00:00Z
    source: what it was computed from (folder, log file, topic)
    <kind>: {...}          # the values, validated on load
    report: {...}          # free-form statistics (fit errors, timings); not read back

A file is written atomically (temp file + rename) so a crash never leaves half a calibration behind.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

SCHEMA_VERSION = 1
KINDS = ("camera_intrinsics", "hand_eye", "actuators")
# Which `s2r calibrate` subcommand writes each kind: named in error messages so the fix is one command.
_COMMAND = {"camera_intrinsics": "camera", "hand_eye": "hand-eye", "actuators": "actuators"}


class CalibrationError(ValueError):
    """Bad calibration input or file. The message names the file, field or topic and says how to fix it."""


# ---- typed results ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CameraIntrinsics:
    """Pinhole camera with OpenCV's radial-tangential distortion (k1, k2, p1, p2[, k3, ...]).

    Attributes:
        image_size: (width, height) in pixels.
        camera_matrix: 3x3 K, row-major.
        dist_coeffs: OpenCV distortion coefficients.
        rms_px: Reprojection RMS of the calibration that produced it.
        std_px: 1-sigma of (fx, fy, cx, cy) from that calibration, when known; hand-eye adds what it does to X.
    """

    image_size: tuple[int, int]
    camera_matrix: tuple[tuple[float, float, float], ...]
    dist_coeffs: tuple[float, ...]
    rms_px: float = 0.0
    std_px: tuple[float, float, float, float] | None = None

    @property
    def intrinsic_matrix(self) -> np.ndarray:
        """Camera matrix as a (3, 3) float64 array."""
        return np.asarray(self.camera_matrix, dtype=np.float64)

    @property
    def distortion(self) -> np.ndarray:
        """Distortion coefficients as a (n,) float64 array."""
        return np.asarray(self.dist_coeffs, dtype=np.float64)


@dataclass(frozen=True, kw_only=True)
class HandEye:
    """A rigid transform found by hand-eye calibration: pose of `child_frame` in `parent_frame`.

    Eye-in-hand gives the camera in the gripper (flange) frame; eye-to-hand gives the camera in the robot
    base frame. A point p in the child frame is R @ p + t in the parent frame.
    """

    mode: str
    parent_frame: str
    child_frame: str
    translation_m: tuple[float, float, float]
    quaternion_wxyz: tuple[float, float, float, float]
    solver: str = ""

    @property
    def matrix(self) -> np.ndarray:
        """4x4 homogeneous transform parent <- child."""
        T = np.eye(4)
        T[:3, :3] = quat_to_matrix(np.asarray(self.quaternion_wxyz))
        T[:3, 3] = self.translation_m
        return T


@dataclass(frozen=True, kw_only=True)
class ActuatorGroup:
    """Identified parameters shared by the joints whose names match `joints` (fnmatch patterns).

    Attributes:
        name: Group name, e.g. "knee".
        joints: Name patterns such as "*_calf_joint"; a model applies the values to every joint that matches.
        kp: Position gain of the PD loop in Nm/rad (what the motor really delivers).
        kv: Velocity gain of the PD loop in Nm s/rad.
        frictionloss: Coulomb joint friction in Nm (MuJoCo `frictionloss`).
        damping: Viscous joint friction in Nm s/rad (MuJoCo joint `damping`).
        armature: Reflected rotor inertia in kg m^2 (MuJoCo `armature`).
        kp_nominal: The gain that was commanded (the model's kp) when the log was recorded.
        kv_nominal: The commanded velocity gain.
    """

    name: str
    joints: tuple[str, ...]
    kp: float
    kv: float
    frictionloss: float
    damping: float
    armature: float
    kp_nominal: float
    kv_nominal: float


@dataclass(frozen=True, kw_only=True)
class ActuatorCalibration:
    """Actuator / joint parameters identified from a logged excitation.

    Attributes:
        model: MJCF the rig was built from (e.g. "go1.xml").
        latency_s: Delay between a joint target being sent and the motor acting on it.
        timestep_s: Physics step the fit simulated with; latency is resolved to this step.
        groups: One entry per joint group.
    """

    model: str
    latency_s: float
    timestep_s: float
    groups: tuple[ActuatorGroup, ...]


# ---- writing --------------------------------------------------------------------------------------------


def _plain(x: Any) -> Any:
    """numpy scalars/arrays and tuples -> plain Python (floats exact), so any YAML reader gets the same numbers."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    return x


def write_calibration(path: str | Path, kind: str, body: dict[str, Any], *, source: str,
                      report: dict[str, Any] | None = None) -> Path:
    """Write a versioned calibration file atomically.

    Args:
        path: Output .yaml path; parent folders are created.
        kind: One of KINDS.
        body: The values (as `to_dict` of the typed result gives them).
        source: What the calibration was computed from.
        report: Free-form statistics kept for people (fit errors, timings).

    Returns:
        The path written.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown calibration kind '{kind}'; one of {KINDS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": str(source),
        kind: _plain(body),
    }
    if report:
        doc["report"] = _plain(report)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False, default_flow_style=None, width=120)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def camera_to_dict(c: CameraIntrinsics) -> dict[str, Any]:
    """Body of a camera_intrinsics file."""
    return {"image_size": list(c.image_size), "camera_matrix": [list(r) for r in c.camera_matrix],
            "dist_coeffs": list(c.dist_coeffs), "distortion_model": "opencv_radtan", "rms_px": c.rms_px,
            **({"std_px": list(c.std_px)} if c.std_px is not None else {})}


def hand_eye_to_dict(h: HandEye) -> dict[str, Any]:
    """Body of a hand_eye file (the 4x4 matrix is written too, for tools that want it)."""
    return {"mode": h.mode, "parent_frame": h.parent_frame, "child_frame": h.child_frame,
            "translation_m": list(h.translation_m), "quaternion_wxyz": list(h.quaternion_wxyz),
            "matrix": h.matrix.tolist(), "solver": h.solver}


def actuators_to_dict(a: ActuatorCalibration) -> dict[str, Any]:
    """Body of an actuators file."""
    groups = [{"name": g.name, "joints": list(g.joints), "kp": g.kp, "kv": g.kv, "frictionloss": g.frictionloss,
               "damping": g.damping, "armature": g.armature, "kp_nominal": g.kp_nominal, "kv_nominal": g.kv_nominal}
              for g in a.groups]
    return {"model": a.model, "latency_s": a.latency_s, "timestep_s": a.timestep_s, "groups": groups}


# ---- reading and validation -------------------------------------------------------------------------


class _Fields:
    """Typed field access on one mapping that fails with the file and the dotted field name."""

    def __init__(self, path: Path, data: Any, prefix: str) -> None:
        if not isinstance(data, dict):
            raise CalibrationError(f"{path}: '{prefix}' must be a mapping of fields, got {type(data).__name__}")
        self.path, self.data, self.prefix = path, data, prefix

    def _get(self, key: str) -> Any:
        if key not in self.data:
            raise CalibrationError(f"{self.path}: field '{self.prefix}.{key}' is missing; re-run the calibration "
                                   "or add it by hand")
        return self.data[key]

    def _bad(self, key: str, want: str) -> CalibrationError:
        return CalibrationError(f"{self.path}: field '{self.prefix}.{key}' must be {want}, got {self.data[key]!r}")

    def number(self, key: str, *, min_value: float | None = None) -> float:
        v = self._get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self._bad(key, "a finite number")
        if min_value is not None and v < min_value:
            raise self._bad(key, f">= {min_value}")
        return float(v)

    def text(self, key: str, choices: Sequence[str] | None = None) -> str:
        v = self._get(key)
        if not isinstance(v, str):
            raise self._bad(key, "a string")
        if choices is not None and v not in choices:
            raise self._bad(key, f"one of {list(choices)}")
        return v

    def numbers(self, key: str, n: int | None = None, *, min_len: int = 1) -> tuple[float, ...]:
        v = self._get(key)
        ok = isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                                         for x in v)
        if not ok or (n is not None and len(v) != n) or len(v) < min_len:
            raise self._bad(key, f"a list of {n if n is not None else f'at least {min_len}'} finite numbers")
        return tuple(float(x) for x in v)

    def strings(self, key: str) -> tuple[str, ...]:
        v = self._get(key)
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            raise self._bad(key, "a non-empty list of strings")
        return tuple(v)


def load_calibration(path: str | Path, kind: str) -> Any:
    """Read and validate a calibration file of the given kind.

    Args:
        path: The .yaml file.
        kind: Expected kind ("camera_intrinsics", "hand_eye" or "actuators").

    Returns:
        CameraIntrinsics, HandEye or ActuatorCalibration.

    Raises:
        CalibrationError: Missing file, invalid YAML, unsupported schema_version, wrong kind, or a field that
            is missing or malformed; the message names the file and field and says what to do.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown calibration kind '{kind}'; one of {KINDS}")
    path = Path(path)
    cmd = f"`s2r calibrate {_COMMAND[kind]} ... --out {path}`"
    if not path.is_file():
        raise CalibrationError(f"{path}: no such calibration file (cwd {Path.cwd()}); fix the path or create it with {cmd}")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CalibrationError(f"{path}: not valid YAML ({exc}); re-create it with {cmd}") from None
    if not isinstance(doc, dict):
        raise CalibrationError(f"{path}: expected a YAML mapping with schema_version and kind; re-create it with {cmd}")
    version = doc.get("schema_version")
    if version is None:
        raise CalibrationError(f"{path}: no 'schema_version' field, so it is not an s2r calibration file; "
                               f"re-create it with {cmd}")
    if version != SCHEMA_VERSION:
        raise CalibrationError(f"{path}: schema_version {version!r} is not supported (this s2r reads version "
                               f"{SCHEMA_VERSION}); re-run the calibration with this version of s2r")
    got = doc.get("kind")
    if got != kind:
        raise CalibrationError(f"{path}: this is a '{got}' calibration, but a '{kind}' calibration is needed here; "
                               f"pass the right file or create one with {cmd}")
    body = doc.get(kind)
    f = _Fields(path, body, kind)
    if kind == "camera_intrinsics":
        return _camera_from(f)
    if kind == "hand_eye":
        return _hand_eye_from(f)
    return _actuators_from(f)


def _camera_from(f: _Fields) -> CameraIntrinsics:
    size = f.numbers("image_size", 2)
    if min(size) <= 0 or any(s != int(s) for s in size):
        raise f._bad("image_size", "two positive integers [width, height]")
    rows = f._get("camera_matrix")
    if not (isinstance(rows, list) and len(rows) == 3 and all(isinstance(r, list) and len(r) == 3 for r in rows)):
        raise f._bad("camera_matrix", "a 3x3 list of numbers")
    K = _Fields(f.path, {f"camera_matrix[{i}]": r for i, r in enumerate(rows)}, f.prefix)
    mat = tuple(K.numbers(f"camera_matrix[{i}]", 3) for i in range(3))
    if mat[0][0] <= 0 or mat[1][1] <= 0 or mat[2] != (0.0, 0.0, 1.0):
        raise f._bad("camera_matrix", "a camera matrix [[fx,0,cx],[0,fy,cy],[0,0,1]] with fx, fy > 0")
    dist = f.numbers("dist_coeffs", min_len=4)
    if len(dist) not in (4, 5, 8, 12, 14):
        raise f._bad("dist_coeffs", "4, 5, 8, 12 or 14 OpenCV distortion coefficients")
    rms = float(f.data.get("rms_px", 0.0) or 0.0)
    std = tuple(float(v) for v in f.numbers("std_px", 4)) if "std_px" in f.data else None  # older files lack it
    if std is not None and not all(np.isfinite(v) and v >= 0 for v in std):
        raise f._bad("std_px", "four non-negative numbers (1-sigma of fx, fy, cx, cy)")
    return CameraIntrinsics(image_size=(int(size[0]), int(size[1])), camera_matrix=mat, dist_coeffs=dist, rms_px=rms,
                            std_px=std)  # type: ignore[arg-type]


def _hand_eye_from(f: _Fields) -> HandEye:
    q = np.asarray(f.numbers("quaternion_wxyz", 4))
    if abs(np.linalg.norm(q) - 1.0) > 1e-3:
        raise f._bad("quaternion_wxyz", "a unit quaternion (norm 1)")
    return HandEye(mode=f.text("mode", ("eye_in_hand", "eye_to_hand")), parent_frame=f.text("parent_frame"),
                   child_frame=f.text("child_frame"), translation_m=f.numbers("translation_m", 3),  # type: ignore[arg-type]
                   quaternion_wxyz=tuple(q / np.linalg.norm(q)), solver=str(f.data.get("solver", "")))  # type: ignore[arg-type]


def _actuators_from(f: _Fields) -> ActuatorCalibration:
    raw = f._get("groups")
    if not isinstance(raw, list) or not raw:
        raise f._bad("groups", "a non-empty list of joint groups")
    groups = []
    for i, g in enumerate(raw):
        gf = _Fields(f.path, g, f"{f.prefix}.groups[{i}]")
        groups.append(ActuatorGroup(
            name=gf.text("name"), joints=gf.strings("joints"),
            kp=gf.number("kp", min_value=0.0), kv=gf.number("kv", min_value=0.0),
            frictionloss=gf.number("frictionloss", min_value=0.0), damping=gf.number("damping", min_value=0.0),
            armature=gf.number("armature", min_value=0.0), kp_nominal=gf.number("kp_nominal", min_value=0.0),
            kv_nominal=gf.number("kv_nominal", min_value=0.0)))
    return ActuatorCalibration(model=f.text("model"), latency_s=f.number("latency_s", min_value=0.0),
                               timestep_s=f.number("timestep_s", min_value=1e-6), groups=tuple(groups))


# ---- small rotation helpers (shared by hand-eye and its readers; numpy only) ------------------------------


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> 3x3 rotation matrix."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix -> unit quaternion (w, x, y, z) with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    t = np.trace(R)
    if t > 0:
        s = 2.0 * math.sqrt(t + 1.0)
        q = np.array([0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s])
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + R[i, i] - R[j, j] - R[k, k], 1e-12))
        q = np.empty(4)
        q[0] = (R[k, j] - R[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (R[j, i] + R[i, j]) / s
        q[1 + k] = (R[k, i] + R[i, k]) / s
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q
