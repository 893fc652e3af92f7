"""The HIL actor node over real DDS against the Panda sim bridge, with a real gRPC learner link on loopback.

A Joy publisher stands in for the operator's gamepad: it takes over (intervene button + stick), then goes
silent mid-takeover as an unplugged device would; the learner side is `HilLearnerLink` in this process.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rclpy.node import Node
from rclpy.parameter import Parameter
from s2r.policies.hil_link_server import HilLearnerLink
from s2r_ros.arm_sim_bridge_node import ArmSimBridge
from s2r_ros.common import qos
from s2r_ros.hil_actor_node import HilActorNode
from sensor_msgs.msg import Joy

from tests.policy_files import PANDA_ROBOT, export_untrained_panda
from tests.ros.conftest import Ros, Spinner, wait_for
from tests.ros.test_arm import ArmDriver


class Operator(Node):
    """Publishes Joy at 50 Hz while `active`: stick x on axis 1, intervene button 5."""

    def __init__(self, context: object) -> None:
        super().__init__("test_operator", context=context)
        self.active = False
        self.axes = [0.0] * 6
        self.buttons = [0] * 8
        self.pub = self.create_publisher(Joy, "/joy", qos("best_effort", 10))
        self.create_timer(0.02, self._tick)

    def _tick(self) -> None:
        if self.active:
            msg = Joy()
            msg.axes, msg.buttons = [float(a) for a in self.axes], [int(b) for b in self.buttons]
            self.pub.publish(msg)


def test_operator_takeover_reaches_the_learner_and_an_unplugged_device_holds(tmp_path: Path, ros: Ros) -> None:
    policy = export_untrained_panda(tmp_path / "policy")
    learner = HilLearnerLink("127.0.0.1:0", inbox_dir=tmp_path / "inbox")
    port = learner.start()
    learner.publish_weights(7, policy.read_bytes(), {"task": "Panda-Lift-Cube"})
    bridge = ArmSimBridge(context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in {
        "policy": str(policy), "robot": str(PANDA_ROBOT), "executor": "single", "seed": 3}.items()])
    node = HilActorNode(context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in {
        "policy": str(policy), "robot": str(PANDA_ROBOT), "sensor_qos": "reliable", "executor": "single",
        "autostart": "active", "diagnostics_period_s": 0.1, "learner": f"127.0.0.1:{port}",
        "spool": str(tmp_path / "spool"), "joy_timeout_s": 0.3, "watchdog_timeout_s": 0.5,
        "object_timeout_s": 0.5}.items()])
    op, driver = Operator(ros.context), ArmDriver(ros.context)
    spin = Spinner(ros.context, bridge, node, op, driver)
    got: list[dict] = []
    try:
        wait_for(lambda: node.hil.weights.version == 7, 20, "the learner's weights in the actor")
        wait_for(lambda: len(got.extend(t for _a, _s, t in learner.drain()) or got) > 20, 20, "policy transitions")
        assert all(t["policy_version"] == 7 and not t["intervened"] for t in got[-5:])
        op.axes[1], op.buttons[5] = 1.0, 1  # full stick +x, intervene held
        op.active = True
        wait_for(lambda: any(t["intervened"] for t in got.extend(t for _a, _s, t in learner.drain()) or got), 10,
                 "an operator-driven transition at the learner")
        time.sleep(0.3)
        got.extend(t for _a, _s, t in learner.drain())
        ops = [t for t in got if t["intervened"]]
        assert all(np.isclose(t["action"][0], 1.0) for t in ops)  # executed = the operator's command
        assert any(not np.allclose(t["proposed"], t["action"]) for t in ops)  # the policy's own proposal kept beside it
        op.active = False  # unplugged mid-takeover: the takeover ends and the arm holds
        # Zero motion from where the target is; the safety layer pulls a target that ran ahead back to the
        # arm, so give the arm a moment to come to rest (longer on a loaded machine), then it must stay put.
        time.sleep(1.5)

        def at_rest() -> bool:
            t = time.monotonic()
            time.sleep(0.3)
            window = driver.since(t)
            return len(window) >= 3 and all(np.allclose(x, window[0], atol=2e-3) for x in window)

        wait_for(at_rest, 10, "the arm at rest after the device was unplugged")
        learner.drain()
        t0 = time.monotonic()
        time.sleep(0.5)
        held = driver.since(t0)
        assert len(held) >= 5 and all(np.allclose(x, held[0], atol=2e-3) for x in held)
        assert not learner.drain()  # held steps teach nothing and are not sent
        assert node.hil.mixer.device_losses == 1
    finally:
        spin.close()
        for n in (bridge, node, op, driver):
            n.destroy_node()
        learner.stop()


def test_actor_without_a_learner_keeps_acting_and_spools(tmp_path: Path, ros: Ros) -> None:
    policy = export_untrained_panda(tmp_path / "policy")
    bridge = ArmSimBridge(context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in {
        "policy": str(policy), "robot": str(PANDA_ROBOT), "executor": "single", "seed": 3}.items()])
    node = HilActorNode(context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in {
        "policy": str(policy), "robot": str(PANDA_ROBOT), "sensor_qos": "reliable", "executor": "single",
        "autostart": "active", "learner": "127.0.0.1:1", "spool": str(tmp_path / "spool")}.items()])
    spin = Spinner(ros.context, bridge, node)
    try:
        wait_for(lambda: node.link.stats().pending > 20, 20, "transitions spooled while the learner is away")
        assert node.ctl.mode.value == "run" and node.hil.weights.version is None  # the export acts meanwhile
    finally:
        spin.close()
        for n in (bridge, node):
            n.destroy_node()


def test_action_chunking_export_is_refused_at_configure(tmp_path: Path, ros: Ros) -> None:
    """The learner's weights are plain actor graphs: a chunking BC export cannot be the starting policy."""
    import torch
    from rclpy.lifecycle import TransitionCallbackReturn
    from s2r.policies.bc import BCConfig, ChunkedBC, ChunkedPolicyGraph, export_chunked
    from s2r.sim import make
    from s2r.sim.env import sample_obs

    env = make("Panda-Lift-Cube", 2, seed=0)
    try:
        torch.manual_seed(0)
        model = ChunkedBC(env.obs_dims["policy"], env.spec.action_dim, BCConfig(chunk=3, hidden=(32,)))
        export_chunked(ChunkedPolicyGraph(model, 0.1).eval(), env.spec, "Panda-Lift-Cube", tmp_path,
                       sample_obs(env, 2, seed=0)["policy"])
    finally:
        env.close()
    node = HilActorNode(context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in {
        "policy": str(tmp_path / "policy.onnx"), "robot": str(PANDA_ROBOT), "autostart": "unconfigured",
        "learner": "127.0.0.1:1", "spool": str(tmp_path / "spool")}.items()])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert getattr(node, "link", None) is None  # refused before any link thread starts
    finally:
        node.destroy_node()
