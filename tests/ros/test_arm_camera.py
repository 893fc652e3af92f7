"""A camera policy over real DDS: the arm sim bridge renders the camera, the arm policy node reads it.

The policy is an untrained export with a conv encoder inside the graph (uint8 32x32 input); what matters here
is the plumbing and the holds. The bridge publishes on a side topic and a test node relays frames to the
policy's topic, so a test can stop the camera or send frames the policy cannot take.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from s2r_ros.arm_policy_node import ArmPolicyNode
from s2r_ros.arm_sim_bridge_node import ArmSimBridge
from s2r_ros.common import qos
from s2r_ros.images import image_to_rgb, rgb_to_image
from sensor_msgs.msg import Image

from tests.policy_files import PANDA_ROBOT
from tests.ros.conftest import Ros, Spinner, wait_for

SIM_TOPIC = "/camera_sim/{camera}/image_raw"
POLICY_TOPIC = "/camera/workspace/image_raw"


class CameraRelay(Node):
    """Relays the bridge's frames to the policy (as they are, shrunk, as mono8, or not at all); records commands."""

    def __init__(self, context: object) -> None:
        super().__init__("test_camera_relay", context=context)
        self.mode = "off"  # "off" (camera stopped), "pass", "small" (16x16), "mono8"
        self.lock = threading.Lock()
        self.targets: list[tuple[float, np.ndarray]] = []
        self.diags: list[dict[str, str]] = []
        self.frames = 0
        self.pub = self.create_publisher(Image, POLICY_TOPIC, qos("reliable", 1))
        self.create_subscription(Image, SIM_TOPIC.format(camera="workspace"), self._relay, qos("reliable", 1))
        self.create_subscription(PoseStamped, "/cartesian_impedance_controller/target_pose", self._on_target,
                                 qos("reliable", 100))
        self.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: self.diags.extend({kv.key: kv.value for kv in s.values} for s in m.status), 100)

    def _relay(self, msg: Image) -> None:
        self.frames += 1
        if self.mode == "pass":
            self.pub.publish(msg)
        elif self.mode == "small":
            self.pub.publish(rgb_to_image(np.ascontiguousarray(image_to_rgb(msg, "sim")[::2, ::2]), msg.header.stamp,
                                          msg.header.frame_id))
        elif self.mode == "mono8":
            self.pub.publish(Image(header=msg.header, height=msg.height, width=msg.width, encoding="mono8",
                                   step=msg.width, data=bytes(msg.height * msg.width)))

    def _on_target(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        with self.lock:
            self.targets.append((time.monotonic(), np.array([p.x, p.y, p.z])))

    def value(self, key: str) -> str | None:
        return self.diags[-1].get(key) if self.diags else None

    def since(self, t: float) -> list[np.ndarray]:
        with self.lock:
            return [x for s, x in self.targets if s > t]


@pytest.fixture
def camera_graph(request: pytest.FixtureRequest, ros: Ros, camera_policy: Path):
    """(relay, bridge, policy node, captured safety log lines), spinning in one executor; lockstep if the test is
    parametrized indirectly with True."""
    lockstep = bool(getattr(request, "param", False))
    bridge = ArmSimBridge(context=ros.context, parameter_overrides=[
        Parameter(k, value=v) for k, v in {"policy": str(camera_policy), "robot": str(PANDA_ROBOT), "seed": 3,
                                            "executor": "single", "camera_rate_hz": 20.0, "lockstep": lockstep,
                                            "image_topic": SIM_TOPIC}.items()])
    over = {"policy": str(camera_policy), "robot": str(PANDA_ROBOT), "sensor_qos": "reliable", "executor": "single",
            "autostart": "active", "diagnostics_period_s": 0.1, "image_timeout_s": 0.3, "sync_object": lockstep,
            "watchdog_timeout_s": 2.0 if lockstep else 0.5, "object_timeout_s": 2.0 if lockstep else 0.5}
    node = ArmPolicyNode(context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in over.items()])
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: lines.append(r.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger(f"s2r.real.safety.{node.get_name()}")
    log.addHandler(handler)
    relay = CameraRelay(ros.context)
    spin = Spinner(ros.context, bridge, node, relay)
    yield relay, bridge, node, lines
    spin.close()
    log.removeHandler(handler)
    for n in (relay, node, bridge):
        n.destroy_node()
    bridge.sim.close()


def test_no_frame_holds_frames_run_the_policy_a_stopped_camera_holds(camera_graph) -> None:
    relay, bridge, node, lines = camera_graph
    counters = node.ctl.safety.counters
    assert node.ctl.runner.images.cameras == ("workspace",)
    # No frame yet: the policy cannot act, the arm is held and every held step is counted.
    wait_for(lambda: relay.frames >= 3 and counters["camera_holds"] >= 3, 10, "the bridge's frames and held steps")
    assert bridge.frames_published >= relay.frames
    assert relay.value("mode") == "damping" and counters["steps_run"] == 0
    assert any("camera 'workspace' has given no frame yet" in ln for ln in lines)
    # Frames flow: the policy acts on them (steps run at the control rate, the frames it used are young).
    relay.mode = "pass"
    wait_for(lambda: relay.value("mode") == "run" and counters["steps_run"] >= 10, 10, "the policy running on frames")
    wait_for(lambda: float(relay.value("image_age_p50_ms") or 0) > 0, 3, "frame age in the diagnostics")
    assert float(relay.value("image_age_p99_ms")) < 500  # 20 Hz camera, 20 Hz control: about a period old
    moved = relay.since(0.0)
    assert max(np.linalg.norm(x - moved[0]) for x in moved) > 1e-3  # the policy's targets move the TCP
    # The camera stops: the policy holds within the timeout and the held target stays put.
    holds = counters["camera_holds"]
    relay.mode = "off"
    t0 = time.monotonic()
    wait_for(lambda: relay.value("mode") == "damping", 3, "a hold once the camera stops")
    # image_timeout_s plus the diagnostics' period and a loaded machine's scheduling (0.76 s seen at load 12)
    assert time.monotonic() - t0 < 0.3 + 1.0
    time.sleep(1.0)
    # Held at the measured TCP: the arm settles from its motion (a few mm) and stays there, no jump.
    held = relay.since(time.monotonic() - 0.6)
    assert len(held) >= 3 and all(np.allclose(x, held[0], atol=3e-3) for x in held)
    assert np.allclose(held[-1], node.ctl.state.ee_pos, atol=3e-3)
    assert counters["camera_holds"] > holds and any("last gave a frame" in ln for ln in lines)
    assert counters["steps_fault"] == 0 and node.ctl.mode.value == "damping"  # not latched: it recovers
    relay.mode = "pass"
    wait_for(lambda: relay.value("mode") == "run", 3, "running again once frames return")


def test_wrong_size_and_encoding_are_refused_in_one_line_and_hold(camera_graph) -> None:
    relay, _, node, lines = camera_graph
    counters = node.ctl.safety.counters
    relay.mode = "pass"
    wait_for(lambda: relay.value("mode") == "run" and counters["steps_run"] >= 5, 10, "the policy running on frames")
    relay.mode = "small"
    wait_for(lambda: relay.value("mode") == "damping" and counters["bad_image"] >= 2, 3, "a hold on 16x16 frames")
    line = next(ln for ln in lines if "bad_image" in ln)
    assert "camera 'workspace' gave a uint8 frame of shape (16, 16, 3); the policy takes uint8 (32, 32, 3)" in line
    relay.mode = "pass"
    wait_for(lambda: relay.value("mode") == "run", 3, "running again on right-size frames")
    relay.mode = "mono8"
    wait_for(lambda: relay.value("mode") == "damping" and counters["bad_image"] >= 6, 3, "a hold on mono8 frames")
    assert any(f"image on {POLICY_TOPIC} has encoding 'mono8'" in ln for ln in lines)
    # Throttled: one line per second per kind, however many frames came.
    assert sum("bad_image" in ln for ln in lines) < counters["bad_image"]


@pytest.mark.parametrize("camera_graph", [True], indirect=True)
def test_lockstep_steps_on_the_frame_of_each_state(camera_graph) -> None:
    """Lockstep: each state comes with its own frame, and every step uses the frame of the state it answers."""
    relay, bridge, node, _ = camera_graph
    relay.mode = "pass"
    wait_for(lambda: node.ctl.safety.counters["steps_run"] >= 15, 20, "lockstep steps on frames")
    wait_for(lambda: relay.value("image_age_p99_ms") == "0.5", 3, "frame ages in the diagnostics")  # the 0-1 ms bin
    assert bridge.sim.steps >= 14 and node.ctl.safety.counters["steps_fault"] == 0  # the 15th command may be in flight


def test_the_bridge_renders_what_the_task_trained_on() -> None:
    """The bridge's frames are the task's own image group, pixel for pixel, from any thread; a camera the model
    lacks is refused at start-up in one sentence."""
    from s2r.sim import task_config
    from s2r.sim.arm_sim import ArmSim

    sim = ArmSim("Panda-Lift-Cube", task_config("Panda-Lift-Cube", {"image_size": (24, 32)}), seed=3)
    try:
        for _ in range(3):
            sim.step(sim.hold_target()[0] + np.array([0.01, 0.0, 0.0]), 0.02)
        out: list[np.ndarray] = []
        worker = threading.Thread(target=lambda: out.append(sim.render("workspace", 24, 32)))
        worker.start()
        worker.join()
        mine = sim.render("workspace", 24, 32)  # this thread, after another one rendered: the context was released
        np.testing.assert_array_equal(mine, out[0])
        np.testing.assert_array_equal(mine, sim.env.render()[0])
        assert mine.shape == (24, 32, 3) and mine.std() > 5  # a picture, not a blank
        with pytest.raises(ValueError, match=r"camera 'wrist' is not a camera of the 'Panda-Lift-Cube' model \(it has "
                                             r"\['workspace'\]\)"):
            sim.render("wrist", 24, 32)
    finally:
        sim.close()
