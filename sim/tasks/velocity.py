"""What every velocity-command task shares: the step's order of events, the command, scheduled pushes,
reward terms from config and finished-episode statistics.

The Go1 locomotion task and the puck task both track a commanded (vx, vy, yaw rate) and both derive from
`VelocityEnv`, which writes the step once and calls hooks they fill in; a change to how commands are drawn,
rewards summed or episodes reported happens here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np
from s2r.sim.backends import make_backend
from s2r.sim.env import EnvSpec, GroupSpec, Obs, ObsHistory, ObsTerm, VecEnv, control_substeps, term_noise, term_scales
from s2r.sim.tasks.terms import reward_terms


@dataclass(frozen=True, kw_only=True)
class CommandConfig:
    """Ranges the velocity command is drawn from (uniform), and how often it changes."""

    lin_vel_x: tuple[float, float] = (-1.0, 1.0)
    lin_vel_y: tuple[float, float] = (0.0, 0.0)
    ang_vel_z: tuple[float, float] = (-0.5, 0.5)
    resample_s: float = 10.0
    zero_fraction: float = 0.05  # share of commands that ask to stand still
    # Share of commands that go straight: vx drawn, vy and wz exactly zero (a uniform draw almost never gives
    # zero sideways/yaw while moving). Off by default: not yet shown to reduce drift (bench/results/README.md).
    straight_fraction: float = 0.0


def sample_commands(rng: np.random.Generator, c: CommandConfig, k: int) -> np.ndarray:
    """(k, 3) commands vx, vy, wz: a `zero_fraction` share is zero (stand still), the next `straight_fraction`
    share keeps only vx (vy = wz = 0)."""
    if not 0.0 <= c.zero_fraction + c.straight_fraction <= 1.0 or min(c.zero_fraction, c.straight_fraction) < 0:
        raise ValueError(f"commands.zero_fraction ({c.zero_fraction}) and commands.straight_fraction "
                         f"({c.straight_fraction}) must be >= 0 and add up to at most 1")
    cmd = np.stack([rng.uniform(*c.lin_vel_x, k), rng.uniform(*c.lin_vel_y, k), rng.uniform(*c.ang_vel_z, k)], axis=1)
    # One draw decides both shares, so a config with straight_fraction 0 draws the same numbers as before.
    u = rng.random(k)
    cmd[u < c.zero_fraction] = 0.0
    cmd[(u >= c.zero_fraction) & (u < c.zero_fraction + c.straight_fraction), 1:] = 0.0
    return cmd


def push_bases(qvel: np.ndarray, due: np.ndarray, velocity: float, rng: np.random.Generator) -> None:
    """Add a uniform horizontal velocity of up to `velocity` m/s to the free base of the `due` envs."""
    if velocity > 0 and due.any():
        qvel[due, :2] += rng.uniform(-1, 1, (int(due.sum()), 2)) * velocity


def episode_stats(ids: np.ndarray, returns: np.ndarray, steps: np.ndarray, tracking: np.ndarray,
                  terminated: np.ndarray) -> dict[str, Any]:
    """`info["episode"]` for the envs `ids` that just finished (copies, taken before their reset)."""
    return {
        "env_ids": ids,
        "return": returns[ids].copy(),
        "length": steps[ids].copy(),
        "vel_error": tracking[ids] / np.maximum(steps[ids], 1),
        "fell": terminated[ids].copy(),
    }


def norm_xy(v: np.ndarray) -> np.ndarray:
    """Length of the first two components along the last axis (np.linalg.norm's arithmetic, less overhead)."""
    x, y = v[..., 0], v[..., 1]
    return np.sqrt(x * x + y * y)


class VelocityEnv(VecEnv):
    """A batched velocity-command task with one order of events per control step, written here once.

    `step` runs: clip actions -> `_apply_action` (physics) -> reset diverged worlds (`_reset_diverged`) ->
    `_step_state` -> rewards (the config's `RewardTerm`s, plus `rewards.termination` once on a terminal
    step) -> `_terminated` -> time-outs -> episode sums (`_tracking_error`) -> scheduled pushes -> command
    resampling -> `_observe` -> for finished envs: episode statistics, `_reset_envs`, `_observe_reset`.
    Subclasses fill in those hooks and call `_setup` then `_declare` in `__init__`; their config has
    `control_dt`, `episode_s`, `action_clip`, `history_length`, `privileged_history_length`, `commands`,
    `rewards` (with `termination`), `randomization.push_interval_s`/`push_velocity` and `backend`.
    """

    def _setup(self, cfg: Any, model: mujoco.MjModel, num_envs: int, seed: int) -> None:
        """State every velocity task keeps; call from `__init__` once the model is loaded."""
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.cfg = cfg
        self.num_envs = n = num_envs
        self.rng = np.random.default_rng(seed)
        self.model = model
        self.substeps = control_substeps(model.opt.timestep, cfg.control_dt)
        self.backend = make_backend(cfg.backend.name, model, num_envs, cfg.backend)
        self._rewards = reward_terms(cfg.rewards)
        self._max_steps = round(cfg.episode_s / cfg.control_dt)
        self._push_every = max(1, round(cfg.randomization.push_interval_s / cfg.control_dt))
        self._cmd_every = max(1, round(cfg.commands.resample_s / cfg.control_dt))
        self.command = np.zeros((n, 3))
        self.actions = np.zeros((n, model.nu))
        self.actions_prev = np.zeros((n, model.nu))
        self.episode_step = np.zeros(n, dtype=np.int64)
        # Control steps each env has actually run since it spawned. `episode_step` starts at a random count when a
        # trainer spreads the time-outs (`randomize_episode_start`, again at every resume), so the episode's statistics
        # and anything judged per episode (the terrain curriculum) count this one.
        self.steps_run = np.zeros(n, dtype=np.int64)
        self.episode_return = np.zeros(n)
        self.episode_tracking = np.zeros(n)
        self.nan_resets = 0
        self._arange = np.arange(n)

    def _declare(self, policy_terms: tuple[ObsTerm, ...], privileged_terms: tuple[ObsTerm, ...],
                 action_names: tuple[str, ...], extras: dict[str, Any]) -> None:
        """The spec (groups `policy` and `privileged` with the config's history lengths) and term scales."""
        cfg = self.cfg
        self.spec = EnvSpec(
            groups={"policy": GroupSpec(terms=policy_terms, history=cfg.history_length),
                    "privileged": GroupSpec(terms=privileged_terms, history=cfg.privileged_history_length)},
            action_names=action_names,
            control_dt=cfg.control_dt,
            max_episode_steps=self._max_steps,
            extras=extras,
        )
        self._policy_scale = term_scales(policy_terms)
        self._policy_noise = term_noise(policy_terms)
        self._priv_scale = term_scales(privileged_terms)
        self._history = ObsHistory(self.spec.groups, self.num_envs)

    # ---- the step, in one order -------------------------------------------------------------------

    def step(self, actions: Any) -> tuple[Obs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Apply (num_envs, nu) actions for one control period (see `VecEnv.step` and the class docstring)."""
        cfg = self.cfg
        a = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)
        if a.shape[1] != self.model.nu:
            raise ValueError(f"actions have {a.shape[1]} columns; this task has {self.model.nu} actuators")
        # Clipping maps +-inf to the bounds; NaN becomes 0 (what np.nan_to_num would do, for less work).
        a = np.clip(a, -cfg.action_clip, cfg.action_clip)
        a[np.isnan(a)] = 0.0
        self.actions_prev[:] = self.actions
        self.actions[:] = a
        self._apply_action(a)

        self.episode_step += 1
        self.steps_run += 1
        bad = self.backend.diverged()
        if bad.any():
            # A blown-up world: reset it, count it, never let NaN reach the learner.
            self.nan_resets += int(bad.sum())
            self._reset_diverged(bad)

        state = self._step_state()
        reward = np.zeros(self.num_envs)
        dt = cfg.control_dt
        for fn, w, params in self._rewards:
            reward += w * dt * fn(state, **params)
        terminated = self._terminated(state) | bad
        reward += cfg.rewards.termination * terminated
        truncated = (self.episode_step >= self._max_steps) & ~terminated
        self.episode_return += reward
        self.episode_tracking += self._tracking_error(state)

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
            info["episode"] = episode_stats(ids, self.episode_return, self.steps_run, self.episode_tracking,
                                            terminated)
            self._reset_envs(ids)
            # Only the reset envs get a new observation; the others keep theirs (history and all).
            self._observe_reset(obs, ids)
        info["log"] = {"nan_resets": self.nan_resets}
        return obs, reward.astype(np.float32), terminated, truncated, info

    def randomize_episode_start(self) -> None:
        """Spread time-outs over the batch so resets do not arrive all at once (used by trainers)."""
        self.episode_step[:] = self.rng.integers(0, self._max_steps, size=self.num_envs)

    def close(self) -> None:
        """Stop the backend's threads."""
        self.backend.close()

    def planar_pose(self) -> np.ndarray:
        """(num_envs, 3) world x, y (m) and heading (rad) of each base: what a straight-line check measures."""
        raise NotImplementedError

    def _sample_commands(self, ids: np.ndarray) -> None:
        self.command[ids] = sample_commands(self.rng, self.cfg.commands, len(ids))

    # ---- hooks ------------------------------------------------------------------------------------

    def _apply_action(self, a: np.ndarray) -> None:
        """Turn clipped actions (num_envs, nu) into actuator commands and step the physics."""
        raise NotImplementedError

    def _reset_diverged(self, bad: np.ndarray) -> None:
        """Reset the worlds whose state blew up (`bad`: (num_envs,) bool)."""
        self._reset_envs(np.flatnonzero(bad))

    def _step_state(self) -> Any:
        """The term inputs after the physics step (a state object the reward and observation terms read)."""
        raise NotImplementedError

    def _terminated(self, state: Any) -> np.ndarray:
        """(num_envs,) bool: failure states (falls, leaving the table); divergence is added by `step`."""
        raise NotImplementedError

    def _tracking_error(self, state: Any) -> np.ndarray:
        """(num_envs,) horizontal speed error, summed into the episode's `vel_error`."""
        return norm_xy(self.command[:, :2] - state.base_lin_vel[:, :2])

    def _observe(self, state: Any) -> Obs:
        """Observation groups of every env (pushes one frame onto each group's history)."""
        raise NotImplementedError

    def _observe_reset(self, obs: Obs, ids: np.ndarray) -> None:
        """Overwrite the rows `ids` of `obs` with the first observation of the envs just reset."""
        raise NotImplementedError

    def _reset_envs(self, ids: np.ndarray) -> None:
        """Randomise and reset the envs `ids` (model, state, per-episode buffers, command)."""
        raise NotImplementedError
