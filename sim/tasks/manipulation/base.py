"""The Panda env every manipulation task derives from: task-space control, the step, images and resets.

Subclasses (tasks.py) add the object, the goal and the success test.
"""

from __future__ import annotations

from typing import Any, ClassVar

import mujoco
import numpy as np
from s2r.sim.backends import FieldRandomization, make_backend
from s2r.sim.env import EnvSpec, GroupSpec, ImageSpec, Obs, ObsHistory, ObsTerm, VecEnv, control_substeps
from s2r.sim.models import load_panda
from s2r.sim.tasks.manipulation.kinematics import (
    ARM_DOF,
    FINGER_MAX,
    HOME_Q,
    R_DOWN,
    ArmKinematics,
    dls_step,
    rot_error,
)
from s2r.sim.tasks.manipulation.privileged import Privileges, privileged_action_names
from s2r.sim.tasks.manipulation.terms import OBS_TERMS, TABLE_CENTER, TABLE_HALF, PandaState

ACTION_NAMES = ("ee_dx", "ee_dy", "ee_dz", "gripper")
# qpos/qvel layout shared by every task model: 7 arm joints, 2 fingers, then one free object.
FINGERS = slice(7, 9)
OBJ_POS, OBJ_QUAT = slice(9, 12), slice(12, 16)
OBJ_LINVEL, OBJ_ANGVEL = slice(9, 12), slice(12, 15)


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
    #: Geoms besides the object that a hand with the table relaxation must still touch (fixtures).
    FIXTURE_GEOMS: ClassVar[tuple[str, ...]] = ()
    #: A body on one slide joint that the task moves (a drawer), the target of a `FixtureForce`; "" for none.
    FIXTURE_BODY: ClassVar[str] = ""

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
        self.kin = ArmKinematics()
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
        q_lo_nominal, q_hi_nominal = self._q_lo, self._q_hi
        fixtures = tuple(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, g) for g in self.FIXTURE_GEOMS)
        # Privileged actions (sim only): extra action columns after the task's four, and per-world relaxations.
        self.priv = Privileges(cfg.privileged, self.backend.models, self._body, (self._geom, *fixtures),
                               self._q_lo, self._q_hi, self._ws_lo, *self._fixture(model), task_name=type(cfg).__name__)
        self._q_lo, self._q_hi, self._ws_lo = self.priv.q_lo, self.priv.q_hi, self.priv.ws_lo  # (n, 7), (n, 7), (n, 3)
        for kind, gate, other in (("virtual_wrench", self.priv.wrench_gate, "reach"),
                                  ("table_collision_off", self.priv.table_gate, "episode")):
            if gate not in ("", other) and not self.HAS_GRASP_POSE:
                raise ValueError(f"{type(cfg).__name__}.privileged: {kind}.gate '{gate}' needs a task that defines "
                                 f"a grasp pose (Panda-Lift-FlatBox does; {type(self).__name__} does not): use gate "
                                 f"'{other}'")
        self.task_action_dim = len(ACTION_NAMES)

        policy_terms = self.POLICY_TERMS if cfg.object_in_policy else tuple(
            t for t in self.POLICY_TERMS if t.name not in ("object_pos", "object_rel_ee"))
        groups = {"policy": GroupSpec(terms=policy_terms, history=cfg.history_length),
                  "privileged": GroupSpec(terms=self.PRIVILEGED_TERMS, history=cfg.privileged_history_length)}
        if cfg.image:
            if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, cfg.image_camera) < 0:
                raise ValueError(f"image_camera '{cfg.image_camera}' is not a camera of the Panda model; "
                                 "use 'workspace' or add the camera to panda.xml")
            h, w = cfg.image_size
            groups["image"] = GroupSpec(image=ImageSpec(camera=cfg.image_camera, height=h, width=w))
        self.spec = EnvSpec(
            groups=groups,
            action_names=(*ACTION_NAMES, *privileged_action_names(cfg.privileged)),
            control_dt=cfg.control_dt,
            max_episode_steps=cfg.max_episode_steps,
            # Actions are task-space deltas, not joint targets: no per-joint offset or scale applies.
            extras={"action_space": "ee_delta", "action_scale": 1.0, "max_step": cfg.arm.max_step,
                    "default_joint_pos": [0.0] * 4, "joint_lower": [-cfg.action_clip] * 4,
                    "joint_upper": [cfg.action_clip] * 4, "kp": [0.0] * 4, "kv": [0.0] * 4,
                    "arm_joint_names": [f"joint{i + 1}" for i in range(ARM_DOF)], "home_joint_pos": HOME_Q.tolist(),
                    "tcp_rotation": R_DOWN.tolist(),
                    "privileged_action_dims": self.priv.extra_dims, "camera": cfg.image_camera,
                    "param_names": list(self.PARAM_NAMES),
                    **({"image_shape": (*cfg.image_size, 3)} if cfg.image else {})},
        )
        self.ee_pos = np.zeros((n, 3))
        self.ee_rot = np.zeros((n, 3, 3))
        self.jac = np.zeros((n, 6, ARM_DOF))  # rows: 3 translation, 3 rotation
        self.ee_target = np.zeros((n, 3))
        self.finger_target = np.full(n, FINGER_MAX)
        self.target = np.zeros((n, 3))
        self.params = np.zeros((n, len(self.PARAM_NAMES)))
        self.actions = np.zeros((n, self.spec.action_dim))
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
        self._q_start = self.kin.solve(np.asarray(cfg.arm.start_ee), HOME_Q, 100, q_lo_nominal, q_hi_nominal)
        self._q_nominal = (q_lo_nominal, q_hi_nominal)  # start poses do not depend on privileges

    def _fixture(self, model: mujoco.MjModel) -> tuple[int, np.ndarray | None]:
        """Body id and world joint axis of `FIXTURE_BODY` (-1, None without one). The axis is the compiled pose's:
        a task may move its fixture per world (a cabinet's position) but never turns it."""
        if not self.FIXTURE_BODY:
            return -1, None
        body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, self.FIXTURE_BODY)
        d = mujoco.MjData(model)
        mujoco.mj_kinematics(model, d)
        return body, d.xaxis[int(model.body_jntadr[body])].copy()

    #: Whether `in_grasp_pose` is defined: a task that has one sets this (the wrench's "grasp_pose" gate needs it).
    HAS_GRASP_POSE = False

    def in_grasp_pose(self, obj_pos: np.ndarray, ee_pos: np.ndarray) -> np.ndarray:
        """(n,) bool: the hand placed around the object as for a grasp, whatever the gripper's opening.

        Args:
            obj_pos: (n, 3) object centres; `ee_pos` (n, 3) TCP positions.
        """
        raise NotImplementedError(f"{type(self).__name__} defines no grasp pose")

    def gate_mask(self, gate: str) -> np.ndarray:
        """(n,) bool: where a privilege gated on `gate` may act now ("grasp_pose": `in_grasp_pose`; a task with a
        grasp pose adds its own, e.g. the flat box's "straddle" and "grasped")."""
        if gate == "grasp_pose":
            return self.in_grasp_pose(self.backend.qpos[:, OBJ_POS], self.ee_pos)
        raise NotImplementedError(f"{type(self).__name__} defines no gate '{gate}'")

    def _fixture_distance(self) -> np.ndarray | None:
        """(n,) TCP-to-handle distance of the task's fixture, for the fixture force's reach; None without one."""
        return None

    # ---- public API -------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Obs:
        """Reset every env and return the first observations."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        ids = np.arange(self.num_envs)
        self._reset_envs(ids)
        self._history.clear()
        return self._observe(self._state())

    def set_privilege_scale(self, scale: float | dict[str, float]) -> None:
        """Scale every declared privileged action (or {kind: scale} for some); relaxations drawn per episode
        take the new scale at each world's next reset."""
        self.priv.set_scale(scale)

    def randomize_episode_start(self) -> None:
        """Spread time-outs over the batch so resets do not arrive all at once (used by trainers)."""
        self.episode_step[:] = self.rng.integers(0, self.cfg.max_episode_steps, size=self.num_envs)

    def end_episodes(self, env_ids: Any) -> Obs:
        """End the episodes of envs `env_ids` now and start new ones (a classifier's or an operator's call).

        Returns:
            Each observation group's first frame of the new episodes, rows in `env_ids` order:
            (len(env_ids), dim) float32 vectors, (len(env_ids), H, W, 3) uint8 images. No episode statistics
            are reported for the ended episodes: whoever ends them keeps their own.
        """
        ids = np.asarray(env_ids, dtype=np.int64).reshape(-1)
        if len(ids) == 0:
            return {k: np.zeros((0, *s.shape), s.dtype) for k, s in self.spec.groups.items()}
        self._reset_envs(ids)
        fresh = self._history.reset_rows(self._frames(self._state(), ids), ids)
        return {k: np.asarray(v, dtype=np.uint8 if self.spec.groups[k].is_image else np.float32)
                for k, v in fresh.items()}

    def step(self, actions: Any) -> tuple[Obs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Apply (num_envs, action_dim) task-space actions for one control period (see `VecEnv.step`).

        Columns: (dx, dy, dz, gripper), then the privileged ones the task config declares (a virtual wrench).

        info holds, besides the `VecEnv` keys, "success": (num_envs,) bool, True on the step an env
        succeeded (that env then also reports terminated, unless `success_ends_episode` is off, and reward 1).
        """
        cfg = self.cfg
        a = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)
        if a.shape[1] != self.spec.action_dim:
            raise ValueError(f"actions have {a.shape[1]} columns; this Panda task takes {self.spec.action_dim} "
                             f"({', '.join(self.spec.action_names)})")
        clip = cfg.action_clip
        a = np.clip(np.nan_to_num(a, nan=0.0, posinf=clip, neginf=-clip), -clip, clip)
        self.actions[:] = a
        prev = self._ctrl.copy()
        obj = self.backend.qpos[:, OBJ_POS]
        masks = {g: self.gate_mask(g) for g in {self.priv.wrench_gate, self.priv.table_gate} - {"", "reach", "episode"}}
        if self.priv.table_gate in masks:
            self.priv.gate_table(masks[self.priv.table_gate], self.ee_pos[:, 2])  # the table top is z = 0
        xfrc = self.priv.wrench(a[:, self.task_action_dim:], np.linalg.norm(obj - self.ee_pos, axis=1),
                                self._fixture_distance(), masks.get(self.priv.wrench_gate))
        return self._advance(prev, self._joint_targets(a), xfrc)

    def step_cartesian(self, ee_targets: Any, finger_targets: Any) -> tuple[Obs, np.ndarray, np.ndarray, np.ndarray,
                                                                             dict[str, Any]]:
        """One control period towards given TCP targets, as a robot's Cartesian controller would take them.

        The sim bridge's path: the target comes from outside (the robot side already moved and limited it),
        and goes through the same differential IK, finger speed limit and physics as `step`.

        Args:
            ee_targets: (num_envs, 3) TCP target positions (m, world frame); clipped to the workspace box.
            finger_targets: (num_envs,) target opening of each finger (m): half the gripper width.

        Returns:
            What `step` returns.
        """
        t = np.asarray(ee_targets, dtype=np.float64).reshape(self.num_envs, 3)
        f = np.asarray(finger_targets, dtype=np.float64).reshape(self.num_envs)
        if not (np.isfinite(t).all() and np.isfinite(f).all()):
            raise ValueError("step_cartesian got a non-finite TCP or finger target")
        self.ee_target[:] = np.clip(t, self._ws_lo, self._ws_hi)
        prev = self._ctrl.copy()
        return self._advance(prev, self._servo_targets(np.clip(f, 0.0, FINGER_MAX)))

    def _advance(self, prev: np.ndarray, new: np.ndarray, xfrc: np.ndarray | None = None) -> tuple[
            Obs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Ramp the servos from `prev` to `new` over one control period (with privileged forces `xfrc`, if any),
        then score, observe and reset."""
        cfg = self.cfg
        # Servo targets move in a ramp across the control period, like a robot controller's interpolator: a
        # step change every 50 ms would jerk the arm at ~8 g and shake light objects out of the hand.
        chunks = self._chunks
        for k in range(1, chunks + 1):
            self.backend.step(prev + (new - prev) * (k / chunks), self.substeps // chunks, xfrc_applied=xfrc)
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
        terminated = (success if cfg.success_ends_episode else np.zeros_like(success)) | fell | bad
        truncated = (self.episode_step >= cfg.max_episode_steps) & ~terminated
        reward = self._reward(s, success)
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

    def _reward(self, s: PandaState, success: np.ndarray) -> np.ndarray:
        """(n,) float32 reward; sparse by default: 1 on the success step."""
        return success.astype(np.float32)

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
        return self._servo_targets(FINGER_MAX * (1.0 - a[:, 3]) / 2)

    def _servo_targets(self, finger_want: np.ndarray) -> np.ndarray:
        """(n, nu) servo targets for the current `ee_target`: the IK step, and each finger towards `finger_want`."""
        arm = self.cfg.arm
        q = self.backend.qpos[:, :ARM_DOF]
        err = np.concatenate([self.ee_target - self.ee_pos, arm.rot_gain * rot_error(self.ee_rot, R_DOWN)], axis=1)
        dq = dls_step(self.jac, q, err, arm)
        self._ctrl[:, :ARM_DOF] = np.clip(q + dq, self._q_lo, self._q_hi)  # (n, 7)
        # Gripper: -1 open ... +1 closed, reached at a finite finger speed like a real hand.
        rate = arm.gripper_speed * self.cfg.control_dt
        self.finger_target += np.clip(finger_want - self.finger_target, -rate, rate)
        self._ctrl[:, ARM_DOF] = self.finger_target
        return self._ctrl

    def _kinematics(self, ids: np.ndarray) -> None:
        """TCP position, orientation and Jacobian of worlds `ids` from their current joint angles."""
        self.kin.update(self.backend.qpos, ids, self.ee_pos, self.ee_rot, self.jac)

    # ---- state, observations, resets --------------------------------------------------------------

    def _state(self) -> PandaState:
        qpos, qvel = self.backend.qpos, self.backend.qvel
        ee_vel = (self.jac[:, :3] @ qvel[:, :ARM_DOF, None])[:, :, 0]
        return PandaState(
            ee_pos=self.ee_pos, ee_vel=ee_vel,
            gripper=qpos[:, FINGERS].sum(axis=1, keepdims=True), gripper_vel=qvel[:, FINGERS].sum(axis=1, keepdims=True),
            obj_pos=qpos[:, OBJ_POS], obj_quat=qpos[:, OBJ_QUAT], obj_linvel=qvel[:, OBJ_LINVEL],
            obj_angvel=qvel[:, OBJ_ANGVEL], target=self.target, params=self.params,
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
                self.backend.qpos[i, :ARM_DOF] = self.kin.solve(start + dx, self._q_start, 20, *self._q_nominal)
        self.backend.qpos[ids, FINGERS] = FINGER_MAX
        self._kinematics(ids)
        self.ee_target[ids] = self.ee_pos[ids]
        self.finger_target[ids] = FINGER_MAX
        self.priv.reset(ids, rng)
        self._reset_task(ids)
        # Servo targets (and their low-pass filter states, the actuators' activations) equal to the start
        # pose: the first physics steps hold still instead of jumping.
        self._ctrl[ids, :ARM_DOF] = self.backend.qpos[ids, :ARM_DOF]
        self.backend.state[ids, self._act0 : self._act0 + ARM_DOF] = self.backend.qpos[ids, :ARM_DOF]
        self._ctrl[ids, ARM_DOF] = self.finger_target[ids]
        self.actions[ids] = 0.0
        self.episode_step[ids] = 0
        self.episode_return[ids] = 0.0
