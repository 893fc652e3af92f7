"""Camera intrinsics from pictures of a ChArUco board or chessboard.

Steps: detect the board in every image; calibrate with OpenCV (pinhole + radial-tangential distortion);
drop the worst image while it is an outlier (its RMS far above the median: motion blur, a bent board, a
mis-detection) and calibrate again; then refuse results the views cannot support (too few images, poses
that never tilt the board, so the focal length is unobservable). The report gives the reprojection error
of every image, how well the views cover the image and the range of board poses, and a picture of the
residuals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from s2r.calibration import plot
from s2r.calibration.board import Board, BoardConfig, Detection
from s2r.calibration.images import Images
from s2r.calibration.schema import CalibrationError, CameraIntrinsics, camera_to_dict, write_calibration


@dataclass(frozen=True, kw_only=True)
class CameraCalibConfig:
    """Settings of an intrinsics calibration.

    Attributes:
        board: The printed board.
        min_images: Fewest usable views (after outlier rejection) to accept a calibration.
        outlier_factor: A view is an outlier when its RMS exceeds this multiple of the median RMS ...
        outlier_min_px: ... and this many pixels (sharp images have tiny medians; do not chase noise).
        max_rejected_fraction: Give up, rather than reject more than this share of the views.
        min_tilt_deg: At least one view must tilt the board this far from facing the camera: without
            tilt, focal length and distance cannot be told apart.
        max_focal_rel_std: Refuse a result whose focal length 1-sigma uncertainty exceeds this fraction.
        k3: The radial term k3: "auto" frees it only when it lowers the held-out reprojection error (views
            left out in turn are fitted with intrinsics calibrated on the others), "free" always, "fixed"
            never (held at zero). A free k3 on a lens that does not need it trades accuracy at the image
            edges for overfitting.
        k3_folds: Folds of that held-out comparison.
        coverage_grid: Cells per image side in the coverage report.
    """

    board: BoardConfig = field(default_factory=BoardConfig)
    min_images: int = 8
    outlier_factor: float = 3.0
    outlier_min_px: float = 0.5
    max_rejected_fraction: float = 0.34
    min_tilt_deg: float = 15.0
    max_focal_rel_std: float = 0.005
    k3: str = "auto"
    k3_folds: int = 5
    coverage_grid: int = 5


@dataclass(frozen=True)
class ViewStat:
    """One image's part in the calibration."""

    name: str
    corners: int
    rms_px: float
    used: bool
    note: str = ""
    tilt_deg: float = float("nan")
    distance_m: float = float("nan")


@dataclass(frozen=True)
class CameraCalibResult:
    """Outcome of `calibrate_camera`."""

    intrinsics: CameraIntrinsics
    source: str
    board: BoardConfig
    views: tuple[ViewStat, ...]
    not_found: tuple[str, ...]
    focal_std_px: tuple[float, float]
    principal_std_px: tuple[float, float]
    coverage: float
    empty_regions: tuple[str, ...]
    seconds: float
    k3_choice: str = ""  # "free" or "fixed", and why
    heldout_rms_px: tuple[float, float] = (float("nan"), float("nan"))  # (k3 fixed, k3 free); nan unless k3="auto"
    image_points: tuple[np.ndarray, ...] = ()  # per used view, (n, 2)
    residuals: tuple[np.ndarray, ...] = ()  # per used view, projected - detected, (n, 2)

    @property
    def used(self) -> list[ViewStat]:
        return [v for v in self.views if v.used]

    @property
    def rejected(self) -> list[ViewStat]:
        return [v for v in self.views if not v.used]


def _calibrate(dets: list[Detection], size: tuple[int, int], flags: int) -> tuple:
    obj = [d.object_points.astype(np.float32) for d in dets]
    img = [d.image_points.reshape(-1, 1, 2).astype(np.float32) for d in dets]
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-12)
    return cv2.calibrateCameraExtended(obj, img, size, None, None, flags=flags, criteria=crit)


