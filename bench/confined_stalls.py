"""Why a confined-map policy stalls (issue 18): where each timed-out episode ends and what the body does there.

Runs a trained run (`bench/confined.py train`) on held-out maps at one level, one episode per map (as `eval`),
and for every episode that ends without success or fall reports, over its last STALL_S seconds: the map
feature under/just ahead of the base, the base height above the floor against the planner's wanted body
height at the current waypoint, the headroom (lowest ceiling over the trunk and 0.4 m ahead minus the
trunk's top), the floor step just ahead, the distance to the current waypoint and how many waypoints were
reached, the angle between the heading and the current waypoint, and the forward speed.

    OMP_NUM_THREADS=1 python bench/confined_stalls.py --run runs/c18y/f_s0/waypoints --level 1 --maps 25 \
        --out bench/results/confined_stalls_l1.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

STALL_S = 5.0


def feature_at(cmap: object, x: float) -> str:
    """The map feature whose boxes span x (within 0.3 m ahead), else "open"."""
    for b, kind in zip(cmap.boxes, cmap.kinds, strict=True):
        if kind != "wall" and b[0] - b[3] - 0.3 <= x <= b[0] + b[3]:
            return kind
    return "open"


def diagnose(run: Path, level: float, maps: int, seconds: float = 30.0) -> dict:
    """Per-episode end state of `run`'s policy on the first `maps` held-out maps at `level`."""
    from s2r.policies.evaluate import OnnxPolicy, run_task_config
    from s2r.sim import make
    from s2r.sim.tasks.confined import CLEARANCE_POINTS, TRUNK_HALF_HEIGHT, held_out_config
    from s2r.sim.terrain.confined import EVAL_SEEDS

    policy = OnnxPolicy(run)
    task, cfg = run_task_config(run)
    cfg = replace(held_out_config(cfg, EVAL_SEEDS[:maps], level),
                  randomization=replace(cfg.randomization, push_velocity=0.0))
    env = make(task, maps, cfg=cfg, seed=0)
    n, dt = env.num_envs, env.spec.control_dt
    rows: list[dict] = []
    done = np.zeros(n, dtype=bool)
    ended = np.array(["timeout"] * n, dtype=object)
    log: dict[str, list] = {k: [] for k in ("x", "h", "want", "clear", "step", "dist", "wp", "vx", "bearing")}
    try:
        obs = env.reset(seed=0)
        # One step short of the episode's end, as `evaluate`: on the last step the env resets the timed-out ones.
        for _ in range(min(env.spec.max_episode_steps - 1, round(seconds / dt))):
            obs, _, term, _, _ = env.step(policy(obs["policy"]))
            hit = ~done & env.goal_reached() & ~term
            ended[hit] = "success"
            ended[~done & term] = "fall"
            done |= hit | term
            q = env.backend.qpos
            yaw = env._yaw()
            ahead = q[:, :2] + 0.3 * np.c_[np.cos(yaw), np.sin(yaw)]
            i, j = env.maps.column(env.env_map, ahead)
            floor_ahead = env.maps.floor_z[env.env_map, i, j]
            lowest = env.maps.lowest_ceiling(env.env_map, q[:, :2], yaw, CLEARANCE_POINTS)
            a = np.arange(n)
            to = env.waypoints[a, env.wp_index, :2] - q[:, :2]
            bearing = np.angle(np.exp(1j * (np.arctan2(to[:, 1], to[:, 0]) - yaw)))  # waypoint vs heading (rad)
            vals = {"x": q[:, 0], "h": q[:, 2] - env.ground_z, "want": env.wp_body_z[a, env.wp_index],
                    "clear": lowest - (q[:, 2] + TRUNK_HALF_HEIGHT), "step": floor_ahead - env.ground_z,
                    "dist": env._target_dist(), "wp": env.wp_index.astype(float),
                    "vx": env.backend.qvel[:, 0], "bearing": np.abs(bearing)}
            for k, v in vals.items():
                log[k].append(np.where(done, np.nan, v))
            if done.all():
                break
        k = round(STALL_S / dt)
        arr = {key: np.stack(v) for key, v in log.items()}  # (steps, n)
        for e in range(n):
            cmap = env.maps.maps[e]
            row = {"map_seed": int(cmap.seed), "ended": str(ended[e]), "features": list(cmap.features),
                   "crouch_waypoints": int((env.wp_body_z[e, : env.wp_count[e]] < cfg.planner.stand_body_z).sum()),
                   "waypoints": int(env.wp_count[e])}
            if ended[e] == "timeout":
                last = {key: v[-k:, e] for key, v in arr.items()}
                row.update({"end_x": round(float(last["x"][-1]), 2), "feature": feature_at(cmap, float(last["x"][-1])),
                            "base_h": round(float(np.nanmean(last["h"])), 3),
                            "wanted_h": round(float(np.nanmean(last["want"])), 3),
                            "clearance": round(float(np.nanmean(last["clear"])), 3),
                            "step_ahead": round(float(np.nanmean(last["step"])), 3),
                            "dist_to_wp": round(float(np.nanmean(last["dist"])), 2),
                            "wp_reached": int(np.nanmax(last["wp"])), "vx": round(float(np.nanmean(last["vx"])), 3),
                            "bearing_deg": round(float(np.degrees(np.nanmean(last["bearing"]))), 0),
                            "moved_m": round(float(abs(last["x"][-1] - last["x"][0])), 2)})
            rows.append(row)
    finally:
        env.close()
    return {"run": str(run), "level": level, "maps": maps, "episodes": rows,
            "counts": {c: int(sum(r["ended"] == c for r in rows)) for c in ("success", "fall", "timeout")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--level", type=float, default=1.0)
    p.add_argument("--maps", type=int, default=25)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    res = diagnose(a.run, a.level, a.maps)
    for r in res["episodes"]:
        if r["ended"] == "timeout":
            print({k: v for k, v in r.items() if k != "features"})
    print(res["counts"])
    if a.out:
        a.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
