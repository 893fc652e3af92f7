"""Latency of the policy node over real ROS 2 (Fast DDS on loopback), against a bare rclpy echo as the floor.

For each rate, a driver thread publishes sensor_msgs/Imu + sensor_msgs/JointState with stamps exactly
1/rate apart, and the policy node (a separate process, as deployed) answers each JointState with a
Float64MultiArray. Reported per rate:
  - round trip JointState publish -> command receipt (p50/p99/max);
  - the same round trip through a bare rclpy echo node (subscribe JointState, publish Float64MultiArray
    at once, same executor), the floor that DDS + rclpy cost without any policy;
  - added latency = policy round trip - echo round trip, per percentile;
  - in-node latency measured by the policy node itself (JointState callback entry -> publish() returned);
  - missed periods: states whose command came later than the next state, or never.
The ladder finds the highest rate with no missed period in a short probe; then that rate, 1 kHz (the goal)
and 50 Hz are each held for `--seconds`. Prints one JSON line; `--out` also writes it to a file.

    python bench/ros_latency.py --seconds 60 --out bench/results/ros_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ros_ws" / "src" / "s2r_ros"))
JOINTS = [f"{leg}_{part}_joint" for leg in ("FR", "FL", "RR", "RL") for part in ("hip", "thigh", "calf")]
STAND = [0.0, 0.9, -1.8] * 4
CMD_TOPIC = "/forward_position_controller/commands"


def echo_main() -> int:
    """The floor: a bare rclpy node that answers each JointState with a Float64MultiArray of its positions."""
    from rclpy.node import Node
    from s2r_ros.common import qos, run
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    class Echo(Node):
        def __init__(self) -> None:
            super().__init__("echo")
            self.declare_parameter("executor", "events")
            pub = self.create_publisher(Float64MultiArray, CMD_TOPIC, qos("reliable", 1))
            msg = Float64MultiArray()

            def answer(js: JointState) -> None:
                msg.data = js.position
                pub.publish(msg)

            self.create_subscription(JointState, "/joint_states", answer, qos("reliable", 1))

    return run(Echo)


def make_policy(root: Path, source: Path | None, rate: float) -> tuple[Path, Path]:
    """policy.onnx + robot.yaml whose control period is 1/rate (the network is the same at any rate)."""
    import yaml
    from s2r.real.metadata import load_metadata

    folder = root / f"rate{rate:g}"
    folder.mkdir(parents=True, exist_ok=True)
    meta = json.loads((source.with_suffix(".json")).read_text())
    meta["control_dt"] = 1.0 / rate
    shutil.copy(source, folder / "policy.onnx")
    (folder / "policy.json").write_text(json.dumps(meta))
    load_metadata(folder / "policy.json")
    robot = yaml.safe_load((REPO / "launch" / "robots" / "go1.yaml").read_text())
    robot["control_dt"] = 1.0 / rate
    (folder / "robot.yaml").write_text(yaml.safe_dump(robot))
    return folder / "policy.onnx", folder / "robot.yaml"


def export_untrained(root: Path) -> Path:
    """An untrained Go1 actor through the real export path (latency does not depend on the weights)."""
    import torch
    from s2r.policies.export import export_policy
    from s2r.policies.networks import ActorCritic, ActorCriticConfig
    from s2r.sim import make
    from s2r.sim.env import sample_obs

    torch.manual_seed(0)
    env = make("Go1-Velocity-FlatNoDR", 2)
    model = ActorCritic(env.obs_dims, env.spec.action_dim, ActorCriticConfig()).eval()
    export_policy(model, env.spec, "Go1-Velocity-FlatNoDR", root, sample_obs(env, 5)["policy"])
    env.close()
    return root / "policy.onnx"


class Bench:
    """The driver side: publishes sensors on a precise clock, timestamps every command that comes back."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.experimental import EventsExecutor
        from s2r_ros.common import qos
        from sensor_msgs.msg import Imu, JointState
        from std_msgs.msg import Float64MultiArray

        rclpy.init()
        self.node = rclpy.create_node("latency_bench")
        self.js_pub = self.node.create_publisher(JointState, "/joint_states", qos("reliable", 1))
        self.imu_pub = self.node.create_publisher(Imu, "/imu/data", qos("reliable", 1))
        self.recv: list[float] = []
        self.diag: dict[str, str] = {}
        self.node.create_subscription(Float64MultiArray, CMD_TOPIC, lambda m: self.recv.append(time.perf_counter()),
                                      qos("reliable", 100))
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self.diag.update({kv.key: kv.value for kv in m.status[0].values}), 10)
        self.js, self.imu = JointState(name=JOINTS, position=STAND, velocity=[0.0] * 12), Imu()
        self.imu.orientation.w = 1.0
        self.executor = EventsExecutor()
        self.executor.add_node(self.node)
        self._stop = False
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        self.t = 0.0  # stamp of the last state: stamps continue across phases and rates
        self.extra: list[tuple[object, object]] = []  # (publisher, message) also sent every period

    def _spin(self) -> None:
        while not self._stop:
            self.executor.spin_once(timeout_sec=0.1)

    def send(self, rate: float, n: int, stamps: list[float] | None = None) -> list[float]:
        """Publish n IMU + JointState pairs at `rate` (stamps 1/rate apart); returns each JointState's send time."""
        from s2r_ros.common import sec_to_stamp

        dt, sent = 1.0 / rate, []
        start = time.perf_counter()
        for i in range(n):
            due = start + i * dt
            while (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            self.t += dt
            stamp = sec_to_stamp(self.t)
            self.imu.header.stamp = stamp
            self.imu_pub.publish(self.imu)
            for pub, msg in self.extra:
                pub.publish(msg)
            self.js.header.stamp = stamp
            sent.append(time.perf_counter())
            self.js_pub.publish(self.js)
            if stamps is not None:
                stamps.append(self.t)
        return sent

    def close(self) -> None:
        import rclpy

        self._stop = True
        self.thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown()


def start_node(kind: str, policy: Path, robot: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    rt = env.get("S2R_BENCH_REALTIME", "0")
    if kind == "echo":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--echo", "--realtime", rt]
    else:
        cmd = [sys.executable, "-m", "s2r_ros.policy_node", "--ros-args", "-p", f"policy:={policy}",
               "-p", f"robot:={robot}", "-p", "autostart:=active", "-p", "sensor_qos:=reliable",
               "-p", "executor:=events", "-p", "watchdog_timeout_s:=5.0", "-p", "diagnostics_period_s:=0.5",
               "-p", f"realtime_priority:={rt}"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(bench: Bench, kind: str, rate: float, seconds: float, policy: Path, robot: Path,
            env: dict[str, str]) -> dict[str, float]:
    """One node, one rate: sync, drain, then `seconds` of one state per period, matched in order."""
    proc = start_node(kind, policy, robot, env)
    try:
        end = time.monotonic() + 60
        while bench.node.count_publishers(CMD_TOPIC) < 1 or bench.node.count_subscribers("/joint_states") < 1:
            if time.monotonic() > end or proc.poll() is not None:
                raise RuntimeError(f"{kind} node did not come up at {rate} Hz")
            time.sleep(0.05)
        bench.recv.clear()
        while len(bench.recv) < 50:  # until answers flow (discovery done, policy warmed up)
            bench.send(rate, max(1, int(rate * 0.05)))
        time.sleep(0.3)  # drain
        missed_before = int(bench.diag.get("missed_periods", 0))
        bench.recv.clear()
        n = int(rate * seconds)
        sent = np.array(bench.send(rate, n))
        time.sleep(0.5)
        recv = np.array(bench.recv)
        time.sleep(0.6)  # one more diagnostics message
        diag = dict(bench.diag)
    finally:
        proc.send_signal(2)
        proc.wait(15)
    skipped = int(diag["missed_periods"]) - missed_before if kind == "policy" else 0
    if len(recv) == len(sent) and skipped == 0:
        # Every state got exactly one answer, in order: pair them one to one.
        lat, how = recv - sent, "in order"
        missed = int((lat > 1.0 / rate).sum())
    else:  # some state went unanswered: attribute each answer to the state whose period it fell in
        (lat, missed), how = match(sent, recv, 1.0 / rate), "by period window"
    out = {"sent": len(sent), "received": len(recv), "missed": missed, "matched": how,
           "p50_ms": float(np.percentile(lat, 50) * 1e3) if len(lat) else None,
           "p99_ms": float(np.percentile(lat, 99) * 1e3) if len(lat) else None,
           "max_ms": float(lat.max() * 1e3) if len(lat) else None}
    if kind == "policy":
        out.update({"in_node_p50_ms": float(diag["latency_p50_us"]) / 1e3,
                    "in_node_p99_ms": float(diag["latency_p99_us"]) / 1e3,
                    "node_missed_periods": skipped})
    return out


def match(sent: np.ndarray, recv: np.ndarray, period: float) -> tuple[np.ndarray, int]:
    """Latency of each state answered before the next was sent, and how many were not.

    Used when answers are missing, so one-to-one pairing is impossible: each state owns the window from
    its send time to the next state's, and the first command in it is its answer. A state with no
    command in its window counts as a missed period.
    """
    if len(sent) == 0:
        return np.zeros(0), 0
    until = np.append(sent[1:], sent[-1] + period)
    idx = np.searchsorted(recv, sent, side="right")
    first = recv[np.minimum(idx, max(len(recv) - 1, 0))] if len(recv) else np.full(len(sent), np.inf)
    answered = (idx < len(recv)) & (first <= until)
    return first[answered] - sent[answered], int((~answered).sum())


def set_realtime(priority: int) -> None:
    """SCHED_FIFO for every thread of this process (a no-op for priority 0)."""
    if priority > 0:
        for tid in os.listdir("/proc/self/task"):
            os.sched_setscheduler(int(tid), os.SCHED_FIFO, os.sched_param(priority))


def hold(bench: Bench, rate: float, seconds: float, source: Path, root: Path, env: dict[str, str]) -> dict[str, object]:
    policy, robot = make_policy(root, source, rate)
    echo = measure(bench, "echo", rate, seconds, policy, robot, env)
    pol = measure(bench, "policy", rate, seconds, policy, robot, env)
    added = {"p50_ms": pol["p50_ms"] - echo["p50_ms"], "p99_ms": pol["p99_ms"] - echo["p99_ms"]}
    return {"rate_hz": rate, "seconds": seconds, "policy": pol, "echo_floor": echo, "added": added,
            "held": pol["missed"] == 0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--policy", type=Path, help="policy.onnx to time (default: an untrained Go1 actor)")
    p.add_argument("--seconds", type=float, default=60.0, help="duration of each held rate")
    p.add_argument("--probe-seconds", type=float, default=10.0, help="duration of each ladder probe")
    p.add_argument("--ladder", default="100,250,500,1000,1500,2000", help="rates probed for the highest held")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--realtime", type=int, default=0,
                   help="SCHED_FIFO priority for the bench, echo and policy processes (0: normal scheduling)")
    args = p.parse_args()
    from s2r_ros.common import stale_fastdds_shm

    if args.echo:
        set_realtime(args.realtime)
        return echo_main()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "ros_ws" / "src" / "s2r_ros"),
                                                                      os.environ.get("PYTHONPATH")]))}
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.update({k: os.environ[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    env["S2R_BENCH_REALTIME"] = str(args.realtime)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = args.policy or export_untrained(root / "export")
        bench = Bench()
        set_realtime(args.realtime)
        try:
            probes = []
            for rate in (float(r) for r in args.ladder.split(",")):
                policy, robot = make_policy(root, source, rate)
                res = measure(bench, "policy", rate, args.probe_seconds, policy, robot, env)
                probes.append({"rate_hz": rate, **res})
                if res["missed"]:
                    break
            best = max((pr["rate_hz"] for pr in probes if pr["missed"] == 0), default=None)
            rates = sorted({50.0, 1000.0, *([best] if best else [])})
            held = [hold(bench, r, args.seconds, source, root, env) for r in rates]
        finally:
            bench.close()
    for f in stale_fastdds_shm():  # what nodes of this run (or an earlier one) left in /dev/shm
        f.unlink(missing_ok=True)
    result = {"bench": "ros_latency", "transport": "Fast DDS (rmw_fastrtps_cpp), loopback, events executor",
              "cpus": os.cpu_count(), "python": platform.python_version(), "realtime_priority": args.realtime,
              "load_average_1m_before_after": [load_before[0], os.getloadavg()[0]], "probes": probes,
              "highest_probe_without_miss_hz": best, "held": held,
              "goal": {"added_p99_ms_at_50hz": 0.5, "rate_hz_held_60s": 1000}}
    emit(result, args.out)
    return 0


def emit(result: dict[str, object], out: Path | None) -> None:
    """Print the result as one JSON line (with the command that made it) and write it to `out` if given."""
    result["command"] = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    print(json.dumps(result))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
