"""Any gymnasium environment as a batched s2r env: our algorithms train on `gym:<gymnasium id>`.

Task ids that start with `gym:` name a gymnasium environment instead of a registered s2r task:

    s2r.sim.make("gym:Pendulum-v1", 8, seed=0)          # 8 copies of gymnasium.make("Pendulum-v1")
    s2r.sim.task_config("gym:Pendulum-v1")              # GymTaskConfig(env_id="Pendulum-v1", kwargs=())
    s2r train gym:Pendulum-v1 --algo sac

The part after `gym:` is passed to `gymnasium.make` unchanged, namespace and version included
(`gym:HalfCheetah-v5`, `gym:s2r/Puck-Velocity-Flat-v0`); `GymTaskConfig.kwargs` holds extra keyword
arguments for it as (name, value) pairs. Ids are not listed by `s2r tasks` (gymnasium's registry is open-ended).

What the adapter presents (the batched contract of `s2r.sim.env`):

- `num_envs` copies stepped one after the other on the calling thread; copy i is seeded `seed + i` at the
  first reset and auto-resets after that from its own random stream.
- observations `{"policy": (num_envs, dim) float32}`, one group with one term `obs` (a multi-dimensional
  Box is flattened); reward, terminated and truncated as (num_envs,) arrays (time limits come from
  gymnasium's TimeLimit and arrive as `truncated`).
- auto-reset as our tasks do it: when any copy finishes, `info["final_obs"]` holds every copy's observation
  before the reset (the unfinished copies' rows equal the returned observation) and `info["episode"]` holds
  `env_ids`, `return` and `length` of the finished episodes.
- actions: the network acts in [-1, 1] per dimension and the adapter maps to the env's bounds,
  `env_action = offset + scale * clip(a, -1, 1)` with `scale = (high - low) / 2`, `offset = (high + low) / 2`.
  The spec's `extras` carry `action_space: "box"`, `action_low` and `action_high` so that the exported
  policy.json tells a robot-side (or gymnasium-side) client the same mapping.
- `spec.control_dt` is the env's `dt` (MuJoCo and classic-control envs have one) or else
  `1 / metadata["render_fps"]`, and 1.0 when the env declares neither (then it only labels time axes);
  `spec.max_episode_steps` is the TimeLimit's, or 0 when the env has none.

Only Box observation and Box action spaces with finite action bounds are accepted; anything else
(Discrete, MultiDiscrete, Dict, Tuple, image observations) is refused with one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from s2r.sim.env import EnvSpec, GroupSpec, Obs, ObsTerm, VecEnv

GYM_PREFIX = "gym:"


class GymEnvError(ValueError):
    """A gymnasium environment this adapter cannot present (its spaces, or gymnasium could not build it)."""


@dataclass(frozen=True, kw_only=True)
class GymTaskConfig:
    """The 'task config' of a gymnasium environment.

    Attributes:
        env_id: The gymnasium id (what follows `gym:` in the task id).
        kwargs: Extra keyword arguments for `gymnasium.make`, as (name, value) pairs.
    """

    env_id: str
    kwargs: tuple[tuple[str, Any], ...] = ()


def is_gym_task(task_id: str) -> bool:
    """True for a `gym:<id>` task id."""
    return task_id.startswith(GYM_PREFIX)


def gym_task_config(task_id: str) -> GymTaskConfig:
    """The config for `gym:<id>`; an id gymnasium does not know raises UnknownTaskError with gymnasium's reason."""
    import gymnasium
    from s2r.sim.registry import UnknownTaskError

    env_id = task_id[len(GYM_PREFIX):]
    if not env_id.strip():
        raise UnknownTaskError(f"task id '{task_id}' names no gymnasium environment; write gym:<gymnasium id>, "
                               "e.g. gym:Pendulum-v1")
    try:
        gymnasium.spec(env_id)
    except gymnasium.error.Error as exc:
        raise UnknownTaskError(f"unknown gymnasium environment '{task_id}': {_clean(exc)} (write gym:<gymnasium id>, "
                               "e.g. gym:Pendulum-v1)") from None
    return GymTaskConfig(env_id=env_id)


def _clean(exc: BaseException) -> str:
    """gymnasium's message as one sentence (no trailing period; backticks become quotes)."""
    return " ".join(str(exc).replace("`", "'").split()).rstrip(".")


def _make_one(cfg: GymTaskConfig) -> Any:
    import gymnasium

    try:
        return gymnasium.make(cfg.env_id, **{str(k): v for k, v in cfg.kwargs})
    except gymnasium.error.Error as exc:  # missing optional dependency (box2d, atari), bad kwargs, ...
        raise GymEnvError(f"gymnasium could not build 'gym:{cfg.env_id}': {_clean(exc)}") from None


def check_spaces(env_id: str, observation_space: Any, action_space: Any) -> None:
    """Refuse, with one sentence, spaces the batched contract cannot carry (see the module docstring)."""
    from gymnasium import spaces

    where = f"gym:{env_id}"
    if not isinstance(observation_space, spaces.Box):
        raise GymEnvError(f"{where} has a {type(observation_space).__name__} observation space; the gymnasium adapter "
                          "supports Box observations only (wrap the env, e.g. FlattenObservation, or pick another)")
    if observation_space.dtype == np.uint8 and len(observation_space.shape) >= 2:
        raise GymEnvError(f"{where} observes images (a uint8 Box of shape {observation_space.shape}); the gymnasium "
                          "adapter supports vector Box observations only")
    if not isinstance(action_space, spaces.Box):
        raise GymEnvError(f"{where} has a {type(action_space).__name__} action space; the gymnasium adapter supports "
                          "continuous Box actions only (SAC/TD3/PPO here act in [-1, 1])")
    if len(action_space.shape) != 1:
        raise GymEnvError(f"{where} has a Box action space of shape {action_space.shape}; the gymnasium adapter supports "
                          "1-D Box actions only")
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise GymEnvError(f"{where} has an unbounded Box action space (low {action_space.low}, high {action_space.high}); "
                          "the adapter maps [-1, 1] onto finite bounds only (wrap it with gymnasium's ClipAction or "
                          "RescaleAction)")


