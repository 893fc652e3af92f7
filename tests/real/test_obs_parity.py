"""The robot-side observation equals the simulator's `policy` group for the same MuJoCo states.

States come from the training env (random actions, domain randomisation on, observation noise off);
each is loaded into the sim bridge's robot stand-in, whose simulated IMU and encoders feed the real/
observation builder, the same path a deployed policy sees through ROS.
"""

from __future__ import annotations

import numpy as np
from s2r.policies.export import build_metadata
from s2r.real.observation import ObservationBuilder, RobotState
from s2r.sim import make, task_config
from s2r.sim.robot_sim import RobotSim


def test_observation_parity_with_history() -> None:
    task, n = "Go1-Velocity-Flat", 6
    cfg = task_config(task, {"randomization.observation_noise": 0.0, "history_length": 3})
    env = make(task, n, cfg=cfg, seed=7)
    sim = RobotSim(task_cfg=cfg)
    try:
        meta = build_metadata(env.spec, task, env.obs_dims["policy"])
        builders = [ObservationBuilder(meta, 12) for _ in range(n)]
        rng = np.random.default_rng(0)
        obs = env.reset(seed=7)
        worst = 0.0
        for _ in range(60):
            for i in range(n):
                sim.set_state(env.backend.state[i])
                q, qd = sim.joint_state()
                quat, gyro, _ = sim.imu()
                got = builders[i].build(RobotState(q, qd, quat, gyro), env.command[i], env.actions[i])[0]
                worst = max(worst, float(np.abs(got - obs["policy"][i]).max()))
            obs, _, _, _, info = env.step(rng.normal(0.0, 1.0, (n, 12)))
            for i in info.get("episode", {}).get("env_ids", []):
                builders[i].reset()  # the env restarts its history on reset; so does the robot on start
        assert worst < 1e-5, f"robot-side observation differs from the env's by {worst}"
    finally:
        env.close()
