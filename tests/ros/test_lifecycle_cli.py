"""`s2r lifecycle` against the real policy lifecycle node over DDS: what `ros2 lifecycle` does, without ROS's CLI."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rclpy.parameter import Parameter
from s2r_ros.lifecycle_cli import LifecycleClient, LifecycleError
from s2r_ros.policy_node import PolicyNode

from tests.policy_files import GO1_ROBOT
from tests.ros.conftest import Ros, Spinner


@pytest.fixture
def policy(ros: Ros, graphs: dict[str, Path]) -> Iterator[PolicyNode]:
    """The policy node, configured and inactive (as the robot manifest brings it up), spinning."""
    params = {"policy": str(graphs["small"]), "robot": str(GO1_ROBOT), "autostart": "inactive", "executor": "single"}
    node = PolicyNode(context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    spinner = Spinner(ros.context, node)
    yield node
    spinner.close()
    node.destroy_node()


def s2r(ros: Ros, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s2r.policies.cli", "lifecycle", *argv], env=ros.env,
                          capture_output=True, text=True, timeout=60)


def test_s2r_lifecycle_lists_gets_and_activates_the_policy(ros: Ros, policy: PolicyNode) -> None:
    out = s2r(ros, "nodes")
    assert out.returncode == 0 and "/policy" in out.stdout.split(), out.stdout + out.stderr
    out = s2r(ros, "get", "/policy")
    assert out.returncode == 0 and out.stdout.strip() == "inactive", out.stdout + out.stderr
    out = s2r(ros, "list", "policy")  # a bare name means /policy
    assert out.returncode == 0 and "- activate [3]  inactive -> activating" in out.stdout, out.stdout + out.stderr
    out = s2r(ros, "set", "/policy", "activate")
    assert out.returncode == 0 and out.stdout.strip() == "/policy: active", out.stdout + out.stderr
    assert policy._state_machine.current_state[1] == "active"  # the node itself agrees


def test_transitions_and_refusals_name_what_is_offered(ros: Ros, policy: PolicyNode) -> None:
    with LifecycleClient(ros.context, timeout=10.0) as client:
        assert client.state("/policy") == "inactive"
        labels = {t[0] for t in client.transitions("/policy")}
        assert {"activate", "cleanup", "shutdown"} <= labels and "deactivate" not in labels
        with pytest.raises(LifecycleError, match=r"/policy is inactive and offers no transition 'deactivate'; "
                                                 r"it offers: .*activate"):
            client.change("/policy", "deactivate")
        assert client.change("/policy", "3") == "active"  # by id as well as by label
        assert client.change("/policy", "deactivate") == "inactive"


def test_a_missing_node_is_named_with_what_to_check(ros: Ros) -> None:
    out = s2r(ros, "--timeout", "0.5", "get", "/nobody")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "no service /nobody/get_state within 0.5 s" in out.stderr and "s2r lifecycle nodes" in out.stderr
