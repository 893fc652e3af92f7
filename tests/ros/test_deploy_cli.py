"""`s2r deploy` as a user meets it: --help lists the manifest's arguments; keyboard teleop without a terminal
falls back to none (in deploy and in the node itself), and says so."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from geometry_msgs.msg import Twist
from rclpy.node import Node
from rclpy.parameter import Parameter
from s2r_ros.common import qos
from s2r_ros.deploy import keyboard_fallback
from s2r_ros.manifest import describe_arguments, load_manifest, node_list
from s2r_ros.teleop_node import Teleop
from std_msgs.msg import Bool

from tests.ros.conftest import REPO, Ros, Spinner, wait_for

SIM = REPO / "launch" / "sim.yaml"


def s2r_deploy(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s2r.policies.cli", "deploy", *argv], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)


@pytest.mark.parametrize("order", ["manifest first", "help first"])
def test_deploy_help_lists_the_manifest_arguments_with_help_and_defaults(order: str) -> None:
    argv = ["--manifest", str(SIM), "--help"] if order == "manifest first" else ["--help", "--manifest", str(SIM)]
    out = s2r_deploy(*argv)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: s2r deploy") and "--dry-run" in out.stdout  # the flags, as before
    lines = {ln.split()[0]: ln for ln in out.stdout.split("arguments of manifest 'sim'")[1].splitlines()[2:] if ln.strip()}
    assert set(lines) == {"policy", "robot", "teleop", "lockstep", "autostart"}
    assert "exported policy.onnx" in lines["policy"] and lines["policy"].endswith("(required)")
    assert lines["robot"].endswith(f"(default '{REPO / 'launch' / 'robots' / 'go1.yaml'}')")  # $(dir) filled in
    assert "keyboard" in lines["teleop"] and lines["teleop"].endswith("(default 'keyboard')")
    assert lines["lockstep"].endswith("(default 'false')") and lines["autostart"].endswith("(default 'active')")


def test_deploy_help_without_a_manifest_says_how_to_get_its_arguments() -> None:
    out = s2r_deploy("--help")
    assert out.returncode == 0 and "Give --manifest FILE with --help" in out.stdout
    out = s2r_deploy("--help", "--manifest", "launch/nope.yaml")
    assert out.returncode == 2 and "manifest not found" in out.stderr and "nope.yaml" in out.stderr
    out = s2r_deploy("--policy", "p.onnx")
    assert out.returncode == 2 and "--manifest is required" in out.stderr


def test_every_manifest_describes_each_argument() -> None:
    for path in sorted((REPO / "launch").glob("*.yaml")):
        m = load_manifest(path)
        text = describe_arguments(m)
        for name, spec in m.arguments.items():
            assert f"  {name} " in text and spec.help, f"{path}: argument '{name}' has no help"


def test_keyboard_teleop_without_a_terminal_falls_back_to_none() -> None:
    nodes = node_list(load_manifest(SIM), {"policy": "p.onnx"})
    kept, why = keyboard_fallback(nodes, stdin_is_tty=False)
    assert [n.name for n in kept] == ["sim_bridge", "policy"]
    assert "keyboard teleop (teleop) is not started: teleop falls back to none" in why
    assert keyboard_fallback(nodes, stdin_is_tty=True) == (nodes, None)  # a terminal: keyboard as asked
    joy = node_list(load_manifest(SIM), {"policy": "p.onnx", "teleop": "joy"})
    assert keyboard_fallback(joy, stdin_is_tty=False) == (joy, None)  # a gamepad needs no terminal
    out = s2r_deploy("--manifest", str(SIM), "--policy", "p.onnx", "--dry-run")
    assert out.returncode == 0 and "s2r_ros.teleop_node" not in out.stdout and "s2r_ros.policy_node" in out.stdout
    assert "teleop falls back to none" in out.stderr


class Listener(Node):
    def __init__(self, context: object) -> None:
        super().__init__("test_listener", context=context)
        self.twists: list[Twist] = []
        self.estops: list[bool] = []
        self.create_subscription(Twist, "/cmd_vel", self.twists.append, 10)
        self.create_subscription(Bool, "/estop", lambda m: self.estops.append(m.data), qos("reliable", 10))


def test_keyboard_teleop_node_without_a_terminal_publishes_nothing(ros: Ros, monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with open(tmp_path / "stdin", "w+") as not_a_tty:
        monkeypatch.setattr(sys, "stdin", not_a_tty)
        keyboard = Teleop(context=ros.context, parameter_overrides=[Parameter("source", value="keyboard")])
    listener = Listener(ros.context)
    spinner = Spinner(ros.context, keyboard, listener)
    try:
        wait_for(lambda: listener.count_publishers("/cmd_vel") > 0, 10, "the teleop node's /cmd_vel publisher")
        time.sleep(0.5)  # ten of its 20 Hz periods
        assert listener.twists == [] and listener.estops == []
    finally:
        spinner.close()
        keyboard.destroy_node()
        listener.destroy_node()
    assert "falling back to no teleop (nothing published on /cmd_vel" in capfd.readouterr().err
