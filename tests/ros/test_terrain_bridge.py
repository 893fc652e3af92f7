"""The ROS sim bridge on the curriculum terrain: it loads the training heightfield, stands the robot on the
named tile (odometry reports a base ~0.25 m above that tile's ground), and refuses a level outside the grid."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.parameter import Parameter
from s2r.sim import task_config
from s2r.sim.terrain.curriculum import build_grid
from s2r_ros.sim_bridge_node import SimBridge

from tests.ros.conftest import Ros, Spinner, wait_for

TASK = "Go1-Velocity-Terrain"


def bridge(ros: Ros, **params: object) -> SimBridge:
    over = {"task": TASK, "lockstep": True, "settle_s": 0.5, **params}
    return SimBridge(context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in over.items()])


def test_bridge_stands_the_robot_on_the_named_terrain_tile(ros: Ros) -> None:
    node = bridge(ros, terrain_level=4, terrain_type="stairs_up")
    sub = Node("terrain_odom", context=ros.context)
    got: list[np.ndarray] = []
    lock = threading.Lock()

    def on_odom(m: Odometry) -> None:
        with lock:
            got.append(np.array([m.pose.pose.position.x, m.pose.pose.position.y, m.pose.pose.position.z]))

    sub.create_subscription(Odometry, "/odom", on_odom, 10)
    spin = Spinner(ros.context, node, sub)
    try:
        wait_for(lambda: got, 10, "odometry from the terrain sim bridge")  # lockstep re-publishes the held state
    finally:
        spin.close()
    pos = got[-1]
    grid = build_grid(task_config(TASK).grid)
    centre = grid.tile_centre(np.array([4]), np.array([grid.cfg.types.index("stairs_up")]))[0]
    ground = float(grid.height_at(pos[None, :2])[0])
    assert np.hypot(*(pos[:2] - centre)) < 0.15  # on the middle stairs-up tile
    assert ground < -0.4  # its centre is the bottom of a pit of stairs: a flat floor would stand it at 0
    assert 0.2 < pos[2] - ground < 0.32, (pos, ground)  # standing on the steps, not floating or sunk
    for n in (sub, node):
        n.destroy_node()


def test_bridge_refuses_a_level_outside_the_grid(ros: Ros) -> None:
    with pytest.raises(ValueError, match=r"terrain_level 9 is outside 'Go1-Velocity-Terrain''s grid of 8 levels"):
        bridge(ros, terrain_level=9)
