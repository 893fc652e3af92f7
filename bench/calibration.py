"""Accuracy and run time of every calibration against synthetic ground truth the calibration never sees.

    python bench/calibration.py            # full: 25 camera views, 15 hand-eye poses, 1-leg and 12-joint sysid
    python bench/calibration.py --quick    # smaller sets, single-leg sysid only

What is measured (each calibration reads only files, as on hardware):
- camera: ChArUco and chessboard views rendered with known intrinsics and distortion (one bent-board view
  added that outlier rejection must drop): focal length error (%), principal point error (px), RMS
  reprojection error (px), seconds.
- hand-eye: eye-in-hand and eye-to-hand, flange poses with 0.1 mm / 0.02 deg noise; once with the true
  intrinsics and once with the intrinsics calibrated above (the real workflow): mm / deg error, seconds.
- actuators: the excitation from `s2r calibrate excite`, played on a MuJoCo robot on a stand with hidden
  kp, kv, latency, Coulomb + viscous friction and armature (simulated 20x finer with another integrator,
  with sensor noise); worst relative parameter error over all groups, latency error, position fit error
  before/after, seconds. Also a log without torque (positions only), where kv cannot be separated from
  viscous friction.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from s2r.calibration.board import BoardConfig
from s2r.calibration.camera import CameraCalibConfig, calibrate_camera
from s2r.calibration.excite import ExciteConfig, generate_excitation, robot_limits
from s2r.calibration.hand_eye import HandEyeConfig, calibrate_hand_eye, load_robot_poses
from s2r.calibration.images import load_image_folder
from s2r.calibration.logs import read_log, write_csv_log
from s2r.calibration.schema import CameraIntrinsics
from s2r.calibration.synthetic import (
    DEFAULT_TRUTH,
    SyntheticCamera,
    example_hand_eye,
    simulate_actuator_log,
    true_values,
    write_hand_eye_dataset,
    write_intrinsics_dataset,
)
from s2r.calibration.sysid import PARAMS, SysIdConfig, identify_actuators

LEG = ("FR_hip_joint", "FR_thigh_joint", "FR_calf_joint")


def bench_camera(root: Path, cam: SyntheticCamera, board: BoardConfig, n: int, name: str) -> tuple[dict, CameraIntrinsics]:
    folder = root / name
    write_intrinsics_dataset(folder, cam, board, n, seed=21, bad=1)
    t0 = time.perf_counter()
    res = calibrate_camera(load_image_folder(folder), CameraCalibConfig(board=board), str(folder))
    secs = time.perf_counter() - t0
    K = res.intrinsics.intrinsic_matrix
    return {
        "views": n, "fx_err_pct": round(100 * (K[0, 0] / cam.fx - 1), 4), "fy_err_pct": round(100 * (K[1, 1] / cam.fy - 1), 4),
        "cx_err_px": round(K[0, 2] - cam.cx, 3), "cy_err_px": round(K[1, 2] - cam.cy, 3),
        "rms_px": round(res.intrinsics.rms_px, 4), "rejected": [v.name for v in res.rejected], "seconds": round(secs, 3),
    }, res.intrinsics


def bench_hand_eye(root: Path, cam: SyntheticCamera, board: BoardConfig, mode: str, n: int,
                   intrinsics: dict[str, CameraIntrinsics]) -> dict:
    X = example_hand_eye(mode)
    folder = root / mode
    write_hand_eye_dataset(folder, cam, board, X, mode=mode, n=n, seed=8)
    out: dict = {"poses": n}
    for label, intr in intrinsics.items():
        t0 = time.perf_counter()
        res = calibrate_hand_eye(load_image_folder(folder), load_robot_poses(folder / "poses.csv"), intr,
                                 HandEyeConfig(board=board, mode=mode), str(folder))
        secs = time.perf_counter() - t0
        Xe = res.hand_eye.matrix
        deg = np.degrees(np.arccos(np.clip((np.trace(X[:3, :3].T @ Xe[:3, :3]) - 1) / 2, -1, 1)))
        out[label] = {"err_mm": round(1000 * float(np.linalg.norm(Xe[:3, 3] - X[:3, 3])), 4), "err_deg": round(float(deg), 5),
                      "solver": res.chosen, "solvers_agree": res.consistent,
                      "solver_spread_mm": round(max(s.diff_mm for s in res.solvers), 3), "seconds": round(secs, 3)}
    return out


def bench_sysid(root: Path, joints: tuple[str, ...], seconds: float, name: str, torque: bool = True) -> dict:
    ex = generate_excitation(robot_limits("go1.xml", joints), ExciteConfig(seconds=seconds))
    log = simulate_actuator_log(ex, DEFAULT_TRUTH, seed=3)
    if not torque:
        log = replace(log, tau=None)
    path = write_csv_log(log, root / f"{name}.csv")
    t0 = time.perf_counter()
    res = identify_actuators(read_log(path), SysIdConfig())
    secs = time.perf_counter() - t0
    truth = true_values(DEFAULT_TRUTH)
    errs = {f"{g.name}.{p}": round(100 * (getattr(g, p) / truth[g.name][p] - 1), 3)
            for g in res.calibration.groups for p in PARAMS}
    fitted = dict(errs)
    if not torque:  # only kv + damping is identifiable from positions alone
        for g in res.calibration.groups:
            t = truth[g.name]
            fitted.pop(f"{g.name}.kv")
            fitted.pop(f"{g.name}.damping")
            fitted[f"{g.name}.kv+damping"] = round(100 * ((g.kv + g.damping) / (t["kv"] + t["damping"]) - 1), 3)
        errs = fitted
    return {
        "joints": len(joints), "log_s": round(float(log.t[-1]), 2), "samples": len(log.t),
        "latency_ms": round(1000 * res.calibration.latency_s, 3), "latency_true_ms": 1000 * DEFAULT_TRUTH.latency_s,
        "worst_err_pct": round(max(abs(v) for v in fitted.values()), 3), "errors_pct": errs,
        "rms_q_deg_before": round(float(np.degrees(res.before.rms_q)), 4),
        "rms_q_deg_after": round(float(np.degrees(res.after.rms_q)), 5),
        "seconds": round(secs, 2), "stage_seconds": {k: round(v, 2) for k, v in res.stage_seconds.items()},
        "iterations": res.iterations,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    t_all = time.perf_counter()
    cam = SyntheticCamera()
    out: dict = {"bench": "calibration", "quick": args.quick, "cores": len(os.sched_getaffinity(0)),
                 "camera_truth": {"fx": cam.fx, "fy": cam.fy, "cx": cam.cx, "cy": cam.cy, "dist": list(cam.dist)}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        charuco = BoardConfig()
        out["camera_charuco"], intr = bench_camera(root, cam, charuco, 12 if args.quick else 25, "charuco")
        out["camera_chessboard"], _ = bench_camera(root, cam, BoardConfig(kind="chessboard", squares_x=9, squares_y=7,
                                                                           square_m=0.025), 10 if args.quick else 20, "chess")
        truth_intr = CameraIntrinsics(image_size=(cam.width, cam.height),
                                      camera_matrix=tuple(tuple(r) for r in cam.intrinsic_matrix.tolist()), dist_coeffs=cam.dist)
        both = {"true_intrinsics": truth_intr, "calibrated_intrinsics": intr}
        n = 10 if args.quick else 15
        out["hand_eye_in_hand"] = bench_hand_eye(root, cam, charuco, "eye_in_hand", n, both)
        out["hand_eye_to_hand"] = bench_hand_eye(root, cam, charuco, "eye_to_hand", n, both)
        out["sysid_leg"] = bench_sysid(root, LEG, 4.0 if args.quick else 6.0, "leg")
        if not args.quick:
            out["sysid_leg_no_torque"] = bench_sysid(root, LEG, 6.0, "leg_pos", torque=False)
            all_joints = robot_limits("go1.xml").joints
            out["sysid_12_joints"] = bench_sysid(root, all_joints, 6.0, "stand")
    out["total_seconds"] = round(time.perf_counter() - t_all, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
