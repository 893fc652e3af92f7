"""Velocity-tracking locomotion for legged robots on the batched CPU backend.

The robot follows a commanded body velocity (vx, vy, yaw rate). Rewards and observations are pure terms
(`terms.py`) with weights and scales in `LocomotionConfig`; domain randomisation covers friction, added
base mass, motor strength, pushes, observation noise and 0-2 steps of action latency.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np
from s2r.sim.backends import BackendConfig, FieldRandomization, check_fields, sample_draws
from s2r.sim.env import Obs, ObsTerm
from s2r.sim.models import load_model, terrain_height_at
from s2r.sim.tasks import terms as T
from s2r.sim.tasks.terms import RewardTerm, reward_field, upgrade_rewards_dict
from s2r.sim.tasks.velocity import CommandConfig, VelocityEnv, norm_xy


@dataclass(frozen=True, kw_only=True)
class RewardConfig:
    """Reward terms (weight 0 disables one); each is scaled by weight * control_dt, see `RewardTerm`."""

    track_lin_vel_xy: RewardTerm = reward_field("track_lin_vel_xy", 1.5, sigma=0.25)
    track_ang_vel_z: RewardTerm = reward_field("track_ang_vel_z", 0.75, sigma=0.25)
    lin_vel_z: RewardTerm = reward_field("lin_vel_z", -2.0)
    ang_vel_xy: RewardTerm = reward_field("ang_vel_xy", -0.05)
    orientation: RewardTerm = reward_field("orientation", -1.0)
    base_height: RewardTerm = reward_field("base_height", 0.0)
    torques: RewardTerm = reward_field("torques", -2e-4)
    joint_acc: RewardTerm = reward_field("joint_acc", -2.5e-7)
    action_rate: RewardTerm = reward_field("action_rate", -0.01)
    joint_limits: RewardTerm = reward_field("joint_limits", -10.0)
    feet_air_time: RewardTerm = reward_field("feet_air_time", 1.0, target=0.4)
    foot_slip: RewardTerm = reward_field("foot_slip", 0.0)
    stand_still: RewardTerm = reward_field("stand_still", 0.0)
    termination: float = -2.0  # one-off on a terminal step, not scaled by dt

    @classmethod
    def upgrade_dict(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Read a section saved as name -> weight with shared `tracking_sigma` / `air_time_target`."""
        return upgrade_rewards_dict(cls(), data, {
            "tracking_sigma": ("track_lin_vel_xy.sigma", "track_ang_vel_z.sigma"),
            "air_time_target": ("feet_air_time.target",),
        })


@dataclass(frozen=True, kw_only=True)
class RandomizationConfig:
    """Domain randomisation ranges. A range (a, a) or 0 disables that part."""

    friction: tuple[float, float] = (0.4, 1.25)
    added_mass: tuple[float, float] = (-1.0, 2.0)  # kg on the trunk
    motor_strength: tuple[float, float] = (0.9, 1.1)  # scales kp, kv and torque limit
    push_interval_s: float = 8.0
    push_velocity: float = 0.5  # m/s, horizontal, added to the base
    observation_noise: float = 1.0  # multiplies each term's noise
    action_latency_steps: tuple[int, int] = (0, 2)  # inclusive
    # An actuators YAML from `s2r calibrate actuators`: its measured values centre motor_strength and latency
    # and set joint friction, damping and armature (see s2r.sim.calibrated). Empty: model values.
    calibration: str = ""
    # 0: every env owns a model randomised at each reset. N > 0: N models randomised once at start, each
    # reset draws one of them: fewer models stay warmer in the CPU cache (measured +4% env-steps/s at 256
    # envs with N=32 on 2 cores) at the cost of N distinct dynamics instead of fresh ones per episode.
    model_pool: int = 0


