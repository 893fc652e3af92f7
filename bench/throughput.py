"""Env-steps/s of the CPU backend's full task loop, against common vector-env peers and bare MuJoCo.

    python bench/throughput.py            # about 3 minutes on 2 cores
    python bench/throughput.py --quick    # about 40 s: shorter timings, SubprocVecEnv with 2 workers only

Prints one JSON line:

- `ours`: env-steps/s of `s2r.sim.make(task, n)` at n = 1, 16, 64, 256 running the whole task loop
  (observations, rewards, terminations, auto-resets, domain randomisation, pushes) with random actions.
- `peers`: the same task and MJCF as one-world gymnasium envs (`gymnasium.make(s2r.sim.gym_id(task))`)
  stacked by gymnasium's `SyncVectorEnv`, SB3's `DummyVecEnv` and SB3's `SubprocVecEnv` (one process per
  env, as SB3 does it: 2 workers, and 16 workers outside --quick).
- `bare_rollout`: the limit, `mujoco.rollout` stepping the backend's own models (256 worlds, per-world
  randomised) on the same threads with no task logic, in one call of 400 physics steps, counted as
  env-steps = physics steps / substeps. It starts from the world states of our env after 100 control steps
  of the task loop (the same mix of contacts), with the same kind of random joint targets held for a
  control period. `bare_rollout_per_control_step` is the same physics handed to `mujoco.rollout` once per
  control period (state carried over, as any closed-loop policy must do): MuJoCo restarts its solver warm
  start at every call, which is part of the gap between the one-call limit and any per-step loop.
- `ratio_vs_bare_rollout` (ours at 256 / bare), `ratio_vs_best_peer` (our best / the best peer), and
  `ratio_vs_peers_same_n` at the env counts both sides ran.
- `profile_256`: where the task loop spends its time at 256 envs (physics call vs Python task logic,
  measured with timers; then the heaviest functions from cProfile).

Timings on a loaded machine are noisy: `ours@256` and the two bare rollouts are measured interleaved, in
timing windows of equal length, and the medians are reported; `load_avg_1min` is included so a reader
can judge.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

import mujoco
import numpy as np
import s2r.sim as s2r_sim
from mujoco import rollout


def _random_actions(rng: np.random.Generator, n: int, dim: int, pool: int = 16) -> list[np.ndarray]:
    """A small pool of random actions, drawn before timing so the RNG is not what is measured."""
    return [rng.normal(0.0, 0.5, (n, dim)).astype(np.float32) for _ in range(pool)]


def _make_ours(task: str, n: int, threads: int) -> s2r_sim.VecEnv:
    cfg = s2r_sim.task_config(task)
    cfg = replace(cfg, backend=replace(cfg.backend, num_threads=threads))
    env = s2r_sim.make(task, n, cfg=cfg, seed=0)
    env.reset(seed=0)
    env.randomize_episode_start()  # resets spread over the run, as in training
    return env


def _time_steps(step: Any, actions: list[np.ndarray], n: int, seconds: float, warmup: int = 10) -> float:
    """Call step(actions[i]) for about `seconds` after a warm-up; return env-steps/s."""
    for i in range(warmup):
        step(actions[i % len(actions)])
    count, t0 = 0, time.perf_counter()
    while True:
        for _ in range(10):
            step(actions[count % len(actions)])
            count += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return count * n / elapsed


def measure_ours(task: str, n: int, seconds: float, threads: int) -> float:
    """Env-steps/s of our batched env (full task loop) with `n` worlds."""
    env = _make_ours(task, n, threads)
    try:
        acts = _random_actions(np.random.default_rng(1), n, env.spec.action_dim)
        return _time_steps(env.step, acts, n, seconds)
    finally:
        env.close()


def measure_peer(kind: str, task: str, n: int, seconds: float) -> float:
    """Env-steps/s of `n` one-world gymnasium envs of `task` stacked by a peer vector env."""
    import gymnasium

    gid = s2r_sim.gym_id(task)

    def one() -> gymnasium.Env:
        import s2r.sim  # noqa: F401  (registers the gymnasium ids in SubprocVecEnv workers)

        return gymnasium.make(gid)

    if kind == "gymnasium_sync":
        venv = gymnasium.vector.SyncVectorEnv([one] * n)
        venv.reset(seed=0)
        step = venv.step
    else:
        from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

        venv = DummyVecEnv([one] * n) if kind == "sb3_dummy" else SubprocVecEnv([one] * n, start_method="forkserver")
        venv.seed(0)
        venv.reset()
        step = venv.step
    try:
        dim = int(np.prod(venv.action_space.shape[1:] if kind == "gymnasium_sync" else venv.action_space.shape))
        acts = _random_actions(np.random.default_rng(1), n, dim)
        return _time_steps(step, acts, n, seconds, warmup=5)
    finally:
        venv.close()


class BareRollout:
    """`mujoco.rollout` over the backend's own per-world models with no task logic."""

    def __init__(self, task: str, n: int, threads: int, physics_steps: int, warm_steps: int = 100) -> None:
        self.env = _make_ours(task, n, threads)
        b = self.env.backend
        self.n, self.substeps, self.physics_steps = n, self.env.substeps, physics_steps
        rng = np.random.default_rng(2)
        # Start from worlds in the state mix the task loop runs in (mid-episode, some just reset), not all
        # freshly spawned: how much a physics step costs depends on the contacts in play.
        for _ in range(warm_steps):
            self.env.step(rng.normal(0.0, 0.5, (n, b.nu)).astype(np.float32))
        self.state0 = b.state.copy()
        controls = physics_steps // self.substeps
        targets = self.env.default_q + self.env.cfg.action_scale * rng.normal(0.0, 0.5, (n, controls, b.nu))
        self.ctrl = np.ascontiguousarray(np.repeat(targets, self.substeps, axis=1))  # (n, physics_steps, nu)
        self.datas = [mujoco.MjData(b.base_model) for _ in range(max(1, threads))]
        self.pool = rollout.Rollout(nthread=threads if threads > 1 else 0)
        self.out_state = np.empty((n, physics_steps, b.nstate))
        self.out_sensor = np.empty((n, physics_steps, b.base_model.nsensordata))
        self.models = b.models

    def one_call(self, seconds: float = 0.0) -> float:
        """All physics steps in one rollout call (repeated for at least `seconds`); env-steps/s."""
        calls, t0 = 0, time.perf_counter()
        while True:
            self.pool.rollout(self.models, self.datas, self.state0, self.ctrl, skip_checks=True,
                              nstep=self.physics_steps, state=self.out_state, sensordata=self.out_sensor)
            calls += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                return calls * self.n * self.physics_steps / self.substeps / elapsed

    def per_control_step(self, seconds: float = 0.0) -> float:
        """One rollout call per control period, state carried over (repeated for at least `seconds`); env-steps/s."""
        k = self.substeps
        out_s = np.empty((self.n, k, self.state0.shape[1]))
        out_d = np.empty((self.n, k, self.out_sensor.shape[2]))
        chunks = [np.ascontiguousarray(self.ctrl[:, i : i + k]) for i in range(0, self.physics_steps, k)]
        rounds, t0 = 0, time.perf_counter()
        while True:
            state = self.state0.copy()
            for c in chunks:
                self.pool.rollout(self.models, self.datas, state, c, skip_checks=True, nstep=k, state=out_s,
                                  sensordata=out_d)
                state[:] = out_s[:, -1]
            rounds += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                return rounds * self.n * self.physics_steps / k / elapsed

    def close(self) -> None:
        """Release threads."""
        self.pool.close()
        self.env.close()


