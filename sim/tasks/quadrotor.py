"""Crazyflie time-optimal re-planning as a one-step (bandit) task.

Each episode is one random waypoint set. The policy sees the waypoints (relative to the first, zero-padded,
with a mask) and answers with one number per segment: the log-ratio of that segment's duration to the
heuristic allocation's. The reward is the time saved, -total_time / heuristic_total_time, when the
minimum-snap trajectory through those durations passes the low-fidelity (flatness) check, and a fixed
penalty otherwise. Every step ends the episode; the env then draws the next waypoint set.

This is the cheap fidelity only. The multi-fidelity reward estimator that also learns from closed-loop
MuJoCo flights (`s2r.sim.quadrotor.flight.fly`) sits on top of it and reads `info` ("durations",
"margin", ...) plus `waypoint_sets()` to re-evaluate the same plans at higher fidelity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from s2r.real.planner import durations_from_actions, encode_obs  # the robot planner's layout and timing rule
from s2r.real.trajectory import QuadLimits, feasibility, heuristic_durations, min_snap
from s2r.sim.env import EnvSpec, GroupSpec, Obs, ObsTerm, VecEnv


@dataclass(frozen=True, kw_only=True)
class ReplanConfig:
    """A waypoint re-planning task.

    Attributes:
        max_waypoints: Largest waypoint count; observations and actions are padded to it.
        min_waypoints: Smallest waypoint count drawn (at least 2).
        xy_half_extent: m; waypoints lie in [-e, e]^2 horizontally.
        z_range: m; waypoint heights.
        min_spacing: m; consecutive waypoints are at least this far apart.
        limits: Vehicle limits of the feasibility check (a 0.1 m floor clearance by default).
        max_ratio: Action +-1 scales a segment's heuristic duration by max_ratio^+-1. 3 keeps the
            low-fidelity optimum (about 0.5 of the heuristic on average, sometimes less) inside the range.
        infeasible_reward: Reward of a plan that fails the feasibility check; below -max_ratio, the reward of
            the slowest feasible plan, so failing never pays better than flying slowly.
        feasibility_dt: s, sampling period of the check.
        action_clip: Actions are clipped to [-action_clip, action_clip] (the gymnasium action box).
    """

    max_waypoints: int = 6
    min_waypoints: int = 3
    xy_half_extent: float = 2.0
    z_range: tuple[float, float] = (1.0, 2.5)
    min_spacing: float = 0.5
    limits: QuadLimits = field(default_factory=lambda: QuadLimits(min_height=0.1))
    max_ratio: float = 3.0
    infeasible_reward: float = -4.0
    feasibility_dt: float = 0.01
    action_clip: float = 1.0


def sample_waypoints(rng: np.random.Generator, count: int, cfg: ReplanConfig) -> np.ndarray:
    """(count, 3) random waypoints inside the task's box, consecutive ones at least `min_spacing` apart."""
    lo = np.array([-cfg.xy_half_extent, -cfg.xy_half_extent, cfg.z_range[0]])
    hi = np.array([cfg.xy_half_extent, cfg.xy_half_extent, cfg.z_range[1]])
    pts = [rng.uniform(lo, hi)]
    while len(pts) < count:
        p = rng.uniform(lo, hi)
        if np.linalg.norm(p - pts[-1]) >= cfg.min_spacing:  # rejection: the box is far larger than the spacing
            pts.append(p)
    return np.array(pts)


