"""The reward estimator of `s2r.policies.mfrl` and the choice of what to query next.

- `trajectory_features`: dimensionless features of a minimum-snap trajectory, differentiable in the
  segment durations through a batched torch min-snap solve (`torch_min_snap`);
- `FlyabilityEstimator`: a multi-fidelity GP (BoTorch's `SingleTaskMultiFidelityGP`) of the flyability
  score over (features, fidelity);
- `select_queries`: cost-aware integrated variance reduction over (candidate, fidelity) pairs.

Why not qMultiFidelityKnowledgeGradient / qMultiFidelityMaxValueEntropy: those value a query by what it
says about the *maximum* of the modelled function, which is not what the policy needs (the trajectory with
the largest flyability margin is the slowest). The policy needs the sign of the high-fidelity score near
its own operating points, so the information measure is the integrated posterior variance at those points
(BoTorch's `qNegIntegratedPosteriorVariance`), computed here in closed form from the joint posterior
covariance: it equals the qNIPV difference exactly (a GP's posterior variance does not depend on the
observed values; `tests/policies/test_mfrl.py` checks the two agree) and costs one covariance matrix
instead of one fantasy model per candidate: at 1.5k training points qNIPV took ~1.5 s per candidate here,
hours for a round's few hundred candidates and dozens of picks, against a few milliseconds.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from s2r.real.trajectory import NCOEF, QuadLimits

# Fidelity coordinate of the GP: 1 is the target the policy is judged at (the closed-loop simulator); logged
# real flights sit in between, a third fidelity that the GP correlates with both.
LOW, REAL, HIGH = 0.0, 0.5, 1.0
FEATURES = ("low_margin", "log_thrust_max", "thrust_min", "log_body_rate", "log_speed", "log_jerk", "log_snap",
            "height_slack")


class MFRLError(ValueError):
    """A config, run folder or input that the multi-fidelity planner cannot use; the message says which."""


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
