"""Task registry: ids `Robot-Task-Variant` -> env class + frozen config. Fails loudly.

Every task is also registered with gymnasium as `s2r/<id>-v0`, giving a single env for outside tools; the
other way round, `gym:<gymnasium id>` names any gymnasium env through `s2r.sim.gym_adapter`.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from s2r.sim.config import apply_overrides
from s2r.sim.env import VecEnv

GYM_NAMESPACE = "s2r"


class UnknownTaskError(KeyError):
    """Raised for a task id that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want a plain sentence.
        return str(self.args[0])


@dataclass(frozen=True)
class TaskEntry:
    """A registered task."""

    task_id: str
    env_cls: Callable[..., VecEnv]
    cfg: Any
    description: str


_REGISTRY: dict[str, TaskEntry] = {}


def register_task(task_id: str, env_cls: Callable[..., VecEnv], cfg: Any, description: str = "") -> None:
    """Register a task id; raises ValueError if the id is already taken or malformed."""
    if task_id in _REGISTRY:
        raise ValueError(f"task '{task_id}' is already registered")
    if len(task_id.split("-")) < 2:
        raise ValueError(f"task id '{task_id}' should read Robot-Task-Variant")
    _REGISTRY[task_id] = TaskEntry(task_id, env_cls, cfg, description)
    _register_gym(task_id)


def task_ids() -> list[str]:
    """All registered ids, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def canonical_task_id(task_id: str) -> str:
    """The registered id for `task_id`, which may also be given as the gymnasium id `s2r tasks` prints
    (`s2r/Go1-Velocity-Flat-v0` -> `Go1-Velocity-Flat`); anything else is returned unchanged."""
    prefix = f"{GYM_NAMESPACE}/"
    if task_id.startswith(prefix) and task_id.endswith("-v0"):
        _ensure_loaded()
        name = task_id[len(prefix):-len("-v0")]
        if name in _REGISTRY:
            return name
    return task_id


def get_task(task_id: str) -> TaskEntry:
    """Look up a task by id, by its gymnasium id (`s2r/<id>-v0`) or as `gym:<gymnasium id>`; unknown ids raise
    with the closest registered names."""
    task_id = canonical_task_id(task_id)
    if task_id.startswith("gym:"):
        from s2r.sim.gym_adapter import GymVecEnv, gym_task_config

        cfg = gym_task_config(task_id)
        return TaskEntry(task_id, GymVecEnv, cfg, f"gymnasium environment {cfg.env_id}")
    _ensure_loaded()
    try:
        entry = _REGISTRY[task_id]
    except KeyError:
        close = difflib.get_close_matches(task_id, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownTaskError(
            f"unknown task '{task_id}'.{hint} Run `s2r tasks` to list the registered tasks."
        ) from None
    return TaskEntry(entry.task_id, entry.env_cls, copy.deepcopy(entry.cfg), entry.description)


def task_config(task_id: str, overrides: dict[str, Any] | None = None) -> Any:
    """The task's config (a fresh copy) with dotted-key overrides applied."""
    cfg = get_task(task_id).cfg
    return apply_overrides(cfg, overrides or {})


def make(task_id: str, num_envs: int = 1, *, cfg: Any = None, seed: int = 0, **kwargs: Any) -> VecEnv:
    """Build a batched env for a registered task.

    Args:
        task_id: Registered id.
        num_envs: Worlds stepped together.
        cfg: Task config to use instead of the registered one (e.g. with overrides applied).
        seed: Seed for the env's random streams.
        **kwargs: Passed to the env class (backend options).
    """
    entry = get_task(task_id)
    return entry.env_cls(cfg if cfg is not None else entry.cfg, num_envs=num_envs, seed=seed, **kwargs)


# Device-resident implementations (torch tensors over MuJoCo Warp's arrays) of tasks whose numpy env runs
# on the warp backend with host copies each step; trainers that keep everything on the device ask here.
_DEVICE_TASKS: dict[str, Callable[..., VecEnv]] = {}


def register_device_task(task_id: str, env_factory: Callable[..., VecEnv]) -> None:
    """Register the device-resident env of an already registered task; raises ValueError on a duplicate."""
    if task_id not in _REGISTRY:
        raise ValueError(f"register_device_task('{task_id}'): register the task itself first")
    if task_id in _DEVICE_TASKS:
        raise ValueError(f"task '{task_id}' already has a device-resident env")
    _DEVICE_TASKS[task_id] = env_factory


def has_device_env(task_id: str, cfg: Any) -> bool:
    """True when `task_id` has a device-resident env and `cfg` (its config) asks for the warp backend."""
    _ensure_loaded()
    backend = getattr(cfg, "backend", None)
    return task_id in _DEVICE_TASKS and getattr(backend, "name", "") == "warp"


def make_device_env(task_id: str, num_envs: int, *, cfg: Any, seed: int = 0) -> VecEnv:
    """The device-resident env of `task_id` (torch tensors in and out on `env.device`).

    Raises:
        ValueError: The task has none, or `cfg` does not ask for the warp backend (one sentence).
    """
    if not has_device_env(task_id, cfg):
        have = ", ".join(sorted(_DEVICE_TASKS)) or "none"
        raise ValueError(f"task '{task_id}' has no device-resident env for backend.name="
                         f"'{getattr(getattr(cfg, 'backend', None), 'name', '?')}' (device-resident with backend.name=warp: "
                         f"{have})")
    return _DEVICE_TASKS[task_id](cfg, num_envs=num_envs, seed=seed)


def gym_id(task_id: str) -> str:
    """The gymnasium id a task is registered under."""
    return f"{GYM_NAMESPACE}/{task_id}-v0"


def _register_gym(task_id: str) -> None:
    import gymnasium

    gid = gym_id(task_id)
    if gid in gymnasium.registry:
        return
    gymnasium.register(id=gid, entry_point="s2r.sim.gym_env:SingleEnv", kwargs={"task_id": task_id})


_LOADED = False


def _ensure_loaded() -> None:
    """Import the task modules once so their `register_task` calls run."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        import s2r.sim.tasks  # noqa: F401