def calibrate_camera(images: Images, cfg: CameraCalibConfig, source: str = "images") -> CameraCalibResult:
    """Calibrate intrinsics from views of the board.

    Args:
        images: (name, grey image) pairs, one image size.
        cfg: Settings.
        source: Where the images came from (a folder, bag or topic), named in messages and the report.

    Raises:
        CalibrationError: No board in any image, too few usable images, too many outliers, or degenerate
            poses; the message names the source and the fix.
    """
    t0 = time.perf_counter()
    if not images:
        raise CalibrationError(f"{source}: no images to calibrate from")
    if cfg.k3 not in ("auto", "free", "fixed"):
        raise CalibrationError(f"k3 mode '{cfg.k3}' is unknown; use auto, free or fixed")
    board = Board(cfg.board)
    h, w = images[0][1].shape[:2]
    names, dets, not_found = [], [], []
    for name, img in images:
        d = board.detect(img)
        if d is None:
            not_found.append(name)
        else:
            names.append(name)
            dets.append(d)
    if not dets:
        near = neighbour_board(images, cfg.board)
        if near is not None:
            raise CalibrationError(
                f"{source}: no {cfg.board.squares_x}x{cfg.board.squares_y}-square board found, but a "
                f"{near.squares_x}x{near.squares_y} board is there; did you mean --squares "
                f"{near.squares_x}x{near.squares_y}? (--squares counts squares, not the inner corners OpenCV's "
                "pattern size counts)")
        raise CalibrationError(
            f"{source}: no board found in any of the {len(images)} images. Check that the board settings "
            f"({cfg.board.describe()}) match the printed board (--board, --squares, --square-mm, --marker-mm, "
            "--dictionary) and that the board is in focus, well lit and entirely in view")
    if len(dets) < cfg.min_images:
        missing = f"; no board found in {len(not_found)}: {', '.join(not_found[:6])}" if not_found else ""
        raise CalibrationError(
            f"{source}: only {len(dets)} of {len(images)} images show the board{missing}. Need at least "
            f"{cfg.min_images}: take more pictures with the board in different places and tilts (up to about 40 deg)")
    # Outliers are judged with the richer model: a view the free-k3 model cannot explain is bad, not the lens.
    flags = cv2.CALIB_FIX_K3 if cfg.k3 == "fixed" else 0
    active = list(range(len(dets)))
    rejected: dict[int, str] = {}
    rejected_rms: dict[int, float] = {}
    max_reject = int(cfg.max_rejected_fraction * len(dets))
    while True:
        try:
            rms, K, D, rvecs, tvecs, std_int, _std_ext, per_view = _calibrate([dets[i] for i in active], (w, h), flags)
        except cv2.error as exc:
            raise CalibrationError(f"{source}: OpenCV could not calibrate from these views ({exc.err}); the board poses "
                                   "are probably degenerate: tilt the board and vary its distance") from None
        per_view = per_view.ravel()
        med = float(np.median(per_view))
        worst = int(np.argmax(per_view))
        if per_view[worst] <= max(cfg.outlier_factor * med, cfg.outlier_min_px):
            break
        if len(rejected) >= max_reject:
            raise CalibrationError(
                f"{source}: more than {max_reject} of {len(dets)} images disagree with the others (worst "
                f"{names[active[worst]]}: {per_view[worst]:.2f} px, median {med:.2f} px). Check that the square size "
                "matches the print, the board is flat and rigid, and the images are not motion-blurred")
        i = active.pop(worst)
        rejected[i] = f"rejected: {per_view[worst]:.2f} px vs median {med:.2f} px"
        rejected_rms[i] = float(per_view[worst])
    if len(active) < cfg.min_images:
        raise CalibrationError(f"{source}: only {len(active)} images left after dropping outliers "
                               f"({', '.join(names[i] for i in rejected)}); need {cfg.min_images}: take more pictures")
    heldout = (float("nan"), float("nan"))
    if cfg.k3 == "auto":
        heldout = _heldout_rms([dets[i] for i in active], (w, h), cfg.k3_folds)
        if heldout[1] < heldout[0]:
            k3_choice = f"free: held-out RMS {heldout[1]:.4f} px with k3, {heldout[0]:.4f} px without"
        else:
            k3_choice = f"fixed at 0: held-out RMS {heldout[0]:.4f} px without k3, {heldout[1]:.4f} px with"
            flags = cv2.CALIB_FIX_K3
            rms, K, D, rvecs, tvecs, std_int, _std_ext, per_view = _calibrate([dets[i] for i in active], (w, h), flags)
            per_view = per_view.ravel()
    else:
        k3_choice = "free (--k3 free)" if cfg.k3 == "free" else "fixed at 0 (--k3 fixed)"
    # OpenCV's 1-sigma assumes independent corner errors; errors shared by a view's corners (blur under
    # perspective, a slightly bent board) make it too small. The leave-one-view-out jackknife sees those, so
    # the report carries the larger of the two for each parameter.
    std = np.maximum(std_int.ravel()[:4], _jackknife_std([dets[i] for i in active], (w, h), flags))
    centre = np.array([*cfg.board.size_m, 0.0]) / 2
    tilts, dists, pts, res = [], [], [], []
    stats: dict[int, ViewStat] = {}
    for k, i in enumerate(active):
        R, _ = cv2.Rodrigues(rvecs[k])
        tilt = float(np.degrees(np.arccos(min(1.0, abs(R[2, 2])))))
        dist = float(np.linalg.norm(R @ centre + tvecs[k].ravel()))  # camera to board centre
        proj, _ = cv2.projectPoints(dets[i].object_points.astype(np.float64), rvecs[k], tvecs[k], K, D)
        r = proj.reshape(-1, 2) - dets[i].image_points
        tilts.append(tilt)
        dists.append(dist)
        pts.append(dets[i].image_points)
        res.append(r)
        stats[i] = ViewStat(names[i], len(dets[i].ids), float(per_view[k]), True, "", tilt, dist)
    for i, why in rejected.items():
        stats[i] = ViewStat(names[i], len(dets[i].ids), rejected_rms[i], False, why)
    fx, fy = K[0, 0], K[1, 1]
    rel = max(std[0] / fx, std[1] / fy)
    if max(tilts) < cfg.min_tilt_deg or not rel <= cfg.max_focal_rel_std:
        raise CalibrationError(
            f"{source}: degenerate board poses: the largest tilt is {max(tilts):.1f} deg (need at least "
            f"{cfg.min_tilt_deg:.0f}) and the focal length is uncertain to {100 * rel:.2f} % (limit "
            f"{100 * cfg.max_focal_rel_std:.2f} %). A board that always faces the camera cannot separate focal length "
            "from distance: tilt it 20-45 deg about both axes and include near and far views"
            + (". If the poses were varied, check --squares: a smaller chessboard pattern is also found inside a "
               "larger board" if cfg.board.kind == "chessboard" else ""))
    coverage, empty = _coverage(np.concatenate(pts), (w, h), cfg.coverage_grid)
    intr = CameraIntrinsics(image_size=(w, h), camera_matrix=tuple(tuple(float(v) for v in row) for row in K),
                            dist_coeffs=tuple(float(v) for v in D.ravel()), rms_px=float(rms),
                            std_px=tuple(float(v) for v in std[:4]))  # type: ignore[arg-type]
    return CameraCalibResult(
        intrinsics=intr, source=source, board=cfg.board,
        views=tuple(stats[i] for i in sorted(stats, key=lambda j: names[j])), not_found=tuple(not_found),
        focal_std_px=(float(std[0]), float(std[1])), principal_std_px=(float(std[2]), float(std[3])),
        coverage=coverage, empty_regions=empty, seconds=time.perf_counter() - t0, k3_choice=k3_choice,
        heldout_rms_px=heldout, image_points=tuple(pts), residuals=tuple(res))