class ReplanEnv(VecEnv):
    """Batched one-step re-planning: observe waypoints, choose segment durations, get the time saved."""

    def __init__(self, cfg: ReplanConfig, num_envs: int = 1, seed: int = 0) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if not 2 <= cfg.min_waypoints <= cfg.max_waypoints:
            raise ValueError(f"need 2 <= min_waypoints <= max_waypoints; got {cfg.min_waypoints}, {cfg.max_waypoints}")
        if cfg.max_ratio <= 1.0:
            raise ValueError(f"max_ratio must be > 1; got {cfg.max_ratio}")
        if cfg.infeasible_reward >= -cfg.max_ratio:
            raise ValueError(f"infeasible_reward {cfg.infeasible_reward} must be below -max_ratio ({-cfg.max_ratio}), "
                             "or an infeasible plan pays better than the slowest feasible one")
        self.cfg = cfg
        self.num_envs = num_envs
        self.rng = np.random.default_rng(seed)
        k, n = cfg.max_waypoints, num_envs
        self.spec = EnvSpec(
            groups={
                "policy": GroupSpec(terms=(ObsTerm(name="waypoints", size=3 * k), ObsTerm(name="waypoint_mask", size=k))),
                "privileged": GroupSpec(terms=(ObsTerm(name="heuristic_durations", size=k - 1),)),
            },
            action_names=tuple(f"segment{i}_log_ratio" for i in range(k - 1)),
            control_dt=1.0,
            max_episode_steps=1,
            extras={"max_ratio": cfg.max_ratio, "max_waypoints": k},
        )
        self.waypoints = np.zeros((n, k, 3))  # (num_envs, max_waypoints, 3), zero-padded
        self.counts = np.zeros(n, dtype=np.int64)
        self.heuristic = np.zeros((n, k - 1))  # (num_envs, segments), 0 for padded segments
        self.nan_resets = 0

    def reset(self, seed: int | None = None) -> Obs:
        """Draw a new waypoint set for every env."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._reset_envs(np.arange(self.num_envs))
        return self._observe()

    def randomize_episode_start(self) -> None:
        """Nothing to spread: every episode is one step (kept for trainers that call it)."""

    def waypoint_sets(self) -> list[np.ndarray]:
        """The current (unpadded) waypoint set of every env, (count_i, 3) each."""
        return [self.waypoints[i, : self.counts[i]].copy() for i in range(self.num_envs)]

    def step(self, actions: Any) -> tuple[Obs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Evaluate one plan per env (see the module docstring) and draw the next waypoint sets."""
        cfg, n = self.cfg, self.num_envs
        a = np.asarray(actions, dtype=np.float64).reshape(n, -1)
        if a.shape[1] != self.spec.action_dim:
            raise ValueError(f"actions have {a.shape[1]} columns; this task has {self.spec.action_dim} segments")
        a = np.clip(np.nan_to_num(a, nan=0.0, posinf=cfg.action_clip, neginf=-cfg.action_clip),
                    -cfg.action_clip, cfg.action_clip)
        durations = durations_from_actions(a, self.heuristic, cfg.max_ratio)  # padded segments: heuristic 0 -> 0
        margin = np.zeros(n)
        feasible = np.zeros(n, dtype=bool)
        for i in range(n):
            c = self.counts[i]
            spline = min_snap(self.waypoints[i, :c], durations[i, : c - 1])
            rep = feasibility(spline, cfg.limits, cfg.feasibility_dt)
            margin[i], feasible[i] = rep.margin, rep.feasible
        total = durations.sum(axis=1)
        heur_total = self.heuristic.sum(axis=1)
        reward = np.where(feasible, -total / heur_total, cfg.infeasible_reward)

        final_obs = self._observe()
        info: dict[str, Any] = {
            "final_obs": final_obs,
            "episode": {"env_ids": np.arange(n), "return": reward.copy(), "length": np.ones(n, dtype=np.int64),
                        "feasible": feasible.copy(), "time_ratio": total / heur_total,
                        # The shared trainers log these two: an infeasible plan is this task's "fall";
                        # there is no velocity to track, so the error is 0 (NaN would break equality checks).
                        "fell": ~feasible, "vel_error": np.zeros(n)},
            "margin": margin,
            "feasible": feasible,
            "durations": durations,
            "total_time": total,
            "heuristic_total_time": heur_total,
            "waypoints": self.waypoint_sets(),
            "log": {"nan_resets": self.nan_resets, "feasible_rate": float(feasible.mean())},
        }
        self._reset_envs(np.arange(n))
        terminated = np.ones(n, dtype=bool)
        return self._observe(), reward.astype(np.float32), terminated, np.zeros(n, dtype=bool), info

    def _reset_envs(self, ids: np.ndarray) -> None:
        cfg = self.cfg
        for i in ids:
            count = int(self.rng.integers(cfg.min_waypoints, cfg.max_waypoints + 1))
            w = sample_waypoints(self.rng, count, cfg)
            self.waypoints[i] = 0.0
            self.waypoints[i, :count] = w
            self.counts[i] = count
            self.heuristic[i] = 0.0
            self.heuristic[i, : count - 1] = heuristic_durations(w, cfg.limits, dt=cfg.feasibility_dt)

    def _observe(self) -> Obs:
        k = self.cfg.max_waypoints
        pol = np.zeros((self.num_envs, 4 * k), dtype=np.float32)
        for i in np.flatnonzero(self.counts):  # an env never reset has no waypoints: all zeros
            encode_obs(self.waypoints[i, : self.counts[i]], k, out=pol[i : i + 1])
        return {"policy": pol, "privileged": self.heuristic.astype(np.float32)}
