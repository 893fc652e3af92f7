"""Panda arm manipulation: lift a cube, pick-and-place it, insert a peg. Sparse rewards, task-space actions.

A Panda-class 7-DoF arm (`panda.xml`) stands at the edge of a table. The policy commands the end effector,
not the joints: each action row is (dx, dy, dz, grip) in [-1, 1], a translation of the tool centre point
(TCP) target by up to `arm.max_step` metres per axis and a gripper command (-1 open ... +1 closed). The hand
stays pointing down with a fixed yaw. Once per control step a damped-least-squares differential IK on the
TCP Jacobian (from `mj_jacSite`) turns the Cartesian target into joint position targets for the arm's
position servos, with a small pull towards the ready pose in the Jacobian's null space; physics then runs
for the control period on the CPU backend (`mujoco.rollout`, native threads) while the servo targets ramp
from the old to the new values in `arm.interp_steps` stages (and a 10 ms first-order filter in the
actuators smooths the stages), as a robot controller interpolates between policy steps. The arm carries
out a command within about one control step.

Rewards are sparse and binary: 1.0 on the step the task succeeds, which also ends the episode (terminated);
0 otherwise. Episodes also end when the object falls off the table (terminated, reward 0) or at the time
limit (truncated). Object pose, size, mass and friction are randomised at every reset (and the socket pose
and clearance for the insertion task). `info["success"]` is the (num_envs,) success flag of every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import mujoco
import numpy as np
from s2r.sim.backends import BackendConfig, FieldRandomization, make_backend
from s2r.sim.env import EnvSpec, GroupSpec, ImageSpec, Obs, ObsHistory, ObsTerm, VecEnv, control_substeps
from s2r.sim.models import load_panda

ARM_DOF = 7
# Franka's "ready" pose: the null-space attractor of the IK and the seed of the start-pose solve.
HOME_Q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
# TCP orientation held by the IK: hand z pointing down, fingers opening along world y (the ready pose's).
R_DOWN = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
FINGER_MAX = 0.04  # m per finger (Franka Hand stroke 0.08 m)
# The table top's centre (x, y) and half extents (m), as in panda.xml; an object beyond them has fallen off.
TABLE_CENTER, TABLE_HALF = np.array([0.35, 0.0]), np.array([0.75, 0.6])
ACTION_NAMES = ("ee_dx", "ee_dy", "ee_dz", "gripper")
# qpos/qvel layout shared by every task model: 7 arm joints, 2 fingers, then one free object.
_FINGERS = slice(7, 9)
_OBJ_POS, _OBJ_QUAT = slice(9, 12), slice(12, 16)
_OBJ_LINVEL, _OBJ_ANGVEL = slice(9, 12), slice(12, 15)


# ---- configs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ArmControlConfig:
    """How task-space actions become joint targets.

    Attributes:
        max_step: TCP target translation per control step at |action| = 1, per axis (m).
        max_lead: How far the TCP target may run ahead of the measured TCP (m); stops wind-up against
            contacts (pressing on the table keeps the target a bounded distance inside it).
        ik_damping: Damping (lambda) of the least-squares IK; trades accuracy near singularities for
            bounded joint steps.
        rot_gain: Weight of the orientation error (rad) against the position error (m) in the IK.
        nullspace_gain: Fraction of the distance to the ready pose closed per step in the null space.
        max_joint_step: Largest joint target change per control step (rad); larger steps are scaled down.
        joint_margin: Joint targets stay this far inside the joint limits (rad).
        gripper_speed: Finger target speed (m/s per finger). The real Franka Hand is slower (~0.05);
            0.1 keeps episodes short.
        workspace_low: Lowest TCP target (x, y, z) in m, world frame (the table top is z = 0).
        workspace_high: Highest TCP target (x, y, z).
        start_ee: TCP position at reset (m).
        start_ee_noise: Uniform half-width of the reset TCP position noise per axis (m).
        interp_steps: The servo targets ramp from the previous to the new targets in this many equal
            stages per control period (each a call into the physics thread pool); it must divide the
            physics steps per control period. 1 holds them fixed (fastest, jerky).
    """

    max_step: float = 0.02
    max_lead: float = 0.05
    ik_damping: float = 0.05
    rot_gain: float = 1.0
    nullspace_gain: float = 0.05
    max_joint_step: float = 0.3
    joint_margin: float = 0.02
    gripper_speed: float = 0.1
    workspace_low: tuple[float, float, float] = (0.25, -0.35, -0.01)
    workspace_high: tuple[float, float, float] = (0.75, 0.35, 0.45)
    start_ee: tuple[float, float, float] = (0.45, 0.0, 0.22)
    start_ee_noise: float = 0.02
    interp_steps: int = 5


@dataclass(frozen=True, kw_only=True)
class CubeRandomizationConfig:
    """Per-episode randomisation of the cube (uniform ranges).

    Attributes:
        center: Centre of the spawn area (x, y) in m.
        spawn_half: Half-width of the square spawn area (m): 0.05 is a 10 x 10 cm area.
        yaw: Yaw range (rad); a cube repeats every 90 deg, so +-45 deg covers every yaw.
        half_size: Half of the cube's side (m).
        friction: Sliding friction coefficient of the cube.
        mass: Cube mass (kg).
    """

    center: tuple[float, float] = (0.5, 0.0)
    spawn_half: float = 0.05
    yaw: tuple[float, float] = (-np.pi / 4, np.pi / 4)
    half_size: tuple[float, float] = (0.017, 0.023)
    friction: tuple[float, float] = (0.5, 1.2)
    mass: tuple[float, float] = (0.05, 0.25)


@dataclass(frozen=True, kw_only=True)
class PegRandomizationConfig:
    """Per-episode randomisation of the peg and the socket (uniform ranges).

    Attributes:
        socket_center: Centre of the socket's spawn area (x, y) in m.
        socket_half: Half-width of the socket's square spawn area (m).
        socket_yaw: Socket yaw range (rad). The hand's yaw is fixed, so a square peg only goes in when the
            corner overlap (half_width * yaw) stays below half the clearance: keep this small.
        half_width: Half of the peg's square side (m).
        clearance: Hole side minus peg side (m), total: 1-2 mm is a tight fit.
        friction: Sliding friction coefficient of the peg.
        mass: Peg mass (kg).
        grasp_offset: Uniform half-width of the peg's offset along the finger pads (world x) in the hand (m).
        grasp_height: Range of the peg top above the TCP (m), i.e. how deep the fingers hold it.
    """

    socket_center: tuple[float, float] = (0.5, 0.0)
    socket_half: float = 0.05
    socket_yaw: tuple[float, float] = (-0.03, 0.03)
    half_width: tuple[float, float] = (0.011, 0.014)
    clearance: tuple[float, float] = (0.001, 0.002)
    friction: tuple[float, float] = (0.4, 1.0)
    mass: tuple[float, float] = (0.05, 0.15)
    grasp_offset: float = 0.004
    grasp_height: tuple[float, float] = (0.02, 0.03)


@dataclass(frozen=True, kw_only=True)
class PandaTaskConfig:
    """What every Panda task shares (the task configs below add their goal and randomisation).

    Attributes:
        control_dt: Seconds per control step (a multiple of the model's 2 ms physics step).
        max_episode_steps: Time limit in control steps.
        action_clip: Actions are clipped to [-action_clip, action_clip] (also the gym action box).
        fall_height: The episode ends when the object's centre drops below this z, or leaves the table.
        image: Add an `image` group (num_envs, H, W, 3) uint8 from the `image_camera` camera.
        image_size: (height, width) of the image group.
        image_camera: MJCF camera the image group renders.
        history_length: Frames of the `policy` group stacked into one observation.
        privileged_history_length: Frames of the `privileged` group.
        arm: Task-space control.
        backend: Which physics backend, and its threading.
    """

    control_dt: float = 0.05
    max_episode_steps: int = 50
    action_clip: float = 1.0
    fall_height: float = -0.05
    image: bool = False
    image_size: tuple[int, int] = (84, 84)
    image_camera: str = "workspace"
    history_length: int = 1
    privileged_history_length: int = 1
    arm: ArmControlConfig = field(default_factory=ArmControlConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)


@dataclass(frozen=True, kw_only=True)
class LiftConfig(PandaTaskConfig):
    """Panda-Lift-Cube: lift the cube so its bottom is `lift_height` above the table.

    Attributes:
        lift_height: Success height of the cube's bottom above the table (m).
        randomization: Cube randomisation.
    """

    lift_height: float = 0.05
    randomization: CubeRandomizationConfig = field(default_factory=CubeRandomizationConfig)


@dataclass(frozen=True, kw_only=True)
class PickPlaceConfig(PandaTaskConfig):
    """Panda-PickPlace-Cube: bring the cube's centre within `success_radius` of a target point.

    Attributes:
        success_radius: Largest cube-centre-to-target distance that counts (m).
        target_center: Centre of the target's area (x, y) in m.
        target_half: Half-width of the target's square area (m).
        target_height: Range of the target's height above the cube's resting height (m); > 0 is in the air.
        randomization: Cube randomisation.
    """

    max_episode_steps: int = 80
    success_radius: float = 0.025
    target_center: tuple[float, float] = (0.5, 0.0)
    target_half: float = 0.12
    target_height: tuple[float, float] = (0.0, 0.15)
    randomization: CubeRandomizationConfig = field(default_factory=CubeRandomizationConfig)


@dataclass(frozen=True, kw_only=True)
class InsertConfig(PandaTaskConfig):
    """Panda-Insert-Peg: push the grasped square peg at least `insert_depth` into the socket.

    Attributes:
        insert_depth: Success depth of the peg's bottom below the socket's top (m).
        socket_height: Height of the socket walls (m).
        socket_wall: Thickness of the socket walls (m).
        peg_half_length: Half of the peg's length (m).
        arm: Task-space control; the peg starts in the hand above the socket area.
        randomization: Peg and socket randomisation.
    """

    max_episode_steps: int = 60
    insert_depth: float = 0.02
    socket_height: float = 0.04
    socket_wall: float = 0.015
    peg_half_length: float = 0.04
    arm: ArmControlConfig = field(default_factory=lambda: ArmControlConfig(start_ee=(0.5, 0.0, 0.18)))
    randomization: PegRandomizationConfig = field(default_factory=PegRandomizationConfig)


# ---- observation terms -----------------------------------------------------------------------------


@dataclass
class PandaState:
    """What an observation or success term may read, for one control step. Shapes are (num_envs, ...)."""

    ee_pos: np.ndarray  # (n, 3) TCP position, world frame
    ee_vel: np.ndarray  # (n, 3) TCP linear velocity
    gripper: np.ndarray  # (n, 1) distance between the finger pads (m)
    gripper_vel: np.ndarray  # (n, 1) its rate (m/s)
    obj_pos: np.ndarray  # (n, 3) object centre
    obj_quat: np.ndarray  # (n, 4) w, x, y, z
    obj_linvel: np.ndarray  # (n, 3) world frame
    obj_angvel: np.ndarray  # (n, 3) object frame (MuJoCo's free-joint convention)
    target: np.ndarray  # (n, 3) goal point: pick-place target, socket hole top centre; zeros for lift
    params: np.ndarray  # (n, k) randomised parameters, in the order of the task's `PARAM_NAMES`


OBS_TERMS = {
    "ee_pos": lambda s: s.ee_pos,
    "ee_vel": lambda s: s.ee_vel,
    "gripper_opening": lambda s: s.gripper,
    "gripper_vel": lambda s: s.gripper_vel,
    "object_pos": lambda s: s.obj_pos,
    "object_rel_ee": lambda s: s.obj_pos - s.ee_pos,
    "target_pos": lambda s: s.target,
    "target_rel_object": lambda s: s.target - s.obj_pos,
    "object_quat": lambda s: s.obj_quat,
    "object_lin_vel": lambda s: s.obj_linvel,
    "object_ang_vel": lambda s: s.obj_angvel,
}

_ROBOT_TERMS = (
    ObsTerm(name="ee_pos", size=3),
    ObsTerm(name="ee_vel", size=3),
    ObsTerm(name="gripper_opening", size=1),
    ObsTerm(name="gripper_vel", size=1),
    ObsTerm(name="object_pos", size=3),
    ObsTerm(name="object_rel_ee", size=3),
)
_OBJECT_STATE_TERMS = (
    ObsTerm(name="object_quat", size=4),
    ObsTerm(name="object_lin_vel", size=3),
    ObsTerm(name="object_ang_vel", size=3),
)
_TARGET_TERMS = (ObsTerm(name="target_pos", size=3), ObsTerm(name="target_rel_object", size=3))


def obs_slices(terms: tuple[ObsTerm, ...]) -> dict[str, slice]:
    """Term name -> its columns in the group's vector (for code that reads terms by name, like experts)."""
    out, start = {}, 0
    for t in terms:
        out[t.name] = slice(start, start + t.size)
        start += t.size
    return out


# ---- pure success terms ----------------------------------------------------------------------------


def lift_success(obj_pos: np.ndarray, half_size: np.ndarray, height: float) -> np.ndarray:
    """(n,) True where the cube's bottom is at least `height` above the table (z = 0)."""
    return obj_pos[:, 2] - half_size >= height


def reach_success(obj_pos: np.ndarray, target: np.ndarray, radius: float) -> np.ndarray:
    """(n,) True where the object's centre is within `radius` of the target."""
    return np.linalg.norm(obj_pos - target, axis=1) <= radius


def insert_success(peg_bottom: np.ndarray, socket_top: np.ndarray, socket_yaw: np.ndarray, hole_half: np.ndarray,
                   depth: float) -> np.ndarray:
    """(n,) True where the peg's bottom centre is inside the hole and `depth` below its top.

    Args:
        peg_bottom: (n, 3) centre of the peg's bottom face.
        socket_top: (n, 3) centre of the hole's opening.
        socket_yaw: (n,) socket yaw (rad).
        hole_half: (n,) half of the hole's side (m).
        depth: Required depth below the opening (m).
    """
    d = peg_bottom - socket_top
    c, s = np.cos(socket_yaw), np.sin(socket_yaw)
    local_x, local_y = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
    inside = (np.abs(local_x) <= hole_half) & (np.abs(local_y) <= hole_half)
    return inside & (d[:, 2] <= -depth)


# ---- helpers ---------------------------------------------------------------------------------------


def _yaw_quat(yaw: np.ndarray) -> np.ndarray:
    """(k, 4) w, x, y, z quaternions of rotations by `yaw` about world z."""
    return np.stack([np.cos(yaw / 2), np.zeros_like(yaw), np.zeros_like(yaw), np.sin(yaw / 2)], axis=1)


def _rot_error(rot: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(n, 3) small-angle rotation (world frame) that turns rotation matrices `rot` (n, 3, 3) into `target`."""
    return 0.5 * np.cross(rot, target[None], axisa=1, axisb=1, axisc=1).sum(axis=2)


def _quat_z_axis(q: np.ndarray) -> np.ndarray:
    """(n, 3) the body z axis in the world for (n, 4) w, x, y, z quaternions."""
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    return np.stack([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)], axis=1)


def refit_bvh(m: mujoco.MjModel, body: int) -> None:
    """Recompute the bounding-volume hierarchy of `body` after its geoms were resized or moved.

    MuJoCo builds each body's box tree (in the body's inertial frame) at compile time and the broad and mid
    phase trust it: a geom made larger or moved at run time would have its contacts missed until the shapes
    overlap by the difference, and a light object is then squeezed deep into a finger before anything
    pushes back. Leaves are refitted from the geoms' boxes, inner nodes as the union of their children.
    """
    adr, num = int(m.body_bvhadr[body]), int(m.body_bvhnum[body])
    if num == 0:
        return
    r_inertial = np.empty(9)
    mujoco.mju_quat2Mat(r_inertial, m.body_iquat[body])
    r_inertial = r_inertial.reshape(3, 3)
    r_geom = np.empty(9)
    # Children follow their parent in the node array, so a reverse sweep sees children before parents.
    for node in range(adr + num - 1, adr - 1, -1):
        geom = int(m.bvh_nodeid[node])
        if geom >= 0:
            mujoco.mju_quat2Mat(r_geom, m.geom_quat[geom])
            rot = r_inertial.T @ r_geom.reshape(3, 3)  # geom frame -> inertial frame
            center = r_inertial.T @ (m.geom_pos[geom] - m.body_ipos[body]) + rot @ m.geom_aabb[geom, :3]
            m.bvh_aabb[node] = [*center, *(np.abs(rot) @ m.geom_aabb[geom, 3:])]
        else:
            a, b = m.bvh_aabb[adr + m.bvh_child[node]]
            lo = np.minimum(a[:3] - a[3:], b[:3] - b[3:])
            hi = np.maximum(a[:3] + a[3:], b[:3] + b[3:])
            m.bvh_aabb[node] = [*(lo + hi) / 2, *(hi - lo) / 2]


# ---- the env ---------------------------------------------------------------------------------------


class PandaEnv(VecEnv):
    """Batched Panda manipulation on the CPU MuJoCo backend; subclasses add the object, goal and success.

    Subclasses set `OBJECTS` (what `load_panda` keeps), `POLICY_TERMS`, `PRIVILEGED_TERMS`, `PARAM_NAMES`
    and implement `_reset_task` and `_success`.
    """

    # Judged by success rate (info["success"]), not by velocity tracking: `s2r eval` reads this.
    sparse_success = True

    OBJECTS: ClassVar[tuple[str, ...]] = ()
    OBJECT_BODY: ClassVar[str] = ""
    POLICY_TERMS: ClassVar[tuple[ObsTerm, ...]] = ()
    PRIVILEGED_TERMS: ClassVar[tuple[ObsTerm, ...]] = ()
    PARAM_NAMES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: Any, num_envs: int = 1, seed: int = 0) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.cfg = cfg
        self.num_envs = n = num_envs
        self.rng = np.random.default_rng(seed)
        model = load_panda(self.OBJECTS)
        self.substeps = control_substeps(model.opt.timestep, cfg.control_dt)
        self.model = model
        self.backend = make_backend(cfg.backend.name, model, n, cfg.backend)
        # The IK reads kinematics from an arm-only copy of the model: the arm is never randomised, and
        # without the objects each forward-kinematics call is cheaper.
        self._kin_model = load_panda(())
        self._kin_data = mujoco.MjData(self._kin_model)
        self._tcp = mujoco.mj_name2id(self._kin_model, mujoco.mjtObj.mjOBJ_SITE, "tcp")
        self._jacp = np.zeros((3, self._kin_model.nv))
        self._jacr = np.zeros((3, self._kin_model.nv))
        self._body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, self.OBJECT_BODY)
        self._geom = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, self.OBJECT_BODY)
        # The object's friction and mass as declared model fields ("set": the task draws the values). Its
        # size and inertia tensor change shape-dependent fields and bounding volumes, written per task.
        self.object_fields = (
            FieldRandomization(field="geom_friction", rows=(self._geom,), cols=(0,), op="set", draw="friction"),
            FieldRandomization(field="body_mass", rows=(self._body,), op="set", draw="mass"),
        )
        self._q_lo = model.jnt_range[:ARM_DOF, 0] + cfg.arm.joint_margin
        self._q_hi = model.jnt_range[:ARM_DOF, 1] - cfg.arm.joint_margin
        self._ws_lo, self._ws_hi = np.asarray(cfg.arm.workspace_low), np.asarray(cfg.arm.workspace_high)

        groups = {"policy": GroupSpec(terms=self.POLICY_TERMS, history=cfg.history_length),
                  "privileged": GroupSpec(terms=self.PRIVILEGED_TERMS, history=cfg.privileged_history_length)}
        if cfg.image:
            if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, cfg.image_camera) < 0:
                raise ValueError(f"image_camera '{cfg.image_camera}' is not a camera of the Panda model; "
                                 "use 'workspace' or add the camera to panda.xml")
            h, w = cfg.image_size
            groups["image"] = GroupSpec(image=ImageSpec(camera=cfg.image_camera, height=h, width=w))
        self.spec = EnvSpec(
            groups=groups,
            action_names=ACTION_NAMES,
            control_dt=cfg.control_dt,
            max_episode_steps=cfg.max_episode_steps,
            # Actions are task-space deltas, not joint targets: no per-joint offset or scale applies.
            extras={"action_space": "ee_delta", "action_scale": 1.0, "max_step": cfg.arm.max_step,
                    "default_joint_pos": [0.0] * 4, "joint_lower": [-cfg.action_clip] * 4,
                    "joint_upper": [cfg.action_clip] * 4, "kp": [0.0] * 4, "kv": [0.0] * 4,
                    "arm_joint_names": [f"joint{i + 1}" for i in range(ARM_DOF)], "home_joint_pos": HOME_Q.tolist(),
                    "tcp_rotation": R_DOWN.tolist(), "camera": cfg.image_camera, "param_names": list(self.PARAM_NAMES),
                    **({"image_shape": (*cfg.image_size, 3)} if cfg.image else {})},
        )
        self.ee_pos = np.zeros((n, 3))
        self.ee_rot = np.zeros((n, 3, 3))
        self.jac = np.zeros((n, 6, ARM_DOF))  # rows: 3 translation, 3 rotation
        self.ee_target = np.zeros((n, 3))
        self.finger_target = np.full(n, FINGER_MAX)
        self.target = np.zeros((n, 3))
        self.params = np.zeros((n, len(self.PARAM_NAMES)))
        self.actions = np.zeros((n, 4))
        self.episode_step = np.zeros(n, dtype=np.int64)
        self.episode_return = np.zeros(n)
        self.nan_resets = 0
        self._ctrl = np.zeros((n, model.nu))
        self._act0 = 1 + model.nq + model.nv  # the arm servos' filter states in the FULLPHYSICS state vector
        self._chunks = max(1, min(cfg.arm.interp_steps, self.substeps))
        if self.substeps % self._chunks:
            raise ValueError(f"arm.interp_steps {cfg.arm.interp_steps} must divide the {self.substeps} physics steps "
                             "of one control period")
        self._renderer: mujoco.Renderer | None = None
        self._history = ObsHistory(self.spec.groups, n)
        self._q_start = self._solve_start_pose(np.asarray(cfg.arm.start_ee), HOME_Q, iters=100)

    # ---- public API -------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Obs:
        """Reset every env and return the first observations."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        ids = np.arange(self.num_envs)
        self._reset_envs(ids)
        self._history.clear()
        return self._observe(self._state())

    def randomize_episode_start(self) -> None:
        """Spread time-outs over the batch so resets do not arrive all at once (used by trainers)."""
        self.episode_step[:] = self.rng.integers(0, self.cfg.max_episode_steps, size=self.num_envs)

    def step(self, actions: Any) -> tuple[Obs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Apply (num_envs, 4) task-space actions for one control period (see `VecEnv.step`).

        info holds, besides the `VecEnv` keys, "success": (num_envs,) bool, True on the step an env
        succeeded (that env then also reports terminated and reward 1).
        """
        cfg = self.cfg
        a = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)
        if a.shape[1] != 4:
            raise ValueError(f"actions have {a.shape[1]} columns; Panda tasks take 4 (dx, dy, dz, gripper)")
        clip = cfg.action_clip
        a = np.clip(np.nan_to_num(a, nan=0.0, posinf=clip, neginf=-clip), -clip, clip)
        self.actions[:] = a
        prev = self._ctrl.copy()
        new = self._joint_targets(a)
        # Servo targets move in a ramp across the control period, like a robot controller's interpolator: a
        # step change every 50 ms would jerk the arm at ~8 g and shake light objects out of the hand.
        chunks = self._chunks
        for k in range(1, chunks + 1):
            self.backend.step(prev + (new - prev) * (k / chunks), self.substeps // chunks)
        self.episode_step += 1
        bad = self.backend.diverged()
        if bad.any():
            # A blown-up world: reset it, count it, never let NaN reach the learner.
            self.nan_resets += int(bad.sum())
            self._reset_envs(np.flatnonzero(bad))
        self._kinematics(np.flatnonzero(~bad))

        s = self._state()
        success = self._success(s) & ~bad
        off_table = (np.abs(s.obj_pos[:, :2] - TABLE_CENTER) > TABLE_HALF).any(axis=1)
        fell = ((s.obj_pos[:, 2] < cfg.fall_height) | off_table) & ~success
        terminated = success | fell | bad
        truncated = (self.episode_step >= cfg.max_episode_steps) & ~terminated
        reward = success.astype(np.float32)
        self.episode_return += reward

        obs = self._observe(s)
        done = terminated | truncated
        info: dict[str, Any] = {"success": success}
        if done.any():
            ids = np.flatnonzero(done)
            info["final_obs"] = {k: v.copy() for k, v in obs.items()}
            info["episode"] = {
                "env_ids": ids,
                "return": self.episode_return[ids].copy(),
                "length": self.episode_step[ids].copy(),
                "success": success[ids].copy(),
                "fell": (fell | bad)[ids].copy(),
                "goal_distance": self._goal_distance(s)[ids],
                # The shared trainers and evaluators read this velocity-tracking key; it does not apply here.
                "vel_error": np.full(len(ids), np.nan),
            }
            self._reset_envs(ids)
            fresh = self._history.reset_rows(self._frames(self._state(), ids), ids)
            for k in obs:
                obs[k][ids] = fresh[k]
        info["log"] = {"nan_resets": self.nan_resets}
        return obs, reward, terminated, truncated, info

    def render(self, env_ids: np.ndarray | None = None) -> np.ndarray:
        """(k, H, W, 3) uint8 images of `env_ids` (default all) from the fixed `image_camera` camera."""
        ids = np.arange(self.num_envs) if env_ids is None else np.asarray(env_ids)
        h, w = self.cfg.image_size
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, h, w)
            self._render_data = mujoco.MjData(self.model)
            self._render_opt = mujoco.MjvOption()
            self._render_cam = mujoco.MjvCamera()
            self._render_cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
            self._render_cam.fixedcamid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, self.cfg.image_camera)
        out = np.empty((len(ids), h, w, 3), dtype=np.uint8)
        d = self._render_data
        for k, i in enumerate(ids):
            m = self.backend.models[i]
            mujoco.mj_setState(m, d, self.backend.state[i], mujoco.mjtState.mjSTATE_FULLPHYSICS)
            mujoco.mj_forward(m, d)
            # Each world has its own model (object size, socket and target placement), so build the scene
            # from that model rather than the renderer's own.
            mujoco.mjv_updateScene(m, d, self._render_opt, None, self._render_cam, mujoco.mjtCatBit.mjCAT_ALL,
                                   self._renderer.scene)
            out[k] = self._renderer.render()
        return out

    def close(self) -> None:
        """Stop the backend's threads and free the renderer."""
        self.backend.close()
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ---- task hooks -------------------------------------------------------------------------------

    def _reset_task(self, ids: np.ndarray) -> None:
        """Randomise the object (and goal) of worlds `ids`; the arm is already at its start pose."""
        raise NotImplementedError

    def _success(self, s: PandaState) -> np.ndarray:
        """(n,) bool success of the current state."""
        raise NotImplementedError

    def _goal_distance(self, s: PandaState) -> np.ndarray:
        """(n,) how far from success (m), for episode statistics."""
        return np.linalg.norm(s.target - s.obj_pos, axis=1)

    # ---- control ----------------------------------------------------------------------------------

    def _joint_targets(self, a: np.ndarray) -> np.ndarray:
        """(n, nu) servo targets: 7 arm joints from the differential IK, then the mean finger opening."""
        arm = self.cfg.arm
        # Move the Cartesian target, but never more than max_lead away from where the TCP really is.
        tgt = self.ee_target + a[:, :3] * arm.max_step
        tgt = np.clip(tgt, self.ee_pos - arm.max_lead, self.ee_pos + arm.max_lead)
        self.ee_target[:] = np.clip(tgt, self._ws_lo, self._ws_hi)
        q = self.backend.qpos[:, :ARM_DOF]
        err = np.concatenate([self.ee_target - self.ee_pos, arm.rot_gain * _rot_error(self.ee_rot, R_DOWN)], axis=1)
        dq = self._dls_step(q, err)
        self._ctrl[:, :ARM_DOF] = np.clip(q + dq, self._q_lo, self._q_hi)  # (n, 7)
        # Gripper: -1 open ... +1 closed, reached at a finite finger speed like a real hand.
        want = FINGER_MAX * (1.0 - a[:, 3]) / 2
        rate = arm.gripper_speed * self.cfg.control_dt
        self.finger_target += np.clip(want - self.finger_target, -rate, rate)
        self._ctrl[:, ARM_DOF] = self.finger_target
        return self._ctrl

    def _dls_step(self, q: np.ndarray, err: np.ndarray) -> np.ndarray:
        """(n, 7) joint step for (n, 6) task errors: damped least squares plus a null-space pull home."""
        arm = self.cfg.arm
        jac = self.jac
        jt = jac.transpose(0, 2, 1)  # (n, 7, 6)
        a = jac @ jt + (arm.ik_damping**2) * np.eye(6)
        pinv = jt @ np.linalg.inv(a)  # (n, 7, 6)
        dq = (pinv @ err[:, :, None])[:, :, 0]
        null = np.eye(ARM_DOF) - pinv @ jac  # (n, 7, 7)
        dq += (null @ (arm.nullspace_gain * (HOME_Q - q))[:, :, None])[:, :, 0]
        norm = np.abs(dq).max(axis=1, keepdims=True)
        return dq * np.minimum(1.0, arm.max_joint_step / np.maximum(norm, 1e-12))

    def _kinematics(self, ids: np.ndarray) -> None:
        """TCP position, orientation and Jacobian of worlds `ids` from their current joint angles."""
        m, d, qpos = self._kin_model, self._kin_data, self.backend.qpos
        for i in ids:
            d.qpos[:] = qpos[i, : m.nq]
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self._tcp)
            self.ee_pos[i] = d.site_xpos[self._tcp]
            self.ee_rot[i] = d.site_xmat[self._tcp].reshape(3, 3)
            self.jac[i, :3] = self._jacp[:, :ARM_DOF]
            self.jac[i, 3:] = self._jacr[:, :ARM_DOF]

    def _solve_start_pose(self, ee: np.ndarray, seed_q: np.ndarray, iters: int) -> np.ndarray:
        """Joint angles that put the TCP at `ee` pointing down (iterated DLS on the arm-only model)."""
        m, d = self._kin_model, self._kin_data
        q = seed_q.copy()
        jac = np.zeros((6, ARM_DOF))
        for _ in range(iters):
            d.qpos[:ARM_DOF] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self._tcp)
            jac[:3], jac[3:] = self._jacp[:, :ARM_DOF], self._jacr[:, :ARM_DOF]
            rot = d.site_xmat[self._tcp].reshape(1, 3, 3)
            err = np.concatenate([ee - d.site_xpos[self._tcp], _rot_error(rot, R_DOWN)[0]])
            if np.abs(err).max() < 1e-6:
                break
            q = np.clip(q + jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(6), err), self._q_lo, self._q_hi)
        return q

    # ---- state, observations, resets --------------------------------------------------------------

    def _state(self) -> PandaState:
        qpos, qvel = self.backend.qpos, self.backend.qvel
        ee_vel = (self.jac[:, :3] @ qvel[:, :ARM_DOF, None])[:, :, 0]
        return PandaState(
            ee_pos=self.ee_pos, ee_vel=ee_vel,
            gripper=qpos[:, _FINGERS].sum(axis=1, keepdims=True), gripper_vel=qvel[:, _FINGERS].sum(axis=1, keepdims=True),
            obj_pos=qpos[:, _OBJ_POS], obj_quat=qpos[:, _OBJ_QUAT], obj_linvel=qvel[:, _OBJ_LINVEL],
            obj_angvel=qvel[:, _OBJ_ANGVEL], target=self.target, params=self.params,
        )

    def _term(self, s: PandaState, name: str) -> np.ndarray:
        if name in OBS_TERMS:
            return OBS_TERMS[name](s)
        return s.params[:, self.PARAM_NAMES.index(name)][:, None]

    def _frames(self, s: PandaState, ids: np.ndarray | None = None) -> Obs:
        """One frame of each vector group (float64), plus the image group, for every env or for `ids`."""
        sel = slice(None) if ids is None else ids
        out = {group: np.concatenate([self._term(s, t.name)[sel] for t in terms], axis=1)
               for group, terms in self.spec.obs_terms.items()}
        if self.cfg.image:
            out["image"] = self.render(None if ids is None else ids)
        return out

    def _observe(self, s: PandaState) -> Obs:
        """Observation groups of every env; pushes one frame onto each vector group's history."""
        obs = self._history.push(self._frames(s))
        return {k: v if self.spec.groups[k].is_image else v.astype(np.float32) for k, v in obs.items()}

    def _reset_envs(self, ids: np.ndarray) -> None:
        k = len(ids)
        if k == 0:
            return
        arm, rng = self.cfg.arm, self.rng
        self.backend.state[ids] = 0.0
        self.backend.qpos[ids, :ARM_DOF] = self._q_start
        noise = rng.uniform(-arm.start_ee_noise, arm.start_ee_noise, (k, 3))
        if arm.start_ee_noise > 0:
            start = np.asarray(arm.start_ee)
            for i, dx in zip(ids, noise, strict=True):
                self.backend.qpos[i, :ARM_DOF] = self._solve_start_pose(start + dx, self._q_start, iters=20)
        self.backend.qpos[ids, _FINGERS] = FINGER_MAX
        self._kinematics(ids)
        self.ee_target[ids] = self.ee_pos[ids]
        self.finger_target[ids] = FINGER_MAX
        self._reset_task(ids)
        # Servo targets (and their low-pass filter states, the actuators' activations) equal to the start
        # pose: the first physics steps hold still instead of jumping.
        self._ctrl[ids, :ARM_DOF] = self.backend.qpos[ids, :ARM_DOF]
        self.backend.state[ids, self._act0 : self._act0 + ARM_DOF] = self.backend.qpos[ids, :ARM_DOF]
        self._ctrl[ids, ARM_DOF] = self.finger_target[ids]
        self.actions[ids] = 0.0
        self.episode_step[ids] = 0
        self.episode_return[ids] = 0.0

    def _set_box(self, i: int, geom: int, half: np.ndarray, pos: np.ndarray | None = None) -> None:
        """Resize (and move) box `geom` of world i; call `refit_bvh` for its body afterwards."""
        m = self.backend.models[i]
        m.geom_size[geom] = half
        # The narrow phase skips pairs whose bounding spheres do not meet: keep them the box's.
        m.geom_rbound[geom] = float(np.linalg.norm(half))
        m.geom_aabb[geom] = [0.0, 0.0, 0.0, *half]
        if pos is not None:
            m.geom_pos[geom] = pos


