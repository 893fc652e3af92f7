"""A camera policy over ROS 2: policy steps/s achieved against the bridge's rates, and the age of the frames it used.

For each camera rate in `--rates`, the arm sim bridge (free-running: one control period of physics per
wall-clock period, 20 Hz for the Panda tasks) and the arm policy node run as separate processes, as
deployed; the bridge renders the policy's camera (EGL, `--size` px) every 1/rate s and publishes it as
sensor_msgs/Image; the policy node runs an exported image policy (conv encoder inside the ONNX graph) on
each joint state. This script listens for `--seconds` (after a warm-up) and reports, per rate:

- bridge joint states/s and camera frames/s as received here (what the bridge achieved on this machine),
- policy steps/s (`steps_run` from the node's diagnostics) and held steps/s (`camera_holds`): a camera
  slower than 1/`image_timeout_s` (default 0.5 s) makes the node hold between frames,
- frame age at the policy node p50/p99 (joint-state stamp - stamp of the frame the step used, both sim
  time; the node's `image_age_p50_ms`/`image_age_p99_ms` diagnostics over the whole run),
- with `--lockstep`, the same for a lockstep run (the bridge renders one frame per state and steps when the
  policy answers it: the fastest loop this pair allows here),
- CPU % of each process, and the machine's load average before and after,
- and, measured here before the runs, what one rendered frame and one physics step cost the bridge.

The policy is an untrained export (what is timed is the plumbing, rendering and inference, not a skill)
unless `--policy` names another image policy of a Panda task.

    OMP_NUM_THREADS=1 python bench/arm_camera_ros.py --rates 1,5,10,20,40 --size 64 --seconds 20 \
        --out bench/results/arm_camera_ros.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ros_ws" / "src" / "s2r_ros"))
sys.path.insert(0, str(REPO))
ROBOT = REPO / "launch" / "robots" / "panda.yaml"
TARGET_TOPIC = "/cartesian_impedance_controller/target_pose"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Listener:
    """Counts joint states, frames and commands; keeps the policy node's last diagnostics."""

    def __init__(self, camera_topic: str) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from s2r_ros.common import qos
        from sensor_msgs.msg import Image, JointState

        rclpy.init()
        self.node = rclpy.create_node("arm_camera_bench")
        self.counts = {"joint_states": 0, "frames": 0, "commands": 0}
        self.diag: dict[str, str] = {}

        def count(key: str):
            return lambda m: self.counts.__setitem__(key, self.counts[key] + 1)

        self.node.create_subscription(JointState, "/joint_states", count("joint_states"), qos("best_effort", 10))
        self.node.create_subscription(Image, camera_topic, count("frames"), qos("best_effort", 1))
        self.node.create_subscription(PoseStamped, TARGET_TOPIC, count("commands"), qos("best_effort", 10))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _on_diag(self, msg: object) -> None:
        for s in msg.status:  # type: ignore[attr-defined]
            if "mode" in (values := {kv.key: kv.value for kv in s.values}):
                self.diag = values

    def spin_for(self, seconds: float) -> None:
        import rclpy

        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def close(self) -> None:
        import rclpy

        self.node.destroy_node()
        rclpy.shutdown()


def render_cost(camera: str, height: int, width: int, n: int = 20) -> dict[str, float]:
    """What one camera frame costs the bridge here: `ArmSim.render` (EGL) p50/p99 and one physics step, in ms."""
    import numpy as np
    from s2r.sim.arm_sim import ArmSim

    sim = ArmSim("Panda-Lift-Cube")
    try:
        sim.render(camera, height, width)  # the renderer's set-up is not a frame's cost
        times = []
        for _ in range(n):
            t = time.perf_counter()
            sim.render(camera, height, width)
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(n):
            sim.step(*sim.hold_target())
        step = (time.perf_counter() - t) / n
    finally:
        sim.close()
    return {"render_p50_ms": float(np.percentile(times, 50) * 1e3), "render_p99_ms": float(np.percentile(times, 99) * 1e3),
            "physics_step_ms": step * 1e3}


