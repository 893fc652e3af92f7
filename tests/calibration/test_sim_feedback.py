"""Identified actuator values become the centre of a task's domain randomisation with one config line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from s2r.calibration.schema import (
    ActuatorCalibration,
    ActuatorGroup,
    CalibrationError,
    actuators_to_dict,
    write_calibration,
)
from s2r.sim import make, task_config

TASK = "Go1-Velocity-Flat"


def _calibration(tmp_path: Path, joints: tuple[str, ...] = ("*_calf_joint",), latency_s: float = 0.035) -> Path:
    groups = (
        ActuatorGroup(name="abduction", joints=("*_hip_joint",), kp=31.5, kv=0.5, frictionloss=0.2, damping=0.05,
                      armature=0.006, kp_nominal=35.0, kv_nominal=0.5),
        ActuatorGroup(name="knee", joints=joints, kp=31.5, kv=0.6, frictionloss=0.4, damping=0.08, armature=0.008,
                      kp_nominal=35.0, kv_nominal=0.5),
    )
    cal = ActuatorCalibration(model="go1.xml", latency_s=latency_s, timestep_s=0.001, groups=groups)
    return write_calibration(tmp_path / "act.yaml", "actuators", actuators_to_dict(cal), source="test")


def test_one_config_line_recentres_the_task(tmp_path: Path) -> None:
    path = _calibration(tmp_path)
    cfg = task_config(TASK, {"randomization.calibration": str(path)})
    env = make(TASK, num_envs=2, cfg=cfg, seed=0)
    try:
        r = env.cfg.randomization
        # kp 31.5 of 35 on the joints the file covers (abduction and knee groups; thighs keep their values)
        assert np.mean(r.motor_strength) == pytest.approx(0.9)
        assert r.motor_strength[1] - r.motor_strength[0] == pytest.approx(0.2)  # width kept
        assert r.action_latency_steps == (1, 3)  # 35 ms at 20 ms control steps -> centre 2, width 2 kept
        m = env.model
        names = env.joint_names
        calf = [m.jnt_dofadr[m.actuator_trnid[a, 0]] for a, n in enumerate(names) if n.endswith("_calf_joint")]
        thigh = [m.jnt_dofadr[m.actuator_trnid[a, 0]] for a, n in enumerate(names) if n.endswith("_thigh_joint")]
        np.testing.assert_allclose(m.dof_frictionloss[calf], 0.4)
        np.testing.assert_allclose(m.dof_armature[calf], 0.008)
        # kv 0.6 where motor_strength 0.9 gives 0.45: the missing 0.15 joins the joint damping
        np.testing.assert_allclose(m.dof_damping[calf], 0.08 + 0.6 - 0.9 * 0.5)
        np.testing.assert_allclose(m.dof_damping[thigh], 0.1)  # not calibrated: the model's value
        obs = env.reset()
        for _ in range(3):
            obs, rew, *_ = env.step(np.zeros((2, 12)))
        assert np.isfinite(obs["policy"]).all() and np.isfinite(rew).all()
        # Idempotent: a config that already went through it (as saved in a checkpoint) gives the same ranges.
        env2 = make(TASK, num_envs=1, cfg=env.cfg, seed=0)
        assert env2.cfg.randomization == env.cfg.randomization
        env2.close()
    finally:
        env.close()


def test_calibration_for_another_robot_is_refused(tmp_path: Path) -> None:
    path = _calibration(tmp_path, joints=("*_elbow_joint",))
    cfg = task_config(TASK, {"randomization.calibration": str(path)})
    with pytest.raises(CalibrationError, match=r"act.yaml: group 'knee' .* matches none of the model's actuated joints"):
        make(TASK, num_envs=1, cfg=cfg)
    cfg = task_config(TASK, {"randomization.calibration": str(tmp_path / "missing.yaml")})
    with pytest.raises(CalibrationError, match="no such calibration file"):
        make(TASK, num_envs=1, cfg=cfg)
