"""planner_node over real DDS: a Path in, a sampled minimum-snap trajectory and a JSON status out; bad or
unflyable waypoints publish no trajectory and a status saying why; the quadrotor manifest starts it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path as PathMsg
from rclpy.node import Node
from rclpy.parameter import Parameter
from s2r_ros.common import qos
from s2r_ros.deploy import Deployment
from s2r_ros.manifest import load_manifest, node_list
from s2r_ros.planner_node import PARAMS, PlannerNode, yaw_along
from std_msgs.msg import String
from trajectory_msgs.msg import MultiDOFJointTrajectory

from tests.planner_files import write_planner
from tests.ros.conftest import REPO, Ros, Spinner, wait_for

LAUNCH = REPO / "launch"
WAYPOINTS = np.array([[0.0, 0.0, 1.0], [1.5, 0.5, 1.5], [2.0, -1.0, 1.2], [0.5, -1.5, 2.0]])


@pytest.fixture(scope="module")
def planner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_planner(tmp_path_factory.mktemp("planner") / "run")


class Operator(Node):
    """Sends waypoint lists and keeps every trajectory and status that comes back."""

    def __init__(self, context: object, ns: str = "") -> None:
        super().__init__("operator", context=context)
        self.pub = self.create_publisher(PathMsg, f"{ns}/waypoints", qos("reliable", 10))
        self.trajectories: list[MultiDOFJointTrajectory] = []
        self.statuses: list[dict] = []
        self.create_subscription(MultiDOFJointTrajectory, f"{ns}/trajectory", self.trajectories.append,
                                 qos("reliable", 10))
        self.status_sub = self.create_subscription(String, f"{ns}/planner_status",
                                                   lambda m: self.statuses.append(json.loads(m.data)), qos("reliable", 10))

    def send(self, points: np.ndarray, frame: str = "map") -> None:
        msg = PathMsg()
        msg.header.frame_id = frame
        for p in np.asarray(points, dtype=float).reshape(-1, 3):
            pose = PoseStamped()
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in p)
            msg.poses.append(pose)
        self.pub.publish(msg)

    def linked(self) -> bool:
        """The planner listens to us and we hear its status (discovery is complete both ways)."""
        return self.pub.get_subscription_count() > 0 and self.status_sub.get_publisher_count() > 0


def translations(msg: MultiDOFJointTrajectory) -> np.ndarray:
    return np.array([[p.transforms[0].translation.x, p.transforms[0].translation.y, p.transforms[0].translation.z]
                     for p in msg.points])


def times(msg: MultiDOFJointTrajectory) -> np.ndarray:
    return np.array([p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points])


@pytest.fixture
def link(ros: Ros, planner_dir: Path):
    """(operator, planner node) spinning together; the planner's parameters from `make(**params)`."""
    made = []

    def make(**params: object) -> tuple[Operator, PlannerNode]:
        overrides = {"policy_dir": str(planner_dir), **params}
        node = PlannerNode(context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        op = Operator(ros.context)
        made.extend([Spinner(ros.context, node, op), node, op])
        wait_for(op.linked, 10, "discovery between the operator and the planner")
        return op, node

    yield make
    made[0].close()
    for n in made[1:]:
        n.destroy_node()


def test_path_becomes_a_trajectory_through_the_waypoints(link) -> None:
    op, _ = link(sample_dt=0.05, yaw="path")
    op.send(WAYPOINTS)
    wait_for(lambda: op.trajectories and op.statuses, 10, "a trajectory and a status")
    traj, status = op.trajectories[0], op.statuses[0]
    assert status["feasible"] and status["published"] and status["waypoints"] == 4, status
    assert status["plan_ms"] > 0 and isinstance(status["stretched"], bool) and status["message"]
    assert traj.header.frame_id == "map" and traj.joint_names == ["base_link"]
    pos, t = translations(traj), times(traj)
    np.testing.assert_allclose(pos[0], WAYPOINTS[0], atol=1e-6)
    np.testing.assert_allclose(pos[-1], WAYPOINTS[-1], atol=1e-6)
    assert np.all(np.diff(t) > 0) and t[0] == 0.0 and t[-1] == pytest.approx(status["total_time"], abs=1e-9)
    assert np.allclose(np.diff(t)[:-1], 0.05, atol=1e-9)  # every sample_dt, then the exact end
    # The plan id is the trajectory's stamp in ns; the status carries the plan that a flight log pairs with.
    assert status["plan_id"] == traj.header.stamp.sec * 1_000_000_000 + traj.header.stamp.nanosec > 0
    plan = status["plan"]
    assert plan["id"] == status["plan_id"] and np.allclose(plan["waypoints"], WAYPOINTS)
    assert len(plan["durations"]) == 3 and sum(plan["durations"]) == pytest.approx(status["total_time"])
    op.send(WAYPOINTS)
    wait_for(lambda: len(op.statuses) > 1, 10, "a second status")
    assert op.statuses[1]["plan_id"] > status["plan_id"]  # one id per published plan
    # Every waypoint lies on the sampled path (the samples are 5 cm of time apart, so within a few cm).
    gaps = np.linalg.norm(pos[None, :, :] - WAYPOINTS[:, None, :], axis=2).min(axis=1)
    assert gaps.max() < 0.1
    first, last = traj.points[0], traj.points[-1]
    for p in (first, last):  # rest to rest
        v, a = p.velocities[0].linear, p.accelerations[0].linear
        assert np.allclose([v.x, v.y, v.z, a.x, a.y, a.z], 0.0, atol=1e-6)
    # yaw "path": unit quaternions about z, heading along the horizontal velocity where it moves.
    mid = traj.points[len(traj.points) // 4]
    q, v = mid.transforms[0].rotation, mid.velocities[0].linear
    assert q.x == q.y == 0.0 and q.z**2 + q.w**2 == pytest.approx(1.0)
    assert 2 * np.arctan2(q.z, q.w) == pytest.approx(np.arctan2(v.y, v.x), abs=1e-6)


def test_bad_or_unflyable_waypoints_publish_no_trajectory(link) -> None:
    op, _ = link()
    cases = [
        (WAYPOINTS[:1], "rejected waypoints: need at least 2 waypoints to plan a trajectory; got 1"),
        (np.array([[0.0, 0.0, 1.0], [np.nan, 0.0, 1.0]]), "rejected waypoints: waypoint 1 is not finite"),
        (np.tile(WAYPOINTS, (2, 1)), "rejected waypoints: got 8 waypoints but at most 6 are allowed"),
        (np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.05], [2.0, 0.0, 1.0]]), "below min_height 0.1 m"),
    ]
    for i, (points, reason) in enumerate(cases):
        op.send(points)
        wait_for(lambda i=i: len(op.statuses) > i, 10, f"the status of bad case {i}")
        status = op.statuses[i]
        assert not status["feasible"] and not status["published"] and reason in status["message"], status
        assert status["plan_id"] is None and "plan" not in status
    assert "do not fly it" in op.statuses[-1]["message"]
    op.send(WAYPOINTS)  # the node is still serving: the next good Path gets its trajectory
    # Trajectory and status are two topics: DDS orders messages within a topic only, so wait for both.
    wait_for(lambda: op.trajectories and len(op.statuses) > len(cases), 10, "a trajectory and its status after the bad ones")
    assert len(op.trajectories) == 1 and op.statuses[-1]["published"]


