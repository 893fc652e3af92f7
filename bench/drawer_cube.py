"""Panda-Drawer-Cube scripted references: the two-stage expert, and the one-stage baseline that skips the drawer.

    OMP_NUM_THREADS=1 python bench/drawer_cube.py --episodes 100 --seeds 0 1 --out bench/results/drawer_cube
    OMP_NUM_THREADS=1 python bench/drawer_cube.py --seeds --runs <run folder> ... --out bench/results/drawer_cube_learned

`DrawerCubeExpert` pulls the drawer open by its tab, then picks the cube up and puts it in the tray; the
baseline (`one_stage=True`) goes straight for the cube and lets go of it over the slot with the drawer still
shut, i.e. on the cabinet's top. Each seed runs `--episodes` envs for one episode each at privilege scale 0
(the plain task). Per episode it records success, the largest drawer opening, whether the drawer reached
`open_distance`, whether the cube was ever in the tray, and the episode length; the JSON holds the rates.
`--strip` also renders five frames of one expert episode (start, pull, to the cube, carry, let go) to <out>.png.
`--noise` adds Gaussian action noise to both scripts. `--runs` evaluates run folders' exported ONNX policies
the same way (plain task, seed 1000): how far a learned policy gets, stage by stage.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TASK = "Panda-Drawer-Cube"


def episodes(env, act, seed: int, reset=None) -> dict[str, np.ndarray]:
    """One episode per env of `act(obs) -> actions`; per episode "success", "max_opening" (m), "in_tray" (ever) and
    "length" (steps). `reset(env_ids)` starts the policy's new episodes."""
    n = env.num_envs
    obs = env.reset(seed=seed)
    if reset is not None:
        reset(np.arange(n))
    done = np.zeros(n, dtype=bool)
    out = {"success": np.zeros(n, bool), "max_opening": np.zeros(n), "in_tray": np.zeros(n, bool),
           "length": np.zeros(n, np.int64)}
    while not done.all():
        obs, _, term, trunc, info = env.step(act(obs))
        live = ~done
        b = env.behaviour()
        out["max_opening"][live] = np.maximum(out["max_opening"][live], b["opening"][live])
        out["in_tray"][live] |= b["in_tray"][live] | info["success"][live]
        out["success"][live] |= info["success"][live]
        out["length"][live] += 1
        done |= term | trunc
    return out


def summarise(name: str, seed: int, r: dict[str, np.ndarray], open_distance: float, wall: float) -> dict:
    n, ok = len(r["success"]), r["success"]
    return {"policy": name, "seed": seed, "episodes": n, "success_rate": float(ok.mean()),
            "opened_rate": float((r["max_opening"] >= open_distance).mean()),
            "in_tray_rate": float(r["in_tray"].mean()), "mean_max_opening_m": round(float(r["max_opening"].mean()), 4),
            "mean_success_length": float(r["length"][ok].mean()) if ok.any() else None,
            "max_success_length": int(r["length"][ok].max()) if ok.any() else None,
            "failed_envs": np.flatnonzero(~ok).tolist() if (~ok).sum() <= 20 else f"{int((~ok).sum())} of {n}",
            "wall_s": round(wall, 1)}


def scripted(name: str, one_stage: bool, seed: int, n: int, noise: float) -> dict:
    """The expert, or the one-stage baseline, for one episode on each of `n` envs."""
    from s2r.sim import make, task_config
    from s2r.sim.tasks.drawer_expert import DrawerCubeExpert
    from s2r.sim.tasks.manipulation import DrawerCubeEnv

    cfg = task_config(TASK, {"backend.num_threads": 1})
    env = make(TASK, n, cfg=cfg, seed=seed)
    try:
        t0 = time.perf_counter()
        ex = DrawerCubeExpert(cfg, DrawerCubeEnv, n, noise, 0.0, seed, one_stage=one_stage)
        r = episodes(env, ex.act, seed, reset=ex.reset)
        wall = time.perf_counter() - t0
    finally:
        env.close()
    return {**summarise(name, seed, r, cfg.open_distance, wall), "noise": noise}