class _CubeEnv(PandaEnv):
    """A cube on the table, randomised in pose, size, friction and mass."""

    OBJECTS = ("cube",)
    OBJECT_BODY = "cube"
    PARAM_NAMES = ("object_half_size", "object_friction", "object_mass")

    def _reset_cube(self, ids: np.ndarray) -> None:
        r, rng, k = self.cfg.randomization, self.rng, len(ids)
        half = rng.uniform(*r.half_size, k)
        fric = rng.uniform(*r.friction, k)
        mass = rng.uniform(*r.mass, k)
        for i, h, ms in zip(ids, half, mass, strict=True):
            m = self.backend.models[i]
            self._set_box(i, self._geom, np.full(3, h))
            m.body_inertia[self._body] = 2.0 / 3.0 * ms * h * h  # solid cube, side 2h
            refit_bvh(m, self._body)
        self.backend.randomize(ids, self.object_fields, np.stack([fric, mass], axis=1))
        xy = np.asarray(r.center) + rng.uniform(-r.spawn_half, r.spawn_half, (k, 2))
        self.backend.qpos[ids, 9:11] = xy
        self.backend.qpos[ids, 11] = half + 1e-4  # resting on the table, not in it
        self.backend.qpos[ids, _OBJ_QUAT] = _yaw_quat(rng.uniform(*r.yaw, k))
        self.params[ids] = np.stack([half, fric, mass], axis=1)


