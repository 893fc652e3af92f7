"""Multi-fidelity RL for time-optimal quadrotor re-planning (`Crazyflie-Replan-Waypoints`).

A planning policy maps a waypoint set (relative to the first waypoint, zero-padded, with a mask: the task's
`policy` observation group) to one log-ratio per segment: segment i lasts `heuristic_i * max_ratio**a_i`,
and a minimum-snap trajectory is solved through the waypoints with those durations. The policy is trained
against a reward *estimator* instead of the simulator: a multi-fidelity Gaussian process (BoTorch's
`SingleTaskMultiFidelityGP`) that predicts a flyability score y (> 0 flies) of a trajectory from a few
dimensionless features of it plus a fidelity coordinate s:

- s = 0, low fidelity: the flatness feasibility margin (`s2r.real.trajectory.feasibility`), ~0.2 ms;
- s = 1, high fidelity: a closed-loop MuJoCo flight with an SE(3) controller, motor lag, rotor drag and
  randomised mass (`s2r.sim.quadrotor.flight.fly`), y = 1 - max tracking error / bound (-1 on a crash).

The loop alternates three things, round after round:

1. fit the GP on every query so far (bounded: the newest low-fidelity points are kept);
2. train the policy by gradient through a differentiable minimum-snap solve and the GP posterior:
   minimise total time subject to a lower confidence bound of the high-fidelity score (and the exact
   low-fidelity margin) staying above a target, as an exact penalty;
3. choose new queries with a cost-aware acquisition: among the policy's current trajectories and
   perturbations of them, at either fidelity, pick greedily the query with the largest reduction of the
   GP's integrated high-fidelity variance over the policy's trajectories per unit cost (BoTorch's
   `AffineFidelityCostModel`); the high-fidelity flights are capped by a budget and counted.

The package, one job per file: `sets` (the task's waypoint sets and the two fidelities' scores),
`network` (`PlannerNet`), `estimator` (the features, the estimator and the acquisition, with why the
acquisition is an integrated variance and not a max-value one), `runner` (`MFRL`, the registered
algorithm "mfrl", and its config; the run driver checkpoints, resumes and exports it), `export` (ONNX +
policy.json) and `evaluation` (held-out scoring). Everything public is re-exported here.

A run lives in `runs/Crazyflie-Replan-Waypoints/mfrl_<timestamp>/`: `config.json`, TensorBoard events,
`checkpoint.pt` (atomic; policy, optimiser, every query, counters), `history.json`, and at the end
`policy.onnx` + `policy.json` (checked against onnxruntime) and `learning_curve.png`.

At inference the exported planner runs in `s2r.real.planner.Planner` (the robot runtime, which
`evaluate_planner` scores): heuristic durations, ONNX, min-snap, then a uniform stretch of the timing until
the flatness check passes, so whatever the estimator got wrong the vehicle is never sent a plan the cheap
check rejects. The observation layout and the actions -> durations rule are that module's too.
"""

from __future__ import annotations

from s2r.policies.mfrl.estimator import (
    FEATURES,
    HIGH,
    LOW,
    REAL,
    AcquisitionConfig,
    EstimatorConfig,
    FlyabilityEstimator,
    MFRLError,
    select_queries,
    torch_min_snap,
    trajectory_features,
)
from s2r.policies.mfrl.evaluation import evaluate_planner, is_planner_run, summary_lines
from s2r.policies.mfrl.export import export_planner
from s2r.policies.mfrl.network import PlannerNet, PlannerNetConfig
from s2r.policies.mfrl.runner import (
    MFRL,
    MFRLConfig,
)
from s2r.policies.mfrl.sets import (
    TASK_ID,
    WaypointSets,
    high_fidelity_score,
    low_fidelity_score,
    sample_sets,
    splines_for,
)

__all__ = [
    "FEATURES", "HIGH", "LOW", "MFRL", "REAL", "TASK_ID",
    "AcquisitionConfig", "EstimatorConfig", "FlyabilityEstimator", "MFRLConfig", "MFRLError",
    "PlannerNet", "PlannerNetConfig", "WaypointSets",
    "evaluate_planner", "export_planner",
    "high_fidelity_score", "is_planner_run", "low_fidelity_score",
    "sample_sets", "select_queries", "splines_for", "summary_lines", "torch_min_snap", "trajectory_features",
]
