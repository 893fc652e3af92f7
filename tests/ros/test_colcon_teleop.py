"""The ament_python package builds with colcon, and its installed teleop_node turns a gamepad into commands."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from geometry_msgs.msg import Twist
from rclpy.node import Node
from s2r_ros.common import qos
from sensor_msgs.msg import Joy
from std_msgs.msg import Bool, Empty

from tests.ros.conftest import REPO, Ros, Spinner, wait_for


class Pad(Node):
    """A gamepad (sensor_msgs/Joy) and a listener for what the teleop node makes of it."""

    def __init__(self, context: object) -> None:
        super().__init__("test_pad", context=context)
        self.joy = self.create_publisher(Joy, "/joy", 10)
        self.twists: list[Twist] = []
        self.estops: list[bool] = []
        self.resets = 0
        self.create_subscription(Twist, "/cmd_vel", self.twists.append, 10)
        self.create_subscription(Bool, "/estop", lambda m: self.estops.append(m.data), qos("reliable", 100))
        self.create_subscription(Empty, "/estop/reset", lambda m: setattr(self, "resets", self.resets + 1),
                                 qos("reliable", 10))

    def send(self, axes: list[float], buttons: list[int]) -> None:
        self.joy.publish(Joy(axes=axes, buttons=buttons))


def test_colcon_build_and_installed_teleop(ros: Ros, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(REPO / "ros_ws" / "src" / "s2r_ros", ws / "src" / "s2r_ros")
    colcon = Path(sys.executable).parent / "colcon"
    build = subprocess.run([str(colcon), "build", "--base-paths", "src"], cwd=ws, capture_output=True, text=True,
                           env=ros.env, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    exe = ws / "install" / "s2r_ros" / "lib" / "s2r_ros" / "teleop_node"
    assert exe.is_file()
    for node in ("arm_policy_node", "arm_sim_bridge_node"):
        assert (exe.parent / node).is_file(), f"colcon did not install {node}"
    env = {k: v for k, v in ros.env.items() if k != "PYTHONPATH"}  # only the installed package may be used
    proc = subprocess.Popen(["sh", "-c", f". {ws}/install/setup.sh && exec {exe} --ros-args -p source:=joy"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pad = Pad(ros.context)
    spinner = Spinner(ros.context, pad)
    try:
        wait_for(lambda: pad.twists, 20, "zero Twist from the idle teleop node")
        assert pad.twists[-1].linear.x == 0.0
        wait_for(lambda: pad.count_subscribers("/joy") > 0, 10, "teleop subscribed to /joy")
        axes = [0.0, 0.5, 0.0, -0.2]  # left stick half forward, right stick a little right
        for _ in range(10):
            pad.send(axes, [0] * 8)
            time.sleep(0.03)
        wait_for(lambda: abs(pad.twists[-1].linear.x - 0.5) < 1e-9, 2, "vx 0.5 from the stick")
        assert abs(pad.twists[-1].angular.z + 0.2) < 1e-6  # Joy axes are float32
        pad.send(axes, [0, 1, 0, 0, 0, 0, 0, 0])  # e-stop button
        wait_for(lambda: pad.estops and pad.estops[-1], 2, "e-stop pressed")
        pad.send(axes, [0, 0, 1, 0, 0, 0, 0, 0])  # released; reset button
        wait_for(lambda: pad.resets == 1 and not pad.estops[-1], 2, "release and reset")
        time.sleep(0.7)  # gamepad goes quiet: the teleop node must stop commanding motion
        wait_for(lambda: pad.twists[-1].linear.x == 0.0, 2, "zero velocity after the gamepad went silent")
    finally:
        spinner.close()
        pad.destroy_node()
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=10)[0]
    assert proc.returncode == 0, out
