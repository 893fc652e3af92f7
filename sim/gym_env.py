"""A single-env gymnasium view of any registered task (`gymnasium.make("s2r/<task>-v0")`).

Outside tools (Stable-Baselines3 and others) train on one observation group (`policy` by default) through
this wrapper; it runs the same task code as the batched env, with one world. A vector group is a float32
Box; an image group a uint8 Box of shape (H, W, C).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from s2r.sim.registry import make, task_config


class SingleEnv(gym.Env):
    """One world of a batched task, with gymnasium's API. Time-limit truncation comes from the task."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, task_id: str, render_mode: str | None = None, overrides: dict[str, Any] | None = None,
                 obs_group: str = "policy") -> None:
        cfg = task_config(task_id, overrides)
        if hasattr(cfg, "backend"):
            from dataclasses import replace

            # One world needs no thread pool; stepping on the calling thread avoids hand-off costs.
            cfg = replace(cfg, backend=replace(cfg.backend, num_threads=1))
        self.task_id = task_id
        self.env = make(task_id, 1, cfg=cfg)
        self.obs_group = obs_group
        spec = self.env.spec
        if obs_group not in spec.groups:
            raise ValueError(f"obs_group '{obs_group}' is not an observation group of {task_id} "
                             f"(it has {sorted(spec.groups)})")
        shape = spec.group_shape(obs_group)
        if spec.groups[obs_group].is_image:
            self.observation_space = gym.spaces.Box(0, 255, shape=shape, dtype=np.uint8)
        else:
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=shape, dtype=np.float32)
        clip = float(getattr(cfg, "action_clip", 1.0))
        self.action_space = gym.spaces.Box(-clip, clip, shape=(self.env.spec.action_dim,), dtype=np.float32)
        self.render_mode = render_mode
        self._renderer = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, 2**31 - 1))
        obs = self.env.reset(seed=seed)
        return obs[self.obs_group][0].copy(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, rew, term, trunc, info = self.env.step(np.asarray(action, dtype=np.float32)[None])
        out_info: dict[str, Any] = {}
        if "success" in info:
            out_info["is_success"] = bool(info["success"][0])  # the key SB3's callbacks and loggers read
        if "final_obs" in info:
            # The batched env already reset itself; hand back the observation the episode ended on.
            obs = info["final_obs"]
            out_info["episode_stats"] = {k: float(v[0]) for k, v in info["episode"].items()}
        return obs[self.obs_group][0].copy(), float(rew[0]), bool(term[0]), bool(trunc[0]), out_info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        import mujoco

        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.env.backend.models[0], 240, 320)
            self._data = mujoco.MjData(self.env.backend.models[0])
        mujoco.mj_setState(self.env.backend.models[0], self._data, self.env.backend.state[0],
                           mujoco.mjtState.mjSTATE_FULLPHYSICS)
        mujoco.mj_forward(self.env.backend.models[0], self._data)
        self._renderer.update_scene(self._data, camera=self.env.spec.extras.get("camera", "track"))
        return self._renderer.render()

    def close(self) -> None:
        self.env.close()
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
