"""HIL actor/learner link under load: what the link adds to a control loop, and how many transitions/s it carries.

    python bench/hil_link.py                        # 100 Hz, 30 s per phase
    python bench/hil_link.py --rate 100 --seconds 10 --image

The learner runs in a separate process (as on a real setup: another computer), stores every upload in its
inbox (fsync before each acknowledgement) and publishes ~1 MB of new weights every second. The actor is this
process: a loop at `--rate` that, each period, builds a transition, calls `send()` and `latest_weights()`,
then sleeps until the next period.

Phases, in one process:
1. baseline: the same loop with no link (no threads), for the loop's own wake-up lateness; and, alternating
   with it in blocks of `--block-seconds`,
2. link: the loop with the link busy (uploads, weights streaming); per iteration the time inside `send()` +
   `latest_weights()`, and the wake-up lateness (Python threads share one interpreter lock, so the link's
   threads can delay the loop after its sleep as well as inside the calls);
3. throughput: `send()` as fast as possible for a few seconds, then wait for the learner's acknowledgements.

"Added" per iteration = (call time + lateness) with the link minus lateness without, compared at p50 / p99.
Writes bench/results/hil_link.json (command line, git commit, load average before and after, wall time).
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def serve(inbox: Path, port_file: Path, weights_bytes: int, every_s: float) -> None:
    """The learner process: store uploads, publish new weights every `every_s`, print drained counts at exit."""
    from s2r.policies.hil_link_server import HilLearnerLink

    link = HilLearnerLink(inbox_dir=inbox)
    port_file.write_text(str(link.start()))
    rng = np.random.default_rng(0)
    version, drained = 0, 0
    try:
        while True:
            version += 1
            link.publish_weights(version, rng.integers(0, 256, weights_bytes, np.uint8).tobytes(), {"step": version})
            end = time.monotonic() + every_s
            while time.monotonic() < end:
                drained += len(link.drain())  # the training loop takes transitions out as they come
                time.sleep(0.02)
    except KeyboardInterrupt:
        link.stop(0)


def make_transition(rng: np.random.Generator, i: int, image: bool) -> dict:
    """A state transition of a 7-DoF arm task (obs 64, both actions, flags) and, with `image`, two 84x84 RGB frames."""
    tr = {"obs": rng.standard_normal(64).astype(np.float32), "next_obs": rng.standard_normal(64).astype(np.float32),
          "action": rng.standard_normal(7).astype(np.float32), "policy_action": rng.standard_normal(7).astype(np.float32),
          "reward": float(i % 7 == 0), "terminated": False, "truncated": False, "intervened": bool(i % 5 == 0)}
    if image:
        tr["image"] = rng.integers(0, 256, (84, 84, 3), np.uint8)
        tr["next_image"] = rng.integers(0, 256, (84, 84, 3), np.uint8)
    return tr


def loop(rate: float, seconds: float, link: object | None, pool: list[dict]) -> dict[str, np.ndarray]:
    """Run the control loop; returns per-iteration call time and wake-up lateness (seconds)."""
    period = 1.0 / rate
    n = int(seconds * rate)
    calls, late = np.zeros(n), np.zeros(n)
    versions = []
    t_next = time.perf_counter() + period
    for k in range(n):
        tr = pool[k % len(pool)]
        t0 = time.perf_counter()
        if link is not None:
            link.send(tr)
            w = link.latest_weights()
            if w is not None and (not versions or versions[-1] != w[0]):
                versions.append(w[0])
        calls[k] = time.perf_counter() - t0
        delay = t_next - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        late[k] = max(0.0, time.perf_counter() - t_next)
        t_next += period
    return {"calls": calls, "late": late, "versions": np.array(versions)}


def pct(x: np.ndarray) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(x, 50) * 1e3), "p99_ms": float(np.percentile(x, 99) * 1e3),
            "max_ms": float(x.max() * 1e3), "mean_ms": float(x.mean() * 1e3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--seconds", type=float, default=30.0, help="per loop phase")
    p.add_argument("--block-seconds", type=float, default=5.0, help="length of one baseline or link block")
    p.add_argument("--throughput-seconds", type=float, default=5.0)
    p.add_argument("--weights-mb", type=float, default=1.0)
    p.add_argument("--image", action="store_true", help="two 84x84x3 frames per transition")
    p.add_argument("--out", type=Path, default=REPO / "bench/results/hil_link.json")
    p.add_argument("--serve", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve[0], args.serve[1], int(args.weights_mb * (1 << 20)), 1.0)
        return
    from s2r.real.hil_link import HilActorLink

    load_before, wall0 = os.getloadavg(), time.time()
    rng = np.random.default_rng(0)
    pool = [make_transition(rng, i, args.image) for i in range(256)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port_file = root / "port"
        learner = subprocess.Popen([sys.executable, __file__, "--serve", str(root / "inbox"), str(port_file),
                                    "--weights-mb", str(args.weights_mb)], cwd=REPO)
        try:
            while not port_file.exists() or not port_file.read_text():
                time.sleep(0.05)
            # Baseline and link blocks alternate, so the shared machine's changing load hits both alike; each link
            # block opens the link (same spool) and closes it after, so a baseline block runs with no link threads.
            base_parts, busy_parts = [], []
            blocks = max(1, round(args.seconds / args.block_seconds))
            for _ in range(blocks):
                base_parts.append(loop(args.rate, args.seconds / blocks, None, pool))
                link = HilActorLink(f"127.0.0.1:{port_file.read_text()}", spool_dir=root / "spool", actor_id="bench")
                while link.latest_weights() is None or not link.connected:
                    time.sleep(0.05)
                busy_parts.append(loop(args.rate, args.seconds / blocks, link, pool))
                st_loop = link.stats()
                link.close()
            base = {k: np.concatenate([b[k] for b in base_parts]) for k in ("calls", "late")}
            busy = {k: np.concatenate([b[k] for b in busy_parts]) for k in ("calls", "late", "versions")}
            link = HilActorLink(f"127.0.0.1:{port_file.read_text()}", spool_dir=root / "spool", actor_id="bench")
            assert link.flush(30), link.stats()
            acked0 = link.stats().acked
            # throughput: send as fast as possible, then wait for every acknowledgement
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < args.throughput_seconds:
                link.send(pool[n % len(pool)])
                n += 1
            t_sent = time.perf_counter() - t0
            flushed = link.flush(120)
            t_acked = time.perf_counter() - t0
            st = link.stats()
            link.close()
        finally:
            learner.send_signal(2)
            learner.wait(10)
    added_p50 = np.percentile(busy["calls"] + busy["late"], 50) - np.percentile(base["late"], 50)
    added_p99 = np.percentile(busy["calls"] + busy["late"], 99) - np.percentile(base["late"], 99)
    msg_bytes = len(__import__("s2r.real.hil_wire", fromlist=["encode"]).encode(pool[0]))
    result = {
        "bench": "hil_link", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip(),
        "rate_hz": args.rate, "seconds_per_phase": args.seconds, "block_seconds": args.seconds / blocks,
        "transition_bytes": msg_bytes,
        "weights_bytes": int(args.weights_mb * (1 << 20)), "weights_every_s": 1.0, "learner_fsync": True,
        "python_switch_interval_s": sys.getswitchinterval(),
        "baseline_lateness": pct(base["late"]),
        "link_call_time": pct(busy["calls"]), "link_lateness": pct(busy["late"]),
        "link_call_plus_lateness": pct(busy["calls"] + busy["late"]),
        "added_ms": {"p50": float(added_p50 * 1e3), "p99": float(added_p99 * 1e3)},
        "goal_p99_added_ms": 2.0, "goal_met": bool(added_p99 * 1e3 <= 2.0),
        "weights_versions_seen_in_loop": len(busy["versions"]),
        "weights_versions_increasing_per_block": all(bool((np.diff(b["versions"]) > 0).all()) for b in busy_parts),
        "loop_link_stats": st_loop.__dict__,
        "throughput": {"sent": n, "send_seconds": t_sent, "send_per_s": n / t_sent, "all_acked": flushed,
                       "acked_seconds": t_acked, "acked_per_s": (st.acked - acked0) / t_acked,
                       "final_stats": st.__dict__},
        "load_average_1m_before_after": [load_before[0], os.getloadavg()[0]], "cpu_count": os.cpu_count(),
        "note": "learner and actor on the same shared 2-core machine, other sessions running (see load average)",
        "wall_s": time.time() - wall0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("added_ms", "link_call_time", "link_lateness", "baseline_lateness",
                                             "goal_met", "load_average_1m_before_after")}))
    print(json.dumps(result["throughput"]["acked_per_s"]))


if __name__ == "__main__":
    main()
