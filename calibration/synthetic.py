"""Synthetic ground truth for checking the calibration pipeline end to end.

The functions here play the part of the real world: they render images of a board seen by a camera with
known intrinsics and distortion, and record joint logs from a MuJoCo "robot" whose gains, latency and
friction were perturbed. The calibration code only ever sees what they write to disk (image files, pose
CSVs, log files), exactly as it would see data from hardware; tests and `bench/calibration.py` compare
what it recovers against the truth kept here.

Rendering: each output pixel (supersampled) is traced back through the lens model (undistort) onto the
board plane (inverse homography) and the printed board image is sampled there, so the distortion in the
picture is OpenCV's own model, applied exactly, with anti-aliased edges, light falloff and sensor noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from s2r.calibration.board import Board, BoardConfig
from s2r.calibration.logs import JointLog
from s2r.calibration.schema import matrix_to_quat


@dataclass(frozen=True, kw_only=True)
class SyntheticCamera:
    """The true camera of a synthetic data set."""

    width: int = 640
    height: int = 480
    fx: float = 610.0
    fy: float = 605.0
    cx: float = 322.5
    cy: float = 236.0
    dist: tuple[float, ...] = (-0.12, 0.06, 0.0008, -0.0005, 0.0)

    @property
    def intrinsic_matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    @property
    def distortion(self) -> np.ndarray:
        return np.asarray(self.dist, dtype=np.float64)


def rot(axis: str, deg: float) -> np.ndarray:
    """3x3 rotation about a principal axis."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i = "xyz".index(axis)
    R = np.eye(3)
    j, k = [a for a in range(3) if a != i]
    R[j, j], R[j, k], R[k, j], R[k, k] = c, -s, s, c
    return R


class BoardRenderer:
    """Renders a board at a known pose through a known camera."""

    def __init__(self, cam: SyntheticCamera, board: BoardConfig, *, supersample: int = 3, px_per_m: float = 8000.0,
                 seed: int = 0) -> None:
        self.cam = cam
        self.board = Board(board)
        self.ss = supersample
        self.ppm = px_per_m
        self.margin = board.square_m
        self.texture = self.board.image(px_per_m, self.margin).astype(np.float32)
        self.rng = np.random.default_rng(seed)
        # Undistorted normalised ray of every (supersampled) pixel: fixed per camera, so computed once.
        s = supersample
        u = (np.arange(cam.width * s) + 0.5) / s - 0.5
        v = (np.arange(cam.height * s) + 0.5) / s - 0.5
        uu, vv = np.meshgrid(u, v)
        pix = np.stack([uu.ravel(), vv.ravel()], axis=1).reshape(-1, 1, 2)
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
        rays = cv2.undistortPointsIter(pix, cam.intrinsic_matrix, cam.distortion, None, None, crit)
        rays = rays.reshape(cam.height * s, cam.width * s, 2)
        self._rays = rays.astype(np.float64)

    def render(self, T_cam_board: np.ndarray, *, noise: float = 1.5, blur_px: float = 0.6, warp: float = 0.0) -> np.ndarray:
        """Grey image of the board with pose T_cam_board (camera <- board, 4x4).

        Args:
            T_cam_board: Board pose in the camera frame.
            noise: Sensor noise standard deviation in grey levels.
            blur_px: Optical blur (Gaussian sigma, output pixels).
            warp: Bend of the board surface in metres (0 = flat); a bent board is a bad image on purpose.
        """
        R, t = T_cam_board[:3, :3], T_cam_board[:3, 3]
        H = np.column_stack([R[:, 0], R[:, 1], t])  # board (x, y, 1) -> normalised image ray
        Hinv = np.linalg.inv(H)
        x, y = self._rays[..., 0], self._rays[..., 1]
        w = Hinv[2, 0] * x + Hinv[2, 1] * y + Hinv[2, 2]
        bx = (Hinv[0, 0] * x + Hinv[0, 1] * y + Hinv[0, 2]) / w
        by = (Hinv[1, 0] * x + Hinv[1, 1] * y + Hinv[1, 2]) / w
        if warp:
            # Paper lifting off the backing: a smooth shift of the printed pattern the flat model cannot explain.
            bw, bh = self.board.cfg.size_m
            bx = bx + warp * np.sin(np.pi * by / bh) * np.sin(2 * np.pi * bx / bw)
        mx = ((bx + self.margin) * self.ppm - 0.5).astype(np.float32)
        my = ((by + self.margin) * self.ppm - 0.5).astype(np.float32)
        img = cv2.remap(self.texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=90.0)
        img[w <= 0] = 90.0  # behind the camera
        c = self.cam
        img = cv2.resize(img, (c.width, c.height), interpolation=cv2.INTER_AREA)
        # Contrast and vignetting so the board is not a perfect 0/255 pattern.
        yy, xx = np.mgrid[0 : c.height, 0 : c.width]
        r2 = ((xx - c.cx) ** 2 + (yy - c.cy) ** 2) / (c.width**2 / 4)
        img = (30 + 0.75 * img) * (1.0 - 0.15 * r2)
        if blur_px > 0:
            img = cv2.GaussianBlur(img, (0, 0), blur_px)
        img = img + self.rng.normal(0.0, noise, img.shape)
        return np.clip(img, 0, 255).round().astype(np.uint8)

    def project(self, T_cam_board: np.ndarray) -> np.ndarray:
        """True pixel positions (n, 2) of all the board's inner corners."""
        rvec, _ = cv2.Rodrigues(T_cam_board[:3, :3])
        p, _ = cv2.projectPoints(self.board.corners.astype(np.float64), rvec, T_cam_board[:3, 3], self.cam.intrinsic_matrix,
                                 self.cam.distortion)
        return p.reshape(-1, 2)

    def fully_visible(self, T_cam_board: np.ndarray, border_px: float = 12.0) -> bool:
        """True when the whole board (with its white margin) lies inside the image and in front of the camera."""
        bw, bh = self.board.cfg.size_m
        m = self.margin
        outline = np.array([[x, y, 0.0] for x in np.linspace(-m, bw + m, 9) for y in np.linspace(-m, bh + m, 7)])
        pc = outline @ T_cam_board[:3, :3].T + T_cam_board[:3, 3]
        if (pc[:, 2] < 0.05).any():
            return False
        rvec, _ = cv2.Rodrigues(T_cam_board[:3, :3])
        p, _ = cv2.projectPoints(outline, rvec, T_cam_board[:3, 3], self.cam.intrinsic_matrix, self.cam.distortion)
        p = p.reshape(-1, 2)
        c = self.cam
        return bool((p[:, 0] > border_px).all() and (p[:, 0] < c.width - border_px).all()
                    and (p[:, 1] > border_px).all() and (p[:, 1] < c.height - border_px).all())



