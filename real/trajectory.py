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
from functools import lru_cache
from math import factorial

import numpy as np

ORDER = 7  # polynomial degree per segment
NCOEF = ORDER + 1
_CONTINUITY = 6  # derivatives 1..6 continuous at interior knots (the minimum-snap optimality condition)
_END_DERIVS = 3  # velocity, acceleration and jerk fixed at both ends

# _FALLING[r, k] = k! / (k - r)! for k >= r, else 0: the factor the r-th derivative puts on t^k's coefficient.
_FALLING = np.array([[factorial(k) / factorial(k - r) if k >= r else 0.0 for k in range(NCOEF)] for r in range(NCOEF)])
_POWERS = np.arange(NCOEF)
_STRETCH, _STRETCH_TRIES = 1.15, 40  # heuristic_durations' stretch step and tries per blend


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
        return np.ascontiguousarray(self.components(t, orders).transpose(0, 2, 1))

    def components(self, t: np.ndarray | float, orders: tuple[int, ...]) -> np.ndarray:
        """`derivatives` with x, y, z as rows, (len(orders), 3, len(t)): the layout the checks compute on."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        for r in orders:
            if not 0 <= r <= ORDER:
                raise ValueError(f"derivative must be in 0..{ORDER}; got {r}")
        knots = self.knot_times
        t = np.clip(t, 0.0, knots[-1])
        segments = len(self.durations)
        seg = np.clip(np.searchsorted(knots, t, side="right") - 1, 0, segments - 1)
        local = t - knots[seg]
        basis = np.empty((NCOEF, len(t)))  # (8, n) powers of the local time, built row by row (contiguous)
        basis[0] = 1.0
        for k in range(1, NCOEF):
            np.multiply(basis[k - 1], local, out=basis[k])
        # d^r/ds^r sum_k c_k s^k = sum_m c_(m+r) (m+r)!/m! s^m: one (8, 3 * len(orders)) matrix per segment.
        dcoef = np.zeros((segments, NCOEF, len(orders), 3))
        for j, r in enumerate(orders):
            dcoef[:, : NCOEF - r, j] = self.coeffs[:, r:] * _FALLING[r, r:][None, :, None]
        dcoef = dcoef.reshape(segments, NCOEF, -1).transpose(0, 2, 1)  # (segments, 3 * len(orders), 8)
        if len(t) > 1 and bool(np.any(seg[1:] < seg[:-1])):  # unsorted times: one gathered product
            flat = np.einsum("mn,ncm->cn", basis, dcoef[seg])
        else:  # sorted times (every sampled check): one small matrix product per segment, no gather
            flat = np.empty((dcoef.shape[1], len(t)))
            cuts = [0, *np.searchsorted(seg, np.arange(1, segments)).tolist(), len(t)]
            for i in range(segments):
                if cuts[i + 1] > cuts[i]:
                    flat[:, cuts[i] : cuts[i + 1]] = dcoef[i] @ basis[:, cuts[i] : cuts[i + 1]]
        return flat.reshape(len(orders), 3, len(t))


_CONT_R = np.arange(1, _CONTINUITY + 1)  # derivative orders continuous at interior knots
_CONT_LEFT = _FALLING[1 : _CONTINUITY + 1] / np.array([factorial(r) for r in _CONT_R])[:, None]  # (6, 8)


@lru_cache(maxsize=16)
def _min_snap_template(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The duration-free part of the min-snap system for m segments, and where its duration-scaled entries go.

    Unknowns: a[i, k] in normalised time tau (column i*8 + k); d^r p/dt^r = T_i^-r * d^r p/dtau^r. Rows: two
    position rows per segment, then the fixed end derivatives (scaled by T^r / r! so every entry is O(1)
    whatever the durations), then continuity rows T_i^-r D_r(1) a_i = T_(i+1)^-r D_r(0) a_(i+1) times h^r / r!
    with h the shorter neighbour (both factors <= 1): rows (m - 1, 6), left columns (m - 1, 1, 8) and right
    columns (m - 1, 6) of those.
    """
    A = np.zeros((NCOEF * m, NCOEF * m))
    for i in range(m):
        A[2 * i, i * NCOEF] = 1.0
        A[2 * i + 1, i * NCOEF : (i + 1) * NCOEF] = 1.0
    row = 2 * m
    for r in range(1, _END_DERIVS + 1):
        A[row, r] = 1.0
        A[row + 1, (m - 1) * NCOEF : m * NCOEF] = _FALLING[r] / factorial(r)
        row += 2
    i = np.arange(m - 1)[:, None]
    rows = row + _CONTINUITY * i + (_CONT_R - 1)[None, :]
    left = (i * NCOEF)[:, :, None] + np.arange(NCOEF)[None, None, :]
    right = (i + 1) * NCOEF + _CONT_R[None, :]
    A.setflags(write=False)
    return A, rows, left, right


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

    A0, rows, left, right = _min_snap_template(m)
    A = A0.copy()
    b = np.zeros((NCOEF * m, 3))
    b[0 : 2 * m : 2], b[1 : 2 * m : 2] = w[:-1], w[1:]
    b[2 * m], b[2 * m + 1] = v0 * T[0], v1 * T[-1]
    if m > 1:
        h = np.minimum(T[:-1], T[1:])  # (m - 1,) interior knots
        A[rows[:, :, None], left] = _CONT_LEFT[None] * ((h / T[:-1])[:, None] ** _CONT_R)[:, :, None]
        A[rows, right] = -((h / T[1:])[:, None] ** _CONT_R)
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
    return ScaledChecker(spline, limits, dt).report()


def sample_times(spline: PolySpline, dt: float) -> np.ndarray:
    """The times `feasibility` checks: every `dt` seconds from 0, and the final time."""
    total = spline.total_time
    return np.append(np.arange(0.0, total, dt), total)


@dataclass(frozen=True)
class _Extremes:
    max_norm: np.ndarray  # (k,) largest |a + g e_z| per scale
    min_norm: np.ndarray
    max_rate: np.ndarray  # (k,) rad/s
    max_tilt: np.ndarray  # (k,) rad


def _extremes(acc: np.ndarray, jerk: np.ndarray, scales: np.ndarray, limits: QuadLimits) -> _Extremes:
    """Flatness extremes of a rest-to-rest plan flown `scales` times slower, from (3, samples) rows of a and j.

    Slowing down by s divides accelerations by s^2 and jerks by s^3 and keeps the path, so with u = 1/s^2,
    v = 1/s^3 and f = u a + g e_z every term is a low-order polynomial in u and v of per-sample dot products:
    |f|^2 = u^2 |a|^2 + 2 u g a_z + g^2; the body axis turns at |j_perp| / |f| = v |j x f| / |f|^2 (yaw
    held), with |j x f|^2 = |j|^2 |f|^2 - (j . f)^2; the tilt is arccos(f_z / |f|).
    """
    g = limits.gravity
    ax, ay, az = acc
    jx, jy, jz = jerk
    a2, j2, ja = ax * ax + ay * ay + az * az, jx * jx + jy * jy + jz * jz, jx * ax + jy * ay + jz * az
    s = np.asarray(scales, dtype=np.float64)[:, None]
    u, v = 1.0 / s**2, 1.0 / s**3
    f2 = np.maximum(u * u * a2 + 2.0 * g * u * az + g * g, 1e-18)  # (k, samples)
    jf = v * (u * ja + g * jz)
    rate2 = np.maximum(v * v * j2 * f2 - jf * jf, 0.0) / (f2 * f2)
    cos = (u * az + g) / np.sqrt(f2)
    return _Extremes(max_norm=np.sqrt(f2.max(axis=1)), min_norm=np.sqrt(f2.min(axis=1)),
                     max_rate=np.sqrt(rate2.max(axis=1)), max_tilt=np.arccos(np.clip(cos.min(axis=1), -1.0, 1.0)))


def _slack(ext: _Extremes, limits: QuadLimits) -> list[np.ndarray]:
    """Normalised slack of each timing constraint, (limit - value) / limit (min thrust over max_total_thrust)."""
    slack = [(limits.max_total_thrust - limits.mass * ext.max_norm) / limits.max_total_thrust,
             (limits.mass * ext.min_norm - limits.min_total_thrust) / limits.max_total_thrust,
             (limits.max_body_rate - ext.max_rate) / limits.max_body_rate]
    if limits.max_tilt is not None:
        slack.append((limits.max_tilt - ext.max_tilt) / limits.max_tilt)
    return slack


