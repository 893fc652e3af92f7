"""The robot-side arm observation equals the Panda task's `policy` group for the same MuJoCo states.

The robot side sees only what an arm reports: joint encoders (arm and fingers) and an object pose from a
tracker. The TCP pose and velocity come from forward kinematics through launch/robots/panda.yaml's chain,
not from MuJoCo, so this also checks that the chain written there is the simulated arm's.
"""

from __future__ import annotations

import numpy as np
import pytest
from s2r.policies.export import build_metadata
from s2r.real.arm import ARM_TERMS, ArmKinematics, ArmState, load_any_robot_config
from s2r.real.observation import ObservationBuilder
from s2r.sim import make, task_config

from tests.policy_files import REPO

PANDA = REPO / "launch" / "robots" / "panda.yaml"


@pytest.mark.parametrize("task", ["Panda-Lift-Cube", "Panda-PickPlace-Cube"])
def test_arm_observation_parity(task: str) -> None:
    n = 4
    cfg = task_config(task, {"history_length": 2})
    env = make(task, n, cfg=cfg, seed=3)
    arm = load_any_robot_config(PANDA)
    kin = ArmKinematics(arm.kinematic_chain)
    try:
        meta = build_metadata(env.spec, task, env.obs_dims["policy"], algo="bc")
        builders = [ObservationBuilder(meta, arm.num_joints, ARM_TERMS) for _ in range(n)]
        rng = np.random.default_rng(0)
        obs = env.reset(seed=3)
        worst, moved = 0.0, 0.0
        for _ in range(40):
            qpos, qvel = env.backend.qpos, env.backend.qvel
            for i in range(n):
                s = ArmState(qpos[i, :7].copy(), qvel[i, :7].copy(), qpos[i, 7:9].copy(), qvel[i, 7:9].copy())
                s.update_kinematics(kin)
                s.object_pos[:] = qpos[i, 9:12]
                s.object_quat[:] = qpos[i, 12:16]
                s.target_pos[:] = env.target[i]
                got = builders[i].build(s, np.zeros(0), np.zeros(4))[0]
                worst = max(worst, float(np.abs(got - obs["policy"][i]).max()))
                moved = max(moved, float(np.abs(s.ee_vel).max()))
            obs, _, _, _, info = env.step(rng.uniform(-1.0, 1.0, (n, 4)))
            for i in info.get("episode", {}).get("env_ids", []):
                builders[i].reset()
        assert moved > 0.05, "the arm never moved: the velocity term was not exercised"
        assert worst < 1e-5, f"robot-side arm observation differs from the env's by {worst}"
    finally:
        env.close()
