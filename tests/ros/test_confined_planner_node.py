"""confined_planner_node over real DDS: a voxel map file and a goal in, nav_msgs/Path waypoints out on the
first odometry, a re-plan only when the odometry strays, statuses that say why for bad goals, one-line errors
for a bad map file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMsg
from rclpy.node import Node
from rclpy.parameter import Parameter
from s2r.real.confined_planner import distance_to_polyline, save_voxel_map
from s2r_ros.common import qos
from s2r_ros.confined_planner_node import PARAMS, ConfinedPlannerNode
from s2r_ros.deploy import Deployment
from s2r_ros.manifest import load_manifest, node_list
from std_msgs.msg import String

from tests.ros.conftest import REPO, Ros, Spinner, wait_for

RES = 0.05


@pytest.fixture(scope="module")
def map_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 m x 3 m room with a wall across it, open only at y > 2.2 (the grid starts at (1, 0, 0))."""
    occ = np.zeros((120, 60, 20), dtype=bool)
    occ[[0, -1]] = True
    occ[:, [0, -1]] = True
    occ[58:62, :44] = True  # x in [2.9, 3.1] (grid), y < 2.2
    path = tmp_path_factory.mktemp("confined") / "room.npz"
    save_voxel_map(str(path), occ, RES, (1.0, 0.0, 0.0))
    return path


class Robot(Node):
    """Publishes odometry and goals; keeps every path and status that comes back."""

    def __init__(self, context: object) -> None:
        super().__init__("robot", context=context)
        self.odom = self.create_publisher(Odometry, "odom", qos("best_effort", 10))
        self.goal = self.create_publisher(PoseStamped, "goal", qos("reliable", 10))
        self.paths: list[PathMsg] = []
        self.statuses: list[dict] = []
        self.path_sub = self.create_subscription(PathMsg, "path", self.paths.append, qos("reliable", 10))
        self.status_sub = self.create_subscription(String, "planner_status",
                                                   lambda m: self.statuses.append(json.loads(m.data)), qos("reliable", 10))

    def at(self, x: float, y: float) -> None:
        msg = Odometry()
        msg.pose.pose.position.x, msg.pose.pose.position.y = x, y
        self.odom.publish(msg)

    def go_to(self, x: float, y: float) -> None:
        msg = PoseStamped()
        msg.pose.position.x, msg.pose.position.y = x, y
        self.goal.publish(msg)

    def linked(self) -> bool:
        # Both ways, paths included: a path sent before its subscription matched is lost (volatile durability),
        # and the planner sends the next one only on a new goal or a stray.
        return (self.odom.get_subscription_count() > 0 and self.goal.get_subscription_count() > 0
                and self.status_sub.get_publisher_count() > 0 and self.path_sub.get_publisher_count() > 0)


@pytest.fixture
def link(ros: Ros, map_file: Path):
    made = []

    def make(**params: object) -> tuple[Robot, ConfinedPlannerNode]:
        overrides = {"map_file": str(map_file), **params}
        node = ConfinedPlannerNode(context=ros.context,
                                   parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        robot = Robot(ros.context)
        made.extend([Spinner(ros.context, node, robot), node, robot])
        wait_for(robot.linked, 10, "discovery between the robot and the planner")
        return robot, node

    yield make
    made[0].close()
    for n in made[1:]:
        n.destroy_node()


def points(msg: PathMsg) -> np.ndarray:
    return np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in msg.poses])


