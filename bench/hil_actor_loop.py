"""What the HIL actor adds to a control step: `HilActor.act` + `record` with the link busy, against plain inference.

A learner process publishes a real ONNX actor (the `hil` learner's graph, ~0.3 MB) as a new version every
`--publish-every` seconds and stores every upload (fsync per acknowledgement); this process runs a loop at
`--rate` Hz. Two arms, alternating in blocks so load changes hit both alike:

- plain: onnxruntime on the same graph + nothing else (what a policy node does anyway);
- hil: `HilActor.act` (weights check, session swap built off-thread, policy, intervention mixer) +
  `HilActor.record` (spool to disk, upload in the background).

"Added" = hil - plain per step at p50 / p99. Writes JSON with the command, commit and load.

    python bench/hil_actor_loop.py --seconds 20 --out bench/results/hil_actor_loop.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OBS_DIM, ACT_DIM = 26, 4


def actor_graph(seed: int) -> bytes:
    import torch
    from s2r.policies.hil_remote import onnx_bytes
    from s2r.policies.offpolicy import OffPolicyConfig, OffPolicyLearner

    torch.manual_seed(seed)

    class Algo:  # what onnx_bytes reads
        pass

    a = Algo()
    a.dims = {"policy": OBS_DIM}
    a.learner = OffPolicyLearner({"policy": OBS_DIM}, ACT_DIM, OffPolicyConfig(num_critics=2))
    return onnx_bytes(a)


def serve(inbox: str, port_q: mp.Queue, every_s: float) -> None:
    from s2r.policies.hil_link_server import HilLearnerLink

    link = HilLearnerLink(inbox_dir=Path(inbox))
    port_q.put(link.start())
    version = 0
    while True:
        version += 1
        link.publish_weights(version, actor_graph(version), {"v": version})
        link.drain()
        time.sleep(every_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=20.0, help="per arm")
    ap.add_argument("--block-seconds", type=float, default=2.0)
    ap.add_argument("--publish-every", type=float, default=1.0)
    ap.add_argument("--out", default="bench/results/hil_actor_loop.json")
    args = ap.parse_args()
    import onnxruntime as ort
    from s2r.real.hil_actor import HilActor
    from s2r.real.hil_link import HilActorLink
    from s2r.real.intervention import OperatorInput

    load0, t0 = os.getloadavg(), time.monotonic()
    tmp = Path(tempfile.mkdtemp())
    q: mp.Queue = mp.get_context("spawn").Queue()
    server = mp.get_context("spawn").Process(target=serve, args=(str(tmp / "inbox"), q, args.publish_every), daemon=True)
    server.start()
    port = q.get(timeout=120)
    link = HilActorLink(f"127.0.0.1:{port}", spool_dir=tmp / "spool", actor_id="bench")
    actor = HilActor(link, ACT_DIM)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    plain = ort.InferenceSession(actor_graph(0), opts, providers=["CPUExecutionProvider"])
    while actor.weights.version is None:  # first weights in
        actor.act(np.zeros(OBS_DIM, np.float32), OperatorInput.idle(1, ACT_DIM))
        actor.record(np.zeros(OBS_DIM, np.float32), 0.0, False, False)
        time.sleep(0.05)
    rng = np.random.default_rng(0)
    idle = OperatorInput.idle(1, ACT_DIM)
    times: dict[str, list[float]] = {"plain": [], "hil": []}
    period = 1.0 / args.rate
    arm, elapsed = "plain", {"plain": 0.0, "hil": 0.0}
    while min(elapsed.values()) < args.seconds:
        block_end = time.monotonic() + args.block_seconds
        nxt = time.monotonic()
        while time.monotonic() < block_end:
            obs = rng.standard_normal(OBS_DIM).astype(np.float32)
            s = time.perf_counter()
            if arm == "plain":
                plain.run(None, {"obs": obs[None]})
            else:
                actor.act(obs, idle)
                actor.record(obs, 0.0, False, False)
            times[arm].append(time.perf_counter() - s)
            nxt += period
            time.sleep(max(0.0, nxt - time.monotonic()))
        elapsed[arm] += args.block_seconds
        arm = "hil" if arm == "plain" else "plain"
    stats = link.stats()
    link.close()
    server.terminate()

    def pct(x: list[float]) -> dict[str, float]:
        a = np.asarray(x) * 1e3
        return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
                "max_ms": float(a.max()), "n": len(a)}

    res = {k: pct(v) for k, v in times.items()}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    doc = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": commit, "rate_hz": args.rate,
           "publish_every_s": args.publish_every, "plain": res["plain"], "hil": res["hil"],
           "added_p50_ms": res["hil"]["p50_ms"] - res["plain"]["p50_ms"],
           "added_p99_ms": res["hil"]["p99_ms"] - res["plain"]["p99_ms"],
           "weights_versions_seen": actor.weights.version, "acked": stats.acked, "pending": stats.pending,
           "load_before": load0, "load_after": os.getloadavg(), "cpus": os.cpu_count(),
           "wall_s": time.monotonic() - t0}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
