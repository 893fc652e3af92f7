"""How right, and how honest, the calibrations are: trials against synthetic truth, and plain OpenCV's answer.

One trial renders views of a board through a random lens (focal length, principal point and distortion
drawn from what small robot cameras have), calibrates them the way `s2r calibrate` does, and records the
error against the truth in units of the reported 1-sigma. Over many trials, a 2-sigma interval that
holds the truth in ~95 % of them is an honest one. The same images go through the textbook OpenCV recipe
(`findChessboardCorners` + `cornerSubPix` + `calibrateCamera`) as the yardstick.

Used by the default tests (a few trials) and by `bench/calibration_coverage.py` (many).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from s2r.calibration.board import Board, BoardConfig
from s2r.calibration.camera import CameraCalibConfig, calibrate_camera
from s2r.calibration.hand_eye import HandEyeConfig, calibrate_hand_eye
from s2r.calibration.schema import CameraIntrinsics
from s2r.calibration.synthetic import (
    BoardRenderer,
    SyntheticCamera,
    board_poses_for_intrinsics,
    example_hand_eye,
    render_hand_eye_views,
)

CHESSBOARD = BoardConfig(kind="chessboard", squares_x=10, squares_y=7, square_m=0.025)


def random_camera(rng: np.random.Generator, width: int = 640, height: int = 480) -> SyntheticCamera:
    """A plausible small robot camera: 55-75 deg horizontal field of view, off-centre principal point,
    barrel or mild pincushion distortion, a little tangential distortion, k3 nonzero on some lenses."""
    fx = float(rng.uniform(420.0, 800.0))
    k3 = float(rng.uniform(-0.04, 0.04)) if rng.random() < 0.4 else 0.0
    return SyntheticCamera(width=width, height=height, fx=fx, fy=fx * float(rng.uniform(0.99, 1.01)),
                           cx=width / 2 + float(rng.uniform(-15, 15)), cy=height / 2 + float(rng.uniform(-15, 15)),
                           dist=(float(rng.uniform(-0.3, 0.05)), float(rng.uniform(-0.05, 0.15)),
                                 float(rng.normal(0, 5e-4)), float(rng.normal(0, 5e-4)), k3))


def plain_opencv(images: list[np.ndarray], board: BoardConfig, win: int = 11) -> tuple[np.ndarray, np.ndarray] | None:
    """The textbook recipe (OpenCV's calibration tutorial): classic detector, 11x11 cornerSubPix, calibrateCamera.

    Returns:
        (K, dist) or None when the board is found in fewer than 3 images.
    """
    pattern = (board.squares_x - 1, board.squares_y - 1)
    obj, img = [], []
    corners = Board(board).corners.astype(np.float32)
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 1e-3)
    for g in images:
        ok, p = cv2.findChessboardCorners(g, pattern, flags=cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE)
        if not ok:
            continue
        obj.append(corners)
        img.append(cv2.cornerSubPix(g, p, (win, win), (-1, -1), crit))
    if len(obj) < 3:
        return None
    _rms, K, D, _r, _t = cv2.calibrateCamera(obj, img, images[0].shape[::-1], None, None)
    return K, D.ravel()


@dataclass(frozen=True)
class CameraTrial:
    """One lens, one set of views: s2r's and plain OpenCV's errors, and s2r's z-scores (error / 1-sigma)."""

    fx: float
    blur_px: float
    k3_used: bool
    focal_err_pct: float  # s2r, fx
    principal_err_px: float  # s2r, distance of (cx, cy) from the truth
    z: tuple[float, float, float, float]  # s2r (fx, fy, cx, cy) error in reported sigmas
    opencv_focal_err_pct: float  # nan when plain OpenCV found too few boards
    opencv_principal_err_px: float
    lens_err_px: float  # s2r: largest pixel disagreement with the true lens over the central 80 % of the image
    opencv_lens_err_px: float


def lens_error_px(cam: SyntheticCamera, K: np.ndarray, D: np.ndarray, frac: float = 0.8) -> float:
    """Largest distance between where the true and the fitted lens send the same ray, over the central `frac`."""
    w, h = cam.width, cam.height
    u, v = np.meshgrid(np.linspace(w * (1 - frac) / 2, w * (1 + frac) / 2, 17),
                       np.linspace(h * (1 - frac) / 2, h * (1 + frac) / 2, 13))
    pix = np.stack([u.ravel(), v.ravel()], 1).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    rays = cv2.undistortPointsIter(pix, cam.intrinsic_matrix, cam.distortion, None, None, crit).reshape(-1, 2)
    pts = np.column_stack([rays, np.ones(len(rays))])
    p, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), K, D)
    return float(np.linalg.norm(p.reshape(-1, 2) - pix.reshape(-1, 2), axis=1).max())