def profile_task_loop(task: str, n: int, threads: int, steps: int) -> dict[str, Any]:
    """Split one batch's step time into the physics call and the Python task logic, then cProfile it."""
    env = _make_ours(task, n, threads)
    acts = _random_actions(np.random.default_rng(3), n, env.spec.action_dim)
    backend_step = env.backend.step
    physics = [0.0]

    def timed_step(*args: Any, **kwargs: Any) -> np.ndarray:
        t = time.perf_counter()
        try:
            return backend_step(*args, **kwargs)
        finally:
            physics[0] += time.perf_counter() - t

    try:
        for i in range(10):
            env.step(acts[i % len(acts)])
        env.backend.step = timed_step  # instance attribute shadows the method for this measurement only
        t0 = time.perf_counter()
        for i in range(steps):
            env.step(acts[i % len(acts)])
        total = time.perf_counter() - t0
        del env.backend.step
        prof = cProfile.Profile()
        prof.enable()
        for i in range(steps):
            env.step(acts[i % len(acts)])
        prof.disable()
    finally:
        env.close()
    stats = pstats.Stats(prof).stats  # {(file, line, func): (cc, nc, tottime, cumtime, callers)}
    top = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:8]
    return {
        "physics_fraction": round(physics[0] / total, 4),
        "task_logic_fraction": round(1 - physics[0] / total, 4),
        "task_logic_us_per_step": round((total - physics[0]) / steps * 1e6, 1),
        "cprofile_top_tottime_ms_per_step": [
            [f"{os.path.basename(k[0])}:{k[2]}", round(v[2] / steps * 1e3, 3)] for k, v in top
        ],
    }


