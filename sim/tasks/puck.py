"""Velocity tracking for a planar puck: the cheapest task that still exercises the whole stack.

A 1 kg disc slides on a table (x, y) and spins (yaw), pushed by three motors. It follows a commanded
(vx, vy, yaw rate) like the legged task does, with the same observation groups (`policy`, `privileged`),
domain randomisation (mass, damping, motor strength, pushes, observation noise), time-outs and a
terminal state (sliding off the table). One physics step costs microseconds and a good controller is
nearly linear, so PPO learns it in seconds: the learning tests train on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np
from s2r.sim.backends import BackendConfig, FieldRandomization
from s2r.sim.env import Obs, ObsTerm
from s2r.sim.models import load_model
from s2r.sim.tasks.terms import RewardTerm, reward_field, upgrade_rewards_dict
from s2r.sim.tasks.velocity import CommandConfig, VelocityEnv

Array = Any


@dataclass(frozen=True, kw_only=True)
class PuckRewardConfig:
    """Reward terms (weight 0 disables one); each is scaled by weight * control_dt, see `RewardTerm`.

    The locomotion terms named here read only fields a `PuckState` has too (command, base velocities,
    actions).
    """

    track_lin_vel_xy: RewardTerm = reward_field("track_lin_vel_xy", 1.0, sigma=0.25)
    track_ang_vel_z: RewardTerm = reward_field("track_ang_vel_z", 0.5, sigma=0.25)
    action_rate: RewardTerm = reward_field("action_rate", -0.01)
    termination: float = -2.0  # one-off on a terminal step, not scaled by dt

    @classmethod
    def upgrade_dict(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Read a section saved as name -> weight with a shared `tracking_sigma`."""
        return upgrade_rewards_dict(cls(), data, {"tracking_sigma": ("track_lin_vel_xy.sigma", "track_ang_vel_z.sigma")})


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


OBS_TERMS = {
    "base_lin_vel": lambda s: s.base_lin_vel,
    "base_ang_vel": lambda s: s.base_ang_vel[:, 2:],
    "velocity_command": lambda s: s.command,
    "last_action": lambda s: s.action,
    "position": lambda s: s.position,
    "randomization": lambda s: s.randomization,
}


class PuckEnv(VelocityEnv):
    """Batched puck velocity tracking; the step's order of events is `VelocityEnv.step`."""

    def __init__(self, cfg: PuckConfig, num_envs: int = 1, seed: int = 0) -> None:
        model = load_model(cfg.model)
        self._setup(cfg, model, num_envs, seed)
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
        edge = cfg.table_half_size
        self._declare(POLICY_TERMS, PRIVILEGED_TERMS, self.joint_names, {
            "action_scale": cfg.action_scale, "default_joint_pos": [0.0] * nu,
            "joint_lower": [-edge, -edge, -np.pi], "joint_upper": [edge, edge, np.pi],
            "kp": [0.0] * nu, "kv": [0.0] * nu})
        self.dr_params = np.ones((num_envs, 3))

    # ---- public API -------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Obs:
        """Reset every env and return the first observations."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._reset_envs(np.arange(self.num_envs))
        self._history.clear()
        return self._observe(self._state())

    def planar_pose(self) -> np.ndarray:
        """(num_envs, 3) disc x, y and yaw (its three joints)."""
        return self.backend.qpos[:, :3].copy()

    # ---- step hooks (the order of events is VelocityEnv.step) ---------------------------------------

    def _apply_action(self, a: np.ndarray) -> None:
        self.backend.step(self.cfg.action_scale * a, self.substeps)

    def _step_state(self) -> PuckState:
        return self._state()

    def _terminated(self, s: PuckState) -> np.ndarray:
        return (np.abs(s.position) > self.cfg.table_half_size).any(axis=1)  # slid off the table

    def _observe_reset(self, obs: Obs, ids: np.ndarray) -> None:
        # Frames of every env are drawn (the noise stream stays the same); only the reset rows are used.
        fresh = self._frames(self._state())
        for k, rows in self._history.reset_rows({k: v[ids] for k, v in fresh.items()}, ids).items():
            obs[k][ids] = rows

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
        self.steps_run[ids] = 0
        self.episode_return[ids] = 0.0
        self.episode_tracking[ids] = 0.0
        self._sample_commands(ids)
