"""Hand-eye calibration: where the camera sits on the robot (eye-in-hand) or in the cell (eye-to-hand).

Input: images of a ChArUco board, each with the robot flange pose that forward kinematics reported when
it was taken (a CSV), and the camera's intrinsics. The board pose in each image comes from solvePnP; the
transform X comes from every OpenCV solver (Tsai, Park, Horaud, Andreff, Daniilidis, and the robot-world
solvers Shah and Li). The solver whose X makes the board's pose most constant across views is chosen,
and all solvers are compared with it: if they disagree beyond a few millimetres, the data (poses, timing
of images against robot states, intrinsics) deserve suspicion, and the report says so.

Frames: eye-in-hand X = flange <- camera, the board is fixed in the base frame; eye-to-hand X = base <-
camera, the board is fixed to the flange.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from s2r.calibration import plot
from s2r.calibration.board import Board, BoardConfig
from s2r.calibration.images import Images
from s2r.calibration.schema import (
    CalibrationError,
    CameraIntrinsics,
    HandEye,
    hand_eye_to_dict,
    matrix_to_quat,
    quat_to_matrix,
    write_calibration,
)

HAND_EYE_SOLVERS = {
    "tsai": cv2.CALIB_HAND_EYE_TSAI,
    "park": cv2.CALIB_HAND_EYE_PARK,
    "horaud": cv2.CALIB_HAND_EYE_HORAUD,
    "andreff": cv2.CALIB_HAND_EYE_ANDREFF,
    "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS,
}
ROBOT_WORLD_SOLVERS = {"shah": cv2.CALIB_ROBOT_WORLD_HAND_EYE_SHAH, "li": cv2.CALIB_ROBOT_WORLD_HAND_EYE_LI}
MODES = ("eye_in_hand", "eye_to_hand")


@dataclass(frozen=True, kw_only=True)
class HandEyeConfig:
    """Settings of a hand-eye calibration.

    Attributes:
        board: The ChArUco board (a chessboard's pose is ambiguous by a half turn, so it is refused).
        mode: "eye_in_hand" (camera on the flange) or "eye_to_hand" (camera fixed, board on the flange).
        min_poses: Fewest usable robot poses.
        min_rotation_deg: Robot rotations smaller than this between two poses say nothing about X.
        min_axis_spread_deg: The rotation axes between poses must differ by at least this much; rotating
            about one axis only leaves X unobservable along it.
        max_pnp_rms_px: A view whose board fit is worse than this is dropped (blur, bad detection).
        max_disagreement_mm: Solvers further apart than this (translation) flag the result as inconsistent.
        max_disagreement_deg: Same for rotation.
    """

    board: BoardConfig = field(default_factory=BoardConfig)
    mode: str = "eye_in_hand"
    min_poses: int = 5
    min_rotation_deg: float = 10.0
    min_axis_spread_deg: float = 20.0
    max_pnp_rms_px: float = 1.0
    max_disagreement_mm: float = 2.0
    max_disagreement_deg: float = 0.5


@dataclass(frozen=True)
class SolverResult:
    """One solver's answer and how well it explains the data."""

    name: str
    X: np.ndarray  # 4x4
    residual_mm: float  # RMS spread of the board position implied by each view
    residual_deg: float  # RMS spread of the board orientation
    diff_mm: float = 0.0  # distance from the chosen solver's X
    diff_deg: float = 0.0


@dataclass(frozen=True)
class HandEyeResult:
    """Outcome of `calibrate_hand_eye`."""

    hand_eye: HandEye
    source: str
    solvers: tuple[SolverResult, ...]
    chosen: str
    consistent: bool
    views_used: tuple[str, ...]
    views_dropped: tuple[tuple[str, str], ...]
    pnp_rms_px: tuple[float, ...]
    per_view_mm: tuple[float, ...]  # chosen solver's board-position deviation per used view
    per_view_deg: tuple[float, ...]
    board_pose: np.ndarray  # base <- board (eye-in-hand) or flange <- board (eye-to-hand)
    seconds: float
    translation_std_m: tuple[float, float, float] = (float("nan"),) * 3  # jackknife 1-sigma per axis
    rotation_std_rad: tuple[float, float, float] = (float("nan"),) * 3  # about X's own axes
    intrinsics_in_sigma: bool = False  # the camera's std_px was propagated into the sigmas


def load_robot_poses(path: str | Path) -> dict[str, np.ndarray]:
    """Flange poses in the robot base frame from a CSV with header `image,x,y,z,qw,qx,qy,qz` (metres).

    Raises:
        CalibrationError: Missing file or columns, a value that is not a number, a duplicate image name, or a
            quaternion far from unit length; the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: no such robot pose file; write one line 'image,x,y,z,qw,qx,qy,qz' per picture "
                               "(flange pose in the base frame, metres, unit quaternion)")
    need = ["image", "x", "y", "z", "qw", "qx", "qy", "qz"]
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
        header = rows[0].keys() if rows else []
    missing = [c for c in need if c not in header]
    if missing or not rows:
        raise CalibrationError(f"{path}: needs the columns {','.join(need)}; missing {missing or 'all rows'}")
    out: dict[str, np.ndarray] = {}
    for line, row in enumerate(rows, start=2):
        try:
            x, y, z, qw, qx, qy, qz = (float(row[c]) for c in need[1:])
        except (TypeError, ValueError):
            raise CalibrationError(f"{path}:{line}: every column but 'image' must be a number, got {row}") from None
        q = np.array([qw, qx, qy, qz])
        if abs(np.linalg.norm(q) - 1.0) > 1e-2:
            raise CalibrationError(f"{path}:{line}: quaternion ({qw}, {qx}, {qy}, {qz}) has norm {np.linalg.norm(q):.4f}; "
                                   "give a unit quaternion in (w, x, y, z) order")
        name = row["image"].strip()
        if name in out:
            raise CalibrationError(f"{path}:{line}: image '{name}' appears twice; one pose per picture")
        T = np.eye(4)
        T[:3, :3] = quat_to_matrix(q)
        T[:3, 3] = (x, y, z)
        out[name] = T
    return out


def _inv(T: np.ndarray) -> np.ndarray:
    Ti = np.eye(4)
    Ti[:3, :3] = T[:3, :3].T
    Ti[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return Ti


def _angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def _rot_axis(R: np.ndarray) -> np.ndarray:
    v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    n = np.linalg.norm(v)
    return v / n if n > 1e-12 else v


def _pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, np.ravel(t)
    return T


def _check_motion(G: list[np.ndarray], names: list[str], cfg: HandEyeConfig, source: str) -> None:
    """Refuse robot motions that leave X unobservable: tiny rotations or rotations about one axis only."""
    axes = []
    for i in range(len(G)):
        for j in range(i + 1, len(G)):
            Rij = G[i][:3, :3].T @ G[j][:3, :3]
            if _angle_deg(Rij) >= cfg.min_rotation_deg:
                axes.append(_rot_axis(Rij))
    if len(axes) < 2:
        raise CalibrationError(
            f"{source}: degenerate robot poses: no two of the {len(G)} poses differ by {cfg.min_rotation_deg:.0f} deg or "
            "more in orientation, so the camera offset cannot be observed. Move the flange through tilts of 20-40 deg "
            "about at least two axes while keeping the board in view")
    A = np.asarray(axes)
    # Largest angle between any two axes (a rotation about -a is one about a).
    cos = np.abs(A @ A.T)
    spread = float(np.degrees(np.arccos(np.clip(cos.min(), 0.0, 1.0))))
    if spread < cfg.min_axis_spread_deg:
        raise CalibrationError(
            f"{source}: degenerate robot poses: all rotations between the {len(G)} poses ({', '.join(names[:4])}, ...) are "
            f"about nearly one axis (spread {spread:.1f} deg, need {cfg.min_axis_spread_deg:.0f}); X is then unobservable "
            "along that axis. Tilt the flange about two different axes as well (e.g. roll and pitch by +-20-30 deg)")


def _board_poses(G: list[np.ndarray], C: list[np.ndarray], X: np.ndarray, mode: str) -> list[np.ndarray]:
    """The board pose each view implies for a candidate X (constant for the true X)."""
    if mode == "eye_in_hand":
        return [g @ X @ c for g, c in zip(G, C, strict=True)]
    return [_inv(g) @ X @ c for g, c in zip(G, C, strict=True)]


def _mean_pose(Ts: list[np.ndarray]) -> np.ndarray:
    R = sum(T[:3, :3] for T in Ts)
    U, _, Vt = np.linalg.svd(R)
    Rm = U @ np.diag([1, 1, np.linalg.det(U @ Vt)]) @ Vt  # chordal mean, projected back onto SO(3)
    return _pose(Rm, np.mean([T[:3, 3] for T in Ts], axis=0))


def _spread(Ts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    M = _mean_pose(Ts)
    mm = np.array([1000 * np.linalg.norm(T[:3, 3] - M[:3, 3]) for T in Ts])
    deg = np.array([_angle_deg(M[:3, :3].T @ T[:3, :3]) for T in Ts])
    return M, mm, deg


def calibrate_hand_eye(images: Images, poses: dict[str, np.ndarray], intrinsics: CameraIntrinsics, cfg: HandEyeConfig,
                       source: str = "images", poses_source: str = "poses.csv") -> HandEyeResult:
    """Solve for the camera's mounting from board views and robot flange poses.

    Args:
        images: (name, grey image) pairs; each name must appear in `poses`.
        poses: Image name -> flange pose in the base frame (4x4), from forward kinematics.
        intrinsics: The camera's calibration (same image size).
        cfg: Settings.
        source: Where the images came from, for messages.
        poses_source: Where the poses came from, for messages.

    Raises:
        CalibrationError: A chessboard, mismatched image sizes or names, too few usable views, or degenerate
            robot motion.
    """
    t0 = time.perf_counter()
    if cfg.mode not in MODES:
        raise CalibrationError(f"hand-eye mode '{cfg.mode}' is unknown; use eye_in_hand or eye_to_hand")
    if cfg.board.kind != "charuco":
        raise CalibrationError("hand-eye needs a ChArUco board: a chessboard's pose is ambiguous by a half turn, which "
                               "would corrupt the solution. Print a ChArUco board (--board charuco)")
    h, w = images[0][1].shape[:2]
    if (w, h) != tuple(intrinsics.image_size):
        raise CalibrationError(f"{source}: images are {w}x{h} but the camera calibration is for "
                               f"{intrinsics.image_size[0]}x{intrinsics.image_size[1]}; calibrate this camera mode first")
    no_pose = [n for n, _ in images if n not in poses]
    if no_pose:
        raise CalibrationError(f"{poses_source}: no robot pose for image(s) {', '.join(no_pose[:5])}; add a line per "
                               f"image (names as in {source}), or remove those images")
    board = Board(cfg.board)
    K, D = intrinsics.intrinsic_matrix, intrinsics.distortion
    G, C, names, pnp_rms = [], [], [], []
    views: list[tuple[np.ndarray, np.ndarray]] = []
    dropped: list[tuple[str, str]] = []
    for name, img in images:
        det = board.detect(img)
        if det is None:
            dropped.append((name, "no board found"))
            continue
        obj = det.object_points.astype(np.float64)
        ok, rvec, tvec = cv2.solvePnP(obj, det.image_points.astype(np.float64), K, D, flags=cv2.SOLVEPNP_IPPE)
        if not ok:
            dropped.append((name, "solvePnP failed"))
            continue
        rvec, tvec = cv2.solvePnPRefineLM(obj, det.image_points.astype(np.float64), K, D, rvec, tvec)
        proj, _ = cv2.projectPoints(obj, rvec, tvec, K, D)
        rms = float(np.sqrt(((proj.reshape(-1, 2) - det.image_points) ** 2).sum(1).mean()))
        if rms > cfg.max_pnp_rms_px:
            dropped.append((name, f"board fit {rms:.2f} px > {cfg.max_pnp_rms_px} px"))
            continue
        R, _ = cv2.Rodrigues(rvec)
        C.append(_pose(R, tvec))
        G.append(poses[name])
        views.append((obj, det.image_points.astype(np.float64)))
        names.append(name)
        pnp_rms.append(rms)
    if len(G) < cfg.min_poses:
        why = "; ".join(f"{n}: {r}" for n, r in dropped[:5])
        raise CalibrationError(f"{source}: only {len(G)} usable views (need {cfg.min_poses}); dropped {why}. Take more "
                               "views with the whole board sharp and in view")
    _check_motion(G, names, cfg, poses_source)

    sols: dict[str, np.ndarray] = {}
    for sname in (*HAND_EYE_SOLVERS, *ROBOT_WORLD_SOLVERS):
        X = _solve(sname, G, C, cfg.mode)
        if X is not None:
            sols[sname] = X
    if not sols:
        raise CalibrationError(f"{source}: every OpenCV hand-eye solver failed on these views; check {poses_source}")
    scored = []
    for sname, X in sols.items():
        if not np.isfinite(X).all():
            continue
        _M, mm, deg = _spread(_board_poses(G, C, X, cfg.mode))
        scored.append((sname, X, float(np.sqrt((mm**2).mean())), float(np.sqrt((deg**2).mean()))))
    # Board position spread mixes translation and rotation errors of X (lever arm), so it ranks solvers.
    best = min(scored, key=lambda s: s[2] / cfg.max_disagreement_mm + s[3] / cfg.max_disagreement_deg)
    Xb = best[1]
    results = []
    for sname, X, rmm, rdeg in scored:
        d_mm = 1000 * float(np.linalg.norm(X[:3, 3] - Xb[:3, 3]))
        d_deg = _angle_deg(Xb[:3, :3].T @ X[:3, :3])
        results.append(SolverResult(sname, X, rmm, rdeg, d_mm, d_deg))
    consistent = all(r.diff_mm <= cfg.max_disagreement_mm and r.diff_deg <= cfg.max_disagreement_deg for r in results)
    t_std, r_std = _jackknife_std(best[0], G, C, cfg.mode, Xb)
    if intrinsics.std_px is not None:
        # Views share the intrinsics' error, so the jackknife cannot see it: add it in quadrature.
        t_k, r_k = _intrinsics_std(best[0], G, views, intrinsics, cfg.mode, Xb)
        t_std, r_std = np.sqrt(t_std**2 + t_k**2), np.sqrt(r_std**2 + r_k**2)
    M, mm, deg = _spread(_board_poses(G, C, Xb, cfg.mode))
    parent = "flange" if cfg.mode == "eye_in_hand" else "base"
    he = HandEye(mode=cfg.mode, parent_frame=parent, child_frame="camera",
                 translation_m=tuple(float(v) for v in Xb[:3, 3]),  # type: ignore[arg-type]
                 quaternion_wxyz=tuple(float(v) for v in matrix_to_quat(Xb[:3, :3])),  # type: ignore[arg-type]
                 solver=best[0])
    return HandEyeResult(hand_eye=he, source=source, solvers=tuple(results), chosen=best[0], consistent=consistent,
                         views_used=tuple(names), views_dropped=tuple(dropped), pnp_rms_px=tuple(pnp_rms),
                         per_view_mm=tuple(mm.tolist()), per_view_deg=tuple(deg.tolist()), board_pose=M,
                         seconds=time.perf_counter() - t0, translation_std_m=tuple(t_std.tolist()),
                         rotation_std_rad=tuple(r_std.tolist()), intrinsics_in_sigma=intrinsics.std_px is not None)


def _solve(sname: str, G: list[np.ndarray], C: list[np.ndarray], mode: str) -> np.ndarray | None:
    """One OpenCV solver's X from flange poses G (base <- flange) and board poses C (camera <- board)."""
    # OpenCV's names: eye-in-hand wants gripper->base and target->cam; eye-to-hand passes base->gripper instead
    # and then returns cam->base.
    Gs = G if mode == "eye_in_hand" else [_inv(g) for g in G]
    Rc = [c[:3, :3] for c in C]
    tc = [c[:3, 3].reshape(3, 1) for c in C]
    try:
        if sname in HAND_EYE_SOLVERS:
            R, t = cv2.calibrateHandEye([g[:3, :3] for g in Gs], [g[:3, 3].reshape(3, 1) for g in Gs], Rc, tc,
                                        method=HAND_EYE_SOLVERS[sname])
            return _pose(R, t)
        # Robot-world solvers take world->cam (the board's pose in the camera) and base->gripper, and return
        # gripper->cam, whose inverse is X for eye-in-hand. Eye-to-hand swaps the roles of camera and flange.
        Ginv = [_inv(g) for g in Gs]
        _Rbw, _tbw, Rgc, tgc = cv2.calibrateRobotWorldHandEye(
            Rc, tc, [g[:3, :3] for g in Ginv], [g[:3, 3].reshape(3, 1) for g in Ginv], method=ROBOT_WORLD_SOLVERS[sname])
        return _inv(_pose(Rgc, tgc))
    except cv2.error:
        return None


def _board_pose(obj: np.ndarray, img: np.ndarray, K: np.ndarray, D: np.ndarray) -> np.ndarray | None:
    """camera <- board from one view's corners (IPPE, then Levenberg-Marquardt)."""
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, D, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        return None
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, D, rvec, tvec)
    return _pose(cv2.Rodrigues(rvec)[0], tvec)