def camera_trial(seed: int, *, views: int = 20, blur_px: float | None = None, board: BoardConfig = CHESSBOARD,
                 cam: SyntheticCamera | None = None) -> CameraTrial:
    """Render `views` of `board` through a random lens (or `cam`), calibrate with s2r and with plain OpenCV."""
    rng = np.random.default_rng(seed)
    cam = cam or random_camera(rng)
    blur = float(rng.choice([0.4, 0.8, 1.2])) if blur_px is None else blur_px
    r = BoardRenderer(cam, board, seed=seed)
    scale = cam.fx / 610.0  # keep the board a similar size in the image whatever the focal length
    poses = board_poses_for_intrinsics(r, views, seed=seed, distance=(0.32 * scale, 0.6 * scale))
    images = [r.render(T, blur_px=blur) for T in poses]
    res = calibrate_camera([(f"v{i:03d}", g) for i, g in enumerate(images)], CameraCalibConfig(board=board),
                           f"trial {seed}")
    K = res.intrinsics.intrinsic_matrix
    D = np.asarray(res.intrinsics.dist_coeffs)
    s = (*res.focal_std_px, *res.principal_std_px)
    truth = (cam.fx, cam.fy, cam.cx, cam.cy)
    est = (K[0, 0], K[1, 1], K[0, 2], K[1, 2])
    ref = plain_opencv(images, board)
    nan = math.nan
    if ref is None:
        ocv_f = ocv_c = ocv_lens = nan
    else:
        Ko, Do = ref
        ocv_f = 100 * abs(Ko[0, 0] / cam.fx - 1)
        ocv_c = float(math.hypot(Ko[0, 2] - cam.cx, Ko[1, 2] - cam.cy))
        ocv_lens = lens_error_px(cam, Ko, Do)
    return CameraTrial(
        fx=cam.fx, blur_px=blur, k3_used=bool(len(D) > 4 and D[4] != 0),
        focal_err_pct=100 * abs(K[0, 0] / cam.fx - 1), principal_err_px=float(math.hypot(K[0, 2] - cam.cx, K[1, 2] - cam.cy)),
        z=tuple(float((e - t) / sd) for e, t, sd in zip(est, truth, s, strict=True)),  # type: ignore[arg-type]
        opencv_focal_err_pct=ocv_f, opencv_principal_err_px=ocv_c,
        lens_err_px=lens_error_px(cam, K, D), opencv_lens_err_px=ocv_lens)


@dataclass(frozen=True)
class HandEyeTrial:
    """One hidden mounting, one set of robot poses: error and error in reported sigmas."""

    mode: str
    err_mm: float
    err_deg: float
    z_translation: tuple[float, float, float]  # per axis, error / 1-sigma
    z_rotation: tuple[float, float, float]  # rotation error vector (rad, axis-angle) / 1-sigma per axis


def hand_eye_trial(seed: int, *, mode: str = "eye_in_hand", poses: int = 15,
                   intrinsics: CameraIntrinsics | None = None) -> HandEyeTrial:
    """A random hidden mounting near `example_hand_eye(mode)`, rendered views and noisy flange poses, solved by s2r.

    Args:
        intrinsics: The camera calibration the solve uses; default the true one.
    """
    rng = np.random.default_rng(seed)
    cam = SyntheticCamera()
    X = example_hand_eye(mode)
    dR = cv2.Rodrigues(rng.normal(0, np.radians(8), 3))[0]
    X[:3, :3] = X[:3, :3] @ dR
    X[:3, 3] += rng.normal(0, 0.02, 3)
    board = BoardConfig()
    images, robot = render_hand_eye_views(cam, board, X, mode=mode, n=poses, seed=seed)
    intr = intrinsics or CameraIntrinsics(
        image_size=(cam.width, cam.height), camera_matrix=tuple(tuple(float(v) for v in row) for row in cam.intrinsic_matrix),
        dist_coeffs=tuple(float(v) for v in cam.dist), rms_px=0.0)
    res = calibrate_hand_eye(images, robot, intr, HandEyeConfig(board=board, mode=mode), f"trial {seed}")
    Xe = res.hand_eye.matrix
    dt = Xe[:3, 3] - X[:3, 3]
    rvec = cv2.Rodrigues(X[:3, :3].T @ Xe[:3, :3])[0].ravel()  # error in the parent frame's rotated axes
    st, sr = np.asarray(res.translation_std_m), np.asarray(res.rotation_std_rad)
    return HandEyeTrial(mode=mode, err_mm=1000 * float(np.linalg.norm(dt)), err_deg=float(np.degrees(np.linalg.norm(rvec))),
                        z_translation=tuple(float(v) for v in dt / st),  # type: ignore[arg-type]
                        z_rotation=tuple(float(v) for v in rvec / sr))  # type: ignore[arg-type]


def coverage(z: np.ndarray, k: float = 2.0) -> float:
    """Share of z-scores within +-k."""
    z = np.asarray(z, dtype=float)
    return float((np.abs(z) <= k).mean())


__all__ = ["CHESSBOARD", "CameraTrial", "HandEyeTrial", "camera_trial", "coverage", "hand_eye_trial", "lens_error_px",
           "plain_opencv", "random_camera"]
