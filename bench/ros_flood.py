"""Message flood: the policy node (50 Hz) fed joint states, IMU and velocity commands at 10x their rates.

Phases: `--baseline` seconds at the normal rate (joint states + IMU at 50 Hz, Twist at 20 Hz), then
`--seconds` of flood (500 Hz and 200 Hz), then `--baseline` seconds back at the normal rate. The node's
resident memory is sampled every half second; every state on the 50 Hz grid should get its command before
the next grid state, flood or not (the node decimates by stamp and keeps only the newest input).
Prints one JSON line; `--out` also writes it.

    python bench/ros_flood.py --seconds 30 --out bench/results/ros_flood.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ros_latency import REPO, Bench, emit, export_untrained, make_policy, start_node

RATE, FLOOD = 50.0, 10


def rss_mb(pid: int) -> float:
    """Resident memory of a process (MB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def grid_latency(sent: np.ndarray, stamps: np.ndarray, recv: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Latency of each state on the 50 Hz grid (its window ends at the next grid state), missed, grid states."""
    on_grid = np.abs(stamps * RATE - np.round(stamps * RATE)) < 1e-6
    t = sent[on_grid]
    until = np.append(t[1:], t[-1] + 1.0 / RATE)
    idx = np.searchsorted(recv, t, side="right")
    first = recv[np.minimum(idx, len(recv) - 1)]
    ok = (idx < len(recv)) & (first <= until)
    return first[ok] - t[ok], int((~ok).sum()), len(t)


def phase(bench: Bench, rate: float, seconds: float) -> dict[str, object]:
    stamps: list[float] = []
    bench.recv.clear()
    sent = np.array(bench.send(rate, int(rate * seconds), stamps))
    time.sleep(0.1)
    recv = np.array(bench.recv)
    lat, missed, n = grid_latency(sent, np.array(stamps), recv)
    return {"rate_hz": rate, "seconds": seconds, "states": len(sent), "grid_states": n, "commands": len(recv),
            "missed": missed, "p50_ms": float(np.percentile(lat, 50) * 1e3), "p99_ms": float(np.percentile(lat, 99) * 1e3),
            "max_ms": float(lat.max() * 1e3)}


def run(seconds: float, baseline: float, policy: Path | None = None) -> dict[str, object]:
    """The whole flood benchmark; returns the result dict."""
    from geometry_msgs.msg import Twist

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "ros_ws" / "src" / "s2r_ros"),
                                                                      os.environ.get("PYTHONPATH")]))}
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.update({k: os.environ[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    with tempfile.TemporaryDirectory() as tmp:
        source = policy or export_untrained(Path(tmp) / "export")
        pol, robot = make_policy(Path(tmp), source, RATE)
        bench = Bench()
        twist_pub = bench.node.create_publisher(Twist, "/cmd_vel", 10)
        twist = Twist()
        twist.linear.x = 0.5
        proc = start_node("policy", pol, robot, env)
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                samples.append((time.monotonic(), rss_mb(proc.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        try:
            while bench.node.count_publishers("/forward_position_controller/commands") < 1:
                time.sleep(0.05)
            while len(bench.recv) < 50:
                bench.send(RATE, 5)
            sampler.start()
            # Normal rates: Twist at 20 Hz, here every other-and-a-half state (close enough: 25 Hz).
            bench.extra = [(twist_pub, twist)]
            t_base = time.monotonic()
            before = phase(bench, RATE, baseline)
            t_flood = time.monotonic()
            flood = phase(bench, RATE * FLOOD, seconds)
            t_after = time.monotonic()
            after = phase(bench, RATE, baseline)
            time.sleep(0.6)
            diag = dict(bench.diag)
        finally:
            stop.set()
            proc.send_signal(2)
            proc.wait(15)
            bench.close()
    rss = np.array(samples)

    def rss_in(t0: float, t1: float) -> list[float]:
        return [float(v) for t, v in rss if t0 <= t < t1]

    flood_rss = rss_in(t_flood, t_after)
    half = len(flood_rss) // 2
    return {
        "bench": "ros_flood", "policy_rate_hz": RATE, "flood_factor": FLOOD, "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "baseline": before, "flood": flood, "after": after,
        "rss_mb": {"baseline_end": rss_in(t_base, t_flood)[-1], "flood_first_half_max": max(flood_rss[:half]),
                   "flood_second_half_max": max(flood_rss[half:]), "after_end": rss_in(t_after, 1e18)[-1]},
        "node_counters": {k: diag.get(k) for k in ("missed_periods", "steps_run", "watchdog_trips", "latency_p50_us",
                                                   "latency_p99_us")},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0, help="flood duration")
    p.add_argument("--baseline", type=float, default=10.0, help="normal-rate phase before and after")
    p.add_argument("--policy", type=Path, help="policy.onnx (default: an untrained Go1 actor)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args()
    from s2r_ros.common import stale_fastdds_shm

    result = run(args.seconds, args.baseline, args.policy)
    for f in stale_fastdds_shm():  # what nodes of this run (or an earlier one) left in /dev/shm
        f.unlink(missing_ok=True)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
