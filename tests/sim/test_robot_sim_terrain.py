"""The sim robot behind the ROS bridge on the curriculum terrain: the training heightfield, a spawn on the named
tile with the feet on the ground, and one-sentence refusals of a bad level, type or task."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from s2r.sim import make, task_config
from s2r.sim.robot_sim import RobotSim, RobotSimConfig

TASK = "Go1-Velocity-Terrain"
FEET = ("FR_foot", "FL_foot", "RR_foot", "RL_foot")


def feet_above_ground(sim: RobotSim) -> np.ndarray:
    """Height of each foot geom's lowest point above the terrain right under it (m)."""
    m, d = sim.model, sim.data
    ids = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, f) for f in FEET]
    pos = np.array([d.geom_xpos[i] for i in ids])
    radius = np.array([m.geom_size[i][0] for i in ids])
    return pos[:, 2] - radius - sim.ground_height(pos[:, :2])


@pytest.mark.parametrize(("kind", "level"), [("stairs_up", 4), ("slope_down", 7), ("stepping_gaps", 4)])
def test_robot_stands_on_the_named_tile_of_the_training_heightfield(kind: str, level: int) -> None:
    sim = RobotSim(RobotSimConfig(task=TASK, terrain_level=level, terrain_type=kind, settle_s=0.5))
    env = make(TASK, 1, cfg=task_config(TASK, {"backend.num_threads": 1}))
    try:
        # The same heightfield as training: identical vertex heights, placed at the same world pose.
        np.testing.assert_array_equal(sim.model.hfield_data, env.model.hfield_data)
        gid = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_GEOM, "terrain")
        np.testing.assert_array_equal(sim.model.geom_pos[gid], env.model.geom_pos[gid])
        centre = env.grid.tile_centre(np.array([level]), np.array([env.cfg.grid.types.index(kind)]))[0]
    finally:
        env.close()
    pos, quat = sim.base_pose()
    assert sim.tile == (level, task_config(TASK).grid.types.index(kind))
    np.testing.assert_allclose(pos[:2], centre, atol=0.15)  # its centre (landing shifts the trunk ~0.1 m)
    ground = float(sim.ground_height(pos[None, :2])[0])
    # These tiles' centres lie far from height 0 (pits and hills) or on a flat platform: a spawn that ignored
    # the heightfield would float or sink; standing, the trunk is ~0.25 m above the local ground.
    assert 0.2 < pos[2] - ground < 0.32, (pos, ground)
    assert 1 - 2 * (quat[1] ** 2 + quat[2] ** 2) > 0.98  # upright
    gap = feet_above_ground(sim)
    assert np.all(np.abs(gap) < 0.01), gap  # every foot rests on the heightfield


def test_stairs_tile_centre_is_below_the_flat_border() -> None:
    """The level matters: the middle stairs-up tile's centre is a pit far below the map's zero height."""
    sim = RobotSim(RobotSimConfig(task=TASK, terrain_level=4, terrain_type="stairs_up", settle_s=0.2))
    pos, _ = sim.base_pose()
    assert pos[2] < -0.2


def test_defaults_are_the_middle_level_rough_tile() -> None:
    sim = RobotSim(RobotSimConfig(task=TASK, settle_s=0.2))
    grid = task_config(TASK).grid
    assert sim.tile == (grid.levels // 2, grid.types.index("rough"))
    fixed = RobotSim(RobotSimConfig(task=TASK, settle_s=0.0), task_config(TASK, {"curriculum.fixed_level": 2}))
    assert fixed.tile[0] == 2


@pytest.mark.parametrize(("over", "match"), [
    ({"terrain_level": 8}, r"terrain_level 8 is outside 'Go1-Velocity-Terrain''s grid of 8 levels; pick 0\.\.7"),
    ({"terrain_type": "lava"}, r"terrain_type 'lava' is not a tile type of .*; pick one of slope_up"),
    ({"task": "Go1-Velocity-Flat", "terrain_level": 3}, r"need a curriculum-terrain task .* 'Go1-Velocity-Flat' has no"),
])
def test_bad_tile_is_refused_in_one_sentence(over: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RobotSim(RobotSimConfig(**{"task": TASK, **over}))


def test_flat_apron_beyond_the_map_edge() -> None:
    """Past the map's edge the ground goes on flat at height 0 (a robot walking off the map is not a fall)."""
    grid = task_config(TASK).grid
    # Level 0's centre is 4 m from the map's -x edge: 6 m further back is 2 m out on the apron.
    sim = RobotSim(RobotSimConfig(task=TASK, terrain_level=0, terrain_type="slope_up", spawn_xy=(-6.0, 0.0),
                                  settle_s=0.5))
    pos, quat = sim.base_pose()
    edge = -(grid.levels * grid.tile_size / 2 + grid.border)
    assert pos[0] < edge - 1.5
    assert 0.2 < pos[2] < 0.32 and 1 - 2 * (quat[1] ** 2 + quat[2] ** 2) > 0.98, pos  # standing on z = 0
    assert np.all(np.abs(feet_above_ground(sim)) < 0.01)
