"""Velocity tracking for a planar puck: the cheapest task that still exercises the whole stack.

A 1 kg disc slides on a table (x, y) and spins (yaw), pushed by three motors. It follows a commanded
(vx, vy, yaw rate) like the legged task does, with the same observation groups (`policy`, `privileged`),
domain randomisation (mass, damping, motor strength, pushes, observation noise), time-outs and a
terminal state (sliding off the table). One physics step costs microseconds and a good controller is
nearly linear, so PPO learns it in seconds: the learning tests train on it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np
from s2r.sim.backends import BackendConfig, FieldRandomization, make_backend
from s2r.sim.env import EnvSpec, GroupSpec, Obs, ObsHistory, ObsTerm, VecEnv, term_noise, term_scales
from s2r.sim.models import load_model
from s2r.sim.tasks import terms as T
from s2r.sim.tasks.velocity import CommandConfig, episode_stats, push_bases, sample_commands

Array = Any


@dataclass(frozen=True, kw_only=True)
class PuckRewardConfig:
    """Weight per reward term (0 disables it). Each term is multiplied by weight * control_dt."""

    track_lin_vel_xy: float = 1.0
    track_ang_vel_z: float = 0.5
    action_rate: float = -0.01
    termination: float = -2.0  # one-off, not scaled by dt
    tracking_sigma: float = 0.25


@dataclass(frozen=True, kw_only=True)
class PuckRandomizationConfig:
    """Domain randomisation ranges (scales of the nominal model). A range (a, a) or 0 disables that part."""

    mass: tuple[float, float] = (0.8, 1.25)
    damping: tuple[float, float] = (0.5, 1.5)
    motor_strength: tuple[float, float] = (0.9, 1.1)
    push_interval_s: float = 2.0
    push_velocity: float = 0.3  # m/s, horizontal
    observation_noise: float = 1.0  # multiplies each term's noise


@dataclass(frozen=True, kw_only=True)
class PuckConfig:
    """A puck velocity-tracking task."""

    model: str = "puck.xml"
    control_dt: float = 0.02
    episode_s: float = 4.0
    action_scale: float = 0.25  # motor control = action_scale * action (the motors saturate at +-1)
    action_clip: float = 4.0
    spawn_xy: float = 0.5  # spawn uniformly in [-spawn_xy, spawn_xy]^2
    table_half_size: float = 5.9  # the episode ends (a "fall") when the puck leaves the table
    history_length: int = 1  # frames of the `policy` group
    privileged_history_length: int = 1  # frames of the `privileged` group
    commands: CommandConfig = field(
        default_factory=lambda: CommandConfig(lin_vel_y=(-1.0, 1.0), ang_vel_z=(-1.0, 1.0), resample_s=2.0)
    )
    rewards: PuckRewardConfig = field(default_factory=PuckRewardConfig)
    randomization: PuckRandomizationConfig = field(default_factory=PuckRandomizationConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)


POLICY_TERMS = (
    ObsTerm(name="base_lin_vel", size=2, noise=0.05),  # world frame; a puck has optical flow
    ObsTerm(name="base_ang_vel", size=1, scale=(0.5,), noise=0.05),
    ObsTerm(name="velocity_command", size=3, scale=(1.0, 1.0, 0.5)),
    ObsTerm(name="last_action", size=3, scale=(0.25,)),
)
PRIVILEGED_TERMS = (
    ObsTerm(name="position", size=2, scale=(0.2,)),
    ObsTerm(name="randomization", size=3),  # mass, damping, motor strength (scales)
)


@dataclass
class PuckState:
    """What a puck term may read, for one control step. Shapes are (num_envs, ...)."""

    xp: Any  # numpy or torch
    position: Array  # (n, 2)
    base_lin_vel: Array  # (n, 2) world frame
    base_ang_vel: Array  # (n, 3) only yaw is non-zero; the shape the shared tracking terms read
    command: Array  # (n, 3) vx, vy, wz
    action: Array  # (n, 3)
    action_prev: Array  # (n, 3)
    randomization: Array  # (n, 3)


# The locomotion terms read only fields a PuckState has too (command, base velocities, actions).
REWARD_TERMS = {name: T.REWARD_TERMS[name] for name in ("track_lin_vel_xy", "track_ang_vel_z", "action_rate")}

OBS_TERMS = {
    "base_lin_vel": lambda s: s.base_lin_vel,
    "base_ang_vel": lambda s: s.base_ang_vel[:, 2:],
    "velocity_command": lambda s: s.command,
    "last_action": lambda s: s.action,
    "position": lambda s: s.position,
    "randomization": lambda s: s.randomization,
}


class PuckEnv(VecEnv):
    """Batched puck velocity tracking on the CPU MuJoCo backend."""

    def __init__(self, cfg: PuckConfig, num_envs: int = 1, seed: int = 0) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.cfg = cfg
        self.num_envs = num_envs
        self.rng = np.random.default_rng(seed)
        model = load_model(cfg.model)
        self.substeps = max(1, round(cfg.control_dt / model.opt.timestep))
        if abs(self.substeps * model.opt.timestep - cfg.control_dt) > 1e-9:
            raise ValueError(f"control_dt {cfg.control_dt} is not a multiple of the model timestep {model.opt.timestep}")
        self.model = model
        self.backend = make_backend(cfg.backend.name, model, num_envs, cfg.backend)
        nu = model.nu
        self.joint_names = tuple(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_ACTUATOR, i) for i in range(nu))
        self._body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "puck")
        r, body = cfg.randomization, (self._body,)
        # Mass scales the inertia with it (one draw): the puck stays a uniform disc.
        self.dr_fields = (
            FieldRandomization(field="body_mass", rows=body, range=r.mass, draw="mass"),
            FieldRandomization(field="body_inertia", rows=body, range=r.mass, draw="mass"),
            FieldRandomization(field="dof_damping", range=r.damping, draw="damping"),
            FieldRandomization(field="actuator_gear", cols=(0,), range=r.motor_strength, draw="motor_strength"),
        )
        self._max_steps = round(cfg.episode_s / cfg.control_dt)
        self._push_every = max(1, round(cfg.randomization.push_interval_s / cfg.control_dt))
        self._cmd_every = max(1, round(cfg.commands.resample_s / cfg.control_dt))
        edge = cfg.table_half_size
        self.spec = EnvSpec(
            groups={"policy": GroupSpec(terms=POLICY_TERMS, history=cfg.history_length),
                    "privileged": GroupSpec(terms=PRIVILEGED_TERMS, history=cfg.privileged_history_length)},
            action_names=self.joint_names,
            control_dt=cfg.control_dt,
            max_episode_steps=self._max_steps,
            extras={"action_scale": cfg.action_scale, "default_joint_pos": [0.0] * nu,
                    "joint_lower": [-edge, -edge, -np.pi], "joint_upper": [edge, edge, np.pi],
                    "kp": [0.0] * nu, "kv": [0.0] * nu},
        )
        self._weights = {k: v for k, v in dataclasses.asdict(cfg.rewards).items() if k in REWARD_TERMS and v != 0.0}
        self._policy_scale = term_scales(POLICY_TERMS)
        self._policy_noise = term_noise(POLICY_TERMS)
        self._priv_scale = term_scales(PRIVILEGED_TERMS)
        n = num_envs
        self.command = np.zeros((n, 3))
        self.actions = np.zeros((n, nu))
        self.actions_prev = np.zeros((n, nu))
        self.episode_step = np.zeros(n, dtype=np.int64)
        self.episode_return = np.zeros(n)
        self.episode_tracking = np.zeros(n)
        self.dr_params = np.ones((n, 3))
        self.nan_resets = 0
        self._history = ObsHistory(self.spec.groups, n)

    # ---- public API -------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Obs:
        """Reset every env and return the first observations."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._reset_envs(np.arange(self.num_envs))
        self._history.clear()
        return self._observe(self._state())

    def randomize_episode_start(self) -> None:
        """Spread time-outs over the batch so resets do not arrive all at once (used by trainers)."""
        self.episode_step[:] = self.rng.integers(0, self._max_steps, size=self.num_envs)

    def step(self, actions: Any) -> tuple[Obs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Apply (num_envs, 3) actions for one control period (see `VecEnv.step`)."""
        cfg = self.cfg
        a = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)
        if a.shape[1] != self.model.nu:
            raise ValueError(f"actions have {a.shape[1]} columns; this task has {self.model.nu} actuators")
        a = np.clip(np.nan_to_num(a, nan=0.0, posinf=cfg.action_clip, neginf=-cfg.action_clip),
                    -cfg.action_clip, cfg.action_clip)
        self.actions_prev[:] = self.actions
        self.actions[:] = a
        self.backend.step(cfg.action_scale * a, self.substeps)
        self.episode_step += 1
        bad = self.backend.diverged()
        if bad.any():
            # A blown-up world: reset it, count it, never let NaN reach the learner.
            self.nan_resets += int(bad.sum())
            self._reset_envs(np.flatnonzero(bad))

        s = self._state()
        reward = np.zeros(self.num_envs)
        sigma = cfg.rewards.tracking_sigma
        for name, w in self._weights.items():
            r = REWARD_TERMS[name](s, sigma=sigma) if name.startswith("track") else REWARD_TERMS[name](s)
            reward += w * cfg.control_dt * r
        off_table = (np.abs(s.position) > cfg.table_half_size).any(axis=1)
        terminated = off_table | bad
        reward += cfg.rewards.termination * terminated
        truncated = (self.episode_step >= self._max_steps) & ~terminated
        self.episode_return += reward
        self.episode_tracking += np.linalg.norm(self.command[:, :2] - s.base_lin_vel, axis=1)

        push_bases(self.backend.qvel, self.episode_step % self._push_every == 0, cfg.randomization.push_velocity,
                   self.rng)
        resample = self.episode_step % self._cmd_every == 0
        if resample.any():
            self._sample_commands(np.flatnonzero(resample))

        obs = self._observe(s)
        done = terminated | truncated
        info: dict[str, Any] = {}
        if done.any():
            ids = np.flatnonzero(done)
            info["final_obs"] = {k: v.copy() for k, v in obs.items()}
            info["episode"] = episode_stats(ids, self.episode_return, self.episode_step, self.episode_tracking,
                                            terminated)
            self._reset_envs(ids)
            # Frames of every env are drawn (the noise stream stays the same); only the reset rows are used.
            fresh = self._frames(self._state())
            for k, rows in self._history.reset_rows({k: v[ids] for k, v in fresh.items()}, ids).items():
                obs[k][ids] = rows
        info["log"] = {"nan_resets": self.nan_resets}
        return obs, reward.astype(np.float32), terminated, truncated, info

    def close(self) -> None:
        """Stop the backend's threads."""
        self.backend.close()

    # ---- internals --------------------------------------------------------------------------------

    def _state(self) -> PuckState:
        qpos, qvel = self.backend.qpos, self.backend.qvel
        yaw_rate = np.zeros((self.num_envs, 3))
        yaw_rate[:, 2] = qvel[:, 2]
        return PuckState(xp=np, position=qpos[:, :2], base_lin_vel=qvel[:, :2], base_ang_vel=yaw_rate, command=self.command,
                         action=self.actions, action_prev=self.actions_prev, randomization=self.dr_params)

    def _observe(self, s: PuckState) -> Obs:
        """Observation groups of every env; pushes one frame onto each group's history."""
        return {k: v.astype(np.float32) for k, v in self._history.push(self._frames(s)).items()}

    def _frames(self, s: PuckState) -> Obs:
        """One frame of each group for every env (float64, with observation noise on `policy`)."""
        pol = np.concatenate([OBS_TERMS[t.name](s) for t in POLICY_TERMS], axis=1) * self._policy_scale
        noise = self.cfg.randomization.observation_noise
        if noise > 0:
            pol += self.rng.uniform(-1.0, 1.0, pol.shape) * (self._policy_noise * noise)
        priv = np.concatenate([OBS_TERMS[t.name](s) for t in PRIVILEGED_TERMS], axis=1) * self._priv_scale
        return {"policy": pol, "privileged": priv}

    def _sample_commands(self, ids: np.ndarray) -> None:
        self.command[ids] = sample_commands(self.rng, self.cfg.commands, len(ids))

    def _reset_envs(self, ids: np.ndarray) -> None:
        cfg, r, rng, k = self.cfg, self.cfg.randomization, self.rng, len(ids)
        if k == 0:
            return
        # Parameter-major draws (all masses, then dampings, then strengths): the order the numbers depend on.
        params = np.stack([rng.uniform(*r.mass, k), rng.uniform(*r.damping, k), rng.uniform(*r.motor_strength, k)], 1)
        self.backend.randomize(ids, self.dr_fields, params)
        self.dr_params[ids] = params
        self.backend.state[ids] = 0.0
        self.backend.qpos[ids, :2] = rng.uniform(-cfg.spawn_xy, cfg.spawn_xy, (k, 2))
        self.backend.qpos[ids, 2] = rng.uniform(-np.pi, np.pi, k)
        self.actions[ids] = 0.0
        self.actions_prev[ids] = 0.0
        self.episode_step[ids] = 0
        self.episode_return[ids] = 0.0
        self.episode_tracking[ids] = 0.0
        self._sample_commands(ids)