def main() -> None:
    p = argparse.ArgumentParser(description="Env-steps/s of the CPU task loop vs peers and bare mujoco.rollout.")
    p.add_argument("--task", default="Go1-Velocity-Flat")
    p.add_argument("--threads", type=int, default=2, help="physics threads for ours and the bare rollout")
    p.add_argument("--seconds", type=float, default=3.0, help="timing window per measurement")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats of ours@256 vs the bare rollout")
    p.add_argument("--quick", action="store_true", help="short windows, fewer repeats, SubprocVecEnv with 2 workers only")
    args = p.parse_args()
    seconds = 0.6 if args.quick else args.seconds
    repeats = 2 if args.quick else args.repeats
    task, threads = args.task, args.threads
    t_start = time.perf_counter()

    ours = {n: measure_ours(task, n, seconds, threads) for n in (1, 16, 64)}
    peers: dict[str, dict[int, float]] = {"gymnasium_sync": {}, "sb3_dummy": {}, "sb3_subproc": {}}
    for n in (16, 64):
        peers["gymnasium_sync"][n] = measure_peer("gymnasium_sync", task, n, seconds)
        peers["sb3_dummy"][n] = measure_peer("sb3_dummy", task, n, seconds)
    for n in (2,) if args.quick else (2, 16):
        peers["sb3_subproc"][n] = measure_peer("sb3_subproc", task, n, seconds)

    # ours@256 and the limit, interleaved so background load hits both alike.
    bare = BareRollout(task, 256, threads, physics_steps=400)
    ours256, one_call, per_step = [], [], []
    try:
        bare.one_call()  # warm the pool
        for _ in range(repeats):  # equal timing windows, so bursts of background load hit all three alike
            ours256.append(measure_ours(task, 256, seconds, threads))
            one_call.append(bare.one_call(seconds))
            per_step.append(bare.per_control_step(seconds))
    finally:
        bare.close()
    ours[256] = statistics.median(ours256)
    bare_sps = statistics.median(one_call)
    bare_step_sps = statistics.median(per_step)
    profile = profile_task_loop(task, 256, threads, steps=50 if args.quick else 200)

    best_peer_name, best_peer_n, best_peer = max(
        ((name, n, v) for name, d in peers.items() for n, v in d.items()), key=lambda t: t[2]
    )
    same_n = {f"{name}@{n}": round(ours[n] / v, 2) for name, d in peers.items() for n, v in d.items() if n in ours}
    out = {
        "bench": "throughput",
        "task": task,
        "threads": threads,
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "quick": args.quick,
        "ours_env_steps_per_s": {str(n): round(v) for n, v in ours.items()},
        "ours_256_repeats": [round(v) for v in ours256],
        "peers_env_steps_per_s": {name: {str(n): round(v) for n, v in d.items()} for name, d in peers.items()},
        "bare_rollout": {"envs": 256, "physics_steps": 400, "calls": 1, "env_steps_per_s": round(bare_sps),
                         "repeats": [round(v) for v in one_call]},
        "bare_rollout_per_control_step": {"envs": 256, "physics_steps": 400, "calls": 400 // bare.substeps,
                                          "env_steps_per_s": round(bare_step_sps),
                                          "repeats": [round(v) for v in per_step]},
        "ratio_vs_bare_rollout": round(ours[256] / bare_sps, 3),
        "ratio_vs_bare_rollout_per_control_step": round(ours[256] / bare_step_sps, 3),
        "best_peer": f"{best_peer_name}@{best_peer_n}",
        "ratio_vs_best_peer": round(max(ours.values()) / best_peer, 2),
        "ratio_vs_peers_same_n": same_n,
        "profile_256": profile,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
