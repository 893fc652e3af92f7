"""bench/hib.py's knobs: an env-step budget for students, a validation range for choosing beta, latent reliance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from s2r.policies.driver import Budget
from s2r.sim import task_config

from tests.bench_modules import load_bench
from tests.policies.test_distill import TASK, _teacher


def test_student_steps_budget_binds_on_env_steps_and_minutes_become_a_cap() -> None:
    hib = load_bench("hib")
    assert hib.student_budget(30.0, 150_000) == Budget(steps=150_000, minutes=30.0)
    assert hib.student_budget(5.0, 0) == Budget(steps=None, minutes=5.0)  # 0: wall clock only, as before
    with pytest.raises(SystemExit, match="--student-steps must be >= 0"):
        hib.student_budget(5.0, -1)


def test_validation_range_lies_between_training_and_held_out_touching_neither() -> None:
    hib = load_bench("hib")
    train = task_config(TASK).randomization
    for key, (lo, hi) in hib.VALIDATION.items():
        field = key.split(".")[1]
        t_lo, t_hi = getattr(train, field)
        o_lo, o_hi = hib.OOD[key]
        below = o_hi <= lo and hi <= t_lo  # the held-out range is below training (slippery, weak)
        above = t_hi <= lo and hi <= o_lo  # ... or above it (heavy)
        assert below or above, f"{key}: validation {lo, hi} is not between training {t_lo, t_hi} and held-out {o_lo, o_hi}"
    assert hib.parse_splits("in_distribution,validation") == ["in_distribution", "validation"]
    with pytest.raises(SystemExit, match=r"unknown split.*'held_out'"):
        hib.parse_splits("in_distribution,held_out")


def test_latent_reliance_is_zero_when_the_actor_ignores_the_latent(tmp_path: Path) -> None:
    hib = load_bench("hib")
    run = _teacher(tmp_path / "teacher")
    cfg = task_config(TASK)
    reads = hib.latent_reliance(run, num_envs=8, steps=5, task_cfg=cfg)
    ckpt = torch.load(run / "teacher.pt", weights_only=False)
    w = ckpt["state_dict"]["actor.0.weight"]
    w[:, -4:] = 0.0  # the latent's columns (latent_dim 4) of the first actor layer: the latent no longer matters
    torch.save(ckpt, run / "teacher.pt")
    ignores = hib.latent_reliance(run, num_envs=8, steps=5, task_cfg=cfg)
    assert reads > 0.05, reads
    assert ignores < 1e-6, ignores
