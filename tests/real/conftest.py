"""Fixtures for robot-runtime tests: the Go1 robot config and policy files (real exports, real ONNX)."""

from __future__ import annotations

from pathlib import Path

import pytest
from s2r.real.robot import RobotConfig, load_robot_config

from tests.policy_files import GO1_ROBOT, export_untrained_go1, export_untrained_panda_camera, write_graph


@pytest.fixture(scope="session")
def robot() -> RobotConfig:
    return load_robot_config(GO1_ROBOT)


@pytest.fixture(scope="session")
def go1_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """policy.onnx of an untrained Go1 actor, exported through s2r.policies.export."""
    return export_untrained_go1(tmp_path_factory.mktemp("go1_policy"))


@pytest.fixture(scope="session")
def camera_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """policy.onnx of an untrained Panda lift actor reading a 32x32 `workspace` camera (encoder in the graph)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return export_untrained_panda_camera(tmp_path_factory.mktemp("camera_policy"), (32, 32))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def graphs(tmp_path_factory: pytest.TempPathFactory, go1_policy: Path) -> dict[str, Path]:
    """Hand-built graphs under the Go1 metadata: small, nan, wide, dynamic_wide."""
    root = tmp_path_factory.mktemp("graphs")
    return {k: write_graph(root / k, go1_policy, k) for k in ("small", "nan", "wide", "dynamic_wide")}
