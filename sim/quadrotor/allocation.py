"""Time allocation baselines: how long each minimum-snap segment should take.

`heuristic_durations` is the classical rule of thumb (a trapezoidal speed profile per segment at a
fraction of the vehicle's acceleration), stretched until the low-fidelity check passes. `optimise_durations`
minimises the total time subject to that check: a bisection on one common time scale, then either a
per-segment descent or SLSQP on log-durations. These are what a learned re-planning policy must beat
(in time per plan and in plan quality) to be worth having.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

# The heuristic lives with the trajectory code on the robot side: the planner node needs it without scipy or sim.
from s2r.real.trajectory import QuadLimits, check_waypoints, feasibility, heuristic_durations, min_snap


@dataclass(frozen=True)
class AllocationResult:
    """Result of `optimise_durations`.

    Attributes:
        durations: (segments,) seconds.
        total_time: s, their sum.
        wall_s: s of computer time the optimisation took.
        iterations: Feasibility checks made.
        feasible: The returned durations pass the low-fidelity check.
        margin: Feasibility margin of the returned durations.
    """

    durations: np.ndarray
    total_time: float
    wall_s: float
    iterations: int
    feasible: bool
    margin: float


def _margin(waypoints: np.ndarray, durations: np.ndarray, limits: QuadLimits, dt: float) -> float:
    return feasibility(min_snap(waypoints, durations), limits, dt).margin


def _scale_bisection(w: np.ndarray, d: np.ndarray, limits: QuadLimits, min_margin: float, dt: float,
                     tol: float) -> tuple[np.ndarray | None, int]:
    """Smallest common scale s with margin(s * d) >= min_margin; returns (s * d or None if none, checks made)."""
    checks = 0
    hi = 1.0
    while _margin(w, hi * d, limits, dt) < min_margin:
        checks += 1
        hi *= 1.5
        if hi > 1e3:
            return None, checks  # the path itself breaks a limit (below min_height), or hover is impossible
    checks += 1
    lo = hi / 1.5 if hi > 1.0 else 0.02
    while hi / lo > 1.0 + tol:
        mid = np.sqrt(lo * hi)  # bisect in log time: the constraints scale with powers of time
        checks += 1
        if _margin(w, mid * d, limits, dt) >= min_margin:
            hi = mid
        else:
            lo = mid
    return hi * d, checks


def _descent(w: np.ndarray, d: np.ndarray, limits: QuadLimits, min_margin: float, dt: float,
             max_checks: int) -> tuple[np.ndarray, int]:
    """Shrink one segment at a time while it stays feasible, halving the step when nothing shrinks."""
    checks = 0
    step = 0.2
    d = d.copy()
    while step > 0.01 and checks < max_checks:
        improved = False
        for i in np.argsort(-d):  # longest first: most time to win
            trial = d.copy()
            trial[i] *= 1.0 - step
            checks += 1
            if _margin(w, trial, limits, dt) >= min_margin:
                d = trial
                improved = True
            if checks >= max_checks:
                break
        if not improved:
            step *= 0.5
    return d, checks


def _slsqp(w: np.ndarray, d: np.ndarray, limits: QuadLimits, min_margin: float, dt: float,
           max_checks: int) -> tuple[np.ndarray, int]:
    """SLSQP on log-durations relative to `d`: minimise the total time subject to the margin constraint."""
    from scipy.optimize import minimize

    checks = 0
    scale = d.sum()

    def constraint(y: np.ndarray) -> float:
        nonlocal checks
        checks += 1
        return _margin(w, d * np.exp(y), limits, dt) - min_margin

    # Bounded to [d/8, 2d]: outside that the polynomial fit is far from anything worth flying.
    res = minimize(lambda y: float((d * np.exp(y)).sum() / scale), np.zeros(len(d)),
                   jac=lambda y: d * np.exp(y) / scale, method="SLSQP",
                   bounds=[(np.log(0.125), np.log(2.0))] * len(d),
                   constraints=[{"type": "ineq", "fun": constraint}],
                   options={"maxiter": max(1, max_checks // (len(d) + 1)), "ftol": 1e-5, "eps": 1e-4})
    out = d * np.exp(res.x)
    return (out, checks) if np.isfinite(out).all() else (d, checks)


def optimise_durations(
    waypoints: object,
    limits: QuadLimits,
    init: np.ndarray | None = None,
    method: Literal["scale", "descent", "slsqp"] = "descent",
    *,
    min_margin: float = 0.0,
    dt: float = 0.01,
    max_checks: int = 400,
) -> AllocationResult:
    """Minimise the total time subject to the low-fidelity feasibility check.

    Every method first finds the smallest common time scale of `init` that is feasible (bisection in log
    time, 0.1 % tolerance); "descent" then shrinks single segments while they stay feasible, "slsqp" runs
    scipy's SLSQP on log-durations. The result is checked once more and, if a local step left it
    infeasible, stretched back to feasibility.

    Args:
        waypoints: (n, 3) positions.
        limits: Vehicle limits.
        init: (n - 1,) starting durations (default: `heuristic_durations`).
        method: "scale", "descent" or "slsqp".
        min_margin: Required feasibility margin (> 0 leaves headroom for the closed-loop controller).
        dt: Sampling period of the feasibility check.
        max_checks: Budget of feasibility checks for the per-segment stage.

    Returns:
        An `AllocationResult`.
    """
    start = time.perf_counter()
    w = check_waypoints(waypoints)
    d0 = heuristic_durations(w, limits, dt=dt) if init is None else np.asarray(init, dtype=np.float64).copy()
    if d0.shape != (len(w) - 1,) or not (np.isfinite(d0).all() and (d0 > 0).all()):
        raise ValueError(f"init must hold {len(w) - 1} positive durations; got {np.asarray(init).tolist()}")
    scaled, checks = _scale_bisection(w, d0, limits, min_margin, dt, tol=1e-3)
    if scaled is None:
        raise ValueError("no common time scale makes the initial durations feasible: the path dips below "
                         "limits.min_height or the limits cannot hold a hover; start from other durations")
    d = scaled
    if method == "descent":
        d, more = _descent(w, d, limits, min_margin, dt, max_checks)
    elif method == "slsqp":
        d, more = _slsqp(w, d, limits, min_margin, dt, max_checks)
    elif method == "scale":
        more = 0
    else:
        raise ValueError(f"unknown method '{method}'; use 'scale', 'descent' or 'slsqp'")
    checks += more
    margin = _margin(w, d, limits, dt)
    checks += 1
    if margin < min_margin:
        # A local step left the feasible set: rescale its answer, or fall back to the scaled start when
        # its new path shape breaks a limit that no time scale fixes (min_height).
        fixed, extra = _scale_bisection(w, d, limits, min_margin, dt, tol=1e-3)
        checks += extra + 1
        d = fixed if fixed is not None and fixed.sum() < scaled.sum() else scaled
        margin = _margin(w, d, limits, dt)
    return AllocationResult(durations=d, total_time=float(d.sum()), wall_s=time.perf_counter() - start,
                            iterations=checks, feasible=margin >= min_margin, margin=margin)
