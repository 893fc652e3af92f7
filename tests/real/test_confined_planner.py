"""The confined-space planner on hand-built voxel maps: around walls, never through them, crouch costs,
re-planning from a strayed position, and one-sentence errors for bad maps, starts and goals."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
from s2r.real.confined_planner import (
    ConfinedPlanError,
    ConfinedPlanner,
    ConfinedPlannerConfig,
    UnreachableGoal,
    distance_to_polyline,
)

RES = 0.05


def room(length: float = 6.0, width: float = 3.0, height: float = 1.0) -> np.ndarray:
    """An empty room with one-voxel walls all round, (nx, ny, nz) bool."""
    occ = np.zeros((round(length / RES), round(width / RES), round(height / RES)), dtype=bool)
    occ[[0, -1]] = True
    occ[:, [0, -1]] = True
    return occ


def box(occ: np.ndarray, lo: tuple[float, float, float], hi: tuple[float, float, float]) -> None:
    """Fill the voxels whose centres lie in [lo, hi] (metres, grid frame)."""
    i0 = [int(np.ceil(v / RES - 0.5)) for v in lo]
    i1 = [int(np.floor(v / RES - 0.5)) + 1 for v in hi]
    occ[i0[0]:i1[0], i0[1]:i1[1], i0[2]:i1[2]] = True


def samples(points: np.ndarray, step: float = 0.01) -> np.ndarray:
    """Points every `step` m along a polyline (k, 2)."""
    out = [points[0]]
    for a, b in itertools.pairwise(points):
        n = max(1, int(np.ceil(np.hypot(*(b - a)) / step)))
        out.append(a + np.linspace(0, 1, n + 1)[1:, None] * (b - a))
    return np.vstack(out)


def free_at(occ: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Whether the column under each point is free from the ground to 0.3 m."""
    ij = np.floor(xy / RES).astype(int)
    return ~occ[ij[:, 0], ij[:, 1], : round(0.3 / RES)].any(1)


def test_goes_around_a_wall_through_the_gap_and_never_through_walls() -> None:
    occ = room()
    box(occ, (2.9, 0.0, 0.0), (3.1, 2.2, 1.0))  # a wall across the room, open for y > 2.2
    p = ConfinedPlanner(occ, RES, (0.0, 0.0, 0.0))
    path = p.plan((0.5, 0.5, 0.0), (5.5, 0.5, 0.0))
    # The only way is through y in (2.2, 2.95): the path rises above the wall's end.
    assert path.polyline[:, 1].max() > 2.2 + 0.15
    dense = samples(path.polyline)
    assert free_at(occ, dense).all()
    # The body's footprint (0.2 m) keeps clear of every wall voxel along the whole path.
    wall = np.argwhere(occ[:, :, 0]) * RES + RES / 2
    gaps = np.sqrt(((dense[:, None, :] - wall[None]) ** 2).sum(-1)).min(1)
    assert gaps.min() >= p.cfg.body_radius - RES
    # Waypoints at most waypoint_spacing apart along the path (chords are shorter only at corners), the last
    # one on the goal, with a standing body height.
    step = np.hypot(*np.diff(path.waypoints[:, :2], axis=0).T)
    assert step.max() <= p.cfg.waypoint_spacing + 1e-9 and np.median(step) > 0.9 * p.cfg.waypoint_spacing
    np.testing.assert_allclose(path.waypoints[-1, :2], (5.5 + RES / 2 - 0.0, 0.5 + RES / 2), atol=RES)
    assert not path.crouch.any() and np.allclose(path.waypoints[:, 2], p.cfg.stand_body_z)
    # Shortcutting leaves few corners: far fewer than the ~150 cells of the raw path.
    assert len(path.polyline) <= 6


def _two_routes() -> np.ndarray:
    """Straight ahead under a 0.32 m ceiling (crouch only), or a detour through a tall side bay."""
    occ = room(6.0, 4.0)
    box(occ, (1.5, 0.0, 0.32), (4.5, 4.0, 1.0))  # a low ceiling over the whole middle
    box(occ, (1.5, 2.5, 0.0), (4.5, 4.0, 0.32))  # solid beyond y = 2.5
    box(occ, (1.5, 1.4, 0.0), (4.5, 1.6, 1.0))  # a wall splitting the straight route from the bay
    # Open the ceiling over the bay y in (1.6, 2.5): standing fits there.
    i0, i1 = round(1.5 / RES), round(4.5 / RES)
    occ[i0:i1, round(1.6 / RES) + 1 : round(2.5 / RES), round(0.32 / RES):] = False
    return occ


def test_crouching_costs_more_and_the_cost_decides_the_route() -> None:
    occ = _two_routes()
    start, goal = (0.5, 0.7, 0.0), (5.5, 0.7, 0.0)
    crouchy = ConfinedPlanner(occ, RES, (0, 0, 0), ConfinedPlannerConfig(crouch_cost=1.0)).plan(start, goal)
    assert crouchy.crouch.any()  # the straight route under the ceiling
    assert crouchy.polyline[:, 1].max() < 1.4
    assert np.allclose(crouchy.waypoints[crouchy.crouch, 2], ConfinedPlannerConfig().crouch_body_z)
    detour = ConfinedPlanner(occ, RES, (0, 0, 0), ConfinedPlannerConfig(crouch_cost=4.0)).plan(start, goal)
    assert not detour.crouch.any()  # through the tall bay, longer but upright
    assert detour.polyline[:, 1].max() > 1.6
    assert detour.length > crouchy.length


