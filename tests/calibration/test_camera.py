"""Camera intrinsics from rendered board images: accuracy against the hidden truth, and bad input."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from s2r.calibration.board import Board, BoardConfig
from s2r.calibration.camera import CameraCalibConfig, calibrate_camera, write_camera_outputs
from s2r.calibration.images import load_image_folder, load_mcap_images, write_mcap_images
from s2r.calibration.schema import CalibrationError, load_calibration
from s2r.calibration.synthetic import BoardRenderer, board_poses_for_intrinsics, write_intrinsics_dataset

from tests.calibration.conftest import ImageSet


def test_renderer_puts_corners_where_the_truth_says(camera) -> None:
    """The synthetic images themselves: detected corners sit on the true projections (tests the test data)."""
    r = BoardRenderer(camera, BoardConfig(), seed=1)
    board = Board(BoardConfig())
    errs = []
    for T in board_poses_for_intrinsics(r, 4, seed=7):
        det = board.detect(r.render(T))
        assert det is not None
        errs.append(det.image_points - r.project(T)[det.ids])
    e = np.concatenate(errs)
    assert np.sqrt((e**2).sum(1).mean()) < 0.2


def test_charuco_intrinsics_recovered(intrinsics_set: ImageSet, tmp_path: Path) -> None:
    cam = intrinsics_set.cam
    t0 = time.perf_counter()
    res = calibrate_camera(load_image_folder(intrinsics_set.folder), CameraCalibConfig(board=intrinsics_set.board),
                           str(intrinsics_set.folder))
    elapsed = time.perf_counter() - t0
    K = res.intrinsics.intrinsic_matrix
    assert abs(K[0, 0] / cam.fx - 1) < 0.005 and abs(K[1, 1] / cam.fy - 1) < 0.005
    assert abs(K[0, 2] - cam.cx) < 3.0 and abs(K[1, 2] - cam.cy) < 3.0
    assert res.intrinsics.rms_px <= 0.3
    assert [v.name for v in res.rejected] == ["bent_000.png"]  # the bent board is the outlier
    assert all(v.rms_px <= 0.3 for v in res.used)
    # The lens model maps pixels back to the right rays wherever the views put corners (outside that it
    # extrapolates, which the coverage report warns about).
    pts = np.concatenate(res.image_points).reshape(-1, 1, 2).astype(np.float64)
    rays = cv2.undistortPoints(pts, cam.intrinsic_matrix, cam.distortion).reshape(-1, 2)
    proj, _ = cv2.projectPoints(np.column_stack([rays, np.ones(len(rays))]), np.zeros(3), np.zeros(3), K,
                                res.intrinsics.distortion)
    assert np.abs(proj - pts).max() < 1.5  # px; 0.5 % of focal length alone is up to 1.5 px at these radii
    paths = write_camera_outputs(res, tmp_path / "camera.yaml")
    assert load_calibration(paths["yaml"], "camera_intrinsics") == res.intrinsics
    text = paths["report"].read_text()
    assert "bent_000.png" in text and "coverage" in text and "RMS error" in text
    assert cv2.imread(str(paths["figure"])).shape[0] > 400
    print(f"charuco intrinsics: {elapsed:.2f} s, fx err {100 * (K[0, 0] / cam.fx - 1):+.3f} %, rms "
          f"{res.intrinsics.rms_px:.3f} px")


def test_chessboard_intrinsics_recovered(tmp_path: Path, camera) -> None:
    board = BoardConfig(kind="chessboard", squares_x=9, squares_y=7, square_m=0.025)
    write_intrinsics_dataset(tmp_path, camera, board, 12, seed=11)
    res = calibrate_camera(load_image_folder(tmp_path), CameraCalibConfig(board=board), str(tmp_path))
    K = res.intrinsics.intrinsic_matrix
    assert abs(K[0, 0] / camera.fx - 1) < 0.005 and abs(K[1, 1] / camera.fy - 1) < 0.005
    assert res.intrinsics.rms_px <= 0.3


def test_images_from_an_mcap_bag(intrinsics_set: ImageSet, tmp_path: Path) -> None:
    images = load_image_folder(intrinsics_set.folder)
    bag = write_mcap_images(images, tmp_path / "cam.mcap", "/camera/image_raw")
    from_bag = load_mcap_images(bag, "/camera/image_raw")
    assert len(from_bag) == len(images)
    assert all((a[1] == b[1]).all() for a, b in zip(images, from_bag, strict=True))
    with pytest.raises(CalibrationError, match=r"has no topic '/cam/wrong'.*--topic"):
        load_mcap_images(bag, "/cam/wrong")


def test_too_few_images(intrinsics_set: ImageSet) -> None:
    images = load_image_folder(intrinsics_set.folder)[:4]
    with pytest.raises(CalibrationError, match=r"only 4 of 4 images show the board.*at least 8.*more pictures"):
        calibrate_camera(images, CameraCalibConfig(board=intrinsics_set.board), "somewhere")


def test_no_board_found_names_the_settings(intrinsics_set: ImageSet) -> None:
    wrong = BoardConfig(dictionary="DICT_5X5_50")
    with pytest.raises(CalibrationError) as exc:
        calibrate_camera(load_image_folder(intrinsics_set.folder), CameraCalibConfig(board=wrong),
                         str(intrinsics_set.folder))
    msg = str(exc.value)
    assert str(intrinsics_set.folder) in msg and "no board found" in msg and "DICT_5X5_50" in msg and "--dictionary" in msg


def test_degenerate_fronto_parallel_views(tmp_path: Path, camera) -> None:
    board = BoardConfig()
    write_intrinsics_dataset(tmp_path, camera, board, 9, fronto_parallel=True)
    with pytest.raises(CalibrationError, match=r"degenerate board poses.*tilt it"):
        calibrate_camera(load_image_folder(tmp_path), CameraCalibConfig(board=board), str(tmp_path))


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="no such image folder"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(CalibrationError, match="holds no images"):
        load_image_folder(tmp_path)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((48, 64), np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((40, 64), np.uint8))
    with pytest.raises(CalibrationError, match=r"b\.png: is 64x40 but a\.png is 64x48"):
        load_image_folder(tmp_path)
