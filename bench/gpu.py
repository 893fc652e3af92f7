"""The GPU bench, ready for whoever has a GPU: warp backend throughput, parity on the device, time to walk.

    python bench/gpu.py                                  # on a CUDA machine: all of it (~15 min)
    python bench/gpu.py --envs 1024 4096 --seconds 10 --skip-walk
    python bench/gpu.py --device cpu --envs 16 --seconds 5 --skip-walk --skip-parity --out /tmp/gpu.json  # dry run

What it measures (writes bench/results/gpu.json):
- `warp`: env-steps/s of the full Go1-Velocity-Flat task loop (observations, rewards, terminations,
  resets, randomisation) on the warp backend at each `--envs`, random actions, after a warm-up that
  compiles kernels and captures the graphs. The task code is numpy today, so each control step copies the
  state to the host and back: this is the rate of that path, not of a device-resident one.
- `cpu`: the same loop on the CPU backend (256 envs, every core), in the same report.
- `parity`: tests/sim/test_warp_backend.py run on the device (S2R_WARP_TEST_DEVICE).
- `time_to_walk`: bench/time_to_walk.py on the warp backend (4096 envs, an evaluation every minute with the
  CPU bench's walking criterion) for `--walk-minutes`; its JSON lands in bench/results/gpu_time_to_walk/.
- versions of mujoco, mujoco_warp and warp (a version bump is when throughput must be re-measured).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

TASK = "Go1-Velocity-Flat"


def throughput(backend: str, n: int, seconds: float, device: str = "") -> dict:
    import s2r.sim as s2r_sim

    cfg = s2r_sim.task_config(TASK)
    cfg = replace(cfg, backend=replace(cfg.backend, name=backend, device=device))
    t0 = time.perf_counter()
    env = s2r_sim.make(TASK, n, cfg=cfg, seed=0)
    try:
        env.reset(seed=0)
        env.randomize_episode_start()
        rng = np.random.default_rng(0)
        acts = [rng.normal(0, 0.5, (n, env.spec.action_dim)).astype(np.float32) for _ in range(8)]
        for k in range(5):  # warm-up: kernel compiles, graph capture, caches
            env.step(acts[k % 8])
        setup = time.perf_counter() - t0
        steps, t1 = 0, time.perf_counter()
        while time.perf_counter() - t1 < seconds:
            env.step(acts[steps % 8])
            steps += 1
        dt = time.perf_counter() - t1
    finally:
        env.close()
    return {"backend": backend, "device": device or backend, "num_envs": n, "env_steps_per_s": round(steps * n / dt, 1),
            "control_steps": steps, "setup_s": round(setup, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", type=int, nargs="+", default=[1024, 4096, 8192, 16384])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--device", default="", help="warp device (default: first GPU)")
    ap.add_argument("--walk-minutes", type=float, default=5.0)
    ap.add_argument("--skip-walk", action="store_true")
    ap.add_argument("--skip-parity", action="store_true")
    ap.add_argument("--out", default="bench/results/gpu.json")
    args = ap.parse_args()
    import mujoco
    import mujoco_warp
    import warp as wp

    wp.config.quiet = True
    wp.init()
    device = args.device or ("cuda:0" if wp.is_cuda_available() else "cpu")
    res: dict = {"bench": "gpu", "command": "python " + " ".join(sys.argv), "device": device,
                 "device_name": wp.get_device(device).name if device != "cpu" else "cpu",
                 "versions": {"mujoco": mujoco.__version__, "mujoco_warp": getattr(mujoco_warp, "__version__", "?"),
                              "warp": wp.__version__},
                 "cores": os.cpu_count(), "load_avg_1min_start": round(os.getloadavg()[0], 2)}
    res["warp"] = []
    for n in args.envs:
        r = throughput("warp", n, args.seconds, device)
        res["warp"].append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
    res["cpu"] = throughput("cpu", 256, min(args.seconds, 20.0))
    if not args.skip_parity:
        env = {**os.environ, "S2R_WARP_TEST_DEVICE": device}
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/sim/test_warp_backend.py"], env=env,
                           capture_output=True, text=True)
        res["parity"] = {"passed": p.returncode == 0, "tail": p.stdout[-600:]}
    if not args.skip_walk:
        # The same criterion and evaluation chunks as the CPU time-to-walk bench, on the warp backend.
        out = Path(args.out).with_name("gpu_time_to_walk")
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "bench/time_to_walk.py", "--minutes", str(args.walk_minutes), "--chunk", "1",
                            "--num-envs", "4096", "--backend", "warp", "--device", device, "--out", str(out),
                            "--run-dir", "runs/bench/gpu_walk"], capture_output=True, text=True)
        res["time_to_walk"] = {"minutes": args.walk_minutes, "rc": p.returncode, "wall_s": round(time.perf_counter() - t0, 1),
                               "result": p.stdout.strip()[-1500:] or p.stderr.strip()[-1500:]}
    res["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