def test_yaw_holds_the_last_heading_when_stopped() -> None:
    vel = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.01, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(yaw_along(vel), [np.pi / 2, np.pi / 2, np.pi / 2, np.pi, np.pi])
    assert np.all(yaw_along(np.zeros((3, 3))) == 0.0)


def test_quadrotor_manifest_node_list() -> None:
    m = load_manifest(LAUNCH / "quadrotor.yaml")
    nodes = node_list(m, {"policy": "/runs/q/policy.onnx", "yaw": "path"}, {"planner.sample_dt": "0.05"})
    assert [n.name for n in nodes] == ["planner"]
    p = nodes[0].parameters
    assert nodes[0].executable == "planner_node" and nodes[0].package == "s2r_ros" and not nodes[0].lifecycle
    assert p["policy_dir"] == "/runs/q/policy.onnx" and p["yaw"] == "path" and p["sample_dt"] == 0.05
    assert p["frame_id"] == "world" and p["max_stretch"] == 4.0 and p["min_margin"] == 0.0
    assert set(p) <= set(PARAMS)  # no misspelt parameters
    src = (LAUNCH / "quadrotor.launch.py").read_text()
    assert [n.name for n in ast.parse(src).body if isinstance(n, ast.FunctionDef)] == ["generate_launch_description"]
    assert '"quadrotor.yaml"' in src and "describe(" in src
    setup = (REPO / "ros_ws" / "src" / "s2r_ros" / "setup.py").read_text()
    assert '"planner_node"' in setup  # the console script `ros2 run s2r_ros planner_node` needs
    out = subprocess.run([sys.executable, "-m", "s2r.policies.cli", "deploy", "--manifest", str(LAUNCH / "quadrotor.yaml"),
                          "--policy", "p.onnx", "--dry-run"], capture_output=True, text=True, check=True)
    assert "-m s2r_ros.planner_node --ros-args -r __node:=planner" in out.stdout


def test_deployed_from_the_manifest(ros: Ros, planner_dir: Path, tmp_path: Path) -> None:
    """`s2r deploy`'s machinery starts the node as its own process; a bad policy stops it with one line."""
    m = load_manifest(LAUNCH / "quadrotor.yaml")
    op = Operator(ros.context)
    spinner = Spinner(ros.context, op)
    try:
        with Deployment(node_list(m, {"policy": str(planner_dir / "policy.onnx")}), tmp_path / "logs",
                        env={"ROS_DOMAIN_ID": str(ros.domain_id)}) as d:
            wait_for(lambda: op.linked() or d.failed(), 20, "the deployed planner")
            assert not d.failed(), (tmp_path / "logs" / "planner.log").read_text()
            op.send(WAYPOINTS, frame="")
            wait_for(lambda: op.trajectories, 10, "a trajectory from the deployed planner")
        assert op.trajectories[0].header.frame_id == "world"  # the manifest's frame for an unframed Path
        np.testing.assert_allclose(translations(op.trajectories[0])[-1], WAYPOINTS[-1], atol=1e-6)
    finally:
        spinner.close()
        op.destroy_node()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "policy.json").write_text("{}")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "s2r_ros.planner_node", "--ros-args", "-p", f"policy_dir:={bad}"],
                          capture_output=True, text=True, env=ros.env, timeout=30)
    assert proc.returncode == 2 and time.monotonic() - t0 < 30
    assert "schema_version" in proc.stderr and str(bad / "policy.json") in proc.stderr
