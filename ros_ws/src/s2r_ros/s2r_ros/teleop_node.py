"""teleop_node: a gamepad (sensor_msgs/Joy) or the keyboard -> velocity command, e-stop, reset, start/stop.

Publishes geometry_msgs/Twist at `rate_hz` (zero when the gamepad goes quiet, so a lost teleop link
makes the robot stand), std_msgs/Bool with the e-stop button's state (immediately on change and at
`rate_hz`), std_msgs/Empty on the reset button, and asks the policy's lifecycle service to activate or
deactivate on the start/back buttons.

Keyboard (source:=keyboard, needs a terminal): w/s forward/back, a/d left/right, q/e turn, x stop moving,
space e-stop, r reset, 1 activate the policy, 0 deactivate it. With no terminal on stdin the node falls
back to publishing nothing (says so in its log): a zero velocity from a keyboard nobody can press would
only compete with other command sources.
"""

from __future__ import annotations

import select
import sys
import time

from geometry_msgs.msg import Twist
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.node import Node
from sensor_msgs.msg import Joy
from std_msgs.msg import Bool, Empty

from s2r_ros.common import declare_params, qos, run

PARAMS = {
    "source": "joy", "rate_hz": 20.0, "max_vx": 1.0, "max_vy": 0.5, "max_wz": 1.0, "deadzone": 0.05,
    "axis_vx": 1, "axis_vy": 0, "axis_wz": 3, "button_estop": 1, "button_reset": 2, "button_activate": 7,
    "button_deactivate": 6, "joy_timeout_s": 0.5, "policy_node": "/policy", "executor": "single",
    "joy_topic": "/joy", "cmd_vel_topic": "/cmd_vel", "estop_topic": "/estop", "estop_reset_topic": "/estop/reset",
}
KEY_STEP = {"w": (0.1, 0, 0), "s": (-0.1, 0, 0), "a": (0, 0.1, 0), "d": (0, -0.1, 0), "q": (0, 0, 0.2), "e": (0, 0, -0.2)}


def _deadzone(v: float, dz: float) -> float:
    return 0.0 if abs(v) < dz else v


class Teleop(Node):
    """Operator input -> robot commands."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("teleop", **kwargs)  # kwargs: context, parameter_overrides (tests, composition)
        self.cfg = declare_params(self, PARAMS)
        c = self.cfg
        if c["source"] not in ("joy", "keyboard"):
            raise ValueError(f"parameter source must be 'joy' or 'keyboard', got '{c['source']}'")
        self.cmd = [0.0, 0.0, 0.0]
        self.estop = False
        self._buttons: list[int] = []
        self._joy_rx = -1e9
        self._twist_pub = self.create_publisher(Twist, c["cmd_vel_topic"], 10)
        self._estop_pub = self.create_publisher(Bool, c["estop_topic"], qos("reliable", 10))
        self._reset_pub = self.create_publisher(Empty, c["estop_reset_topic"], qos("reliable", 10))
        self._lifecycle = self.create_client(ChangeState, f"{c['policy_node']}/change_state")
        self._tty = None
        self._silent = False  # keyboard without a terminal: publish nothing
        if c["source"] == "joy":
            self.create_subscription(Joy, c["joy_topic"], self._on_joy, 10)
        else:
            self._open_keyboard()
        self.create_timer(1.0 / float(c["rate_hz"]), self._on_timer)

    # ---- gamepad ----------------------------------------------------------------------------------

    def _on_joy(self, msg: Joy) -> None:
        c = self.cfg
        ax = lambda i: _deadzone(msg.axes[i], c["deadzone"]) if 0 <= i < len(msg.axes) else 0.0  # noqa: E731
        self.cmd = [ax(c["axis_vx"]) * c["max_vx"], ax(c["axis_vy"]) * c["max_vy"], ax(c["axis_wz"]) * c["max_wz"]]
        self._joy_rx = time.monotonic()
        pressed = [b for b in range(len(msg.buttons)) if msg.buttons[b] and
                   (b >= len(self._buttons) or not self._buttons[b])]
        self._set_estop(c["button_estop"] < len(msg.buttons) and bool(msg.buttons[c["button_estop"]]))
        for b in pressed:
            self._press({c["button_reset"]: "reset", c["button_activate"]: "activate",
                         c["button_deactivate"]: "deactivate"}.get(b, ""))
        self._buttons = list(msg.buttons)

    # ---- keyboard ---------------------------------------------------------------------------------

    def _open_keyboard(self) -> None:
        if sys.stdin is None or not sys.stdin.isatty():
            self._silent = True
            self.get_logger().warning("source:=keyboard needs a terminal on stdin and has none: falling back to no "
                                      f"teleop (nothing published on {self.cfg['cmd_vel_topic']} or "
                                      f"{self.cfg['estop_topic']}); use source:=joy for a gamepad")
            return
        import termios
        import tty

        self._tty = termios.tcgetattr(sys.stdin)
        tty.setcbreak(sys.stdin.fileno())
        self.get_logger().info("keys: w/s a/d q/e move, x stop, space e-stop, r reset, 1 activate, 0 deactivate")

    def _read_keys(self) -> None:
        while select.select([sys.stdin], [], [], 0.0)[0]:
            k = sys.stdin.read(1)
            if k in KEY_STEP:
                self.cmd = [a + b for a, b in zip(self.cmd, KEY_STEP[k], strict=True)]
            elif k == "x":
                self.cmd = [0.0, 0.0, 0.0]
            elif k == " ":
                self._set_estop(not self.estop)
            else:
                self._press({"r": "reset", "1": "activate", "0": "deactivate"}.get(k, ""))

    def restore_terminal(self) -> None:
        """Give the terminal back its normal mode."""
        if self._tty is not None:
            import termios

            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, self._tty)

    # ---- output -----------------------------------------------------------------------------------

    def _set_estop(self, pressed: bool) -> None:
        if pressed != self.estop:
            self.estop = pressed
            self.get_logger().warning(f"e-stop {'PRESSED' if pressed else 'released'}")
            self._estop_pub.publish(Bool(data=pressed))

    def _press(self, action: str) -> None:
        if action == "reset":
            self.get_logger().info("reset requested")
            self._reset_pub.publish(Empty())
        elif action in ("activate", "deactivate"):
            if not self._lifecycle.service_is_ready():
                self.get_logger().error(f"no lifecycle service {self._lifecycle.srv_name}; is the policy node running?")
                return
            tid = Transition.TRANSITION_ACTIVATE if action == "activate" else Transition.TRANSITION_DEACTIVATE
            self._lifecycle.call_async(ChangeState.Request(transition=Transition(id=tid)))
            self.get_logger().info(f"asked {self.cfg['policy_node']} to {action}")

    def _on_timer(self) -> None:
        if self._silent:
            return
        if self._tty is not None:
            self._read_keys()
        elif self.cfg["source"] == "joy" and time.monotonic() - self._joy_rx > self.cfg["joy_timeout_s"]:
            self.cmd = [0.0, 0.0, 0.0]  # gamepad silent: stand still rather than keep the last stick
        t = Twist()
        t.linear.x, t.linear.y, t.angular.z = (float(v) for v in self.cmd)
        self._twist_pub.publish(t)
        self._estop_pub.publish(Bool(data=self.estop))


def main(args: list[str] | None = None) -> int:
    """Entry point: `teleop_node --ros-args -p source:=keyboard`."""
    return run(Teleop, args, on_stop=Teleop.restore_terminal)


if __name__ == "__main__":
    raise SystemExit(main())
