"""s2r.sim: robot models, tasks, physics backends and the task registry."""

from s2r.sim.env import EnvSpec, ObsTerm, VecEnv
from s2r.sim.registry import UnknownTaskError, get_task, gym_id, make, register_task, task_config, task_ids

__all__ = [
    "EnvSpec",
    "ObsTerm",
    "UnknownTaskError",
    "VecEnv",
    "get_task",
    "gym_id",
    "make",
    "register_task",
    "task_config",
    "task_ids",
]