def example_hand_eye(mode: str) -> np.ndarray:
    """A plausible hidden hand-eye transform (4x4) for synthetic tests and benchmarks.

    eye_in_hand: camera in the flange frame (a wrist camera a few cm off the flange);
    eye_to_hand: camera in the robot base frame (a fixed camera looking down at the workspace).
    """
    X = np.eye(4)
    if mode == "eye_in_hand":
        X[:3, :3] = rot("z", 90) @ rot("x", -10)
        X[:3, 3] = [0.035, -0.02, 0.06]
    elif mode == "eye_to_hand":
        X[:3, :3] = rot("x", 180) @ rot("z", 30) @ rot("x", -20)
        X[:3, 3] = [0.5, 0.3, 0.45]
    else:
        raise ValueError(f"mode must be eye_in_hand or eye_to_hand, got '{mode}'")
    return X

def board_poses_for_intrinsics(renderer: BoardRenderer, n: int, *, seed: int = 0, max_tilt_deg: float = 40.0,
                               distance: tuple[float, float] = (0.32, 0.6), tries: int = 4000) -> list[np.ndarray]:
    """Varied, fully visible board poses spread over the image: what a careful person would capture.

    Board centres aim at a grid of image positions in turn; tilts go up to `max_tilt_deg` about both axes.
    """
    rng = np.random.default_rng(seed)
    cam = renderer.cam
    bw, bh = renderer.board.cfg.size_m
    centre = np.array([bw / 2, bh / 2, 0.0])
    aims = [(u, v) for v in (0.3, 0.5, 0.7) for u in (0.3, 0.5, 0.7)]
    poses: list[np.ndarray] = []
    for k in range(tries):
        if len(poses) == n:
            break
        au, av = aims[len(poses) % len(aims)]
        d = rng.uniform(*distance)
        ray = np.array([(au * cam.width - cam.cx) / cam.fx, (av * cam.height - cam.cy) / cam.fy, 1.0])
        ray += rng.normal(0, 0.05, 3) * [1, 1, 0]
        R = rot("z", rng.uniform(-20, 20)) @ rot("x", rng.uniform(-max_tilt_deg, max_tilt_deg)) @ rot(
            "y", rng.uniform(-max_tilt_deg, max_tilt_deg))
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = ray / np.linalg.norm(ray) * d - R @ centre
        if renderer.fully_visible(T):
            poses.append(T)
        del k
    if len(poses) < n:
        raise RuntimeError(f"found only {len(poses)} of {n} visible board poses; loosen the distance range")
    return poses