def _intrinsics_std(sname: str, G: list[np.ndarray], views: list[tuple[np.ndarray, np.ndarray]],
                    intrinsics: CameraIntrinsics, mode: str, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-sigma of X from the intrinsics' own 1-sigma: X re-solved with each of fx, fy, cx, cy moved by one sigma."""
    K0, D = intrinsics.intrinsic_matrix, intrinsics.distortion
    t2, r2 = np.zeros(3), np.zeros(3)
    for (i, j), s in zip(((0, 0), (1, 1), (0, 2), (1, 2)), intrinsics.std_px or (), strict=True):
        if not s > 0:
            continue
        K = K0.copy()
        K[i, j] += s
        C = [_board_pose(obj, img, K, D) for obj, img in views]
        if any(c is None for c in C):
            continue
        Xi = _solve(sname, G, C, mode)  # type: ignore[arg-type]
        if Xi is None or not np.isfinite(Xi).all():
            continue
        t2 += (Xi[:3, 3] - X[:3, 3]) ** 2
        r2 += cv2.Rodrigues(X[:3, :3].T @ Xi[:3, :3])[0].ravel() ** 2
    return np.sqrt(t2), np.sqrt(r2)


def _jackknife_std(sname: str, G: list[np.ndarray], C: list[np.ndarray], mode: str,
                   X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-pose-out jackknife 1-sigma of X: translation per axis (m) and rotation per axis (rad, in X's frame).

    Robot pose noise and board-pose errors are per view, so resampling views measures what they do to X; a
    formula from the pixel residuals alone would leave the robot's share out.
    """
    ts, rs = [], []
    for i in range(len(G)):
        Xi = _solve(sname, G[:i] + G[i + 1:], C[:i] + C[i + 1:], mode)
        if Xi is None or not np.isfinite(Xi).all():
            continue
        ts.append(Xi[:3, 3])
        rs.append(cv2.Rodrigues(X[:3, :3].T @ Xi[:3, :3])[0].ravel())
    n = len(ts)
    if n < 3:
        return np.full(3, np.nan), np.full(3, np.nan)
    t, r = np.asarray(ts), np.asarray(rs)
    return (np.sqrt((n - 1) / n * ((t - t.mean(0)) ** 2).sum(0)), np.sqrt((n - 1) / n * ((r - r.mean(0)) ** 2).sum(0)))


# ---- report ------------------------------------------------------------------------------------------------


def report_text(r: HandEyeResult, cfg: HandEyeConfig) -> str:
    """Human-readable summary with the solver comparison."""
    he = r.hand_eye
    X = he.matrix
    rpy = np.degrees(_rpy(X[:3, :3]))
    lines = [
        "s2r hand-eye calibration",
        f"source        {r.source}",
        f"mode          {he.mode}: pose of the camera in the {he.parent_frame} frame",
        f"views         {len(r.views_used)} used, {len(r.views_dropped)} dropped; board fit (PnP) RMS "
        f"{np.sqrt(np.mean(np.square(r.pnp_rms_px))):.3f} px",
        f"translation   {1000 * X[0, 3]:.2f} {1000 * X[1, 3]:.2f} {1000 * X[2, 3]:.2f} mm",
        f"rotation      roll {rpy[0]:.3f} pitch {rpy[1]:.3f} yaw {rpy[2]:.3f} deg; quaternion wxyz "
        f"{' '.join(f'{v:.6f}' for v in he.quaternion_wxyz)}",
        f"1 sigma       {' '.join(f'{1000 * v:.2f}' for v in r.translation_std_m)} mm, "
        f"{' '.join(f'{np.degrees(v):.3f}' for v in r.rotation_std_rad)} deg about the camera axes "
        + ("(leave-one-pose-out jackknife, plus the camera calibration's own uncertainty)" if r.intrinsics_in_sigma
           else "(leave-one-pose-out jackknife; the camera file has no std_px, so its uncertainty is not included)"),
        f"solver        {r.chosen} (smallest spread of the implied board pose)",
        f"consistency   {'OK' if r.consistent else 'INCONSISTENT'}: solvers agree within "
        f"{max(s.diff_mm for s in r.solvers):.2f} mm / {max(s.diff_deg for s in r.solvers):.3f} deg "
        f"(limit {cfg.max_disagreement_mm} mm / {cfg.max_disagreement_deg} deg)",
        f"time          {r.seconds:.2f} s",
    ]
    if not r.consistent:
        lines.append("advice        solvers disagree: check that each robot pose was read when its image was taken "
                     "(no motion in between), that intrinsics are for this camera mode, and add views with larger "
                     "rotations about different axes")
    lines += ["", f"{'solver':12s} {'board spread mm':>16s} {'deg':>7s} {'vs chosen mm':>13s} {'deg':>7s}"]
    for s in sorted(r.solvers, key=lambda s: s.residual_mm):
        lines.append(f"{s.name:12s} {s.residual_mm:16.3f} {s.residual_deg:7.3f} {s.diff_mm:13.3f} {s.diff_deg:7.3f}")
    lines += ["", f"{'view':28s} {'pnp px':>7s} {'board dev mm':>13s} {'deg':>7s}"]
    for n, p, m, d in zip(r.views_used, r.pnp_rms_px, r.per_view_mm, r.per_view_deg, strict=True):
        lines.append(f"{n:28s} {p:7.3f} {m:13.3f} {d:7.3f}")
    for n, why in r.views_dropped:
        lines.append(f"{n:28s} dropped: {why}")
    return "\n".join(lines) + "\n"


def _rpy(R: np.ndarray) -> np.ndarray:
    return np.array([np.arctan2(R[2, 1], R[2, 2]), np.arcsin(-np.clip(R[2, 0], -1, 1)), np.arctan2(R[1, 0], R[0, 0])])


def report_figure(r: HandEyeResult) -> np.ndarray:
    """Solver disagreement and per-view board consistency as one picture."""
    idx = np.arange(len(r.solvers), dtype=float)
    a = plot.Panel("solvers vs chosen (" + ", ".join(f"{i}={s.name}" for i, s in enumerate(r.solvers)) + ")",
                   "solver", "mm / deg")
    a.add("translation mm", idx, [s.diff_mm for s in r.solvers], points=True, color=0)
    a.add("rotation deg", idx, [s.diff_deg for s in r.solvers], points=True, color=1)
    b = plot.Panel("board pose spread per solver", "solver", "mm / deg")
    b.add("mm", idx, [s.residual_mm for s in r.solvers], points=True, color=0)
    b.add("deg", idx, [s.residual_deg for s in r.solvers], points=True, color=1)
    v = np.arange(len(r.views_used), dtype=float)
    c = plot.Panel(f"implied board pose per view ({r.chosen})", "view", "mm / deg")
    c.add("deviation mm", v, r.per_view_mm, color=0).add("deviation deg", v, r.per_view_deg, color=1)
    d = plot.Panel("board fit per view", "view", "px")
    d.add("PnP RMS", v, r.pnp_rms_px, color=2)
    return plot.figure([a, b, c, d], cols=2)


def write_hand_eye_outputs(r: HandEyeResult, cfg: HandEyeConfig, out: str | Path) -> dict[str, Path]:
    """Write the calibration YAML, the text report (.txt) and the figure (.png) side by side."""
    out = Path(out)
    rep = {"chosen_solver": r.chosen, "consistent": r.consistent, "seconds": r.seconds,
           "translation_std_m": list(r.translation_std_m), "rotation_std_rad": list(r.rotation_std_rad),
           "solvers": {s.name: {"translation_m": s.X[:3, 3], "quaternion_wxyz": matrix_to_quat(s.X[:3, :3]),
                                "board_spread_mm": s.residual_mm, "board_spread_deg": s.residual_deg,
                                "vs_chosen_mm": s.diff_mm, "vs_chosen_deg": s.diff_deg} for s in r.solvers},
           "views_used": list(r.views_used), "views_dropped": [f"{n}: {w}" for n, w in r.views_dropped]}
    y = write_calibration(out, "hand_eye", hand_eye_to_dict(r.hand_eye), source=r.source, report=rep)
    txt = out.with_suffix(".txt")
    txt.write_text(report_text(r, cfg))
    png = plot.save_png(out.with_suffix(".png"), report_figure(r))
    return {"yaml": y, "report": txt, "figure": png}
