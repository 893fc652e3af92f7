"""The task's waypoint sets (observation and action layout) and the flyability scores of the two fidelities."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from s2r.real.trajectory import FeasibilityReport, PolySpline, min_snap
from s2r.sim.quadrotor.flight import FlightResult

TASK_ID = "Crazyflie-Replan-Waypoints"


@dataclass(frozen=True)
class WaypointSets:
    """A batch of waypoint sets as the task draws them.

    Attributes:
        obs: (n, 4 * max_waypoints) float32, the task's `policy` group (relative waypoints, then the mask).
        waypoints: (n, max_waypoints, 3) absolute positions, zero-padded.
        counts: (n,) waypoints per set.
        heuristic: (n, max_waypoints - 1) heuristic durations, 0 for padded segments.
    """

    obs: np.ndarray
    waypoints: np.ndarray
    counts: np.ndarray
    heuristic: np.ndarray

    def __len__(self) -> int:
        return len(self.counts)

    def subset(self, idx: np.ndarray) -> WaypointSets:
        """The sets at `idx`."""
        return WaypointSets(self.obs[idx], self.waypoints[idx], self.counts[idx], self.heuristic[idx])

    def set(self, i: int) -> np.ndarray:
        """(count_i, 3) waypoints of set i."""
        return self.waypoints[i, : self.counts[i]]


def sample_sets(task_cfg: Any, n: int, seed: int) -> WaypointSets:
    """Draw `n` waypoint sets from the task (its sampler, its heuristic, its observation layout).

    Args:
        task_cfg: The task's `ReplanConfig`.
        n: Number of sets.
        seed: Seed of the task's random stream (training, validation and evaluation use disjoint seeds).
    """
    from s2r.sim.tasks.quadrotor import ReplanEnv

    env = ReplanEnv(task_cfg, num_envs=n, seed=seed)
    obs = env.reset(seed=seed)
    return WaypointSets(obs=obs["policy"].copy(), waypoints=env.waypoints.copy(), counts=env.counts.copy(),
                        heuristic=env.heuristic.copy())


# ---- the fidelities -----------------------------------------------------------------------------


def low_fidelity_score(report: FeasibilityReport) -> float:
    """Flyability score of a flatness check: its margin, clipped to [-1, 1]."""
    return float(np.clip(report.margin, -1.0, 1.0))


def high_fidelity_score(result: FlightResult, bound: float) -> float:
    """Flyability score of a flight: 1 - max error / tracking bound in [-1, 1]; -1 for a crash."""
    if result.crashed or not np.isfinite(result.max_pos_error):
        return -1.0
    return float(np.clip(1.0 - result.max_pos_error / bound, -1.0, 1.0))


def splines_for(sets: WaypointSets, durations: np.ndarray) -> list[PolySpline]:
    """Minimum-snap trajectory of every set with the given (n, max_waypoints - 1) durations."""
    return [min_snap(sets.set(i), durations[i, : sets.counts[i] - 1]) for i in range(len(sets))]
