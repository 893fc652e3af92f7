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
from s2r.sim.backends import BackendConfig, FieldRandomization, make_backend, sample_draws
from s2r.sim.env import EnvSpec, GroupSpec, Obs, ObsHistory, ObsTerm, VecEnv, term_noise, term_scales
from s2r.sim.models import load_model, terrain_height_at
from s2r.sim.tasks import terms as T
from s2r.sim.tasks.velocity import CommandConfig, episode_stats, push_bases, sample_commands


@dataclass(frozen=True, kw_only=True)
class RewardConfig:
    """Weight per reward term (0 disables it). Each term is multiplied by weight * control_dt."""

    track_lin_vel_xy: float = 1.5
    track_ang_vel_z: float = 0.75
    lin_vel_z: float = -2.0
    ang_vel_xy: float = -0.05
    orientation: float = -1.0
    base_height: float = 0.0
    torques: float = -2e-4
    joint_acc: float = -2.5e-7
    action_rate: float = -0.01
    joint_limits: float = -10.0
    feet_air_time: float = 1.0
    foot_slip: float = 0.0
    stand_still: float = 0.0
    termination: float = -2.0  # one-off, not scaled by dt
    tracking_sigma: float = 0.25
    air_time_target: float = 0.4


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


def _norm_xy(v: np.ndarray) -> np.ndarray:
    """Length of the first two components along the last axis (np.linalg.norm's arithmetic, less overhead)."""
    x, y = v[..., 0], v[..., 1]
    return np.sqrt(x * x + y * y)