class LiftEnv(_CubeEnv):
    """Panda-Lift-Cube: grasp the cube and lift its bottom `lift_height` above the table."""

    POLICY_TERMS = _ROBOT_TERMS
    PRIVILEGED_TERMS = (*_OBJECT_STATE_TERMS, *(ObsTerm(name=p, size=1) for p in _CubeEnv.PARAM_NAMES))

    def _reset_task(self, ids: np.ndarray) -> None:
        self._reset_cube(ids)
        # The "goal" is the cube's success height above where it starts (used for goal_distance only).
        self.target[ids] = self.backend.qpos[ids, _OBJ_POS]
        self.target[ids, 2] += self.cfg.lift_height

    def _success(self, s: PandaState) -> np.ndarray:
        return lift_success(s.obj_pos, s.params[:, 0], self.cfg.lift_height)

    def _goal_distance(self, s: PandaState) -> np.ndarray:
        return np.maximum(0.0, self.cfg.lift_height - (s.obj_pos[:, 2] - s.params[:, 0]))


class PickPlaceEnv(_CubeEnv):
    """Panda-PickPlace-Cube: bring the cube's centre within `success_radius` of a random target point."""

    OBJECTS = ("cube", "target")
    POLICY_TERMS = (*_ROBOT_TERMS, *_TARGET_TERMS)
    PRIVILEGED_TERMS = LiftEnv.PRIVILEGED_TERMS

    def __init__(self, cfg: PickPlaceConfig, num_envs: int = 1, seed: int = 0) -> None:
        super().__init__(cfg, num_envs, seed)
        self._site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "target")

    def _reset_task(self, ids: np.ndarray) -> None:
        cfg, rng, k = self.cfg, self.rng, len(ids)
        self._reset_cube(ids)
        xy = np.asarray(cfg.target_center) + rng.uniform(-cfg.target_half, cfg.target_half, (k, 2))
        z = self.params[ids, 0] + rng.uniform(*cfg.target_height, k)
        self.target[ids] = np.concatenate([xy, z[:, None]], axis=1)
        for i in ids:
            self.backend.models[i].site_pos[self._site] = self.target[i]  # drawn in images

    def _success(self, s: PandaState) -> np.ndarray:
        return reach_success(s.obj_pos, s.target, self.cfg.success_radius)