def write_intrinsics_dataset(folder: str | Path, cam: SyntheticCamera, board: BoardConfig, n: int, *, seed: int = 0,
                             bad: int = 0, fronto_parallel: bool = False) -> list[np.ndarray]:
    """Render `n` views of the board into `folder` as PNG files (view_000.png ...).

    Args:
        folder: Output folder (created).
        cam: True camera.
        board: Board settings.
        n: Number of good views.
        seed: Pose and noise seed.
        bad: Extra views of a bent board (named bent_000.png ...) that outlier rejection should drop.
        fronto_parallel: Every board faces the camera squarely at one distance: a degenerate set.

    Returns:
        The true board poses of the good views (camera <- board).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    r = BoardRenderer(cam, board, seed=seed)
    if fronto_parallel:
        poses = []
        bw, bh = board.size_m
        for i in range(n):
            T = np.eye(4)
            T[:3, 3] = [(-0.06 + 0.12 * (i % 3) / 2) - bw / 2, (-0.04 + 0.08 * (i // 3 % 3) / 2) - bh / 2, 0.45]
            poses.append(T)
    else:
        poses = board_poses_for_intrinsics(r, n + bad, seed=seed)
    for i, T in enumerate(poses[:n]):
        cv2.imwrite(str(folder / f"view_{i:03d}.png"), r.render(T))
    for i, T in enumerate(poses[n:]):
        cv2.imwrite(str(folder / f"bent_{i:03d}.png"), r.render(T, warp=0.006))
    return poses[:n]


# ---- hand-eye ---------------------------------------------------------------------------------------------


def _pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def write_hand_eye_dataset(folder: str | Path, cam: SyntheticCamera, board: BoardConfig, X: np.ndarray, *,
                           mode: str = "eye_in_hand", n: int = 15, seed: int = 0, one_axis: bool = False,
                           pose_noise_mm: float = 0.1, pose_noise_deg: float = 0.02) -> dict[str, np.ndarray]:
    """Render a hand-eye data set: images plus the robot's flange poses in `folder/poses.csv`.

    Eye-in-hand: the camera rides on the flange (X = flange <- camera) and looks at a board fixed in the
    robot's base frame. Eye-to-hand: the camera is fixed (X = base <- camera) and the board rides on the
    flange. The robot poses are what forward kinematics would report; X itself is never written.

    Args:
        folder: Output folder.
        cam, board, X, mode, n, seed, one_axis, pose_noise_mm, pose_noise_deg: as `render_hand_eye_views`.

    Returns:
        name -> true camera <- board pose, for checks.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    truth: dict[str, np.ndarray] = {}
    images, robot = render_hand_eye_views(cam, board, X, mode=mode, n=n, seed=seed, one_axis=one_axis,
                                          pose_noise_mm=pose_noise_mm, pose_noise_deg=pose_noise_deg, truth=truth)
    lines = ["image,x,y,z,qw,qx,qy,qz"]
    for name, img in images:
        cv2.imwrite(str(folder / name), img)
        T = robot[name]
        q = matrix_to_quat(T[:3, :3])
        p = T[:3, 3]
        lines.append(f"{name},{p[0]:.6f},{p[1]:.6f},{p[2]:.6f},{q[0]:.8f},{q[1]:.8f},{q[2]:.8f},{q[3]:.8f}")
    (folder / "poses.csv").write_text("\n".join(lines) + "\n")
    return truth


