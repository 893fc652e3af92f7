"""A test stand-in for the robot drivers around the policy node: publishes sensors, records commands."""

from __future__ import annotations

import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.node import Node
from s2r_ros.common import qos, sec_to_stamp
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Bool, Empty, Float64MultiArray

from tests.policy_files import GO1_JOINTS

STAND = np.array([0.0, 0.9, -1.8] * 4) + 0.05  # measured pose: what damping commands


class Driver(Node):
    """Publishes joint states + IMU at `rate_hz`; records every command and diagnostics message."""

    def __init__(self, context: object, rate_hz: float = 50.0, policy_node: str = "/policy") -> None:
        super().__init__("test_driver", context=context)
        self.js_pub = self.create_publisher(JointState, "/joint_states", qos("reliable", 10))
        self.imu_pub = self.create_publisher(Imu, "/imu/data", qos("reliable", 10))
        self.twist_pub = self.create_publisher(Twist, "/cmd_vel", 10)
        self.estop_pub = self.create_publisher(Bool, "/estop", qos("reliable", 10))
        self.reset_pub = self.create_publisher(Empty, "/estop/reset", qos("reliable", 10))
        self.commands: list[tuple[float, np.ndarray]] = []
        self.diags: list[tuple[float, dict[str, str]]] = []
        self.create_subscription(Float64MultiArray, "/forward_position_controller/commands",
                                 lambda m: self.commands.append((time.monotonic(), np.array(m.data))), qos("reliable", 100))
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 100)
        self.change = self.create_client(ChangeState, f"{policy_node}/change_state")
        self.get_state = self.create_client(GetState, f"{policy_node}/get_state")
        self.send_joints = True
        self.sending = True
        self.last_joint_pub = 0.0
        self.t = 0.0
        self.dt = 1.0 / rate_hz
        self.create_timer(self.dt, self.tick)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for s in msg.status:
            self.diags.append((time.monotonic(), {kv.key: kv.value for kv in s.values}))

    def tick(self) -> None:
        if not self.sending:
            return
        self.t += self.dt
        stamp = sec_to_stamp(self.t)
        imu = Imu()
        imu.header.stamp = stamp
        imu.orientation.w = 1.0
        self.imu_pub.publish(imu)
        if self.send_joints:
            js = JointState(name=list(GO1_JOINTS), position=STAND.tolist(), velocity=[0.0] * 12)
            js.header.stamp = stamp
            self.js_pub.publish(js)
            self.last_joint_pub = time.monotonic()

    @staticmethod
    def call(client: object, request: object, timeout: float = 10.0) -> object:
        """A service call that waits for the server and resends if no answer comes within a second.

        A request sent in the moment after discovery, before the server's reply path is matched, can get
        no answer; resending is how ROS tools cope with that race too.
        """
        assert client.wait_for_service(timeout), f"service {client.srv_name} never appeared"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            fut = client.call_async(request)
            resend = time.monotonic() + 1.0
            while not fut.done() and time.monotonic() < min(resend, end):
                time.sleep(0.005)
            if fut.done():
                return fut.result()
        raise AssertionError(f"no answer from {client.srv_name} in {timeout} s")

    def transition(self, transition_id: int) -> bool:
        """Ask the policy node for a lifecycle transition through its service; returns success."""
        return bool(self.call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success)

    def state(self) -> str:
        """The policy node's lifecycle state label."""
        return self.call(self.get_state, GetState.Request()).current_state.label

    def mode(self) -> str | None:
        """The safety mode in the newest diagnostics."""
        return self.diags[-1][1]["mode"] if self.diags else None

    def counter(self, name: str) -> int:
        return int(self.diags[-1][1][name]) if self.diags else 0