def _jackknife_std(dets: list[Detection], size: tuple[int, int], flags: int) -> np.ndarray:
    """Leave-one-view-out jackknife standard deviation of (fx, fy, cx, cy)."""
    th = []
    for i in range(len(dets)):
        try:
            K = _calibrate(dets[:i] + dets[i + 1:], size, flags)[1]
        except cv2.error:
            continue
        th.append((K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    if len(th) < 3:
        return np.zeros(4)
    a = np.asarray(th)
    n = len(a)
    return np.sqrt((n - 1) / n * ((a - a.mean(0)) ** 2).sum(0))


def _heldout_rms(dets: list[Detection], size: tuple[int, int], folds: int) -> tuple[float, float]:
    """Reprojection RMS of views left out of the calibration, for k3 held at zero and for k3 free.

    Each fold calibrates on the other views; a left-out view's pose is then fitted (PnP) with those
    intrinsics, so only how well the lens model generalises is scored.
    """
    folds = max(2, min(folds, len(dets)))
    out = []
    for flags in (cv2.CALIB_FIX_K3, 0):
        sq, n = 0.0, 0
        for f in range(folds):
            train = [d for i, d in enumerate(dets) if i % folds != f]
            test = [d for i, d in enumerate(dets) if i % folds == f]
            try:
                _rms, K, D, *_ = _calibrate(train, size, flags)
            except cv2.error:
                return float("nan"), float("nan")
            for d in test:
                obj, img = d.object_points.astype(np.float64), d.image_points.astype(np.float64)
                ok, rv, tv = cv2.solvePnP(obj, img, K, D, flags=cv2.SOLVEPNP_ITERATIVE)
                if not ok:
                    continue
                rv, tv = cv2.solvePnPRefineLM(obj, img, K, D, rv, tv)
                p, _ = cv2.projectPoints(obj, rv, tv, K, D)
                sq += float(((p.reshape(-1, 2) - img) ** 2).sum())
                n += len(img)
        out.append(np.sqrt(sq / max(n, 1)))
    return float(out[0]), float(out[1])


def neighbour_board(images: Images, board: BoardConfig, tries: int = 3) -> BoardConfig | None:
    """A board one square larger or smaller each way (or with its sides swapped) that is in the images.

    People give OpenCV's inner-corner count (9x6 for a board of 10x7 squares) or swap the sides; this turns
    "no board found" into "did you mean". Looks at the first `tries` images only.
    """
    sx, sy = board.squares_x, board.squares_y
    sizes = [(sx + 1, sy + 1), (sx - 1, sy - 1), (sy, sx), (sy + 1, sx + 1), (sx + 1, sy), (sx, sy + 1)]
    for size in dict.fromkeys(s for s in sizes if min(s) >= 3 and s != (sx, sy)):
        try:
            cand = Board(replace(board, squares_x=size[0], squares_y=size[1]))
        except CalibrationError:
            continue
        if any(cand.detect(img) is not None for _name, img in images[:tries]):
            return cand.cfg
    return None


_REGION = {0: "top", 1: "middle", 2: "bottom"}
_REGION_X = {0: "left", 1: "centre", 2: "right"}


def _coverage(points: np.ndarray, size: tuple[int, int], n: int) -> tuple[float, tuple[str, ...]]:
    """Share of an n x n image grid holding detected corners, and the empty 3x3 regions by name."""
    w, h = size
    cells = np.zeros((n, n), bool)
    ix = np.clip((points[:, 0] / w * n).astype(int), 0, n - 1)
    iy = np.clip((points[:, 1] / h * n).astype(int), 0, n - 1)
    cells[iy, ix] = True
    coarse = np.zeros((3, 3), bool)
    coarse[np.clip((points[:, 1] / h * 3).astype(int), 0, 2), np.clip((points[:, 0] / w * 3).astype(int), 0, 2)] = True
    empty = tuple(f"{_REGION[r]}-{_REGION_X[c]}" for r in range(3) for c in range(3) if not coarse[r, c])
    return float(cells.mean()), empty


# ---- report ------------------------------------------------------------------------------------------------


def report_text(r: CameraCalibResult) -> str:
    """Human-readable summary."""
    c = r.intrinsics
    K = c.intrinsic_matrix
    used = r.used
    lines = [
        "s2r camera calibration",
        f"source       {r.source}",
        f"board        {r.board.describe()}",
        f"images       {len(r.views) + len(r.not_found)} read, {len(r.views)} with the board, {len(used)} used, "
        f"{len(r.rejected)} rejected as outliers",
        f"image size   {c.image_size[0]} x {c.image_size[1]}",
        f"fx, fy       {K[0, 0]:.3f} +- {r.focal_std_px[0]:.3f}, {K[1, 1]:.3f} +- {r.focal_std_px[1]:.3f} px (1 sigma)",
        f"cx, cy       {K[0, 2]:.3f} +- {r.principal_std_px[0]:.3f}, {K[1, 2]:.3f} +- {r.principal_std_px[1]:.3f} px",
        f"distortion   {' '.join(f'{v:+.5f}' for v in c.dist_coeffs)} (k1 k2 p1 p2 k3)",
        f"k3           {r.k3_choice}",
        f"RMS error    {c.rms_px:.3f} px",
        f"coverage     {100 * r.coverage:.0f} % of the image grid cells hold corners",
        f"tilts        {min(v.tilt_deg for v in used):.1f} .. {max(v.tilt_deg for v in used):.1f} deg; distances "
        f"{min(v.distance_m for v in used):.3f} .. {max(v.distance_m for v in used):.3f} m",
        f"time         {r.seconds:.2f} s",
    ]
    if r.empty_regions:
        lines.append(f"advice       no corners in the {', '.join(r.empty_regions)} of the image: hold the board there "
                     "too, or distortion there is extrapolated")
    if max(v.tilt_deg for v in used) < 30:
        lines.append("advice       no view tilts the board 30 deg or more: add tilted views for a steadier focal length")
    lines += ["", f"{'image':32s} {'corners':>7s} {'rms px':>7s} {'tilt':>6s} {'dist m':>7s}  note"]
    for v in r.views:
        lines.append(f"{v.name:32s} {v.corners:7d} {v.rms_px:7.3f} {v.tilt_deg:6.1f} {v.distance_m:7.3f}  {v.note}")
    for n in r.not_found:
        lines.append(f"{n:32s} {0:7d} {'':>7s} {'':>6s} {'':>7s}  no board found")
    return "\n".join(lines) + "\n"


def report_figure(r: CameraCalibResult) -> np.ndarray:
    """Coverage of the image, residual vectors, residual scatter and per-image error as one picture."""
    W, H = 640, 360
    w, h = r.intrinsics.image_size
    s = min((W - 20) / w, (H - 40) / h)
    ox, oy = (W - s * w) / 2, 30
    canvas = np.full((H, W, 3), 255, np.uint8)
    cv2.rectangle(canvas, (int(ox), int(oy)), (int(ox + s * w), int(oy + s * h)), (90, 90, 90), 1)
    allp = np.concatenate(r.image_points)
    allr = np.concatenate(r.residuals)
    mag = np.linalg.norm(allr, axis=1)
    gain = 20.0 / max(float(np.percentile(mag, 99)), 1e-6)  # 99th-percentile residual -> 20 canvas pixels
    for p, d, m in zip(allp, allr, mag, strict=True):
        a = (int(ox + s * p[0]), int(oy + s * p[1]))
        b = (int(a[0] + gain * d[0]), int(a[1] + gain * d[1]))
        col = plot.COLORS[3] if m > 0.3 else plot.COLORS[2] if m > 0.1 else plot.COLORS[0]
        cv2.line(canvas, a, b, col, 1, cv2.LINE_AA)
        cv2.circle(canvas, a, 1, col, -1)
    cv2.putText(canvas, f"corners, residual arrows x{gain / s:.0f}: blue <0.1 px, green <0.3, red >0.3",
                (10, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    scatter = plot.Panel("residuals (projected - detected)", "dx px", "dy px", equal_axes=True, circles=(0.1, 0.3))
    for k, res in enumerate(r.residuals):
        scatter.add("", res[:, 0], res[:, 1], color=k, points=True)
    per = plot.Panel("RMS per image (in name order)", "image", "px")
    idx = np.arange(len(r.views), dtype=float)
    used_mask = np.array([v.used for v in r.views])
    rms = np.array([v.rms_px for v in r.views])
    per.add("used", idx[used_mask], rms[used_mask], points=True, color=0)
    if (~used_mask).any():
        per.add("rejected", idx[~used_mask], rms[~used_mask], points=True, color=3)
    poses = plot.Panel("board poses", "distance m", "tilt deg")
    used = r.used
    poses.add("views", np.array([v.distance_m for v in used]), np.array([v.tilt_deg for v in used]), points=True)
    return plot.figure([canvas, scatter, per, poses], cols=2, w=W, h=H)


def write_camera_outputs(r: CameraCalibResult, out: str | Path) -> dict[str, Path]:
    """Write the calibration YAML, the text report (.txt) and the figure (.png) side by side."""
    out = Path(out)
    rep = {"rms_px": r.intrinsics.rms_px, "images_used": len(r.used), "images_rejected": [v.name for v in r.rejected],
           "images_without_board": list(r.not_found), "focal_std_px": list(r.focal_std_px), "coverage": r.coverage,
           "seconds": r.seconds, "board": r.board.describe(), "k3": r.k3_choice,
           "heldout_rms_px": {"k3_fixed": r.heldout_rms_px[0], "k3_free": r.heldout_rms_px[1]}}
    y = write_calibration(out, "camera_intrinsics", camera_to_dict(r.intrinsics), source=r.source, report=rep)
    txt = out.with_suffix(".txt")
    txt.write_text(report_text(r))
    png = plot.save_png(out.with_suffix(".png"), report_figure(r))
    return {"yaml": y, "report": txt, "figure": png}