def gym_spec(env: Any, env_id: str) -> EnvSpec:
    """The EnvSpec of one gymnasium env: one `policy` group with one term `obs`, actions a0..a{n-1}."""
    dim = int(np.prod(env.observation_space.shape))
    n = int(env.action_space.shape[0])
    dt = getattr(env.unwrapped, "dt", None)
    fps = (env.metadata or {}).get("render_fps")
    control_dt = float(dt) if dt else (1.0 / float(fps) if fps else 1.0)
    max_steps = env.spec.max_episode_steps if env.spec is not None else None
    return EnvSpec(
        groups={"policy": GroupSpec(terms=(ObsTerm(name="obs", size=dim),))},
        action_names=tuple(f"a{i}" for i in range(n)),
        control_dt=control_dt,
        max_episode_steps=int(max_steps or 0),
        extras={"action_space": "box", "gym_id": env_id,
                "action_low": [float(v) for v in env.action_space.low],
                "action_high": [float(v) for v in env.action_space.high]},
    )


class GymVecEnv(VecEnv):
    """`num_envs` copies of one gymnasium env behind the batched contract (see the module docstring).

    Args:
        cfg: Which gymnasium env (and its make kwargs).
        num_envs: Copies stepped together.
        seed: Copy i is reset with seed + i the first time.
    """

    def __init__(self, cfg: GymTaskConfig, num_envs: int = 1, seed: int = 0) -> None:
        if num_envs < 1:
            raise GymEnvError(f"gym:{cfg.env_id} needs num_envs >= 1, got {num_envs}")
        self.cfg = cfg
        self.num_envs = num_envs
        self.seed = seed
        self.envs: list[Any] = []
        try:
            first = _make_one(cfg)
            self.envs.append(first)
            check_spaces(cfg.env_id, first.observation_space, first.action_space)
            self.envs += [_make_one(cfg) for _ in range(num_envs - 1)]
        except BaseException:
            self.close()
            raise
        self.spec = gym_spec(first, cfg.env_id)
        low = np.asarray(first.action_space.low, dtype=np.float64)
        high = np.asarray(first.action_space.high, dtype=np.float64)
        self.action_scale = (high - low) / 2.0  # (action_dim,)
        self.action_offset = (high + low) / 2.0
        self._action_dtype = first.action_space.dtype
        dim = self.spec.group_dim("policy")
        self._obs = np.zeros((num_envs, dim), np.float32)
        self.episode_return = np.zeros(num_envs, np.float64)
        self.episode_length = np.zeros(num_envs, np.int64)
        self._started = False

    def to_env_action(self, actions: Any) -> np.ndarray:
        """(num_envs, action_dim) network actions in [-1, 1] -> the env's units (clipped to its bounds)."""
        a = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        return (self.action_offset + self.action_scale * a).astype(self._action_dtype)

    def reset(self, seed: int | None = None) -> Obs:
        base = self.seed if seed is None else seed
        for i, env in enumerate(self.envs):
            # Seed once per reset() call; auto-resets continue each copy's own stream.
            o, _ = env.reset(seed=None if (seed is None and self._started) else base + i)
            self._obs[i] = np.asarray(o, dtype=np.float32).reshape(-1)
        self._started = True
        self.episode_return[:] = 0.0
        self.episode_length[:] = 0
        return {"policy": self._obs.copy()}

    def step(self, actions: Any) -> tuple[Obs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            self.reset()
        act = self.to_env_action(actions)
        if act.shape != (self.num_envs, self.spec.action_dim):
            raise ValueError(f"gym:{self.cfg.env_id} takes actions of shape {(self.num_envs, self.spec.action_dim)}, "
                             f"got {np.shape(actions)}")
        n = self.num_envs
        reward = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        final = self._obs.copy()  # (num_envs, dim): the observation each copy's step ended on
        for i, env in enumerate(self.envs):
            o, r, term, trunc, _ = env.step(act[i])
            final[i] = np.asarray(o, dtype=np.float32).reshape(-1)
            reward[i], terminated[i], truncated[i] = r, term, trunc
        self.episode_return += reward
        self.episode_length += 1
        obs = final.copy()
        done = terminated | truncated
        info: dict[str, Any] = {}
        if done.any():
            ids = np.flatnonzero(done)
            info["final_obs"] = {"policy": final}
            info["episode"] = {"env_ids": ids, "return": self.episode_return[ids].copy(),
                               "length": self.episode_length[ids].copy()}
            for i in ids:
                o, _ = self.envs[i].reset()
                obs[i] = np.asarray(o, dtype=np.float32).reshape(-1)
            self.episode_return[ids] = 0.0
            self.episode_length[ids] = 0
        self._obs = obs
        return {"policy": obs.copy()}, reward, terminated, truncated, info

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []
