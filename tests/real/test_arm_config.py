"""The arm robot config: panda.yaml loads, and bad files are refused with one sentence naming the field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from s2r.real.arm import ArmConfig, ArmKinematics, load_any_robot_config
from s2r.real.robot import RobotConfig, RobotConfigError

from tests.policy_files import GO1_ROBOT, REPO

PANDA = REPO / "launch" / "robots" / "panda.yaml"


def test_kinds_load() -> None:
    assert isinstance(load_any_robot_config(PANDA), ArmConfig)
    assert isinstance(load_any_robot_config(GO1_ROBOT), RobotConfig)


def test_home_pose_tcp_points_down() -> None:
    arm = load_any_robot_config(PANDA)
    pos, rot, jac = ArmKinematics(arm.kinematic_chain).forward(np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]))
    assert jac.shape == (3, 7)
    assert 0.25 < pos[0] < 0.4 and abs(pos[1]) < 1e-3 and 0.3 < pos[2] < 0.6
    assert np.allclose(rot[:, 2], [0.0, 0.0, -1.0], atol=1e-2)  # hand z along -z


def _write(tmp_path: Path, **changes: object) -> Path:
    raw = yaml.safe_load(PANDA.read_text())
    for k, v in changes.items():
        if v is None:
            raw.pop(k)
        else:
            raw[k] = v
    path = tmp_path / "arm.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(("changes", "message"), [
    ({"kind": "wheel"}, "'kind' is 'wheel'"),
    ({"max_speed": None}, r"missing keys \['max_speed'\]"),
    ({"workspace_lo": [0, 0, 0]}, r"unknown keys \['workspace_lo'\]"),
    ({"workspace_high": [0.75, 0.35, -0.5]}, "workspace z range"),
    ({"joint_names": ["joint1", "joint2"]}, "'kinematic_chain' turns joints"),
    ({"gripper_width": [0.08, 0.0]}, "'gripper_width'"),
    ({"max_target_step": -1}, "'max_target_step' must be a positive number"),
    ({"kinematic_chain": [{"joint": "joint1"}]}, r"kinematic_chain\[0\] must be a mapping with 'pos'"),
])
def test_bad_arm_config(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    with pytest.raises(RobotConfigError, match=message):
        load_any_robot_config(_write(tmp_path, **changes))
