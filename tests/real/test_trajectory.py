"""Minimum-snap trajectories and the flatness feasibility check (s2r.real.trajectory, numpy only)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from s2r.real.trajectory import (
    PolySpline,
    QuadLimits,
    TrajectoryError,
    check_waypoints,
    feasibility,
    heuristic_durations,
    min_snap,
    scaled_margins,
    snap_cost,
    time_scaled,
)

WAYPOINTS = np.array([[0, 0, 1], [1, 0.5, 1.5], [2, -0.5, 1], [3, 1, 2], [2, 2, 1.2], [0, 1, 1]], dtype=float)
DURATIONS = np.array([1.0, 0.8, 1.2, 0.9, 1.5])


@pytest.fixture(scope="module")
def spline() -> PolySpline:
    return min_snap(WAYPOINTS, DURATIONS)


def test_passes_through_every_waypoint(spline: PolySpline) -> None:
    np.testing.assert_allclose(spline.knot_times, np.concatenate([[0], np.cumsum(DURATIONS)]))
    np.testing.assert_allclose(spline.evaluate(spline.knot_times), WAYPOINTS, atol=1e-9)
    assert spline.coeffs.shape == (5, 8, 3) and spline.total_time == pytest.approx(DURATIONS.sum())


def _poly_at(spline: PolySpline, seg: int, local: float, r: int) -> np.ndarray:
    """r-th derivative of one segment's own polynomial at local time `local` (no segment lookup)."""
    c = spline.coeffs[seg]
    return sum(c[k] * math.perm(k, r) * local ** (k - r) for k in range(r, 8))


def test_derivatives_continuous_at_interior_knots(spline: PolySpline) -> None:
    for i in range(spline.num_segments - 1):
        for r in range(5):  # position .. snap (the optimum is C^6; up to snap is what flight needs)
            end = _poly_at(spline, i, spline.durations[i], r)
            start = _poly_at(spline, i + 1, 0.0, r)
            np.testing.assert_allclose(end, start, rtol=1e-7, atol=1e-7)
            np.testing.assert_allclose(spline.evaluate(spline.knot_times[i + 1], r)[0], start, atol=1e-9)


def test_zero_boundary_derivatives(spline: PolySpline) -> None:
    for r in (1, 2, 3):
        np.testing.assert_allclose(spline.evaluate([0.0, spline.total_time], r), 0.0, atol=1e-8)


def test_boundary_velocity_is_honoured() -> None:
    s = min_snap(WAYPOINTS[:3], DURATIONS[:2], start_vel=[0.5, 0, 0], end_vel=[0, -0.3, 0.1])
    np.testing.assert_allclose(s.evaluate(0.0, 1)[0], [0.5, 0, 0], atol=1e-9)
    np.testing.assert_allclose(s.evaluate(s.total_time, 1)[0], [0, -0.3, 0.1], atol=1e-9)


def _hermite(waypoints: np.ndarray, durations: np.ndarray, knot_derivs: np.ndarray) -> PolySpline:
    """The C^3 spline with given (velocity, acceleration, jerk) at every knot: knot_derivs (n, 3, 3)."""
    coeffs = []
    for i, T in enumerate(durations):
        A = np.array([[math.perm(k, r) * s ** (k - r) if k >= r else 0.0 for k in range(8)]
                      for s in (0.0, T) for r in range(4)])
        b = np.concatenate([np.vstack([waypoints[i], knot_derivs[i]]), np.vstack([waypoints[i + 1], knot_derivs[i + 1]])])
        coeffs.append(np.linalg.solve(A, b))
    return PolySpline(coeffs=np.array(coeffs), durations=np.asarray(durations, dtype=float))


def test_snap_cost_is_minimal(spline: PolySpline) -> None:
    """Every other admissible spline (same waypoints, rest at both ends, C^3) has more snap."""
    k = spline.knot_times
    derivs = np.stack([spline.evaluate(k, r) for r in (1, 2, 3)], axis=1)  # (knots, 3, 3)
    best = snap_cost(spline)
    assert snap_cost(_hermite(WAYPOINTS, DURATIONS, derivs)) == pytest.approx(best, rel=1e-9)
    rng = np.random.default_rng(0)
    for _ in range(5):
        other = derivs.copy()
        other[1:-1] += rng.normal(0.0, 0.1, other[1:-1].shape)  # ends stay at rest
        assert snap_cost(_hermite(WAYPOINTS, DURATIONS, other)) > best


