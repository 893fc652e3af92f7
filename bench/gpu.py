"""The GPU bench, ready for whoever has a GPU: device-resident task throughput, PPO on the device, parity, time to walk.

    python bench/gpu.py                                  # on a CUDA machine: all of it (~15 min)
    python bench/gpu.py --envs 1024 4096 --seconds 10 --skip-walk
    python bench/gpu.py --device cpu --envs 16 64 --seconds 10 --skip-walk --skip-parity --skip-host --threads 1 \
        --cpu-envs 16 64 --ppo-envs 16 --out bench/results/gpu_cpu_torch.json      # CPU dry run (Warp's CPU device)

What it measures (writes bench/results/gpu.json):
- `torch`: env-steps/s of the device-resident Go1-Velocity-Flat task (`sim/backends/warp_env.py`: torch over
  Warp's arrays, no host copies; observations, rewards, terminations, masked resets, commands, pushes and
  randomisation on the device) at each `--envs`, random actions drawn on the device, after a warm-up that
  compiles kernels and captures the graphs. This is the issue's "full task in the loop" rate.
- `ppo`: env-steps/s of `s2r train --backend warp` (collection + PPO update, everything on the device) at each
  `--ppo-envs` for `--ppo-seconds`.
- `warp` (unless --skip-host): the numpy task on the warp backend (host copies each step) at each `--envs`:
  what the device-resident path is measured against.
- `cpu`: the numpy task on the CPU backend at each `--cpu-envs` (`--threads` physics and torch threads; 0: all cores).
- `parity`: tests/sim/test_warp_backend.py and tests/sim/test_warp_torch_task.py run on the device.
- `time_to_walk`: bench/time_to_walk.py on the warp backend (4096 envs, device-resident PPO, an evaluation every
  minute with the CPU bench's walking criterion) for `--walk-minutes`; its JSON lands in bench/results/gpu_time_to_walk/.
- versions of mujoco, mujoco_warp, warp and torch (a version bump is when throughput must be re-measured).
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


def throughput(backend: str, n: int, seconds: float, device: str = "", threads: int = 0) -> dict:
    """Env-steps/s of the numpy task on `backend` (host arrays in and out)."""
    import s2r.sim as s2r_sim

    cfg = s2r_sim.task_config(TASK)
    cfg = replace(cfg, backend=replace(cfg.backend, name=backend, device=device, num_threads=threads))
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
    return {"path": f"numpy task on the {backend} backend", "backend": backend, "device": device or backend,
            "threads": threads, "num_envs": n, "env_steps_per_s": round(steps * n / dt, 1),
            "control_steps": steps, "setup_s": round(setup, 1)}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def throughput_torch(n: int, seconds: float, device: str) -> dict:
    """Env-steps/s of the device-resident task with random actions drawn on its device."""
    import s2r.sim as s2r_sim
    import torch

    cfg = s2r_sim.task_config(TASK, {"backend.name": "warp", "backend.device": device})
    t0 = time.perf_counter()
    env = s2r_sim.make_device_env(TASK, n, cfg=cfg, seed=0)
    try:
        env.reset(seed=0)
        env.randomize_episode_start()
        gen = torch.Generator(device=env.device)
        gen.manual_seed(0)
        acts = torch.randn(8, n, env.spec.action_dim, generator=gen, device=env.device) * 0.5
        for k in range(5):  # warm-up: kernel loads, graph capture
            env.step(acts[k % 8])
        _sync(env.device)
        setup = time.perf_counter() - t0
        steps, t1 = 0, time.perf_counter()
        while time.perf_counter() - t1 < seconds:
            env.step(acts[steps % 8])
            steps += 1
        _sync(env.device)
        dt = time.perf_counter() - t1
        resets = int(env.nan_resets)
    finally:
        env.close()
    return {"path": "torch (device-resident)", "device": env.device, "num_envs": n,
            "env_steps_per_s": round(steps * n / dt, 1), "control_steps": steps, "setup_s": round(setup, 1),
            "nan_resets": resets}


def ppo_throughput(n: int, seconds: float, device: str) -> dict:
    """Env-steps/s of `s2r train Go1-Velocity-Flat --backend warp` (collection and update on the device)."""
    import tempfile

    from s2r.policies.driver import Budget, new_run_spec, train

    spec = new_run_spec("ppo", TASK, task_overrides={"backend.name": "warp", "backend.device": device},
                        algo_overrides={"export_parity_steps": 2}, num_envs=n, seed=0,
                        budget=Budget(minutes=seconds / 60))
    with tempfile.TemporaryDirectory() as tmp:
        res = train(spec, Path(tmp) / "run", progress=False)
    return {"path": "ppo on the device", "device": device, "num_envs": n, "env_steps": res["progress"],
            "wall_s": round(res["wall_time_s"], 1), "env_steps_per_s": round(res["progress"] / res["wall_time_s"], 1),
            "last_iteration_env_steps_per_s": res.get("env_steps_per_s"), "mean_return": res.get("mean_return")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", type=int, nargs="+", default=[1024, 4096, 8192, 16384])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--device", default="", help="warp device (default: first GPU)")
    ap.add_argument("--ppo-envs", type=int, nargs="*", default=[4096], help="PPO loop widths (none: skip)")
    ap.add_argument("--ppo-seconds", type=float, default=60.0)
    ap.add_argument("--cpu-envs", type=int, nargs="*", default=[256], help="CPU-backend widths (none: skip)")
    ap.add_argument("--threads", type=int, default=0, help="torch and CPU-backend threads (0: all cores)")
    ap.add_argument("--walk-minutes", type=float, default=5.0)
    ap.add_argument("--skip-walk", action="store_true")
    ap.add_argument("--skip-parity", action="store_true")
    ap.add_argument("--skip-host", action="store_true", help="skip the numpy-task-on-warp (host copies) rows")
    ap.add_argument("--out", default="bench/results/gpu.json")
    args = ap.parse_args()
    import mujoco
    import mujoco_warp
    import torch
    import warp as wp

    if args.threads:
        torch.set_num_threads(args.threads)
    wp.config.quiet = True
    wp.init()
    device = args.device or ("cuda:0" if wp.is_cuda_available() else "cpu")
    res: dict = {"bench": "gpu", "command": "python " + " ".join(sys.argv), "device": device,
                 "device_name": wp.get_device(device).name if device != "cpu" else "cpu",
                 "versions": {"mujoco": mujoco.__version__, "mujoco_warp": getattr(mujoco_warp, "__version__", "?"),
                              "warp": wp.__version__, "torch": torch.__version__},
                 "cores": os.cpu_count(), "threads": args.threads, "load_avg_1min_start": round(os.getloadavg()[0], 2)}
    out_path = Path(args.out)

    def save() -> None:  # after every row, so a run cut short keeps what it measured
        res["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(res, indent=1) + "\n")

    for key, fn, widths in (("torch", throughput_torch, args.envs), ("ppo", ppo_throughput, args.ppo_envs)):
        res[key] = []
        for n in widths:
            r = fn(n, args.seconds if key == "torch" else args.ppo_seconds, device)
            res[key].append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
            save()
    if not args.skip_host:
        res["warp"] = []
        for n in args.envs:
            r = throughput("warp", n, args.seconds, device)
            res["warp"].append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
            save()
    res["cpu"] = []
    for n in args.cpu_envs:
        r = throughput("cpu", n, min(args.seconds, 20.0), threads=args.threads)
        res["cpu"].append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
        save()
    if not args.skip_parity:
        env = {**os.environ, "S2R_WARP_TEST_DEVICE": device}
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/sim/test_warp_backend.py",
                            "tests/sim/test_warp_torch_task.py", "tests/policies/test_device_ppo.py"], env=env,
                           capture_output=True, text=True)
        res["parity"] = {"passed": p.returncode == 0, "tail": p.stdout[-600:]}
        save()
    if not args.skip_walk:
        # The same criterion and evaluation chunks as the CPU time-to-walk bench, on the warp backend.
        out = Path(args.out).with_name("gpu_time_to_walk")
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "bench/time_to_walk.py", "--minutes", str(args.walk_minutes), "--chunk", "1",
                            "--num-envs", "4096", "--backend", "warp", "--device", device, "--out", str(out),
                            "--run-dir", "runs/bench/gpu_walk"], capture_output=True, text=True)
        res["time_to_walk"] = {"minutes": args.walk_minutes, "rc": p.returncode, "wall_s": round(time.perf_counter() - t0, 1),
                               "result": p.stdout.strip()[-1500:] or p.stderr.strip()[-1500:]}
    save()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
