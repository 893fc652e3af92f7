"""History students of the terrain teacher, and one of them walking through the ROS graph on the curriculum terrain.

    OMP_NUM_THREADS=1 python bench/terrain_ros.py --teacher runs/bench/terrain_teacher --stages students,eval,ros \
        --students dagger,rma --student-minutes 5 --out bench/results/terrain_ros

Stages (`--stages`):
- `students`: `--algo distill` (student=dagger / rma, `--history` policy frames) on `Go1-Velocity-Terrain` from the
  `--teacher` run (bench/terrain_teacher.py), `--student-minutes` each, 1 torch thread; the students ride the
  curriculum like the teacher did.
- `eval`: each student's exported ONNX file (onnxruntime) by the walking criterion (bench/walk_eval.py) with every
  env on level `--level`, spread over the six types, with per-type numbers.
- `ros`: the `--ros-student` (default: the student with the lowest eval error) through the ROS graph, as deployed:
  `s2r deploy --manifest launch/terrain_sim.yaml` starts the MuJoCo sim bridge standing on tile (`--level`, type)
  and the policy node (lifecycle, safety layer), in lockstep; this script commands `--speed` m/s forward on
  /cmd_vel, activates the policy and follows /odom for `--seconds` s of simulated time, once per type in `--types`.
  Reported per type: distance walked forward (m), mean forward speed (m/s), lateral drift, fell (base less than
  0.14 m above the mean ground under its footprint, or tilted more than 1 rad: the task's own criteria), the
  levels crossed (tiles are 4 m: 20 s at 0.5 m/s leaves the start tile after 2 m, heading +x into the harder
  levels of the same type; `--headings 180` walks into the easier ones), and the policy node's fault counters.
Writes <out>.json after every stage (merged with what is there).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ros_ws" / "src" / "s2r_ros"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
TASK = "Go1-Velocity-Terrain"
MIN_HEIGHT, MAX_TILT = 0.14, 1.0  # LocomotionConfig.min_base_height / max_tilt_rad


def train_students(args: argparse.Namespace) -> dict:
    from s2r.policies.driver import Budget, new_run_spec, train

    out = {}
    for s in args.students.split(","):
        run = Path(args.run_root) / s
        spec = new_run_spec("distill", TASK, task_overrides={"backend.num_threads": 1, "history_length": args.history},
                            algo_overrides={"torch_threads": 1, "student": s, "teacher": args.teacher},
                            num_envs=args.student_envs, seed=args.seed, budget=Budget(minutes=args.student_minutes))
        t0, load0 = time.perf_counter(), os.getloadavg()[0]
        try:
            res = train(spec, run, progress=False)
        except Exception as exc:  # one student's failure must not lose the others' runs
            out[s] = {"run_dir": str(run), "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps({"student": s, **out[s]}), file=sys.stderr, flush=True)
            continue
        hist = json.loads((run / "history.json").read_text())
        last = next((r for r in reversed(hist) if "mean_return" in r), hist[-1])
        keep = ("mean_return", "mean_vel_error", "fall_rate", "action_mse", "latent_mse", "mean_terrain_level",
                "env_steps_per_s")
        out[s] = {"run_dir": str(run), "env_steps": res["progress"], "train_wall_s": round(time.perf_counter() - t0, 1),
                  "load_average_1min": [load0, os.getloadavg()[0]],
                  "last_training_row": {k: last[k] for k in keep if k in last}}
        print(json.dumps({"student": s, **out[s]}), file=sys.stderr, flush=True)
    return out


def eval_students(args: argparse.Namespace, names: list[str]) -> dict:
    from s2r.policies.evaluate import OnnxPolicy, one_episode_each, run_task_config
    from s2r.sim import make
    from s2r.sim.config import apply_overrides
    from walk_eval import FORWARD_ONLY, MAX_ERROR, MAX_FALL_RATE

    out = {}
    for s in names:
        run = Path(args.run_root) / s
        if not (run / "policy.onnx").is_file():
            continue
        _, cfg = run_task_config(run, {"backend.num_threads": 1, "curriculum.fixed_level": args.level})
        env = make(TASK, args.episodes, cfg=apply_overrides(cfg, FORWARD_ONLY), seed=777)
        try:
            ep = one_episode_each(OnnxPolicy(run), env, 777)
        finally:
            env.close()
        types = np.arange(args.episodes) % len(cfg.grid.types)  # TerrainCurriculum: env i has type i % n
        res = {"mean_vel_error": float(ep["vel_error"].mean()), "fall_rate": float(ep["fell"].mean()),
               "mean_return": float(ep["return"].mean()),
               "per_type": {k: {"vel_error": float(ep["vel_error"][types == i].mean()),
                                "fall_rate": float(ep["fell"][types == i].mean())}
                            for i, k in enumerate(cfg.grid.types)}}
        res["walks"] = bool(res["mean_vel_error"] <= MAX_ERROR and res["fall_rate"] < MAX_FALL_RATE)
        out[s] = res
        print(json.dumps({"eval": s, **res}), file=sys.stderr, flush=True)
    return out


class Operator:
    """Commands /cmd_vel, activates the policy, records /odom and the policy node's /diagnostics."""

    def __init__(self, vx: float) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import Twist
        from lifecycle_msgs.srv import ChangeState
        from nav_msgs.msg import Odometry
        from rclpy.executors import SingleThreadedExecutor

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("terrain_operator", context=self.ctx)
        twist = Twist()
        twist.linear.x = vx
        pub = self.node.create_publisher(Twist, "/cmd_vel", 10)
        self.node.create_timer(0.05, lambda: pub.publish(twist))
        self.odom: list[tuple[float, np.ndarray, np.ndarray]] = []
        self.diag: dict[str, str] = {}
        self.lock = threading.Lock()
        self.node.create_subscription(Odometry, "/odom", self._on_odom, 1000)
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self.diag.update({kv.key: kv.value for kv in m.status[0].values}), 10)
        self.change = self.node.create_client(ChangeState, "/policy/change_state")
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._stop = False
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self._stop:
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:
                if self._stop:
                    return
                raise

    def _on_odom(self, m: object) -> None:
        p, q = m.pose.pose.position, m.pose.pose.orientation
        with self.lock:
            self.odom.append((m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, np.array([p.x, p.y, p.z]),
                              np.array([q.w, q.x, q.y, q.z])))

    def at(self, t: float) -> tuple[float, np.ndarray, np.ndarray] | None:
        with self.lock:
            return next((o for o in self.odom if o[0] >= t - 1e-9), None)

    def activate(self) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        fut = self.change.call_async(ChangeState.Request(transition=Transition(id=Transition.TRANSITION_ACTIVATE)))
        end = time.monotonic() + 20
        while not fut.done() and time.monotonic() < end:
            time.sleep(0.01)
        return bool(fut.done() and fut.result().success)

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        self.ctx.try_shutdown()


