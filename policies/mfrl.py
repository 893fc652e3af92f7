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

Why not qMultiFidelityKnowledgeGradient / qMultiFidelityMaxValueEntropy: those value a query by what it
says about the *maximum* of the modelled function, which is not what the policy needs (the trajectory with
the largest flyability margin is the slowest). The policy needs the sign of the high-fidelity score near
its own operating points, so the information measure is the integrated posterior variance at those points
(BoTorch's `qNegIntegratedPosteriorVariance`), computed here in closed form from the joint posterior
covariance: it equals the qNIPV difference exactly (a GP's posterior variance does not depend on the
observed values; `tests/policies/test_mfrl.py` checks the two agree) and costs one covariance matrix
instead of one fantasy model per candidate: at 1.5k training points qNIPV took ~1.5 s per candidate here,
hours for a round's few hundred candidates and dozens of picks, against a few milliseconds.

A run lives in `runs/Crazyflie-Replan-Waypoints/<timestamp>/`: `config.json`, TensorBoard events,
`checkpoint.pt` (atomic; policy, optimiser, every query, counters), `history.json`, and at the end
`policy.onnx` + `policy.json` (checked against onnxruntime) and `learning_curve.png`.

At inference (`OnnxPlanner`) the plan is: heuristic durations, ONNX, min-snap, then `make_feasible`, which
stretches the timing uniformly until the flatness check passes, so whatever the estimator got wrong the
vehicle is never sent a plan the cheap check rejects. That section uses numpy, onnxruntime and `s2r.real`
only (plus the numpy-only heuristic allocation), so it can move to the robot side unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from s2r.real.trajectory import (
    NCOEF,
    FeasibilityReport,
    PolySpline,
    QuadLimits,
    check_waypoints,
    feasibility,
    min_snap,
)
from s2r.sim.quadrotor.allocation import heuristic_durations
from s2r.sim.quadrotor.flight import FlightConfig, FlightResult, fly
from torch import nn

TASK_ID = "Crazyflie-Replan-Waypoints"
CHECKPOINT = "checkpoint.pt"
# Fidelity coordinate of the GP: 1 is the target the policy is judged at (the closed-loop simulator); logged
# real flights sit in between, a third fidelity that the GP correlates with both.
LOW, REAL, HIGH = 0.0, 0.5, 1.0
FEATURES = ("low_margin", "log_thrust_max", "thrust_min", "log_body_rate", "log_speed", "log_jerk", "log_snap",
            "height_slack")


class MFRLError(ValueError):
    """A config, run folder or input that the multi-fidelity planner cannot use; the message says which."""


# ---- configs ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EstimatorConfig:
    """The multi-fidelity GP reward estimator.

    Attributes:
        linear_truncated: BoTorch's LinearTruncatedFidelityKernel (the low-minus-high discrepancy gets its own
            Matern kernel) instead of the cheaper DownsamplingKernel (a product kernel: one set of lengthscales).
        max_low_points: Low-fidelity points kept for the fit (the newest; they sit where the policy is now).
        max_high_points: High-fidelity points kept (the newest); exact GP fits cost O(n^3), so the total
            bounds the fit time (~1k points: seconds).
        fit_maxiter: L-BFGS iterations of the marginal-likelihood fit.
        kappa: Lower confidence bound = mean - kappa * std of the high-fidelity score.
        speed_ref: m/s, speed that the speed feature divides by.
        grid: Samples per segment where the features are read off the trajectory.
    """

    linear_truncated: bool = True
    max_low_points: int = 450
    max_high_points: int = 300
    fit_maxiter: int = 50
    kappa: float = 1.0
    speed_ref: float = 3.0
    grid: int = 48


@dataclass(frozen=True, kw_only=True)
class AcquisitionConfig:
    """Which queries to make each round, at which fidelity, and how many flights in all.

    Attributes:
        cost_low: Cost of one low-fidelity check (relative units).
        cost_high: Cost of one high-fidelity flight in the same units. A flight costs ~200x the check in
            wall-clock time; a smaller ratio here spends a little more on flights early, when they are
            worth the most.
        high_budget: Most high-fidelity flights in the whole run (initial ones included).
        queries_per_round: Queries chosen per round (both fidelities together).
        candidate_sets: Fresh waypoint sets whose policy trajectories (and perturbations) are candidates.
        perturbations: Perturbed copies of each policy trajectory among the candidates.
        perturb_std: Std of the perturbation of the actions (log-ratio units, before clipping to [-1, 1]).
        reference_sets: Waypoint sets whose policy trajectories define where the variance is integrated.
    """

    cost_low: float = 1.0
    cost_high: float = 20.0
    high_budget: int = 300
    queries_per_round: int = 40
    candidate_sets: int = 48
    perturbations: int = 3
    perturb_std: float = 0.2
    reference_sets: int = 128


@dataclass(frozen=True, kw_only=True)
class PlannerNetConfig:
    """The planning policy network.

    Attributes:
        hidden: Hidden layer widths of the MLP.
        pos_scale: m; positions are divided by it before the MLP.
    """

    hidden: tuple[int, ...] = (256, 256)
    pos_scale: float = 3.0


@dataclass(frozen=True, kw_only=True)
class MFRLConfig:
    """A multi-fidelity RL run.

    Attributes:
        rounds: Rounds of (fit estimator, train policy, query) in the run.
        policy_steps: Policy gradient steps per round.
        batch_size: Waypoint sets per policy gradient step.
        lr: Adam learning rate of the policy in the first round.
        lr_final: Fraction of `lr` left in the last round (cosine decay over the rounds): the constraint
            boundary moves with every refit, and a smaller step at the end keeps the exported policy from
            chasing the last fit's noise.
        train_sets: Waypoint sets in the training pool (drawn from the task once).
        val_sets: Held-out sets scored every round (estimator predictions and the exact low fidelity).
        init_low: Low-fidelity checks of random plans before the first round.
        init_high: High-fidelity flights of random plans before the first round (from the budget).
        init_action_std: Std of the random initial actions around 0 (the heuristic), clipped to [-1, 1].
        high_target: Required lower confidence bound of the high-fidelity score (0.2: error <= 80 % of the bound).
        low_target: Required exact low-fidelity margin (the planner node's check rejects below 0).
        penalty: Weight of the constraint violations against the time ratio (an exact penalty: above the
            largest time-per-margin trade-off, the constrained optimum is a minimum of the penalised loss).
        lowfi_constraint: Also constrain the exact low-fidelity margin (cheap, differentiable) in training.
        seed: Seed of the task's waypoint draws, the network initialisation and the flights.
        max_minutes: Wall-clock budget (0: none); the run stops after the round that crosses it.
        save_every: Rounds between checkpoints.
        torch_threads: Torch threads (0: leave the default). One by default: the tensors are small (a batch of
            waypoint sets, a GP of ~10^3 points) and a second thread mostly spins, badly so on a busy machine.
        export_parity_sets: Observations checked between torch and onnxruntime at export.
        estimator: GP settings.
        acquisition: Query settings.
        planner: Network settings.
        flight: High-fidelity flight settings.
    """

    rounds: int = 40
    policy_steps: int = 150
    batch_size: int = 128
    lr: float = 2e-3
    lr_final: float = 0.1
    train_sets: int = 2048
    val_sets: int = 256
    init_low: int = 200
    init_high: int = 24
    init_action_std: float = 0.5
    high_target: float = 0.2
    low_target: float = 0.02
    penalty: float = 5.0
    lowfi_constraint: bool = True
    seed: int = 0
    max_minutes: float = 0.0
    save_every: int = 1
    torch_threads: int = 1
    export_parity_sets: int = 64
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)
    planner: PlannerNetConfig = field(default_factory=PlannerNetConfig)
    flight: FlightConfig = field(default_factory=FlightConfig)


# ---- waypoint sets: the task's observation and action layout ------------------------------------


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


def durations_from_actions(actions: np.ndarray, heuristic: np.ndarray, max_ratio: float) -> np.ndarray:
    """Segment durations heuristic * max_ratio ** clip(action, -1, 1) (padded segments stay 0)."""
    a = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
    return heuristic * np.exp(a * math.log(max_ratio))


def encode_obs(waypoints: np.ndarray, max_waypoints: int) -> np.ndarray:
    """(1, 4 * max_waypoints) float32 observation of one waypoint set: the task's `policy` group layout."""
    w = np.asarray(waypoints, dtype=np.float64)
    obs = np.zeros((1, 4 * max_waypoints), dtype=np.float32)
    rel = w - w[0]
    obs[0, : 3 * len(w)] = rel.reshape(-1)
    obs[0, 3 * max_waypoints : 3 * max_waypoints + len(w)] = 1.0
    return obs


# ---- differentiable minimum snap and trajectory features ---------------------------------------

# _FALL[r, k] = k! / (k - r)! (0 for k < r): what the r-th derivative puts on tau^k's coefficient.
_FALL = torch.tensor([[math.factorial(k) / math.factorial(k - r) if k >= r else 0.0 for k in range(NCOEF)]
                      for r in range(NCOEF)], dtype=torch.float64)


class _MinSnapSystem:
    """The linear system of `s2r.real.trajectory.min_snap` for m segments, batched and differentiable in torch.

    Same unknowns (8 normalised-time coefficients per segment), rows and row scaling as the numpy solver,
    so the two agree to rounding; torch.linalg.solve gives the gradient of the trajectory with respect to
    the durations, which is what lets the policy train through the estimator.
    """

    def __init__(self, m: int) -> None:
        self.m = m
        size = NCOEF * m
        A = torch.zeros(size, size, dtype=torch.float64)
        row = 0
        for i in range(m):  # positions at both ends of each segment
            A[row, i * NCOEF] = 1.0
            A[row + 1, i * NCOEF : (i + 1) * NCOEF] = 1.0
            row += 2
        for r in range(1, 4):  # velocity, acceleration, jerk zero at both ends (rest to rest)
            A[row, r] = 1.0
            A[row + 1, (m - 1) * NCOEF : m * NCOEF] = _FALL[r] / math.factorial(r)
            row += 2
        self.A = A
        # Continuity of derivatives 1..6 at interior knots: the only duration-dependent entries.
        rows, cols, knot, order, coef, right = [], [], [], [], [], []
        for i in range(m - 1):
            for r in range(1, 7):
                rr = row + i * 6 + r - 1
                for k in range(r, NCOEF):
                    rows.append(rr), cols.append(i * NCOEF + k), knot.append(i), order.append(r)
                    coef.append(float(_FALL[r, k]) / math.factorial(r)), right.append(False)
                rows.append(rr), cols.append((i + 1) * NCOEF + r), knot.append(i), order.append(r)
                coef.append(-1.0), right.append(True)
        self.rows, self.cols = torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)
        self.knot = torch.tensor(knot, dtype=torch.long)
        self.order = torch.tensor(order, dtype=torch.float64)
        self.coef = torch.tensor(coef, dtype=torch.float64)
        self.right = torch.tensor(right, dtype=torch.bool)

    def solve(self, w: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        """Normalised-time coefficients (B, m, 8, 3) for waypoints w (B, m+1, 3) and durations T (B, m)."""
        B, m = T.shape
        A = self.A.expand(B, -1, -1).clone()
        if m > 1:
            h = torch.minimum(T[:, :-1], T[:, 1:])[:, self.knot]  # row scale, as in the numpy solver
            Tk = torch.where(self.right, T[:, 1:][:, self.knot], T[:, :-1][:, self.knot])
            A[:, self.rows, self.cols] = self.coef * (h / Tk) ** self.order
        b = torch.zeros(B, NCOEF * m, 3, dtype=torch.float64)
        b[:, 0 : 2 * m : 2] = w[:, :-1]
        b[:, 1 : 2 * m : 2] = w[:, 1:]
        return torch.linalg.solve(A, b).reshape(B, m, NCOEF, 3)


_SYSTEMS: dict[int, _MinSnapSystem] = {}


def torch_min_snap(w: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Minimum-snap coefficients in normalised time, (B, m, 8, 3), differentiable in T (see `_MinSnapSystem`)."""
    m = T.shape[1]
    if m not in _SYSTEMS:
        _SYSTEMS[m] = _MinSnapSystem(m)
    return _SYSTEMS[m].solve(w, T)


def _basis(grid: int) -> torch.Tensor:
    """(5, grid, 8): d^r/dtau^r of tau^k at `grid` points in [0, 1], r = 0..4."""
    tau = torch.linspace(0.0, 1.0, grid, dtype=torch.float64)
    k = torch.arange(NCOEF, dtype=torch.float64)
    out = torch.zeros(5, grid, NCOEF, dtype=torch.float64)
    for r in range(5):
        out[r] = _FALL[r] * tau[:, None].clamp_min(1e-12) ** (k - r).clamp_min(0.0)
    return out


def trajectory_features(waypoints: torch.Tensor, counts: torch.Tensor, durations: torch.Tensor, limits: QuadLimits,
                        cfg: EstimatorConfig) -> torch.Tensor:
    """The estimator's inputs: (B, len(FEATURES)) dimensionless features of each min-snap trajectory.

    Read off `cfg.grid` samples per segment: the low-fidelity margin (same formula as
    `s2r.real.trajectory.feasibility`, on this grid), the peak thrust over the thrust limit (log), the
    lowest thrust over it, the peak body rate over its limit (log), the peak speed, jerk and snap over
    reference values built from the limits (log; drag grows with speed, motor lag hurts with jerk and
    snap), and the floor-clearance slack. Logs because a 3x faster plan has 9x the acceleration and 81x
    the snap: the GP sees ratios on a scale where distances mean something.

    Args:
        waypoints: (B, max_waypoints, 3) absolute positions (float64), zero-padded.
        counts: (B,) waypoints per set.
        durations: (B, max_waypoints - 1) seconds (padded entries ignored); gradients flow to them.
        limits: Vehicle limits.
        cfg: Feature settings.
    """
    B = durations.shape[0]
    out = torch.zeros(B, len(FEATURES), dtype=torch.float64)
    g, tmax_lim = limits.gravity, limits.max_total_thrust
    acc_ref = tmax_lim / limits.mass - g  # the vertical acceleration left above hover at full thrust
    jerk_ref = acc_ref * limits.max_body_rate
    snap_ref = jerk_ref * limits.max_body_rate
    basis = _basis(cfg.grid)
    pieces, order = [], []
    for n in torch.unique(counts).tolist():
        idx = torch.nonzero(counts == n).squeeze(1)
        m = n - 1
        T = durations[idx, :m]
        a = torch_min_snap(waypoints[idx, :n], T)  # (b, m, 8, 3)

        def deriv(r: int, a: torch.Tensor = a, T: torch.Tensor = T) -> torch.Tensor:
            return torch.einsum("kc,bmcx->bmkx", basis[r], a) / T[:, :, None, None] ** r  # (b, m, grid, 3)

        pos, vel, acc, jerk, snap = (deriv(r) for r in range(5))
        f = acc + torch.tensor([0.0, 0.0, g], dtype=torch.float64)
        fn = f.norm(dim=-1).clamp_min(1e-9)
        zb = f / fn[..., None]
        perp = jerk - (jerk * zb).sum(-1, keepdim=True) * zb
        rate = (perp.norm(dim=-1) / fn).flatten(1).amax(1)
        thrust = limits.mass * fn.flatten(1)
        t_hi, t_lo = thrust.amax(1), thrust.amin(1)
        slacks = [(tmax_lim - t_hi) / tmax_lim, (t_lo - limits.min_total_thrust) / tmax_lim,
                  (limits.max_body_rate - rate) / limits.max_body_rate]
        if limits.max_tilt is not None:
            tilt = torch.arccos(zb[..., 2].clamp(-1.0, 1.0)).flatten(1).amax(1)
            slacks.append((limits.max_tilt - tilt) / limits.max_tilt)
        height = torch.ones(len(idx), dtype=torch.float64)
        if limits.min_height is not None:
            lowest = waypoints[idx, :n, 2].amin(1)
            height = (pos[..., 2].flatten(1).amin(1) - limits.min_height) / (lowest - limits.min_height).clamp_min(1e-3)
            slacks.append(height)
        margin = torch.stack(slacks, 1).amin(1)
        feats = torch.stack([
            margin.clamp(-2.0, 1.0),
            torch.log(t_hi / tmax_lim),
            t_lo / tmax_lim,
            torch.log(rate / limits.max_body_rate + 1e-3),
            torch.log(vel.norm(dim=-1).flatten(1).amax(1) / cfg.speed_ref + 1e-3),
            torch.log(jerk.norm(dim=-1).flatten(1).amax(1) / jerk_ref + 1e-3),
            torch.log(snap.norm(dim=-1).flatten(1).amax(1) / snap_ref + 1e-3),
            height.clamp(-1.0, 1.0),
        ], 1)
        pieces.append(feats)
        order.append(idx)
    # index_copy keeps the graph: each row's gradient goes back to its own group's solve.
    return out.index_copy(0, torch.cat(order), torch.cat(pieces))


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


# ---- the estimator: a multi-fidelity GP ---------------------------------------------------------


class FlyabilityEstimator:
    """Multi-fidelity GP of the flyability score over (trajectory features, fidelity).

    Wraps BoTorch's `SingleTaskMultiFidelityGP` with the fidelity as its last input column (0 low, 1 high,
    0.5 logged real flights), inputs normalised and outputs standardised by BoTorch transforms. Holds every
    query made; fits on a bounded subset: the newest `max_high_points` flights, the newest `max_low_points`
    flatness checks and every logged real flight.
    """

    def __init__(self, cfg: EstimatorConfig) -> None:
        self.cfg = cfg
        self.X = torch.zeros(0, len(FEATURES) + 1, dtype=torch.float64)  # every query: features + fidelity
        self.Y = torch.zeros(0, 1, dtype=torch.float64)
        self.model: Any = None
        self.hyper: dict[str, torch.Tensor] | None = None  # last fit's hyperparameters (warm start)

    def add(self, features: torch.Tensor, fidelity: torch.Tensor | float, y: torch.Tensor) -> None:
        """Record queries: features (n, F), fidelity (n,) or a scalar, scores (n,)."""
        n = len(features)
        s = torch.as_tensor(fidelity, dtype=torch.float64).expand(n).reshape(n, 1)
        self.X = torch.cat([self.X, torch.cat([features.detach().double(), s], 1)])
        self.Y = torch.cat([self.Y, torch.as_tensor(y, dtype=torch.float64).reshape(n, 1)])

    def counts(self) -> dict[str, int]:
        """How many queries of each fidelity were made (real: logged flights added from outside the loop)."""
        s = self.X[:, -1]
        return {"low": int((s == LOW).sum()), "high": int((s == HIGH).sum()), "real": int(((s != LOW) & (s != HIGH)).sum())}

    def training_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The bounded subset the GP is fitted on (newest points of each fidelity)."""
        s = self.X[:, -1]
        hi = torch.nonzero(s == HIGH).squeeze(1)[-self.cfg.max_high_points :]
        lo = torch.nonzero(s == LOW).squeeze(1)[-self.cfg.max_low_points :]
        real = torch.nonzero((s != LOW) & (s != HIGH)).squeeze(1)  # few and precious: all of them
        idx = torch.cat([lo, real, hi])
        return self.X[idx], self.Y[idx]

    def fit(self) -> dict[str, float]:
        """Fit a GP by maximum marginal likelihood, starting from the last fit's hyperparameters.

        The warm start makes a refit on a few dozen new points a short polish instead of a fresh search;
        the transforms' statistics are recomputed from the new data.
        """
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskMultiFidelityGP
        from botorch.models.transforms.input import Normalize
        from botorch.models.transforms.outcome import Standardize
        from gpytorch.mlls import ExactMarginalLogLikelihood
        from gpytorch.settings import max_cholesky_size

        t0 = time.perf_counter()
        X, Y = self.training_set()
        d = X.shape[1]
        model = SingleTaskMultiFidelityGP(
            X, Y, data_fidelities=[d - 1], linear_truncated=self.cfg.linear_truncated,
            # The fidelity column is already in [0, 1] and its meaning (1 = target) must not move.
            input_transform=Normalize(d=d, indices=list(range(d - 1))), outcome_transform=Standardize(m=1),
        )
        if self.hyper is not None:
            model.load_state_dict(self.hyper, strict=False)
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        with warnings.catch_warnings(), max_cholesky_size(4000):
            # Exact Cholesky up to 4k points (gpytorch's default switches to CG at 800, slower and noisier here).
            warnings.simplefilter("ignore")
            # Two attempts: botorch retries a fit that ends in a line-search warning from hyperparameters drawn
            # from the priors, and five such restarts cost more than the slightly better optimum is worth.
            fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": self.cfg.fit_maxiter}}, max_attempts=2)
        model.eval()
        self.model = model
        self.hyper = {k: v.detach().clone() for k, v in model.state_dict().items()
                      if not k.startswith(("input_transform", "outcome_transform"))}
        return {"fit_s": time.perf_counter() - t0, "fit_points": float(len(X)),
                "noise": float(model.likelihood.noise.detach().mean())}

    def predict(self, features: torch.Tensor, fidelity: float = HIGH) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and std (n,) of the score at `fidelity`; differentiable in the features."""
        if self.model is None:
            raise MFRLError("the estimator has not been fitted yet; call fit() after adding queries")
        from gpytorch.settings import max_cholesky_size

        x = torch.cat([features, torch.full((len(features), 1), fidelity, dtype=torch.float64)], 1)
        with max_cholesky_size(4000):
            post = self.model.posterior(x)
        return post.mean.squeeze(-1), post.variance.clamp_min(1e-12).sqrt().squeeze(-1)

    def state(self) -> dict[str, Any]:
        """Every query (the GP itself is refitted from them on resume)."""
        return {"X": self.X.clone(), "Y": self.Y.clone(), "hyper": self.hyper}

    def load(self, state: dict[str, Any]) -> None:
        """Restore the queries saved by `state`."""
        self.X, self.Y = state["X"].double(), state["Y"].double()
        self.hyper = state.get("hyper")


# ---- the acquisition: cost-aware integrated variance reduction ---------------------------------


def select_queries(estimator: FlyabilityEstimator, candidates: torch.Tensor, reference: torch.Tensor, n_queries: int,
                   high_left: int, cfg: AcquisitionConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy cost-aware choice of (candidate, fidelity) queries.

    Value of observing candidate x at fidelity s: the reduction of the GP's posterior variance of the
    high-fidelity score, averaged over the reference points (the policy's trajectories),
    mean_z Cov(z, (x, s))^2 / (Var(x, s) + noise). Divided by the cost from BoTorch's
    `AffineFidelityCostModel` (cost_low + (cost_high - cost_low) * s). After each pick the joint covariance
    is conditioned on it (a rank-one update; the values are not needed for a GP's variance), so the batch is
    the sequential-greedy batch of qNegIntegratedPosteriorVariance per unit cost. No high-fidelity query is
    chosen once `high_left` are spent.

    Args:
        estimator: Fitted estimator.
        candidates: (N, F) trajectory features.
        reference: (M, F) features where the high-fidelity variance matters.
        n_queries: Queries to choose.
        high_left: High-fidelity flights left in the budget.
        cfg: Costs.

    Returns:
        (candidate indices, fidelities (0/1), acquisition values), one per chosen query, in pick order.
    """
    from botorch.models.cost import AffineFidelityCostModel
    from gpytorch.settings import max_cholesky_size

    if estimator.model is None:
        raise MFRLError("fit the estimator before choosing queries")
    N, F = candidates.shape
    cost_model = AffineFidelityCostModel(fidelity_weights={F: cfg.cost_high - cfg.cost_low}, fixed_cost=cfg.cost_low)
    lo = torch.cat([candidates, torch.full((N, 1), LOW, dtype=torch.float64)], 1)
    hi = torch.cat([candidates, torch.full((N, 1), HIGH, dtype=torch.float64)], 1)
    ref = torch.cat([reference, torch.full((len(reference), 1), HIGH, dtype=torch.float64)], 1)
    choices = torch.cat([lo, hi])
    model = estimator.model
    with torch.no_grad(), max_cholesky_size(4000):
        post = model.posterior(torch.cat([choices, ref]))
        cov = post.mvn.covariance_matrix.clone()  # (2N + M, 2N + M), in score units
        # Observation noise in score units: the likelihood's noise is in standardised units.
        noise = float(model.likelihood.noise.mean()) * float(model.outcome_transform.stdvs.squeeze()) ** 2
        cost = cost_model(choices.unsqueeze(1)).squeeze(-1).squeeze(-1)  # (2N,)
    nc = len(choices)
    available = torch.ones(nc, dtype=torch.bool)
    if high_left <= 0:
        available[N:] = False
    picked, fids, values = [], [], []
    for _ in range(min(n_queries, nc)):
        cross = cov[nc:, :nc]  # (M, 2N) reference x choices
        var = cov.diagonal()[:nc].clamp_min(1e-12)
        gain = (cross**2).mean(0) / (var + noise)
        score = torch.where(available, gain / cost, torch.tensor(-1.0, dtype=torch.float64))
        j = int(score.argmax())
        if score[j] < 0:
            break
        picked.append(j % N), fids.append(int(j >= N)), values.append(float(score[j]))
        available[j] = False
        col = cov[:, j].clone()
        cov -= torch.outer(col, col) / (col[j] + noise)
        if j >= N:
            high_left -= 1
            if high_left <= 0:
                available[N:] = False
    return np.array(picked, dtype=np.int64), np.array(fids, dtype=np.int64), np.array(values)


# ---- the planning policy ------------------------------------------------------------------------


class PlannerNet(nn.Module):
    """Waypoints (the task's `policy` observation) -> per-segment log-ratios in [-1, 1].

    The graph turns the padded waypoints into what the timing depends on before the MLP: everything is
    rotated about z so the first segment points along +x (the vehicle, gravity and drag are symmetric
    about z, so heading carries no information), plus segment vectors, lengths and the cosines of the
    turns. Padded segments output 0. All of it exports to plain ONNX ops.
    """

    def __init__(self, max_waypoints: int, cfg: PlannerNetConfig) -> None:
        super().__init__()
        self.k = max_waypoints
        self.obs_dim = 4 * max_waypoints
        self.pos_scale = cfg.pos_scale
        k = max_waypoints
        width = 3 * k + 3 * (k - 1) + (k - 1) + (k - 2) + k
        layers: list[nn.Module] = []
        for h in cfg.hidden:
            layers += [nn.Linear(width, h), nn.ELU()]
            width = h
        out = nn.Linear(width, k - 1)
        # Start at the heuristic (all ratios 1): a known-safe plan the estimator then learns to shorten.
        nn.init.normal_(out.weight, std=1e-3)
        nn.init.zeros_(out.bias)
        self.mlp = nn.Sequential(*layers, out)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, 4 * max_waypoints) observations -> (B, max_waypoints - 1) actions."""
        if obs.shape[-1] != self.obs_dim:
            raise MFRLError(f"planner observations have {obs.shape[-1]} values per row; this planner reads "
                            f"{self.obs_dim} (3 x {self.k} relative waypoints, then a {self.k}-value mask)")
        k = self.k
        wp = obs[:, : 3 * k].reshape(-1, k, 3)
        mask = obs[:, 3 * k : 4 * k]
        seg_mask = mask[:, 1:]
        first = wp[:, 1, :2]
        r = torch.sqrt((first**2).sum(-1, keepdim=True) + 1e-6)
        c, s = first[:, :1] / r, first[:, 1:2] / r  # heading of the first segment
        x, y, z = wp[..., 0], wp[..., 1], wp[..., 2]
        wp = torch.stack([c * x + s * y, c * y - s * x, z], -1)
        seg = (wp[:, 1:] - wp[:, :-1]) * seg_mask[..., None]
        length = torch.sqrt((seg**2).sum(-1) + 1e-9) * seg_mask
        unit = seg / (length[..., None] + 1e-6)
        turn = (unit[:, :-1] * unit[:, 1:]).sum(-1)  # cos of each interior turn (0 where padded)
        h = torch.cat([wp.reshape(-1, 3 * k) / self.pos_scale, seg.reshape(-1, 3 * (k - 1)) / self.pos_scale,
                       length / self.pos_scale, turn, mask], 1)
        return torch.tanh(self.mlp(h)) * seg_mask


# ---- training -----------------------------------------------------------------------------------


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, then rename (a crash never leaves half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_json_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


class MFRLRunner:
    """Trains a planning policy against a multi-fidelity reward estimator, then exports it.

    Same shape as `OnPolicyRunner`: build, `learn()` (returns a summary with "interrupted"), `close()`.
    """

    def __init__(self, task_id: str, task_cfg: Any, cfg: MFRLConfig, run_dir: str | Path,
                 resume_from: str | Path | None = None, progress: bool = True) -> None:
        from s2r.sim.tasks.quadrotor import ReplanConfig

        if not isinstance(task_cfg, ReplanConfig):
            raise MFRLError(f"mfrl plans waypoint re-planning tasks ({TASK_ID}); task '{task_id}' has a "
                            f"{type(task_cfg).__name__}")
        if cfg.acquisition.high_budget < cfg.init_high:
            raise MFRLError(f"acquisition.high_budget ({cfg.acquisition.high_budget}) is smaller than init_high "
                            f"({cfg.init_high}); raise the budget or lower init_high")
        self.task_id, self.task_cfg, self.cfg = task_id, task_cfg, cfg
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.limits: QuadLimits = task_cfg.limits
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.k = task_cfg.max_waypoints
        self.log_ratio = math.log(task_cfg.max_ratio)
        # Disjoint seeds: training pool, validation sets, and fresh sets for queries each round.
        self.pool = sample_sets(task_cfg, cfg.train_sets, seed=cfg.seed * 7919 + 1)
        self.val = sample_sets(task_cfg, cfg.val_sets, seed=cfg.seed * 7919 + 2)
        self.net = PlannerNet(self.k, cfg.planner).double()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.estimator = FlyabilityEstimator(cfg.estimator)
        self.round = 0
        self.wall_time = 0.0
        self.history: list[dict[str, float]] = []
        if resume_from is not None:
            self._resume(Path(resume_from))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        from s2r.sim.config import to_dict

        _write_json_atomic({"task_id": task_id, "algo": "mfrl", "task": to_dict(task_cfg), "train": to_dict(cfg)},
                           self.run_dir / "config.json")

    # -- pieces ------------------------------------------------------------------------------------

    def _tensors(self, sets: WaypointSets) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(sets.obs).double(), torch.from_numpy(sets.waypoints),
                torch.from_numpy(sets.counts), torch.from_numpy(sets.heuristic))

    def _durations(self, actions: torch.Tensor, heuristic: torch.Tensor) -> torch.Tensor:
        # Padded segments get a dummy 1 s so every solve stays well posed; features ignore them.
        return torch.where(heuristic > 0, heuristic * torch.exp(actions * self.log_ratio), torch.ones_like(heuristic))

    def features(self, sets: WaypointSets, actions: torch.Tensor) -> torch.Tensor:
        """Estimator features of the plans `actions` (n, max_waypoints - 1) for `sets`."""
        _, w, counts, heur = self._tensors(sets)
        return trajectory_features(w, counts, self._durations(actions, heur), self.limits, self.cfg.estimator)

    def act(self, sets: WaypointSets) -> torch.Tensor:
        """The policy's actions for `sets` (no gradient)."""
        with torch.no_grad():
            return self.net(torch.from_numpy(sets.obs).double())

    def evaluate_low(self, sets: WaypointSets, actions: np.ndarray) -> np.ndarray:
        """Exact low-fidelity scores of the plans."""
        d = durations_from_actions(actions, sets.heuristic, self.task_cfg.max_ratio)
        dt = self.task_cfg.feasibility_dt
        return np.array([low_fidelity_score(feasibility(s, self.limits, dt)) for s in splines_for(sets, d)])

    def evaluate_high(self, sets: WaypointSets, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """High-fidelity scores and successes of the plans: one closed-loop flight each."""
        d = durations_from_actions(actions, sets.heuristic, self.task_cfg.max_ratio)
        # A new flight seed per query batch: the randomised vehicle differs from flight to flight.
        seed = self.cfg.seed * 1_000_003 + self.estimator.counts()["high"]
        res = fly(splines_for(sets, d), self.cfg.flight, seed=seed)
        bound = self.cfg.flight.tracking_bound
        return np.array([high_fidelity_score(r, bound) for r in res]), np.array([r.success for r in res])

    def _query(self, sets: WaypointSets, actions: np.ndarray, fidelity: np.ndarray) -> np.ndarray:
        """Run the queries (fidelity 0/1 per plan), record them; returns the flight successes (NaN: not flown)."""
        feats = self.features(sets, torch.from_numpy(actions).double()).detach()
        ok = np.full(len(sets), np.nan)
        lo, hi = np.flatnonzero(fidelity == 0), np.flatnonzero(fidelity == 1)
        if len(lo):
            y = self.evaluate_low(sets.subset(lo), actions[lo])
            self.estimator.add(feats[lo], LOW, torch.from_numpy(y))
        if len(hi):
            y, ok[hi] = self.evaluate_high(sets.subset(hi), actions[hi])
            self.estimator.add(feats[hi], HIGH, torch.from_numpy(y))
        return ok

    def bootstrap(self) -> None:
        """Random plans around the heuristic at both fidelities, so the first fit has both to learn from."""
        cfg = self.cfg
        n = max(cfg.init_low, cfg.init_high)
        sets = sample_sets(self.task_cfg, n, seed=cfg.seed * 7919 + 3)
        a = np.clip(self.rng.normal(0.0, cfg.init_action_std, (n, self.k - 1)), -1.0, 1.0) * (sets.heuristic > 0)
        fid = np.zeros(n, dtype=np.int64)
        high = self.rng.permutation(n)[: cfg.init_high]
        fid[high] = 1
        self._query(sets, a, fid)
        # The flown plans' low-fidelity twins cost nothing and show the GP the fidelity gap at the same x.
        self._query(sets.subset(high), a[high], np.zeros(len(high), dtype=np.int64))

    def add_logged_flights(self, waypoints: list[np.ndarray], durations: list[np.ndarray],
                           results: list[FlightResult], fidelity: float = REAL) -> int:
        """Add flights flown outside the loop (e.g. `read_flight_log` of real flights) to the estimator's data.

        Args:
            waypoints: (n_i, 3) waypoints of each flown plan (at most max_waypoints each).
            durations: (n_i - 1,) segment durations of each plan.
            results: One `FlightResult` per plan, scored like the simulator's (same tracking bound).
            fidelity: GP fidelity coordinate of these flights (default REAL = 0.5).

        Returns:
            The number of flights added (they count in `counts()["real"]`, not against the flight budget).
        """
        if not len(waypoints) == len(durations) == len(results):
            raise MFRLError(f"got {len(waypoints)} waypoint sets, {len(durations)} duration sets and {len(results)} "
                            "flight results; give one of each per logged flight")
        n, k = len(results), self.k
        w = np.zeros((n, k, 3))
        T = np.ones((n, k - 1))
        counts = np.zeros(n, dtype=np.int64)
        for i, (wi, di) in enumerate(zip(waypoints, durations, strict=True)):
            wi = check_waypoints(wi, max_count=k)
            di = np.asarray(di, dtype=np.float64).reshape(-1)
            if di.shape != (len(wi) - 1,) or not (di > 0).all():
                raise MFRLError(f"logged flight {i}: need {len(wi) - 1} positive segment durations, got {di.tolist()}")
            w[i, : len(wi)], T[i, : len(di)], counts[i] = wi, di, len(wi)
        with torch.no_grad():
            feats = trajectory_features(torch.from_numpy(w), torch.from_numpy(counts), torch.from_numpy(T), self.limits,
                                        self.cfg.estimator)
        y = [high_fidelity_score(r, self.cfg.flight.tracking_bound) for r in results]
        self.estimator.add(feats, fidelity, torch.tensor(y, dtype=torch.float64))
        return n

    def policy_loss(self, sets: WaypointSets) -> tuple[torch.Tensor, dict[str, float]]:
        """Time ratio + penalty on the violated constraints, for a batch of sets."""
        cfg = self.cfg
        obs, w, counts, heur = self._tensors(sets)
        a = self.net(obs)
        T = self._durations(a, heur)
        valid = heur > 0
        ratio = (T * valid).sum(1) / heur.sum(1)
        feats = trajectory_features(w, counts, T, self.limits, cfg.estimator)
        mean, std = self.estimator.predict(feats, HIGH)
        lcb = mean - cfg.estimator.kappa * std
        viol = torch.relu(cfg.high_target - lcb)
        if cfg.lowfi_constraint:
            viol = viol + torch.relu(cfg.low_target - feats[:, 0])
        loss = (ratio + cfg.penalty * viol).mean()
        return loss, {"time_ratio": float(ratio.detach().mean()), "pred_high_ok": float((lcb.detach() > 0).double().mean()),
                      "violation": float(viol.detach().mean())}

    def train_policy(self) -> dict[str, float]:
        """`policy_steps` Adam steps on minibatches of the training pool."""
        self.net.train()
        cfg = self.cfg
        progress = self.round / max(cfg.rounds - 1, 1)
        lr = cfg.lr * (cfg.lr_final + (1.0 - cfg.lr_final) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))
        for group in self.opt.param_groups:
            group["lr"] = lr
        stats: dict[str, float] = {"lr": lr}
        step_stats: dict[str, float] = {}
        for _ in range(self.cfg.policy_steps):
            idx = self.rng.choice(len(self.pool), self.cfg.batch_size, replace=False)
            loss, step_stats = self.policy_loss(self.pool.subset(idx))
            self.opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            self.opt.step()
        self.net.eval()
        stats.update(step_stats)
        return {f"train_{k}": v for k, v in stats.items()}

    def validate(self) -> dict[str, float]:
        """Policy on the validation sets: time ratio, estimator predictions, exact low-fidelity feasibility."""
        a = self.act(self.val)
        _, _, _, heur = self._tensors(self.val)
        ratio = (self._durations(a, heur) * (heur > 0)).sum(1) / heur.sum(1)
        with torch.no_grad():
            feats = self.features(self.val, a)
            mean, std = self.estimator.predict(feats, HIGH)
        low = self.evaluate_low(self.val, a.numpy())
        return {"val_time_ratio": float(ratio.mean()), "val_pred_high_mean": float(mean.mean()),
                "val_pred_high_ok": float((mean - self.cfg.estimator.kappa * std > 0).double().mean()),
                "val_low_feasible": float((low >= 0).mean())}

    def acquire(self) -> dict[str, float]:
        """Choose this round's queries with `select_queries` and run them."""
        cfg, acq = self.cfg, self.cfg.acquisition
        seed = cfg.seed * 7919 + 1000 + self.round
        cand_sets = sample_sets(self.task_cfg, acq.candidate_sets, seed=seed)
        base = self.act(cand_sets).numpy()
        reps = 1 + acq.perturbations
        sets = cand_sets.subset(np.tile(np.arange(len(cand_sets)), reps))
        noise = self.rng.normal(0.0, acq.perturb_std, (len(sets), self.k - 1))
        noise[: len(cand_sets)] = 0.0  # the policy's own plans are candidates as they are
        actions = np.clip(np.tile(base, (reps, 1)) + noise, -1.0, 1.0) * (sets.heuristic > 0)
        with torch.no_grad():
            cand = self.features(sets, torch.from_numpy(actions))
            ref_sets = self.val.subset(np.arange(min(acq.reference_sets, len(self.val))))
            ref = self.features(ref_sets, self.act(ref_sets))
        high_left = acq.high_budget - self.estimator.counts()["high"]
        idx, fid, _ = select_queries(self.estimator, cand, ref, acq.queries_per_round, high_left, acq)
        ok = self._query(sets.subset(idx), actions[idx], fid)
        stats = {"queries_low": float((fid == 0).sum()), "queries_high": float((fid == 1).sum())}
        if (fid == 1).any():
            stats["query_high_success"] = float(np.nanmean(ok))
        own = (fid == 1) & (idx < len(cand_sets))  # the first copy of each set is the policy's own plan
        if own.any():
            stats["policy_flight_success"] = float(ok[own].mean())
        return stats

    # -- the loop ----------------------------------------------------------------------------------

    def learn(self) -> dict[str, Any]:
        """Run the rounds (or until `max_minutes`, or Ctrl-C), then checkpoint, export and plot.

        Returns:
            Summary: rounds, queries per fidelity, last validation numbers, export parity, "interrupted".
        """
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        cfg = self.cfg
        writer = SummaryWriter(str(self.run_dir))
        bar = tqdm(total=cfg.rounds, initial=self.round, unit="round", disable=not self.progress, dynamic_ncols=True)
        deadline = time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes > 0 else float("inf")
        interrupted = False
        stats: dict[str, float] = {}
        try:
            if len(self.estimator.X) == 0:
                t0 = time.perf_counter()
                self.bootstrap()
                self.wall_time += time.perf_counter() - t0
            while self.round < cfg.rounds and time.monotonic() < deadline:
                t0 = time.perf_counter()
                stats = dict(self.estimator.fit())
                t1 = time.perf_counter()
                stats.update(self.train_policy())
                t2 = time.perf_counter()
                stats.update(self.validate())
                stats.update(self.acquire())
                t3 = time.perf_counter()
                n = self.estimator.counts()
                self.round += 1
                self.wall_time += t3 - t0
                stats.update({"high_evals": float(n["high"]), "low_evals": float(n["low"]),
                              "fit_fraction": (t1 - t0) / (t3 - t0), "policy_fraction": (t2 - t1) / (t3 - t0)})
                for key, v in stats.items():
                    writer.add_scalar(f"mfrl/{key}", v, self.round)
                self.history.append({"round": self.round, "wall_time": self.wall_time, **stats})
                bar.update(1)
                bar.set_postfix({"time": f"{stats['val_time_ratio']:.3f}", "ok": f"{stats['val_pred_high_ok']:.2f}",
                                 "low": f"{stats['val_low_feasible']:.2f}", "hf": n["high"]}, refresh=False)
                if self.round % cfg.save_every == 0:
                    self.save()
        except KeyboardInterrupt:
            interrupted = True
            bar.write("interrupted: saving a checkpoint and exporting the current planner")
        finally:
            bar.close()
            writer.close()
        self.save()
        parity = self.export()
        self.plot()
        n = self.estimator.counts()
        return {"task_id": self.task_id, "algo": "mfrl", "run_dir": str(self.run_dir), "rounds": self.round,
                "wall_time_s": self.wall_time, "interrupted": interrupted, "high_fidelity_evaluations": n["high"],
                "low_fidelity_evaluations": n["low"], "export": parity,
                **{k: stats.get(k) for k in ("val_time_ratio", "val_pred_high_ok", "val_low_feasible")}}

    def save(self) -> Path:
        """Atomically write the checkpoint and history.json."""
        from s2r.sim.config import to_dict

        path = self.run_dir / CHECKPOINT
        save_atomic({
            "format": 1,
            "algo": "mfrl",
            "task_id": self.task_id,
            "task_cfg": to_dict(self.task_cfg),
            "train_cfg": to_dict(self.cfg),
            "net": self.net.state_dict(),
            "optim": self.opt.state_dict(),
            "estimator": self.estimator.state(),
            "round": self.round,
            "wall_time": self.wall_time,
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
            "np_rng": self.rng.bit_generator.state,
        }, path)
        _write_json_atomic(self.history, self.run_dir / "history.json")
        return path

    def _resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path, self.task_id)
        self.net.load_state_dict(ckpt["net"])
        self.opt.load_state_dict(ckpt["optim"])
        self.estimator.load(ckpt["estimator"])
        self.round, self.wall_time, self.history = ckpt["round"], ckpt["wall_time"], ckpt["history"]
        torch.set_rng_state(ckpt["torch_rng"])
        self.rng.bit_generator.state = ckpt["np_rng"]

    def export(self) -> dict[str, float]:
        """policy.onnx + policy.json into the run folder, checked against onnxruntime."""
        n = self.estimator.counts()
        parity = sample_sets(self.task_cfg, self.cfg.export_parity_sets, seed=self.cfg.seed * 7919 + 4).obs
        return export_planner(self.net, self.task_id, self.task_cfg, self.run_dir, parity,
                              extras={"high_fidelity_evaluations": n["high"], "low_fidelity_evaluations": n["low"],
                                      "rounds": self.round})

    def plot(self) -> Path | None:
        """learning_curve.png: time ratio, predicted and flown success, flights used, per round."""
        if not self.history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        h = self.history
        r = [x["round"] for x in h]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        axes[0].plot(r, [x["val_time_ratio"] for x in h])
        axes[0].set_title("total time / heuristic (validation)")
        axes[1].plot(r, [x["val_pred_high_ok"] for x in h], label="predicted (LCB > 0)")
        axes[1].plot(r, [x["val_low_feasible"] for x in h], label="low-fidelity feasible")
        for key, label in (("query_high_success", "queried flights (incl. perturbed)"),
                           ("policy_flight_success", "queried flights of the policy's plans")):
            flown = [(x["round"], x[key]) for x in h if key in x]
            if flown:
                axes[1].plot(*zip(*flown, strict=True), "o", ms=3, label=label)
        axes[1].set_title("success rate")
        axes[1].legend(fontsize=7)
        axes[2].plot(r, [x["high_evals"] for x in h], label="high (flights)")
        axes[2].plot(r, [x["low_evals"] / 10 for x in h], label="low / 10")
        axes[2].set_title("evaluations used")
        axes[2].legend(fontsize=7)
        for ax in axes:
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
        fig.suptitle(f"{self.task_id} (mfrl): {h[-1]['high_evals']:.0f} flights, {h[-1]['wall_time'] / 60:.1f} min")
        fig.tight_layout()
        path = self.run_dir / "learning_curve.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def close(self) -> None:
        """Nothing native to release (kept for the CLI's runner interface)."""


def load_checkpoint(path: str | Path, task_id: str | None = None) -> dict[str, Any]:
    """Load an mfrl checkpoint; refuses another algorithm's or another task's, naming it."""
    from s2r.policies.runner import load_checkpoint as load_any

    ckpt = load_any(Path(path), task_id)
    if ckpt.get("algo") != "mfrl":
        raise MFRLError(f"{path} was not written by mfrl (algo {ckpt.get('algo', 'ppo')!r}); resume it with its own algorithm")
    return ckpt


def config_from_checkpoint(ckpt: dict[str, Any]) -> tuple[Any, MFRLConfig]:
    """(task config, MFRLConfig) a checkpoint was written with."""
    from s2r.sim.config import from_dict
    from s2r.sim.tasks.quadrotor import ReplanConfig

    return from_dict(ReplanConfig, ckpt["task_cfg"]), from_dict(MFRLConfig, ckpt["train_cfg"])


def replace_budget(cfg: MFRLConfig, rounds: int | None, minutes: float | None) -> MFRLConfig:
    """Apply a round count (`s2r train --steps`) and a wall-clock budget (`--minutes`) to a config."""
    kw: dict[str, Any] = {}
    if rounds is not None:
        kw["rounds"] = int(rounds)
    if minutes is not None:
        kw["max_minutes"] = float(minutes)
    return dataclasses.replace(cfg, **kw)


