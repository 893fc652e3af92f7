"""The task registry fails loudly: duplicates, malformed and unknown ids; lookups return copies."""

from __future__ import annotations

import gymnasium
import pytest
from s2r.sim import UnknownTaskError, get_task, gym_id, make, register_task, task_ids
from s2r.sim.tasks.locomotion import LocomotionConfig, LocomotionEnv


def test_every_task_is_registered_with_gymnasium() -> None:
    assert {"Go1-Velocity-Flat", "Go1-Velocity-Rough", "Go1-Velocity-FlatNoDR", "Puck-Velocity-Flat"} <= set(task_ids())
    for task in task_ids():
        assert gym_id(task) in gymnasium.registry


def test_duplicate_registration_raises() -> None:
    before = get_task("Go1-Velocity-Flat")
    with pytest.raises(ValueError, match="'Go1-Velocity-Flat' is already registered"):
        register_task("Go1-Velocity-Flat", LocomotionEnv, LocomotionConfig(episode_s=1.0))
    assert get_task("Go1-Velocity-Flat").cfg == before.cfg  # the first registration stands


def test_malformed_id_raises() -> None:
    with pytest.raises(ValueError, match="Robot-Task-Variant"):
        register_task("Go1", LocomotionEnv, LocomotionConfig())
    assert "Go1" not in task_ids()


@pytest.mark.parametrize("lookup", [get_task, make])
def test_unknown_id_names_the_close_ones(lookup) -> None:
    with pytest.raises(UnknownTaskError) as err:
        lookup("Go1-Velocity-Flt")
    msg = str(err.value)
    assert "unknown task 'Go1-Velocity-Flt'" in msg
    assert "Go1-Velocity-Flat" in msg and "s2r tasks" in msg
    assert not msg.startswith(("'", '"'))  # a plain sentence, not KeyError's quoted repr


def test_unknown_id_without_close_names_still_says_what_to_do() -> None:
    with pytest.raises(UnknownTaskError, match="s2r tasks"):
        get_task("Zebra-Dance-Party")


def test_get_task_returns_a_deep_copy() -> None:
    entry = get_task("Go1-Velocity-Flat")
    # Frozen dataclasses refuse normal assignment; force it to prove the registry's copy is separate.
    object.__setattr__(entry.cfg, "episode_s", 1.0)
    object.__setattr__(entry.cfg.rewards, "feet_air_time", 99.0)
    fresh = get_task("Go1-Velocity-Flat")
    assert fresh.cfg.episode_s == LocomotionConfig().episode_s
    assert fresh.cfg.rewards.feet_air_time == LocomotionConfig().rewards.feet_air_time
    assert fresh.cfg is not entry.cfg and fresh.cfg.rewards is not entry.cfg.rewards
