"""Closed loop through the ROS graph on the curriculum terrain: `s2r deploy --manifest launch/terrain_sim.yaml`
starts the sim bridge on a middle-level tile and the policy node; bench/terrain_ros.py's `ros_walk` commands
0.5 m/s on /cmd_vel, activates the policy and follows /odom (the bench's own measurement, so test and bench agree).

With the terrain student shipped at tests/data/go1_terrain_student/ (bench/terrain_ros.py's dagger student) the
robot must walk 20 s on rough ground without falling; an untrained export checks the plumbing (every period gets a
command, nothing faults, the robot starts on the named tile). Both deploy real processes: slow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from tests.ros.conftest import REPO, Ros

sys.path.insert(0, str(REPO / "bench"))
from terrain_ros import ros_walk

TASK = "Go1-Velocity-Terrain"
STUDENT = REPO / "tests" / "data" / "go1_terrain_student" / "policy.onnx"


def export_untrained_terrain(out_dir: Path) -> Path:
    import torch
    from s2r.policies.export import export_policy
    from s2r.policies.networks import ActorCritic, ActorCriticConfig
    from s2r.sim import make, task_config
    from s2r.sim.env import sample_obs

    torch.manual_seed(0)
    env = make(TASK, 2, cfg=task_config(TASK, {"backend.num_threads": 1}))
    try:
        model = ActorCritic(env.obs_dims, env.spec.action_dim, ActorCriticConfig()).eval()
        export_policy(model, env.spec, TASK, out_dir, sample_obs(env, 5, seed=0)["policy"])
    finally:
        env.close()
    return out_dir / "policy.onnx"


def walk(ros: Ros, mp: pytest.MonkeyPatch, policy: Path, tmp: Path, seconds: float, kind: str = "rough") -> dict:
    for k in ("ROS_DOMAIN_ID", "PYTHONPATH"):  # ros_walk's node and the deployment's processes: this test's domain
        mp.setenv(k, ros.env[k])
    return ros_walk(policy, kind, argparse.Namespace(level=4, speed=0.5, seconds=seconds), tmp)


@pytest.mark.slow
def test_untrained_policy_runs_the_terrain_graph(ros: Ros, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    res = walk(ros, monkeypatch, export_untrained_terrain(tmp_path / "policy"), tmp_path / "run", 2.0, "stairs_up")
    d = res["diagnostics"]
    assert res["deploy_exit_code"] == 0 and d["steps_fault"] == "0" and d["nonfinite_action"] == "0"
    assert int(d["steps_run"]) + int(d["steps_ramp"]) >= 99 and d["missed_periods"] == "0"  # lockstep: every period
    assert res["start_level"] == 4 and res["sim_seconds"] == pytest.approx(2.0, abs=0.03)


@pytest.mark.slow
@pytest.mark.skipif(not STUDENT.is_file(), reason="no terrain student shipped at tests/data/go1_terrain_student")
def test_terrain_student_walks_20s_on_rough_ground(ros: Ros, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    res = walk(ros, monkeypatch, STUDENT, tmp_path, 20.0)
    assert res["deploy_exit_code"] == 0 and res["diagnostics"]["steps_fault"] == "0"
    assert not res["fell"], res
    assert res["distance_forward_m"] >= 5.0, res  # half of the commanded 10 m at least