class InsertEnv(PandaEnv):
    """Panda-Insert-Peg: the square peg starts in the closed hand; push it `insert_depth` into the socket."""

    OBJECTS = ("peg", "socket")
    OBJECT_BODY = "peg"
    PARAM_NAMES = ("object_half_size", "object_friction", "object_mass", "socket_yaw", "clearance")
    POLICY_TERMS = (*_ROBOT_TERMS, *_TARGET_TERMS)
    PRIVILEGED_TERMS = (*_OBJECT_STATE_TERMS, *(ObsTerm(name=p, size=1) for p in PARAM_NAMES))

    def __init__(self, cfg: InsertConfig, num_envs: int = 1, seed: int = 0) -> None:
        super().__init__(cfg, num_envs, seed)
        name = lambda kind, n: mujoco.mj_name2id(self.model, kind, n)  # noqa: E731
        self._socket = name(mujoco.mjtObj.mjOBJ_BODY, "socket")
        self._walls = [name(mujoco.mjtObj.mjOBJ_GEOM, f"socket_{w}") for w in ("px", "nx", "py", "ny")]

    def _reset_task(self, ids: np.ndarray) -> None:
        cfg, r, rng, k = self.cfg, self.cfg.randomization, self.rng, len(ids)
        half = rng.uniform(*r.half_width, k)
        fric = rng.uniform(*r.friction, k)
        mass = rng.uniform(*r.mass, k)
        yaw = rng.uniform(*r.socket_yaw, k)
        clear = rng.uniform(*r.clearance, k)
        sock = np.asarray(r.socket_center) + rng.uniform(-r.socket_half, r.socket_half, (k, 2))
        offset = rng.uniform(-r.grasp_offset, r.grasp_offset, k)
        top = rng.uniform(*r.grasp_height, k)
        L, t, hh = cfg.peg_half_length, cfg.socket_wall / 2, cfg.socket_height / 2
        for j, i in enumerate(ids):
            m = self.backend.models[i]
            w = half[j]
            self._set_box(i, self._geom, np.array([w, w, L]))
            m.body_inertia[self._body] = mass[j] / 3.0 * np.array([w * w + L * L, w * w + L * L, 2 * w * w])
            # Walls around a hole of side 2 * hole: x walls span the full outer width, y walls fit between.
            hole = w + clear[j] / 2
            px, nx, py, ny = self._walls
            self._set_box(i, px, np.array([t, hole + 2 * t, hh]), np.array([hole + t, 0.0, hh]))
            self._set_box(i, nx, np.array([t, hole + 2 * t, hh]), np.array([-hole - t, 0.0, hh]))
            self._set_box(i, py, np.array([hole, t, hh]), np.array([0.0, hole + t, hh]))
            self._set_box(i, ny, np.array([hole, t, hh]), np.array([0.0, -hole - t, hh]))
            m.body_pos[self._socket] = [sock[j, 0], sock[j, 1], 0.0]
            m.body_quat[self._socket] = _yaw_quat(yaw[j : j + 1])[0]
            refit_bvh(m, self._body)
            refit_bvh(m, self._socket)
        self.backend.randomize(ids, self.object_fields, np.stack([fric, mass], axis=1))
        # The peg hangs in the closed hand, upright, its top `top` above the TCP, shifted along the pads.
        peg = self.ee_pos[ids].copy()
        peg[:, 0] += offset
        peg[:, 2] += top - L
        self.backend.qpos[ids, _OBJ_POS] = peg
        self.backend.qpos[ids, _OBJ_QUAT] = [1.0, 0.0, 0.0, 0.0]
        # Pads just touching the peg with the servo already closing: the grasp holds from the first step.
        self.backend.qpos[ids, _FINGERS] = half[:, None] - 3e-4
        self.finger_target[ids] = 0.0
        self.target[ids] = np.concatenate([sock, np.full((k, 1), cfg.socket_height)], axis=1)
        self.params[ids] = np.stack([half, fric, mass, yaw, clear], axis=1)

    def peg_bottom(self, s: PandaState) -> np.ndarray:
        """(n, 3) centre of the peg's bottom face."""
        return s.obj_pos - self.cfg.peg_half_length * _quat_z_axis(s.obj_quat)

    def _success(self, s: PandaState) -> np.ndarray:
        hole = s.params[:, 0] + s.params[:, 4] / 2
        return insert_success(self.peg_bottom(s), s.target, s.params[:, 3], hole, self.cfg.insert_depth)

    def _goal_distance(self, s: PandaState) -> np.ndarray:
        d = self.peg_bottom(s) - s.target
        d[:, 2] += self.cfg.insert_depth
        return np.linalg.norm(d, axis=1)
