"""Minimum-snap trajectories through waypoints and their flatness-based feasibility check (numpy only).

The robot-side planner node imports this module, so it depends on numpy alone (never torch, mujoco,
scipy or `s2r.sim`). A trajectory is a piecewise 7th-order polynomial (`PolySpline`), one piece per
segment between consecutive waypoints. `min_snap` picks the pieces that minimise the integral of squared
snap for given segment durations; `feasibility` checks the thrust and body rates a quadrotor needs to fly
it, using differential flatness (the thrust direction and rates follow from acceleration and jerk).

Minimum snap in closed form: with positions fixed at the waypoints and the first three derivatives fixed
at both ends, the minimiser of the integral of squared snap over piecewise polynomials is a degree-7
spline that is C^6 at the interior knots (the Euler-Lagrange condition of the snap functional). That gives
a square linear system of 8 unknowns per segment, solved once for all three axes. Each segment is solved
in normalised time tau = t / T_i in [0, 1] and the continuity rows are scaled by the shorter of the two
neighbouring durations, which keeps the system well conditioned for durations from milliseconds to minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import factorial

import numpy as np

ORDER = 7  # polynomial degree per segment
NCOEF = ORDER + 1
_CONTINUITY = 6  # derivatives 1..6 continuous at interior knots (the minimum-snap optimality condition)
_END_DERIVS = 3  # velocity, acceleration and jerk fixed at both ends

# _FALLING[r, k] = k! / (k - r)! for k >= r, else 0: the factor the r-th derivative puts on t^k's coefficient.
_FALLING = np.array([[factorial(k) / factorial(k - r) if k >= r else 0.0 for k in range(NCOEF)] for r in range(NCOEF)])
_POWERS = np.arange(NCOEF)


class TrajectoryError(ValueError):
    """Bad waypoints or durations; the message says which one and how to fix it."""


def check_waypoints(waypoints: object, max_count: int | None = None, min_separation: float = 1e-3) -> np.ndarray:
    """Validate waypoints and return them as an (n, 3) float64 array.

    Args:
        waypoints: Array-like of shape (n, 3): x, y, z positions in metres.
        max_count: Largest number of waypoints accepted (None for no limit).
        min_separation: Consecutive waypoints closer than this (metres) count as duplicates.

    Returns:
        (n, 3) float64 copy of the waypoints.

    Raises:
        TrajectoryError: Wrong shape, fewer than two waypoints, more than `max_count`, a NaN/inf value,
            or two consecutive waypoints closer than `min_separation`.
    """
    try:
        w = np.array(waypoints, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TrajectoryError(f"waypoints must be an (n, 3) array of numbers (x, y, z in metres); {err}") from None
    if w.ndim != 2 or w.shape[1] != 3:
        raise TrajectoryError(f"waypoints must be an (n, 3) array of x, y, z positions; got shape {w.shape}")
    n = len(w)
    if n < 2:
        raise TrajectoryError(f"need at least 2 waypoints to plan a trajectory; got {n}")
    if max_count is not None and n > max_count:
        raise TrajectoryError(f"got {n} waypoints but at most {max_count} are allowed; split the route into shorter plans")
    bad = np.flatnonzero(~np.isfinite(w).all(axis=1))
    if len(bad):
        i = int(bad[0])
        raise TrajectoryError(f"waypoint {i} is not finite ({w[i].tolist()}); replace the NaN/inf value")
    gaps = np.linalg.norm(np.diff(w, axis=0), axis=1)
    close = np.flatnonzero(gaps < min_separation)
    if len(close):
        i = int(close[0])
        raise TrajectoryError(
            f"waypoints {i} and {i + 1} are {gaps[i]:.3g} m apart, closer than min_separation {min_separation:g} m; "
            "remove the duplicate"
        )
    return w


def _check_durations(durations: object, segments: int) -> np.ndarray:
    d = np.array(durations, dtype=np.float64).reshape(-1)
    if d.shape != (segments,):
        raise TrajectoryError(f"need one duration per segment ({segments}); got {d.size}")
    if not (np.isfinite(d).all() and (d > 0).all()):
        raise TrajectoryError(f"segment durations must be finite and positive (seconds); got {d.tolist()}")
    return d


@dataclass(frozen=True)
class PolySpline:
    """A piecewise 7th-order polynomial trajectory in 3D.

    Attributes:
        coeffs: (segments, 8, 3) coefficients; segment i is p(s) = sum_k coeffs[i, k] * s**k for local time
            s in [0, durations[i]] seconds since the segment started.
        durations: (segments,) seconds per segment.
    """

    coeffs: np.ndarray
    durations: np.ndarray

    @property
    def total_time(self) -> float:
        """Seconds from the first waypoint to the last."""
        return float(self.durations.sum())

    @property
    def knot_times(self) -> np.ndarray:
        """(segments + 1,) times at which the trajectory passes the waypoints, starting at 0."""
        return np.concatenate([[0.0], np.cumsum(self.durations)])

    @property
    def num_segments(self) -> int:
        """Number of polynomial pieces."""
        return len(self.durations)

    def evaluate(self, t: np.ndarray | float, derivative: int = 0) -> np.ndarray:
        """Position (or a time derivative) at times `t`.

        Args:
            t: Times in seconds; values outside [0, total_time] are clamped to the ends.
            derivative: 0 position, 1 velocity, 2 acceleration, 3 jerk, 4 snap, ... up to 7.

        Returns:
            (len(t), 3) array.
        """
        return self.derivatives(t, (derivative,))[0]

    def derivatives(self, t: np.ndarray | float, orders: tuple[int, ...]) -> np.ndarray:
        """Several derivatives at once (one segment lookup for all): (len(orders), len(t), 3)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        knots = self.knot_times
        t = np.clip(t, 0.0, knots[-1])
        seg = np.clip(np.searchsorted(knots, t, side="right") - 1, 0, len(self.durations) - 1)
        local = t - knots[seg]
        out = np.empty((len(orders), len(t), 3))
        c = self.coeffs[seg]  # (n, 8, 3)
        for j, r in enumerate(orders):
            if not 0 <= r <= ORDER:
                raise ValueError(f"derivative must be in 0..{ORDER}; got {r}")
            # d^r/ds^r sum_k c_k s^k = sum_{k>=r} c_k k!/(k-r)! s^(k-r)
            pw = local[:, None] ** _POWERS[: NCOEF - r]  # (n, 8-r)
            out[j] = np.einsum("nm,nmc->nc", pw * _FALLING[r, r:], c[:, r:])
        return out


def min_snap(
    waypoints: object,
    durations: object,
    *,
    start_vel: object | None = None,
    end_vel: object | None = None,
) -> PolySpline:
    """The minimum-snap trajectory through all waypoints with the given segment durations.

    Args:
        waypoints: (n, 3) positions, validated with `check_waypoints`.
        durations: (n - 1,) seconds per segment, each positive.
        start_vel: (3,) velocity at the first waypoint (default rest); acceleration and jerk start at 0.
        end_vel: (3,) velocity at the last waypoint (default rest); acceleration and jerk end at 0.

    Returns:
        The spline: passes through every waypoint at `knot_times`, C^6 at interior knots.

    Raises:
        TrajectoryError: Bad waypoints or durations.
    """
    w = check_waypoints(waypoints)
    m = len(w) - 1
    T = _check_durations(durations, m)
    v0 = np.zeros(3) if start_vel is None else np.asarray(start_vel, dtype=np.float64).reshape(3)
    v1 = np.zeros(3) if end_vel is None else np.asarray(end_vel, dtype=np.float64).reshape(3)

    size = NCOEF * m
    A = np.zeros((size, size))
    b = np.zeros((size, 3))
    row = 0
    # Unknowns: a[i, k] in normalised time tau (column i*8 + k); d^r p/dt^r = T_i^-r * d^r p/dtau^r.
    ones = np.ones(NCOEF)
    for i in range(m):
        c = i * NCOEF
        A[row, c] = 1.0
        b[row] = w[i]
        A[row + 1, c : c + NCOEF] = ones
        b[row + 1] = w[i + 1]
        row += 2
    for r in range(1, _END_DERIVS + 1):
        # Rows scaled by T^r / r! so every entry is O(1) whatever the durations.
        A[row, r] = 1.0
        b[row] = (v0 * T[0] if r == 1 else 0.0)
        c = (m - 1) * NCOEF
        A[row + 1, c : c + NCOEF] = _FALLING[r] / factorial(r)
        b[row + 1] = (v1 * T[-1] if r == 1 else 0.0)
        row += 2
    for i in range(m - 1):
        h = min(T[i], T[i + 1])
        c = i * NCOEF
        for r in range(1, _CONTINUITY + 1):
            # T_i^-r D_r(1) a_i = T_{i+1}^-r D_r(0) a_{i+1}, times h^r / r! (both factors <= 1).
            A[row, c : c + NCOEF] = _FALLING[r] * (h / T[i]) ** r / factorial(r)
            A[row, c + NCOEF + r] = -(h / T[i + 1]) ** r
            row += 1
    a = np.linalg.solve(A, b).reshape(m, NCOEF, 3)
    coeffs = a / T[:, None, None] ** _POWERS[None, :, None]  # normalised -> seconds since segment start
    return PolySpline(coeffs=coeffs, durations=T)


def snap_cost(spline: PolySpline) -> float:
    """Integral of squared snap over the whole trajectory (summed over x, y, z), in exact closed form."""
    s = spline.coeffs[:, 4:] * _FALLING[4, 4:][None, :, None]  # (segments, 4, 3) snap polynomial
    k = np.arange(4)
    e = k[:, None] + k[None, :] + 1  # exponent of T in int_0^T s^(m+n) ds
    gram = spline.durations[:, None, None] ** e / e  # (segments, 4, 4)
    return float(np.einsum("imc,imn,inc->", s, gram, s))


@dataclass(frozen=True, kw_only=True)
class QuadLimits:
    """What a quadrotor can do, for the feasibility check. Defaults: a Crazyflie 2.x (see crazyflie.xml).

    Attributes:
        mass: kg.
        gravity: m/s^2.
        max_total_thrust: N, all motors at full thrust (Crazyflie: thrust-to-weight about 2.2).
        min_total_thrust: N; below it the attitude controller has no authority left (motors cannot push).
        max_body_rate: rad/s, largest roll/pitch rate the attitude loop tracks well.
        max_tilt: rad from upright, or None for no tilt limit.
        min_height: m; the trajectory must stay above this height (the floor plus clearance), or None.
            Minimum-snap curves swing below the waypoints at sharp reversals, and time scaling does not
            change the path, so this is the one constraint a slower timing cannot fix.
    """

    mass: float = 0.027
    gravity: float = 9.81
    max_total_thrust: float = 0.583
    min_total_thrust: float = 0.05
    max_body_rate: float = 10.0
    max_tilt: float | None = None
    min_height: float | None = None


@dataclass(frozen=True)
class FeasibilityReport:
    """Result of `feasibility`.

    Attributes:
        feasible: Every constraint holds at every sample (margin >= 0).
        max_thrust: N, largest total thrust needed.
        min_thrust: N, smallest total thrust needed.
        max_body_rate: rad/s, largest roll/pitch rate needed.
        margin: Smallest normalised slack over the constraints, (limit - value) / limit (the min-thrust
            slack is divided by max_total_thrust); positive means feasible.
        max_tilt: rad, largest tilt from upright.
        min_z: m, lowest height along the trajectory.
    """

    feasible: bool
    max_thrust: float
    min_thrust: float
    max_body_rate: float
    margin: float
    max_tilt: float = 0.0
    min_z: float = 0.0