def test_odometry_gets_a_path_around_the_wall_and_a_replan_only_when_it_strays(link) -> None:
    robot, node = link(goal=[6.5, 0.5, 0.0])
    robot.at(1.5, 0.5)
    wait_for(lambda: robot.paths and robot.statuses, 10, "a path and a status")
    msg, status = robot.paths[0], robot.statuses[0]
    assert status["ok"] and not status["replan"] and status["waypoints"] == len(msg.poses) > 5, status
    assert msg.header.frame_id == "map" and status["crouch"] == [False] * len(msg.poses)
    wp = points(msg)
    np.testing.assert_allclose(wp[-1, :2], (6.5, 0.5), atol=RES)
    assert wp[:, 1].max() > 2.3  # through the opening beyond the wall's end at y = 2.2
    np.testing.assert_allclose(wp[:, 2], node.planner.cfg.stand_body_z)
    # Poses face along the path.
    q = msg.poses[0].pose.orientation
    d = wp[1] - wp[0]
    assert 2 * math.atan2(q.z, q.w) == pytest.approx(math.atan2(d[1], d[0]), abs=1e-6)
    # On the path: no new plan. 1 m off it: a re-plan from there.
    robot.at(*wp[3, :2])
    robot.at(*wp[4, :2])
    stray = np.array([6.5, 2.6])  # far from the path, which meets the goal from the opening near (3, 2.5)
    assert distance_to_polyline(stray, node.path.polyline) > node.planner.cfg.stray_distance + 0.3
    robot.at(*stray)
    wait_for(lambda: len(robot.paths) > 1, 10, "a re-planned path")
    assert len(robot.paths) == 2 and robot.statuses[1]["replan"] and robot.statuses[1]["ok"]
    assert np.hypot(*(node.path.polyline[0] - stray)) < RES
    assert len(robot.paths[1].poses) < len(msg.poses)  # from the far end: a shorter way to the goal


def test_bad_goals_say_why_and_a_good_one_plans(link) -> None:
    robot, _ = link()
    robot.at(1.5, 0.5)
    robot.go_to(4.0, 1.0)  # inside the wall
    wait_for(lambda: robot.statuses, 10, "a status for the goal in the wall")
    assert not robot.statuses[0]["ok"] and "is inside or too close to an obstacle" in robot.statuses[0]["message"]
    robot.go_to(40.0, 1.0)
    wait_for(lambda: len(robot.statuses) > 1, 10, "a status for the goal off the map")
    assert "outside the map (x in [1, 7], y in [0, 3])" in robot.statuses[1]["message"]
    assert robot.paths == []
    robot.go_to(6.0, 1.0)
    wait_for(lambda: robot.paths, 10, "a path to the good goal")
    assert robot.statuses[-1]["ok"]


def test_bad_map_file_or_goal_parameter_stops_the_node_with_one_sentence(ros: Ros, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.zeros(3))
    cases = [({"map_file": ""}, "parameter map_file is empty"),
             ({"map_file": str(tmp_path / "none.npz")}, "none.npz cannot be read"),
             ({"map_file": str(bad)}, "lacks ['occupancy_bits', 'origin', 'resolution', 'shape']")]
    for params, message in cases:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            ConfinedPlannerNode(context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def test_deployed_from_the_manifest(ros: Ros, map_file: Path, tmp_path: Path) -> None:
    """`s2r deploy`'s machinery starts the node from launch/confined.yaml as its own process."""
    m = load_manifest(REPO / "launch" / "confined.yaml")
    nodes = node_list(m, {"map_file": str(map_file), "goal": "[6.5, 0.5, 0.0]"})
    assert [n.executable for n in nodes] == ["confined_planner_node"]
    assert set(nodes[0].parameters) <= set(PARAMS)  # no misspelt parameters
    assert "confined_planner_node" in (REPO / "ros_ws" / "src" / "s2r_ros" / "setup.py").read_text()
    robot = Robot(ros.context)
    spinner = Spinner(ros.context, robot)
    try:
        with Deployment(nodes, tmp_path / "logs", env={"ROS_DOMAIN_ID": str(ros.domain_id)}) as d:
            wait_for(lambda: robot.linked() or d.failed(), 20, "the deployed planner")
            assert not d.failed(), (tmp_path / "logs" / "confined_planner.log").read_text()
            wait_for(lambda: robot.at(1.5, 0.5) or robot.paths, 10, "a path from the deployed planner")
            np.testing.assert_allclose(points(robot.paths[0])[-1, :2], (6.5, 0.5), atol=RES)
    finally:
        spinner.close()
        robot.destroy_node()
