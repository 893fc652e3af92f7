"""The arm through ROS 2: a lift policy in the Panda sim bridge against `s2r eval`, and its added latency.

Two parts, one JSON:

1. Closed loop. `s2r deploy --manifest launch/arm_sim.yaml --arg lockstep=true` starts the arm sim bridge
   and the arm policy node as separate processes (as deployed); this script counts the bridge's episode
   reports (/arm_sim/episodes) until `--episodes` have ended, and compares the success rate with the
   policy's `s2r eval` success rate (`evaluate_success`, the same function, over the same number of
   episodes). The goal is agreement within 5 points.
2. Added latency, joint state -> Cartesian command (geometry_msgs/PoseStamped), at each `--rates`: a driver
   publishes sensor_msgs/JointState (arm + fingers) and the object's PoseStamped with stamps 1/rate apart;
   the arm policy node (a separate process) answers each JointState with a TCP target. The floor is a
   bare rclpy echo answering each JointState with a PoseStamped, measured in the same run; added latency
   is policy minus echo, per percentile (as bench/ros_latency.py does for the quadruped).

    python bench/arm_closed_loop.py --policy /tmp/arm_work/bc/policy.onnx --episodes 100 --seconds 60 \
        --out bench/results/arm_closed_loop.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ros_ws" / "src" / "s2r_ros"))
sys.path.insert(0, str(REPO / "bench"))
from ros_latency import Bench, emit, match  # noqa: E402 - the quadruped bench's driver and statistics

TARGET_TOPIC = "/cartesian_impedance_controller/target_pose"
JOINTS = [f"joint{i + 1}" for i in range(7)] + ["finger_left", "finger_right"]
# A reachable pose above the table (the task's start region), fingers open.
POSE = [0.0, -0.08, 0.0, -2.5, 0.0, 2.45, 0.77, 0.04, 0.04]


def echo_main() -> int:
    """The floor: a bare rclpy node that answers each JointState with a PoseStamped."""
    from geometry_msgs.msg import PoseStamped
    from rclpy.node import Node
    from s2r_ros.common import qos, run
    from sensor_msgs.msg import JointState

    class Echo(Node):
        def __init__(self) -> None:
            super().__init__("echo")
            self.declare_parameter("executor", "events")
            pub = self.create_publisher(PoseStamped, TARGET_TOPIC, qos("reliable", 1))
            msg = PoseStamped()

            def answer(js: JointState) -> None:
                msg.header.stamp = js.header.stamp
                msg.pose.position.x = js.position[0]
                pub.publish(msg)

            self.create_subscription(JointState, "/joint_states", answer, qos("reliable", 1))

    return run(Echo)


def ros_env() -> dict[str, str]:
    """This process's environment for child nodes: a private DDS domain on loopback, the nodes importable."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    # UDP on loopback only: Fast DDS's shared-memory ports live in /dev/shm, which other test runs on a shared
    # machine clean up; a port removed under a running node silently cut a first run off after ~10 s.
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "UDPv4")
    path = os.pathsep.join(filter(None, [str(REPO / "ros_ws" / "src" / "s2r_ros"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


# ---- 1. closed loop -----------------------------------------------------------------------------


def closed_loop(policy: Path, episodes: int, seed: int, env: dict[str, str], logs: Path) -> dict[str, object]:
    """Run the deployment until `episodes` episodes ended; success rate and wall time."""
    import rclpy
    from s2r_ros.common import qos
    from std_msgs.msg import Float64MultiArray

    rclpy.init()
    node = rclpy.create_node("arm_bench")
    done: list[list[float]] = []
    node.create_subscription(Float64MultiArray, "/arm_sim/episodes", lambda m: done.append(list(m.data)),
                             qos("reliable", 1000))
    cmd = [sys.executable, "-m", "s2r.policies.cli", "deploy", "--manifest", str(REPO / "launch" / "arm_sim.yaml"),
           "--policy", str(policy), "--arg", "lockstep=true", "--arg", f"seed={seed}",
           "--set", "policy.watchdog_timeout_s=5.0", "--set", "policy.object_timeout_s=5.0", "--log-dir", str(logs)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = last = time.monotonic()
    seen = 0
    try:
        while len(done) < episodes:
            rclpy.spin_once(node, timeout_sec=0.1)
            if proc.poll() is not None:
                raise RuntimeError(f"s2r deploy exited early ({proc.returncode}); see {logs}")
            if len(done) > seen:
                seen, last = len(done), time.monotonic()
            if time.monotonic() - last > 120:
                raise RuntimeError(f"no episode ended for 2 min after {len(done)}; see {logs}")
        wall = time.monotonic() - t0
    finally:
        proc.send_signal(2)
        proc.wait(30)
        node.destroy_node()
        rclpy.shutdown()
    eps = np.array(done[:episodes])
    return {"episodes": episodes, "success_rate": float(eps[:, 1].mean()), "mean_steps": float(eps[:, 2].mean()),
            "steps": int(eps[:, 2].sum()), "wall_s": wall, "seed": seed, "command": " ".join(cmd[1:])}


# ---- 2. latency ---------------------------------------------------------------------------------


def make_policy(root: Path, source: Path, rate: float) -> tuple[Path, Path]:
    """policy.onnx + panda.yaml at control period 1/rate; the TCP step per period shrinks with it (same speed)."""
    import shutil

    import yaml
    from s2r.real.metadata import load_metadata

    folder = root / f"rate{rate:g}"
    folder.mkdir(parents=True, exist_ok=True)
    meta = json.loads(source.with_suffix(".json").read_text())
    ratio = (1.0 / rate) / meta["control_dt"]
    meta["control_dt"] = 1.0 / rate
    meta["action"]["max_step"] *= ratio
    base = source.parent
    for f in base.glob("*.onnx"):  # a residual graph may reference its base's files: copy every graph
        shutil.copy(f, folder / f.name)
    (folder / "policy.json").write_text(json.dumps(meta))
    load_metadata(folder / "policy.json")
    robot = yaml.safe_load((REPO / "launch" / "robots" / "panda.yaml").read_text())
    robot["control_dt"] = 1.0 / rate
    robot["max_target_step"] *= ratio  # the same TCP speed limit at every rate
    (folder / "panda.yaml").write_text(yaml.safe_dump(robot))
    return folder / source.name, folder / "panda.yaml"


class ArmBench(Bench):
    """The quadruped bench's driver with an arm's joint state, an object pose each period, and PoseStamped answers."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        from geometry_msgs.msg import PoseStamped
        from rclpy.experimental import EventsExecutor
        from s2r_ros.common import qos
        from sensor_msgs.msg import JointState

        # The events executor does not see entities created after its node was added: stop it, add the arm's
        # publisher and subscription, and start a fresh one.
        self._stop = True
        self.thread.join(5)
        self.executor.shutdown()

        self.js = JointState(name=JOINTS, position=POSE, velocity=[0.0] * len(JOINTS))
        obj = PoseStamped()
        obj.header.frame_id = "world"
        obj.pose.position.x, obj.pose.position.z, obj.pose.orientation.w = 0.5, 0.02, 1.0
        self.extra = [(self.node.create_publisher(PoseStamped, "/object_pose", qos("reliable", 1)), obj)]
        self.node.create_subscription(PoseStamped, TARGET_TOPIC, lambda m: self.recv.append(time.perf_counter()),
                                      qos("reliable", 100))
        self.executor = EventsExecutor()
        self.executor.add_node(self.node)
        self._stop = False
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()


def start_node(kind: str, policy: Path, robot: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The echo or the arm policy node as a process; its output goes to <robot's folder>/<kind>.log."""
    if kind == "echo":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--echo"]
    else:
        cmd = [sys.executable, "-m", "s2r_ros.arm_policy_node", "--ros-args", "-p", f"policy:={policy}",
               "-p", f"robot:={robot}", "-p", "autostart:=active", "-p", "sensor_qos:=reliable",
               "-p", "executor:=events", "-p", "watchdog_timeout_s:=5.0", "-p", "object_timeout_s:=5.0",
               "-p", "diagnostics_period_s:=0.5"]
    log = open(robot.parent / f"{kind}.log", "w")  # noqa: SIM115 - the child owns it until it exits
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def measure(bench: ArmBench, kind: str, rate: float, seconds: float, policy: Path, robot: Path,
            env: dict[str, str]) -> dict[str, object]:
    """One node, one rate: wait for answers, drain, then `seconds` of one state per period."""
    proc = start_node(kind, policy, robot, env)
    try:
        end = time.monotonic() + 60
        while bench.node.count_publishers(TARGET_TOPIC) < 1 or bench.node.count_subscribers("/joint_states") < 1:
            if time.monotonic() > end or proc.poll() is not None:
                tail = (robot.parent / f"{kind}.log").read_text()[-2000:]
                raise RuntimeError(f"{kind} node did not come up at {rate} Hz; its output ends:\n{tail}")
            time.sleep(0.05)
        bench.recv.clear()
        while len(bench.recv) < 20:
            bench.send(rate, max(1, int(rate * 0.1)))
            if time.monotonic() > end + 60:
                tail = (robot.parent / f"{kind}.log").read_text()[-2000:]
                raise RuntimeError(f"{kind} node never answered at {rate} Hz; its output ends:\n{tail}")
        time.sleep(0.3)
        bench.recv.clear()
        sent = np.array(bench.send(rate, int(rate * seconds)))
        time.sleep(0.5)
        recv = np.array(bench.recv)
        time.sleep(0.6)
        diag = dict(bench.diag)
    finally:
        proc.send_signal(2)
        proc.wait(15)
    if len(recv) == len(sent):
        lat, how = recv - sent, "in order"
        missed = int((lat > 1.0 / rate).sum())
    else:
        (lat, missed), how = match(sent, recv, 1.0 / rate), "by period window"
    out: dict[str, object] = {"sent": len(sent), "received": len(recv), "missed": missed, "matched": how,
                              "p50_ms": float(np.percentile(lat, 50) * 1e3), "p99_ms": float(np.percentile(lat, 99) * 1e3),
                              "max_ms": float(lat.max() * 1e3)}
    if kind == "policy":
        out.update({"in_node_p50_ms": float(diag["latency_p50_us"]) / 1e3,
                    "in_node_p99_ms": float(diag["latency_p99_us"]) / 1e3, "mode": diag.get("mode"),
                    "clamps": {k: int(v) for k, v in diag.items() if k.startswith("clamp_")}})
    return out


def latency(policy: Path, rates: list[float], seconds: float, env: dict[str, str], root: Path) -> list[dict[str, object]]:
    bench = ArmBench()
    try:
        held = []
        for rate in rates:
            pol, robot = make_policy(root, policy, rate)
            echo = measure(bench, "echo", rate, seconds, pol, robot, env)
            res = measure(bench, "policy", rate, seconds, pol, robot, env)
            held.append({"rate_hz": rate, "seconds": seconds, "policy": res, "echo_floor": echo,
                         "added": {"p50_ms": res["p50_ms"] - echo["p50_ms"], "p99_ms": res["p99_ms"] - echo["p99_ms"]}})
        return held
    finally:
        bench.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--policy", type=Path, help="exported Panda-Lift-Cube policy.onnx (closed loop and latency)")
    p.add_argument("--latency-policy", type=Path, help="policy timed in part 2 (default --policy)")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=1, help="seed of the sim bridge's scenes and of s2r eval")
    p.add_argument("--seconds", type=float, default=60.0, help="duration of each latency rate")
    p.add_argument("--rates", default="10,100")
    p.add_argument("--skip-closed-loop", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.echo:
        return echo_main()
    if args.policy is None:
        p.error("--policy is required")
    env = ros_env()
    load_before = os.getloadavg()
    result: dict[str, object] = {"bench": "arm_closed_loop", "cpus": os.cpu_count(), "python": platform.python_version(),
                                 "transport": f"Fast DDS (rmw_fastrtps_cpp), {env['FASTDDS_BUILTIN_TRANSPORTS']} on "
                                 "loopback, events executor", "policy": str(args.policy)}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_closed_loop:
            from s2r.policies.evaluate import evaluate_success

            t = time.monotonic()
            ev = evaluate_success(args.policy.parent, episodes=args.episodes, seed=args.seed)
            ev["wall_s"] = time.monotonic() - t
            ros = closed_loop(args.policy, args.episodes, args.seed, env, Path(tmp) / "logs")
            gap = abs(ros["success_rate"] - ev["success_rate"]) * 100
            result["closed_loop"] = {"ros_lockstep": ros, "s2r_eval": ev, "gap_points": gap, "goal_points": 5.0,
                                     "met": gap <= 5.0}
            print(json.dumps(result["closed_loop"]), flush=True)
        rates = [float(r) for r in args.rates.split(",") if r]
        if rates:
            lat_policy = args.latency_policy or args.policy
            result["latency_policy"] = str(lat_policy)
            result["latency"] = latency(lat_policy, rates, args.seconds, env, Path(tmp))
    result["load_average_1m_before_after"] = [load_before[0], os.getloadavg()[0]]
    result["goal"] = {"added_p99_ms_at_100hz": 0.5, "closed_loop_gap_points": 5.0}
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