def build_runner(task_id: str | None, run_dir: str | Path | None = None, *, runs_root: str | Path = "runs",
                 task_overrides: dict[str, Any] | None = None, train_overrides: dict[str, Any] | None = None,
                 resume_from: str | Path | None = None, seed: int | None = None, rounds: int | None = None,
                 minutes: float | None = None, progress: bool = True) -> MFRLRunner:
    """Everything `s2r train <task> --algo mfrl` needs, in one call.

    Args:
        task_id: Registered task id (None only when resuming: the checkpoint names it).
        run_dir: Run folder (default runs_root/<task>/<timestamp>; the checkpoint's folder when resuming).
        runs_root: Root of run folders.
        task_overrides: Dotted task-config overrides (`--set`), ignored when resuming.
        train_overrides: Dotted `MFRLConfig` overrides (`--train-set`), e.g. {"acquisition.high_budget": 200}.
        resume_from: A checkpoint.pt to continue (its task and configs are used).
        seed: Seed (ignored when resuming).
        rounds: Round budget (`--steps`), see `replace_budget`.
        minutes: Wall-clock budget (`--minutes`).
        progress: Show a progress bar.

    Raises:
        MFRLError, CheckpointError, ConfigError, UnknownTaskError: with a message naming what to fix.
    """
    from s2r.sim import task_config
    from s2r.sim.config import apply_overrides

    if resume_from is not None:
        ckpt = load_checkpoint(resume_from, task_id)
        task_id = ckpt["task_id"]
        tcfg, cfg = config_from_checkpoint(ckpt)
        run_dir = Path(resume_from).parent if run_dir is None else run_dir
    else:
        if not task_id:
            raise MFRLError("mfrl needs a task id (e.g. Crazyflie-Replan-Waypoints), or a checkpoint to resume")
        tcfg = task_config(task_id, task_overrides or {})
        cfg = MFRLConfig() if seed is None else MFRLConfig(seed=seed)
        run_dir = Path(runs_root) / task_id / time.strftime("%Y%m%d-%H%M%S") if run_dir is None else run_dir
    cfg = replace_budget(apply_overrides(cfg, train_overrides or {}), rounds, minutes)
    return MFRLRunner(task_id, tcfg, cfg, Path(run_dir), resume_from=resume_from, progress=progress)


