"""`s2r demos collect`: record a task's scripted expert into the episode format (`s2r.real.episodes`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from s2r.real.episodes import EpisodeMeta, EpisodeRecorder, EpisodeWriter


def collect_demos(task_id: str, out: str | Path, episodes: int, *, noise: float = 0.0, failure_rate: float = 0.0,
                  num_envs: int = 8, seed: int = 0, task_overrides: dict[str, Any] | None = None,
                  progress: bool = True, task_cfg: Any = None) -> dict[str, Any]:
    """Run the task's scripted expert until `episodes` more episodes are on disk under `out`.

    Every episode is written (failures too, flagged), so BC can choose to skip them and the success rate
    of the demos is on record. `task_cfg` (a task config, e.g. a run's, camera on) replaces the registered
    config with `task_overrides` applied, so the demos carry exactly the groups the run's env has.

    Returns:
        {"episodes", "successes", "success_rate", "steps", "dir"}.
    """
    from s2r.sim import get_task, make, task_config
    from s2r.sim.tasks.experts import expert_task_ids, make_expert

    if episodes < 1:
        raise ValueError(f"--n must be at least 1, got {episodes}")
    task_id = get_task(task_id).task_id  # the registered id, also when given as its gymnasium id
    if task_id not in expert_task_ids():
        # Checked before any env is built: a task without an expert fails at once, naming those with one.
        raise ValueError(f"task '{task_id}' has no scripted expert; tasks with one: {', '.join(expert_task_ids())}")
    tcfg = task_cfg if task_cfg is not None else task_config(task_id, task_overrides)
    env = make(task_id, num_envs, cfg=tcfg, seed=seed)
    try:
        # The expert reads the same config (step size, peg length) the env was built with.
        expert = make_expert(task_id, num_envs, noise=noise, failure_rate=failure_rate, seed=seed, cfg=tcfg)
        spec = env.spec
        # Image groups (e.g. the Panda `image` group with `--set image=true`) are recorded too, compressed.
        images = {g: tuple(env.obs_shapes[g]) for g, dt in env.obs_dtypes.items() if dt == "uint8"}
        meta = EpisodeMeta(task=task_id, obs_dims=dict(env.obs_dims), action_dim=spec.action_dim,
                           action_names=tuple(spec.action_names), control_dt=float(spec.control_dt), image_shapes=images)
        writer = EpisodeWriter(out, meta)
        recorder = EpisodeRecorder(writer, num_envs, source="expert")
        obs = env.reset(seed=seed)
        expert.reset(np.arange(num_envs))
        done_eps, successes, steps = 0, 0, 0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=episodes, desc=f"demos {task_id}", unit="ep")
        while done_eps < episodes:
            act = np.clip(expert.act(obs), -1.0, 1.0).astype(np.float32)
            nxt, rew, term, trunc, info = env.step(act)
            steps += num_envs
            finished = recorder.step(obs, act, rew, nxt, term, trunc, success=np.asarray(info["success"]),
                                     final_obs=info.get("final_obs"))
            ended = np.flatnonzero(np.logical_or(term, trunc))
            if len(ended):
                expert.reset(ended)
            for ep in finished[: episodes - done_eps]:
                successes += int(ep.success)
            done_eps += len(finished)
            if bar is not None:
                bar.update(len(finished))
            obs = nxt
        if bar is not None:
            bar.close()
    finally:
        env.close()
    # The last batch may overshoot by up to num_envs - 1 episodes; they are kept (more data never hurts).
    return {"episodes": len(writer), "successes": successes, "success_rate": successes / max(episodes, 1), "steps": steps,
            "dir": str(out)}
