"""`s2r calibrate camera|hand-eye|actuators|excite`: flags, and the calls into s2r.calibration.

Only argparse is imported at module level: `s2r --help` must not load OpenCV, SciPy or MuJoCo.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from s2r.calibration.board import BoardConfig


def _board_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("board (must match the print; measure the squares)")
    g.add_argument("--board", choices=("charuco", "chessboard"), default="charuco")
    g.add_argument("--squares", default="9x6", help="squares along x and y, e.g. 9x6 (default)")
    g.add_argument("--square-mm", type=float, default=30.0, help="square side in mm (default 30)")
    g.add_argument("--marker-mm", type=float, default=22.0, help="ArUco marker side in mm (ChArUco; default 22)")
    g.add_argument("--dictionary", default="DICT_4X4_50", help="ArUco dictionary (ChArUco; default DICT_4X4_50)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the calibrate subcommands to the `s2r calibrate` parser."""
    sub = p.add_subparsers(dest="calib_command", required=True, metavar="KIND")

    c = sub.add_parser("camera", help="camera intrinsics from board images (folder, MCAP bag or live ROS topic)")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of images")
    src.add_argument("--mcap", help="MCAP bag with a sensor_msgs/Image topic (give --topic)")
    src.add_argument("--ros-topic", help="live sensor_msgs/Image topic (needs rclpy)")
    c.add_argument("--topic", default="/camera/image_raw", help="image topic inside --mcap")
    c.add_argument("--every", type=int, default=1, help="keep every n-th bag image (default 1)")
    c.add_argument("--count", type=int, default=30, help="images to grab from --ros-topic (default 30)")
    c.add_argument("--period", type=float, default=1.5, help="seconds between grabs from --ros-topic")
    c.add_argument("--min-images", type=int, default=8)
    c.add_argument("--k3", choices=("auto", "free", "fixed"), default="auto",
                   help="radial term k3: auto (default) frees it only when it lowers the held-out reprojection "
                   "error; free; fixed (held at zero)")
    c.add_argument("--fix-k3", action="store_true", help="same as --k3 fixed")
    c.add_argument("--out", default="calibration/camera.yaml", help="output YAML (report .txt/.png beside it)")
    _board_args(c)

    h = sub.add_parser("hand-eye", help="camera pose on the flange (eye-in-hand) or in the base frame (eye-to-hand)")
    h.add_argument("--images", required=True, help="folder of board images")
    h.add_argument("--poses", help="CSV image,x,y,z,qw,qx,qy,qz of flange poses in the base frame (default "
                   "<images>/poses.csv)")
    h.add_argument("--camera", required=True, help="camera intrinsics YAML (from `s2r calibrate camera`)")
    h.add_argument("--mode", choices=("eye-in-hand", "eye-to-hand"), default="eye-in-hand")
    h.add_argument("--out", default="calibration/hand_eye.yaml", help="output YAML (report .txt/.png beside it)")
    _board_args(h)

    a = sub.add_parser("actuators", help="PD gains, latency, joint friction and armature from a logged excitation")
    a.add_argument("log", help="CSV or MCAP log of the excitation")
    a.add_argument("--model", default="go1.xml", help="robot model in s2r.sim.models (default go1.xml)")
    a.add_argument("--start", type=float, help="use the log from this time (s)")
    a.add_argument("--end", type=float, help="use the log up to this time (s)")
    a.add_argument("--state-topic", default="/joint_states", help="MCAP: sensor_msgs/JointState topic")
    a.add_argument("--command-topic", default="/forward_position_controller/commands",
                   help="MCAP: commands (JointState, or Float64MultiArray in the state topic's joint order)")
    a.add_argument("--max-latency-ms", type=float, default=30.0)
    a.add_argument("--max-iterations", type=int, default=30, help="refinement iterations (default 30)")
    a.add_argument("--out", default="calibration/actuators.yaml", help="output YAML (report .txt/.png beside it)")

    e = sub.add_parser("excite", help="write an excitation trajectory (CSV) within the robot's safety limits")
    e.add_argument("--model", default="go1.xml", help="robot model in s2r.sim.models (default go1.xml)")
    e.add_argument("--robot", default="auto",
                   help="robot config (robot.yaml) whose safety limits also apply; default: launch/robots/<model>.yaml "
                   "when it exists; 'none' for the model's limits only")
    e.add_argument("--joints", help="comma-separated joints (default: every actuated joint)")
    e.add_argument("--kind", choices=("chirp", "steps", "chirp+steps"), default="chirp+steps")
    e.add_argument("--seconds", type=float, default=10.0)
    e.add_argument("--rate", type=float, default=1000.0, help="command rate in Hz (default 1000)")
    e.add_argument("--f0", type=float, default=0.3, help="chirp start frequency, Hz")
    e.add_argument("--f1", type=float, default=6.0, help="chirp end frequency, Hz")
    e.add_argument("--amplitude", type=float, default=0.35, help="largest chirp amplitude, rad")
    e.add_argument("--step", type=float, default=0.25, help="largest step from home, rad")
    e.add_argument("--margin", type=float, default=0.1, help="distance kept from joint limits, rad")
    e.add_argument("--max-velocity", type=float, default=6.0, help="rad/s")
    e.add_argument("--torque-fraction", type=float, default=0.6, help="largest kp*jump as a share of the torque limit")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", default="calibration/excite.csv", help="output CSV (report .txt/.png beside it)")