def scaled_margins(spline: PolySpline, scales: np.ndarray, limits: QuadLimits, dt: float = 0.01) -> np.ndarray:
    """Feasibility margins of a rest-to-rest plan flown `scales` times slower, all at once, from one sampling.

    The formulas of `feasibility` without its height term (a common time scale does not move the path), on
    the unscaled plan's samples every `dt`; `feasibility` of the scaled plan samples other points of the same
    path, so the two agree to within sampling, not exactly. A handful of array operations for all scales.

    Args:
        spline: Plan from rest to rest.
        scales: (k,) time scales (> 0).
        limits: Vehicle limits.
        dt: s, sampling period.

    Returns:
        (k,) margins.
    """
    return ScaledChecker(spline, limits, dt).margins(scales)


class ScaledChecker:
    """The feasibility check of one plan, sampled once, at its own timing (`report`) and at common slow-downs
    (`margins`, all scales of a batch at once): what a stretch search needs without re-sampling the plan.

    Args:
        spline: The plan (rest to rest for `margins`).
        limits: Vehicle limits.
        dt: s, sampling period.
    """

    def __init__(self, spline: PolySpline, limits: QuadLimits, dt: float = 0.01) -> None:
        self.spline, self.limits = spline, limits
        pos, self._acc, self._jerk = spline.components(sample_times(spline, dt), (0, 2, 3))
        self._z = pos[2]

    def margins(self, scales: np.ndarray) -> np.ndarray:
        """(k,) margins, without the height term, of the plan flown `scales` (k,) times slower."""
        return np.min(_slack(_extremes(self._acc, self._jerk, scales, self.limits), self.limits), axis=0)

    def report(self) -> FeasibilityReport:
        """`feasibility` of the plan as it is."""
        spline, limits = self.spline, self.limits
        ext = _extremes(self._acc, self._jerk, np.ones(1), limits)
        tmax, tmin = limits.mass * float(ext.max_norm[0]), limits.mass * float(ext.min_norm[0])
        rmax, tilt = float(ext.max_rate[0]), float(ext.max_tilt[0])
        slack = [float(x[0]) for x in _slack(ext, limits)]
        min_z = float(self._z.min())
        if limits.min_height is not None:
            # Normalised by the lowest waypoint's height above the limit: 1 when the path never dips below it.
            end = spline.durations[-1] ** _POWERS @ spline.coeffs[-1, :, 2]
            lowest = min(float(spline.coeffs[:, 0, 2].min()), float(end))
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
    steps = _STRETCH ** np.arange(1, _STRETCH_TRIES)  # the k-th stretch flies the k = 0 plan 1.15^k slower
    for blend in (0.0, 0.5, 1.0):
        d = (1.0 - blend) * trap + blend * trap.mean()
        base = min_snap(w, d)
        check = ScaledChecker(base, limits, dt)
        report = check.report()
        if report.feasible:
            return d
        if limits.min_height is not None and report.min_z < limits.min_height:
            continue  # a slower timing flies the same path: change the shape instead
        # Jump to one step below the first stretch that the one-sampling estimate calls feasible, then walk up
        # with the exact check on the time-scaled plan (a common scale is the min-snap solution of the scaled
        # durations, so no re-solve): the result is the stretch loop's, for 2-3 checks instead of up to 40.
        ok = np.flatnonzero(check.margins(steps) >= 0.0)
        first = int(ok[0]) + 1 if len(ok) else _STRETCH_TRIES - 1
        start = max(first - 1, 1)
        for _ in range(start):
            d = d * _STRETCH
        for k in range(start, _STRETCH_TRIES):
            report = feasibility(time_scaled(base, _STRETCH**k), limits, dt)
            if report.feasible:
                return d
            if limits.min_height is not None and report.min_z < limits.min_height:
                break
            d = d * _STRETCH
    return d


def time_scaled(spline: PolySpline, scale: float) -> PolySpline:
    """The same path flown `scale` times slower, p_k(t) = p(t / k); equals a min-snap re-solve with k x durations."""
    return PolySpline(coeffs=spline.coeffs / scale ** _POWERS[None, :, None], durations=spline.durations * scale)