def learned(run_dir: Path, n: int, seed: int) -> dict:
    """A run's exported ONNX policy at scale 0 on `n` episodes of the plain task."""
    from s2r.policies.evaluate import OnnxPolicy, run_task_config
    from s2r.sim import make

    policy = OnnxPolicy(run_dir)
    task_id, cfg = run_task_config(run_dir, {"backend.num_threads": 1})
    if cfg.privileged:
        raise ValueError(f"{run_dir}/policy.json describes a task with privileged actions; export it without them")
    env = make(task_id, n, cfg=cfg, seed=seed)
    try:
        t0 = time.perf_counter()
        r = episodes(env, policy, seed, reset=policy.reset)  # it picks its groups from the dict
        wall = time.perf_counter() - t0
    finally:
        env.close()
    return {**summarise(run_dir.name, seed, r, cfg.open_distance, wall), "run_dir": str(run_dir)}


def strip(path: Path, seed: int = 4) -> None:
    """Five frames of one expert episode, from a camera on the robot's side that sees the drawer's front."""
    from s2r.sim import make, task_config  # noqa: I001 (first: it picks the headless GL before mujoco loads one)
    from s2r.sim.tasks.experts import make_expert

    import imageio
    import mujoco

    env = make(TASK, 1, cfg=task_config(TASK, {"backend.num_threads": 1}), seed=seed)
    ex = make_expert(TASK, 1, seed=seed)
    renderer, data, cam, opt = mujoco.Renderer(env.model, 240, 320), mujoco.MjData(env.model), mujoco.MjvCamera(), \
        mujoco.MjvOption()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.lookat[:], cam.distance, cam.azimuth, cam.elevation = [0.45, -0.05, 0.05], 0.85, 40.0, -32.0
    # phase -> label; the pull and the carry are shown a few steps in
    shots = {ex.TAB_ABOVE: ("start", 0), ex.PULL: ("pull", 5), ex.APPROACH: ("to cube", 0), ex.CARRY: ("carry", 5),
             ex.RELEASE: ("let go", 0)}
    frames: dict[str, np.ndarray] = {}
    try:
        obs = env.reset(seed=seed)
        for _ in range(env.cfg.max_episode_steps):
            label, after = shots.get(int(ex.phase[0]), (None, 0))
            if label and label not in frames and ex.count[0] >= after:
                m = env.backend.models[0]
                mujoco.mj_setState(m, data, env.backend.state[0], mujoco.mjtState.mjSTATE_FULLPHYSICS)
                mujoco.mj_forward(m, data)
                mujoco.mjv_updateScene(m, data, opt, None, cam, mujoco.mjtCatBit.mjCAT_ALL, renderer.scene)
                frames[label] = renderer.render().copy()
            obs, _, term, trunc, _ = env.step(ex.act(obs))
            if term[0] or trunc[0]:
                break
    finally:
        renderer.close()
        env.close()
    imageio.imwrite(path, np.concatenate(list(frames.values()), axis=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1], help="seeds of the scripts (none: skip them)")
    p.add_argument("--noise", type=float, default=0.0, help="Gaussian action noise of the scripts")
    p.add_argument("--runs", nargs="*", default=[], help="run folders whose policy.onnx to evaluate (seed 1000)")
    p.add_argument("--strip", action="store_true", help="also render one expert episode to <out>.png")
    p.add_argument("--out", default="bench/results/drawer_cube")
    args = p.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    load_before = os.getloadavg()
    results = []
    for seed in args.seeds:
        for name, one_stage in (("DrawerCubeExpert", False), ("one_stage_baseline", True)):
            res = scripted(name, one_stage, seed, args.episodes, args.noise)
            print(json.dumps(res), flush=True)
            results.append(res)
    for run in args.runs:
        res = learned(Path(run), args.episodes, 1000)
        print(json.dumps(res), flush=True)
        results.append(res)
    doc = {"command": " ".join([sys.executable, *sys.argv]), "git_commit": commit, "task": TASK,
           "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cpu_threads": 1,
           "note": "shared 2-core machine; privilege scale 0 (the plain task); one episode per env",
           "goal": "expert >= 90% over 100 episodes on 2 seeds; one-stage baseline fails", "results": results}
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    if args.strip:
        strip(out.with_suffix(".png"))


if __name__ == "__main__":
    main()