def feasibility(spline: PolySpline, limits: QuadLimits, dt: float = 0.01) -> FeasibilityReport:
    """Check a trajectory against thrust, body-rate, tilt and height limits with differential flatness.

    The thrust vector is f = m (a + g e_z); the body z axis points along it. Rolling and pitching turn that
    axis at rate |jerk projected perpendicular to f| / |a + g e_z| (yaw is held constant, so this is the
    body-rate magnitude). Sampled every `dt` seconds and at the final time.

    Args:
        spline: Trajectory to check.
        limits: Vehicle limits.
        dt: Sampling period in seconds.

    Returns:
        A `FeasibilityReport`.
    """
    total = spline.total_time
    t = np.append(np.arange(0.0, total, dt), total)
    pos, acc, jerk = spline.derivatives(t, (0, 2, 3))
    acc[:, 2] += limits.gravity
    norm = np.linalg.norm(acc, axis=1)
    safe = np.maximum(norm, 1e-9)
    zb = acc / safe[:, None]
    perp = jerk - np.sum(jerk * zb, axis=1, keepdims=True) * zb
    rate = np.linalg.norm(perp, axis=1) / safe
    thrust = limits.mass * norm
    tmax, tmin, rmax = float(thrust.max()), float(thrust.min()), float(rate.max())
    tilt = float(np.arccos(np.clip(zb[:, 2], -1.0, 1.0)).max())
    slack = [
        (limits.max_total_thrust - tmax) / limits.max_total_thrust,
        (tmin - limits.min_total_thrust) / limits.max_total_thrust,
        (limits.max_body_rate - rmax) / limits.max_body_rate,
    ]
    if limits.max_tilt is not None:
        slack.append((limits.max_tilt - tilt) / limits.max_tilt)
    min_z = float(pos[:, 2].min())
    if limits.min_height is not None:
        # Normalised by the lowest waypoint's height above the limit: 1 when the path never dips below it.
        lowest = float(spline.evaluate(spline.knot_times)[:, 2].min())
        slack.append((min_z - limits.min_height) / max(lowest - limits.min_height, 1e-3))
    margin = float(min(slack))
    return FeasibilityReport(feasible=margin >= 0.0, max_thrust=tmax, min_thrust=tmin, max_body_rate=rmax,
                             margin=margin, max_tilt=tilt, min_z=min_z)


def heuristic_durations(waypoints: object, limits: QuadLimits, *, speed: float = 1.5, accel_fraction: float = 0.25,
                        ensure_feasible: bool = True, dt: float = 0.01) -> np.ndarray:
    """Segment durations from a trapezoidal speed profile, stretched until feasible.

    Each segment of length d is flown as if alone, from rest to rest, cruising at `speed` with
    acceleration a = accel_fraction * (the horizontal acceleration the thrust limit allows): d/v + v/a,
    or 2 sqrt(d/a) when the segment is too short to reach cruise speed. Minimum-snap curves swing wider
    than that profile near sharp turns, so with `ensure_feasible` all durations are scaled up by 15 %
    steps until the low-fidelity check passes. Scaling cannot lift a path that dips below
    `limits.min_height` (the shape does not change with a common time scale), so such a plan is first
    blended towards equal segment times, whose swings are smaller.

    Args:
        waypoints: (n, 3) positions.
        limits: Vehicle limits.
        speed: m/s cruise speed.
        accel_fraction: Fraction of the available horizontal acceleration used.
        ensure_feasible: Stretch (and blend) until `feasibility` passes; the last try is returned otherwise.
        dt: Sampling period of the feasibility check.

    Returns:
        (n - 1,) durations in seconds.
    """
    w = check_waypoints(waypoints)
    dist = np.linalg.norm(np.diff(w, axis=0), axis=1)
    ratio = limits.max_total_thrust / (limits.mass * limits.gravity)
    a = accel_fraction * limits.gravity * np.sqrt(max(ratio**2 - 1.0, 1e-3))
    v = speed
    cruise = dist >= v * v / a
    trap = np.where(cruise, dist / v + v / a, 2.0 * np.sqrt(dist / a))
    if not ensure_feasible:
        return trap
    d = trap
    for blend in (0.0, 0.5, 1.0):
        d = (1.0 - blend) * trap + blend * trap.mean()
        for _ in range(40):
            report = feasibility(min_snap(w, d), limits, dt)
            if report.feasible:
                return d
            if limits.min_height is not None and report.min_z < limits.min_height:
                break  # a slower timing flies the same path: change the shape instead
            d = d * 1.15
    return d