@dataclass(frozen=True, kw_only=True)
class LocomotionConfig:
    """A velocity-tracking task."""

    model: str = "go1.xml"
    terrain: str = "flat"
    terrain_height: float = 0.06
    base_body: str = "trunk"
    foot_sites: tuple[str, ...] = ("FR_foot", "FL_foot", "RR_foot", "RL_foot")
    default_joint_pos: tuple[float, ...] = (0.0, 0.9, -1.8) * 4
    spawn_height: float = 0.30
    control_dt: float = 0.02
    episode_s: float = 20.0
    action_scale: float = 0.25
    action_clip: float = 10.0
    history_length: int = 1  # frames of the `policy` group (what the robot side stacks)
    privileged_history_length: int = 1  # frames of the `privileged` group
    min_base_height: float = 0.14
    max_tilt_rad: float = 1.0
    # No straight share by default (CommandConfig.straight_fraction): one 30-minute retrain with 0.25 on one
    # core drifted more than the shipped policy, not less (bench/results/README.md, issue 11), so the
    # evidence does not yet justify changing what the task draws. `--set commands.straight_fraction=0.25`.
    commands: CommandConfig = field(default_factory=CommandConfig)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)


# Observation layout. Scales follow common legged-RL practice so every input is O(1).
POLICY_TERMS = (
    ObsTerm(name="base_ang_vel", size=3, scale=(0.25,), noise=0.05),
    ObsTerm(name="projected_gravity", size=3, noise=0.05),
    ObsTerm(name="velocity_command", size=3, scale=(2.0, 2.0, 0.25)),
    ObsTerm(name="joint_pos", size=12, offset_from_default=True, noise=0.01),
    ObsTerm(name="joint_vel", size=12, scale=(0.05,), noise=0.075),
    ObsTerm(name="last_action", size=12),
)
PRIVILEGED_TERMS = (
    ObsTerm(name="base_lin_vel", size=3, scale=(2.0,)),
    ObsTerm(name="base_height", size=1),
    ObsTerm(name="foot_contact", size=4),
    ObsTerm(name="randomization", size=4),  # friction, added mass, motor strength, latency
)


def randomization_fields(r: RandomizationConfig, trunk: int) -> tuple[FieldRandomization, ...]:
    """The model fields Go1's domain randomisation writes: friction, added trunk mass, motor strength.

    Motor strength scales the position servos' gain (kp), both bias terms (-kp, -kv) and the force limits
    with one draw, so the servo stays a scaled copy of itself.
    """
    strength = {"range": r.motor_strength, "op": "scale", "draw": "motor_strength"}
    return (
        FieldRandomization(field="geom_friction", cols=(0,), range=r.friction, op="scale", draw="friction"),
        FieldRandomization(field="body_mass", rows=(trunk,), range=r.added_mass, op="add", draw="added_mass"),
        FieldRandomization(field="actuator_gainprm", cols=(0,), **strength),
        FieldRandomization(field="actuator_biasprm", cols=(1, 2), **strength),
        FieldRandomization(field="actuator_forcerange", **strength),
    )


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of (n,3) arrays; the same arithmetic as np.cross without its axis handling."""
    a0, a1, a2 = a[:, 0], a[:, 1], a[:, 2]
    b0, b1, b2 = b[:, 0], b[:, 1], b[:, 2]
    out = np.empty(np.broadcast_shapes(a.shape, b.shape))
    np.subtract(a1 * b2, a2 * b1, out=out[:, 0])
    np.subtract(a2 * b0, a0 * b2, out=out[:, 1])
    np.subtract(a0 * b1, a1 * b0, out=out[:, 2])
    return out


def _quat_rotate_inv(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate world vectors v (n,3) into the frames of unit quaternions q (n,4, wxyz)."""
    w = q[:, :1]
    u = -q[:, 1:]
    t = 2.0 * _cross(u, v)
    return v + w * t + _cross(u, t)


