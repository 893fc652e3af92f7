"""Accuracy against plain OpenCV, honest error bars, k3 by evidence, and "did you mean --squares".

Small versions of `bench/calibration_coverage.py` (which runs the same trials by the dozen).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from s2r.calibration.accuracy import CHESSBOARD, camera_trial, coverage, hand_eye_trial, plain_opencv
from s2r.calibration.board import Board
from s2r.calibration.camera import CameraCalibConfig, calibrate_camera
from s2r.calibration.synthetic import BoardRenderer, SyntheticCamera, board_poses_for_intrinsics
from s2r.policies.cli import main


@pytest.fixture(scope="module")
def camera_trials() -> list:
    # Four lenses from the bench's distribution (focal lengths 450-800 px, barrel and pincushion, k3 on some).
    return [camera_trial(seed, views=12) for seed in range(3)]


def test_corners_are_where_the_truth_says_without_bias(camera: SyntheticCamera) -> None:
    """The detector's corners on a tilted, blurred chessboard sit on the true corners (no systematic offset)."""
    r = BoardRenderer(camera, CHESSBOARD, seed=4)
    b = Board(CHESSBOARD)
    errs = []
    for T in board_poses_for_intrinsics(r, 6, seed=4):
        d = b.detect(r.render(T, blur_px=1.0))
        assert d is not None
        truth = r.project(T)
        # A chessboard's corner order is ambiguous by a half turn: compare with the closer of the two.
        e = min((d.image_points - truth, d.image_points[::-1] - truth), key=lambda a: np.abs(a).mean())
        errs.append(e)
    e = np.concatenate(errs)
    assert np.sqrt((e**2).sum(1).mean()) < 0.08  # SB's own corners: ~0.09 px RMS with a pose-dependent bias
    assert np.abs(e.mean(0)).max() < 0.01


def test_as_accurate_as_plain_opencv(camera_trials: list) -> None:
    """Focal length and principal point at least as close to the truth as the textbook OpenCV recipe."""
    s2r_f = np.array([t.focal_err_pct for t in camera_trials])
    ocv_f = np.array([t.opencv_focal_err_pct for t in camera_trials])
    s2r_c = np.array([t.principal_err_px for t in camera_trials])
    ocv_c = np.array([t.opencv_principal_err_px for t in camera_trials])
    assert np.isfinite(ocv_f).all()
    assert (s2r_f < 0.15).all() and (s2r_c < 1.0).all(), (s2r_f, s2r_c)
    assert s2r_f.mean() <= ocv_f.mean() and s2r_c.mean() <= ocv_c.mean() * 1.05, (s2r_f, ocv_f, s2r_c, ocv_c)


def test_error_bars_cover_the_truth(camera_trials: list) -> None:
    z = np.array([t.z for t in camera_trials])
    assert coverage(z, 2.0) >= 0.9, z
    assert np.abs(z).max() < 3.5, z


def test_hand_eye_error_bars_cover_the_truth() -> None:
    trials = [hand_eye_trial(seed, mode=mode, poses=12) for seed in range(2) for mode in ("eye_in_hand", "eye_to_hand")]
    zt = np.array([t.z_translation for t in trials])
    zr = np.array([t.z_rotation for t in trials])
    assert all(t.err_mm < 1.0 and t.err_deg < 0.1 for t in trials)
    assert coverage(zt) >= 0.9 and coverage(zr) >= 0.9, (zt, zr)
    # The sigmas are not vacuous: a 1 mm / 0.1 deg bar would cover anything here.
    assert np.median(np.abs(zt)) > 0.2 and np.median(np.abs(zr)) > 0.2


def _views(cam: SyntheticCamera, n: int, seed: int) -> list[tuple[str, np.ndarray]]:
    r = BoardRenderer(cam, CHESSBOARD, seed=seed)
    return [(f"v{i:02d}", r.render(T)) for i, T in enumerate(board_poses_for_intrinsics(r, n, seed=seed))]


@pytest.mark.slow  # ~15 s: the distortion-model choice; the other accuracy tests stay in the default run
def test_k3_only_when_it_helps_held_out_views() -> None:
    plain = calibrate_camera(_views(SyntheticCamera(), 12, 2), CameraCalibConfig(board=CHESSBOARD), "plain lens")
    assert plain.k3_choice.startswith("fixed") and plain.intrinsics.dist_coeffs[4] == 0.0
    assert plain.heldout_rms_px[0] <= plain.heldout_rms_px[1]
    wide = SyntheticCamera(fx=430.0, fy=430.0, dist=(-0.3, 0.12, 0.0, 0.0, -0.03))
    views = _views(wide, 12, 2)
    res = calibrate_camera(views, CameraCalibConfig(board=CHESSBOARD), "wide lens")
    assert res.k3_choice.startswith("free") and res.heldout_rms_px[1] < res.heldout_rms_px[0]
    forced = calibrate_camera(views, CameraCalibConfig(board=CHESSBOARD, k3="fixed"), "wide lens")
    assert forced.intrinsics.dist_coeffs[4] == 0.0 and "--k3 fixed" in forced.k3_choice


def test_plain_opencv_reference_runs(camera: SyntheticCamera) -> None:
    views = [g for _n, g in _views(camera, 8, 1)]
    K, _D = plain_opencv(views, CHESSBOARD)
    assert abs(K[0, 0] / camera.fx - 1) < 0.02


def test_inner_corner_count_gets_a_did_you_mean(tmp_path: Path, camera: SyntheticCamera,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    for name, img in _views(camera, 1, 5):
        cv2.imwrite(str(tmp_path / f"{name}.png"), img)
    # The user counts OpenCV's inner corners (9x6) on a board of 10x7 squares.
    argv = ["calibrate", "camera", "--images", str(tmp_path), "--board", "chessboard", "--squares", "9x6",
            "--square-mm", "25"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "a 10x7 board is there; did you mean --squares 10x7?" in err and "\n" not in err


def test_unknown_k3_mode_is_refused(camera: SyntheticCamera) -> None:
    from s2r.calibration.schema import CalibrationError

    with pytest.raises(CalibrationError, match="k3 mode 'sometimes' is unknown"):
        calibrate_camera(_views(camera, 1, 1), replace(CameraCalibConfig(board=CHESSBOARD), k3="sometimes"), "x")
