"""Confined 3D legged locomotion (issue 18): the hierarchical waypoint follower against two baselines.

Trains three PPO policies on the same env-step budget, each warm-started with a few critic-only iterations
from the shipped crouching walker (tests/data/go1_crouch_walk: the flat walker plus a `crouch_command` input,
trained by `train --method crouch_walker`, 2 x 400k steps; `--init tests/data/go1_walk/policy.onnx` gives
the first benchmark's start, a walker that never crouched):
  waypoints  Go1-Waypoints-Confined  planner waypoints (the hierarchy)
  goal       Go1-Goal-Confined       only the global goal, end to end
  skills     Go1-Skills-Confined     velocity + body-height commands derived from the planner's path
(the follower gets the walker's velocity and crouch inputs fed from its first waypoint, `policies/warm_start`),
then evaluates each on held-out maps (`EVAL_SEEDS`) at difficulty 0, 0.5 and 1: one episode per map, success
= the base within reach_radius of the goal within the task's 30 s episode and before a fall, time to goal.

    OMP_NUM_THREADS=1 python bench/confined.py train --method crouch_walker --steps 400000 --runs runs/walker
    OMP_NUM_THREADS=1 python bench/confined.py train --method crouch_steps --steps 250000 --runs runs/walker \
        --set 'field.step=[0.02,0.12]' --set field.blocks=25 --set randomization.push_velocity=0 \
        --set rewards.track_lin_vel_xy.weight=3 --init-std 0.15   # round 3; shipped: tests/data/go1_crouch_steps_walk
    OMP_NUM_THREADS=1 python bench/confined.py train --method waypoints --steps 164352 --seed 0 --runs runs/confined
    OMP_NUM_THREADS=1 python bench/confined.py train --method waypoints --steps 1000000 --num-envs 256 \
        --difficulties hard --set spawn_on_path=0.5 --init tests/data/go1_crouch_steps_walk/policy.onnx \
        --seed 0 --runs runs/r5   # round 5 (the shipped tests/data/go1_confined is seed 2 of this, plus a heading term)
    OMP_NUM_THREADS=1 python bench/confined.py eval --runs runs/confined --maps 25 --out eval_seed0.json
    python bench/confined.py summarize eval_seed0.json eval_seed1.json ... --out bench/results/confined.json
    MUJOCO_GL=egl python bench/confined.py video --method waypoints --level 1 --out bench/results/confined_follower.mp4
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
METHODS = {"waypoints": "Go1-Waypoints-Confined", "goal": "Go1-Goal-Confined", "skills": "Go1-Skills-Confined"}
WALKER = REPO / "tests" / "data" / "go1_walk" / "policy.onnx"
CROUCH_WALK = REPO / "tests" / "data" / "go1_crouch_walk" / "policy.onnx"  # the default warm start
CROUCH_WALKER = "Go1-Velocity-Height-Flat"  # `train --method crouch_walker`: the warm start with a posture input
# `train --method crouch_steps`: the same walker on random step-ups (issue 18, third round), from the crouch walker.
WALKERS = {"crouch_walker": CROUCH_WALKER, "crouch_steps": "Go1-Velocity-Height-Steps"}
# Training maps per scene and their levels: a spread, so the last (hardest) level is seen from the start.
TRAIN_DIFFICULTIES = (0.0, 0.25, 0.5, 0.75, 1.0, 0.5, 0.75, 1.0)
# `train --difficulties hard` (round 4): 16 maps, half at the hardest level. The default 8 held 2 level-1 maps
# per seed, and seed 0's had no level-1 ceiling at all (0.30-0.35 m, where most level-1 stalls are).
DIFFICULTY_SETS = {"default": TRAIN_DIFFICULTIES, "hard": (0.0, 0.25, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75, *(1.0,) * 8)}


def parse_difficulties(text: str) -> tuple[float, ...]:
    """A named set of `DIFFICULTY_SETS` or comma-separated levels in [0, 1] (one training map each)."""
    if text in DIFFICULTY_SETS:
        return DIFFICULTY_SETS[text]
    try:
        levels = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--difficulties '{text}' is neither one of {sorted(DIFFICULTY_SETS)} nor comma-separated "
                         "numbers; pass e.g. hard or 0.5,1,1") from None
    if not levels or not all(0.0 <= v <= 1.0 for v in levels):
        raise ValueError(f"--difficulties '{text}': every level must lie in [0, 1]")
    return levels


def train(method: str, steps: int, minutes: float, runs: Path, num_envs: int, seed: int,
          clearance_weight: float | None = None, init: Path = CROUCH_WALK, overrides: dict | None = None,
          init_std: float = 0.3, difficulties: tuple[float, ...] = TRAIN_DIFFICULTIES,
          extra_steps: int | None = None) -> dict:
    """One PPO run of `method` for `steps` env steps (or `minutes`, whichever first); returns its summary.

    `difficulties`: one training map per level (the confined methods). `extra_steps`: continue the run already in
    `runs/method` from its checkpoint for this many more env steps (`steps` is then ignored), on this call's task
    config (e.g. other training maps); its summary keeps the earlier summary as `continued_from`.

    `clearance_weight` overrides the task's `ceiling_clearance` reward weight (None: as registered; the
    registered weight is 0 in all three tasks). `init`: the
    exported policy every method warm-starts from; method "crouch_walker" trains the walker with a body-height
    input (Go1-Velocity-Height-Flat, `s2r.sim.tasks.crouch_walk`) from the flat walker, to be that policy.
    """
    import torch
    from s2r.policies.driver import Budget, RunDriver, RunSpec, load_checkpoint
    from s2r.policies.ppo import PPOConfig, TrainConfig
    from s2r.sim import task_config
    from s2r.sim.tasks.confined import policy_terms as confined_policy_terms

    torch.set_num_threads(1)
    task = METHODS.get(method) or WALKERS[method]
    tcfg = task_config(task, overrides or {})  # overrides: dotted task-config fields, e.g. field.step
    if method in METHODS:
        tcfg = replace(tcfg, maps_per_scene=len(difficulties), difficulties=tuple(difficulties))
    if clearance_weight is not None:
        term = replace(tcfg.rewards.ceiling_clearance, weight=clearance_weight)
        tcfg = replace(tcfg, rewards=replace(tcfg.rewards, ceiling_clearance=term))
    base = PPOConfig()
    # A warm-started actor: small exploration noise around the walker's gait, a gentler first learning rate.
    algo = replace(base, critic_warmup=5, learning_rate=3e-4, policy=replace(base.policy, init_std=init_std))
    cfg = TrainConfig(num_envs=num_envs, seed=seed, save_every=20, torch_threads=1, init_policy=str(init), algo=algo)
    out = runs / method
    before: dict = {}
    if extra_steps is not None:
        before = json.loads((out / "bench_train.json").read_text()) if (out / "bench_train.json").is_file() else {}
        steps = int(load_checkpoint(out / "checkpoint.pt", task, "ppo")["progress"]) + extra_steps
    spec = RunSpec(algo="ppo", task_id=task, task_cfg=tcfg, cfg=cfg, seed=seed,
                   budget=Budget(steps=steps, minutes=minutes))
    t0 = time.perf_counter()
    if extra_steps is not None and method in METHODS:  # this call's task config must build the run's inputs
        check_terms(out, [t.name for t in confined_policy_terms(tcfg)])
    driver = RunDriver(spec, out, progress=False, resume=extra_steps is not None)
    try:
        result = driver.learn()
    finally:
        driver.close()
    summary = {"method": method, "task": task, "run": str(out), "wall_s": time.perf_counter() - t0,
               "env_steps": int(result.get("progress", 0)), "budget_steps": steps, "budget_minutes": minutes,
               "num_envs": num_envs, "seed": seed, "interrupted": bool(result.get("interrupted")),
               "init_policy": str(init), "difficulties": list(getattr(tcfg, "difficulties", ())),
               "ceiling_clearance_weight": getattr(getattr(tcfg.rewards, "ceiling_clearance", None), "weight", None)}
    if extra_steps is not None:
        summary.update(extra_steps=extra_steps, continued_from=before)
    (out / "bench_train.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


# A timed-out episode whose base moved less than this (m) in its last STALL_S seconds is a stall.
STALL_M, STALL_S = 0.25, 5.0
LOW_CEILING = 0.42  # (m above the floor) lower than this needs a crouch: the planner's standing clearance


class FailureProbe:
    """How each evaluation episode ended, measured alongside `evaluate`'s rollout (one episode per env).

    Per step and live env: robot-map contacts from above the base (the trunk or a leg against a ceiling,
    overhang or hanging block; a full `mj_forward` of that env's state), the base height above the floor
    while a low ceiling is over the trunk, and the base path. `summary` then puts every episode in one class:
    success, fall, stall (timed out, < STALL_M m moved in the last STALL_S s) or slow (timed out, moving),
    and says for the falls and stalls whether they ended at a low ceiling.
    """

    def __init__(self, env: object) -> None:
        import mujoco
        from s2r.sim.tasks.confined import TRUNK_HALF_HEIGHT

        self.env, self.mujoco, self.trunk = env, mujoco, TRUNK_HALF_HEIGHT
        model = env.backend.models[0]
        self.map_geom = np.array([(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) or "").startswith("confined")
                                  for g in range(model.ngeom)])
        self.data = [mujoco.MjData(m) for m in env.backend.models]
        n = env.num_envs
        self.ceiling_steps = np.zeros(n, dtype=int)
        self.low_steps = np.zeros(n, dtype=int)  # steps with a low ceiling over the trunk
        self.low_height = np.full(n, np.nan)  # lowest base height above the floor under a low ceiling
        self.path: list[np.ndarray] = []
        self.last_low = np.zeros(n, dtype=bool)

    def _low_ceiling(self) -> np.ndarray:
        from s2r.sim.tasks.confined import CLEARANCE_POINTS

        env = self.env
        pts = CLEARANCE_POINTS[np.abs(CLEARANCE_POINTS[:, 0]) < 0.35]  # over the trunk and 0.3 m ahead
        lowest = env.maps.lowest_ceiling(env.env_map, env.backend.qpos[:, :2], env._yaw(), pts)
        return lowest - env.ground_z < LOW_CEILING

    def record(self, live: np.ndarray) -> None:
        """One step's measurements for the envs still in their first episode (`live`)."""
        env, mj = self.env, self.mujoco
        qpos = env.backend.qpos
        self.path.append(np.where(live[:, None], qpos[:, :2], np.nan))
        low = self._low_ceiling()
        self.last_low = np.where(live, low, self.last_low)
        h = qpos[:, 2] - env.ground_z
        under = live & low
        self.low_steps += under
        self.low_height = np.where(under, np.fmin(self.low_height, h), self.low_height)
        for e in np.flatnonzero(live):
            d = self.data[e]
            mj.mj_setState(env.backend.models[e], d, env.backend.state[e], mj.mjtState.mjSTATE_FULLPHYSICS)
            mj.mj_forward(env.backend.models[e], d)
            con = d.contact[: d.ncon]
            hit = self.map_geom[con.geom1] ^ self.map_geom[con.geom2]  # robot against map
            if np.any(hit & (con.pos[:, 2] > qpos[e, 2] + 0.5 * self.trunk)):
                self.ceiling_steps[e] += 1

    def summary(self, success: np.ndarray, fell: np.ndarray) -> dict:
        """Counts per class over the episodes, and per-episode rows (JSON-ready)."""
        dt = self.env.spec.control_dt
        path = np.stack(self.path)  # (steps, n, 2)
        k = round(STALL_S / dt)
        cls = []
        for e in range(len(success)):
            p = path[:, e][~np.isnan(path[:, e, 0])]
            moved = float(np.hypot(*(p[-1] - p[max(len(p) - k, 0)]))) if len(p) else 0.0
            cls.append("success" if success[e] else "fall" if fell[e] else "stall" if moved < STALL_M else "slow")
        cls = np.array(cls)
        at_low = self.last_low & (cls != "success")
        return {
            "counts": {c: int((cls == c).sum()) for c in ("success", "fall", "stall", "slow")},
            "fall_at_low_ceiling": int((at_low & (cls == "fall")).sum()),
            "stall_at_low_ceiling": int((at_low & (cls == "stall")).sum()),
            "ceiling_contact_episodes": int((self.ceiling_steps > 0).sum()),
            "ceiling_contact_s_mean": float(self.ceiling_steps.mean() * dt),
            "under_low_ceiling_episodes": int((self.low_steps > 0).sum()),
            "min_height_under_low_ceiling_m": [None if np.isnan(v) else round(float(v), 3) for v in self.low_height],
            "per_episode": cls.tolist(),
        }


def evaluate(run: Path, level: float, maps: int, seed: int = 0, seconds: float = 30.0, first: int = 0) -> dict:
    """One episode per held-out map at `level` (cut at `seconds`): success rate, time to goal, falls, and how
    each episode ended (`outcomes`, see `FailureProbe`). Maps: `EVAL_SEEDS[first:first + maps]`."""
    from s2r.policies.evaluate import OnnxPolicy, run_task_config
    from s2r.sim import make
    from s2r.sim.tasks.confined import held_out_config
    from s2r.sim.terrain.confined import EVAL_SEEDS

    policy = OnnxPolicy(run)
    task, cfg = run_task_config(run)
    if first < 0 or first + maps > len(EVAL_SEEDS):
        raise ValueError(f"--first-map {first} + --maps {maps} must lie within the {len(EVAL_SEEDS)} held-out maps")
    cfg = replace(held_out_config(cfg, EVAL_SEEDS[first:first + maps], level),
                  randomization=replace(cfg.randomization, push_velocity=0.0))
    env = make(task, maps, cfg=cfg, seed=seed)
    try:
        check_terms(run, [t.name for t in env.spec.groups["policy"].terms])
        obs = env.reset(seed=seed)
        n = env.num_envs
        reached_at = np.full(n, np.nan)
        fell = np.zeros(n, dtype=bool)
        progress = np.zeros(n)  # share of the start-goal distance covered at the end (or at the fall)
        span = np.hypot(*(env.maps.goals[env.env_map, :2] - env.maps.starts[env.env_map, :2]).T)
        probe = FailureProbe(env)
        for k in range(min(env.spec.max_episode_steps - 1, round(seconds / env.spec.control_dt))):
            obs, _, term, _, _ = env.step(policy(obs["policy"]))
            live = np.isnan(reached_at) & ~fell
            probe.record(live & ~term)
            x = env.backend.qpos[:, 0] - env.maps.starts[env.env_map, 0]
            progress[live & ~term] = np.clip(x / span, 0, 1)[live & ~term]
            hit = live & env.goal_reached() & ~term
            reached_at[hit] = (k + 1) * env.spec.control_dt
            fell |= live & term
            if not (np.isnan(reached_at) & ~fell).any():
                break
        outcomes = probe.summary(~np.isnan(reached_at), fell)
    finally:
        env.close()
    ok = ~np.isnan(reached_at)
    return {"level": level, "maps": maps, "seconds": seconds, "success": float(ok.mean()), "fall_rate": float(fell.mean()),
            "time_to_goal_s": float(np.mean(reached_at[ok])) if ok.any() else None,
            "mean_progress": float(np.where(ok, 1.0, progress).mean()), "per_map_success": ok.astype(int).tolist(),
            "outcomes": outcomes}


def check_terms(run: Path, have: list[str]) -> None:
    """Refuse a run whose policy.json lists other policy inputs than this code builds for its config (same sizes
    would otherwise evaluate silently wrong, e.g. a first-round skills run without `skills_height_obs`)."""
    meta = json.loads((run / "policy.json").read_text())
    want = [t["name"] for g in meta["observation"] if g.get("group", "policy") == "policy" for t in g["terms"]]
    if want != have:
        raise ValueError(f"{run / 'policy.json'} reads {want}, but the task config builds {have}; set the task field "
                         "that selects the inputs (e.g. skills_height_obs; `train --set` when continuing a run) to what "
                         "it was trained with")


def eval_all(runs: Path, maps: int, levels: list[float], out: Path, methods: list[str], seconds: float,
             first: int = 0) -> dict:
    """Evaluate `methods`; writes the JSON after each (merged into an existing one, so runs can come in turns)."""
    res: dict = {"bench": "confined", "maps_per_level": maps, "first_map": first, "levels": levels, "episodes_per_map": 1,
                 "training_seeds": 1, "machine": platform.processor() or platform.machine(), "methods": {}}
    if out.is_file():
        old = json.loads(out.read_text())
        if old.get("maps_per_level") == maps and old.get("levels") == levels and old.get("first_map", 0) == first:
            res["methods"] = old.get("methods", {})
    for method in methods:
        run = runs / method
        if not (run / "policy.onnx").is_file():  # methods come in turns; say so, an empty JSON is easy to miss
            print(f"{method}: no {run / 'policy.onnx'} (not trained, or still training); skipped", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        train_info = json.loads((run / "bench_train.json").read_text()) if (run / "bench_train.json").is_file() else {}
        res["methods"][method] = {"task": METHODS[method], "train": train_info,
                                  "levels": [evaluate(run, lv, maps, seconds=seconds, first=first) for lv in levels]}
        res["methods"][method]["eval_wall_s"] = time.perf_counter() - t0
        out.write_text(json.dumps(res, indent=2))
        print(method, [(r["level"], r["success"], r["time_to_goal_s"]) for r in res["methods"][method]["levels"]])
    plot(res, out.with_suffix(".png"))
    return res


def summarize(inputs: list[Path], out: Path) -> dict:
    """Join per-seed eval JSONs (one training seed each) into one: every seed's numbers and their mean per level."""
    seeds = [json.loads(p.read_text()) for p in inputs]
    res = {k: seeds[0][k] for k in ("bench", "maps_per_level", "levels", "episodes_per_map", "machine")}
    res["first_map"] = seeds[0].get("first_map", 0)
    res["methods"] = {}
    for m in METHODS:
        runs = [sd["methods"][m] for sd in seeds if m in sd["methods"]]
        if not runs:
            continue
        levels = []
        for i, lv in enumerate(res["levels"]):
            rows = [r["levels"][i] for r in runs]
            times = [r["time_to_goal_s"] for r in rows if r["time_to_goal_s"] is not None]
            levels.append({"level": lv, "success": float(np.mean([r["success"] for r in rows])),
                           "success_per_seed": [r["success"] for r in rows],
                           "fall_rate": float(np.mean([r["fall_rate"] for r in rows])),
                           "mean_progress": float(np.mean([r["mean_progress"] for r in rows])),
                           "time_to_goal_s": float(np.mean(times)) if times else None,
                           "outcomes": _sum_outcomes([r.get("outcomes") for r in rows])})
        res["methods"][m] = {"task": METHODS[m], "levels": levels, "per_seed": runs}
    # Training seeds per method (inputs may each hold one method, e.g. one file per run).
    res["training_seeds"] = max((len(r["per_seed"]) for r in res["methods"].values()), default=0)
    if all(r.get("outcomes") for m in res["methods"].values() for r in m["per_seed"][0]["levels"]):
        res["step_falls"] = step_falls(res)
    out.write_text(json.dumps(res, indent=2))
    plot(res, out.with_suffix(".png"))
    return res


def step_maps(maps: int, first: int = 0) -> list[bool]:
    """Which of `maps` held-out maps from `first` have a step-up (a map's features are the same at every level)."""
    from s2r.sim.terrain.confined import EVAL_SEEDS, generate

    return ["step" in generate(s, 0.0).features for s in EVAL_SEEDS[first:first + maps]]


def step_falls(res: dict) -> dict:
    """Falls per method and level over all seeds of a `summarize` JSON: in all, and on the maps with a step-up."""
    steps = np.array(step_maps(res["maps_per_level"], res.get("first_map", 0)))
    out = {"step_maps": int(steps.sum()), "maps": len(steps), "methods": {}}
    for m, r in res["methods"].items():
        rows = []
        for i, lv in enumerate(res["levels"]):
            cls = [np.array(sd["levels"][i]["outcomes"]["per_episode"]) for sd in r["per_seed"]]
            falls = sum(int((c == "fall").sum()) for c in cls)
            rows.append({"level": lv, "falls": falls, "falls_on_step_maps": sum(int((c[steps] == "fall").sum()) for c in cls),
                         "successes_on_step_maps": sum(int((c[steps] == "success").sum()) for c in cls),
                         "episodes_on_step_maps": int(steps.sum()) * len(cls)})
        out["methods"][m] = rows
    return out


def _sum_outcomes(rows: list[dict | None]) -> dict | None:
    """Episode classes and contact counts added over training seeds (None if any seed's eval predates them)."""
    if not rows or any(r is None for r in rows):
        return None
    keys = ("fall_at_low_ceiling", "stall_at_low_ceiling", "ceiling_contact_episodes", "under_low_ceiling_episodes")
    out = {"counts": {c: sum(r["counts"][c] for r in rows) for c in rows[0]["counts"]}}
    out.update({k: sum(r[k] for r in rows) for k in keys})
    return out


def plot(res: dict, path: Path) -> None:
    """Success and time to goal per level, one bar group per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    methods = [m for m in METHODS if m in res["methods"]]
    levels = res["levels"]
    w = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        rows = res["methods"][m]["levels"]
        xs = np.arange(len(levels)) + i * w
        axes[0].bar(xs, [r["success"] for r in rows], w, label=m)
        for x, r in zip(xs, rows, strict=True):  # each training seed's success as a dot
            seeds = r.get("success_per_seed", [])
            axes[0].plot([x] * len(seeds), seeds, "k.", ms=4)
        axes[1].bar(xs, [r["time_to_goal_s"] or 0.0 for r in rows], w, label=m)
    for ax, title in zip(axes, ("success on held-out maps", "mean time to goal (s), successes only"), strict=True):
        ax.set_xticks(np.arange(len(levels)) + w * (len(methods) - 1) / 2, [f"difficulty {lv:g}" for lv in levels])
        ax.set_title(title)
    axes[0].set_ylim(0, 1)
    axes[0].legend()
    fig.suptitle(f"Confined locomotion, {res['maps_per_level']} held-out maps per level, "
                 f"{res.get('training_seeds', 1)} training seed(s) (dots: each seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def video(method: str, runs: Path, level: float, out: Path, seconds: float = 30.0, map_seed: int | None = None) -> dict:
    """The policy on the hardest held-out map (the one whose plan crouches most; or `map_seed`) as an MP4 and a
    frame strip."""
    import mujoco
    from s2r.policies.evaluate import OnnxPolicy, run_task_config
    from s2r.sim import make
    from s2r.sim.tasks.confined import held_out_config
    from s2r.sim.tasks.confined_maps import SceneMaps
    from s2r.sim.terrain.confined import EVAL_SEEDS, generate

    run = runs / method
    policy = OnnxPolicy(run)
    task, cfg = run_task_config(run)
    # The hardest map: the most crouch-only cells on the plan of the first 25 held-out maps at this level.
    crouch = []
    for s in EVAL_SEEDS[:25]:
        sm = SceneMaps([generate(s, level, cfg.map)], cfg.planner)
        crouch.append(int(sm.planners[0].plan(sm.starts[0]).crouch.sum()))
    seed = EVAL_SEEDS[int(np.argmax(crouch))] if map_seed is None else map_seed
    cfg = replace(held_out_config(cfg, (seed,), level), randomization=replace(cfg.randomization, push_velocity=0.0))
    env = make(task, 1, cfg=cfg, seed=0)
    model = env.backend.models[0]
    # See-through map for the camera (colours only; the physics is untouched): walls faint, the rest half.
    for g in range(model.ngeom):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) or ""
        if name.startswith("confined_"):
            model.geom_rgba[g, 3] = 0.08 if name.endswith("_wall") else 0.25
    renderer = mujoco.Renderer(model, 360, 640)
    data = mujoco.MjData(model)
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.distance, cam.elevation, cam.azimuth = 1.8, -12.0, 100.0  # low, from the side: under the ceilings
    obs = env.reset(seed=0)
    frames, reached, heights, frame_heights = [], None, [], []
    for k in range(round(seconds / env.spec.control_dt)):
        obs, _, term, _, _ = env.step(policy(obs["policy"]))
        if term[0]:  # a fall: the env has already reset, nothing after it is this episode
            break
        heights.append(float(env.backend.qpos[0, 2] - env.ground_z[0]))
        mujoco.mj_setState(model, data, env.backend.state[0], mujoco.mjtState.mjSTATE_FULLPHYSICS)
        mujoco.mj_forward(model, data)
        cam.lookat[:] = data.qpos[:3]
        renderer.update_scene(data, camera=cam)
        if k % 2 == 0:
            frames.append(renderer.render().copy())
            frame_heights.append(heights[-1])
        if env.goal_reached()[0]:
            reached = (k + 1) * env.spec.control_dt
            break
    env.close()
    renderer.close()
    import imageio.v2 as imageio

    out.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(str(out), frames, fps=25, macro_block_size=1)
    # The strip: the start, the lowest crouch, a frame between them and the end.
    low = int(np.argmin(frame_heights))
    picks = sorted({0, low // 2 if low > 2 else 0, low, len(frames) - 1})
    strip = np.concatenate([frames[i] for i in picks], axis=1)[::2, ::2]
    imageio.imwrite(str(out.with_suffix(".png")), strip)
    if seed in EVAL_SEEDS[:25]:
        crouched = crouch[EVAL_SEEDS.index(seed)]
    else:  # a map past the first 25 (or not held out): its own plan's count, not a null in the record
        sm = SceneMaps([generate(seed, level, cfg.map)], cfg.planner)
        crouched = int(sm.planners[0].plan(sm.starts[0]).crouch.sum())
    info = {"method": method, "map_seed": seed, "level": level, "crouch_waypoints": crouched,
            "hardest_of_25": {"map_seed": EVAL_SEEDS[int(np.argmax(crouch))], "crouch_waypoints": max(crouch)},
            "reached_s": reached, "min_body_height_m": min(heights), "frames": len(frames)}
    print(json.dumps(info))
    return info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--method", choices=[*METHODS, *WALKERS], required=True)
    t.add_argument("--steps", type=int, default=1_500_000)
    t.add_argument("--minutes", type=float, default=14.0)
    t.add_argument("--num-envs", type=int, default=64)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--runs", type=Path, default=REPO / "runs" / "confined")
    t.add_argument("--clearance-weight", type=float, default=None,
                   help="override the task's ceiling_clearance reward weight (default: as registered)")
    t.add_argument("--init", type=Path, default=None,
                   help="exported policy.onnx to warm-start from (default: the crouching walker; for "
                        "--method crouch_walker the flat walker)")
    t.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a task-config field (dotted), e.g. field.step=[0.02,0.1]")
    t.add_argument("--init-std", type=float, default=0.3, help="the warm-started actor's initial action std")
    t.add_argument("--difficulties", default="default",
                   help=f"training maps' levels, one map each: {sorted(DIFFICULTY_SETS)} or e.g. 0.5,1,1")
    t.add_argument("--extra-steps", type=int, default=None,
                   help="continue RUNS/METHOD from its checkpoint for this many more env steps (--steps ignored)")
    e = sub.add_parser("eval")
    e.add_argument("--runs", type=Path, default=REPO / "runs" / "confined")
    e.add_argument("--maps", type=int, default=25)
    e.add_argument("--first-map", type=int, default=0, help="the first held-out map (index in EVAL_SEEDS)")
    e.add_argument("--levels", default="0,0.5,1")
    e.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "confined.json")
    e.add_argument("--methods", default=",".join(METHODS))
    e.add_argument("--seconds", type=float, default=30.0, help="episode cut (the task's episode is 30 s)")
    v = sub.add_parser("video")
    v.add_argument("--method", choices=list(METHODS), default="waypoints")
    v.add_argument("--runs", type=Path, default=REPO / "runs" / "confined")
    v.add_argument("--level", type=float, default=1.0)
    v.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "confined_follower.mp4")
    v.add_argument("--map-seed", type=int, default=None, help="this held-out map instead of the hardest")
    su = sub.add_parser("summarize")
    su.add_argument("inputs", type=Path, nargs="+", help="eval JSONs, one per training seed")
    su.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "confined.json")
    a = p.parse_args()
    if a.cmd == "train":
        init = a.init or (WALKER if a.method == "crouch_walker" else CROUCH_WALK)
        sets = dict(kv.split("=", 1) for kv in a.set)
        try:
            levels = parse_difficulties(a.difficulties)
        except ValueError as exc:
            p.error(str(exc))  # one line and exit 2, before any run folder is touched
        train(a.method, a.steps, a.minutes, a.runs, a.num_envs, a.seed, a.clearance_weight, init, sets, a.init_std,
              levels, a.extra_steps)
    elif a.cmd == "eval":
        eval_all(a.runs, a.maps, [float(x) for x in a.levels.split(",")], a.out, a.methods.split(","), a.seconds,
                 a.first_map)
    elif a.cmd == "summarize":
        summarize(a.inputs, a.out)
    else:
        video(a.method, a.runs, a.level, a.out, map_seed=a.map_seed)


if __name__ == "__main__":
    main()
