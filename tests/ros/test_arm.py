"""The arm over real DDS: arm_policy_node against the Panda sim bridge, and each bad input of the issue.

The policy here is an untrained export or a hand-built graph (what matters is the plumbing and the safety
layer); bench/arm_closed_loop.py lifts the cube with a trained one.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from s2r_ros.arm_policy_node import ArmPolicyNode
from s2r_ros.arm_sim_bridge_node import ArmSimBridge
from s2r_ros.common import qos
from s2r_ros.policy_node import PolicyNode
from std_msgs.msg import Float64MultiArray

from tests.policy_files import GO1_ROBOT, PANDA_ROBOT, export_untrained_panda
from tests.real.test_arm_control import graph as arm_graph
from tests.ros.conftest import Ros, Spinner, wait_for


@pytest.fixture(scope="module")
def panda_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_untrained_panda(tmp_path_factory.mktemp("panda_policy"))


class ArmDriver(Node):
    """Relays the bridge's object pose (in a chosen frame, or not at all) and records commands and diagnostics."""

    def __init__(self, context: object) -> None:
        super().__init__("test_arm_driver", context=context)
        self.frame = "world"
        self.relay = True
        self.lock = threading.Lock()
        self.targets: list[tuple[float, np.ndarray]] = []
        self.grippers: list[np.ndarray] = []
        self.diags: list[tuple[float, dict[str, str]]] = []
        self.episodes: list[np.ndarray] = []
        self.pose_pub = self.create_publisher(PoseStamped, "/object_pose", qos("reliable", 10))
        self.create_subscription(PoseStamped, "/tracker_raw", self._relay, qos("reliable", 10))
        self.create_subscription(PoseStamped, "/cartesian_impedance_controller/target_pose", self._on_target,
                                 qos("reliable", 100))
        self.create_subscription(Float64MultiArray, "/gripper_controller/commands",
                                 lambda m: self.grippers.append(np.array(m.data)), qos("reliable", 100))
        self.create_subscription(Float64MultiArray, "/arm_sim/episodes", lambda m: self.episodes.append(np.array(m.data)),
                                 qos("reliable", 100))
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 100)

    def _relay(self, msg: PoseStamped) -> None:
        if self.relay:
            msg.header.frame_id = self.frame
            self.pose_pub.publish(msg)

    def _on_target(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        with self.lock:
            self.targets.append((time.monotonic(), np.array([p.x, p.y, p.z])))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for s in msg.status:
            self.diags.append((time.monotonic(), {kv.key: kv.value for kv in s.values}))

    def mode(self) -> str | None:
        return self.diags[-1][1]["mode"] if self.diags else None

    def counter(self, name: str) -> int:
        return int(self.diags[-1][1][name]) if self.diags else 0

    def since(self, t: float) -> list[np.ndarray]:
        with self.lock:
            return [x for s, x in self.targets if s > t]


@pytest.fixture
def arm_graph_ros(ros: Ros):
    """make(policy, robot=..., lockstep=..., **policy params) -> (driver, bridge, policy node), spinning."""
    made: list[object] = []

    def make(policy: Path, robot: Path = PANDA_ROBOT, lockstep: bool = False, relay: bool = True,
             **params: object) -> tuple[ArmDriver, ArmSimBridge, ArmPolicyNode]:
        bridge = ArmSimBridge(context=ros.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in {"policy": str(policy), "robot": str(PANDA_ROBOT), "lockstep": lockstep,
                                                "executor": "single", "seed": 3,
                                                "object_pose_topic": "/tracker_raw" if relay else "/object_pose"}.items()])
        over = {"policy": str(policy), "robot": str(robot), "sensor_qos": "reliable", "executor": "single",
                "autostart": "active", "diagnostics_period_s": 0.1, **params}
        node = ArmPolicyNode(context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in over.items()])
        driver = ArmDriver(ros.context)
        made.extend([Spinner(ros.context, bridge, node, driver), bridge, node, driver])
        return driver, bridge, node

    yield make
    for m in made:
        if isinstance(m, Spinner):
            m.close()
    for m in made:
        if not isinstance(m, Spinner):
            m.destroy_node()


def test_lockstep_episodes_through_the_ros_graph(arm_graph_ros, panda_policy: Path) -> None:
    """Every state gets one command; episodes end at the task's time limit and restart the policy."""
    driver, bridge, node = arm_graph_ros(panda_policy, lockstep=True, relay=False, sync_object=True,
                                         watchdog_timeout_s=2.0, object_timeout_s=2.0)
    wait_for(lambda: len(driver.episodes) >= 2, 60, "two episodes")
    assert [int(e[2]) for e in driver.episodes[:2]] == [50, 50]  # untrained: the time limit ends them
    assert node.ctl.mode.value == "run" and node.ctl.safety.counters["steps_run"] >= 100
    assert node.ctl.safety.counters["steps_fault"] == 0
    assert bridge.sim.steps >= 100 and all(np.isfinite(t).all() for _, t in driver.targets)


