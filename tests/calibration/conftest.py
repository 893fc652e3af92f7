"""Synthetic ground truth for the calibration tests, made once per session.

The fixtures write what hardware would give (images, robot pose CSVs, joint logs) to temporary folders
and keep the truth beside them; tests hand the calibration code only the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from s2r.calibration.board import BoardConfig
from s2r.calibration.synthetic import SyntheticCamera, example_hand_eye

LEG = ("FR_hip_joint", "FR_thigh_joint", "FR_calf_joint")


@dataclass(frozen=True)
class ImageSet:
    folder: Path
    cam: SyntheticCamera
    board: BoardConfig


@dataclass(frozen=True)
class HandEyeSet:
    folder: Path
    cam: SyntheticCamera
    board: BoardConfig
    X: np.ndarray  # the truth: flange <- camera (eye-in-hand) or base <- camera (eye-to-hand)
    mode: str


@pytest.fixture(scope="session")
def camera() -> SyntheticCamera:
    return SyntheticCamera()


@pytest.fixture(scope="session")
def intrinsics_set(tmp_path_factory: pytest.TempPathFactory, camera: SyntheticCamera) -> ImageSet:
    """18 good ChArUco views plus one of a bent board (bent_000.png) that outlier rejection must drop."""
    from s2r.calibration.synthetic import write_intrinsics_dataset

    folder = tmp_path_factory.mktemp("charuco_views")
    board = BoardConfig()
    write_intrinsics_dataset(folder, camera, board, 18, seed=3, bad=1)
    return ImageSet(folder, camera, board)


def _hand_eye_set(tmp_path_factory: pytest.TempPathFactory, cam: SyntheticCamera, mode: str) -> HandEyeSet:
    from s2r.calibration.synthetic import write_hand_eye_dataset

    X = example_hand_eye(mode)
    folder = tmp_path_factory.mktemp(mode)
    board = BoardConfig()
    write_hand_eye_dataset(folder, cam, board, X, mode=mode, n=12, seed=5)
    return HandEyeSet(folder, cam, board, X, mode)


@pytest.fixture(scope="session")
def eye_in_hand_set(tmp_path_factory: pytest.TempPathFactory, camera: SyntheticCamera) -> HandEyeSet:
    return _hand_eye_set(tmp_path_factory, camera, "eye_in_hand")


@pytest.fixture(scope="session")
def eye_to_hand_set(tmp_path_factory: pytest.TempPathFactory, camera: SyntheticCamera) -> HandEyeSet:
    return _hand_eye_set(tmp_path_factory, camera, "eye_to_hand")


@pytest.fixture(scope="session")
def camera_yaml(tmp_path_factory: pytest.TempPathFactory, camera: SyntheticCamera) -> Path:
    """The true intrinsics as a calibration file (hand-eye tests isolate hand-eye from intrinsics errors)."""
    from s2r.calibration.schema import CameraIntrinsics, camera_to_dict, write_calibration

    intr = CameraIntrinsics(image_size=(camera.width, camera.height),
                            camera_matrix=tuple(tuple(r) for r in camera.intrinsic_matrix.tolist()),
                            dist_coeffs=camera.dist)
    return write_calibration(tmp_path_factory.mktemp("cam") / "camera.yaml", "camera_intrinsics", camera_to_dict(intr),
                             source="synthetic truth")


@pytest.fixture(scope="session")
def leg_log_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A front-right-leg excitation played on a robot with hidden gains, latency and friction, as CSV."""
    from s2r.calibration.excite import ExciteConfig, generate_excitation, robot_limits
    from s2r.calibration.logs import write_csv_log
    from s2r.calibration.synthetic import DEFAULT_TRUTH, simulate_actuator_log

    ex = generate_excitation(robot_limits("go1.xml", LEG), ExciteConfig(seconds=4.0, ramp_s=0.5))
    log = simulate_actuator_log(ex, DEFAULT_TRUTH, seed=1)
    return write_csv_log(log, tmp_path_factory.mktemp("leg_log") / "leg.csv")
