"""Hand-eye from rendered views and robot poses: accuracy against the hidden mount, and bad input."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from s2r.calibration.board import BoardConfig
from s2r.calibration.hand_eye import HandEyeConfig, calibrate_hand_eye, load_robot_poses, write_hand_eye_outputs
from s2r.calibration.images import load_image_folder
from s2r.calibration.schema import CalibrationError, load_calibration
from s2r.calibration.synthetic import write_hand_eye_dataset

from tests.calibration.conftest import HandEyeSet


def _errors(X_est: np.ndarray, X: np.ndarray) -> tuple[float, float]:
    mm = 1000 * float(np.linalg.norm(X_est[:3, 3] - X[:3, 3]))
    deg = float(np.degrees(np.arccos(np.clip((np.trace(X[:3, :3].T @ X_est[:3, :3]) - 1) / 2, -1, 1))))
    return mm, deg


@pytest.mark.parametrize("which", ["eye_in_hand_set", "eye_to_hand_set"])
def test_mount_recovered(which: str, request: pytest.FixtureRequest, camera_yaml: Path, tmp_path: Path) -> None:
    s: HandEyeSet = request.getfixturevalue(which)
    cfg = HandEyeConfig(board=s.board, mode=s.mode)
    t0 = time.perf_counter()
    res = calibrate_hand_eye(load_image_folder(s.folder), load_robot_poses(s.folder / "poses.csv"),
                             load_calibration(camera_yaml, "camera_intrinsics"), cfg, str(s.folder))
    elapsed = time.perf_counter() - t0
    mm, deg = _errors(res.hand_eye.matrix, s.X)
    assert mm <= 2.0 and deg <= 0.5
    assert res.consistent and len(res.solvers) == 7
    paths = write_hand_eye_outputs(res, cfg, tmp_path / "he.yaml")
    back = load_calibration(paths["yaml"], "hand_eye")
    np.testing.assert_allclose(back.matrix, res.hand_eye.matrix, atol=1e-8)
    assert "consistency   OK" in paths["report"].read_text()
    print(f"{s.mode}: {elapsed:.2f} s, error {mm:.3f} mm / {deg:.4f} deg, solver {res.chosen}")


def test_rotation_about_one_axis_is_refused(tmp_path: Path, camera, camera_yaml: Path) -> None:
    board = BoardConfig()
    X = np.eye(4)
    X[:3, 3] = [0.03, 0.0, 0.05]
    write_hand_eye_dataset(tmp_path, camera, board, X, n=6, seed=2, one_axis=True)
    with pytest.raises(CalibrationError, match=r"poses.csv: degenerate robot poses.*about nearly one axis.*two different axes"):
        calibrate_hand_eye(load_image_folder(tmp_path), load_robot_poses(tmp_path / "poses.csv"),
                           load_calibration(camera_yaml, "camera_intrinsics"), HandEyeConfig(board=board), str(tmp_path),
                           str(tmp_path / "poses.csv"))


def test_pose_file_problems(eye_in_hand_set: HandEyeSet, camera_yaml: Path, tmp_path: Path) -> None:
    s = eye_in_hand_set
    lines = (s.folder / "poses.csv").read_text().splitlines()
    short = tmp_path / "short.csv"
    short.write_text("\n".join(lines[:-1]) + "\n")  # the last image has no pose
    intr = load_calibration(camera_yaml, "camera_intrinsics")
    with pytest.raises(CalibrationError, match=r"short.csv: no robot pose for image\(s\) pose_011.png"):
        calibrate_hand_eye(load_image_folder(s.folder), load_robot_poses(short), intr, HandEyeConfig(), str(s.folder),
                           str(short))
    bad = tmp_path / "bad.csv"
    bad.write_text(lines[0] + "\n" + "pose_000.png,0,0,0,1,1,0,0\n")
    with pytest.raises(CalibrationError, match=r"bad.csv:2: quaternion .* norm 1.4142"):
        load_robot_poses(bad)
    cols = tmp_path / "cols.csv"
    cols.write_text("image,x,y,z\npose_000.png,0,0,0\n")
    with pytest.raises(CalibrationError, match="needs the columns"):
        load_robot_poses(cols)
    with pytest.raises(CalibrationError, match="needs a ChArUco board"):
        calibrate_hand_eye(load_image_folder(s.folder), load_robot_poses(s.folder / "poses.csv"), intr,
                           HandEyeConfig(board=BoardConfig(kind="chessboard")), str(s.folder))