def _quat_rotate_inv(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate world vectors v (n,3) into the frames of unit quaternions q (n,4, wxyz)."""
    w = q[:, :1]
    u = -q[:, 1:]
    t = 2.0 * _cross(u, v)
    return v + w * t + _cross(u, t)


class LocomotionEnv(VecEnv):
    """Batched velocity tracking on the CPU MuJoCo backend."""

    def __init__(self, cfg: LocomotionConfig, num_envs: int = 1, seed: int = 0) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.cfg = cfg
        self.num_envs = num_envs
        self.rng = np.random.default_rng(seed)
        model = load_model(cfg.model, terrain=cfg.terrain, terrain_height=cfg.terrain_height, terrain_seed=seed)
        if cfg.randomization.calibration:
            from s2r.sim.calibrated import apply_actuator_calibration

            cfg = dataclasses.replace(cfg, randomization=apply_actuator_calibration(model, cfg.randomization, cfg.control_dt))
            self.cfg = cfg
        self.substeps = max(1, round(cfg.control_dt / model.opt.timestep))
        if abs(self.substeps * model.opt.timestep - cfg.control_dt) > 1e-9:
            raise ValueError(
                f"control_dt {cfg.control_dt} is not a multiple of the model timestep {model.opt.timestep}"
            )
        self.backend = make_backend(cfg.backend.name, model, num_envs, cfg.backend)
        self.model = model
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
        self.dr_fields = randomization_fields(cfg.randomization, self._trunk)
        # Sensor slices: touch (4), foot positions (12), foot velocities (12), in MJCF order.
        self._nfeet = len(cfg.foot_sites)
        self._max_steps = round(cfg.episode_s / cfg.control_dt)
        self._push_every = max(1, round(cfg.randomization.push_interval_s / cfg.control_dt))
        self._cmd_every = max(1, round(cfg.commands.resample_s / cfg.control_dt))
        self.spec = EnvSpec(
            groups={"policy": GroupSpec(terms=POLICY_TERMS, history=cfg.history_length),
                    "privileged": GroupSpec(terms=PRIVILEGED_TERMS, history=cfg.privileged_history_length)},
            action_names=self.joint_names,
            control_dt=cfg.control_dt,
            max_episode_steps=self._max_steps,
            extras={"action_scale": cfg.action_scale, "default_joint_pos": list(cfg.default_joint_pos),
                    "joint_lower": self.joint_lower.tolist(), "joint_upper": self.joint_upper.tolist(),
                    "kp": self._kp.tolist(), "kv": self._kv.tolist()},
        )
        self._weights = {k: v for k, v in dataclasses.asdict(cfg.rewards).items()
                         if k in T.REWARD_TERMS and v != 0.0}
        self._policy_scale = term_scales(POLICY_TERMS)
        self._policy_noise = term_noise(POLICY_TERMS)
        self._priv_scale = term_scales(PRIVILEGED_TERMS)
        n = num_envs
        self.command = np.zeros((n, 3))
        self.actions = np.zeros((n, nu))
        self.actions_prev = np.zeros((n, nu))
        # Latest first; latency picks a slot (enough slots for the largest latency in the range).
        self._act_queue = np.zeros((max(3, cfg.randomization.action_latency_steps[1] + 1), n, nu))
        self.latency = np.zeros(n, dtype=np.int64)
        self.joint_vel_prev = np.zeros((n, nu))
        self.air_time = np.zeros((n, self._nfeet))
        self.last_contact = np.zeros((n, self._nfeet), dtype=bool)
        self.episode_step = np.zeros(n, dtype=np.int64)
        self.episode_return = np.zeros(n)
        self.episode_tracking = np.zeros(n)
        self.ground_z = np.zeros(n)
        self.dr_params = np.zeros((n, 4))
        self.nan_resets = 0
        self._history = ObsHistory(self.spec.groups, n)
        self._arange = np.arange(n)

    # ---- public API -------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Obs:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        ids = self._arange
        self._reset_envs(ids)
        self.episode_step[:] = self.rng.integers(0, 1, size=self.num_envs)
        sensors = self.backend.sensordata
        state = self._loco_state(sensors, np.zeros((self.num_envs, self._nfeet), dtype=bool))
        self._history.clear()
        return self._observe(state)

    def randomize_episode_start(self) -> None:
        """Spread time-outs over the batch so resets do not arrive all at once (used by trainers)."""
        self.episode_step[:] = self.rng.integers(0, self._max_steps, size=self.num_envs)

    def step(self, actions: Any) -> tuple[Obs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        cfg = self.cfg
        a = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)
        if a.shape[1] != self.model.nu:
            raise ValueError(f"actions have {a.shape[1]} columns; this task has {self.model.nu} actuators")
        # Clipping maps +-inf to the bounds; NaN becomes 0 (what np.nan_to_num would do, for less work).
        a = np.clip(a, -cfg.action_clip, cfg.action_clip)
        a[np.isnan(a)] = 0.0
        self.actions_prev[:] = self.actions
        self.actions[:] = a
        # Action latency: the env applies the action from `latency` control steps ago.
        self._act_queue[1:] = self._act_queue[:-1]
        self._act_queue[0] = a
        applied = self._act_queue[self.latency, self._arange]
        targets = self.default_q + cfg.action_scale * applied
        self.joint_vel_prev[:] = self.backend.qvel[:, self._vadr]
        self.backend.step(targets, self.substeps)
        touch = (self.backend._out_sensor[:, :, : self._nfeet] > 0.0).any(axis=1)  # touched during any substep
        sensors = self.backend.sensordata
        self._targets = targets

        self.episode_step += 1
        bad = self.backend.diverged()
        if bad.any():
            # A blown-up world: reset it, count it, never let NaN reach the learner.
            self.nan_resets += int(bad.sum())
            self._reset_envs(np.flatnonzero(bad))
            sensors = self.backend.sensordata
            touch[bad] = False

        first, air_at_td = self._update_feet(touch)
        state = self._loco_state(sensors, touch, first, air_at_td)
        reward = np.zeros(self.num_envs)
        dt = cfg.control_dt
        for name, w in self._weights.items():
            fn = T.REWARD_TERMS[name]
            if name in ("track_lin_vel_xy", "track_ang_vel_z"):
                r = fn(state, sigma=cfg.rewards.tracking_sigma)
            elif name == "feet_air_time":
                r = fn(state, target=cfg.rewards.air_time_target)
            else:
                r = fn(state)
            reward += w * dt * r
        terminated = (state.base_height < cfg.min_base_height) | (state.projected_gravity[:, 2] > -np.cos(cfg.max_tilt_rad))
        terminated |= bad
        reward += cfg.rewards.termination * terminated
        truncated = (self.episode_step >= self._max_steps) & ~terminated
        vel_err = _norm_xy(self.command[:, :2] - state.base_lin_vel[:, :2])
        self.episode_return += reward
        self.episode_tracking += vel_err

        # Pushes and command changes happen on a schedule per env.
        push_bases(self.backend.qvel, self.episode_step % self._push_every == 0, cfg.randomization.push_velocity,
                   self.rng)
        resample = self.episode_step % self._cmd_every == 0
        if resample.any():
            self._sample_commands(np.flatnonzero(resample))

        obs = self._observe(state)
        done = terminated | truncated
        info: dict[str, Any] = {}
        if done.any():
            ids = np.flatnonzero(done)
            info["final_obs"] = {k: v.copy() for k, v in obs.items()}
            info["episode"] = episode_stats(ids, self.episode_return, self.episode_step, self.episode_tracking,
                                            terminated)
            self._reset_envs(ids)
            # Only the reset envs get a new observation; the others keep theirs (contacts, history and all).
            self._observe_reset(obs, ids)
        info["log"] = {"nan_resets": self.nan_resets}
        return obs, reward.astype(np.float32), terminated, truncated, info

    def close(self) -> None:
        self.backend.close()

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
        strength = self.dr_params[rows, 2:3]
        targets = getattr(self, "_targets", None)
        targets = np.broadcast_to(self.default_q, q.shape) if targets is None else targets[rows]
        torques = np.clip((self._kp * (targets - q) - self._kv * qd) * strength,
                          self._force[:, 0] * strength, self._force[:, 1] * strength)
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
            foot_vel_xy=_norm_xy(foot_vel),
            dt=self.cfg.control_dt,
        )

    def _frame(self, s: T.LocoState, rows: np.ndarray | slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """One frame of the `policy` terms (scaled, with noise) and of the `privileged` terms, for `rows`."""
        pol = np.concatenate([T.OBS_TERMS[t.name](s) for t in POLICY_TERMS], axis=1) * self._policy_scale
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

    def _sample_commands(self, ids: np.ndarray) -> None:
        self.command[ids] = sample_commands(self.rng, self.cfg.commands, len(ids))

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

    def _reset_state(self, ids: np.ndarray) -> None:
        """Latency draw, initial pose and per-episode buffers for `ids`."""
        cfg, r, rng = self.cfg, self.cfg.randomization, self.rng
        k = len(ids)
        lo, hi = r.action_latency_steps
        self.latency[ids] = rng.integers(lo, hi + 1, size=k)
        self.dr_params[ids, 3] = self.latency[ids]
        st = self.backend.state
        st[ids] = 0.0
        qpos = self.backend.qpos
        qvel = self.backend.qvel
        xy = np.zeros((k, 2))
        if cfg.terrain == "rough":
            xy = rng.uniform(-3.0, 3.0, (k, 2))
        ground = terrain_height_at(self.model, xy)
        if cfg.terrain == "rough":
            # Highest ground under the body footprint, so no foot starts inside a bump.
            for dx in (-0.25, 0.25):
                for dy in (-0.15, 0.15):
                    ground = np.maximum(ground, terrain_height_at(self.model, xy + [dx, dy]))
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
        self.episode_return[ids] = 0.0
        self.episode_tracking[ids] = 0.0
        if hasattr(self, "_targets"):
            self._targets[ids] = self.default_q
        self._sample_commands(ids)
