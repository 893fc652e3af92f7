"""hil_actor_node: the arm policy node as a human-in-the-loop actor (HIL-SERL's actor on the robot).

Everything of arm_policy_node (lifecycle, e-stop, watchdogs, the Cartesian safety layer, TCP and gripper
targets) stays; what changes is where the action comes from: `s2r.real.hil_actor.HilActor` runs the
learner's newest weights (streamed over gRPC by `s2r hil learner`), and an operator holding any
`sensor_msgs/Joy` device (a gamepad through joy_node, a SpaceMouse through spacenav) takes over with the
intervene button. Every step goes to the learner with the policy's proposal, the executed action and the
flag. The `policy` parameter still names an exported policy of the task: it fixes the observation layout
and the safety checks, and runs until the first weights arrive (so pass the same task's export).

Buttons (indices in the Joy message, parameters): intervene (held), success / failure (label the episode,
end it and publish `reset_topic`), reset. A Joy source that goes quiet for `joy_timeout_s` mid-takeover
ends the takeover and holds the arm until the operator takes over again or resets.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from s2r.real.hil_actor import HilActor
from s2r.real.intervention import OperatorInput
from s2r.real.teleop import AxesMapping, JoyDevice
from sensor_msgs.msg import Joy
from std_msgs.msg import Empty

from s2r_ros.arm_policy_node import PARAMS as ARM_PARAMS
from s2r_ros.arm_policy_node import ArmPolicyNode
from s2r_ros.common import qos, run

PARAMS = {
    **ARM_PARAMS, "learner": "127.0.0.1:50051", "actor_id": "arm0", "spool": "", "token_env": "S2R_HIL_TOKEN",
    "joy_topic": "/joy", "reset_topic": "/arm_sim/reset", "joy_timeout_s": 0.5, "deadzone": 0.05, "scale": 1.0,
    "axis_x": 1, "axis_y": 0, "axis_z": 4, "button_intervene": 5, "button_close": 0, "button_open": 1,
    "button_success": 3, "button_failure": 2, "button_reset": 7,
}


class HilActorNode(ArmPolicyNode):
    """The arm policy node with the learner's weights and an operator's Joy takeovers."""

    params = PARAMS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_configure(state)
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        from s2r.real.hil_link import HilActorLink

        p = self.p
        if self.ctl.runner.chunks is not None:
            # The learner's weights are plain obs -> action graphs; a chunking export cannot stand in for them.
            self.get_logger().error(f"refusing policy: {p('policy')} is an action-chunking export; start the HIL actor "
                                    "from a `hil`/`sac` export of the task (e.g. the learner run's policy.onnx)")
            return TransitionCallbackReturn.FAILURE
        mapping = AxesMapping(axes=(int(p("axis_x")), int(p("axis_y")), int(p("axis_z"))), deadzone=float(p("deadzone")),
                              scale=float(p("scale")), button_intervene=int(p("button_intervene")),
                              button_close=int(p("button_close")), button_open=int(p("button_open")),
                              button_success=int(p("button_success")), button_failure=int(p("button_failure")),
                              button_reset=int(p("button_reset")))
        self.joy = JoyDevice(mapping, timeout_s=float(p("joy_timeout_s")))
        spool = Path(str(p("spool")) or Path("spool") / str(p("actor_id")))
        self.link = HilActorLink(str(p("learner")), spool_dir=spool, actor_id=str(p("actor_id")),
                                 token=os.environ.get(str(p("token_env"))) or None)
        runner = self.ctl.runner
        session, name = runner.session, runner.meta.onnx_input
        # Until the learner's first weights arrive, the exported policy proposes.
        self.hil = HilActor(self.link, runner.num_actions, fallback=lambda o: session.run(None, {name: o})[0])
        self._pending = False
        runner.infer = self._infer  # the controller's safety checks and limits apply to whatever comes back
        self._reset_pub = self.create_publisher(Empty, str(p("reset_topic")), qos("reliable", 10))
        self._subs.append(self.create_subscription(Joy, str(p("joy_topic")), self._on_joy, qos("best_effort", 10)))
        self.get_logger().info(f"HIL actor '{p('actor_id')}' -> learner {p('learner')}; operator on {p('joy_topic')}")
        return TransitionCallbackReturn.SUCCESS

    def _on_joy(self, msg: Joy) -> None:
        self.joy.feed(msg.axes, msg.buttons)

    def _infer(self, state: object, command: np.ndarray, now: float | None = None) -> np.ndarray:
        # `now` is the runner's camera clock; the HIL link carries vector observations only (images refused).
        runner = self.ctl.runner
        obs = runner.builder.build(state, command, runner.last_action)  # (1, obs_dim)
        cmd = self.joy.read()
        if self._pending:  # this observation completes the previous step
            self.hil.record(obs[0], float(cmd.success), bool(cmd.success or cmd.failure), bool(cmd.reset))
            self._pending = False
        if cmd.success or cmd.failure or cmd.reset:
            self._reset_pub.publish(Empty())
            self.ctl.restart()
            return self.hil.hold_action
        action = self.hil.act(obs[0], OperatorInput.from_command(cmd))
        self._pending = True
        return action[None]

    def _teardown(self) -> None:
        if getattr(self, "link", None) is not None:
            self.link.close()
            self.link = None
        super()._teardown()


def main(args: list[str] | None = None) -> int:
    """Entry point: `hil_actor_node --ros-args -p policy:=... -p robot:=... -p learner:=host:port`."""
    return run(HilActorNode, args, on_stop=HilActorNode.stop_safely)


if __name__ == "__main__":
    raise SystemExit(main())
