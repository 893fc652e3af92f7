"""Build the policy's input vector on the robot from named terms, exactly as the training task did.

Each term named in policy.json is computed from a `RobotState` (joint encoders + IMU), the velocity
command and the previous action, shifted by the default pose where the term says so, multiplied by its
scale, and stacked over `history_length` frames (oldest first). A parity test checks this against the
simulator's own observation for the same MuJoCo states.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from s2r.real.metadata import MetadataError, PolicyMetadata


@dataclass
class RobotState:
    """One snapshot of what the robot senses, joints in the robot config's order.

    Attributes:
        joint_pos: (num_joints,) joint angles (rad).
        joint_vel: (num_joints,) joint speeds (rad/s).
        orientation: (4,) IMU orientation quaternion w, x, y, z (body to world).
        gyro: (3,) IMU angular velocity in the body frame (rad/s).
        waypoints: Next waypoints in the body frame, for a `waypoints`-command policy (`s2r.real.waypoint_follow`).
        height_map: Drops and headrooms around the body, for a policy with a `height_map` term.
    """

    joint_pos: np.ndarray
    joint_vel: np.ndarray
    orientation: np.ndarray
    gyro: np.ndarray
    waypoints: np.ndarray = field(default_factory=lambda: np.zeros(0))
    height_map: np.ndarray = field(default_factory=lambda: np.zeros(0))


def projected_gravity(quat_wxyz: np.ndarray) -> np.ndarray:
    """Unit gravity direction (0, 0, -1) expressed in the body frame of orientation `quat_wxyz`."""
    q = np.asarray(quat_wxyz, dtype=np.float64)
    w, x, y, z = q / np.sqrt(q @ q)
    # Third row of R(q) transposed, negated: R^T (0, 0, -1) = -(R[2, 0], R[2, 1], R[2, 2]).
    return -np.array([2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y)])


# name -> (size given num_joints, or None: as policy.json says; function(state, command, last_action) -> values)
TermFn = Callable[[RobotState, np.ndarray, np.ndarray], np.ndarray]
OBS_TERMS: dict[str, tuple[Callable[[int], int | None], TermFn]] = {
    "base_ang_vel": (lambda nj: 3, lambda s, c, a: s.gyro),
    "projected_gravity": (lambda nj: 3, lambda s, c, a: projected_gravity(s.orientation)),
    "velocity_command": (lambda nj: 3, lambda s, c, a: c),
    "joint_pos": (lambda nj: nj, lambda s, c, a: s.joint_pos),
    "joint_vel": (lambda nj: nj, lambda s, c, a: s.joint_vel),
    "last_action": (lambda nj: nj, lambda s, c, a: a),
    # Sized by the policy (waypoints observed, height-map grid); `s2r.real.waypoint_follow` fills them.
    "waypoints": (lambda nj: None, lambda s, c, a: s.waypoints),
    "height_map": (lambda nj: None, lambda s, c, a: s.height_map),
}


class ObservationBuilder:
    """Turns robot state into the (1, obs_dim) float32 array the ONNX graph reads, keeping the history.

    Args:
        meta: The policy's metadata (term names, sizes, scales, history length, default pose).
        num_joints: Joints the robot reports (the robot config's count).
        terms: Term name -> (size given num_joints, function(state, command, last_action)); `OBS_TERMS`
            (a legged robot's `RobotState`) by default, `s2r.real.arm.ARM_TERMS` for an arm's `ArmState`.

    Raises:
        MetadataError: A term this runtime cannot compute, or whose size does not fit the robot.
    """

    def __init__(self, meta: PolicyMetadata, num_joints: int,
                 terms: dict[str, tuple[Callable[[int], int | None], TermFn]] | None = None) -> None:
        self.meta = meta
        obs = meta.obs
        default = getattr(meta.action, "default_pos", None)  # joint_position policies only
        frame = sum(t.size for t in obs.terms)
        self._fns: list[tuple[slice, TermFn]] = []
        scale = np.ones(frame)
        offset = np.zeros(frame)
        table = OBS_TERMS if terms is None else terms
        for t in obs.terms:
            if t.name not in table:
                raise MetadataError(f"observation term '{t.name}' is not one this runtime can compute for this "
                                    f"robot; known terms: {', '.join(table)}")
            size_fn, fn = table[t.name]
            want = size_fn(num_joints)
            if want is not None and t.size != want:
                raise MetadataError(f"observation size mismatch: term '{t.name}' has {t.size} values in "
                                    f"policy.json but this robot provides {want}")
            sl = slice(t.start, t.start + t.size)
            scale[sl] = np.broadcast_to(np.asarray(t.scale, dtype=np.float64), (t.size,))
            if t.offset_from_default:
                if default is None or t.size != len(default):
                    raise MetadataError(f"term '{t.name}' is offset by the default pose but has {t.size} values "
                                        f"for {0 if default is None else len(default)} joints")
                offset[sl] = default
            self._fns.append((sl, fn))
        self.frame_dim = frame
        self._scale, self._offset = scale, offset
        self._frame = np.zeros(frame)
        self._history = np.zeros((obs.history_length, frame))  # oldest first
        self._input = np.zeros((1, meta.obs_dim), dtype=np.float32)
        self._empty = True

    @property
    def current_input(self) -> np.ndarray:
        """The last input built, shape (1, obs_dim) (zeros before the first)."""
        return self._input

    def reset(self) -> None:
        """Forget the history; the next frame fills every slot (as the simulator does on reset)."""
        self._empty = True

    def frame(self, state: RobotState, command: np.ndarray, last_action: np.ndarray) -> np.ndarray:
        """One scaled frame (frame_dim,) without touching the history."""
        for sl, fn in self._fns:
            self._frame[sl] = fn(state, command, last_action)
        return (self._frame - self._offset) * self._scale

    def build(self, state: RobotState, command: np.ndarray, last_action: np.ndarray) -> np.ndarray:
        """Add a frame to the history and return the policy input, shape (1, obs_dim), float32."""
        f = self.frame(state, command, last_action)
        if self._empty:
            self._history[:] = f
            self._empty = False
        else:
            self._history[:-1] = self._history[1:]
            self._history[-1] = f
        self._input[0] = self._history.reshape(-1)
        return self._input


class CameraError(MetadataError):
    """A camera frame the policy cannot use: wrong size or encoding, none yet, or too old (the camera stopped)."""


class ImageInputs:
    """The policy's camera inputs, fed from the latest frame of each camera, checked against policy.json.

    One uint8 (1, H, W, C) array per image input of the metadata, named by its ONNX input; the policy's
    encoder (inside the graph) scales and encodes it, so nothing here needs torch.

    Args:
        meta: The policy's metadata; its image inputs (`ObsInput.camera` set) are the ones fed here.
        max_age_s: A frame older than this (by the caller's clock) is refused (None: never).
    """

    def __init__(self, meta: PolicyMetadata, max_age_s: float | None = None) -> None:
        self.inputs = {o.camera: o for o in meta.observation if o.is_image}
        self.max_age_s = max_age_s
        self._frames = {cam: np.zeros((1, *o.shape), dtype=np.uint8) for cam, o in self.inputs.items()}
        self._stamps: dict[str, float | None] = {}

    @property
    def cameras(self) -> tuple[str, ...]:
        """Camera names the policy reads, in input order."""
        return tuple(self.inputs)

    def set(self, camera: str, frame: np.ndarray, stamp: float | None = None) -> None:
        """Take the newest (H, W, C) uint8 frame of `camera` (RGB, as the simulator renders), taken at `stamp`.

        Raises:
            CameraError: An unknown camera, or a frame of another shape or dtype than policy.json says.
        """
        if camera not in self.inputs:
            raise CameraError(f"camera '{camera}' is not an input of this policy; it reads {list(self.inputs) or 'none'}")
        want = self.inputs[camera].shape
        img = np.asarray(frame)
        if img.dtype != np.uint8 or img.shape != tuple(want):
            raise CameraError(f"camera '{camera}' gave a {img.dtype} frame of shape {img.shape}; the policy takes uint8 "
                              f"{tuple(want)} (H, W, C) RGB: resize or convert the image to that before feeding it")
        self._frames[camera][0] = img
        self._stamps[camera] = stamp

    def current(self) -> dict[str, np.ndarray]:
        """ONNX input name -> the last frame held (zeros before the first), unchecked: for warm-up runs only."""
        return {o.name: self._frames[cam] for cam, o in self.inputs.items()}

    def problem(self, now: float | None = None) -> str | None:
        """Why the policy cannot act on the frames held at `now` (one sentence), or None when every camera is fresh."""
        for cam in self.inputs:
            if cam not in self._stamps:
                return f"camera '{cam}' has given no frame yet; the policy needs one before it can act"
            stamp = self._stamps[cam]
            if self.max_age_s is not None and now is not None and stamp is not None and now - stamp > self.max_age_s:
                return (f"camera '{cam}' last gave a frame {now - stamp:.3f} s ago (allowed {self.max_age_s} s); "
                        "the camera has stopped: check its driver and topic")
        return None

    def feed(self, now: float | None = None) -> dict[str, np.ndarray]:
        """ONNX input name -> (1, H, W, C) uint8, for every camera.

        Raises:
            CameraError: A camera has given no frame yet, or its last frame is older than `max_age_s` at `now`.
        """
        why = self.problem(now)
        if why is not None:
            raise CameraError(why)
        return {o.name: self._frames[cam] for cam, o in self.inputs.items()}
