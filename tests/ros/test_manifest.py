"""Deployment manifests -> node lists: what `ros2 launch launch/*.launch.py` and `s2r deploy` both start."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from s2r_ros.deploy import node_command, params_document, recorder_spec
from s2r_ros.manifest import ManifestError, load_manifest, node_list

from tests.ros.conftest import REPO

LAUNCH = REPO / "launch"


def test_sim_manifest_node_list() -> None:
    m = load_manifest(LAUNCH / "sim.yaml")
    nodes = {n.name: n for n in node_list(m, {"policy": "/runs/a/policy.onnx"})}
    assert list(nodes) == ["sim_bridge", "policy", "teleop"]
    pol = nodes["policy"]
    assert pol.lifecycle and pol.executable == "policy_node" and pol.package == "s2r_ros"
    assert pol.parameters["policy"] == "/runs/a/policy.onnx"
    assert pol.parameters["robot"] == str(LAUNCH / "robots" / "go1.yaml")  # $(dir) is the manifest's folder
    assert pol.parameters["autostart"] == "active" and pol.parameters["use_sim_time"] is True
    assert nodes["sim_bridge"].parameters["lockstep"] is False  # "$(arg lockstep)" read as YAML: a bool
    assert nodes["teleop"].parameters["source"] == "keyboard"
    for spec in nodes.values():  # every robot config the manifest names exists
        robot = spec.parameters.get("robot")
        assert robot is None or Path(robot).is_file()


def test_terrain_sim_manifest_passes_the_tile_to_the_bridge() -> None:
    m = load_manifest(LAUNCH / "terrain_sim.yaml")
    nodes = {n.name: n for n in node_list(m, {"policy": "p.onnx"})}
    assert list(nodes) == ["sim_bridge", "policy"]  # teleop off by default: the bench commands /cmd_vel itself
    bridge = nodes["sim_bridge"].parameters
    assert bridge["terrain_level"] == 4 and bridge["terrain_type"] == "rough" and bridge["policy"] == "p.onnx"
    nodes = {n.name: n for n in node_list(m, {"policy": "p.onnx", "terrain_level": "2", "terrain_type": "stairs_up"})}
    assert nodes["sim_bridge"].parameters["terrain_level"] == 2
    assert nodes["sim_bridge"].parameters["terrain_type"] == "stairs_up"


def test_arm_manifests_node_lists() -> None:
    sim = {n.name: n for n in node_list(load_manifest(LAUNCH / "arm_sim.yaml"), {"policy": "/runs/a/policy.onnx",
                                                                                  "lockstep": "true"})}
    assert list(sim) == ["arm_sim_bridge", "policy"]
    pol, bridge = sim["policy"], sim["arm_sim_bridge"]
    assert pol.lifecycle and pol.executable == "arm_policy_node" and bridge.executable == "arm_sim_bridge_node"
    assert pol.parameters["robot"] == str(LAUNCH / "robots" / "panda.yaml") and Path(pol.parameters["robot"]).is_file()
    assert pol.parameters["sync_object"] is True and bridge.parameters["lockstep"] is True
    robot = {n.name: n for n in node_list(load_manifest(LAUNCH / "arm.yaml"), {"policy": "p.onnx", "robot": "r.yaml"})}
    assert list(robot) == ["policy"] and robot["policy"].parameters["autostart"] == "inactive"
    assert robot["policy"].parameters["object_pose_topic"] == "/object_pose"
    assert robot["policy"].parameters["image_topic"] == "/camera/{camera}/image_raw"  # filled per camera by the node
    assert bridge.parameters["camera_rate_hz"] == 20
    with pytest.raises(ManifestError, match="robot"):
        node_list(load_manifest(LAUNCH / "arm.yaml"), {"policy": "p.onnx"})


def test_sim_manifest_arguments_and_overrides() -> None:
    m = load_manifest(LAUNCH / "sim.yaml")
    nodes = node_list(m, {"policy": "p.onnx", "teleop": "none", "lockstep": "true"}, {"policy.ramp_s": "2"})
    assert [n.name for n in nodes] == ["sim_bridge", "policy"]
    assert nodes[0].parameters["lockstep"] is True and nodes[1].parameters["ramp_s"] == 2
    with pytest.raises(ManifestError, match="argument 'policy' is required"):
        node_list(m, {})
    with pytest.raises(ManifestError, match="unknown arguments \\['polcy'\\]"):
        node_list(m, {"polcy": "x"})
    with pytest.raises(ManifestError, match=r"NODE\.PARAM with NODE one of"):
        node_list(m, {"policy": "p"}, {"brige.lockstep": "true"})


def test_robot_manifest_node_list() -> None:
    m = load_manifest(LAUNCH / "robot.yaml")
    nodes = {n.name: n for n in node_list(m, {"policy": "p.onnx", "robot": "go1.yaml"})}
    assert list(nodes) == ["policy", "teleop", "joy"]
    assert nodes["policy"].parameters["autostart"] == "inactive"  # comes up checked but not driving
    assert nodes["policy"].parameters["sensor_qos"] == "best_effort"
    assert "sim_bridge" not in nodes
    assert [n.name for n in node_list(m, {"policy": "p", "robot": "r", "joy": "false"})] == ["policy", "teleop"]
    with pytest.raises(ManifestError, match="argument 'robot' is required"):
        node_list(m, {"policy": "p.onnx"})


def test_bad_manifest_errors_name_the_entry(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  - {name: a, package: s2r_ros, executable: x, paramters: {}}\n")
    with pytest.raises(ManifestError, match="node 0: unknown keys \\['paramters'\\]"):
        load_manifest(bad)
    bad.write_text("nodes:\n  - {name: a, package: s2r_ros, executable: x, parameters: {p: '$(arg nope)'}}\n")
    with pytest.raises(ManifestError, match="\\$\\(arg nope\\) names no argument"):
        node_list(load_manifest(bad), {})


def test_deploy_commands_and_params(tmp_path: Path) -> None:
    m = load_manifest(LAUNCH / "sim.yaml")
    nodes = [recorder_spec(tmp_path / "r.mcap", m.record_topics), *node_list(m, {"policy": "p.onnx"})]
    cmd = node_command(nodes[2], Path("params.yaml"), python="python3")
    assert cmd == ["python3", "-m", "s2r_ros.policy_node", "--ros-args", "-r", "__node:=policy",
                   "--params-file", "params.yaml"]
    doc = params_document(nodes)
    assert doc["/recorder"]["ros__parameters"]["topics"][0] == "/joint_states"
    assert doc["/policy"]["ros__parameters"]["policy"] == "p.onnx"
    out = subprocess.run([sys.executable, "-m", "s2r.policies.cli", "deploy", "--manifest", str(LAUNCH / "robot.yaml"),
                          "--policy", "p.onnx", "--robot", "r.yaml", "--dry-run"], capture_output=True, text=True)
    # The robot manifest's joy_node belongs to the ROS install on the robot, which this machine lacks.
    assert out.returncode == 2 and "executable 'joy_node' of package 'joy' not found" in out.stderr
    out = subprocess.run([sys.executable, "-m", "s2r.policies.cli", "deploy", "--manifest", str(LAUNCH / "robot.yaml"),
                          "--policy", "p.onnx", "--robot", "r.yaml", "--arg", "joy:=false", "--dry-run"],
                         capture_output=True, text=True, check=True)
    assert "s2r_ros.policy_node" in out.stdout and "s2r_ros.teleop_node" in out.stdout


@pytest.mark.parametrize("name", ["sim", "robot", "arm_sim", "arm", "terrain_sim"])
def test_launch_files_build_from_their_manifest(name: str) -> None:
    """ros2 launch is not installable here: check the launch file is thin and reads the right manifest."""
    src = (LAUNCH / f"{name}.launch.py").read_text()
    tree = ast.parse(src)
    funcs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert funcs == ["generate_launch_description"]
    assert f'"{name}.yaml"' in src and "describe(" in src
    shared = ast.parse((LAUNCH / "_manifest_launch.py").read_text())
    imported = {a.name for n in ast.walk(shared) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"load_manifest", "node_list", "LifecycleNode", "Node"} <= imported