def _board(args: argparse.Namespace) -> BoardConfig:
    from s2r.calibration.board import BoardConfig
    from s2r.calibration.schema import CalibrationError

    try:
        sx, sy = (int(v) for v in args.squares.lower().split("x"))
    except ValueError:
        raise CalibrationError(f"--squares wants COLSxROWS such as 9x6, got '{args.squares}'") from None
    return BoardConfig(kind=args.board, squares_x=sx, squares_y=sy, square_m=args.square_mm / 1000,
                       marker_m=args.marker_mm / 1000, dictionary=args.dictionary)


def run(args: argparse.Namespace) -> int:
    """Run one calibrate subcommand; errors people can act on become one line and exit code 2."""
    try:
        from s2r.calibration.schema import CalibrationError
    except ImportError as exc:  # pragma: no cover - pyyaml is a core dependency
        print(f"s2r: error: {exc}", file=sys.stderr)
        return 2
    try:
        return _COMMANDS[args.calib_command](args)
    except CalibrationError as exc:
        print(f"s2r: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"s2r: error: {exc.name or exc} is missing: install the calibration extra (pip install -e '.[calib]')",
              file=sys.stderr)
        return 2


def _done(kind: str, paths: dict[str, Path], report: Path, seconds: float) -> int:
    print(report.read_text(), end="")
    print(f"s2r: {kind} took {seconds:.2f} s; wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _camera(args: argparse.Namespace) -> int:
    from s2r.calibration.camera import CameraCalibConfig, calibrate_camera, write_camera_outputs
    from s2r.calibration.images import grab_ros_images, load_image_folder, load_mcap_images

    t0 = time.perf_counter()
    if args.images:
        images, source = load_image_folder(args.images), args.images
    elif args.mcap:
        images, source = load_mcap_images(args.mcap, args.topic, every=args.every), f"{args.mcap}:{args.topic}"
    else:
        images, source = grab_ros_images(args.ros_topic, args.count, period_s=args.period), args.ros_topic
    cfg = CameraCalibConfig(board=_board(args), min_images=args.min_images,
                            k3="fixed" if args.fix_k3 else args.k3)
    res = calibrate_camera(images, cfg, source)
    paths = write_camera_outputs(res, args.out)
    return _done("camera calibration", paths, paths["report"], time.perf_counter() - t0)


def _hand_eye(args: argparse.Namespace) -> int:
    from s2r.calibration.hand_eye import HandEyeConfig, calibrate_hand_eye, load_robot_poses, write_hand_eye_outputs
    from s2r.calibration.images import load_image_folder
    from s2r.calibration.schema import load_calibration

    t0 = time.perf_counter()
    poses_path = args.poses or str(Path(args.images) / "poses.csv")
    intr = load_calibration(args.camera, "camera_intrinsics")
    cfg = HandEyeConfig(board=_board(args), mode=args.mode.replace("-", "_"))
    res = calibrate_hand_eye(load_image_folder(args.images), load_robot_poses(poses_path), intr, cfg, args.images, poses_path)
    paths = write_hand_eye_outputs(res, cfg, args.out)
    return _done("hand-eye calibration", paths, paths["report"], time.perf_counter() - t0)


def _actuators(args: argparse.Namespace) -> int:
    from s2r.calibration.logs import read_log
    from s2r.calibration.sysid import SysIdConfig, identify_actuators
    from s2r.calibration.sysid_report import write_actuator_outputs

    t0 = time.perf_counter()
    log = read_log(args.log, start=args.start, end=args.end, state_topic=args.state_topic,
                   command_topic=args.command_topic)
    cfg = SysIdConfig(model=args.model, max_latency_s=args.max_latency_ms / 1000, max_nfev=args.max_iterations)
    res = identify_actuators(log, cfg)
    paths = write_actuator_outputs(res, args.out)
    return _done("actuator identification", paths, paths["report"], time.perf_counter() - t0)


def _excite(args: argparse.Namespace) -> int:
    from s2r.calibration.excite import ExciteConfig, generate_excitation, robot_limits, write_excitation

    t0 = time.perf_counter()
    joints = tuple(j.strip() for j in args.joints.split(",")) if args.joints else ()
    robot = None if args.robot == "none" else args.robot
    if robot == "auto":
        # The repository's robot config for this model, from the working directory or beside the package.
        name = Path(args.model).stem + ".yaml"
        found = [p for p in (Path("launch/robots") / name, Path(__file__).resolve().parents[1] / "launch/robots" / name)
                 if p.is_file()]
        robot = str(found[0]) if found else None
    limits = robot_limits(args.model, joints, robot)
    cfg = ExciteConfig(kind=args.kind, seconds=args.seconds, rate_hz=args.rate, f0_hz=args.f0, f1_hz=args.f1,
                       amplitude_rad=args.amplitude, step_rad=args.step, margin_rad=args.margin,
                       max_velocity=args.max_velocity, torque_fraction=args.torque_fraction, seed=args.seed)
    log = generate_excitation(limits, cfg)
    paths = write_excitation(log, limits, cfg, args.out)
    return _done("excitation", paths, paths["report"], time.perf_counter() - t0)


_COMMANDS = {"camera": _camera, "hand-eye": _hand_eye, "actuators": _actuators, "excite": _excite}
