"""s2r.sim: robot models, tasks, physics backends and the task registry."""

import os as _os

# Headless machines have no display for GLFW; MuJoCo picks its GL backend when first imported, so choose
# EGL (Debian's libegl1 + Mesa) before that unless the user already chose.
if "MUJOCO_GL" not in _os.environ and not _os.environ.get("DISPLAY"):
    _os.environ["MUJOCO_GL"] = "egl"

from s2r.sim.env import EnvSpec, ObsTerm, VecEnv
from s2r.sim.registry import (
    UnknownTaskError,
    canonical_task_id,
    get_task,
    gym_id,
    has_device_env,
    make,
    make_device_env,
    register_task,
    task_config,
    task_ids,
)

__all__ = [
    "EnvSpec",
    "ObsTerm",
    "UnknownTaskError",
    "VecEnv",
    "canonical_task_id",
    "get_task",
    "gym_id",
    "has_device_env",
    "make",
    "make_device_env",
    "register_task",
    "task_config",
    "task_ids",
]

# Importing s2r.sim registers every task (with gymnasium too), so `gymnasium.make("s2r/<task>-v0")` works
# after `import s2r.sim`, and `gymnasium.make("s2r.sim:s2r/<task>-v0")` works with no import at all.
from s2r.sim import registry as _registry

_registry._ensure_loaded()
