"""Velocity commands: stand-still and straight shares, and the config that checks them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from s2r.sim import task_config
from s2r.sim.tasks.velocity import CommandConfig, sample_commands


def test_straight_commands_keep_only_the_forward_speed() -> None:
    c = CommandConfig(lin_vel_y=(-1.0, 1.0), zero_fraction=0.05, straight_fraction=0.25)
    cmd = sample_commands(np.random.default_rng(0), c, 20_000)
    still = (cmd == 0).all(axis=1)
    straight = ~still & (cmd[:, 1] == 0) & (cmd[:, 2] == 0)
    assert abs(still.mean() - 0.05) < 0.01 and abs(straight.mean() - 0.25) < 0.015
    assert (np.abs(cmd[straight, 0]) > 0).all()  # they still walk, at speeds drawn from the forward range
    assert cmd[straight, 0].min() < -0.9 and cmd[straight, 0].max() > 0.9


def test_no_straight_share_draws_the_numbers_it_always_drew() -> None:
    """straight_fraction 0 (the puck, older configs) leaves the command stream as it was."""
    c = CommandConfig(lin_vel_y=(-1.0, 1.0), zero_fraction=0.1)
    rng = np.random.default_rng(3)
    expected = np.stack([rng.uniform(*c.lin_vel_x, 64), rng.uniform(*c.lin_vel_y, 64), rng.uniform(*c.ang_vel_z, 64)], 1)
    expected[rng.random(64) < c.zero_fraction] = 0.0
    np.testing.assert_array_equal(sample_commands(np.random.default_rng(3), c, 64), expected)


@pytest.mark.parametrize(("zero", "straight"), [(0.5, 0.6), (0.1, -0.1)])
def test_shares_that_do_not_fit_are_refused(zero: float, straight: float) -> None:
    c = CommandConfig(zero_fraction=zero, straight_fraction=straight)
    with pytest.raises(ValueError, match=r"commands.zero_fraction .* commands.straight_fraction .* add up to at most 1"):
        sample_commands(np.random.default_rng(0), c, 4)


def test_straight_share_is_opt_in_and_set_like_any_field() -> None:
    """Off by default (the task draws what it always drew: bench/behaviour_hash.py's hashes hold)."""
    for task in ("Go1-Velocity-Flat", "Go1-Velocity-Rough", "Puck-Velocity-Flat"):
        assert task_config(task).commands.straight_fraction == 0.0
    cfg = task_config("Go1-Velocity-Flat", {"commands.straight_fraction": "0.25"})
    assert cfg.commands == dataclasses.replace(task_config("Go1-Velocity-Flat").commands, straight_fraction=0.25)


def test_a_config_saved_before_straight_commands_reads_back_as_trained() -> None:
    """A run's config.json from before `straight_fraction` existed resumes without straight commands."""
    from s2r.sim.config import from_dict, to_dict
    from s2r.sim.tasks.locomotion import LocomotionConfig

    saved = to_dict(task_config("Go1-Velocity-Flat", {"commands.straight_fraction": 0.25}))
    assert from_dict(LocomotionConfig, saved).commands.straight_fraction == 0.25
    del saved["commands"]["straight_fraction"]
    assert from_dict(LocomotionConfig, saved).commands.straight_fraction == 0.0