def render_hand_eye_views(cam: SyntheticCamera, board: BoardConfig, X: np.ndarray, *, mode: str = "eye_in_hand",
                          n: int = 15, seed: int = 0, one_axis: bool = False, pose_noise_mm: float = 0.1,
                          pose_noise_deg: float = 0.02, truth: dict[str, np.ndarray] | None = None,
                          ) -> tuple[list[tuple[str, np.ndarray]], dict[str, np.ndarray]]:
    """Hand-eye views in memory: (name, image) pairs and name -> reported flange pose (4x4, base frame).

    Args:
        cam: True camera.
        board: Board settings (ChArUco).
        X: True hand-eye transform (4x4).
        mode: "eye_in_hand" or "eye_to_hand".
        n: Number of robot poses.
        seed: Seed.
        one_axis: Rotate the flange about one axis only: a degenerate set hand-eye cannot solve.
        pose_noise_mm: Position noise of the reported flange poses (robot repeatability, encoder error).
        pose_noise_deg: Orientation noise of the reported flange poses.
        truth: Filled with name -> true camera <- board pose, when given.
    """
    rng = np.random.default_rng(seed)
    r = BoardRenderer(cam, board, seed=seed)
    bw, bh = board.size_m
    centre = np.array([bw / 2, bh / 2, 0.0])
    if mode == "eye_in_hand":
        T_base_board = _pose(rot("x", 180.0), np.array([0.45, -0.1, 0.02]))  # lying on the table, face up
    else:
        T_flange_board = _pose(rot("y", 180.0) @ rot("z", 90.0), np.array([0.0, 0.0, 0.05]) - rot("y", 180.0) @ rot(
            "z", 90.0) @ centre)
        T_base_cam = X
    images: list[tuple[str, np.ndarray]] = []
    robot: dict[str, np.ndarray] = {}
    k = 0
    for _ in range(5000):
        if k == n:
            break
        d = rng.uniform(0.3, 0.5)
        if one_axis:
            # Every view differs only by a rotation about the camera's optical axis.
            R = rot("z", rng.uniform(-60, 60))
            T_cam_board = _pose(R, np.array([0, 0, 0.42]) - R @ centre)
        else:
            R = rot("z", rng.uniform(-30, 30)) @ rot("x", rng.uniform(-30, 30)) @ rot("y", rng.uniform(-30, 30))
            ray = np.array([rng.uniform(-0.15, 0.15), rng.uniform(-0.1, 0.1), 1.0])
            T_cam_board = _pose(R, ray / np.linalg.norm(ray) * d - R @ centre)
        if not r.fully_visible(T_cam_board, border_px=20):
            continue
        if mode == "eye_in_hand":
            T_base_cam = T_base_board @ np.linalg.inv(T_cam_board)
            T_base_flange = T_base_cam @ np.linalg.inv(X)
        else:
            T_base_board = T_base_cam @ T_cam_board
            T_base_flange = T_base_board @ np.linalg.inv(T_flange_board)
        name = f"pose_{k:03d}.png"
        images.append((name, r.render(T_cam_board)))
        # What forward kinematics reports: the true pose plus a little noise.
        axis = rng.normal(size=3)
        R_err = cv2.Rodrigues(axis / np.linalg.norm(axis) * np.radians(rng.normal(0, pose_noise_deg)))[0]
        robot[name] = _pose(T_base_flange[:3, :3] @ R_err, T_base_flange[:3, 3] + rng.normal(0, pose_noise_mm / 1000, 3))
        if truth is not None:
            truth[name] = T_cam_board
        k += 1
    return images, robot


# ---- actuator logs --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TrueActuators:
    """The hidden truth of a synthetic robot: per joint group values, and the command latency.

    Values are multipliers of the model's kp, kv and armature, and absolute joint friction.
    """

    kp_scale: dict[str, float]
    kv_scale: dict[str, float]
    armature_scale: dict[str, float]
    frictionloss: dict[str, float]
    damping: dict[str, float]
    latency_s: float = 0.004


DEFAULT_TRUTH = TrueActuators(
    kp_scale={"abduction": 0.86, "hip": 1.08, "knee": 0.92},
    kv_scale={"abduction": 1.3, "hip": 0.8, "knee": 1.2},
    armature_scale={"abduction": 1.3, "hip": 1.25, "knee": 0.8},
    frictionloss={"abduction": 0.25, "hip": 0.3, "knee": 0.4},
    damping={"abduction": 0.05, "hip": 0.12, "knee": 0.08},
    latency_s=0.004,
)


def true_values(truth: TrueActuators, model: str = "go1.xml") -> dict[str, dict[str, float]]:
    """Absolute per-group values of a truth for `model` (what identification should recover)."""
    import mujoco
    from s2r.calibration.sysid import GO1_GROUPS
    from s2r.sim.models import model_path

    m = mujoco.MjModel.from_xml_path(str(model_path(model)))
    out = {}
    for g in GO1_GROUPS:
        a = next(i for i in range(m.nu) if fnmatch_any(
            mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, m.actuator_trnid[i, 0]), g.joints))
        d = m.jnt_dofadr[m.actuator_trnid[a, 0]]
        out[g.name] = {"kp": m.actuator_gainprm[a, 0] * truth.kp_scale[g.name],
                       "kv": -m.actuator_biasprm[a, 2] * truth.kv_scale[g.name],
                       "armature": m.dof_armature[d] * truth.armature_scale[g.name],
                       "frictionloss": truth.frictionloss[g.name], "damping": truth.damping[g.name]}
    return out