class LocomotionEnv(VelocityEnv):
    """Batched legged velocity tracking; the step's order of events is `VelocityEnv.step`."""

    # The `policy` group's terms; tasks that add commands (crouch, waypoints) set their own before `_declare`.
    _policy_terms: tuple = POLICY_TERMS

    def __init__(self, cfg: LocomotionConfig, num_envs: int = 1, seed: int = 0) -> None:
        model = self._load_model(cfg, seed)
        if cfg.randomization.calibration:
            from s2r.sim.calibrated import apply_actuator_calibration

            cfg = dataclasses.replace(cfg, randomization=apply_actuator_calibration(model, cfg.randomization, cfg.control_dt))
        self._setup(cfg, model, num_envs, seed)
        nu = model.nu
        if len(cfg.default_joint_pos) != nu:
            raise ValueError(f"default_joint_pos has {len(cfg.default_joint_pos)} values; the model has {nu} actuators")
        self.joint_names = tuple(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, model.actuator_trnid[i, 0])
                                 for i in range(nu))
        qadr = np.array([model.jnt_qposadr[model.actuator_trnid[i, 0]] for i in range(nu)])
        vadr = np.array([model.jnt_dofadr[model.actuator_trnid[i, 0]] for i in range(nu)])
        self._qadr, self._vadr = qadr, vadr
        self.default_q = np.asarray(cfg.default_joint_pos, dtype=np.float64)
        jid = model.actuator_trnid[:, 0]
        self.joint_lower = model.jnt_range[jid, 0].copy()
        self.joint_upper = model.jnt_range[jid, 1].copy()
        self._kp = model.actuator_gainprm[:, 0].copy()
        self._kv = -model.actuator_biasprm[:, 2].copy()
        self._force = model.actuator_forcerange.copy()
        self._trunk = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, cfg.base_body)
        if self._trunk < 0:
            raise ValueError(f"base_body '{cfg.base_body}' is not a body of {cfg.model}; name the model's base body")
        self.dr_fields = randomization_fields(cfg.randomization, self._trunk)
        check_fields(model, self.dr_fields)
        # Sensor slices: touch (4), foot positions (12), foot velocities (12), in MJCF order.
        self._nfeet = len(cfg.foot_sites)
        self._declare(POLICY_TERMS, PRIVILEGED_TERMS, self.joint_names, {
            "action_scale": cfg.action_scale, "default_joint_pos": list(cfg.default_joint_pos),
            "joint_lower": self.joint_lower.tolist(), "joint_upper": self.joint_upper.tolist(),
            "kp": self._kp.tolist(), "kv": self._kv.tolist()})
        n = num_envs
        # Latest first; latency picks a slot (enough slots for the largest latency in the range).
        self._act_queue = np.zeros((max(3, cfg.randomization.action_latency_steps[1] + 1), n, nu))
        self.latency = np.zeros(n, dtype=np.int64)
        self.joint_vel_prev = np.zeros((n, nu))
        self.air_time = np.zeros((n, self._nfeet))
        self.last_contact = np.zeros((n, self._nfeet), dtype=bool)
        self.ground_z = np.zeros(n)
        self.dr_params = np.zeros((n, 4))

    def _load_model(self, cfg: LocomotionConfig, seed: int) -> mujoco.MjModel:
        """The scene: the robot on flat or rough ground (subclasses add obstacles)."""
        return load_model(cfg.model, terrain=cfg.terrain, terrain_height=cfg.terrain_height, terrain_seed=seed)

    # ---- public API -------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Obs:
        """Reset every env and return the first observations."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        ids = self._arange
        self._reset_envs(ids)
        self.episode_step[:] = self.rng.integers(0, 1, size=self.num_envs)
        sensors = self.backend.sensordata
        state = self._loco_state(sensors, np.zeros((self.num_envs, self._nfeet), dtype=bool))
        self._history.clear()
        return self._observe(state)

    def planar_pose(self) -> np.ndarray:
        """(num_envs, 3) trunk x, y and heading (yaw of the body x axis projected onto the ground)."""
        q = self.backend.qpos[:, 3:7]
        w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
        yaw = np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
        return np.stack([self.backend.qpos[:, 0], self.backend.qpos[:, 1], yaw], axis=1)

    # ---- step hooks (the order of events is VelocityEnv.step) ---------------------------------------

    def _apply_action(self, a: np.ndarray) -> None:
        # Action latency: the env applies the action from `latency` control steps ago.
        self._act_queue[1:] = self._act_queue[:-1]
        self._act_queue[0] = a
        applied = self._act_queue[self.latency, self._arange]
        targets = self.default_q + self.cfg.action_scale * applied
        self.joint_vel_prev[:] = self.backend.qvel[:, self._vadr]
        self.backend.step(targets, self.substeps)
        self._touch = self.backend.sensor_max[:, : self._nfeet] > 0.0  # touched during any substep
        self._targets = targets

    def _reset_diverged(self, bad: np.ndarray) -> None:
        super()._reset_diverged(bad)
        self._touch[bad] = False

    def _step_state(self) -> T.LocoState:
        first, air_at_td = self._update_feet(self._touch)
        return self._loco_state(self.backend.sensordata, self._touch, first, air_at_td)

    def _terminated(self, s: T.LocoState) -> np.ndarray:
        cfg = self.cfg
        return (s.base_height < cfg.min_base_height) | (s.projected_gravity[:, 2] > -np.cos(cfg.max_tilt_rad))

    # ---- internals --------------------------------------------------------------------------------

    def _update_feet(self, touch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance per-foot air time; returns (first_contact, air_time_at_touchdown)."""
        first = (self.air_time > 0) & touch & ~self.last_contact
        air_at_td = self.air_time.copy()
        self.air_time += self.cfg.control_dt
        self.air_time[touch] = 0.0
        self.last_contact = touch
        return first, air_at_td

    def _loco_state(self, sensors: np.ndarray, touch: np.ndarray, first: np.ndarray | None = None,
                    air_at_td: np.ndarray | None = None, ids: np.ndarray | None = None) -> T.LocoState:
        """Term inputs for every env, or for the envs `ids` only (`sensors` always holds every env;
        `touch`, `first` and `air_at_td` hold the selected rows)."""
        rows = slice(None) if ids is None else ids
        qpos, qvel = self.backend.qpos[rows], self.backend.qvel[rows]
        quat = qpos[:, 3:7]
        g = np.broadcast_to(np.array([0.0, 0.0, -1.0]), (len(qpos), 3))
        nf = self._nfeet
        foot_vel = sensors[rows, nf + 3 * nf : nf + 6 * nf].reshape(-1, nf, 3)
        if first is None:
            first = np.zeros_like(touch)
            air_at_td = np.zeros(touch.shape)
        q = qpos[:, self._qadr]
        qd = qvel[:, self._vadr]
        targets = getattr(self, "_targets", None)
        targets = np.broadcast_to(self.default_q, q.shape) if targets is None else targets[rows]
        torques = self._torques(q, qd, targets, rows)
        return T.LocoState(
            xp=np,
            base_lin_vel=_quat_rotate_inv(quat, qvel[:, 0:3]),
            base_ang_vel=qvel[:, 3:6],
            projected_gravity=_quat_rotate_inv(quat, g),
            base_height=qpos[:, 2] - self.ground_z[rows],
            joint_pos=q,
            joint_vel=qd,
            joint_vel_prev=self.joint_vel_prev[rows],
            default_joint_pos=self.default_q,
            joint_lower=self.joint_lower,
            joint_upper=self.joint_upper,
            torques=torques,
            action=self.actions[rows],
            action_prev=self.actions_prev[rows],
            command=self.command[rows],
            foot_contact=touch,
            first_contact=first,
            air_time_at_touchdown=air_at_td,
            foot_vel_xy=norm_xy(foot_vel),
            dt=self.cfg.control_dt,
        )

    def _torques(self, q: np.ndarray, qd: np.ndarray, targets: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
        """(m, nu) servo torques of the envs `rows` (what the torque penalty reads), with their motor strength."""
        strength = self.dr_params[rows, 2:3]
        return np.clip((self._kp * (targets - q) - self._kv * qd) * strength,
                       self._force[:, 0] * strength, self._force[:, 1] * strength)

    def _frame(self, s: T.LocoState, rows: np.ndarray | slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """One frame of the `policy` terms (scaled, with noise) and of the `privileged` terms, for `rows`."""
        pol = np.concatenate([T.OBS_TERMS[t.name](s) for t in self._policy_terms], axis=1) * self._policy_scale
        noise = self.cfg.randomization.observation_noise
        if noise > 0:
            pol += self.rng.uniform(-1.0, 1.0, pol.shape) * (self._policy_noise * noise)
        priv_raw = [T.OBS_TERMS[t.name](s) for t in PRIVILEGED_TERMS[:-1]] + [self.dr_params[rows]]
        priv = np.concatenate(priv_raw, axis=1) * self._priv_scale
        return pol, priv

    def _observe(self, s: T.LocoState) -> Obs:
        """Observation groups of every env; pushes one frame onto each group's history."""
        pol, priv = self._frame(s)
        obs = self._history.push({"policy": pol, "privileged": priv})
        return {k: v.astype(np.float32) for k, v in obs.items()}

    def _observe_reset(self, obs: Obs, ids: np.ndarray) -> None:
        """Overwrite the rows of just-reset envs `ids` in `obs`; their history restarts from the new frame."""
        k = len(ids)
        s = self._loco_state(self.backend.sensordata, np.zeros((k, self._nfeet), dtype=bool), ids=ids)
        pol, priv = self._frame(s, ids)
        for g, rows in self._history.reset_rows({"policy": pol, "privileged": priv}, ids).items():
            obs[g][ids] = rows

    def _reset_envs(self, ids: np.ndarray) -> None:
        r, rng = self.cfg.randomization, self.rng
        k = len(ids)
        if k == 0:
            return
        if r.model_pool > 0:
            self._reset_from_pool(ids)
        else:
            # One draw per env in the order friction, mass, strength (row-major), then per-env model writes.
            dr = sample_draws(rng, self.dr_fields, k)  # (k, 3)
            self.dr_params[ids, :3] = dr
            self.backend.randomize(ids, self.dr_fields, dr)
        self._reset_state(ids)

    def _reset_from_pool(self, ids: np.ndarray) -> None:
        """Point each env at a randomly drawn model of a pool randomised once (see model_pool)."""
        pool = self.cfg.randomization.model_pool
        if not hasattr(self, "_pool_params"):
            self._pool_params = sample_draws(self.rng, self.dr_fields, pool)
            self.backend.set_model_pool(self.dr_fields, self._pool_params)
        pick = self.rng.integers(0, pool, size=len(ids))
        self.backend.use_pool(ids, pick)
        self.dr_params[ids, :3] = self._pool_params[pick]

    def _draw_latency(self, ids: np.ndarray) -> None:
        """Action latency (control steps) of the envs `ids` for their next episode."""
        lo, hi = self.cfg.randomization.action_latency_steps
        self.latency[ids] = self.rng.integers(lo, hi + 1, size=len(ids))
        self.dr_params[ids, 3] = self.latency[ids]

    def _spawn_points(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(k, 2) spawn xy of the envs `ids` and (k,) the ground height the body starts above."""
        k = len(ids)
        rough = self.cfg.terrain == "rough"
        xy = self.rng.uniform(-3.0, 3.0, (k, 2)) if rough else np.zeros((k, 2))
        ground = terrain_height_at(self.model, xy)
        if rough:
            # Highest ground under the body footprint, so no foot starts inside a bump.
            for dx in (-0.25, 0.25):
                for dy in (-0.15, 0.15):
                    ground = np.maximum(ground, terrain_height_at(self.model, xy + [dx, dy]))
        return xy, ground

    def _reset_state(self, ids: np.ndarray) -> None:
        """Latency draw, initial pose and per-episode buffers for `ids`."""
        cfg, rng = self.cfg, self.rng
        k = len(ids)
        self._draw_latency(ids)
        st = self.backend.state
        st[ids] = 0.0
        qpos = self.backend.qpos
        qvel = self.backend.qvel
        xy, ground = self._spawn_points(ids)
        self.ground_z[ids] = ground
        yaw = rng.uniform(-np.pi, np.pi, k)
        qpos[ids, 0:2] = xy
        qpos[ids, 2] = ground + cfg.spawn_height
        qpos[ids, 3] = np.cos(yaw / 2)
        qpos[ids, 6] = np.sin(yaw / 2)
        qpos[np.ix_(ids, self._qadr)] = self.default_q + rng.uniform(-0.1, 0.1, (k, self.model.nu))
        qvel[ids, :6] = rng.uniform(-0.1, 0.1, (k, 6))
        self.backend.forward_sensors(ids)
        self.actions[ids] = 0.0
        self.actions_prev[ids] = 0.0
        self._act_queue[:, ids] = 0.0
        self.joint_vel_prev[ids] = 0.0
        self.air_time[ids] = 0.0
        self.last_contact[ids] = False
        self.episode_step[ids] = 0
        self.steps_run[ids] = 0
        self.episode_return[ids] = 0.0
        self.episode_tracking[ids] = 0.0
        if hasattr(self, "_targets"):
            self._targets[ids] = self.default_q
        self._sample_commands(ids)