def test_a_ceiling_below_crouch_height_is_unreachable_with_a_clear_error() -> None:
    occ = room()
    box(occ, (2.5, 0.0, 0.2), (3.5, 3.0, 1.0))  # 0.2 m under the ceiling: lower than a crouch
    p = ConfinedPlanner(occ, RES, (0, 0, 0))
    with pytest.raises(UnreachableGoal, match=r"no walkable path from start .* crouch_height 0.28 m"):
        p.plan((0.5, 1.5, 0.0), (5.5, 1.5, 0.0))


def test_step_height_limits_where_the_body_can_go() -> None:
    occ = room()
    box(occ, (3.0, 0.0, 0.0), (6.0, 3.0, 0.1))  # a 0.1 m step up to a raised floor
    p = ConfinedPlanner(occ, RES, (0, 0, 0))
    path = p.plan((0.5, 1.5, 0.0), (5.0, 1.5, 0.0))
    assert np.isclose(path.waypoints[-1, 2], 0.1 + p.cfg.stand_body_z)
    low = ConfinedPlanner(occ, RES, (0, 0, 0), ConfinedPlannerConfig(max_step=0.05))
    with pytest.raises(UnreachableGoal):
        low.plan((0.5, 1.5, 0.0), (5.0, 1.5, 0.0))


def test_bad_goals_starts_and_maps_are_one_sentence() -> None:
    occ = room()
    box(occ, (2.5, 0.0, 0.0), (3.5, 2.2, 1.0))  # a thick wall: its middle is beyond snap_radius of open space
    p = ConfinedPlanner(occ, RES, (1.0, 2.0, 0.0))
    with pytest.raises(ConfinedPlanError, match=r"goal \[4.0, 3.0, 0.0\] is inside or too close to an obstacle"):
        p.set_goal((4.0, 3.0, 0.0))  # grid (3.0, 1.0): inside the wall
    with pytest.raises(ConfinedPlanError, match=r"goal \[20.0, 3.0\] is outside the map \(x in \[1, 7\], y in \[2, 5\]\)"):
        p.set_goal((20.0, 3.0))
    with pytest.raises(ConfinedPlanError, match="no goal set"):
        p.plan((2.0, 3.0))
    p.set_goal((6.0, 3.0))
    with pytest.raises(ConfinedPlanError, match=r"start \[4.0, 3.0, 0.0\] is inside or too close to an obstacle"):
        p.plan((4.0, 3.0, 0.0))
    with pytest.raises(ConfinedPlanError, match="start must be a finite"):
        p.plan((np.nan, 3.0))
    with pytest.raises(ConfinedPlanError, match="occupancy must be a 3D bool array"):
        ConfinedPlanner(occ.astype(float), RES, (0, 0, 0))
    with pytest.raises(ConfinedPlanError, match="crouch_height <= stand_height"):
        ConfinedPlannerConfig(crouch_height=0.5, stand_height=0.4)
    for e in (ConfinedPlanError, UnreachableGoal):
        assert issubclass(e, ValueError)


def test_replan_only_when_strayed_and_from_where_the_robot_is() -> None:
    occ = room()
    box(occ, (2.9, 0.0, 0.0), (3.1, 2.2, 1.0))
    p = ConfinedPlanner(occ, RES, (0, 0, 0))
    path = p.plan((0.5, 0.5), (5.5, 0.5))
    on = path.waypoints[2, :2] + (0.1, 0.0)
    assert p.replan(on, path) is None
    strayed = np.array([1.0, 2.5])
    assert distance_to_polyline(strayed, path.polyline) > p.cfg.stray_distance
    new = p.replan(strayed, path)
    assert new is not None
    assert np.hypot(*(new.polyline[0] - strayed)) < RES
    np.testing.assert_allclose(new.polyline[-1], path.polyline[-1])
    # A re-plan reuses the goal's search: it costs a tree walk and the smoother, no new search.
    assert new.plan_ms < 50.0


def test_a_start_pressed_against_a_wall_snaps_to_the_nearest_walkable_cell() -> None:
    occ = room()
    p = ConfinedPlanner(occ, RES, (0, 0, 0))
    path = p.plan((0.1, 1.5), (5.0, 1.5))  # 0.05 m from the wall: inside the footprint inflation
    assert p.walkable[tuple(np.floor(path.polyline[0] / RES).astype(int))]
    assert np.hypot(*(path.polyline[0] - (0.1, 1.5))) <= p.cfg.snap_radius


def test_module_imports_without_scipy_until_it_plans() -> None:
    code = ("import sys; import s2r.real.confined_planner as c; "
            "print([m for m in ('scipy', 'torch', 'mujoco', 's2r.sim') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
