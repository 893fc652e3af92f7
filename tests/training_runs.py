"""Helpers for tests that train, resume or drive the `s2r` CLI: tiny trainer configs, the CLI command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TINY_TASK = "Go1-Velocity-FlatNoDR"
TINY_ENVS = 16


def tiny_run_spec(iterations: int = 2, task: str = TINY_TASK, **kw: Any) -> Any:
    """A PPO RunSpec for `iterations` iterations on TINY_ENVS envs, checkpointing every iteration."""
    from s2r.policies.driver import Budget, RunSpec
    from s2r.policies.ppo import PPOConfig, TrainConfig
    from s2r.sim import task_config

    cfg = TrainConfig(**{"num_envs": TINY_ENVS, "seed": 0, "save_every": 1, "export_parity_steps": 5, **kw})
    return RunSpec(algo="ppo", task_id=task, task_cfg=task_config(task), cfg=cfg,
                   budget=Budget(steps=iterations * TINY_ENVS * PPOConfig().steps_per_env))


def s2r_command(*args: str) -> list[str]:
    """argv that runs the `s2r` CLI in a fresh interpreter of this Python."""
    return [sys.executable, "-m", "s2r.policies.cli", *args]


def cli_env() -> dict[str, str]:
    """Environment for CLI subprocesses: unbuffered output, headless EGL rendering unless chosen already."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}