def test_well_conditioned_for_extreme_durations() -> None:
    s = min_snap(WAYPOINTS, [0.01, 100.0, 0.05, 3.0, 1.0])
    np.testing.assert_allclose(s.evaluate(s.knot_times), WAYPOINTS, atol=1e-8)


def test_feasibility_flags_fast_and_accepts_slow() -> None:
    limits = QuadLimits()
    slow = feasibility(min_snap(WAYPOINTS, DURATIONS * 2), limits)
    fast = feasibility(min_snap(WAYPOINTS, DURATIONS * 0.4), limits)
    assert slow.feasible and slow.margin > 0 and slow.max_thrust < limits.max_total_thrust
    assert not fast.feasible and fast.margin < 0
    assert fast.max_thrust > slow.max_thrust and fast.max_body_rate > slow.max_body_rate
    # Hover-like: thrust near m g.
    hover = feasibility(min_snap([[0, 0, 1], [0.01, 0, 1]], [10.0]), limits)
    assert hover.max_thrust == pytest.approx(limits.mass * limits.gravity, rel=1e-3)


def test_feasibility_height_limit() -> None:
    # A sharp reversal after a long segment swings the path below the waypoints; time scaling keeps the shape.
    w = [[0, 0, 1.0], [3, 0, 1.0], [0, 0, 1.6]]
    rep = feasibility(min_snap(w, [6.0, 1.0]), QuadLimits())
    assert rep.feasible and rep.min_z < 0.95
    assert not feasibility(min_snap(w, [6.0, 1.0]), QuadLimits(min_height=rep.min_z + 0.05)).feasible
    assert feasibility(min_snap(w, [6.0, 1.0]), QuadLimits(min_height=rep.min_z - 0.05)).feasible
    assert not feasibility(min_snap(w, [12.0, 2.0]), QuadLimits(min_height=rep.min_z + 0.05)).feasible


def test_feasibility_is_fast() -> None:
    import time

    limits = QuadLimits()
    s = min_snap(WAYPOINTS, DURATIONS)
    start = time.perf_counter()
    for _ in range(200):
        feasibility(min_snap(WAYPOINTS, DURATIONS), limits)
    per_call = (time.perf_counter() - start) / 200
    assert per_call < 5e-3, per_call  # ~0.2 ms on a free core; loose for loaded CI machines
    assert feasibility(s, limits).feasible


def _reference_feasibility(spline: PolySpline, limits: QuadLimits, dt: float) -> tuple[float, ...]:
    """The check written the direct way (project the jerk off the body axis): what the fast one must equal."""
    t = np.append(np.arange(0.0, spline.total_time, dt), spline.total_time)
    pos, acc, jerk = (spline.evaluate(t, r) for r in (0, 2, 3))
    acc[:, 2] += limits.gravity
    norm = np.linalg.norm(acc, axis=1)
    zb = acc / norm[:, None]
    rate = np.linalg.norm(jerk - np.sum(jerk * zb, axis=1, keepdims=True) * zb, axis=1) / norm
    tilt = np.arccos(np.clip(zb[:, 2], -1.0, 1.0)).max()
    return limits.mass * norm.max(), limits.mass * norm.min(), rate.max(), tilt, pos[:, 2].min()


def _random_sets(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sets = []
    for i in range(n):
        w = rng.uniform([-2, -2, 1.0], [2, 2, 2.5], (int(rng.integers(3, 7)), 3))
        if i % 4 == 0:
            w[:, 2] = rng.uniform(0.2, 0.5, len(w))  # near the floor: the blend branch
        sets.append(w)
    return sets


def test_feasibility_matches_the_direct_formulas() -> None:
    limits = QuadLimits(max_tilt=0.6, min_height=0.1)
    for w in _random_sets(1, 12):
        for scale in (0.4, 1.0, 2.0):
            s = min_snap(w, np.linalg.norm(np.diff(w, axis=0), axis=1) * scale)
            rep = feasibility(s, limits)
            ref = _reference_feasibility(s, limits, 0.01)
            got = (rep.max_thrust, rep.min_thrust, rep.max_body_rate, rep.max_tilt, rep.min_z)
            np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)