def wait(cond: object, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.01)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def ros_walk(policy: Path, kind: str, args: argparse.Namespace, tmp: Path, heading_deg: float = 0.0) -> dict:
    """One deployment of launch/terrain_sim.yaml on tile (level, kind), the robot facing `heading_deg` (0: +x, into
    the harder levels; 180: into the easier ones): distance along that heading, speed, falls over the run."""
    from s2r.sim import task_config
    from s2r.sim.terrain.curriculum import build_grid

    tmp.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "s2r.policies.cli", "deploy", "--manifest", str(REPO / "launch" / "terrain_sim.yaml"),
           "--policy", str(policy), "--arg", f"terrain_level={args.level}", "--arg", f"terrain_type={kind}",
           "--arg", "lockstep=true", "--arg", "autostart=inactive",
           # Lockstep runs on simulated time: a loaded machine must not trip the wall-clock watchdogs.
           "--set", "policy.watchdog_timeout_s=2.0", "--set", "policy.command_timeout_s=2.0",
           "--set", f"sim_bridge.spawn_yaw={np.radians(heading_deg)}", "--log-dir", str(tmp / "logs")]
    # A process started in the background (`nohup ... &`) inherits SIGINT ignored, and so would the deployment,
    # which stops its nodes on SIGINT: a Python handler here is reset to the default in the children.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    t_wall = time.perf_counter()
    # A session of its own: if the deployment hangs on shutdown, its node processes go with it (killpg below).
    proc = subprocess.Popen(cmd, env=os.environ.copy(), cwd=tmp, start_new_session=True)
    op = Operator(args.speed)
    error = None
    try:
        wait(lambda: op.change.wait_for_service(0.1), 60, "the policy node")
        wait(lambda: op.odom, 30, "odometry from the sim bridge")
        time.sleep(0.5)  # the command reaches the policy before its first step
        if not op.activate():
            raise RuntimeError("the policy node refused to activate")
        t_act = op.odom[-1][0]
        wait(lambda: op.at(t_act + args.seconds), 600, f"{args.seconds} s of simulated time")
        time.sleep(0.3)
    except (TimeoutError, RuntimeError) as exc:
        error = str(exc)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait(10)
        op.close()
    if error is not None:
        res = {"type": kind, "heading_deg": heading_deg, "error": error, "deploy_exit_code": code,
               "odometry_messages": len(op.odom), "diagnostics": dict(op.diag), "walks": False, "fell": None,
               "wall_s": round(time.perf_counter() - t_wall, 1)}
        print(json.dumps(res), file=sys.stderr, flush=True)
        return res
    t0, p0, _ = op.at(t_act)
    t1, p1, _ = op.at(t_act + args.seconds)
    if t1 - t0 < 0.5 * args.seconds:  # odometry from some other simulation on this ROS domain
        raise RuntimeError(f"odometry jumped from t={t0} to t={t1}: is another sim bridge running on this domain?")
    run = [o for o in op.odom if t0 <= o[0] <= t1]
    grid = build_grid(task_config(TASK).grid)
    fx, fy = task_config(TASK).footprint
    offs = np.array([[x, y] for x in (-fx, 0.0, fx) for y in (-fy, 0.0, fy)])
    heights, tilts = [], []
    for _, p, q in run:
        w, x, y, z = q
        yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        c, s = np.cos(yaw), np.sin(yaw)
        pts = p[:2] + offs @ np.array([[c, s], [-s, c]])
        heights.append(p[2] - grid.height_at(pts).mean())  # the task's base height: above the mean ground under it
        tilts.append(np.arccos(np.clip(1 - 2 * (x * x + y * y), -1, 1)))
    heights, tilts = np.array(heights), np.array(tilts)
    fell_at = next((run[i][0] - t0 for i in range(len(run)) if heights[i] < MIN_HEIGHT or tilts[i] > MAX_TILT), None)
    c = grid.cfg
    tile = lambda xy: int(np.floor((xy[0] - grid.x0 - c.border + c.resolution / 2) / c.tile_size))  # noqa: E731
    h = np.radians(heading_deg)
    fwd, side = np.array([np.cos(h), np.sin(h)]), np.array([-np.sin(h), np.cos(h)])
    dist = float((p1[:2] - p0[:2]) @ fwd)
    res = {"type": kind, "heading_deg": heading_deg, "start_level": args.level, "end_level": tile(p1),
           "sim_seconds": round(t1 - t0, 3), "distance_forward_m": dist,
           "lateral_drift_m": float((p1[:2] - p0[:2]) @ side), "mean_speed_mps": dist / (t1 - t0),
           "fell": fell_at is not None,
           "fell_at_s": fell_at, "min_base_height_m": float(heights.min()), "max_tilt_deg": float(np.degrees(tilts.max())),
           "diagnostics": {k: op.diag.get(k) for k in ("mode", "steps_run", "steps_ramp", "steps_fault",
                                                        "nonfinite_action", "missed_periods")},
           "deploy_exit_code": code, "wall_s": round(time.perf_counter() - t_wall, 1)}
    res["walks"] = bool(not res["fell"] and res["mean_speed_mps"] >= 0.5 * args.speed)
    print(json.dumps(res), file=sys.stderr, flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="runs/bench/terrain_teacher", help="ppo-teacher run (or its teacher.pt)")
    p.add_argument("--stages", default="students,eval,ros")
    p.add_argument("--students", default="dagger,rma")
    p.add_argument("--student-minutes", type=float, default=5.0)
    p.add_argument("--student-envs", type=int, default=64)
    p.add_argument("--history", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--level", type=int, default=4, help="terrain level of the evaluation and of the ROS start tile")
    p.add_argument("--episodes", type=int, default=60)
    p.add_argument("--ros-student", default="", help="student run name for the ROS stage (default: lowest eval error)")
    p.add_argument("--types", default="rough,slope_up,slope_down,stairs_up,stairs_down,stepping_gaps")
    p.add_argument("--headings", default="0", help="start headings (deg): 0 faces the harder levels, 180 the easier")
    p.add_argument("--speed", type=float, default=0.5)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--run-root", default="runs/bench/terrain_students")
    p.add_argument("--out", default="bench/results/terrain_ros")
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)
    out = Path(args.out).with_suffix(".json")
    result = json.loads(out.read_text()) if out.is_file() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    cmd = "OMP_NUM_THREADS=1 python " + " ".join(sys.argv)
    result.update({"bench": "terrain_ros", "task": TASK, "commit": commit, "config": vars(args),
                   "commands": [*result.get("commands", []), cmd]})
    result.setdefault("load_average_1min", {})

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))

    stages = args.stages.split(",")
    if "students" in stages:
        result["students"] = {**result.get("students", {}), **train_students(args)}
        save()
    if "eval" in stages:
        result["load_average_1min"]["eval_start"] = os.getloadavg()[0]
        result["eval"] = {**result.get("eval", {}), **eval_students(args, args.students.split(","))}
        save()
    if "ros" in stages:
        name = args.ros_student or min(result["eval"], key=lambda s: result["eval"][s]["mean_vel_error"])
        policy = Path(args.run_root) / name / "policy.onnx"
        os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "ros_ws" / "src" / "s2r_ros"),
                                                                os.environ.get("PYTHONPATH")) if p)
        result["load_average_1min"]["ros_start"] = os.getloadavg()[0]
        runs = result.setdefault("ros", {}).setdefault(name, {})
        with tempfile.TemporaryDirectory() as tmp:
            for deg in (float(d) for d in args.headings.split(",")):
                for kind in args.types.split(","):
                    key = kind + ("" if deg == 0 else f"@{deg:g}deg") + ("" if args.level == 4 else f"@level{args.level}")
                    runs[key] = ros_walk(policy.resolve(), kind, args, Path(tmp) / key, deg)
                    save()
        result["ros_summary"] = {"student": name, "walked": [k for k, r in runs.items() if r["walks"]],
                                 "walked_means": "no fall and a mean speed along the heading >= half the command",
                                 "goal_met": [k for k, r in runs.items() if r.get("fell") is False
                                              and r["mean_speed_mps"] >= 0.9 * args.speed],
                                 "goal_met_means": "no fall and a mean speed >= 90 % of the command over the run",
                                 "fell": [k for k, r in runs.items() if r["fell"]], "runs": list(runs),
                                 "goal": f"walks, no fall, over {args.seconds} s at {args.speed} m/s"}
    save()
    print(json.dumps({k: result.get(k) for k in ("eval", "ros_summary")}, indent=1))


if __name__ == "__main__":
    main()