def run_rate(lis: Listener, policy: Path, rate: float, seconds: float, warmup: float, env: dict[str, str],
             logs: Path, lockstep: bool = False) -> dict[str, object]:
    """Bridge + policy node at one camera rate (lockstep: one frame per state, as fast as they go): what each
    achieved over `seconds` after `warmup`."""
    common = ["-p", f"policy:={policy}", "-p", f"robot:={ROBOT}", "-p", "executor:=events"]
    timeout = "5.0" if lockstep else "0.5"
    cmds = {"bridge": [sys.executable, "-m", "s2r_ros.arm_sim_bridge_node", "--ros-args", *common,
                       "-p", f"camera_rate_hz:={rate}", "-p", f"lockstep:={str(lockstep).lower()}"],
            "policy": [sys.executable, "-m", "s2r_ros.arm_policy_node", "--ros-args", *common,
                       "-p", "autostart:=active", "-p", "sensor_qos:=reliable", "-p", f"watchdog_timeout_s:={timeout}",
                       "-p", f"object_timeout_s:={timeout}", "-p", "diagnostics_period_s:=0.5",
                       "-p", f"sync_object:={str(lockstep).lower()}"]}
    lis.spin_for(1.0)  # drain what the previous rate's nodes sent last, then start from nothing
    lis.diag = {}
    tag = "lockstep" if lockstep else f"{rate:g}hz"
    procs = {k: subprocess.Popen(c, env=env, stdout=open(logs / f"{k}_{tag}.log", "w"),  # noqa: SIM115
                                 stderr=subprocess.STDOUT) for k, c in cmds.items()}
    try:
        end = time.monotonic() + 90
        while not lis.diag or int(lis.diag.get("steps_run", 0)) + int(lis.diag.get("camera_holds", 0)) == 0:
            lis.spin_for(0.2)
            dead = [k for k, p in procs.items() if p.poll() is not None]
            if dead or time.monotonic() > end:
                raise RuntimeError(f"{dead or 'nodes'} did not start stepping; see {logs}")
        lis.spin_for(warmup)
        c0, d0, t0 = dict(lis.counts), dict(lis.diag), time.monotonic()
        cpu0 = {k: cpu_seconds(p.pid) for k, p in procs.items()}
        lis.spin_for(seconds)
        c1, d1, wall = dict(lis.counts), dict(lis.diag), time.monotonic() - t0
        cpu = {k: 100.0 * (cpu_seconds(p.pid) - cpu0[k]) / wall for k, p in procs.items()}
    finally:
        for p in procs.values():
            p.send_signal(2)
        for p in procs.values():
            p.wait(30)

    def per_s(a: dict[str, object], b: dict[str, object], key: str) -> float:
        return (float(b.get(key, 0)) - float(a.get(key, 0))) / wall

    return {"camera_rate_hz": "every state (lockstep)" if lockstep else rate, "seconds": round(wall, 2),
            "bridge_joint_states_per_s": per_s(c0, c1, "joint_states"), "frames_per_s": per_s(c0, c1, "frames"),
            "commands_per_s": per_s(c0, c1, "commands"), "policy_steps_per_s": per_s(d0, d1, "steps_run"),
            "camera_holds_per_s": per_s(d0, d1, "camera_holds"), "bad_image": int(d1.get("bad_image", 0)),
            "missed_periods": int(d1.get("missed_periods", 0)), "mode_at_end": d1.get("mode"),
            "frame_age_p50_ms": float(d1.get("image_age_p50_ms", "nan")),
            "frame_age_p99_ms": float(d1.get("image_age_p99_ms", "nan")),
            "cpu_percent": {k: round(v, 1) for k, v in cpu.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", type=Path, help="an image policy.onnx of a Panda task (default: an untrained export)")
    p.add_argument("--size", type=int, default=64, help="camera image side (px) of the default untrained export")
    p.add_argument("--rates", default="1,5,10,20,40", help="camera rates (Hz) to run, comma-separated")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per rate")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of running before measuring")
    p.add_argument("--lockstep", action="store_true", help="also run lockstep (one frame rendered per state)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "ros_ws" / "src" / "s2r_ros"),
                                                                      os.environ.get("PYTHONPATH")]))}
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.policy is None:
            import torch

            from tests.policy_files import export_untrained_panda_camera

            torch.set_num_threads(1)
            policy = export_untrained_panda_camera(root / "policy", (args.size, args.size))
        else:
            policy = args.policy
        from s2r.real.metadata import load_metadata

        cams = [o for o in load_metadata(policy.with_suffix(".json")).observation if o.is_image]
        cost = render_cost(cams[0].camera, cams[0].shape[0], cams[0].shape[1])
        print(json.dumps(cost), flush=True)
        lis = Listener(f"/camera/{cams[0].camera}/image_raw")
        try:
            for rate in (float(r) for r in args.rates.split(",")):
                res = run_rate(lis, policy, rate, args.seconds, args.warmup, env, root)
                print(json.dumps(res), flush=True)
                results.append(res)
            if args.lockstep:
                # The bridge renders one frame per state in lockstep; a rate > 0 only switches its camera on.
                res = run_rate(lis, policy, 1.0, args.seconds, args.warmup, env, root, lockstep=True)
                print(json.dumps(res), flush=True)
                results.append(res)
        finally:
            lis.close()
    out = {"bench": "arm_camera_ros", "policy": str(args.policy or f"untrained export, {args.size}x{args.size} camera"),
           "cameras": [(o.camera, list(o.shape)) for o in cams], "control_rate_hz": 20.0,
           "image_timeout_s": 0.5, "cpu_count": os.cpu_count(), "in_process_cost": cost,
           "load_average_1m_before_after": [load_before[0], os.getloadavg()[0]], "rates": results,
           "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}
    print(json.dumps(out))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