def test_derivatives_of_unsorted_times_match_sorted(spline: PolySpline) -> None:
    t = np.random.default_rng(0).uniform(-1.0, spline.total_time + 1.0, 200)
    order = np.argsort(t)
    np.testing.assert_allclose(spline.derivatives(t, (0, 1, 3))[:, order], spline.derivatives(t[order], (0, 1, 3)),
                               atol=1e-9)
    for i, ti in enumerate(t[:20]):
        seg = min(int(np.searchsorted(spline.knot_times, np.clip(ti, 0, spline.total_time), side="right")) - 1, 4)
        local = np.clip(ti, 0, spline.total_time) - spline.knot_times[seg]
        np.testing.assert_allclose(spline.evaluate(t, 2)[i], _poly_at(spline, seg, local, 2), atol=1e-9)


def _serial_heuristic(w: np.ndarray, limits: QuadLimits, **kw: float) -> np.ndarray:
    """The heuristic's stretch loop as first written: re-solve and re-check after every 15 % step."""
    trap = heuristic_durations(w, limits, ensure_feasible=False, **kw)
    d = trap
    for blend in (0.0, 0.5, 1.0):
        d = (1.0 - blend) * trap + blend * trap.mean()
        for _ in range(40):
            report = feasibility(min_snap(w, d), limits)
            if report.feasible:
                return d
            if limits.min_height is not None and report.min_z < limits.min_height:
                break
            d = d * 1.15
    return d


def test_heuristic_equals_the_serial_stretch_loop() -> None:
    # Hard accelerations make most sets need several stretches; the floor makes some need the blend.
    limits = QuadLimits(min_height=0.1)
    stretched = 0
    for kw in ({}, {"speed": 3.0, "accel_fraction": 1.5}):
        for w in _random_sets(2, 40):
            got = heuristic_durations(w, limits, **kw)
            np.testing.assert_array_equal(got, _serial_heuristic(w, limits, **kw))
            stretched += got.sum() > 1.2 * heuristic_durations(w, limits, ensure_feasible=False, **kw).sum()
    assert stretched >= 10, stretched  # sets needing two or more stretches


def test_scaled_margins_track_the_check_of_the_scaled_plan() -> None:
    limits = QuadLimits(max_tilt=0.8)
    fast = min_snap(WAYPOINTS, DURATIONS * 0.4)
    scales = np.array([1.0, 1.3, 1.7, 2.5, 4.0])
    got = scaled_margins(fast, scales, limits)
    want = [feasibility(time_scaled(fast, k), limits).margin for k in scales]
    np.testing.assert_allclose(got, want, atol=0.02)  # other samples of the same path: close, not equal
    assert got[0] == pytest.approx(feasibility(fast, limits).margin, abs=1e-12)
    assert got[0] < 0 < got[-1] and np.all(np.diff(got) > 0)


@pytest.mark.parametrize(
    ("waypoints", "kwargs", "message"),
    [
        ([[0, 0, 1]], {}, "at least 2 waypoints"),
        ([[0, 0, 1], [0, 0, 1], [1, 0, 1]], {}, "waypoints 0 and 1 are 0 m apart"),
        ([[0, 0, 1], [np.nan, 0, 1]], {}, "waypoint 1 is not finite"),
        ([[0, 0, 1], [1, np.inf, 1]], {}, "waypoint 1 is not finite"),
        ([[0, 0, i] for i in range(8)], {"max_count": 6}, "got 8 waypoints but at most 6"),
        ([0, 0, 1], {}, r"\(n, 3\) array"),
        ([[0, 0], [1, 1]], {}, r"got shape \(2, 2\)"),
        ([["a", 0, 1], [1, 1, 1]], {}, "array of numbers"),
    ],
)
def test_bad_waypoints_raise_clear_errors(waypoints: object, kwargs: dict, message: str) -> None:
    with pytest.raises(TrajectoryError, match=message):
        check_waypoints(waypoints, **kwargs)
    assert issubclass(TrajectoryError, ValueError)


def test_bad_durations_raise() -> None:
    with pytest.raises(TrajectoryError, match="one duration per segment"):
        min_snap(WAYPOINTS, [1.0, 1.0])
    with pytest.raises(TrajectoryError, match="finite and positive"):
        min_snap(WAYPOINTS, [1.0, -1.0, 1.0, 1.0, 1.0])
    with pytest.raises(TrajectoryError, match="at least 2 waypoints"):
        min_snap([[0, 0, 0]], [])


def test_imports_without_torch_mujoco_scipy() -> None:
    probe = ("import sys, s2r.real.trajectory as t; t.min_snap([[0,0,1],[1,0,1]], [1.0]); "
             "bad = [m for m in ('torch', 'mujoco', 'scipy', 's2r.sim') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