def fnmatch_any(name: str, patterns: tuple[str, ...]) -> bool:
    import fnmatch

    return any(fnmatch.fnmatch(name, p) for p in patterns)


def simulate_actuator_log(excitation: JointLog, truth: TrueActuators = DEFAULT_TRUTH, *, model: str = "go1.xml",
                          base_body: str = "trunk", substeps: int = 20, q_noise: float = 1e-4, qd_noise: float = 0.01,
                          tau_noise: float = 0.05, settle_s: float = 1.0, integrator: str = "implicitfast",
                          seed: int = 0) -> JointLog:
    """Play an excitation on a MuJoCo "robot" with hidden actuator values and record what its sensors report.

    The robot is the model on a stand, simulated `substeps` times finer than the log rate (so the identifier,
    which simulates at the log rate, does not share its discretisation), with the commands delayed by
    `truth.latency_s` and held between samples. Encoder, velocity and torque readings get Gaussian noise.

    Args:
        excitation: Targets to play (t, target); the output keeps its time base.
        truth: Hidden actuator values.
        model: Robot model.
        base_body: Body held by the stand.
        substeps: Physics steps per log sample.
        q_noise: Encoder noise (rad).
        qd_noise: Velocity noise (rad/s).
        tau_noise: Torque-sensing noise (Nm).
        settle_s: Time the robot holds the first target before logging starts (it sags under gravity).
        integrator: MuJoCo integrator standing in for continuous time (with small `substeps` steps).
        seed: Noise seed.
    """
    import mujoco
    from s2r.calibration.rig import build_rig
    from s2r.calibration.sysid import GO1_GROUPS
    from s2r.sim.models import model_path

    dt = float(np.median(np.diff(excitation.t)))
    h = dt / substeps
    lat = round(truth.latency_s / h)
    m = build_rig(model, excitation.joints, base_body, h, integrator)
    d = mujoco.MjData(m)
    names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, m.actuator_trnid[a, 0]) for a in range(m.nu)]
    act = np.array([names.index(j) for j in excitation.joints])
    for a, name in enumerate(names):
        g = next(gr.name for gr in GO1_GROUPS if fnmatch_any(name, gr.joints))
        dof = m.jnt_dofadr[m.actuator_trnid[a, 0]]
        kp = m.actuator_gainprm[a, 0] * truth.kp_scale[g]
        m.actuator_gainprm[a, 0], m.actuator_biasprm[a, 1] = kp, -kp
        m.actuator_biasprm[a, 2] *= truth.kv_scale[g]
        m.dof_armature[dof] *= truth.armature_scale[g]
        m.dof_frictionloss[dof] = truth.frictionloss[g]
        m.dof_damping[dof] = truth.damping[g]
    mujoco.mj_setConst(m, d)
    full = mujoco.MjModel.from_xml_path(str(model_path(model)))
    fnames = [mujoco.mj_id2name(full, mujoco.mjtObj.mjOBJ_JOINT, full.actuator_trnid[a, 0]) for a in range(full.nu)]
    home = full.key("home").ctrl
    hold = np.array([home[fnames.index(n)] for n in names])
    qadr = m.jnt_qposadr[m.actuator_trnid[act, 0]]
    vadr = m.jnt_dofadr[m.actuator_trnid[act, 0]]
    for a in range(m.nu):
        d.qpos[m.jnt_qposadr[m.actuator_trnid[a, 0]]] = hold[a]
    ctrl = hold.copy()
    ctrl[act] = excitation.target[0]
    d.ctrl[:] = ctrl
    for _ in range(int(settle_s / h)):
        mujoco.mj_step(m, d)
    d.time = 0.0
    n = len(excitation.t)
    q, qd, tau = np.empty((n, len(act))), np.empty((n, len(act))), np.empty((n, len(act)))
    for i in range(n):
        for s in range(substeps):
            k = i * substeps + s - lat  # fine step whose command is acting now
            c = hold.copy()
            c[act] = excitation.target[max(k, 0) // substeps]
            d.ctrl[:] = c
            if s == 0:
                mujoco.mj_forward(m, d)  # actuator_force of the current state and command: the motor torque now
                q[i], qd[i], tau[i] = d.qpos[qadr], d.qvel[vadr], d.actuator_force[act]
            mujoco.mj_step(m, d)
    rng = np.random.default_rng(seed)
    return JointLog(source="synthetic", joints=excitation.joints, t=excitation.t.copy(), target=excitation.target.copy(),
                    q=q + rng.normal(0, q_noise, q.shape), qd=qd + rng.normal(0, qd_noise, qd.shape),
                    tau=tau + rng.normal(0, tau_noise, tau.shape))
