"""policy_node over real DDS: lifecycle, e-stop, watchdog, bad models, refusal of a mismatched policy."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from lifecycle_msgs.msg import Transition
from rclpy.parameter import Parameter
from s2r_ros.policy_node import PolicyNode
from s2r_ros.teleop_node import Teleop
from std_msgs.msg import Bool, Empty

from tests.policy_files import GO1_ROBOT
from tests.ros.conftest import Ros, Spinner, wait_for
from tests.ros.driver import STAND, Driver

PERIOD = 0.02


def policy_node(context: object, policy: Path, robot: Path = GO1_ROBOT, **params: object) -> PolicyNode:
    overrides = {"policy": str(policy), "robot": str(robot), "sensor_qos": "reliable", "executor": "single", **params}
    return PolicyNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])


def is_hold(cmd: np.ndarray) -> bool:
    return cmd.shape == (12,) and np.allclose(cmd, STAND, atol=1e-9)


@pytest.fixture
def graph(ros: Ros):
    """make(policy, **params) -> (driver, policy node), spinning together until the test ends."""
    made = []

    def make(policy: Path, **params: object) -> tuple[Driver, PolicyNode]:
        node = policy_node(ros.context, policy, **params)
        driver = Driver(ros.context)
        made.append(Spinner(ros.context, node, driver))
        made.extend([node, driver])
        return driver, node

    yield make
    for m in made:
        if isinstance(m, Spinner):
            m.close()
    for m in made:
        if not isinstance(m, Spinner):
            m.destroy_node()


def test_lifecycle_estop_latches_until_reset(graph, graphs: dict[str, Path]) -> None:
    driver, _ = graph(graphs["small"], autostart="inactive")
    time.sleep(0.3)
    assert driver.state() == "inactive" and not driver.commands  # configured, checked, not driving
    assert driver.transition(Transition.TRANSITION_ACTIVATE)
    wait_for(lambda: len(driver.commands) > 10, 5, "commands after activation")
    assert not is_hold(driver.commands[-1][1])  # the policy drives

    t_press = time.monotonic()
    driver.estop_pub.publish(Bool(data=True))
    first = wait_for(lambda: next((t for t, c in driver.commands if t >= t_press and is_hold(c)), None), 2,
                     "a damping command after the e-stop")
    assert first - t_press <= PERIOD, f"e-stop took {(first - t_press) * 1e3:.1f} ms"

    driver.reset_pub.publish(Empty())  # refused: still pressed
    wait_for(lambda: driver.counter("reset_refused") == 1, 2, "the refused reset in diagnostics")
    driver.estop_pub.publish(Bool(data=False))
    time.sleep(0.3)
    after = [c for t, c in driver.commands if t > first + PERIOD]
    assert len(after) >= 10 and all(is_hold(c) for c in after), "e-stop did not hold after release"
    assert driver.mode() == "estop"

    n = len(driver.commands)
    driver.reset_pub.publish(Empty())
    wait_for(lambda: driver.mode() == "run", 2, "run mode after reset")
    wait_for(lambda: len(driver.commands) > n + 5, 2, "commands after reset")
    assert not is_hold(driver.commands[-1][1])

    assert driver.transition(Transition.TRANSITION_DEACTIVATE)
    time.sleep(0.1)
    last = driver.commands[-1][1]
    assert is_hold(last)  # safe stop
    n = len(driver.commands)
    time.sleep(0.2)
    assert len(driver.commands) == n  # and nothing after it


def test_stale_joint_states_trigger_damping(graph, graphs: dict[str, Path]) -> None:
    timeout = 0.1
    driver, _ = graph(graphs["small"], autostart="active", watchdog_timeout_s=timeout)
    wait_for(lambda: driver.mode() == "run" and len(driver.commands) > 10, 5, "the policy running")
    driver.send_joints = False
    time.sleep(0.05)
    last_state = driver.last_joint_pub
    t_trip = wait_for(lambda: next((t for t, d in driver.diags if d["mode"] == "damping"), None), 2, "damping")
    assert t_trip - last_state <= timeout + PERIOD + 0.02, f"damping after {(t_trip - last_state) * 1e3:.0f} ms"
    time.sleep(0.2)
    held = [c for t, c in driver.commands if t > t_trip]
    assert len(held) >= 6 and all(is_hold(c) for c in held)  # damping commands keep flowing at the policy rate
    driver.send_joints = True
    wait_for(lambda: driver.mode() == "run", 2, "recovery when joint states return")


def test_nan_model_never_reaches_the_command_topic(graph, graphs: dict[str, Path]) -> None:
    driver, _ = graph(graphs["nan"], autostart="active")
    wait_for(lambda: len(driver.commands) > 10, 5, "commands")
    time.sleep(0.1)
    assert all(np.isfinite(c).all() and is_hold(c) for _, c in driver.commands)
    wait_for(lambda: driver.mode() == "fault" and driver.counter("nonfinite_action") >= 1, 2, "fault diagnostics")


def test_wrong_shape_model_never_reaches_the_command_topic(graph, graphs: dict[str, Path]) -> None:
    driver, _ = graph(graphs["dynamic_wide"], autostart="active")  # 11 outputs, found only when run
    wait_for(lambda: len(driver.commands) > 10, 5, "commands")
    assert all(c.shape == (12,) and is_hold(c) for _, c in driver.commands)
    wait_for(lambda: driver.counter("bad_action_shape") >= 1, 2, "bad_action_shape counted")


def test_statically_wrong_model_is_refused_at_configure(graph, graphs: dict[str, Path]) -> None:
    driver, _ = graph(graphs["wide"], autostart="unconfigured")
    assert not driver.transition(Transition.TRANSITION_CONFIGURE)
    assert not driver.transition(Transition.TRANSITION_ACTIVATE)
    assert driver.state() == "unconfigured"
    time.sleep(0.2)
    assert driver.commands == []


def test_mismatch_refuses_activation_with_a_log_line(tmp_path: Path, go1_policy: Path, ros: Ros) -> None:
    robot = yaml.safe_load(GO1_ROBOT.read_text())
    robot["joint_names"][0], robot["joint_names"][3] = robot["joint_names"][3], robot["joint_names"][0]
    swapped = tmp_path / "swapped.yaml"
    swapped.write_text(yaml.safe_dump(robot))
    proc = subprocess.Popen([sys.executable, "-m", "s2r_ros.policy_node", "--ros-args", "-p", f"policy:={go1_policy}",
                             "-p", f"robot:={swapped}", "-p", "autostart:=active"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ros.env)
    driver = Driver(ros.context)
    spinner = Spinner(ros.context, driver)
    try:
        assert driver.get_state.wait_for_service(15)
        assert driver.state() == "unconfigured"
        assert not driver.transition(Transition.TRANSITION_ACTIVATE)
        time.sleep(0.3)
        assert driver.commands == []
    finally:
        proc.send_signal(2)
        out = proc.communicate(timeout=10)[0]
        spinner.close()
        driver.destroy_node()
    line = next(ln for ln in out.splitlines() if "refusing policy" in ln)
    assert "ERROR" in line and "joint order differs: position 0 is 'FR_hip_joint'" in line and "swapped.yaml" in line



def test_gamepad_starts_stops_and_estops_the_policy(ros: Ros, graphs: dict[str, Path]) -> None:
    from sensor_msgs.msg import Joy

    node = policy_node(ros.context, graphs["small"], autostart="inactive")
    teleop = Teleop(context=ros.context, parameter_overrides=[Parameter("source", value="joy")])
    driver = Driver(ros.context)
    joy_pub = driver.create_publisher(Joy, "/joy", 10)
    spinner = Spinner(ros.context, node, teleop, driver)

    def press(button: int) -> None:
        for pressed in (1, 0):
            buttons = [0] * 8
            buttons[button] = pressed
            joy_pub.publish(Joy(axes=[0.0] * 4, buttons=buttons))
            time.sleep(0.05)

    try:
        wait_for(lambda: driver.count_publishers("/joy") and teleop.count_subscribers("/joy"), 5, "the gamepad link")
        assert driver.state() == "inactive"
        wait_for(lambda: teleop._lifecycle.service_is_ready(), 5, "teleop's lifecycle client")
        press(7)  # start
        wait_for(lambda: driver.state() == "active", 5, "activation from the start button")
        wait_for(lambda: len(driver.commands) > 5, 5, "commands")
        press(1)  # e-stop (momentary: pressed, then released)
        wait_for(lambda: driver.mode() == "estop", 2, "e-stop from the gamepad")
        press(2)  # reset
        wait_for(lambda: driver.mode() == "run", 2, "reset from the gamepad")
        press(6)  # back: deactivate, which sends the safe stop
        wait_for(lambda: driver.state() == "inactive", 5, "deactivation from the back button")
        assert is_hold(driver.commands[-1][1])
    finally:
        spinner.close()
        for n in (node, teleop, driver):
            n.destroy_node()