def export_checkpoint(run_dir: str | Path) -> dict[str, float]:
    """Re-export policy.onnx + policy.json from a run's checkpoint alone (`s2r export` for mfrl runs)."""
    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    tcfg, cfg = config_from_checkpoint(ckpt)
    net = PlannerNet(tcfg.max_waypoints, cfg.planner).double()
    net.load_state_dict(ckpt["net"])
    est = FlyabilityEstimator(cfg.estimator)
    est.load(ckpt["estimator"])
    n = est.counts()
    parity = sample_sets(tcfg, cfg.export_parity_sets, seed=cfg.seed * 7919 + 4).obs
    return export_planner(net.eval(), ckpt["task_id"], tcfg, run_dir, parity,
                          extras={"high_fidelity_evaluations": n["high"], "low_fidelity_evaluations": n["low"],
                                  "rounds": ckpt["round"]})


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Human-readable lines of an `evaluate_planner` result (what `s2r eval` prints)."""
    r = result
    lines = [
        f"{r['n_sets']} held-out waypoint sets (seed {r['seed']})",
        f"  total time vs heuristic min-snap   {r['time_vs_heuristic']:.3f}   (optimiser: {r['optimised_vs_heuristic']:.3f})",
        f"  total time vs optimised min-snap   {r['time_vs_optimised']:.3f}",
        f"  high-fidelity success              {r['high_fidelity_success'] * 100:.1f} %",
        f"  low-fidelity feasible (raw/safe)   {r['low_fidelity_feasible_raw'] * 100:.1f} % / "
        f"{r['low_fidelity_feasible'] * 100:.1f} %",
        f"  re-planning p50/p99 (ONNX+min-snap) {r['replan_ms_p50']:.3f} / {r['replan_ms_p99']:.3f} ms"
        f"   optimiser p50 {r['optimiser_ms_p50']:.2f} ms",
        f"  flights used in training           {r['high_fidelity_evaluations']}",
    ]
    if "optimised_high_fidelity_success" in r:
        lines.insert(4, f"  high-fidelity success, baselines   heuristic {r['heuristic_high_fidelity_success'] * 100:.1f} %, "
                        f"optimised {r['optimised_high_fidelity_success'] * 100:.1f} %")
    return lines


# ---- export -------------------------------------------------------------------------------------


class _ExportedPlanner(nn.Module):
    """float32 obs -> float32 log-ratios, around the (float64-trained) network."""

    def __init__(self, net: PlannerNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


def export_planner(net: PlannerNet, task_id: str, task_cfg: Any, out_dir: str | Path, parity_obs: np.ndarray,
                   extras: dict[str, Any] | None = None, tol: float = 1e-5) -> dict[str, float]:
    """Write `policy.onnx` (input `obs` (batch, 4k) float32, output `actions` (batch, k-1)) and `policy.json`.

    Args:
        net: Trained planner.
        task_id: Task id recorded in the metadata.
        task_cfg: The task's config (layout, limits and max_ratio go into the metadata's extras).
        out_dir: Folder to write into.
        parity_obs: (n, 4k) observations from the task for the torch/onnxruntime parity check.
        extras: More entries for the metadata's extras (e.g. evaluation counts).
        tol: Largest allowed absolute difference between torch and onnxruntime.

    Returns:
        {"max_abs_diff": ..., "n": ...}

    Raises:
        ExportError: Parity fails (the graph is kept as policy.onnx.bad for inspection).
    """
    import onnxruntime as ort
    from s2r.policies.export import ExportError, build_metadata
    from s2r.sim.config import to_dict
    from s2r.sim.tasks.quadrotor import ReplanEnv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    module = _ExportedPlanner(_float_copy(net)).eval()
    spec = ReplanEnv(task_cfg, num_envs=1).spec
    if parity_obs.ndim != 2 or parity_obs.shape[1] != net.obs_dim:
        raise ExportError(f"parity observations have shape {parity_obs.shape}; the planner reads {net.obs_dim} values")
    meta = build_metadata(spec, task_id, net.obs_dim)
    n_act = len(meta.action_names)
    # "joint" limits of a planner are the action range: log-ratios in [-1, 1].
    meta = dataclasses.replace(meta, joint_lower=(-1.0,) * n_act, joint_upper=(1.0,) * n_act, extras={
        "planner": "mfrl",
        "action_meaning": "segment duration = heuristic_durations(waypoints, limits) * max_ratio ** action",
        "max_waypoints": task_cfg.max_waypoints,
        "max_ratio": task_cfg.max_ratio,
        "feasibility_dt": task_cfg.feasibility_dt,
        "limits": dataclasses.asdict(task_cfg.limits),
        "task_cfg": to_dict(task_cfg),
        **(extras or {}),
    })
    meta.validate()
    onnx_path, json_path = out / "policy.onnx", out / "policy.json"
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        tmp_onnx = Path(tmp) / "policy.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but exact for this graph
            torch.onnx.export(module, (torch.zeros(1, net.obs_dim),), str(tmp_onnx), input_names=["obs"],
                              output_names=["actions"], dynamic_axes={"obs": {0: "batch"}, "actions": {0: "batch"}},
                              opset_version=17, dynamo=False)
        sess = ort.InferenceSession(str(tmp_onnx), providers=["CPUExecutionProvider"])
        x = parity_obs.astype(np.float32)
        got = sess.run(["actions"], {"obs": x})[0]
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        diff = float(np.max(np.abs(got - want))) if len(x) else 0.0
        if not np.isfinite(diff) or diff > tol:
            os.replace(tmp_onnx, out / "policy.onnx.bad")
            raise ExportError(f"ONNX parity failed: max abs difference {diff:.3g} > {tol:g} on {len(x)} observations")
        os.replace(tmp_onnx, onnx_path)
    tmp_json = json_path.with_suffix(".json.tmp")
    tmp_json.write_text(meta.to_json())
    os.replace(tmp_json, json_path)
    return {"max_abs_diff": diff, "n": float(len(x))}


def _float_copy(net: PlannerNet) -> PlannerNet:
    import copy

    return copy.deepcopy(net).float().eval()


# ---- inference: numpy + onnxruntime only --------------------------------------------------------


def time_scaled(spline: PolySpline, scale: float) -> PolySpline:
    """The same path flown `scale` times slower: p_k(t) = p(t / k).

    For a rest-to-rest minimum-snap plan this equals `min_snap(waypoints, scale * durations)` exactly (the
    snap integral scales uniformly, so the minimiser keeps its shape), without a new solve.
    """
    powers = np.arange(spline.coeffs.shape[1])
    return PolySpline(coeffs=spline.coeffs / scale ** powers[None, :, None], durations=spline.durations * scale)


def make_feasible(spline: PolySpline, limits: QuadLimits, *, min_margin: float = 0.0, dt: float = 0.01,
                  max_scale: float = 4.0) -> tuple[PolySpline, float, FeasibilityReport]:
    """Stretch a rest-to-rest plan uniformly until the flatness check passes (the planner's safety net).

    Slowing down by k divides accelerations by k^2 and jerks by k^3, so thrust and body-rate margins grow
    with k; the smallest sufficient k is found on a geometric grid from samples of the plan taken once,
    then confirmed with `feasibility` (a few % more if the sampling was optimistic). The floor-clearance
    constraint does not change with timing: a plan that dips below it stays infeasible (the report says so).

    Args:
        spline: Plan from rest to rest (zero velocity, acceleration and jerk at both ends).
        limits: Vehicle limits.
        min_margin: Required margin.
        dt: Sampling period of the check.
        max_scale: Largest stretch tried.

    Returns:
        (plan, scale applied (1.0 when already feasible), its feasibility report).
    """
    rep = feasibility(spline, limits, dt)
    if rep.margin >= min_margin:
        return spline, 1.0, rep
    t = np.append(np.arange(0.0, spline.total_time, dt / 2), spline.total_time)
    acc, jerk = spline.derivatives(t, (2, 3))
    k = np.geomspace(1.0, max_scale, 64)[:, None, None]
    a = acc[None] / k**2
    a[..., 2] += limits.gravity
    j = jerk[None] / k**3
    norm = np.maximum(np.linalg.norm(a, axis=-1), 1e-9)
    zb = a / norm[..., None]
    rate = np.linalg.norm(j - np.sum(j * zb, -1, keepdims=True) * zb, axis=-1) / norm
    thrust = limits.mass * norm
    slack = np.stack([(limits.max_total_thrust - thrust.max(1)) / limits.max_total_thrust,
                      (thrust.min(1) - limits.min_total_thrust) / limits.max_total_thrust,
                      (limits.max_body_rate - rate.max(1)) / limits.max_body_rate], 1).min(1)
    ok = np.flatnonzero(slack >= min_margin)
    scale = float(k[ok[0], 0, 0]) if len(ok) else max_scale
    for _ in range(20):
        out = time_scaled(spline, scale)
        rep = feasibility(out, limits, dt)
        if rep.margin >= min_margin or scale >= max_scale:
            break
        scale = min(scale * 1.03, max_scale)
    return out, scale, rep


class OnnxPlanner:
    """The exported planner as the robot runs it: waypoints in, a feasible minimum-snap plan out.

    Needs numpy, onnxruntime and `s2r.real` only, apart from the heuristic allocation (which lives in
    `s2r.sim.quadrotor.allocation` today and is numpy-only: it belongs in `s2r.real` for the robot side).
    """

    def __init__(self, run_dir: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort
        from s2r.real.metadata import MetadataError, load_metadata

        run_dir = Path(run_dir)
        self.meta = load_metadata(run_dir / "policy.json")
        ex = self.meta.extras or {}
        if ex.get("planner") != "mfrl":
            raise MetadataError(f"{run_dir / 'policy.json'} is not a waypoint planner (extras.planner != 'mfrl')")
        self.max_waypoints = int(ex["max_waypoints"])
        self.max_ratio = float(ex["max_ratio"])
        self.dt = float(ex["feasibility_dt"])
        self.limits = QuadLimits(**ex["limits"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(run_dir / "policy.onnx"), opts, providers=["CPUExecutionProvider"])

    def actions(self, obs: np.ndarray) -> np.ndarray:
        """(n, 4k) observations -> (n, k-1) log-ratios; a wrong width is refused with the expected layout."""
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.meta.obs_dim:
            k = self.max_waypoints
            raise MFRLError(f"planner input has shape {obs.shape}; expected (n, {self.meta.obs_dim}): {3 * k} relative "
                            f"waypoint coordinates then a {k}-value mask (task {self.meta.task_id})")
        return self.session.run([self.meta.onnx_output], {self.meta.onnx_input: obs})[0]

    def durations(self, waypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(heuristic durations, planned durations) for one waypoint set."""
        w = check_waypoints(waypoints, max_count=self.max_waypoints)
        heur = heuristic_durations(w, self.limits, dt=self.dt)
        a = self.actions(encode_obs(w, self.max_waypoints))[0, : len(w) - 1]
        return heur, durations_from_actions(a, heur, self.max_ratio)

    def plan(self, waypoints: np.ndarray, safety: bool = True) -> PolySpline:
        """The planned minimum-snap trajectory, stretched until feasible when `safety`."""
        w = check_waypoints(waypoints, max_count=self.max_waypoints)
        spline = min_snap(w, self.durations(w)[1])
        if safety:
            spline = make_feasible(spline, self.limits, dt=self.dt)[0]
        return spline


# ---- evaluation ---------------------------------------------------------------------------------


def evaluate_planner(run_dir: str | Path, n_sets: int = 200, seed: int = 12345, *, fly_baselines: bool = True,
                     flight: FlightConfig | None = None, timing_repeats: int = 3) -> dict[str, Any]:
    """Score an exported planner on held-out waypoint sets against the heuristic and the optimiser.

    Every set is planned three ways: heuristic durations, `optimise_durations` (minimum time subject to
    the flatness check) and the planner (ONNX + min-snap + `make_feasible`). All plans are flown in the
    high-fidelity simulator (the planner's always; the baselines' when `fly_baselines`).

    Args:
        run_dir: Run folder with policy.onnx + policy.json.
        n_sets: Held-out waypoint sets.
        seed: Seed of the sets and flights (training used other seeds).
        fly_baselines: Also fly the heuristic and optimised plans.
        flight: Flight settings (default: the run's training settings when config.json has them).
        timing_repeats: Each set is planned this many times and its median time kept, so a preemption by
            another process does not pass for the planner's own latency.

    Returns:
        Means over sets of the total-time ratios, success and feasibility rates, re-planning and optimiser
        latencies (ms, one thread) and the evaluations the training used.
    """
    from s2r.sim.config import from_dict
    from s2r.sim.quadrotor.allocation import optimise_durations
    from s2r.sim.tasks.quadrotor import ReplanConfig

    run_dir = Path(run_dir)
    planner = OnnxPlanner(run_dir, threads=1)
    ex = planner.meta.extras or {}
    task_cfg = from_dict(ReplanConfig, ex["task_cfg"])
    if flight is None:
        cfg_path = run_dir / "config.json"
        flight = FlightConfig()
        if cfg_path.is_file():
            train = json.loads(cfg_path.read_text()).get("train", {})
            if "flight" in train:
                flight = from_dict(FlightConfig, train["flight"])
    sets = sample_sets(task_cfg, n_sets, seed=seed)
    limits, dt = planner.limits, planner.dt
    # Timed pass first, on its own: the optimiser and the flights would otherwise leave caches cold and
    # garbage to collect inside the timed calls.
    for i in range(min(5, n_sets)):  # warm-up
        planner.plan(sets.set(i))
    rows: dict[str, list[float]] = {k: [] for k in ("t_heur", "t_opt", "t_pol", "replan_ms", "replan_full_ms", "onnx_ms",
                                                    "opt_ms", "raw_margin", "margin", "scale")}
    pol_splines, heur_splines, opt_splines = [], [], []
    for i in range(n_sets):
        w = sets.set(i)
        times = []
        for _ in range(timing_repeats):
            t0 = time.perf_counter()
            heur = heuristic_durations(w, limits, dt=dt)
            t1 = time.perf_counter()
            a = planner.actions(encode_obs(w, planner.max_waypoints))[0, : len(w) - 1]
            t2 = time.perf_counter()
            raw = min_snap(w, durations_from_actions(a, heur, planner.max_ratio))
            t3 = time.perf_counter()
            safe, scale, rep = make_feasible(raw, limits, dt=dt)
            t4 = time.perf_counter()
            times.append((t2 - t1, t3 - t1, t4 - t0))
        onnx_s, replan_s, full_s = np.median(np.array(times), axis=0)
        rows["onnx_ms"].append(onnx_s * 1e3)
        rows["replan_ms"].append(replan_s * 1e3)
        rows["replan_full_ms"].append(full_s * 1e3)
        rows["margin"].append(rep.margin)
        rows["scale"].append(scale)
        rows["t_heur"].append(float(heur.sum()))
        rows["t_pol"].append(safe.total_time)
        pol_splines.append(safe)
        heur_splines.append(min_snap(w, heur))
        rows["raw_margin"].append(feasibility(raw, limits, dt).margin)
    for i in range(n_sets):
        w = sets.set(i)
        opt = optimise_durations(w, limits, init=sets.heuristic[i, : len(w) - 1], dt=dt)
        rows["opt_ms"].append(opt.wall_s * 1e3)
        rows["t_opt"].append(opt.total_time)
        opt_splines.append(min_snap(w, opt.durations))
    r = {k: np.asarray(v) for k, v in rows.items()}
    pol_ok = np.array([x.success for x in fly(pol_splines, flight, seed=seed)])
    out: dict[str, Any] = {
        "n_sets": n_sets,
        "seed": seed,
        "time_vs_heuristic": float(np.mean(r["t_pol"] / r["t_heur"])),
        "time_vs_optimised": float(np.mean(r["t_pol"] / r["t_opt"])),
        "optimised_vs_heuristic": float(np.mean(r["t_opt"] / r["t_heur"])),
        "high_fidelity_success": float(pol_ok.mean()),
        "low_fidelity_feasible_raw": float(np.mean(r["raw_margin"] >= 0)),
        "low_fidelity_feasible": float(np.mean(r["margin"] >= 0)),
        "safety_stretched": float(np.mean(r["scale"] > 1.0)),
        "replan_ms_p50": float(np.percentile(r["replan_ms"], 50)),
        "replan_ms_p99": float(np.percentile(r["replan_ms"], 99)),
        "replan_full_ms_p50": float(np.percentile(r["replan_full_ms"], 50)),
        "replan_full_ms_p99": float(np.percentile(r["replan_full_ms"], 99)),
        "onnx_ms_p50": float(np.percentile(r["onnx_ms"], 50)),
        "optimiser_ms_p50": float(np.percentile(r["opt_ms"], 50)),
        "optimiser_ms_p99": float(np.percentile(r["opt_ms"], 99)),
        "high_fidelity_evaluations": ex.get("high_fidelity_evaluations"),
        "low_fidelity_evaluations": ex.get("low_fidelity_evaluations"),
    }
    if fly_baselines:
        out["heuristic_high_fidelity_success"] = float(np.mean([x.success for x in fly(heur_splines, flight, seed=seed)]))
        out["optimised_high_fidelity_success"] = float(np.mean([x.success for x in fly(opt_splines, flight, seed=seed)]))
    return out


def is_planner_run(run_dir: str | Path) -> bool:
    """True when a run folder holds an mfrl planner (policy.json extras.planner == "mfrl")."""
    path = Path(run_dir) / "policy.json"
    try:
        return (json.loads(path.read_text()).get("extras") or {}).get("planner") == "mfrl"
    except (OSError, ValueError):
        return False