def test_arm_policy_with_quadruped_config_is_refused(tmp_path: Path, panda_policy: Path, ros: Ros) -> None:
    p = subprocess.Popen([sys.executable, "-m", "s2r_ros.arm_policy_node", "--ros-args", "-p", f"policy:={panda_policy}",
                          "-p", f"robot:={GO1_ROBOT}", "-p", "autostart:=active"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ros.env)
    time.sleep(6.0)
    p.send_signal(2)
    out = p.communicate(timeout=10)[0]
    line = next(ln for ln in out.splitlines() if "refusing policy" in ln)
    assert "moves an end effector (action kind 'ee_delta')" in line and "go1.yaml describes 'go1'" in line


def test_quadruped_policy_with_arm_config_is_refused(ros: Ros, go1_policy: Path) -> None:
    for cls in (PolicyNode, ArmPolicyNode):
        node = cls(context=ros.context, parameter_overrides=[
            Parameter("policy", value=str(go1_policy)), Parameter("robot", value=str(PANDA_ROBOT)),
            Parameter("autostart", value="unconfigured")])
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
            assert node.ctl is None
        finally:
            node.destroy_node()


def test_object_pose_in_another_frame_holds(arm_graph_ros, panda_policy: Path) -> None:
    driver, _, node = arm_graph_ros(panda_policy, object_timeout_s=0.25)
    driver.frame = "camera_link"
    wait_for(lambda: driver.mode() == "damping" and driver.counter("bad_object_frame") > 3, 5, "frame refusals")
    # The policy may have run a few steps on base-frame poses before the frame switched (CI saw 5): what counts
    # is that no step runs once the poses come in another frame.
    ran = node.ctl.safety.counters["steps_run"]
    t = time.monotonic()
    time.sleep(0.3)
    held = driver.since(t)
    assert len(held) >= 3 and all(np.allclose(x, held[0], atol=2e-3) for x in held)  # the arm stays put
    assert node.ctl.safety.counters["steps_run"] == ran
    driver.frame = "world"
    wait_for(lambda: driver.mode() == "run", 3, "running once poses come in the base frame")


def test_target_outside_the_box_is_clipped_and_counted(tmp_path: Path, arm_graph_ros, panda_policy: Path) -> None:
    raw = yaml.safe_load(PANDA_ROBOT.read_text())
    raw["workspace_high"] = [0.75, 0.35, 0.28]
    low_box = tmp_path / "panda_low.yaml"
    low_box.write_text(yaml.safe_dump(raw))
    up = arm_graph(tmp_path / "up", panda_policy, "up")
    driver, _, _ = arm_graph_ros(up, robot=low_box)
    wait_for(lambda: driver.counter("clamp_workspace") > 5, 10, "workspace clamps counted")
    assert max(x[2] for x in driver.since(0.0)) <= 0.28 + 1e-9  # never sent raw


def test_nan_from_the_network_holds_latched(tmp_path: Path, arm_graph_ros, panda_policy: Path) -> None:
    driver, _, node = arm_graph_ros(arm_graph(tmp_path / "nan", panda_policy, "nan"))
    wait_for(lambda: driver.mode() == "fault" and driver.counter("nonfinite_action") >= 1, 5, "fault diagnostics")
    time.sleep(0.3)
    sent = driver.since(0.0)
    assert sent and all(np.isfinite(x).all() and np.allclose(x, sent[0], atol=2e-3) for x in sent)
    assert np.allclose(sent[-1], node.ctl.state.ee_pos, atol=2e-3)


def test_silent_object_tracker_holds_then_recovers(arm_graph_ros, panda_policy: Path) -> None:
    driver, _, node = arm_graph_ros(panda_policy, object_timeout_s=0.25)
    wait_for(lambda: driver.mode() == "run" and node.ctl.safety.counters["steps_run"] > 10, 5, "the policy running")
    driver.relay = False
    t0 = time.monotonic()
    wait_for(lambda: driver.mode() == "damping", 2, "hold when the tracker goes silent")
    t_hold = time.monotonic()
    assert t_hold - t0 < 0.25 + 0.3  # the timeout plus scheduling slack on two loaded cores
    # Judged from when the hold is reported, as in the bad-frame test: on a loaded machine t0 + 0.3 s can still
    # fall before the switch, while the arm is moving under the policy (CI saw 9 commands drift 2 mm).
    time.sleep(0.4)
    held = driver.since(t_hold)
    assert len(held) >= 3 and all(np.allclose(x, held[0], atol=2e-3) for x in held)
    driver.relay = True
    wait_for(lambda: driver.mode() == "run", 3, "running again when poses return")
    assert driver.counter("object_timeouts") == 1


def test_reset_topic_starts_a_new_episode(arm_graph_ros, panda_policy: Path, ros: Ros) -> None:
    """An operator's Empty on /arm_sim/reset restarts the scene mid-episode and the policy with it."""
    from std_msgs.msg import Empty

    driver, bridge, node = arm_graph_ros(panda_policy, lockstep=True, relay=False, sync_object=True,
                                         watchdog_timeout_s=2.0, object_timeout_s=2.0)
    starts: list[float] = []
    driver.create_subscription(Empty, "/episode/start", lambda m: starts.append(time.monotonic()), qos("reliable", 10))
    pub = driver.create_publisher(Empty, "/arm_sim/reset", qos("reliable", 10))
    wait_for(lambda: bridge.sim.env.episode_step[0] >= 10, 20, "ten steps of the first episode")
    wait_for(lambda: pub.get_subscription_count() > 0, 5, "the bridge subscribed to the reset topic")
    pub.publish(Empty())
    wait_for(lambda: starts, 5, "the episode start announcement")
    wait_for(lambda: len(driver.episodes) >= 1, 30, "the restarted episode to end")
    assert int(driver.episodes[0][2]) == 50  # a full episode after the reset: the reset was not scored as one
    assert bridge.sim.steps >= 60 and node.ctl.safety.counters["steps_fault"] == 0
