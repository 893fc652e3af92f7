"""confined_planner_node: waypoints for a legged robot through a confined 3D space, re-planned when it strays.

The map comes in as a file path parameter, `map_file`: an .npz voxel map written by
`s2r.real.confined_planner.save_voxel_map` (bit-packed occupancy, resolution, origin). A file rather than a
message: no standard ROS message carries a 3D occupancy grid (nav_msgs/OccupancyGrid is 2D), and the
project uses standard messages only. The goal is the `goal` parameter ([x, y, z]; empty: none yet) or the
latest geometry_msgs/PoseStamped on `goal_topic`. The robot's position is nav_msgs/Odometry on `odom_topic`.

With a goal and a first odometry message the node plans (Dijkstra from the goal once per goal, then a walk
down its tree) and publishes nav_msgs/Path on `path_topic`: one pose per waypoint, position x, y and the
body height the planner wants there (lower where only a crouch fits), orientation along the path. After
that, each odometry message farther than `stray_distance` from the path gets a re-plan from where the robot
is. A std_msgs/String on `status_topic` holds a JSON object per plan or failure: {"ok", "message", "plan_ms",
"waypoints", "crouch", "replan", "length"}. A bad map file or settings stop the node with one line; a bad
or unreachable goal publishes a status saying why and no path.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from s2r.real.confined_planner import (
    ConfinedPath,
    ConfinedPlanError,
    ConfinedPlanner,
    ConfinedPlannerConfig,
    distance_to_polyline,
    load_voxel_map,
)
from std_msgs.msg import String

from s2r_ros.common import declare_params, qos, run

PARAMS = {
    "map_file": "", "goal": [0.0], "frame_id": "map", "odom_topic": "odom", "goal_topic": "goal",
    "path_topic": "path", "status_topic": "planner_status", "executor": "single",
    "body_radius": 0.2, "crouch_height": 0.28, "stand_height": 0.42, "crouch_cost": 3.0,
    "waypoint_spacing": 0.4, "stray_distance": 0.5,
}


def to_path(path: ConfinedPath, frame: str, stamp: object) -> Path:
    """Waypoints as a nav_msgs/Path, each pose facing along the path (the last keeps the previous heading)."""
    wp = path.waypoints
    heading = np.arctan2(*np.diff(wp[:, 1::-1], axis=0).T) if len(wp) > 1 else np.zeros(0)
    heading = np.append(heading, heading[-1] if len(heading) else 0.0)
    msg = Path()
    msg.header.frame_id = frame
    msg.header.stamp = stamp
    for (x, y, z), yaw in zip(wp.tolist(), heading.tolist(), strict=True):
        pose = PoseStamped()
        pose.header = msg.header
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = x, y, z
        pose.pose.orientation.z, pose.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
        msg.poses.append(pose)
    return msg


class ConfinedPlannerNode(Node):
    """Voxel map (file) + goal + odometry -> waypoints (nav_msgs/Path) and a JSON status."""

    def __init__(self, name: str = "confined_planner", **kwargs: object) -> None:
        super().__init__(name, **kwargs)  # kwargs: context, parameter_overrides (tests, composition)
        p = declare_params(self, PARAMS)
        if not str(p["map_file"]):
            raise ValueError("parameter map_file is empty: give an .npz voxel map written by save_voxel_map")
        cfg = ConfinedPlannerConfig(**{k: float(p[k]) for k in ("body_radius", "crouch_height", "stand_height",
                                                                "crouch_cost", "waypoint_spacing", "stray_distance")})
        occ, res, origin = load_voxel_map(str(p["map_file"]))  # ConfinedPlanError (a ValueError) stops the node
        self.planner = ConfinedPlanner(occ, res, origin, cfg)
        self.frame_id = str(p["frame_id"])
        self.path: ConfinedPath | None = None
        self.position: np.ndarray | None = None
        self._has_goal = False
        # Reliable and latched (transient local): a path is a one-off message that a late follower must still get.
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._path_pub = self.create_publisher(Path, str(p["path_topic"]), latched)
        self._status_pub = self.create_publisher(String, str(p["status_topic"]), qos("reliable", 10))
        self.create_subscription(Odometry, str(p["odom_topic"]), self._on_odom, qos("best_effort", 10))
        self.create_subscription(PoseStamped, str(p["goal_topic"]), self._on_goal, qos("reliable", 10))
        goal = [float(v) for v in p["goal"]]
        if len(goal) in (2, 3):
            self._set_goal(np.array(goal))
        elif goal != [0.0]:
            raise ValueError(f"parameter goal must be [x, y] or [x, y, z] in metres, got {goal}")
        self.get_logger().info(f"confined planner ready: map {occ.shape} voxels at {res} m from {p['map_file']}")

    def _set_goal(self, goal: np.ndarray) -> None:
        t0 = time.perf_counter()
        try:
            self.planner.set_goal(goal)
        except ConfinedPlanError as exc:
            self._has_goal, self.path = False, None
            self._status(False, str(exc), t0)
            self.get_logger().warning(f"no path: {exc}")
            return
        self._has_goal, self.path = True, None
        if self.position is not None:
            self._plan(self.position, t0, replan=False)

    def _on_goal(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        self._set_goal(np.array([p.x, p.y, p.z]))

    def _on_odom(self, msg: Odometry) -> None:
        p = msg.pose.pose.position
        self.position = np.array([p.x, p.y, p.z])
        if not self._has_goal:
            return
        t0 = time.perf_counter()
        if self.path is None:
            self._plan(self.position, t0, replan=False)
            return
        if distance_to_polyline(self.position[:2], self.path.polyline) > self.planner.cfg.stray_distance:
            self._plan(self.position, t0, replan=True)

    def _plan(self, start: np.ndarray, t0: float, replan: bool) -> None:
        try:
            path = self.planner.plan(start)
        except ConfinedPlanError as exc:
            self._status(False, str(exc), t0, replan=replan)
            self.get_logger().warning(f"no path: {exc}")
            return
        self.path = path
        self._path_pub.publish(to_path(path, self.frame_id, self.get_clock().now().to_msg()))
        self._status(True, "replanned: strayed from the path" if replan else "planned", t0, path, replan)

    def _status(self, ok: bool, message: str, t0: float, path: ConfinedPath | None = None, replan: bool = False) -> None:
        status = {"ok": ok, "message": message, "plan_ms": (time.perf_counter() - t0) * 1e3, "replan": replan,
                  "waypoints": 0 if path is None else len(path.waypoints),
                  "crouch": [] if path is None else path.crouch.tolist(),
                  "length": None if path is None else path.length}
        self._status_pub.publish(String(data=json.dumps(status)))


def main(args: list[str] | None = None) -> int:
    """Entry point: `confined_planner_node --ros-args -p map_file:=map.npz -p goal:="[19.5, 0.0, 0.0]"`."""
    return run(ConfinedPlannerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
