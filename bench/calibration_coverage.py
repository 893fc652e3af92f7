"""Are the calibrations as accurate as plain OpenCV, and do their error bars hold the truth?

    python bench/calibration_coverage.py --camera-trials 60 --hand-eye-trials 30

Camera: each trial draws a lens (`s2r.calibration.accuracy.random_camera`: 55-75 deg field of view,
off-centre principal point, barrel to mild pincushion distortion, k3 on 40 % of lenses), renders 20 views of
a 10x7-square chessboard (25 mm) with tilts to +-40 deg, blur 0.4 / 0.8 / 1.2 px and sensor noise, and
calibrates them with `s2r calibrate camera`'s code and with the textbook OpenCV recipe
(findChessboardCorners + 11x11 cornerSubPix + calibrateCamera) on the same images. Reported: focal length
error (%), principal point error (px), lens disagreement over the central 80 % of the image (px), per blur
level and paired per trial, and the share of trials whose truth lies within 2 reported sigmas (goal >= 90 %).

Hand-eye: a hidden mounting drawn around the example one, 15 ChArUco views with flange poses noisy by
0.1 mm / 0.02 deg, solved by `s2r calibrate hand-eye`; coverage of its jackknife sigmas per axis, once with
the true intrinsics and once with intrinsics calibrated from that camera's own chessboard views (the
real workflow, where the intrinsics' error is shared by every view).

Writes bench/results/calibration_coverage.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from s2r.calibration.accuracy import CHESSBOARD, camera_trial, coverage, hand_eye_trial
from s2r.calibration.camera import CameraCalibConfig, calibrate_camera
from s2r.calibration.synthetic import BoardRenderer, SyntheticCamera, board_poses_for_intrinsics


def _stats(a: list[float]) -> dict:
    x = np.asarray(a, float)
    x = x[np.isfinite(x)]
    return {"median": round(float(np.median(x)), 4), "p90": round(float(np.percentile(x, 90)), 4),
            "max": round(float(x.max()), 4), "n": len(x)}


def bench_camera(n: int, seed0: int) -> dict:
    trials = []
    for i in range(n):
        t0 = time.perf_counter()
        tr = camera_trial(seed0 + i)
        trials.append({**tr.__dict__, "seconds": round(time.perf_counter() - t0, 2)})
        print(f"camera {i + 1}/{n}: f {tr.fx:.0f} blur {tr.blur_px}: s2r {tr.focal_err_pct:.3f} % {tr.principal_err_px:.2f} px"
              f" | opencv {tr.opencv_focal_err_pct:.3f} % {tr.opencv_principal_err_px:.2f} px | z {np.round(tr.z, 1)}",
              file=sys.stderr, flush=True)
    out: dict = {"trials": n, "per_blur": {}}
    keys = ("focal_err_pct", "principal_err_px", "lens_err_px")
    for blur in sorted({t["blur_px"] for t in trials}):
        sel = [t for t in trials if t["blur_px"] == blur]
        out["per_blur"][str(blur)] = {
            **{f"s2r_{k}": _stats([t[k] for t in sel]) for k in keys},
            **{f"opencv_{k}": _stats([t[f"opencv_{k}"] for t in sel]) for k in keys}}
    out["s2r"] = {k: _stats([t[k] for t in trials]) for k in keys}
    out["opencv"] = {k: _stats([t[f"opencv_{k}"] for t in trials]) for k in keys}
    out["opencv_found_too_few_boards"] = sum(not np.isfinite(t["opencv_focal_err_pct"]) for t in trials)
    for k in keys:
        pairs = [(t[k], t[f"opencv_{k}"]) for t in trials if np.isfinite(t[f"opencv_{k}"])]
        out[f"s2r_at_least_as_good_{k}"] = round(float(np.mean([a <= b for a, b in pairs])), 3)
    z = np.array([t["z"] for t in trials])
    out["coverage_2sigma"] = {name: round(coverage(z[:, j]), 3) for j, name in enumerate(("fx", "fy", "cx", "cy"))}
    out["coverage_2sigma_all_four"] = round(float((np.abs(z) <= 2).all(1).mean()), 3)
    out["k3_freed_share"] = round(float(np.mean([t["k3_used"] for t in trials])), 3)
    out["seconds_per_trial"] = _stats([t["seconds"] for t in trials])
    out["trial_list"] = trials
    return out


def calibrated_intrinsics(seed: int):
    cam = SyntheticCamera()
    r = BoardRenderer(cam, CHESSBOARD, seed=seed)
    views = [(f"v{i}", r.render(T)) for i, T in enumerate(board_poses_for_intrinsics(r, 20, seed=seed))]
    return calibrate_camera(views, CameraCalibConfig(board=CHESSBOARD), "intrinsics").intrinsics


def bench_hand_eye(n: int, seed0: int) -> dict:
    out: dict = {}
    for mode in ("eye_in_hand", "eye_to_hand"):
        for label in ("true_intrinsics", "calibrated_intrinsics"):
            rows = []
            for i in range(n):
                intr = calibrated_intrinsics(seed0 + i) if label == "calibrated_intrinsics" else None
                rows.append(hand_eye_trial(seed0 + i, mode=mode, intrinsics=intr))
            zt = np.array([r.z_translation for r in rows])
            zr = np.array([r.z_rotation for r in rows])
            out[f"{mode}/{label}"] = {
                "trials": n, "err_mm": _stats([r.err_mm for r in rows]), "err_deg": _stats([r.err_deg for r in rows]),
                "coverage_2sigma_translation_axes": round(coverage(zt), 3),
                "coverage_2sigma_rotation_axes": round(coverage(zr), 3)}
            print(f"hand-eye {mode} {label}: {out[f'{mode}/{label}']}", file=sys.stderr, flush=True)
    return out


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = res["camera"]["trial_list"]
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    for a, k, unit in ((ax[0], "focal_err_pct", "%"), (ax[1], "principal_err_px", "px")):
        x = np.array([t[f"opencv_{k}"] for t in tr])
        y = np.array([t[k] for t in tr])
        a.loglog(x, y, "o", ms=4)
        lim = [min(x[np.isfinite(x)].min(), y.min()) * 0.8, max(x[np.isfinite(x)].max(), y.max()) * 1.2]
        a.plot(lim, lim, "k--", lw=1)
        a.set_xlabel(f"plain OpenCV {k} ({unit})")
        a.set_ylabel(f"s2r {k} ({unit})")
        a.set_title("below the line: s2r closer to the truth")
    z = np.array([t["z"] for t in tr])
    ax[2].hist(z.ravel(), bins=np.linspace(-4, 4, 33), density=True, alpha=0.7, label="fx, fy, cx, cy error / sigma")
    g = np.linspace(-4, 4, 200)
    ax[2].plot(g, np.exp(-g**2 / 2) / np.sqrt(2 * np.pi), "k", lw=1, label="N(0, 1)")
    ax[2].axvline(-2, color="r", lw=0.8)
    ax[2].axvline(2, color="r", lw=0.8)
    ax[2].legend(fontsize=8)
    ax[2].set_title(f"coverage at 2 sigma: {res['camera']['coverage_2sigma']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--camera-trials", type=int, default=60)
    ap.add_argument("--hand-eye-trials", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1000, help="first trial seed (the default tests use 0..)")
    ap.add_argument("--out", default="bench/results/calibration_coverage")
    ap.add_argument("--hand-eye-only", action="store_true", help="keep the camera section of an existing --out JSON")
    args = ap.parse_args()
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    res = {"bench": "calibration_coverage", "command": "python " + " ".join(sys.argv), "cores": os.cpu_count(),
           "load_avg_1min_start": round(load0, 2)}
    old = Path(args.out).with_suffix(".json")
    if args.hand_eye_only and old.is_file():
        prev = json.loads(old.read_text())
        res["camera"], res["camera_command"] = prev["camera"], prev.get("camera_command", prev["command"])
    else:
        res["camera"] = bench_camera(args.camera_trials, args.seed)
        res["camera_command"] = res["command"]
    res["hand_eye"] = bench_hand_eye(args.hand_eye_trials, args.seed)
    res["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    res["total_seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    plot(res, out.with_suffix(".png"))
    summary = {k: v for k, v in res["camera"].items() if k not in ("trial_list", "per_blur")}
    print(json.dumps({"camera": summary, "hand_eye": res["hand_eye"]}))


if __name__ == "__main__":
    main()
